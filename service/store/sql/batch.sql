-- Named queries of the worker's batch (service/worker.py, service/store/batch.py): after the
-- lock, one statement reads what a batch needs and one writes what it decided. A batch is
-- then six round trips (claim, BEGIN, lock, read, store, COMMIT) whatever its size, which is
-- what a batch of one signal costs at low rates.

-- name: batch_of
-- Per subscriber the worker has just locked (lock_subscriptions, a statement of its own so
-- that this one's snapshot is taken after the locks: one taken before would miss what the
-- worker that held a subscriber until then committed), its pending signals (in time order),
-- its presence and its decisions since $2. Campaigns' pushes count toward the caps too
-- (rule_id '': they are no rule's). Each table is read once for all the subscribers (= ANY,
-- then grouped), not once per subscriber: a subquery per subscriber let the planner AND in
-- the partial index of every unprocessed signal, scanned anew for each. The contexts come as
-- text: inside a record asyncpg would hand the binary jsonb to the text-format codec.
WITH pending AS (
    SELECT subscription_id,
           array_agg(ROW(id, at, lat, lon, accuracy_m, speed_mps, moment, context::text)
                     ORDER BY at, id) AS rows
    FROM signals
    WHERE subscription_id = ANY($1::uuid[]) AND processed_at IS NULL
    GROUP BY subscription_id
), present AS (
    SELECT subscription_id, array_agg(ROW(rule_id, place_id, entered_at, dwell_fired)) AS rows
    FROM presence
    WHERE subscription_id = ANY($1::uuid[]) AND inside
    GROUP BY subscription_id
), history AS (
    SELECT subscription_id,
           array_agg(ROW(coalesce(rule_id, ''), place_id, decided_at) ORDER BY decided_at)
               AS rows
    FROM deliveries
    WHERE subscription_id = ANY($1::uuid[]) AND decided_at > $2 AND NOT test
    GROUP BY subscription_id
)
SELECT sub.id,
       coalesce(pending.rows, '{}') AS pending,
       coalesce(present.rows, '{}') AS presence,
       coalesce(history.rows, '{}') AS history,
       fatigue.resting_since, fatigue.resting_until
FROM unnest($1::uuid[]) WITH ORDINALITY AS sub(id, n)
LEFT JOIN pending ON pending.subscription_id = sub.id
LEFT JOIN present ON present.subscription_id = sub.id
LEFT JOIN history ON history.subscription_id = sub.id
-- The fatigue guard's latest rest (migrations/0019_fatigue.sql): a primary-key lookup.
LEFT JOIN push_fatigue fatigue ON fatigue.subscription_id = sub.id
ORDER BY sub.n

