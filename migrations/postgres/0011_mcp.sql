-- The MCP gateway: an organization's registered MCP servers, which of
-- them (and which tools) each project's keys may use, and a key's own
-- narrowing of that.

-- `credential_sealed`: the value of `credential_header` sent upstream,
-- sealed like a provider key (`credential_hint` its last characters).
-- `tools_json`: the tools exposed, a JSON list; 'null' exposes all.
CREATE TABLE mcp_servers (
    org_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    transport TEXT NOT NULL CHECK (transport IN ('http')),
    credential_header TEXT NOT NULL,
    credential_sealed TEXT,
    credential_hint TEXT,
    tools_json TEXT NOT NULL,
    timeout_ms BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, name)
);

-- [{"server": name, "tools": null | [tool, ...]}]: what a project's keys
-- may use (none at first).
ALTER TABLE projects ADD COLUMN mcp_json TEXT NOT NULL DEFAULT '[]';

-- The same shape on a key narrows its project's grant; NULL inherits it.
ALTER TABLE api_keys ADD COLUMN mcp_json TEXT;
