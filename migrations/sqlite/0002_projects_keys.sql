-- Projects, their members, the model catalogue and API keys. Money is integer
-- micro-USD (1e-6 USD); prices are micro-USD per million tokens; lists are JSON.

CREATE TABLE models (
    org_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    provider TEXT NOT NULL,
    upstream TEXT NOT NULL,
    input_micros_per_mtok BIGINT NOT NULL,
    output_micros_per_mtok BIGINT NOT NULL,
    context_window BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, id)
);

CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    models_json TEXT NOT NULL,
    tpm_limit BIGINT,
    rpm_limit BIGINT,
    budget_micros BIGINT,
    budget_reset TEXT NOT NULL CHECK (budget_reset IN ('never', 'daily', 'weekly', 'monthly')),
    ip_allowlist_json TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE project_members (
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, user_id)
);
CREATE INDEX project_members_by_user ON project_members (user_id);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    public_id TEXT NOT NULL UNIQUE,
    id_hash TEXT NOT NULL UNIQUE,
    secret_hash TEXT NOT NULL,
    prev_secret_hash TEXT,
    prev_valid_until BIGINT,
    hint TEXT NOT NULL,
    org_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('user', 'service')),
    owner_id TEXT REFERENCES users (id) ON DELETE SET NULL,
    name TEXT NOT NULL,
    name_lower TEXT NOT NULL,
    models_json TEXT NOT NULL,
    tpm_limit BIGINT,
    rpm_limit BIGINT,
    budget_micros BIGINT,
    budget_reset TEXT NOT NULL CHECK (budget_reset IN ('never', 'daily', 'weekly', 'monthly')),
    expires_at BIGINT,
    no_content_logging BIGINT NOT NULL,
    tags_json TEXT NOT NULL,
    metadata_json TEXT NOT NULL,
    spend_micros BIGINT NOT NULL,
    created_by TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX api_keys_by_project ON api_keys (project_id, created_at, id);
CREATE INDEX api_keys_by_project_name ON api_keys (project_id, name_lower, id);
CREATE INDEX api_keys_by_owner ON api_keys (owner_id, created_at);

CREATE TABLE api_key_tags (
    key_id TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    project_id TEXT NOT NULL,
    tag TEXT NOT NULL,
    PRIMARY KEY (key_id, tag)
);
CREATE INDEX api_key_tags_lookup ON api_key_tags (project_id, tag, key_id);
