-- Fenced outcome records (issue 20): each claim of a delivery writes a fresh lease token, and
-- a sender records an outcome only while the row still carries the token of its own claim.
-- A sender past its lease (stalled, cut off from the database, paused by the OS) can then
-- neither release nor overwrite the claim of the sender that took the row over. The outcome's
-- write clears the token with claimed_until, so a second write of the same outcome does nothing.
ALTER TABLE deliveries ADD COLUMN claim_token uuid;
