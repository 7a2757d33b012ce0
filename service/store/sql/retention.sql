-- Named queries of retention (service/store/retention.py): shadow rules' would-be sends by
-- SIGNAL_RETENTION, and the daily roll-up of deliveries, events and campaigns' suppressions
-- older than DELIVERY_RETENTION (tables of migrations/0013_rollups.sql).

-- name: purge_shadow_sends_older
-- Place and time of a subscriber: location history, kept no longer than the signals it came
-- from, whether or not the subscriber sends again.
DELETE FROM shadow_sends WHERE decided_at < now() - $1::interval

-- name: rollup_lock
-- One roll-up at a time across every process (the others skip their pass): two running at once
-- would add to the same daily rows in different orders and could deadlock. Released with the
-- batch's transaction. The key is "mcru" in ASCII.
SELECT pg_try_advisory_xact_lock(1835233909)

-- name: rollup_cutoff
-- Midnight UTC of the day that is $1 old: whole days before it are rolled up.
SELECT date_trunc('day', now() - $1::interval, 'UTC')

-- name: rollup_claim_deliveries
-- The next batch ($2 rows, oldest first) of deliveries created before $1 that have their
-- outcome, locked until the batch commits: no event can be recorded for them meanwhile (its
-- foreign-key check waits for the lock), so the next statement counts every event they have.
-- A pending push is still the outbox's, and a campaign still fanning out looks at its
-- deliveries to hand each member one push: both wait for a later pass. Rows another
-- transaction holds (an event being recorded) are left for the next pass too.
SELECT d.id FROM deliveries d
WHERE d.created_at < $1 AND d.status <> 'pending'
  AND (d.campaign_id IS NULL OR EXISTS (
        SELECT 1 FROM campaigns c
        WHERE c.id = d.campaign_id AND c.status IN ('done', 'cancelled')))
ORDER BY d.created_at
LIMIT $2
FOR UPDATE OF d SKIP LOCKED

