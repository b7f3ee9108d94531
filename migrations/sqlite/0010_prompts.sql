-- Prompt management: an organization's named prompt templates, each a
-- series of immutable numbered versions, with labels (`production`,
-- `staging`, ...) that point at one version and move; the prompts each
-- project may use; and which prompt and version served a request.

CREATE TABLE prompts (
    org_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, id)
);

-- `messages_json`: [{"role": ..., "content": template}]; `model`: the
-- default model ('' none); `params_json`: default parameters, an object.
CREATE TABLE prompt_versions (
    org_id TEXT NOT NULL,
    prompt_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    messages_json TEXT NOT NULL,
    model TEXT NOT NULL,
    params_json TEXT NOT NULL,
    note TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, prompt_id, version),
    FOREIGN KEY (org_id, prompt_id) REFERENCES prompts (org_id, id) ON DELETE CASCADE
);

CREATE TABLE prompt_labels (
    org_id TEXT NOT NULL,
    prompt_id TEXT NOT NULL,
    label TEXT NOT NULL,
    version BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, prompt_id, label),
    FOREIGN KEY (org_id, prompt_id, version) REFERENCES prompt_versions (org_id, prompt_id, version) ON DELETE CASCADE
);

-- The prompt ids a project's keys may use (none at first).
ALTER TABLE projects ADD COLUMN prompts_json TEXT NOT NULL DEFAULT '[]';

-- The prompt and version a request was rendered from ('' and 0: none).
ALTER TABLE usage_events ADD COLUMN prompt_id TEXT NOT NULL DEFAULT '';
ALTER TABLE usage_events ADD COLUMN prompt_version BIGINT NOT NULL DEFAULT 0;