-- name: store_batch
-- Everything a batch decided, in one statement: the subscribers' presence becomes exactly
-- $1-$5 (rows no longer there deleted, the others upserted: disjoint rows, so the two
-- sub-statements never touch one row twice), last_signal_at, the signals marked processed,
-- the counters (keys arrive sorted so concurrent workers lock counter rows in one order: no
-- deadlock) and the deliveries; the dedupe key makes a decision at most once even if a batch
-- runs twice; $28 stale signals are added to signal_totals. Returns the rule of each delivery
-- that was new, and NOTIFYs $27 (delivered at
-- COMMIT, so a sender woken by it sees the rows) only when there is one.
WITH new_presence AS MATERIALIZED (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::bool[])
        AS t(s, r, p, e, d)
), gone AS (
    DELETE FROM presence pr
    WHERE pr.subscription_id = ANY($6::uuid[])
      AND NOT EXISTS (SELECT 1 FROM new_presence n
                      WHERE n.s = pr.subscription_id AND n.r = pr.rule_id AND n.p = pr.place_id)
), kept AS (
    INSERT INTO presence (subscription_id, rule_id, place_id, inside, entered_at, dwell_fired,
                          visit, updated_at)
    SELECT s, r, p, true, e, d, 0, now() FROM new_presence
    ON CONFLICT (subscription_id, rule_id, place_id) DO UPDATE
    SET inside = true, entered_at = excluded.entered_at, dwell_fired = excluded.dwell_fired,
        visit = 0, updated_at = excluded.updated_at
), last_signal AS (
    UPDATE subscriptions AS sub SET last_signal_at = t.at
    FROM unnest($7::uuid[], $8::timestamptz[]) AS t(id, at)
    WHERE sub.id = t.id
), processed AS (
    UPDATE signals SET processed_at = now(), claimed_until = NULL WHERE id = ANY($9::bigint[])
), counters AS (
    INSERT INTO rule_counters (rule_id, variant, counter, n)
    SELECT * FROM unnest($10::text[], $11::text[], $12::text[], $13::bigint[])
    ON CONFLICT (rule_id, variant, counter) DO UPDATE SET n = rule_counters.n + excluded.n
), inserted AS (
    INSERT INTO deliveries (subscription_id, signal_id, rule_id, variant, place_id, dedupe_key,
                            payload, distance_m, local_hour, ttl_s, urgency, topic, decided_at,
                            expires_at, created_at)
    SELECT s, sig, r, v, p, k, pl, dm, lh, ttl, u, tp, at, at + make_interval(secs => ttl),
           clock_timestamp()
    FROM unnest($14::uuid[], $15::bigint[], $16::text[], $17::text[], $18::text[], $19::text[],
                $20::jsonb[], $21::real[], $22::smallint[], $23::int[], $24::text[],
                $25::text[], $26::timestamptz[])
         AS t(s, sig, r, v, p, k, pl, dm, lh, ttl, u, tp, at)
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING rule_id
), stale AS (
    -- $28: the batch's stale signals, into the running totals of /v1/stats
    INSERT INTO signal_totals AS t (one, stale) SELECT true, $28::bigint WHERE $28::bigint > 0
    ON CONFLICT (one) DO UPDATE SET stale = t.stale + excluded.stale
), notified AS (
    SELECT pg_notify($27, '') FROM (SELECT 1 FROM inserted LIMIT 1) AS any_new
)
SELECT rule_id, (SELECT count(*) FROM notified) AS notified FROM inserted

-- name: variant_counts_without_jit
-- Before variant_counts, in its transaction: the planner's estimate of its per-push EXISTS puts
-- it over jit_above_cost, and compiling it took 0.9 s of a 1.6 s count of 150000 pushes
-- (docs/performance.md); the count itself is index lookups, which JIT does not speed up.
SET LOCAL jit = off

-- name: variant_counts
-- Per (rule, variant) of the rules $1: the pushes sent that were created on the UTC day of $2 or
-- later, and how many of them got an interaction (a clicked or converted event; a click link
-- records a click). Adaptive allocation draws from these (the worker reads them at most once
-- per batch, see service/worker.py) and /v1/stats shows share and prob_best from them.
-- DELIVERY_RETENTION may be shorter than the window, so the rolled-up days count too; whole
-- UTC days of creation on both sides, so a roll-up changes no count.
WITH live AS (
    SELECT d.rule_id, d.variant, count(*) AS sent,
           count(*) FILTER (WHERE EXISTS (
               SELECT 1 FROM events e
               WHERE e.delivery_id = d.id AND e.type IN ('clicked', 'converted'))) AS interacted
    FROM deliveries d
    WHERE d.rule_id = ANY($1::text[]) AND d.status = 'sent' AND NOT d.test
      AND d.created_at >= date_trunc('day', $2::timestamptz, 'UTC')
    GROUP BY d.rule_id, d.variant
), rolled AS (
    SELECT rule_id, variant, sum(deliveries) AS sent, sum(interacted) AS interacted
    FROM rule_delivery_days
    WHERE rule_id = ANY($1::text[]) AND status = 'sent'
      AND day >= ($2::timestamptz AT TIME ZONE 'UTC')::date
    GROUP BY rule_id, variant
)
SELECT rule_id, variant, sum(sent)::bigint AS sent, sum(interacted)::bigint AS interacted
FROM (SELECT * FROM live UNION ALL SELECT * FROM rolled) AS counted
GROUP BY rule_id, variant
ORDER BY rule_id, variant
