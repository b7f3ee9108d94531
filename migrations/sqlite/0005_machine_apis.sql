-- The machine APIs: a provisioning key may invite (so `invited_by` names a
-- user only when a person invited), an invitation may carry a project to join
-- on acceptance, and organizations keep their alerting settings.

CREATE TABLE invitations_new (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('owner', 'member', 'billing', 'viewer')),
    token_hash TEXT NOT NULL UNIQUE,
    invited_by TEXT REFERENCES users (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    accepted_at BIGINT,
    accepted_by TEXT REFERENCES users (id),
    revoked_at BIGINT,
    project_id TEXT REFERENCES projects (id) ON DELETE SET NULL,
    project_role TEXT CHECK (project_role IN ('admin', 'member'))
);
INSERT INTO invitations_new (id, org_id, email, role, token_hash, invited_by, created_at, expires_at,
    accepted_at, accepted_by, revoked_at)
SELECT id, org_id, email, role, token_hash, invited_by, created_at, expires_at, accepted_at, accepted_by, revoked_at
FROM invitations;
DROP TABLE invitations;
ALTER TABLE invitations_new RENAME TO invitations;
CREATE INDEX invitations_by_org ON invitations (org_id, created_at);

ALTER TABLE organizations ADD COLUMN alert_webhook_url TEXT;
ALTER TABLE organizations ADD COLUMN alert_types_json TEXT NOT NULL DEFAULT '[]';
