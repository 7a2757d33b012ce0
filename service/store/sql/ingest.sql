-- The group commit of signals (service/ingest.py).

-- name: ingest_signals
-- One statement per group commit, run outside an explicit transaction: PostgreSQL commits it
-- before answering, so its result means COMMIT succeeded, and the pg_notify ($12 = channel) is
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
WITH req AS (
    SELECT r.request, r.token_hash, r.received_at, r.located, s.id AS subscription_id,
           s.paused, s.consent_at IS NOT NULL AS consented
    FROM unnest($1::bytea[], $2::timestamptz[], $3::bool[]) WITH ORDINALITY
         AS r(token_hash, received_at, located, request)
    JOIN subscriptions s ON s.token_hash = r.token_hash
), stored AS (
    INSERT INTO signals (subscription_id, at, lat, lon, accuracy_m, speed_mps, moment, context)
    SELECT q.subscription_id, coalesce(u.at, q.received_at), u.lat, u.lon, u.accuracy_m,
           u.speed_mps, u.moment, u.context
    FROM unnest($4::int[], $5::timestamptz[], $6::float8[], $7::float8[], $8::real[],
                $9::real[], $10::text[],
                -- the contexts come as one JSON array: one json.dumps per batch, not per row
                array(SELECT c FROM jsonb_array_elements($11::text::jsonb) WITH ORDINALITY
                      AS e(c, n) ORDER BY n))
         WITH ORDINALITY AS u(request, at, lat, lon, accuracy_m, speed_mps, moment, context,
                              ord)
    JOIN req q ON q.request = u.request
    WHERE NOT q.paused AND (q.consented OR NOT q.located)
    ORDER BY u.ord
    RETURNING 1
), notified AS (
    SELECT pg_notify($12, '') FROM (SELECT 1 FROM stored LIMIT 1) AS any_stored
)
SELECT array(SELECT DISTINCT token_hash FROM req) AS known,
       array(SELECT DISTINCT token_hash FROM req WHERE paused) AS paused,
       -- 0-based positions, as the caller numbers its requests
       array(SELECT request - 1 FROM req WHERE located AND NOT consented) AS refused,
       (SELECT count(*) FROM stored) AS stored,
       (SELECT count(*) FROM notified) AS notified
