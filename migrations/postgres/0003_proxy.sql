-- The proxy: providers (upstream API keys sealed with the server secret),
-- organization spend caps and content-logging switches, alternative
-- deployments of a model, the usage ledger and the content log.

CREATE TABLE providers (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('mock', 'openai', 'anthropic')),
    base_url TEXT NOT NULL,
    api_key_sealed TEXT,
    key_hint TEXT,
    latency_ms BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (org_id, name)
);

-- Every existing organization gets the built-in mock provider.
INSERT INTO providers (id, org_id, name, kind, base_url, api_key_sealed, key_hint, latency_ms, created_at, updated_at)
SELECT 'mock-' || id, id, 'mock', 'mock', '', NULL, NULL, 0, created_at, created_at FROM organizations;

ALTER TABLE organizations ADD COLUMN spend_cap_micros BIGINT;
ALTER TABLE organizations ADD COLUMN spend_cap_reset TEXT NOT NULL DEFAULT 'monthly';
ALTER TABLE organizations ADD COLUMN content_logging BIGINT NOT NULL DEFAULT 0;
ALTER TABLE projects ADD COLUMN content_logging BIGINT NOT NULL DEFAULT 1;
-- Further deployments of a model, tried in order when one fails: ["provider:upstream", ...].
ALTER TABLE models ADD COLUMN fallbacks_json TEXT NOT NULL DEFAULT '[]';

-- One row per proxied attempt; request_id makes a retried write idempotent.
CREATE TABLE usage_events (
    request_id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    org_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    stream BIGINT NOT NULL,
    tokens_in BIGINT NOT NULL,
    tokens_out BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    status BIGINT NOT NULL,
    error_code TEXT,
    latency_ms BIGINT NOT NULL
);
CREATE INDEX usage_events_by_key ON usage_events (key_id, at);
CREATE INDEX usage_events_by_project ON usage_events (project_id, at);
CREATE INDEX usage_events_by_org ON usage_events (org_id, at);

CREATE TABLE request_logs (
    request_id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    org_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    request_body TEXT NOT NULL,
    response_body TEXT NOT NULL,
    truncated BIGINT NOT NULL
);
CREATE INDEX request_logs_by_project ON request_logs (project_id, at);
