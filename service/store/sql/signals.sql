-- Named queries of signals (run by service/store/signals.py): the group commit of
-- POST /v1/signals (service/ingest.py), the worker's claims and failures (service/worker.py),
-- the queue's gauges and NOTIFY, and the purge of processed signals.

-- name: ingest_signals
-- One statement per group commit, run outside an explicit transaction: PostgreSQL commits it
-- before answering, so its result means COMMIT succeeded, and the pg_notify ($13 = channel) is
-- delivered with that COMMIT or not at all. Requests come as per-request arrays ($1-$3: token
-- hash, time of receipt, whether any of its signals has a location), signals as per-row arrays
-- ($4 = the request's position, 1-based, then the columns): a token is sent and matched once
-- per request, not once per signal. Requests of unknown tokens match nothing and are answered
-- 401, signals of paused subscriptions are dropped (the client still gets 202). A request
-- holding a location from a subscription without location consent stores none of its rows and
-- is answered 403; context signals (no lat/lon) need no consent. A signal without "at" ($5
-- NULL) takes its request's time of receipt.
-- Ids follow the order of the arrays (requests in queue order, each request's signals in its
-- order): signals without "at" share one time, so the worker applies them by id. INSERT ...
-- SELECT keeps no input order by itself (the join may reverse it), hence ORDER BY ord.
-- Client ids ($12, NULL for a signal without one) make retries idempotent: of the signals of
-- one subscription with the same client id, only the first in the batch is a candidate (the
-- others, in its request or a later one, are duplicates of it), and a candidate whose id is
-- already stored, or is being stored by a concurrent commit, is skipped by ON CONFLICT (which
-- waits for that commit). Each request's newly stored signals come back as accepted_requests
-- (0-based) and accepted_counts; the rest of a stored request's signals were duplicates.
WITH req AS (
    SELECT r.request, r.token_hash, r.received_at, r.located, s.id AS subscription_id,
           s.paused, s.consent_at IS NOT NULL AS consented
    FROM unnest($1::bytea[], $2::timestamptz[], $3::bool[]) WITH ORDINALITY
         AS r(token_hash, received_at, located, request)
    JOIN subscriptions s ON s.token_hash = r.token_hash
), incoming AS (
    SELECT u.ord, u.request, q.subscription_id, coalesce(u.at, q.received_at) AS at, u.lat,
           u.lon, u.accuracy_m, u.speed_mps, u.moment, u.context, u.client_id
    FROM unnest($4::int[], $5::timestamptz[], $6::float8[], $7::float8[], $8::real[],
                $9::real[], $10::text[],
                -- the contexts come as one JSON array: one json.dumps per batch, not per row
                array(SELECT c FROM jsonb_array_elements($11::text::jsonb) WITH ORDINALITY
                      AS e(c, n) ORDER BY n),
                $12::text[])
         WITH ORDINALITY AS u(request, at, lat, lon, accuracy_m, speed_mps, moment, context,
                              client_id, ord)
    JOIN req q ON q.request = u.request
    WHERE NOT q.paused AND (q.consented OR NOT q.located)
), firsts AS (
    SELECT DISTINCT ON (subscription_id, client_id) ord, request, subscription_id, client_id
    FROM incoming
    WHERE client_id IS NOT NULL
    ORDER BY subscription_id, client_id, ord
), stored AS (
    INSERT INTO signals (subscription_id, at, lat, lon, accuracy_m, speed_mps, moment, context,
                         client_id)
    SELECT i.subscription_id, i.at, i.lat, i.lon, i.accuracy_m, i.speed_mps, i.moment,
           i.context, i.client_id
    FROM incoming i
    WHERE i.client_id IS NULL OR i.ord IN (SELECT ord FROM firsts)
    ORDER BY i.ord
    ON CONFLICT (subscription_id, client_id) WHERE client_id IS NOT NULL DO NOTHING
    RETURNING subscription_id, client_id
), accepted AS (
    -- a signal without an id is always stored; one with an id only if ON CONFLICT let it in
    SELECT request, count(*) AS n
    FROM (SELECT request FROM incoming WHERE client_id IS NULL
          UNION ALL
          SELECT f.request FROM firsts f JOIN stored s USING (subscription_id, client_id)) AS a
    GROUP BY request
), dropped AS (
    -- signals of stored requests refused as duplicates of their client id
    SELECT (SELECT count(*) FROM incoming WHERE client_id IS NOT NULL)
           - (SELECT count(*) FROM stored WHERE client_id IS NOT NULL) AS n
), totals AS (
    -- the running totals of /v1/stats (migrations/0015_signal_totals.sql): one row upserted
    -- per commit that stored or refused something, after this statement's inserts, so the
    -- row's lock is held only for the COMMIT that follows
    INSERT INTO signal_totals AS t (one, stored, duplicates)
    SELECT true, s.n, d.n FROM (SELECT count(*) AS n FROM stored) AS s, dropped AS d
    WHERE s.n + d.n > 0
    ON CONFLICT (one) DO UPDATE
    SET stored = t.stored + excluded.stored, duplicates = t.duplicates + excluded.duplicates
), notified AS (
    SELECT pg_notify($13, '') FROM (SELECT 1 FROM stored LIMIT 1) AS any_stored
)
SELECT array(SELECT DISTINCT token_hash FROM req) AS known,
       array(SELECT DISTINCT token_hash FROM req WHERE paused) AS paused,
       -- 0-based positions, as the caller numbers its requests
       array(SELECT request - 1 FROM req WHERE located AND NOT consented) AS refused,
       array(SELECT request - 1 FROM accepted ORDER BY request) AS accepted_requests,
       array(SELECT n FROM accepted ORDER BY request) AS accepted_counts,
       (SELECT count(*) FROM stored) AS stored,
       (SELECT n FROM dropped) AS duplicates,
       (SELECT count(*) FROM notified) AS notified

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

-- name: purge_signals
DELETE FROM signals
WHERE processed_at IS NOT NULL AND processed_at < now() - $1::interval
