-- The fatigue guard (rules/policy.yaml `fatigue: {after, rest}`; service/engagement/fatigue.py).
--
-- One row per subscription that was sent a push while the guard was on: the sent pushes in a
-- row without an interaction since the count last started, and the latest rest. The sender's
-- push_record advances it for a whole batch in the statement that records the outcomes, and
-- an interaction (event_record, event_click) resets it; the worker (batch_of) and the
-- campaign fan-out read it by primary key. Kept apart from subscriptions so that the
-- sender's and the events' writes never wait for a worker's lock on the subscriber row.
-- No foreign key, on purpose: its check would make the sender's record lock each subscriber
-- it counts (a write per push; with the lock taken SKIP LOCKED to avoid the deadlock below,
-- the record of 256 sent pushes took about 1.5 times as long) and wait for an erasure that
-- holds the subscription while the erasure waits for the pushes' rows (a deadlock). The erasure deletes
-- the row itself, after the deliveries (erase_fatigue), so a record that committed in between
-- is seen and one that comes later finds the pushes cancelled and counts nothing.
CREATE TABLE push_fatigue (
    subscription_id uuid PRIMARY KEY,
    unanswered      integer NOT NULL DEFAULT 0 CHECK (unanswered >= 0),
    resting_since   timestamptz,
    resting_until   timestamptz
);
-- GET /v1/stats counts the subscribers resting now.
CREATE INDEX push_fatigue_resting ON push_fatigue (resting_until)
    WHERE resting_until IS NOT NULL;

-- A campaign's audience member may be left out because they rest.
ALTER TABLE campaign_suppressions DROP CONSTRAINT campaign_suppressions_reason_check;
ALTER TABLE campaign_suppressions ADD CONSTRAINT campaign_suppressions_reason_check
    CHECK (reason IN ('missed_local_time', 'fatigued', 'global_cap', 'min_gap'));
