-- Queries of engagement events, /v1/stats and the dashboard (service/store/engagement.py).

-- name: event_record
-- Accepted whatever the delivery's status: a browser may show a push before the sender has
-- recorded the push service's answer. The primary key makes a replay count once.
WITH d AS (SELECT id FROM deliveries WHERE id = $1),
     ins AS (
         INSERT INTO events (delivery_id, type)
         SELECT id, $2 FROM d
         ON CONFLICT (delivery_id, type) DO NOTHING
         RETURNING 1
     )
SELECT EXISTS (SELECT 1 FROM d) AS found, EXISTS (SELECT 1 FROM ins) AS inserted

-- name: stats_deliveries
SELECT rule_id, variant,
       count(*) FILTER (WHERE status = 'sent') AS sent,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'gone') AS gone,
       count(*) FILTER (WHERE status = 'expired') AS expired
FROM deliveries
GROUP BY rule_id, variant

-- name: stats_events
SELECT d.rule_id, d.variant, e.type, count(*) AS n
FROM events e JOIN deliveries d ON d.id = e.delivery_id
GROUP BY d.rule_id, d.variant, e.type

-- name: stats_counters
SELECT rule_id, variant, counter, n FROM rule_counters

-- name: decisions_by_hour
-- Local hour at the signal's location: when in the day the micro-moments happen.
SELECT rule_id, local_hour, count(*) AS n
FROM deliveries
WHERE local_hour IS NOT NULL
GROUP BY rule_id, local_hour
