-- Campaigns (issue 11): one message to a segment at an instant, or at a wall-clock moment in
-- each subscriber's own time zone. The fan-out (service/fanout.py) puts the pushes into the
-- deliveries outbox just in time - when a subscriber's moment has come and their quiet hours
-- are over - in one set-based statement per tick (service/store/sql/campaigns.sql), with the
-- dedupe key 'campaign:<id>:<subscription>'. The functions below are that statement's view
-- of an audience condition, an attribute's text, a subscriber's variant and the message; they
-- are inlined by the planner (plain SQL expressions) or cheap, so that 100k subscribers take
-- seconds. service/rules/campaigns.py holds the same definitions in Python, and
-- tests/campaigns compares the two.

CREATE TABLE campaigns (
    id            text PRIMARY KEY,
    description   text NOT NULL DEFAULT '',
    status        text NOT NULL DEFAULT 'scheduled'
                  CHECK (status IN ('scheduled', 'sending', 'done', 'cancelled')),
    -- The body as it was posted (normalised JSON), for GET and the CLI.
    spec          jsonb NOT NULL,
    -- {"topics"?: [...], "locales"?: [lower-case tags], "conditions": [{key, op, value}]}
    audience      jsonb NOT NULL,
    -- The variants and their messages as the fan-out's statement takes them (variant names
    -- and lower bounds, locale keys, payload templates, attribute tokens), see
    -- service/rules/campaigns.py Campaign.programs
    programs      jsonb NOT NULL,
    -- Either an instant, or a wall-clock moment with what to do where it had passed already.
    send_at       timestamptz,
    send_local    timestamp,
    late          text CHECK (late IN ('skip', 'send')),
    ttl_s         integer NOT NULL CHECK (ttl_s > 0),
    urgency       text NOT NULL CHECK (urgency IN ('very-low', 'low', 'normal', 'high')),
    topic         text,
    rate_per_s    double precision CHECK (rate_per_s > 0),
    -- Active, unpaused subscriptions in the audience when the campaign was created.
    audience_n    integer NOT NULL,
    created_at    timestamptz NOT NULL,
    -- The fan-out's schedule: when to look at the campaign again (NULL: nothing left to fan
    -- out), and with a rate, the next free send slot.
    next_check_at timestamptz,
    next_slot     timestamptz,
    fanned_out_at timestamptz,
    cancelled_at  timestamptz,
    finished_at   timestamptz,
    CONSTRAINT campaigns_one_moment CHECK ((send_at IS NULL) <> (send_local IS NULL)),
    CONSTRAINT campaigns_late_of_local CHECK ((late IS NULL) = (send_local IS NULL))
);

CREATE INDEX campaigns_due ON campaigns (next_check_at)
    WHERE status IN ('scheduled', 'sending') AND next_check_at IS NOT NULL;

-- A delivery is a rule's or a campaign's.
ALTER TABLE deliveries
    ALTER COLUMN rule_id DROP NOT NULL,
    ADD COLUMN campaign_id text REFERENCES campaigns (id),
    ADD CONSTRAINT deliveries_rule_or_campaign CHECK ((rule_id IS NULL) <> (campaign_id IS NULL));

CREATE INDEX deliveries_campaign ON deliveries (campaign_id, variant, status)
    WHERE campaign_id IS NOT NULL;

-- Audience members a campaign did not send to, and why: one row per (campaign, subscriber),
-- so a tick run twice counts nothing twice. subscription_id goes with an erasure.
CREATE TABLE campaign_suppressions (
    campaign_id     text NOT NULL REFERENCES campaigns (id),
    subscription_id uuid REFERENCES subscriptions (id) ON DELETE SET NULL,
    variant         text NOT NULL,
    reason          text NOT NULL CHECK (reason IN ('missed_local_time', 'global_cap', 'min_gap')),
    at              timestamptz NOT NULL
);

CREATE UNIQUE INDEX campaign_suppressions_once
    ON campaign_suppressions (campaign_id, subscription_id);

