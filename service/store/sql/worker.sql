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

-- name: release_claims
UPDATE signals SET claimed_until = NULL
WHERE subscription_id = ANY($1::uuid[]) AND processed_at IS NULL

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

-- name: processing_lag
SELECT coalesce(extract(epoch FROM now() - min(received_at)), 0)::float8
FROM signals WHERE processed_at IS NULL

-- name: backlog
-- Work not yet done by the pipeline: signals to decide plus deliveries to send.
SELECT (SELECT count(*) FROM signals WHERE processed_at IS NULL)
     + (SELECT count(*) FROM deliveries WHERE status = 'pending')

-- name: notify
SELECT pg_notify($1, '')
