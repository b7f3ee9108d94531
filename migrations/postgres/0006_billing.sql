-- Usage analytics, credits, statements and alerts.
--
-- `usage_daily` rolls the ledger up per UTC day, project, key and model, so
-- that usage pages, statements, budgets at start and alerts read rows per
-- day rather than per request. The ledger writer adds to it in the same
-- transaction as each new event.
CREATE TABLE usage_daily (
    org_id TEXT NOT NULL,
    day BIGINT NOT NULL,
    project_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    tokens_in BIGINT NOT NULL,
    tokens_out BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    PRIMARY KEY (org_id, day, project_id, key_id, model)
);
CREATE INDEX usage_daily_by_project ON usage_daily (project_id, day);
CREATE INDEX usage_daily_by_key ON usage_daily (key_id, day);
INSERT INTO usage_daily (org_id, day, project_id, key_id, model, requests, errors, tokens_in, tokens_out, cost_micros)
SELECT org_id, CAST(at / 86400000 AS BIGINT), project_id, key_id, model, COUNT(*),
       CAST(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS BIGINT),
       CAST(SUM(tokens_in) AS BIGINT), CAST(SUM(tokens_out) AS BIGINT), CAST(SUM(cost_micros) AS BIGINT)
FROM usage_events
GROUP BY org_id, CAST(at / 86400000 AS BIGINT), project_id, key_id, model;

-- The prepaid pool: grants, purchases and adjustments (signed micro-USD).
-- The balance (credits minus metered spend) is enforced where `prepaid` is on.
CREATE TABLE credit_entries (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('grant', 'purchase', 'adjustment')),
    amount_micros BIGINT NOT NULL,
    note TEXT NOT NULL,
    reference TEXT NOT NULL,
    entered_by TEXT NOT NULL
);
CREATE INDEX credit_entries_by_org ON credit_entries (org_id, at);
ALTER TABLE organizations ADD COLUMN prepaid BIGINT NOT NULL DEFAULT 0;

-- Alerts: a Slack-compatible URL beside the generic JSON webhook, and the
-- budget thresholds in percent.
ALTER TABLE organizations ADD COLUMN alert_slack_url TEXT;
ALTER TABLE organizations ADD COLUMN alert_thresholds_json TEXT NOT NULL DEFAULT '[50,80,100]';

-- One row per alert raised; the unique key makes "once per threshold per
-- period" hold however many instances evaluate.
CREATE TABLE alerts (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    subject_type TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    threshold BIGINT NOT NULL,
    period_start BIGINT NOT NULL,
    at BIGINT NOT NULL,
    message TEXT NOT NULL,
    payload_json TEXT NOT NULL,
    UNIQUE (org_id, kind, subject_id, threshold, period_start)
);
CREATE INDEX alerts_by_org ON alerts (org_id, at);

-- Delivery of an alert to one destination, retried with backoff.
CREATE TABLE alert_deliveries (
    alert_id TEXT NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    target TEXT NOT NULL CHECK (target IN ('slack', 'webhook')),
    attempts BIGINT NOT NULL,
    next_at BIGINT,
    delivered_at BIGINT,
    last_error TEXT,
    PRIMARY KEY (alert_id, target)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_at);
