-- Named queries. Each starts with a "-- name: <name>" line; service.store.db.q(name) returns it.

-- name: ping
-- /readyz: the database answers.
SELECT 1

-- name: purge_signals
DELETE FROM signals
WHERE processed_at IS NOT NULL AND processed_at < now() - $1::interval
