-- The fingerprints of the deployment's keys (issue 20): every process of one deployment needs
-- the same VAPID key pair and SECRET_KEY, and a host started with other keys otherwise runs
-- silently while its pushes (401/403 from push services) or engagement events (403) fail.
-- The first process records them; a process with other keys stops at start-up.
-- Fingerprints only, never the keys: the SHA-256 of the VAPID public key, and of an HMAC
-- made with SECRET_KEY (so the row tells nothing about the secret).
CREATE TABLE deployment_keys (
    name        text PRIMARY KEY CHECK (name IN ('vapid_public_key', 'secret_key')),
    fingerprint text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
