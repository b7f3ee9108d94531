-- The daily rollup splits by endpoint too (chat.completions, responses,
-- messages, …), so usage can be grouped by the API a client spoke. Rows
-- rolled up before have no endpoint recorded: ''.
CREATE TABLE usage_daily_next (
    org_id TEXT NOT NULL,
    day BIGINT NOT NULL,
    project_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    requested_model TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    tokens_in BIGINT NOT NULL,
    tokens_out BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    PRIMARY KEY (org_id, day, project_id, key_id, model, requested_model, endpoint)
);
INSERT INTO usage_daily_next (org_id, day, project_id, key_id, model, requested_model, endpoint, requests,
                              errors, tokens_in, tokens_out, cost_micros)
SELECT org_id, day, project_id, key_id, model, requested_model, '', requests, errors, tokens_in, tokens_out,
       cost_micros
FROM usage_daily;
DROP TABLE usage_daily;
ALTER TABLE usage_daily_next RENAME TO usage_daily;
CREATE INDEX usage_daily_by_project ON usage_daily (project_id, day);
CREATE INDEX usage_daily_by_key ON usage_daily (key_id, day);
