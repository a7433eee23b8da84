-- Workspaces, API keys, users and members, and the audit log.
CREATE TABLE workspaces (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    -- keyed BLAKE3 of the full key; the key itself is never stored
    key_hash     BYTEA NOT NULL UNIQUE,
    key_hint     TEXT NOT NULL,
    label        TEXT NOT NULL,
    environment  TEXT NOT NULL CHECK (environment IN ('live', 'test')),
    -- canonical space-separated scope names: equal sets compare equal
    scopes       TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX api_keys_by_scope_set ON api_keys (workspace_id, environment, scopes);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL,
    name          TEXT NOT NULL,
    -- Argon2id PHC string
    password_hash TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX users_by_email ON users (lower(email));

CREATE TABLE workspace_members (
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    user_id      TEXT NOT NULL REFERENCES users (id),
    role         TEXT NOT NULL CHECK (role IN ('viewer', 'member', 'admin', 'owner')),
    created_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);

-- No foreign key to workspaces: ingestion must never fail on an event's references.
-- The primary key is (workspace_id, id): every read is one workspace's events in id (time)
-- order, so one index serves both the reads and the idempotent inserts.
CREATE TABLE audit_events (
    workspace_id    TEXT NOT NULL,
    id              UUID NOT NULL,
    occurred_at     TIMESTAMPTZ NOT NULL,
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
    client_addr     TEXT,
    PRIMARY KEY (workspace_id, id)
);
