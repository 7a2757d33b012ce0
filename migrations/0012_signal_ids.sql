-- Idempotent signals: a client may give each signal an id (1-64 characters of A-Za-z0-9._:-,
-- checked by the API) so that a retry of a request whose 202 it never saw is not stored and
-- decided again. Ids are unique per subscription; a signal without one is never a duplicate.
-- The id goes with its signal: purged after SIGNAL_RETENTION, erased with the subscription.
-- Only the length is checked here: a regular expression per row would cost the group commit.
ALTER TABLE signals ADD COLUMN client_id text CHECK (length(client_id) BETWEEN 1 AND 64);

-- What ON CONFLICT DO NOTHING in ingest_signals relies on, also between concurrent commits.
-- Partial: signals without an id cost the index nothing.
CREATE UNIQUE INDEX signals_client_id ON signals (subscription_id, client_id)
    WHERE client_id IS NOT NULL;
