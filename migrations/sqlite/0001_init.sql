-- Workspaces, API keys, users and members, and the audit log.
-- Times are INTEGER milliseconds since the Unix epoch (UTC).
CREATE TABLE workspaces (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    -- keyed BLAKE3 of the full key; the key itself is never stored
    key_hash     BLOB NOT NULL UNIQUE,
    key_hint     TEXT NOT NULL,
    label        TEXT NOT NULL,
    environment  TEXT NOT NULL CHECK (environment IN ('live', 'test')),
    -- canonical space-separated scope names: equal sets compare equal
    scopes       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    revoked_at   INTEGER
);
CREATE INDEX api_keys_by_scope_set ON api_keys (workspace_id, environment, scopes);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL,
    name          TEXT NOT NULL,
    -- Argon2id PHC string
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE UNIQUE INDEX users_by_email ON users (lower(email));

CREATE TABLE workspace_members (
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    user_id      TEXT NOT NULL REFERENCES users (id),
    role         TEXT NOT NULL CHECK (role IN ('viewer', 'member', 'admin', 'owner')),
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);

-- No foreign key to workspaces: ingestion must never fail on an event's references.
-- Ids are lowercase hyphenated UUIDv7 text, which sorts in time order. Rows are appended in
-- rowid order; the one unique index on (workspace_id, id) serves every read (one workspace's
-- events in id order) and makes re-delivered events no-ops. A clustered (WITHOUT ROWID)
-- table was measured slower: whole rows land at random places instead of index entries.
CREATE TABLE audit_events (
    id              TEXT NOT NULL,
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
);
CREATE UNIQUE INDEX audit_events_by_workspace ON audit_events (workspace_id, id);
