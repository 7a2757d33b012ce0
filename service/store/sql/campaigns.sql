-- Named queries of campaigns (service/store/campaigns.py): the admin API and CLI, the fan-out
-- (service/fanout.py) and the results. The audience is always five arguments - topics (NULL:
-- any), locale patterns for LIKE (NULL: any), and the conditions' keys, operators and JSON
-- arguments - evaluated with migrations/0009_campaigns.sql's momentcast_holds, which the
-- planner inlines.

-- name: campaign_insert
-- Stores a checked campaign with the size of its audience now ($14..$18); nothing when the id
-- is taken.
WITH conditions AS (
    SELECT k, o, v::jsonb AS v FROM unnest($16::text[], $17::text[], $18::text[]) AS t(k, o, v)
)
INSERT INTO campaigns (id, description, spec, audience, programs, send_at, send_local, late,
                       ttl_s, urgency, topic, rate_per_s, audience_n, created_at,
                       next_check_at)
SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
       (SELECT count(*) FROM subscriptions s
        WHERE s.status = 'active' AND NOT s.paused
  AND ($14::text[] IS NULL OR s.topics && $14::text[])
  AND ($15::text[] IS NULL OR lower(s.locale) LIKE ANY ($15::text[]))
  AND (cardinality($16::text[]) = 0 OR NOT EXISTS (
        SELECT 1 FROM conditions c WHERE NOT momentcast_holds(s.attributes, c.k, c.o, c.v)))),
       $13, $13
ON CONFLICT (id) DO NOTHING
RETURNING *

-- name: campaign_audience_count
WITH conditions AS (
    SELECT k, o, v::jsonb AS v FROM unnest($3::text[], $4::text[], $5::text[]) AS t(k, o, v)
)
SELECT count(*) FROM subscriptions s
WHERE s.status = 'active' AND NOT s.paused
  AND ($1::text[] IS NULL OR s.topics && $1::text[])
  AND ($2::text[] IS NULL OR lower(s.locale) LIKE ANY ($2::text[]))
  AND (cardinality($3::text[]) = 0 OR NOT EXISTS (
        SELECT 1 FROM conditions c WHERE NOT momentcast_holds(s.attributes, c.k, c.o, c.v)))

-- name: campaign_samples
-- The dry run's samples: one audience member per message locale ($6, '' the default), the
-- one whose locale picks that message.
WITH conditions AS (
    SELECT k, o, v::jsonb AS v FROM unnest($3::text[], $4::text[], $5::text[]) AS t(k, o, v)
)
SELECT DISTINCT ON (key) key, attributes
FROM (
    SELECT CASE WHEN lower(s.locale) = ANY ($6::text[]) THEN lower(s.locale)
                WHEN split_part(lower(s.locale), '-', 1) = ANY ($6::text[])
                    THEN split_part(lower(s.locale), '-', 1)
                ELSE '' END AS key,
           s.id, s.attributes
    FROM subscriptions s
    WHERE s.status = 'active' AND NOT s.paused
  AND ($1::text[] IS NULL OR s.topics && $1::text[])
  AND ($2::text[] IS NULL OR lower(s.locale) LIKE ANY ($2::text[]))
  AND (cardinality($3::text[]) = 0 OR NOT EXISTS (
        SELECT 1 FROM conditions c WHERE NOT momentcast_holds(s.attributes, c.k, c.o, c.v)))
) m
ORDER BY key, id

-- name: campaign_get
SELECT * FROM campaigns WHERE id = $1

-- name: campaign_list
SELECT * FROM campaigns ORDER BY created_at DESC, id

-- name: campaign_cancel
-- Stops the fan-out (waiting for a tick that holds the row) and cancels what was not sent:
-- pending deliveries no sender holds right now (one that does finishes its send).
WITH c AS (
    UPDATE campaigns
    SET status = CASE WHEN status IN ('done', 'cancelled') THEN status ELSE 'cancelled' END,
        cancelled_at = CASE WHEN status IN ('done', 'cancelled') THEN cancelled_at
                            ELSE now() END,
        next_check_at = NULL
    WHERE id = $1
    RETURNING id
), d AS (
    UPDATE deliveries
    SET status = 'cancelled', finished_at = now(), last_error = 'campaign cancelled'
    WHERE campaign_id = (SELECT id FROM c) AND status = 'pending'
      AND (claimed_until IS NULL OR claimed_until < now())
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM c) AS found, (SELECT count(*) FROM d) AS cancelled

