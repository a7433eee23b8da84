-- The audit log as chunks of encoded events (see src/store/sqlite/audit_log.rs and the
-- encoding in src/domain/audit_codec.rs): one row per event and one index entry per event
-- cost 4-7 µs of CPU per event, one row per batch and per chunk a fraction of that.
-- Ingestion appends each batch as one row of audit_batches. Every so many events one
-- transaction regroups the batches by workspace into audit_chunks and deletes them. Reads
-- walk one workspace's chunks newest first, plus the batches not yet regrouped.
-- The events of version 2's tables (audit_events, audit_inbox) are moved into chunks by the
-- store right after this migration, in one transaction that then drops those tables.
CREATE TABLE audit_batches (
    seq    INTEGER PRIMARY KEY,
    events INTEGER NOT NULL,
    -- framed encoded events, in the order they were handed over
    body   BLOB NOT NULL
);

CREATE TABLE audit_chunks (
    seq          INTEGER PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    -- smallest and largest event id: 16-byte UUIDv7, whose byte order is time order
    first_id     BLOB NOT NULL,
    last_id      BLOB NOT NULL,
    -- earliest and latest occurred_at, milliseconds since the Unix epoch
    min_at       INTEGER NOT NULL,
    max_at       INTEGER NOT NULL,
    events       INTEGER NOT NULL,
    -- framed encoded events of this workspace, in id order
    body         BLOB NOT NULL
);
CREATE INDEX audit_chunks_by_workspace ON audit_chunks (workspace_id, last_id);
