-- The machine APIs: a provisioning key may invite (so `invited_by` names a
-- user only when a person invited), an invitation may carry a project to join
-- on acceptance, and organizations keep their alerting settings.

ALTER TABLE invitations ALTER COLUMN invited_by DROP NOT NULL;
ALTER TABLE invitations ADD COLUMN project_id TEXT REFERENCES projects (id) ON DELETE SET NULL;
ALTER TABLE invitations ADD COLUMN project_role TEXT CHECK (project_role IN ('admin', 'member'));

ALTER TABLE organizations ADD COLUMN alert_webhook_url TEXT;
ALTER TABLE organizations ADD COLUMN alert_types_json TEXT NOT NULL DEFAULT '[]';