-- name: campaign_due
-- Campaigns whose next look is due by the fan-out's clock ($1).
SELECT id FROM campaigns
WHERE status IN ('scheduled', 'sending') AND next_check_at IS NOT NULL AND next_check_at <= $1
ORDER BY next_check_at, id

-- name: campaign_lock
-- One fan-out at a time per campaign; another process's tick is left alone (SKIP LOCKED). NO
-- KEY UPDATE, as a cancel's UPDATE takes it, so the foreign-key checks of deliveries being
-- inserted for the campaign (KEY SHARE) do not hide it from the fan-out.
SELECT * FROM campaigns
WHERE id = $1 AND status IN ('scheduled', 'sending')
FOR NO KEY UPDATE SKIP LOCKED

-- name: campaign_zones
-- The time zones ('' for none) of the audience ($2..$6) campaign $1 has not handled yet.
WITH conditions AS (
    SELECT k, o, v::jsonb AS v FROM unnest($4::text[], $5::text[], $6::text[]) AS t(k, o, v)
)
SELECT DISTINCT coalesce(s.timezone, '') AS zone
FROM subscriptions s
WHERE s.status = 'active' AND NOT s.paused
  AND ($2::text[] IS NULL OR s.topics && $2::text[])
  AND ($3::text[] IS NULL OR lower(s.locale) LIKE ANY ($3::text[]))
  AND (cardinality($4::text[]) = 0 OR NOT EXISTS (
        SELECT 1 FROM conditions c WHERE NOT momentcast_holds(s.attributes, c.k, c.o, c.v)))
  AND NOT EXISTS (SELECT 1 FROM deliveries d
                  WHERE d.dedupe_key = 'campaign:' || $1::text || ':' || s.id::text)
  AND NOT EXISTS (SELECT 1 FROM campaign_suppressions x
                  WHERE x.campaign_id = $1::text AND x.subscription_id = s.id)

