-- The per-origin 429 pause, shared by every sender process: a push service that asked one
-- sender to wait (Retry-After, else backoff) gets no request from any of them until
-- paused_until. Senders write it with a batch's outcomes and read it once per claimed batch.
CREATE TABLE push_origins (
    origin       text PRIMARY KEY,          -- scheme://host[:port] of the push service
    paused_until timestamptz NOT NULL,      -- the database's clock, never a host's
    strikes      integer NOT NULL DEFAULT 0 CHECK (strikes >= 0),  -- 429s in a row
    updated_at   timestamptz NOT NULL DEFAULT now()
);
