-- Named queries of the worker (service/worker.py).

-- name: claim_signals
-- A lease, not a lock held across the batch: a worker that dies leaves rows that become
-- claimable again when claimed_until passes.
WITH picked AS (
    SELECT id FROM signals
    WHERE processed_at IS NULL AND (claimed_until IS NULL OR claimed_until < now())
    ORDER BY id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE signals s SET claimed_until = now() + $2::interval
FROM picked WHERE s.id = picked.id
RETURNING s.subscription_id

-- name: lock_subscriptions
-- Serialises work per subscriber. SKIP LOCKED: a subscriber another worker holds is left to
-- it (that worker processes all of its pending signals), so workers never wait on each other.
-- NO KEY UPDATE, not UPDATE: it still excludes other workers and an erasure (FOR UPDATE), but
-- not the FOR KEY SHARE of the foreign-key check of signal inserts, so ingest never waits
-- for a batch.
SELECT id, timezone, locale, topics, attributes, paused, status, last_signal_at
FROM subscriptions
WHERE id = ANY($1::uuid[])
ORDER BY id
FOR NO KEY UPDATE SKIP LOCKED

-- name: pending_signals_of
SELECT id, subscription_id, at, lat, lon, accuracy_m, speed_mps, moment, context
FROM signals
WHERE subscription_id = ANY($1::uuid[]) AND processed_at IS NULL
ORDER BY subscription_id, at, id

-- name: presence_of
SELECT subscription_id, rule_id, place_id, entered_at, dwell_fired
FROM presence
WHERE subscription_id = ANY($1::uuid[]) AND inside

-- name: history_of
-- Campaigns' pushes count toward the caps too (rule_id '': they are no rule's).
SELECT subscription_id, coalesce(rule_id, '') AS rule_id, place_id, decided_at
FROM deliveries
WHERE subscription_id = ANY($1::uuid[]) AND decided_at > $2 AND NOT test
ORDER BY decided_at

-- name: release_claims
UPDATE signals SET claimed_until = NULL
WHERE subscription_id = ANY($1::uuid[]) AND processed_at IS NULL

-- name: delete_presence_of
DELETE FROM presence WHERE subscription_id = ANY($1::uuid[])

-- name: insert_presence
INSERT INTO presence (subscription_id, rule_id, place_id, inside, entered_at, dwell_fired,
                      visit, updated_at)
SELECT s, r, p, true, e, d, 0, now()
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::bool[]) AS t(s, r, p, e, d)

-- name: set_last_signal_at
UPDATE subscriptions AS sub SET last_signal_at = t.at
FROM unnest($1::uuid[], $2::timestamptz[]) AS t(id, at)
WHERE sub.id = t.id

-- name: mark_processed
UPDATE signals SET processed_at = now(), claimed_until = NULL WHERE id = ANY($1::bigint[])

-- name: record_signal_failures
-- Signals whose evaluation raised ($2 says why). One that failed $3 times is quarantined:
-- processed, so it no longer holds back its subscriber or the queue head.
UPDATE signals s
SET attempts = s.attempts + 1,
    quarantine_reason = f.reason,
    quarantined_at = CASE WHEN s.attempts + 1 >= $3 THEN now() END,
    processed_at = CASE WHEN s.attempts + 1 >= $3 THEN now() END,
    claimed_until = NULL
FROM unnest($1::bigint[], $2::text[]) AS f(id, reason)
WHERE s.id = f.id
RETURNING s.id, s.attempts, s.quarantined_at IS NOT NULL AS quarantined

-- name: insert_deliveries
-- The dedupe key makes a decision at most once even if a batch runs twice.
INSERT INTO deliveries (subscription_id, signal_id, rule_id, variant, place_id, dedupe_key,
                        payload, distance_m, local_hour, ttl_s, urgency, topic, decided_at,
                        expires_at, created_at)
SELECT s, sig, r, v, p, k, pl, dm, lh, ttl, u, tp, at, at + make_interval(secs => ttl),
       clock_timestamp()
FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::jsonb[], $8::real[], $9::smallint[], $10::int[], $11::text[], $12::text[],
            $13::timestamptz[])
     AS t(s, sig, r, v, p, k, pl, dm, lh, ttl, u, tp, at)
ON CONFLICT (dedupe_key) DO NOTHING
RETURNING rule_id

-- name: bump_counters
-- Keys arrive sorted so concurrent workers lock counter rows in one order (no deadlock).
INSERT INTO rule_counters (rule_id, variant, counter, n)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
ON CONFLICT (rule_id, variant, counter) DO UPDATE SET n = rule_counters.n + excluded.n

-- name: processing_lag
SELECT coalesce(extract(epoch FROM now() - min(received_at)), 0)::float8
FROM signals WHERE processed_at IS NULL

-- name: backlog
-- Work not yet done by the pipeline: signals to decide plus deliveries to send.
SELECT (SELECT count(*) FROM signals WHERE processed_at IS NULL)
     + (SELECT count(*) FROM deliveries WHERE status = 'pending')

-- name: notify
SELECT pg_notify($1, '')