-- name: campaign_fan_out
-- One tick of campaign $1, set-based: every member of the audience ($11..$15) not handled
-- yet whose zone ($3) is due ($4: send, expire or skip; wait is left for a later tick) gets a
-- delivery - queued, or expired when its ttl ($5, its end by zone) ran out before quiet hours
-- ended - or a suppression with its reason (missed_local_time; the policy's per_subscriber
-- cap $6 over $7 and min_gap $8, counted over every delivery of the subscriber, rules' and
-- campaigns' alike). Subscribers another transaction holds (the worker deciding their
-- signals) are left for the next tick. The variant is the subscriber's point's bucket among
-- the variants' lower bounds ($16, total weight $17, names $18); the payload is the template
-- ($21) of that variant and the subscriber's locale key ($19), its tokens ($22) filled with
-- the attributes named in $23. Times: $2 is the fan-out's clock, which decided_at follows
-- (caps compare them); the outbox's not_before and expires_at are the database's now() plus
-- the same offsets, so that the sender, which goes by now(), sends them at once. With a rate
-- ($10 per second) the n-th send waits $9 + n / $10 seconds. $20: the campaign's ttl, urgency
-- and topic as {ttl_s, urgency, topic}. An experiment's tick (service/campaigns/experiment.py)
-- runs it once per group of the audience: $25 true for the test share (momentcast_test_point
-- below $24), false for the rest, which all get variant number $26 (NULL $24: everyone, as
-- the variants' weights say).
-- An optimal campaign's zones also carry a local minute of the day ($27, NULL for other
-- campaigns): a member is due in the step of their zone and their planned hour
-- (campaign_send_hours), or the fallback minute $28 without one.
-- $29: the fatigue guard is on; a subscriber resting at $2 (push_fatigue,
-- migrations/0019_fatigue.sql) is suppressed `fatigued`.
WITH conditions AS (
    SELECT k, o, v::jsonb AS v FROM unnest($13::text[], $14::text[], $15::text[]) AS t(k, o, v)
), zones AS (
    SELECT * FROM unnest($3::text[], $4::text[], $5::timestamptz[], $27::int[])
        AS z(zone, action, expires, minute)
    WHERE action <> 'wait'
), due AS (
    SELECT s.id, s.locale, s.attributes, z.action, z.expires
    FROM subscriptions s
    JOIN zones z ON z.zone = coalesce(s.timezone, '')
                -- Other campaigns stop at "minute IS NULL": no lookup of a planned hour.
                AND (z.minute IS NULL
                     OR z.minute = coalesce((SELECT p.local_hour * 60 FROM campaign_send_hours p
                                             WHERE p.campaign_id = $1::text
                                               AND p.subscription_id = s.id), $28::int))
    WHERE s.status = 'active' AND NOT s.paused
  AND ($11::text[] IS NULL OR s.topics && $11::text[])
  AND ($12::text[] IS NULL OR lower(s.locale) LIKE ANY ($12::text[]))
  AND (cardinality($13::text[]) = 0 OR NOT EXISTS (
        SELECT 1 FROM conditions c WHERE NOT momentcast_holds(s.attributes, c.k, c.o, c.v)))
      AND ($24::bigint IS NULL
           OR (momentcast_test_point(s.id, $1::text) < $24::bigint) = $25::boolean)
      AND NOT EXISTS (SELECT 1 FROM deliveries d
                      WHERE d.dedupe_key = 'campaign:' || $1::text || ':' || s.id::text)
      AND NOT EXISTS (SELECT 1 FROM campaign_suppressions x
                      WHERE x.campaign_id = $1::text AND x.subscription_id = s.id)
), locked AS (
    SELECT s.id FROM subscriptions s
    WHERE s.id IN (SELECT id FROM due)
    FOR NO KEY UPDATE SKIP LOCKED
), history AS MATERIALIZED (
    -- One pass over the deliveries of the locked subscribers, before anything is inserted
    -- (a per-row lookup would rescan the heap as this statement's inserts grow it).
    SELECT d.subscription_id,
           count(*) FILTER (WHERE d.decided_at > $2::timestamptz - $7::interval) AS recent,
           max(d.decided_at) AS last
    FROM deliveries d
    WHERE d.subscription_id IN (SELECT id FROM locked) AND NOT d.test
      AND d.decided_at > $2::timestamptz - greatest(coalesce($7::interval, interval '0'),
                                                    coalesce($8::interval, interval '0'))
    GROUP BY d.subscription_id
), decided AS (
    SELECT due.id, due.locale, due.attributes, due.action, due.expires,
           CASE WHEN $26::int IS NOT NULL THEN $26::int
                WHEN cardinality($16::int[]) = 1 THEN 1
                ELSE width_bucket(momentcast_variant_point(due.id, $1::text, $17::int),
                                  $16::int[]) END AS variant_no,
           CASE WHEN due.action = 'skip' THEN 'missed_local_time'
                WHEN due.action = 'expire' THEN NULL
                WHEN $29::bool AND f.resting_since <= $2::timestamptz
                     AND f.resting_until > $2::timestamptz THEN 'fatigued'
                WHEN $6::int IS NOT NULL AND h.recent >= $6::int THEN 'global_cap'
                WHEN $8::interval IS NOT NULL AND h.last > $2::timestamptz - $8::interval
                    THEN 'min_gap'
           END AS reason
    FROM due
    JOIN locked USING (id)
    LEFT JOIN history h ON h.subscription_id = due.id
    LEFT JOIN push_fatigue f ON f.subscription_id = due.id
), sup AS (
    INSERT INTO campaign_suppressions (campaign_id, subscription_id, variant, reason, at)
    SELECT $1, id, ($18::text[])[variant_no], reason, $2::timestamptz
    FROM decided WHERE reason IS NOT NULL
    ON CONFLICT DO NOTHING
    RETURNING reason
), sending AS (
    SELECT decided.*,
           CASE WHEN action = 'send' AND $10::float8 IS NOT NULL
                THEN $9::float8
                     + (row_number() OVER (PARTITION BY action ORDER BY id) - 1) / $10::float8
                ELSE 0 END AS delay_s,
           (variant_no - 1) * cardinality($19::text[])
               + coalesce(array_position($19::text[], lower(locale)),
                          array_position($19::text[], split_part(lower(locale), '-', 1)),
                          1) AS template_no
    FROM decided
    WHERE reason IS NULL
), ins AS (
    INSERT INTO deliveries (subscription_id, campaign_id, variant, dedupe_key, payload, ttl_s,
                            urgency, topic, status, decided_at, not_before, expires_at,
                            created_at, finished_at, last_error)
    SELECT s.id, $1, ($18::text[])[s.variant_no], 'campaign:' || $1::text || ':' || s.id::text,
           CASE WHEN cardinality($22::text[]) = 0 THEN (($21::text[])[s.template_no])::jsonb
                ELSE momentcast_fill(($21::text[])[s.template_no], $22::text[], $23::text[],
                                     s.attributes) END,
           ($20::jsonb ->> 'ttl_s')::int, $20::jsonb ->> 'urgency', $20::jsonb ->> 'topic',
           CASE s.action WHEN 'expire' THEN 'expired' ELSE 'pending' END,
           $2::timestamptz + make_interval(secs => s.delay_s),
           now() + make_interval(secs => s.delay_s),
           now() + (s.expires - $2::timestamptz),
           clock_timestamp(),
           CASE s.action WHEN 'expire' THEN now() END,
           CASE s.action WHEN 'expire' THEN 'ttl ran out before the push could be sent' END
    FROM sending s
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING status
)
SELECT (SELECT count(*) FROM due) AS due,
       (SELECT count(*) FROM locked) AS locked,
       (SELECT count(*) FROM ins WHERE status = 'pending') AS queued,
       (SELECT count(*) FROM ins WHERE status = 'expired') AS expired,
       coalesce((SELECT jsonb_object_agg(reason, n)
                 FROM (SELECT reason, count(*) AS n FROM sup GROUP BY reason) r),
                '{}'::jsonb) AS suppressed

-- name: campaign_progress
UPDATE campaigns
SET status = $2, next_check_at = $3, next_slot = $4,
    fanned_out_at = CASE WHEN $5 THEN coalesce(fanned_out_at, now()) ELSE fanned_out_at END
WHERE id = $1

-- name: campaign_postpone
UPDATE campaigns SET next_check_at = $2
WHERE id = $1 AND status IN ('scheduled', 'sending')

-- name: campaign_finish
-- A fanned-out campaign is done once nothing of it is pending any more.
UPDATE campaigns c SET status = 'done', finished_at = now()
WHERE c.status = 'sending' AND c.fanned_out_at IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM deliveries d
                  WHERE d.campaign_id = c.id AND d.status = 'pending')
