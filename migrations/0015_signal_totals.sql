-- Running totals of signals for GET /v1/stats (issue 22): stored (counted by the ingest
-- statement), stale (counted by the worker's batch) and duplicates (refused by their client
-- id, counted by the ingest statement). One row, never deleted: signal retention and the
-- daily roll-ups delete other rows and leave these totals as they are. Statements upsert it,
-- so it needs no seed; a deployment upgraded to this version starts from the signals it
-- holds now.
CREATE TABLE signal_totals (
    one         boolean PRIMARY KEY DEFAULT true CHECK (one),
    stored      bigint NOT NULL DEFAULT 0 CHECK (stored >= 0),
    stale       bigint NOT NULL DEFAULT 0 CHECK (stale >= 0),
    duplicates  bigint NOT NULL DEFAULT 0 CHECK (duplicates >= 0)
);
INSERT INTO signal_totals (stored) SELECT count(*) FROM signals;
