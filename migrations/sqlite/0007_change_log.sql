-- The change feed: every committed change the proxy must know, in commit
-- order (SQLite serialises writers). With SQLite one process serves and
-- applies its own changes at once; it still reads the log on a timer.
CREATE TABLE change_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    ref_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX change_log_by_age ON change_log (created_at);
