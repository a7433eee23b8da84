-- The fingerprint of the key that API keys are hashed with (a keyed hash of a fixed text),
-- recorded by the first server to start. A server started with another key refuses to start,
-- where it would otherwise answer every key 401. One row.
CREATE TABLE hashing_key_fingerprint (
    only_row    INTEGER PRIMARY KEY DEFAULT 1 CHECK (only_row = 1),
    fingerprint TEXT NOT NULL
);