RETURNING c.id

-- name: campaign_stats_deliveries
-- Deliveries of campaigns ($1, NULL: all) by variant and status: the rows still stored plus
-- the daily counts of rolled-up ones (migrations/0013_rollups.sql; only pushes with an outcome
-- are rolled up, so queued is the stored rows').
SELECT campaign_id, variant,
       sum(queued)::bigint AS queued, sum(sent)::bigint AS sent,
       sum(failed)::bigint AS failed, sum(gone)::bigint AS gone,
       sum(expired)::bigint AS expired, sum(cancelled)::bigint AS cancelled
FROM (
    SELECT campaign_id, variant,
           count(*) FILTER (WHERE status = 'pending') AS queued,
           count(*) FILTER (WHERE status = 'sent') AS sent,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           count(*) FILTER (WHERE status = 'gone') AS gone,
           count(*) FILTER (WHERE status = 'expired') AS expired,
           count(*) FILTER (WHERE status = 'cancelled') AS cancelled
    FROM deliveries
    WHERE campaign_id IS NOT NULL AND ($1::text IS NULL OR campaign_id = $1)
    GROUP BY campaign_id, variant
    UNION ALL
    SELECT campaign_id, variant, 0,
           coalesce(sum(deliveries) FILTER (WHERE status = 'sent'), 0),
           coalesce(sum(deliveries) FILTER (WHERE status = 'failed'), 0),
           coalesce(sum(deliveries) FILTER (WHERE status = 'gone'), 0),
           coalesce(sum(deliveries) FILTER (WHERE status = 'expired'), 0),
           coalesce(sum(deliveries) FILTER (WHERE status = 'cancelled'), 0)
    FROM campaign_delivery_days
    WHERE $1::text IS NULL OR campaign_id = $1
    GROUP BY campaign_id, variant
) t
GROUP BY campaign_id, variant

-- name: campaign_stats_events
SELECT campaign_id, variant, type, sum(n)::bigint AS n
FROM (
    SELECT d.campaign_id, d.variant, e.type, count(*) AS n
    FROM events e JOIN deliveries d ON d.id = e.delivery_id
    WHERE d.campaign_id IS NOT NULL AND ($1::text IS NULL OR d.campaign_id = $1)
    GROUP BY d.campaign_id, d.variant, e.type
    UNION ALL
    SELECT r.campaign_id, r.variant, t.type, t.n
    FROM campaign_delivery_days r
    CROSS JOIN LATERAL (VALUES ('shown', r.shown), ('clicked', r.clicked),
                               ('dismissed', r.dismissed), ('converted', r.converted)) t(type, n)
    WHERE t.n > 0 AND ($1::text IS NULL OR r.campaign_id = $1)
) t
GROUP BY campaign_id, variant, type

-- name: campaign_stats_suppressions
SELECT campaign_id, variant, reason, sum(n)::bigint AS n
FROM (
    SELECT campaign_id, variant, reason, count(*) AS n
    FROM campaign_suppressions
    WHERE $1::text IS NULL OR campaign_id = $1
    GROUP BY campaign_id, variant, reason
    UNION ALL
    SELECT campaign_id, variant, reason, n
    FROM campaign_suppression_days
    WHERE $1::text IS NULL OR campaign_id = $1
) t
GROUP BY campaign_id, variant, reason

-- name: campaign_interaction_hours
-- Send-time optimisation's input for a whole audience ($1..$5), in one statement: each
-- member's interactions (pushes with a clicked or converted event, test pushes left out)
-- since $6, counted
-- per local hour of the event in the member's time zone (UTC without one). One row: the
-- members' ids in order, and three parallel arrays (member's index, hour, count) from which
-- the store builds the (member, 24) histogram in one vectorised pass. Members without an
-- interaction are absent.
WITH conditions AS (
    SELECT k, o, v::jsonb AS v FROM unnest($3::text[], $4::text[], $5::text[]) AS t(k, o, v)
), audience AS (
    SELECT s.id, coalesce(s.timezone, 'UTC') AS tz
    FROM subscriptions s
    WHERE s.status = 'active' AND NOT s.paused
  AND ($1::text[] IS NULL OR s.topics && $1::text[])
  AND ($2::text[] IS NULL OR lower(s.locale) LIKE ANY ($2::text[]))
  AND (cardinality($3::text[]) = 0 OR NOT EXISTS (
        SELECT 1 FROM conditions c WHERE NOT momentcast_holds(s.attributes, c.k, c.o, c.v)))
), pushes AS (
    -- One interaction per push, at its first click or conversion: a click that then converts
    -- is one answer to one push (as health and the fatigue guard count), not two.
    SELECT a.id, a.tz, min(e.at) AS at
    FROM audience a
    JOIN deliveries d ON d.subscription_id = a.id
    JOIN events e ON e.delivery_id = d.id
    WHERE e.type IN ('clicked', 'converted') AND e.at > $6::timestamptz
      AND NOT d.test  -- a test push's click is the operator's, not the subscriber's habit
    GROUP BY a.id, a.tz, d.id
), hits AS (
    SELECT id, extract(hour FROM at AT TIME ZONE tz)::int AS hour, count(*)::int AS n
    FROM pushes
    GROUP BY 1, 2
), ranked AS (
    SELECT (dense_rank() OVER (ORDER BY id))::int - 1 AS member, hour, n FROM hits
)
SELECT coalesce((SELECT array_agg(DISTINCT id ORDER BY id) FROM hits), '{}') AS ids,
       coalesce(array_agg(member), '{}') AS members, coalesce(array_agg(hour), '{}') AS hours,
       coalesce(array_agg(n), '{}') AS counts
