-- Which action button a click came from (issue 16). NULL: the notification itself was
-- clicked (or the event is no click). The first click of a delivery is the one kept, action
-- and all, like every event (the primary key counts a repeat once).
ALTER TABLE events
    ADD COLUMN action text,
    ADD CONSTRAINT events_action_of_clicks
        CHECK (action IS NULL OR (type = 'clicked' AND char_length(action) BETWEEN 1 AND 64));
