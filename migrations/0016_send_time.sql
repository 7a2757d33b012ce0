-- Send-time optimisation (issue 23, DESIGN "Engagement that keeps permission"): a campaign
-- with send_at {"optimal": DATE, ...} sends each subscriber at their own local hour, planned
-- when the campaign is created. Such a campaign is stored as a local one at the fallback
-- moment (send_local = DATE + fallback, late) - so the constraints and every reader of
-- send_local keep working - plus what only it has:
ALTER TABLE campaigns
    -- {"date": "YYYY-MM-DD", "window": "HH:MM-HH:MM", "fallback": "HH:MM"}; NULL: not optimal
    ADD COLUMN optimal  jsonb,
    -- The plan's summary for GET and the CLI: {"personal", "fallback", "by_local_hour"}
    ADD COLUMN schedule jsonb;

-- The planned local hour of each audience member who gets a personal one (at least 3
-- interactions in 90 days). Everyone else - and whoever joins the audience later - goes at
-- the campaign's fallback, so the fallback needs no row.
CREATE TABLE campaign_send_hours (
    campaign_id     text NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    subscription_id uuid NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    local_hour      smallint NOT NULL CHECK (local_hour BETWEEN 0 AND 23),
    PRIMARY KEY (campaign_id, subscription_id)
);
