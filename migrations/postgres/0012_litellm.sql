-- LiteLLM's admin API in full: ids the caller chooses, named budgets, and
-- what LiteLLM reads back exactly as it was written (so a declarative
-- reconciler that diffs its spec against the API converges).

-- A team's id as the caller chose it (`team_id` on /team/new): unique in the
-- organization and usable wherever a team id is; Tollgate's own id works too.
ALTER TABLE projects ADD COLUMN external_id TEXT;
CREATE UNIQUE INDEX projects_by_external_id ON projects (org_id, external_id);

-- `budget_duration` as written ('30d', '1mo'), shown while it still names
-- the stored reset; `budget_id` the named budget whose limits it carries.
ALTER TABLE projects ADD COLUMN budget_duration TEXT;
ALTER TABLE projects ADD COLUMN budget_id TEXT;
ALTER TABLE api_keys ADD COLUMN budget_duration TEXT;
ALTER TABLE api_keys ADD COLUMN budget_id TEXT;

-- A key made without a models list (LiteLLM's "all the team's models")
-- follows its project's list when that changes.
ALTER TABLE api_keys ADD COLUMN models_follow BIGINT NOT NULL DEFAULT 0;

-- LiteLLM's block: a blocked key is revoked until unblocked (a revoked
-- one stays revoked); a blocked project's keys are all refused.
ALTER TABLE api_keys ADD COLUMN blocked BIGINT NOT NULL DEFAULT 0;
ALTER TABLE projects ADD COLUMN blocked_at BIGINT;

-- The organization-wide key lists page in SQL (newest first, or by alias).
CREATE INDEX api_keys_by_org ON api_keys (org_id, created_at, id);
CREATE INDEX api_keys_by_org_name ON api_keys (org_id, name_lower, id);
CREATE INDEX api_keys_by_org_kind ON api_keys (org_id, kind, created_at, id);
CREATE INDEX api_key_tags_by_tag ON api_key_tags (tag, key_id);

-- A member's id as the caller chose it (`user_id` on /user/new), the alias
-- and the LiteLLM role name it was given.
ALTER TABLE org_members ADD COLUMN external_id TEXT;
ALTER TABLE org_members ADD COLUMN alias TEXT;
ALTER TABLE org_members ADD COLUMN api_role TEXT;
CREATE UNIQUE INDEX org_members_by_external_id ON org_members (org_id, external_id);
CREATE INDEX org_members_by_org ON org_members (org_id, created_at, user_id);

-- A model's `model_info.id` and what LiteLLM echoes of it (mode,
-- base_model, tier, the `litellm_params.model` string); a provider's
-- `credential_info`.
ALTER TABLE models ADD COLUMN external_id TEXT;
ALTER TABLE models ADD COLUMN litellm_json TEXT;
CREATE UNIQUE INDEX models_by_external_id ON models (org_id, external_id);
ALTER TABLE providers ADD COLUMN litellm_json TEXT;

-- A named budget: limits that teams and keys point at (`budget_id`); a
-- change to it reaches every one of them.
CREATE TABLE budgets (
    org_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    max_budget_micros BIGINT,
    tpm_limit BIGINT,
    rpm_limit BIGINT,
    budget_reset TEXT NOT NULL CHECK (budget_reset IN ('never', 'daily', 'weekly', 'monthly')),
    budget_duration TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, id)
);
