-- Virtual models (stable names routed over catalogue models and provider
-- deployments), provider regions, and the model a request asked for next to
-- the one that served it.

-- Where a provider processes data ('eu', 'us', ...); '' where unstated. A
-- virtual model that requires a region is never sent to a provider outside
-- it (one of unstated region included). The built-in mock is in every
-- region: nothing leaves the process.
ALTER TABLE providers ADD COLUMN region TEXT NOT NULL DEFAULT '';

-- An organization's virtual models: `targets_json` is the route, an array of
-- {"model": catalogue id, "provider": name or null, "weight": n}.
CREATE TABLE virtual_models (
    org_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    description TEXT NOT NULL,
    strategy TEXT NOT NULL CHECK (strategy IN ('fallback', 'weighted', 'latency', 'cost')),
    region TEXT NOT NULL,
    targets_json TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, id)
);

-- The defaults every organization starts with (new ones get them in code),
-- except where the catalogue already has a model of that name.
INSERT INTO virtual_models (org_id, id, description, strategy, region, targets_json, created_at, updated_at)
SELECT o.id, 'smart/balanced', 'A good, affordable model for most work; the mock stands in until a provider is configured.',
       'fallback', '',
       '[{"model":"openai/gpt-4o-mini","provider":null,"weight":1},{"model":"anthropic/claude-3-5-haiku","provider":null,"weight":1},{"model":"mock/echo","provider":null,"weight":1}]',
       o.created_at, o.created_at FROM organizations o
WHERE NOT EXISTS (SELECT 1 FROM models m WHERE m.org_id = o.id AND m.id = 'smart/balanced');
INSERT INTO virtual_models (org_id, id, description, strategy, region, targets_json, created_at, updated_at)
SELECT o.id, 'smart/fast', 'The fastest answering of the small models.',
       'latency', '',
       '[{"model":"openai/gpt-4o-mini","provider":null,"weight":1},{"model":"anthropic/claude-3-5-haiku","provider":null,"weight":1},{"model":"mock/fast","provider":null,"weight":1}]',
       o.created_at, o.created_at FROM organizations o
WHERE NOT EXISTS (SELECT 1 FROM models m WHERE m.org_id = o.id AND m.id = 'smart/fast');
INSERT INTO virtual_models (org_id, id, description, strategy, region, targets_json, created_at, updated_at)
SELECT o.id, 'smart/best', 'The most capable models, in order.',
       'fallback', '',
       '[{"model":"anthropic/claude-sonnet-4","provider":null,"weight":1},{"model":"openai/gpt-4.1","provider":null,"weight":1},{"model":"mock/echo","provider":null,"weight":1}]',
       o.created_at, o.created_at FROM organizations o
WHERE NOT EXISTS (SELECT 1 FROM models m WHERE m.org_id = o.id AND m.id = 'smart/best');
INSERT INTO virtual_models (org_id, id, description, strategy, region, targets_json, created_at, updated_at)
SELECT o.id, 'eu/balanced', 'Like smart/balanced, served only by providers in the EU.',
       'fallback', 'eu',
       '[{"model":"openai/gpt-4o-mini","provider":null,"weight":1},{"model":"anthropic/claude-3-5-haiku","provider":null,"weight":1},{"model":"mock/echo","provider":null,"weight":1}]',
       o.created_at, o.created_at FROM organizations o
WHERE NOT EXISTS (SELECT 1 FROM models m WHERE m.org_id = o.id AND m.id = 'eu/balanced');

-- The model the client asked for (a virtual model's id, or the served
-- model's own) next to `model`, the one that served and priced it.
ALTER TABLE usage_events ADD COLUMN requested_model TEXT NOT NULL DEFAULT '';
UPDATE usage_events SET requested_model = model;

-- The daily rollup splits by both: rebuilt with the requested model in its key.
CREATE TABLE usage_daily_next (
    org_id TEXT NOT NULL,
    day BIGINT NOT NULL,
    project_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    requested_model TEXT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    tokens_in BIGINT NOT NULL,
    tokens_out BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    PRIMARY KEY (org_id, day, project_id, key_id, model, requested_model)
);
INSERT INTO usage_daily_next (org_id, day, project_id, key_id, model, requested_model, requests, errors,
                              tokens_in, tokens_out, cost_micros)
SELECT org_id, day, project_id, key_id, model, model, requests, errors, tokens_in, tokens_out, cost_micros
FROM usage_daily;
DROP TABLE usage_daily;
ALTER TABLE usage_daily_next RENAME TO usage_daily;
CREATE INDEX usage_daily_by_project ON usage_daily (project_id, day);
CREATE INDEX usage_daily_by_key ON usage_daily (key_id, day);
