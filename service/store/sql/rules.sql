-- Named queries of the marketer's tools: the test push, shadow rules' sends and the backtest
-- (run by service/store/rules.py).

-- name: insert_test_delivery
-- POST /v1/rules/{id}/test: due at once, past caps and quiet hours (nothing decided it), and
-- marked test so that rule statistics and the caps' history leave it out. No dedupe key:
-- every test is a push of its own.
INSERT INTO deliveries (subscription_id, rule_id, variant, place_id, payload, ttl_s, urgency,
                        topic, test, decided_at, expires_at, created_at)
VALUES ($1, $2, $3, $4, $5, $6::int, $7, $8, true, now(), now() + make_interval(secs => $6::int),
        clock_timestamp())
RETURNING id

-- name: shadow_history_of
-- What shadow rules would have sent to these subscribers since $2: only the shadow rules'
-- own limits look at it (the worker loads it when a shadow rule is loaded).
SELECT subscription_id, rule_id, place_id, decided_at
FROM shadow_sends
WHERE subscription_id = ANY($1::uuid[]) AND decided_at > $2
ORDER BY decided_at

-- name: insert_shadow_sends
INSERT INTO shadow_sends (subscription_id, rule_id, place_id, decided_at)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])

-- name: purge_shadow_sends
-- Older than any limit looks back: of no more use.
DELETE FROM shadow_sends WHERE subscription_id = ANY($1::uuid[]) AND decided_at <= $2

-- name: backtest_ready
-- The backtest reads test flags: the schema must have migration 0010.
SELECT EXISTS (
    SELECT 1 FROM information_schema.columns
    WHERE table_name = 'deliveries' AND column_name = 'test'
)

-- name: backtest_stored_since
-- The oldest signal kept (retention deletes processed ones after SIGNAL_RETENTION).
SELECT min(at) FROM signals WHERE quarantined_at IS NULL

-- name: backtest_subscribers
-- The next $4 subscribers (by id, after $3) with signals in [$1, $2): the backtest reads whole
-- subscribers at a time, so each starts from fresh state and none is split.
SELECT subscription_id FROM signals
WHERE at >= $1 AND at < $2 AND quarantined_at IS NULL
  AND ($3::uuid IS NULL OR subscription_id > $3::uuid)
GROUP BY subscription_id
ORDER BY subscription_id
LIMIT $4

-- name: backtest_signals
-- received_at: a signal that reached the server later than stale_after is judged stale.
SELECT id, subscription_id, at, lat, lon, accuracy_m, speed_mps, moment, context, received_at
FROM signals
WHERE subscription_id = ANY($1::uuid[]) AND at >= $2 AND at < $3 AND quarantined_at IS NULL
ORDER BY subscription_id, at, id

-- name: backtest_profiles
-- With the fatigue guard's latest rest: the signals of the period inside it are `fatigued`.
SELECT s.id, s.timezone, s.locale, s.topics, s.attributes, s.paused, s.status,
       s.last_signal_at, f.resting_since, f.resting_until
FROM subscriptions s
LEFT JOIN push_fatigue f ON f.subscription_id = s.id
WHERE s.id = ANY($1::uuid[])

-- name: backtest_live
-- What the live rules decided in [$1, $2) (by decision time), and how many were sent; test
-- pushes and campaigns left out.
SELECT rule_id, count(*) AS decided, count(*) FILTER (WHERE status = 'sent') AS sent
FROM deliveries
WHERE decided_at >= $1 AND decided_at < $2 AND NOT test AND rule_id IS NOT NULL
GROUP BY rule_id
ORDER BY rule_id
