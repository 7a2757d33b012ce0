-- The time a decision was made in the subscriber's timeline (the signal's `at`), which caps,
-- min_gap and cooldowns count against; created_at stays the wall-clock insert time.
ALTER TABLE deliveries ADD COLUMN decided_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX deliveries_history ON deliveries (subscription_id, decided_at);
DROP INDEX deliveries_subscription;
