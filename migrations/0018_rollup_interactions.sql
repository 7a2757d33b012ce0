-- Adaptive rule variants (issue 23) draw from the interactions per sent push of the last 30
-- days, and DELIVERY_RETENTION may be shorter than that: the daily roll-up keeps how many of
-- its pushes got an interaction (a clicked or a converted event; once a push, whatever it
-- got), which its clicked and converted columns cannot tell where one push got both. The
-- roll-up fills it from now on (service/store/sql/retention.sql); rows rolled up before have
-- only those two, and the larger is the best they tell (a conversion mostly follows a click of
-- the same push).
ALTER TABLE rule_delivery_days
    ADD COLUMN interacted bigint NOT NULL DEFAULT 0 CHECK (interacted >= 0);
UPDATE rule_delivery_days SET interacted = greatest(clicked, converted);
