-- Named queries of subscriptions (run by service/store/subscriptions.py): registration,
-- device authentication, patch, erasure and the data-subject export.

-- name: subscription_insert
-- A new endpoint; nothing (no row) when it is already registered, even by a registration
-- that commits while this one waits for it.
INSERT INTO subscriptions (endpoint, p256dh, auth, token_hash, timezone, locale, topics,
                           attributes, consent_at)
VALUES ($1, $2, $3, $4, $5, $6, coalesce($7, '{}'::text[]), coalesce($8, '{}'::jsonb),
        CASE WHEN $9::boolean THEN now() END)
ON CONFLICT (endpoint) DO NOTHING
RETURNING id

-- name: subscription_by_endpoint
-- The registered endpoint's proofs of ownership, locked until the re-registration decides.
SELECT id, auth, token_hash FROM subscriptions WHERE endpoint = $1 FOR UPDATE

-- name: subscription_renew
-- Re-registering an endpoint keeps its id, replaces its keys and token, and changes only the
-- profile fields the request carries (NULL here means "not given").
UPDATE subscriptions AS s SET
    p256dh = $2,
    auth = $3,
    token_hash = $4,
    timezone = coalesce($5, s.timezone),
    locale = coalesce($6, s.locale),
    topics = coalesce($7, s.topics),
    attributes = coalesce($8, s.attributes),
    consent_at = CASE WHEN $9::boolean IS NULL THEN s.consent_at
                      WHEN $9::boolean THEN now() END,
    status = 'active',
    updated_at = now()
WHERE id = $1

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

-- name: export_fatigue
-- The fatigue guard's count and latest rest (migrations/0019_fatigue.sql), if any.
SELECT unanswered, resting_since, resting_until FROM push_fatigue WHERE subscription_id = $1

-- name: erase_fatigue
-- After erase_deliveries (which waited for any sender recording this subscriber's pushes):
-- push_fatigue has no foreign key (migrations/0019_fatigue.sql).
DELETE FROM push_fatigue WHERE subscription_id = $1

-- name: erase_subscription
DELETE FROM subscriptions WHERE id = $1

-- name: export_signals
-- A data-subject access request: the subscriber's stored signals (retention already bounds
-- them), oldest first.
SELECT id, client_id, at, received_at, lat, lon, accuracy_m, speed_mps, moment, context,
       processed_at
FROM signals WHERE subscription_id = $1 ORDER BY at, id

-- name: export_presence
SELECT rule_id, place_id, inside, entered_at, dwell_fired, visit, updated_at
FROM presence WHERE subscription_id = $1 ORDER BY rule_id, place_id

-- name: export_deliveries
-- Every delivery with its payload and the events recorded for it.
SELECT d.id, d.rule_id, d.campaign_id, d.variant, d.place_id, d.payload, d.distance_m,
       d.status, d.test,
       d.created_at, d.decided_at, d.expires_at, d.finished_at, d.attempts, d.last_status,
       COALESCE((SELECT jsonb_agg(jsonb_build_object('type', e.type, 'action', e.action,
                                             'at', e.at) ORDER BY e.at)
                 FROM events e WHERE e.delivery_id = d.id), '[]'::jsonb) AS events
FROM deliveries d WHERE d.subscription_id = $1 ORDER BY d.id

-- name: export_shadow_sends
-- What shadow rules would have sent the subscriber (kept only as long as limits look back).
SELECT rule_id, place_id, decided_at FROM shadow_sends WHERE subscription_id = $1
ORDER BY decided_at

-- name: subscriptions_recent
-- The dashboard's test recipients: the $1 active, unpaused subscriptions (a test push to any
-- other is refused) seen or registered last. Only the endpoint's host leaves this query, to
-- name the push service; never the endpoint, keys or token. A scan of subscriptions with a
-- top-N sort: run when the dashboard loads, not on a hot path.
SELECT id, created_at, last_signal_at AS last_seen_at, split_part(endpoint, '/', 3) AS push_host,
       locale, topics, consent_at IS NOT NULL AS location_consent
FROM subscriptions
WHERE status = 'active' AND NOT paused
ORDER BY greatest(created_at, last_signal_at) DESC, id
LIMIT $1

-- name: subscriber_totals
-- The dashboard's subscriber counts: the subscriptions held now by state (an erased one is
-- deleted, so counted nowhere), and of the active ones those sharing their location.
SELECT count(*) FILTER (WHERE status = 'active' AND NOT paused) AS active,
       count(*) FILTER (WHERE status = 'active' AND paused) AS paused,
       count(*) FILTER (WHERE status = 'gone') AS gone,
       count(*) FILTER (WHERE status = 'active' AND NOT paused AND consent_at IS NOT NULL)
           AS sharing_location
FROM subscriptions

-- name: export_campaign_suppressions
-- A data-subject access request: the campaigns that sent the subscriber nothing, and why
-- (their pushes are among the export's deliveries).
SELECT campaign_id, variant, reason, at FROM campaign_suppressions
WHERE subscription_id = $1 ORDER BY at, campaign_id
