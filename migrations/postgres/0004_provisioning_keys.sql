-- Provisioning keys: an organization's automation manages service keys with
-- them through the machine APIs. Only the SHA-256 of the secret is stored.

CREATE TABLE provisioning_keys (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    public_id TEXT NOT NULL UNIQUE,
    secret_hash TEXT NOT NULL,
    hint TEXT NOT NULL,
    name TEXT NOT NULL,
    created_by TEXT REFERENCES users (id) ON DELETE SET NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX provisioning_keys_by_org ON provisioning_keys (org_id, created_at);
