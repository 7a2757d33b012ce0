-- Nothing grows forever (issue 20). Deliveries, their events and campaigns' suppressions older
-- than DELIVERY_RETENTION are rolled up by the maintenance job (service/maintenance.py, queries
-- in service/store/sql/retention.sql) into the daily counts below and deleted, in one
-- transaction per batch. Every statistic reads these counts plus the rows still stored
-- (service/store/sql/events.sql, campaigns.sql), so its totals do not change.
--
-- A day is the UTC date of a delivery's created_at (of a suppression's at). The tables hold one
-- row per combination of what the statistics group by, never a subscriber: erasing a
-- subscription has nothing to erase here. Test pushes are deleted without being counted (no
-- statistic counts them), and a push without an outcome yet (pending) or of a campaign still
-- fanning out is left for a later pass.

-- Rules' pushes by variant, place ('' for none: a rule without places, or an erased push) and
-- outcome, and of them how many got each event type (a delivery counts each type once).
CREATE TABLE rule_delivery_days (
    day         date NOT NULL,
    rule_id     text NOT NULL,
    variant     text NOT NULL,
    place_id    text NOT NULL,
    status      text NOT NULL,
    deliveries  bigint NOT NULL CHECK (deliveries >= 0),
    shown       bigint NOT NULL DEFAULT 0 CHECK (shown >= 0),
    clicked     bigint NOT NULL DEFAULT 0 CHECK (clicked >= 0),
    dismissed   bigint NOT NULL DEFAULT 0 CHECK (dismissed >= 0),
    converted   bigint NOT NULL DEFAULT 0 CHECK (converted >= 0),
    PRIMARY KEY (day, rule_id, variant, place_id, status)
);

-- Rules' pushes by the local hour at the signal's location (the dashboard's decisions by
-- hour); pushes without one (erased, location-free) are not in it, as in the live query.
CREATE TABLE rule_hour_days (
    day         date NOT NULL,
    rule_id     text NOT NULL,
    local_hour  smallint NOT NULL CHECK (local_hour BETWEEN 0 AND 23),
    deliveries  bigint NOT NULL CHECK (deliveries >= 0),
    PRIMARY KEY (day, rule_id, local_hour)
);

-- Rules' clicks on an action button, by action (clicked_actions of /v1/stats).
CREATE TABLE rule_click_days (
    day         date NOT NULL,
    rule_id     text NOT NULL,
    variant     text NOT NULL,
    action      text NOT NULL,
    clicks      bigint NOT NULL CHECK (clicks >= 0),
    PRIMARY KEY (day, rule_id, variant, action)
);

-- Campaigns' pushes by variant and outcome, with their events as above.
CREATE TABLE campaign_delivery_days (
    day         date NOT NULL,
    campaign_id text NOT NULL REFERENCES campaigns (id),
    variant     text NOT NULL,
    status      text NOT NULL,
    deliveries  bigint NOT NULL CHECK (deliveries >= 0),
    shown       bigint NOT NULL DEFAULT 0 CHECK (shown >= 0),
    clicked     bigint NOT NULL DEFAULT 0 CHECK (clicked >= 0),
    dismissed   bigint NOT NULL DEFAULT 0 CHECK (dismissed >= 0),
    converted   bigint NOT NULL DEFAULT 0 CHECK (converted >= 0),
    PRIMARY KEY (day, campaign_id, variant, status)
);

-- Campaigns' audience members not sent to, by variant and reason.
CREATE TABLE campaign_suppression_days (
    day         date NOT NULL,
    campaign_id text NOT NULL REFERENCES campaigns (id),
    variant     text NOT NULL,
    reason      text NOT NULL,
    n           bigint NOT NULL CHECK (n >= 0),
    PRIMARY KEY (day, campaign_id, variant, reason)
);

-- The roll-up walks the oldest rows first, a bounded batch at a time; without these it would
-- scan whole tables every pass to find nothing.
CREATE INDEX deliveries_created ON deliveries (created_at);
CREATE INDEX campaign_suppressions_at ON campaign_suppressions (at);
-- SIGNAL_RETENTION deletes shadow rules' would-be sends by age, whoever they are of.
CREATE INDEX shadow_sends_decided ON shadow_sends (decided_at);
