-- Each workspace's audit chunks as a chain, newest first, instead of an index over all of
-- them (see src/store/sqlite/audit_log.rs). A regrouping adds one chunk to each active
-- workspace; with the index on (workspace_id, last_id) those entries landed all over an index
-- that grows with the log, so every regrouping rewrote more of it: the writer's CPU per event
-- went from 1.4 to 2.9 µs over the first 10 million events of a wrk run. Appending to
-- audit_chunks by rowid and updating one row per workspace in audit_heads costs the same
-- whatever the log's size.
ALTER TABLE audit_chunks ADD COLUMN prev_seq INTEGER;
-- Over this chunk and every chunk before it in its chain: the largest last_id and max_at, so
-- that a query can stop once no earlier chunk can change its page.
ALTER TABLE audit_chunks ADD COLUMN upto_last_id BLOB;
ALTER TABLE audit_chunks ADD COLUMN upto_max_at INTEGER;

-- The newest chunk of each workspace.
CREATE TABLE audit_heads (
    workspace_id TEXT PRIMARY KEY,
    seq          INTEGER NOT NULL
) WITHOUT ROWID;

-- Chunks written by version 3, chained in the order they were written.
WITH chain AS (
    SELECT seq,
           LAG(seq) OVER w AS prev_seq,
           MAX(last_id) OVER w AS upto_last_id,
           MAX(max_at) OVER w AS upto_max_at
    FROM audit_chunks
    WINDOW w AS (PARTITION BY workspace_id ORDER BY seq)
)
UPDATE audit_chunks
SET prev_seq = chain.prev_seq, upto_last_id = chain.upto_last_id, upto_max_at = chain.upto_max_at
FROM chain
WHERE chain.seq = audit_chunks.seq;

INSERT INTO audit_heads (workspace_id, seq)
SELECT workspace_id, MAX(seq) FROM audit_chunks GROUP BY workspace_id;

DROP INDEX audit_chunks_by_workspace;
