-- Named queries of the outbox's deliveries (run by service/store/deliveries.py): the push
-- sender's claims and outcomes, gone subscriptions and the origins' shared 429 pause.

-- name: push_claim
-- Due pending deliveries, oldest first, leased to this sender until $2 seconds from now.
-- SKIP LOCKED lets any number of senders claim side by side; the lease hands a row to
-- another sender if this one dies mid-send. Each row gets a fresh lease token (claim_token):
-- push_record takes an outcome only with that token, so a sender past its lease cannot undo
-- the claim of the sender that took the row over. Every row also carries the origins' shared 429
-- pauses (as push_paused_origins reads them; evaluated once), so a batch learns them
-- without a round trip of its own.
WITH due AS (
    SELECT id
    FROM deliveries
    WHERE status = 'pending'
      AND not_before <= now()
      AND (claimed_until IS NULL OR claimed_until < now())
    ORDER BY not_before, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE deliveries d
    SET claimed_until = now() + make_interval(secs => $2),
        claim_token = gen_random_uuid()
    FROM due
    WHERE d.id = due.id
    RETURNING d.id, d.claim_token, d.subscription_id, d.rule_id, d.campaign_id, d.variant, d.payload,
              d.ttl_s, d.urgency, d.topic, d.expires_at, d.attempts
)
SELECT c.id, c.claim_token, c.subscription_id, c.rule_id, c.campaign_id, c.variant, c.payload, c.ttl_s,
       c.urgency, c.topic, c.expires_at, c.attempts, s.endpoint, s.p256dh, s.auth,
       s.status AS subscription_status, s.paused, now() AS db_now,
       (SELECT array_agg(ROW(o.origin,
                             GREATEST(0, extract(epoch FROM o.paused_until - now()))::float8,
                             o.strikes) ORDER BY o.origin)
        FROM push_origins o
        WHERE o.paused_until > now() OR o.strikes > 0) AS pauses
FROM claimed c
LEFT JOIN subscriptions s ON s.id = c.subscription_id
ORDER BY c.id

-- name: push_record
-- One statement for a whole batch of outcomes. A row stays 'pending' for a retry (then
-- not_before says when); the status guard keeps a concurrent cancellation in place, and the
-- token guard (fencing) ignores an outcome whose claim is no longer this sender's: its lease
-- ran out and another sender claimed the row, or the outcome was recorded already.
-- $8, $9: the fatigue guard (below). Returns how many outcomes were recorded.
WITH recorded AS (
UPDATE deliveries d
SET status = u.status,
    attempts = d.attempts + u.attempted,
    last_status = COALESCE(u.http_status, d.last_status),
    last_error = u.error,
    not_before = COALESCE(now() + make_interval(secs => u.delay_s), d.not_before),
    finished_at = CASE WHEN u.status = 'pending' THEN NULL ELSE now() END,
    claimed_until = NULL,
    claim_token = NULL
FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::int[], $5::int[], $6::text[],
            $7::float8[])
     AS u(id, token, status, attempted, http_status, error, delay_s)
WHERE d.id = u.id AND d.claim_token = u.token AND d.status = 'pending'
RETURNING d.subscription_id, d.status, d.test
), sent AS (
    -- With the fatigue guard on ($8 pushes in a row, then a rest of $9 seconds; NULL: off),
    -- the same statement advances each subscriber's count by its pushes this batch sent (test
    -- pushes are none; service/engagement/fatigue.py after_sent is the same rule): a push sent
    -- while resting does not count, the $8-th starts a rest and the count again from zero.
    -- Subscribers in id order: concurrent senders lock push_fatigue rows in one order (no
    -- deadlock). These comments stay below the UPDATE: pg_stat_activity shows a query's first
    -- 1024 bytes, and tests/push find the record waiting for a lock by its unnest.
    SELECT subscription_id, count(*)::int AS n FROM recorded
    WHERE $8::int IS NOT NULL AND status = 'sent' AND NOT test AND subscription_id IS NOT NULL
    GROUP BY subscription_id
), counted AS (
    INSERT INTO push_fatigue AS f (subscription_id, unanswered, resting_since, resting_until)
    SELECT subscription_id,
           CASE WHEN n >= $8::int THEN 0 ELSE n END,
           CASE WHEN n >= $8::int THEN now() END,
           CASE WHEN n >= $8::int THEN now() + make_interval(secs => $9::float8) END
    FROM sent
    ORDER BY subscription_id
    ON CONFLICT (subscription_id) DO UPDATE
    -- excluded holds this batch's count (its rest, if the batch alone reached $8).
    SET unanswered = CASE
            WHEN f.resting_since <= now() AND f.resting_until > now() THEN f.unanswered
            WHEN excluded.resting_until IS NOT NULL
                 OR f.unanswered + excluded.unanswered >= $8::int THEN 0
            ELSE f.unanswered + excluded.unanswered END,
        resting_since = CASE
            WHEN f.resting_since <= now() AND f.resting_until > now() THEN f.resting_since
            WHEN excluded.resting_until IS NOT NULL
                 OR f.unanswered + excluded.unanswered >= $8::int THEN now()
            ELSE f.resting_since END,
        resting_until = CASE
            WHEN f.resting_since <= now() AND f.resting_until > now() THEN f.resting_until
            WHEN excluded.resting_until IS NOT NULL
                 OR f.unanswered + excluded.unanswered >= $8::int
                THEN now() + make_interval(secs => $9::float8)
            ELSE f.resting_until END
)
SELECT count(*) FROM recorded

-- name: push_mark_gone
-- The push service said the endpoint no longer exists: stop using it.
UPDATE subscriptions SET status = 'gone', updated_at = now()
WHERE id = ANY($1::uuid[]) AND status <> 'gone'

-- name: push_cancel_for_gone
UPDATE deliveries
SET status = 'cancelled', last_error = 'subscription gone', finished_at = now(),
    claimed_until = NULL
WHERE subscription_id = ANY($1::uuid[]) AND status = 'pending'

-- name: push_pause_origins
-- Every sender's view of the push services that asked for a pause (429). The later end of a
-- pause wins, so a shorter Retry-After seen by another process never shortens it; the
-- strikes (429s in a row, which lengthen a pause without Retry-After) are the writer's.
-- Callers pass the origins sorted, so concurrent writers lock the rows in one order.
INSERT INTO push_origins AS o (origin, paused_until, strikes, updated_at)
SELECT u.origin, now() + make_interval(secs => u.pause_s), u.strikes, now()
FROM unnest($1::text[], $2::float8[], $3::int[]) AS u(origin, pause_s, strikes)
ON CONFLICT (origin) DO UPDATE
SET paused_until = GREATEST(o.paused_until, EXCLUDED.paused_until),
    strikes = EXCLUDED.strikes,
    updated_at = now()

-- name: push_paused_origins
-- A handful of rows (one per push service that ever throttled); push_claim reads the same.
SELECT origin,
       GREATEST(0, extract(epoch FROM paused_until - now()))::float8 AS pause_s,
       strikes
FROM push_origins
WHERE paused_until > now() OR strikes > 0
ORDER BY origin
