-- The time a decision was made in the subscriber's timeline (the signal's `at`), which caps,
-- min_gap and cooldowns count against; created_at stays the wall-clock insert time.
ALTER TABLE deliveries ADD COLUMN decided_at timestamptz;
UPDATE deliveries SET decided_at = created_at WHERE decided_at IS NULL;
ALTER TABLE deliveries ALTER COLUMN decided_at SET NOT NULL;
CREATE INDEX deliveries_history ON deliveries (subscription_id, decided_at);
DROP INDEX deliveries_subscription;