-- Two JSON scalars of one kind (text, number, bool) that are equal: numbers as float8, like
-- the rules' vectorised masks (service/rules/conditions.py).
CREATE FUNCTION momentcast_same(v jsonb, w jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN jsonb_typeof(v) IS DISTINCT FROM jsonb_typeof(w) THEN false
        WHEN jsonb_typeof(v) = 'number' THEN v::float8 = w::float8
        WHEN jsonb_typeof(v) IN ('string', 'boolean') THEN v = w
        ELSE false
    END
$$;

-- conditions.holds(Condition("attributes", key, op, arg), attrs[key], key in attrs), with the
-- argument of in a JSON array and that of not_in {"values": [...], "kinds": [json types]}
-- (Campaign.audience). No subqueries, so the planner inlines it.
CREATE FUNCTION momentcast_holds(attrs jsonb, key text, op text, arg jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(CASE
        WHEN op = 'exists' THEN (attrs ? key) = (arg = 'true'::jsonb)
        WHEN NOT (attrs ? key) THEN false
        WHEN jsonb_typeof(attrs -> key) NOT IN ('string', 'number', 'boolean') THEN false
        WHEN op = 'eq' THEN momentcast_same(attrs -> key, arg)
        WHEN op = 'ne' THEN jsonb_typeof(attrs -> key) = jsonb_typeof(arg)
                            AND NOT momentcast_same(attrs -> key, arg)
        WHEN op = 'in' THEN arg @> jsonb_build_array(attrs -> key)
        WHEN op = 'not_in' THEN (arg -> 'kinds') ? jsonb_typeof(attrs -> key)
                                AND NOT (arg -> 'values') @> jsonb_build_array(attrs -> key)
        WHEN jsonb_typeof(attrs -> key) <> 'number' OR jsonb_typeof(arg) <> 'number' THEN false
        WHEN op = 'gt' THEN (attrs -> key)::float8 > arg::float8
        WHEN op = 'gte' THEN (attrs -> key)::float8 >= arg::float8
        WHEN op = 'lt' THEN (attrs -> key)::float8 < arg::float8
        WHEN op = 'lte' THEN (attrs -> key)::float8 <= arg::float8
    END, false)
$$;

-- templates.attribute_value() of a JSON value as the store hands it to Python (a number
-- without a decimal point is an int there, any other a float).
CREATE FUNCTION momentcast_text_value(v jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT left(CASE jsonb_typeof(v)
        WHEN 'string' THEN v #>> '{}'
        WHEN 'boolean' THEN CASE WHEN v = 'true'::jsonb THEN 'yes' ELSE 'no' END
        WHEN 'number' THEN CASE
            WHEN strpos(v::text, '.') = 0 THEN v::text
            WHEN v::float8 = trunc(v::float8) AND abs(v::float8) < 9.2e18
                THEN (v::float8)::bigint::text
            WHEN v::float8 = trunc(v::float8) THEN (v::float8)::numeric::text
            -- float8 text switches to an exponent at 1e15, Python's repr at 1e16
            WHEN abs(v::float8) >= 1e15 THEN ((v::float8)::text)::numeric::text
            ELSE (v::float8)::text
        END
        ELSE ''
    END, 64)
$$;

-- campaigns.render() in SQL: a payload's JSON text with a token where each attribute goes
-- (tokens[i] stands for attrs[names[i]]), filled with the attributes' texts.
CREATE FUNCTION momentcast_fill(template text, tokens text[], names text[], attrs jsonb)
RETURNS jsonb LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    value text;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(tokens), 0) LOOP
        value := to_json(coalesce(momentcast_text_value(attrs -> names[i]), ''))::text;
        template := replace(template, tokens[i], substr(value, 2, length(value) - 2));
    END LOOP;
    RETURN template::jsonb;
END
$$;

-- campaigns.variant_point(): sha256(subscription \0 campaign), its first 7 bytes as a
-- big-endian integer, modulo the variants' total weight.
CREATE FUNCTION momentcast_variant_point(subscription uuid, campaign text, total integer)
RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (('x' || encode(substr(sha256(convert_to(subscription::text, 'UTF8') || '\x00'::bytea
                                         || convert_to(campaign, 'UTF8')), 1, 7), 'hex')
            )::bit(56)::bigint % total)::integer
$$;
