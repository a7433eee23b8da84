-- Version 2 gives SQLite an inbox in front of its audit log (see
-- migrations/sqlite/0002_audit_inbox.sql). PostgreSQL keeps writing events straight into
-- audit_events; this version documents the table and keeps both backends on the same
-- version numbers.
COMMENT ON TABLE audit_events IS
    'One row per credentialed request, written in batches by audit ingestion, never updated.';