FROM ranked

-- name: campaign_send_plan
-- Stores an optimal campaign's plan: the personal local hour of each member who has one ($2,
-- $3), what send_at.optimal says ($4) and the plan's summary ($5).
WITH plan AS (
    INSERT INTO campaign_send_hours (campaign_id, subscription_id, local_hour)
    SELECT $1, id, hour FROM unnest($2::uuid[], $3::smallint[]) AS t(id, hour)
    RETURNING 1
)
UPDATE campaigns SET optimal = $4, schedule = $5
WHERE id = $1
RETURNING *

-- name: campaign_zone_minutes
-- An optimal campaign's campaign_zones: the (time zone, local minute of the day) pairs of the
-- audience ($2..$6) it has not handled yet; the minute is the planned hour's, or the fallback
-- $7 (minutes after midnight) for members without one.
WITH conditions AS (
    SELECT k, o, v::jsonb AS v FROM unnest($4::text[], $5::text[], $6::text[]) AS t(k, o, v)
)
SELECT DISTINCT coalesce(s.timezone, '') AS zone, coalesce(p.local_hour * 60, $7::int) AS minute
FROM subscriptions s
LEFT JOIN campaign_send_hours p ON p.campaign_id = $1::text AND p.subscription_id = s.id
WHERE s.status = 'active' AND NOT s.paused
  AND ($2::text[] IS NULL OR s.topics && $2::text[])
  AND ($3::text[] IS NULL OR lower(s.locale) LIKE ANY ($3::text[]))
  AND (cardinality($4::text[]) = 0 OR NOT EXISTS (
        SELECT 1 FROM conditions c WHERE NOT momentcast_holds(s.attributes, c.k, c.o, c.v)))
  AND NOT EXISTS (SELECT 1 FROM deliveries d
                  WHERE d.dedupe_key = 'campaign:' || $1::text || ':' || s.id::text)
  AND NOT EXISTS (SELECT 1 FROM campaign_suppressions x
                  WHERE x.campaign_id = $1::text AND x.subscription_id = s.id)
