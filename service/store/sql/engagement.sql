-- Named queries of engagement events, the statistics and the dashboard (run by
-- service/store/engagement.py).
-- The statistics read the rows still stored plus the daily counts the roll-up keeps of older
-- ones (migrations/0013_rollups.sql, service/store/sql/retention.sql), so their totals stay the
-- same when rows are rolled up. The roll-up counts and deletes in one transaction, so a
-- snapshot sees every row in exactly one of the two.

-- name: event_record
-- Accepted whatever the delivery's status: a browser may show a push before the sender has
-- recorded the push service's answer. The primary key makes a replay count once, and the
-- first click keeps its action. An action ($3, clicks only) must be one of the delivery's
-- own buttons, so that clicked_actions counts nothing a client made up. A new interaction
-- (clicked, converted) on a push other than a test push resets the subscriber's fatigue
-- count and ends a rest under way (service/engagement/fatigue.py after_interaction).
WITH d AS (
         SELECT id, subscription_id, test,
                $3::text IS NULL OR EXISTS (
                    SELECT 1 FROM jsonb_array_elements(
                        CASE jsonb_typeof(payload -> 'actions')
                            WHEN 'array' THEN payload -> 'actions' ELSE '[]'::jsonb END) a
                    WHERE a ->> 'action' = $3
                ) AS known
         FROM deliveries WHERE id = $1
     ),
     ins AS (
         INSERT INTO events (delivery_id, type, action)
         SELECT id, $2, $3 FROM d WHERE known
         ON CONFLICT (delivery_id, type) DO NOTHING
         RETURNING 1
     ),
     answered AS (
         UPDATE push_fatigue f
         SET unanswered = 0, resting_until = least(f.resting_until, now())
         FROM d
         WHERE f.subscription_id = d.subscription_id AND NOT d.test
           AND $2::text IN ('clicked', 'converted') AND EXISTS (SELECT 1 FROM ins)
     )
SELECT EXISTS (SELECT 1 FROM d) AS found,
       COALESCE((SELECT known FROM d), false) AS known,
       EXISTS (SELECT 1 FROM ins) AS inserted

