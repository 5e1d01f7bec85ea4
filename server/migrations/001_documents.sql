-- Settings of this relay's database, such as its storage id.
CREATE TABLE meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
) STRICT;

-- Documents the relay holds, and their chunks: what clients sent, committed before acknowledged.
CREATE TABLE documents (
    id          BLOB PRIMARY KEY,          -- 16 bytes
    created_at  INTEGER NOT NULL           -- unix milliseconds
) STRICT;

CREATE TABLE chunks (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    document    BLOB NOT NULL REFERENCES documents (id),
    is_snapshot INTEGER NOT NULL,
    bytes       BLOB NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX chunks_by_document ON chunks (document, seq);

-- The last sync state agreed with each peer that has durable storage, so reconnects resume.
-- No foreign key to `documents`: the engine keeps state for a document a peer asked for before
-- any change of it is stored (or that is never stored at all).
CREATE TABLE sync_states (
    document         BLOB NOT NULL,
    peer_storage_id  TEXT NOT NULL,
    state            BLOB NOT NULL,
    PRIMARY KEY (document, peer_storage_id)
) STRICT;
