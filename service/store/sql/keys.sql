-- name: record_key_fingerprint
-- Start-up: the first process of a deployment records its key's fingerprint; every later one
-- reads what is recorded (its own when it was first, even in a race of two first starts).
WITH inserted AS (
    INSERT INTO deployment_keys (name, fingerprint)
    VALUES ($1, $2)
    ON CONFLICT (name) DO NOTHING
    RETURNING fingerprint
)
SELECT fingerprint FROM inserted
UNION ALL
SELECT fingerprint FROM deployment_keys WHERE name = $1
LIMIT 1

-- name: replace_key_fingerprint
-- A deliberate rotation (`momentcast vapid --generate`): the new key is the deployment's.
INSERT INTO deployment_keys (name, fingerprint)
VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, recorded_at = now()
