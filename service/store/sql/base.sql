-- Named queries of the store's base (run by service/store/base.py).
--
-- Every .sql file here is named after the store module that runs its queries. Each query
-- starts with a "-- name: <name>" line; service.store.db.q(name) returns it, and names are
-- unique across the files.

-- name: ping
-- /readyz: the database answers.
SELECT 1
