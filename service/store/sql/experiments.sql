-- Named queries of campaign experiments (service/store/experiments.py). Only the fan-out's
-- tick changes a stored experiment, holding its campaign's row lock (campaign_lock), so one
-- process at a time starts or decides it.

-- name: experiment_insert
INSERT INTO campaign_experiments (campaign_id, test_share, decide_after, metric)
VALUES ($1, $2, $3, $4)

-- name: experiment_get
SELECT * FROM campaign_experiments WHERE campaign_id = $1

-- name: experiment_start
-- The fan-out's clock ($2) when the campaign's moment first came.
UPDATE campaign_experiments SET started_at = coalesce(started_at, $2)
WHERE campaign_id = $1
RETURNING *

-- name: experiment_decide
-- The decision, in the tick's transaction that queues the rest's pushes; a decided
-- experiment keeps its decision (the UPDATE leaves it and returns it as it is).
WITH decided AS (
    UPDATE campaign_experiments
    SET decided_at = $2, winner = $3, prob_best = $4
    WHERE campaign_id = $1 AND decided_at IS NULL
    RETURNING *
)
SELECT * FROM decided
UNION ALL
SELECT * FROM campaign_experiments
WHERE campaign_id = $1 AND NOT EXISTS (SELECT 1 FROM decided)

-- name: experiment_list
-- The experiments of campaign $1 (NULL: of every campaign), for the results.
SELECT * FROM campaign_experiments WHERE $1::text IS NULL OR campaign_id = $1
