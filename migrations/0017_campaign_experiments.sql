-- Campaign experiments (issue 23): a campaign with two or more variants and
-- "experiment": {test_share, decide_after, metric} sends its variants by weight to a test
-- share of its audience, decides after decide_after which variant is most likely best on the
-- metric (Beta posteriors of interactions per sent push, service/campaigns/experiment.py),
-- and sends that winner to the rest. One row per such campaign, stored with it (the same
-- transaction), changed only by the fan-out's tick, which holds the campaign's row lock.
-- The decision is stored in the transaction that queues the rest's first pushes: a crash
-- between the phases rolls both back, and the deliveries' dedupe key
-- 'campaign:<id>:<subscription>' stays the one guard against a second push.
CREATE TABLE campaign_experiments (
    campaign_id   text PRIMARY KEY REFERENCES campaigns (id),
    test_share    double precision NOT NULL CHECK (test_share > 0 AND test_share < 1),
    decide_after  interval NOT NULL CHECK (decide_after >= interval '1 minute'),
    metric        text NOT NULL CHECK (metric IN ('clicked', 'converted')),
    -- The fan-out's clock when the campaign's moment first came (the test pushes start
    -- going); the decision is due decide_after later.
    started_at    timestamptz,
    -- The decision, once: when, the winner and every variant's probability of being best.
    decided_at    timestamptz,
    winner        text,
    prob_best     jsonb,
    CONSTRAINT campaign_experiments_decided
        CHECK ((decided_at IS NULL) = (winner IS NULL) AND (winner IS NULL) = (prob_best IS NULL)),
    CONSTRAINT campaign_experiments_started_first
        CHECK (decided_at IS NULL OR started_at IS NOT NULL)
);

-- Whether a subscriber is in a campaign's test share: sha256(subscription \0 campaign), its
-- bytes 8 to 14 (the 7 after those of momentcast_variant_point, so the two are independent)
-- as a big-endian 56-bit integer; a subscriber is in the test share when it is below
-- floor(test_share * 2^56). service/campaigns/experiment.py computes the same in Python.
CREATE FUNCTION momentcast_test_point(subscription uuid, campaign text)
RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ('x' || encode(substr(sha256(convert_to(subscription::text, 'UTF8') || '\x00'::bytea
                                        || convert_to(campaign, 'UTF8')), 8, 7), 'hex')
           )::bit(56)::bigint
$$;
