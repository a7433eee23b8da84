-- Version 4 chains SQLite's audit chunks by workspace (see
-- migrations/sqlite/0004_audit_chains.sql). PostgreSQL keeps one row per event; this version
-- keeps both backends on the same version numbers and changes nothing here.
SELECT 1;
