-- The change feed across instances: every committed change the proxy must
-- know (keys, projects, organizations, catalogue, providers, credits,
-- members), in commit order. Writers take a transaction-scoped advisory lock
-- before the insert, so a sequence number is taken only by the transaction
-- that commits next; `pg_notify('tollgate_changes', seq)` wakes the others.
-- Instances apply every entry after the last they applied; old entries are pruned.
CREATE TABLE change_log (
    seq BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    ref_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX change_log_by_age ON change_log (created_at);
