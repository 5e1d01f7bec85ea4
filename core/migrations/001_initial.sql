-- Tandem device store, version 1: metadata, documents, their chunks, and per-peer sync state.
-- Instants are INTEGER milliseconds since the Unix epoch (UTC).

-- Small facts about this device: its id, its user, its name.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
) STRICT;

-- One row per Automerge document held on this device.
CREATE TABLE documents (
    id         BLOB PRIMARY KEY NOT NULL CHECK (length(id) = 16),
    kind       TEXT NOT NULL CHECK (kind IN ('plan', 'session', 'notes', 'directory')),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

CREATE INDEX documents_by_kind ON documents (kind);

-- A document's bytes: at most a few snapshots (compacted saves) followed by incremental chunks
-- (the changes of one edit or one sync message). Loading concatenates them, snapshots first.
-- `checksum` is the first 16 bytes of SHA-256(bytes) and `length` the byte count, so damage and
-- truncation are detected and reported instead of handed to Automerge.
CREATE TABLE chunks (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    document   BLOB NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('snapshot', 'incremental')),
    bytes      BLOB NOT NULL,
    length     INTEGER NOT NULL,
    checksum   BLOB NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE INDEX chunks_by_document ON chunks (document, id);

-- The automerge sync state with one peer (named by its storage id) for one document, so a
-- reconnect resumes the exchange instead of starting over. No foreign key to `documents`: the
-- sync engine keeps state for documents it is still asking peers for and does not hold yet.
CREATE TABLE sync_state (
    document        BLOB NOT NULL CHECK (length(document) = 16),
    peer_storage_id TEXT NOT NULL,
    state           BLOB NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (document, peer_storage_id)
) STRICT, WITHOUT ROWID;