-- name: event_click
-- GET /c/{delivery_id}/{action}: the target of a click and the click recorded, in one
-- statement. $2 is the action button, NULL for the notification itself. The target comes
-- from the stored payload only (its url, or the button's url); an erased payload has none,
-- and neither has a button the payload does not hold, and then nothing is recorded. A new
-- click is an interaction: it resets the fatigue count as in event_record.
WITH d AS (
         SELECT id, subscription_id, test,
                CASE WHEN $2::text IS NULL THEN jsonb_build_object('url', payload -> 'url')
                     ELSE (SELECT a FROM jsonb_array_elements(
                               CASE jsonb_typeof(payload -> 'actions')
                                   WHEN 'array' THEN payload -> 'actions' ELSE '[]'::jsonb END) a
                           WHERE a ->> 'action' = $2
                           LIMIT 1)
                END AS target
         FROM deliveries WHERE id = $1 AND payload IS NOT NULL
     ),
     ins AS (
         INSERT INTO events (delivery_id, type, action)
         SELECT id, 'clicked', $2 FROM d WHERE target IS NOT NULL
         ON CONFLICT (delivery_id, type) DO NOTHING
         RETURNING 1
     ),
     answered AS (
         UPDATE push_fatigue f
         SET unanswered = 0, resting_until = least(f.resting_until, now())
         FROM d
         WHERE f.subscription_id = d.subscription_id AND NOT d.test
           AND EXISTS (SELECT 1 FROM ins)
     )
SELECT COALESCE((SELECT target IS NOT NULL FROM d), false) AS known,
       (SELECT target ->> 'url' FROM d) AS url,
       EXISTS (SELECT 1 FROM ins) AS inserted

-- name: stats_deliveries
-- Test pushes (POST /v1/rules/{id}/test) count in no rule's statistics; campaigns' pushes have
-- results of their own (campaigns.sql).
SELECT rule_id, variant,
       sum(sent)::bigint AS sent, sum(failed)::bigint AS failed,
       sum(gone)::bigint AS gone, sum(expired)::bigint AS expired
FROM (
    SELECT rule_id, variant,
           count(*) FILTER (WHERE status = 'sent') AS sent,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           count(*) FILTER (WHERE status = 'gone') AS gone,
           count(*) FILTER (WHERE status = 'expired') AS expired
    FROM deliveries
    WHERE NOT test AND rule_id IS NOT NULL
    GROUP BY rule_id, variant
    UNION ALL
    SELECT rule_id, variant,
           coalesce(sum(deliveries) FILTER (WHERE status = 'sent'), 0),
           coalesce(sum(deliveries) FILTER (WHERE status = 'failed'), 0),
           coalesce(sum(deliveries) FILTER (WHERE status = 'gone'), 0),
           coalesce(sum(deliveries) FILTER (WHERE status = 'expired'), 0)
    FROM rule_delivery_days
    GROUP BY rule_id, variant
) t
GROUP BY rule_id, variant

-- name: stats_events
SELECT rule_id, variant, type, sum(n)::bigint AS n
FROM (
    SELECT d.rule_id, d.variant, e.type, count(*) AS n
    FROM events e JOIN deliveries d ON d.id = e.delivery_id
    WHERE NOT d.test AND d.rule_id IS NOT NULL
    GROUP BY d.rule_id, d.variant, e.type
    UNION ALL
    SELECT r.rule_id, r.variant, t.type, t.n
    FROM rule_delivery_days r
    CROSS JOIN LATERAL (VALUES ('shown', r.shown), ('clicked', r.clicked),
                               ('dismissed', r.dismissed), ('converted', r.converted)) t(type, n)
    WHERE t.n > 0
) t
GROUP BY rule_id, variant, type

-- name: stats_actions
-- Clicks by action button (the first click of a delivery; clicks on the notification itself
-- have no action and are only in stats_events).
SELECT rule_id, variant, action, sum(n)::bigint AS n
FROM (
    SELECT d.rule_id, d.variant, e.action, count(*) AS n
    FROM events e JOIN deliveries d ON d.id = e.delivery_id
    WHERE e.type = 'clicked' AND e.action IS NOT NULL AND NOT d.test AND d.rule_id IS NOT NULL
    GROUP BY d.rule_id, d.variant, e.action
    UNION ALL
    SELECT rule_id, variant, action, clicks FROM rule_click_days
) t
GROUP BY rule_id, variant, action

-- name: stats_counters
SELECT rule_id, variant, counter, n FROM rule_counters

-- name: stats_signals
-- Running totals (migrations/0015_signal_totals.sql; no row yet means none), and the signals
-- held in quarantine now (a partial index: cheap however many signals are stored).
SELECT coalesce((SELECT stored FROM signal_totals), 0)::bigint AS stored,
       coalesce((SELECT stale FROM signal_totals), 0)::bigint AS stale,
       coalesce((SELECT duplicates FROM signal_totals), 0)::bigint AS duplicates,
       (SELECT count(*) FROM signals WHERE quarantined_at IS NOT NULL) AS quarantined

-- name: stats_subscribers
-- The subscriptions held now (an erased one is deleted, so counted nowhere).
SELECT count(*) FILTER (WHERE status = 'active' AND NOT paused) AS active,
       count(*) FILTER (WHERE status = 'active' AND paused) AS paused,
       count(*) FILTER (WHERE status = 'gone') AS gone,
       count(*) FILTER (WHERE status = 'active' AND consent_at IS NOT NULL) AS location_consent
FROM subscriptions

-- name: decisions_by_hour
-- Local hour at the signal's location: when in the day the micro-moments happen.
SELECT rule_id, local_hour, sum(n)::bigint AS n
FROM (
    SELECT rule_id, local_hour, count(*) AS n
    FROM deliveries
    WHERE local_hour IS NOT NULL AND NOT test AND rule_id IS NOT NULL
    GROUP BY rule_id, local_hour
    UNION ALL
    SELECT rule_id, local_hour, deliveries FROM rule_hour_days
) t
GROUP BY rule_id, local_hour

-- name: stats_places
-- Per rule and place, the deliveries decided in [$1, $2) and their fates (test pushes and
-- campaigns' pushes left out; a delivery counts each event type once). A rolled-up day counts
-- when its start (midnight UTC) is in the period: exact for periods of whole UTC days, as the
-- dashboard asks for.
SELECT rule_id, place_id,
       sum(decided)::bigint AS decided, sum(sent)::bigint AS sent,
       sum(failed)::bigint AS failed, sum(gone)::bigint AS gone,
       sum(expired)::bigint AS expired, sum(shown)::bigint AS shown,
       sum(clicked)::bigint AS clicked, sum(converted)::bigint AS converted
FROM (
    SELECT d.rule_id, COALESCE(d.place_id, '') AS place_id,
           count(*) AS decided,
           count(*) FILTER (WHERE d.status = 'sent') AS sent,
           count(*) FILTER (WHERE d.status = 'failed') AS failed,
           count(*) FILTER (WHERE d.status = 'gone') AS gone,
           count(*) FILTER (WHERE d.status = 'expired') AS expired,
           count(*) FILTER (WHERE 'shown' = ANY (e.types)) AS shown,
           count(*) FILTER (WHERE 'clicked' = ANY (e.types)) AS clicked,
           count(*) FILTER (WHERE 'converted' = ANY (e.types)) AS converted
    FROM deliveries d
    LEFT JOIN LATERAL (SELECT array_agg(type) AS types FROM events WHERE delivery_id = d.id) e
           ON true
    WHERE NOT d.test AND d.rule_id IS NOT NULL AND d.created_at >= $1 AND d.created_at < $2
    GROUP BY d.rule_id, COALESCE(d.place_id, '')
    UNION ALL
    SELECT rule_id, place_id,
           sum(deliveries),
           coalesce(sum(deliveries) FILTER (WHERE status = 'sent'), 0),
           coalesce(sum(deliveries) FILTER (WHERE status = 'failed'), 0),
           coalesce(sum(deliveries) FILTER (WHERE status = 'gone'), 0),
           coalesce(sum(deliveries) FILTER (WHERE status = 'expired'), 0),
           sum(shown), sum(clicked), sum(converted)
    FROM rule_delivery_days
    WHERE (day::timestamp AT TIME ZONE 'UTC') >= $1 AND (day::timestamp AT TIME ZONE 'UTC') < $2
    GROUP BY rule_id, place_id
) t
GROUP BY rule_id, place_id
ORDER BY rule_id, place_id

-- name: stats_health
-- The health of the last $1 (7 days: GET /v1/stats' health, the dashboard's warnings, the
-- gauge momentcast_interaction_rate): per rule ('' for campaigns' pushes) the pushes sent
-- (test pushes aside) and, of them, those with an interaction (a clicked or converted event;
-- a push with both counts once). Stored rows by created_at. Pushes older than
-- DELIVERY_RETENTION are only daily counts (migrations/0013_rollups.sql): with a retention
-- shorter than the window they count by whole UTC days from the window's first; a rule's day
-- keeps its interacted pushes (migrations/0018_rollup_interactions.sql), a campaign's day only
-- clicked and converted, of which the larger is the best it tells (exact when every
-- conversion followed a click on the same push).
SELECT rule_id, sum(sent)::bigint AS sent, sum(interacted)::bigint AS interacted
FROM (
    SELECT coalesce(d.rule_id, '') AS rule_id, count(*) AS sent,
           count(*) FILTER (WHERE EXISTS (
               SELECT 1 FROM events e
               WHERE e.delivery_id = d.id AND e.type IN ('clicked', 'converted')))
               AS interacted
    FROM deliveries d
    WHERE d.status = 'sent' AND NOT d.test AND d.created_at > now() - $1::interval
    GROUP BY 1
    UNION ALL
    SELECT rule_id, sum(deliveries), sum(interacted)
    FROM rule_delivery_days
    WHERE status = 'sent' AND day >= ((now() - $1::interval) AT TIME ZONE 'UTC')::date
    GROUP BY rule_id
    UNION ALL
    SELECT '', sum(deliveries), sum(greatest(clicked, converted))
    FROM campaign_delivery_days
    WHERE status = 'sent' AND day >= ((now() - $1::interval) AT TIME ZONE 'UTC')::date
) t
GROUP BY rule_id
HAVING sum(sent) > 0
ORDER BY rule_id

-- name: stats_resting
-- Subscribers the fatigue guard rests now (a partial index of the rows with a rest).
SELECT count(*) FROM push_fatigue WHERE resting_since <= now() AND resting_until > now()
