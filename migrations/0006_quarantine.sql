-- A signal whose evaluation raises: each failed attempt is counted, and after a few the signal
-- is set aside (processed, so it leaves the queue head, and kept with the reason for an
-- operator to look at until retention deletes it like any processed signal).
ALTER TABLE signals
    ADD COLUMN attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN quarantined_at timestamptz,
    ADD COLUMN quarantine_reason text;

CREATE INDEX signals_quarantined ON signals (quarantined_at) WHERE quarantined_at IS NOT NULL;
