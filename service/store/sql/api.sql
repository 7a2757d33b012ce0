-- Queries of the subscriptions and signals API (service/api/, service/ingest.py).

-- name: subscription_upsert
-- Re-registering an endpoint keeps its id, replaces its keys and token, and changes only the
-- profile fields the request carries (NULL here means "not given").
INSERT INTO subscriptions AS s (endpoint, p256dh, auth, token_hash, timezone, locale, topics,
                                attributes, consent_at)
VALUES ($1, $2, $3, $4, $5, $6, coalesce($7, '{}'::text[]), coalesce($8, '{}'::jsonb),
        CASE WHEN $9::boolean THEN now() END)
ON CONFLICT (endpoint) DO UPDATE SET
    p256dh = excluded.p256dh,
    auth = excluded.auth,
    token_hash = excluded.token_hash,
    timezone = coalesce($5, s.timezone),
    locale = coalesce($6, s.locale),
    topics = coalesce($7, s.topics),
    attributes = coalesce($8, s.attributes),
    consent_at = CASE WHEN $9::boolean IS NULL THEN s.consent_at
                      WHEN $9::boolean THEN now() END,
    status = 'active',
    updated_at = now()
RETURNING id, (xmax = 0) AS created

-- name: subscription_auth
SELECT id, token_hash FROM subscriptions WHERE token_hash = $1

-- name: subscription_profile
SELECT id, timezone, locale, topics, attributes, paused, consent_at, status, created_at,
       updated_at
FROM subscriptions WHERE id = $1

-- name: subscription_patch
-- $2/$4/... say whether the following value was given; absent fields keep their value.
UPDATE subscriptions SET
    timezone = CASE WHEN $2 THEN $3 ELSE timezone END,
    locale = CASE WHEN $4 THEN $5 ELSE locale END,
    topics = CASE WHEN $6 THEN $7 ELSE topics END,
    attributes = CASE WHEN $8 THEN $9::jsonb ELSE attributes END,
    paused = CASE WHEN $10 THEN $11 ELSE paused END,
    consent_at = CASE WHEN NOT $12 THEN consent_at WHEN $13 THEN now() END,
    updated_at = now()
WHERE id = $1
RETURNING id, timezone, locale, topics, attributes, paused, consent_at, status, created_at,
          updated_at

-- name: erase_lock
SELECT true FROM subscriptions WHERE id = $1 FOR UPDATE

-- name: erase_presence
DELETE FROM presence WHERE subscription_id = $1

-- name: erase_signals
DELETE FROM signals WHERE subscription_id = $1

-- name: erase_deliveries
-- Statistics count deliveries by rule, variant and status; everything that ties a row to a
-- person or a place they were at goes. Undelivered pushes are cancelled: nobody to send to.
UPDATE deliveries SET
    subscription_id = NULL,
    signal_id = NULL,
    place_id = NULL,
    dedupe_key = NULL,
    payload = NULL,
    distance_m = NULL,
    local_hour = NULL,
    last_error = NULL,
    claimed_until = NULL,
    status = CASE WHEN status = 'pending' THEN 'cancelled' ELSE status END
WHERE subscription_id = $1

-- name: erase_subscription
DELETE FROM subscriptions WHERE id = $1

-- name: ingest_signals
-- One statement per group commit, run outside an explicit transaction: PostgreSQL commits it
-- before answering, so its result means COMMIT succeeded, and the pg_notify ($9 = channel) is
-- delivered with that COMMIT or not at all. Rows are matched to their device by token hash
-- here, so a request costs no lookup of its own; rows of unknown tokens match nothing and are
-- answered 401, rows of paused subscriptions are dropped (the client still gets 202).
WITH input AS (
    SELECT *
    FROM unnest($1::bytea[], $2::timestamptz[], $3::float8[], $4::float8[], $5::real[],
                $6::real[], $7::text[],
                -- the contexts come as one JSON array: one json.dumps per batch, not per row
                array(SELECT c FROM jsonb_array_elements($8::text::jsonb) WITH ORDINALITY
                      AS e(c, n) ORDER BY n))
         AS u(token_hash, at, lat, lon, accuracy_m, speed_mps, moment, context)
), matched AS (
    SELECT s.id AS subscription_id, s.paused, i.*
    FROM input i JOIN subscriptions s ON s.token_hash = i.token_hash
), stored AS (
    INSERT INTO signals (subscription_id, at, lat, lon, accuracy_m, speed_mps, moment, context)
    SELECT subscription_id, at, lat, lon, accuracy_m, speed_mps, moment, context
    FROM matched WHERE NOT paused
    RETURNING 1
), notified AS (
    SELECT pg_notify($9, '') FROM (SELECT 1 FROM stored LIMIT 1) AS any_stored
)
SELECT array(SELECT DISTINCT token_hash FROM matched) AS known,
       array(SELECT DISTINCT token_hash FROM matched WHERE paused) AS paused,
       (SELECT count(*) FROM stored) AS stored,
       (SELECT count(*) FROM notified) AS notified