-- name: rollup_deliveries
-- The deliveries $1 (locked by rollup_claim_deliveries in this transaction) and their events
-- added to the daily counts and deleted, in one statement: what is counted is exactly what is
-- deleted, so a batch is never counted twice, nor half. Test pushes are deleted uncounted (no
-- statistic counts them). The events go first; the deliveries' cascade then finds none left.
WITH gone_events AS (
    DELETE FROM events WHERE delivery_id = ANY ($1::bigint[])
    RETURNING delivery_id, type, action
), gone AS (
    DELETE FROM deliveries WHERE id = ANY ($1::bigint[])
    RETURNING id, rule_id, campaign_id, variant, coalesce(place_id, '') AS place_id,
              local_hour, status, test, (created_at AT TIME ZONE 'UTC')::date AS day
), fates AS (
    SELECT g.*,
           coalesce(e.shown, 0) AS shown, coalesce(e.clicked, 0) AS clicked,
           coalesce(e.dismissed, 0) AS dismissed, coalesce(e.converted, 0) AS converted,
           coalesce(e.interacted, 0) AS interacted
    FROM gone g
    LEFT JOIN (SELECT delivery_id,
                      count(*) FILTER (WHERE type = 'shown') AS shown,
                      count(*) FILTER (WHERE type = 'clicked') AS clicked,
                      count(*) FILTER (WHERE type = 'dismissed') AS dismissed,
                      count(*) FILTER (WHERE type = 'converted') AS converted,
                      -- a push clicked or converted (adaptive allocation's interaction): once
                      (count(*) FILTER (WHERE type IN ('clicked', 'converted')) > 0)::int
                          AS interacted
               FROM gone_events GROUP BY delivery_id) e ON e.delivery_id = g.id
), rule_days AS (
    INSERT INTO rule_delivery_days AS r (day, rule_id, variant, place_id, status, deliveries,
                                         shown, clicked, dismissed, converted, interacted)
    SELECT day, rule_id, variant, place_id, status, count(*),
           sum(shown), sum(clicked), sum(dismissed), sum(converted), sum(interacted)
    FROM fates WHERE rule_id IS NOT NULL AND NOT test
    GROUP BY day, rule_id, variant, place_id, status
    ON CONFLICT (day, rule_id, variant, place_id, status) DO UPDATE
    SET deliveries = r.deliveries + excluded.deliveries, shown = r.shown + excluded.shown,
        clicked = r.clicked + excluded.clicked, dismissed = r.dismissed + excluded.dismissed,
        converted = r.converted + excluded.converted,
        interacted = r.interacted + excluded.interacted
    RETURNING 1
), hour_days AS (
    INSERT INTO rule_hour_days AS r (day, rule_id, local_hour, deliveries)
    SELECT day, rule_id, local_hour, count(*)
    FROM fates WHERE rule_id IS NOT NULL AND NOT test AND local_hour IS NOT NULL
    GROUP BY day, rule_id, local_hour
    ON CONFLICT (day, rule_id, local_hour) DO UPDATE
    SET deliveries = r.deliveries + excluded.deliveries
    RETURNING 1
), click_days AS (
    INSERT INTO rule_click_days AS r (day, rule_id, variant, action, clicks)
    SELECT g.day, g.rule_id, g.variant, e.action, count(*)
    FROM gone g JOIN gone_events e ON e.delivery_id = g.id
    WHERE e.type = 'clicked' AND e.action IS NOT NULL AND g.rule_id IS NOT NULL AND NOT g.test
    GROUP BY g.day, g.rule_id, g.variant, e.action
    ON CONFLICT (day, rule_id, variant, action) DO UPDATE SET clicks = r.clicks + excluded.clicks
    RETURNING 1
), campaign_days AS (
    INSERT INTO campaign_delivery_days AS r (day, campaign_id, variant, status, deliveries,
                                             shown, clicked, dismissed, converted)
    SELECT day, campaign_id, variant, status, count(*),
           sum(shown), sum(clicked), sum(dismissed), sum(converted)
    FROM fates WHERE campaign_id IS NOT NULL
    GROUP BY day, campaign_id, variant, status
    ON CONFLICT (day, campaign_id, variant, status) DO UPDATE
    SET deliveries = r.deliveries + excluded.deliveries, shown = r.shown + excluded.shown,
        clicked = r.clicked + excluded.clicked, dismissed = r.dismissed + excluded.dismissed,
        converted = r.converted + excluded.converted
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone) AS deliveries, (SELECT count(*) FROM gone_events) AS events

-- name: rollup_suppressions
-- The next batch ($2 rows, oldest first) of suppressions before $1 of campaigns that are done
-- or cancelled (a running campaign's fan-out looks at them to handle each member once), added
-- to the daily counts and deleted in one statement; a row another transaction holds (an
-- erasure) is left for the next pass.
WITH doomed AS (
    SELECT s.ctid AS row_id FROM campaign_suppressions s
    WHERE s.at < $1
      AND EXISTS (SELECT 1 FROM campaigns c
                  WHERE c.id = s.campaign_id AND c.status IN ('done', 'cancelled'))
    ORDER BY s.at
    LIMIT $2
    FOR UPDATE OF s SKIP LOCKED
), gone AS (
    DELETE FROM campaign_suppressions WHERE ctid = ANY (ARRAY(SELECT row_id FROM doomed))
    RETURNING campaign_id, variant, reason, (at AT TIME ZONE 'UTC')::date AS day
), days AS (
    INSERT INTO campaign_suppression_days AS r (day, campaign_id, variant, reason, n)
    SELECT day, campaign_id, variant, reason, count(*) FROM gone
    GROUP BY day, campaign_id, variant, reason
    ON CONFLICT (day, campaign_id, variant, reason) DO UPDATE SET n = r.n + excluded.n
    RETURNING 1
)
SELECT count(*) FROM gone
