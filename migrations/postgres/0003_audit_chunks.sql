-- Version 3 stores SQLite's audit log as chunks of encoded events (see
-- migrations/sqlite/0003_audit_chunks.sql). PostgreSQL keeps one row per event in
-- audit_events, written by the audit-ingestion job; this version keeps both backends on the
-- same version numbers and changes nothing here.
SELECT 1;
