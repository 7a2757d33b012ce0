-- Context signals: a page view or an intent without a location. lat and lon come together or
-- not at all; rules with places ignore such signals, location-free rules may match them.
ALTER TABLE signals ALTER COLUMN lat DROP NOT NULL;
ALTER TABLE signals ALTER COLUMN lon DROP NOT NULL;
ALTER TABLE signals ADD CONSTRAINT signals_location_pair CHECK ((lat IS NULL) = (lon IS NULL));
