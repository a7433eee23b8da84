-- The audit log's inbox (see src/store/sqlite/audit_log.rs). Batches of events are appended
-- here, keyed by their time-ordered id, and moved into audit_events sorted by
-- (workspace_id, id) up to 200,000 at a time, so that the log's index is written page
-- by page instead of event by event. Queries read both tables.
CREATE TABLE audit_inbox (
    id              TEXT NOT NULL PRIMARY KEY,
    occurred_at     INTEGER NOT NULL,
    workspace_id    TEXT NOT NULL,
    credential_type TEXT NOT NULL,
    credential_id   TEXT NOT NULL,
    key_label       TEXT,
    app_name        TEXT,
    method          TEXT NOT NULL,
    path            TEXT NOT NULL,
    scope           TEXT,
    status          INTEGER NOT NULL,
    error_code      TEXT,
    request_id      TEXT NOT NULL,
    client_addr     TEXT
) WITHOUT ROWID;
