-- Named queries of the store's base (run by service/store/base.py).
--
-- Every .sql file here is named after the store module that runs its queries. Each query
-- starts with a "-- name: <name>" line; service.store.db.q(name) returns it, and names are
-- unique across the files.

-- name: ping
-- /readyz: the database answers.
SELECT 1

-- name: connection_room
-- serve --processes: the connections the server gives to ordinary roles.
SELECT current_setting('max_connections')::int
    - current_setting('superuser_reserved_connections')::int
