-- The group commit of signals (service/ingest.py).

-- name: ingest_signals
-- One statement per group commit, run outside an explicit transaction: PostgreSQL commits it
-- before answering, so its result means COMMIT succeeded, and the pg_notify ($9 = channel) is
-- delivered with that COMMIT or not at all. Rows are matched to their device by token hash
-- here, so a request costs no lookup of its own; rows of unknown tokens match nothing and are
-- answered 401, rows of paused subscriptions are dropped (the client still gets 202). A request
-- ($10 numbers the requests) holding a location from a subscription without location consent
-- stores none of its rows and is answered 403; context signals (no lat/lon) need no consent.
-- Ids follow the order of the arrays (requests in queue order, each request's signals in its
-- order): signals without "at" share one time, so the worker applies them by id. INSERT ...
-- SELECT keeps no input order by itself (the join may reverse it), hence ORDER BY ord.
WITH input AS (
    SELECT *
    FROM unnest($1::bytea[], $2::timestamptz[], $3::float8[], $4::float8[], $5::real[],
                $6::real[], $7::text[],
                -- the contexts come as one JSON array: one json.dumps per batch, not per row
                array(SELECT c FROM jsonb_array_elements($8::text::jsonb) WITH ORDINALITY
                      AS e(c, n) ORDER BY n),
                $10::int[])
         WITH ORDINALITY AS u(token_hash, at, lat, lon, accuracy_m, speed_mps, moment, context,
                              request, ord)
), matched AS (
    SELECT s.id AS subscription_id, s.paused, s.consent_at IS NOT NULL AS consented, i.*
    FROM input i JOIN subscriptions s ON s.token_hash = i.token_hash
), refused AS (
    SELECT DISTINCT request FROM matched WHERE lat IS NOT NULL AND NOT consented
), stored AS (
    INSERT INTO signals (subscription_id, at, lat, lon, accuracy_m, speed_mps, moment, context)
    SELECT subscription_id, at, lat, lon, accuracy_m, speed_mps, moment, context
    FROM matched WHERE NOT paused AND request NOT IN (SELECT request FROM refused)
    ORDER BY ord
    RETURNING 1
), notified AS (
    SELECT pg_notify($9, '') FROM (SELECT 1 FROM stored LIMIT 1) AS any_stored
)
SELECT array(SELECT DISTINCT token_hash FROM matched) AS known,
       array(SELECT DISTINCT token_hash FROM matched WHERE paused) AS paused,
       array(SELECT request FROM refused) AS refused,
       (SELECT count(*) FROM stored) AS stored,
       (SELECT count(*) FROM notified) AS notified
