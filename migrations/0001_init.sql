-- Core tables of the data flow: api -> signals (queue) -> engine -> deliveries (outbox) -> push.
-- subscription_id is the natural distribution key should the schema move to a sharded
-- PostgreSQL (Citus): every per-subscriber table carries it and the hot paths filter by it.

CREATE TABLE subscriptions (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    endpoint        text NOT NULL UNIQUE,
    p256dh          text NOT NULL,
    auth            text NOT NULL,
    token_hash      bytea NOT NULL,
    timezone        text,
    locale          text,
    topics          text[] NOT NULL DEFAULT '{}',
    attributes      jsonb NOT NULL DEFAULT '{}',
    paused          boolean NOT NULL DEFAULT false,
    consent_at      timestamptz,
    -- 'active', or 'gone' once the push service answered 404/410 for the endpoint
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'gone')),
    -- the newest signal time applied by the engine: older signals arrive out of order
    last_signal_at  timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX subscriptions_token_hash ON subscriptions (token_hash);

-- The signal queue. Rows are claimed with FOR UPDATE SKIP LOCKED and a lease, so a worker
-- that dies releases its claim when the lease runs out.
CREATE TABLE signals (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id uuid NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    at              timestamptz NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    lat             double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon             double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    accuracy_m      real CHECK (accuracy_m >= 0),
    speed_mps       real CHECK (speed_mps >= 0),
    moment          text CHECK (moment IN ('know', 'go', 'do', 'buy')),
    context         jsonb NOT NULL DEFAULT '{}',
    processed_at    timestamptz,
    claimed_until   timestamptz
);

-- The queue head: only unprocessed rows, in arrival order.
CREATE INDEX signals_unprocessed ON signals (id) WHERE processed_at IS NULL;
CREATE INDEX signals_subscription ON signals (subscription_id, at);
-- Retention deletes processed rows by age.
CREATE INDEX signals_processed_at ON signals (processed_at) WHERE processed_at IS NOT NULL;

-- Presence of a subscriber at a place for one rule: what makes enter/dwell fire once per visit.
CREATE TABLE presence (
    subscription_id uuid NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    rule_id         text NOT NULL,
    place_id        text NOT NULL,
    inside          boolean NOT NULL,
    entered_at      timestamptz,
    dwell_fired     boolean NOT NULL DEFAULT false,
    visit           integer NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (subscription_id, rule_id, place_id)
);

-- The push outbox. A decision is a row here; the dedupe key makes a decision at most once
-- per (subscription, rule, place, visit) even when a batch is processed twice after a crash.
-- On erasure subscription_id, payload and the personal columns are cleared; the row keeps
-- the counts that aggregate statistics need.
CREATE TABLE deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id uuid REFERENCES subscriptions (id) ON DELETE SET NULL,
    signal_id       bigint,
    rule_id         text NOT NULL,
    variant         text NOT NULL DEFAULT '',
    place_id        text,
    dedupe_key      text UNIQUE,
    payload         jsonb,
    distance_m      real,
    local_hour      smallint CHECK (local_hour BETWEEN 0 AND 23),
    ttl_s           integer NOT NULL CHECK (ttl_s > 0),
    urgency         text NOT NULL DEFAULT 'normal'
                    CHECK (urgency IN ('very-low', 'low', 'normal', 'high')),
    topic           text,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'failed', 'gone', 'expired', 'cancelled')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    not_before      timestamptz NOT NULL DEFAULT now(),
    claimed_until   timestamptz,
    attempts        integer NOT NULL DEFAULT 0,
    last_status     integer,
    last_error      text,
    finished_at     timestamptz
);

CREATE INDEX deliveries_due ON deliveries (not_before) WHERE status = 'pending';
CREATE INDEX deliveries_subscription ON deliveries (subscription_id, created_at);
CREATE INDEX deliveries_rule ON deliveries (rule_id, variant, status);

-- Engagement reported by the service worker or page; one row per delivery and type.
CREATE TABLE events (
    delivery_id     bigint NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    type            text NOT NULL CHECK (type IN ('shown', 'clicked', 'dismissed', 'converted')),
    at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (delivery_id, type)
);

-- Counters that are not rows of their own: matches and suppressions by rule and reason.
CREATE TABLE rule_counters (
    rule_id         text NOT NULL,
    variant         text NOT NULL DEFAULT '',
    counter         text NOT NULL,
    n               bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (rule_id, variant, counter)
);
