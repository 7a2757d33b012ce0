-- Test pushes and shadow rules (issue 12).
--
-- A test push (POST /v1/rules/{id}/test) is a delivery like any other, sent at once past caps
-- and quiet hours, and marked test: rule statistics, decisions by hour and the caps' history
-- leave test rows out.
ALTER TABLE deliveries ADD COLUMN test boolean NOT NULL DEFAULT false;

-- A shadow rule (mode: shadow) never sends. What it would have sent is kept here, for as long
-- as limits look back, so that its own limits pace it as if it were live; live rules never see
-- these rows (their caps count deliveries only). Erased with the subscription.
CREATE TABLE shadow_sends (
    subscription_id uuid NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    rule_id         text NOT NULL,
    place_id        text NOT NULL DEFAULT '',
    decided_at      timestamptz NOT NULL
);
CREATE INDEX shadow_sends_history ON shadow_sends (subscription_id, decided_at);
