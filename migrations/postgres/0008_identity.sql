-- Enterprise identity: SSO connections (OIDC and SAML), the identities that
-- sign in through them, SCIM tokens, users and groups, role templates.

-- A session that began at or before this instant (ms) is ended: set when a
-- user is deprovisioned. 0: never.
ALTER TABLE users ADD COLUMN signed_out_at BIGINT NOT NULL DEFAULT 0;

-- How a member joined: 'password' (setup, the CLI), 'invitation', 'oidc',
-- 'saml' or 'scim'; and the role template whose limits their keys carry.
ALTER TABLE org_members ADD COLUMN joined_via TEXT NOT NULL DEFAULT 'password';
ALTER TABLE org_members ADD COLUMN template_id TEXT;

-- Password sign-in refused for the members, except the break-glass owner.
ALTER TABLE organizations ADD COLUMN sso_enforced BIGINT NOT NULL DEFAULT 0;
ALTER TABLE organizations ADD COLUMN break_glass_user_id TEXT;

ALTER TABLE invitations ADD COLUMN template_id TEXT;

CREATE TABLE role_templates (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    name_lower TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('owner', 'member', 'billing', 'viewer')),
    budget_micros BIGINT,
    budget_reset TEXT NOT NULL CHECK (budget_reset IN ('never', 'daily', 'weekly', 'monthly')),
    rpm_limit BIGINT,
    tpm_limit BIGINT,
    expires_in_days BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (org_id, name_lower)
);

CREATE TABLE sso_connections (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('oidc', 'saml')),
    name TEXT NOT NULL,
    -- OIDC: the issuer (discovery), client, its secret encrypted like
    -- provider keys (only a hint is shown), the scopes asked for.
    issuer TEXT,
    client_id TEXT,
    client_secret_enc TEXT,
    client_secret_hint TEXT,
    scopes TEXT,
    -- SAML: the IdP's metadata (URL or uploaded XML) and what was read from it.
    metadata_url TEXT,
    metadata_xml TEXT,
    idp_entity_id TEXT,
    idp_sso_url TEXT,
    idp_certs_json TEXT,
    allow_idp_initiated BIGINT NOT NULL DEFAULT 0,
    -- Both: the role of a user in no mapped group, the claim (or SAML
    -- attribute) holding groups, and [{group, role, project_id, project_role}].
    default_role TEXT NOT NULL CHECK (default_role IN ('owner', 'member', 'billing', 'viewer')),
    default_template_id TEXT,
    groups_claim TEXT NOT NULL,
    mapping_json TEXT NOT NULL,
    enabled BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX sso_connections_by_org ON sso_connections (org_id, created_at);

-- An email domain is sent to one connection (the sign-in page asks for the
-- email first).
CREATE TABLE sso_domains (
    domain TEXT PRIMARY KEY,
    connection_id TEXT NOT NULL REFERENCES sso_connections (id) ON DELETE CASCADE,
    org_id TEXT NOT NULL
);
CREATE INDEX sso_domains_by_connection ON sso_domains (connection_id);

-- Who signs in through an IdP: (issuer, subject) names the user, within one
-- connection (another organization's connection naming the same issuer
-- never reaches these accounts).
CREATE TABLE user_identities (
    connection_id TEXT NOT NULL REFERENCES sso_connections (id) ON DELETE CASCADE,
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    org_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_sign_in_at BIGINT,
    PRIMARY KEY (connection_id, issuer, subject)
);
CREATE INDEX user_identities_by_user ON user_identities (user_id);

-- SAML requests in flight (the ACS is a cross-site POST: no session cookie
-- comes with it) and assertions already used (replay cache).
CREATE TABLE saml_requests (
    id TEXT PRIMARY KEY,
    connection_id TEXT NOT NULL REFERENCES sso_connections (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    -- What the checked assertion said, until the browser that started the
    -- request takes it (single use).
    result_json TEXT
);
CREATE TABLE saml_assertions (
    id TEXT PRIMARY KEY,
    connection_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE TABLE scim_tokens (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    connection_id TEXT REFERENCES sso_connections (id) ON DELETE SET NULL,
    public_id TEXT NOT NULL UNIQUE,
    secret_hash TEXT NOT NULL,
    hint TEXT NOT NULL,
    name TEXT NOT NULL,
    created_by TEXT,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX scim_tokens_by_org ON scim_tokens (org_id, created_at);

-- A SCIM user is an organization's view of one account.
CREATE TABLE scim_users (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    user_name TEXT NOT NULL,
    user_name_lower TEXT NOT NULL,
    external_id TEXT,
    active BIGINT NOT NULL,
    -- The role given back on reactivation.
    role TEXT NOT NULL,
    attributes_json TEXT NOT NULL,
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (org_id, user_name_lower),
    UNIQUE (org_id, user_id)
);

CREATE TABLE scim_groups (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    display_name TEXT NOT NULL,
    display_lower TEXT NOT NULL,
    external_id TEXT,
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (org_id, display_lower)
);

CREATE TABLE scim_group_members (
    group_id TEXT NOT NULL REFERENCES scim_groups (id) ON DELETE CASCADE,
    scim_user_id TEXT NOT NULL REFERENCES scim_users (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, scim_user_id)
);
CREATE INDEX scim_group_members_by_user ON scim_group_members (scim_user_id);

-- The last requests each organization's SCIM clients made (the console
-- shows them); no bodies, no tokens.
CREATE TABLE scim_events (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    token_id TEXT,
    at BIGINT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    status BIGINT NOT NULL,
    summary TEXT NOT NULL
);
CREATE INDEX scim_events_by_org ON scim_events (org_id, at);
