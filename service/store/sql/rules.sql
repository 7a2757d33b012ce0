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
