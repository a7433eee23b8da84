-- The rate limiters' counts, saved at a graceful shutdown and taken back (then deleted) at
-- the next start, so that a restart does not give every workspace a fresh minute.
-- `counts`: "second:count" pairs (seconds since the Unix epoch), space-separated.
CREATE TABLE rate_limit_counts (
    workspace_id TEXT NOT NULL,
    environment  TEXT NOT NULL,
    counts       TEXT NOT NULL,
    PRIMARY KEY (workspace_id, environment)
);
