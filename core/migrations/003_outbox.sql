-- Tandem device store, version 3: the outbox ("saved to server") and the documents a device follows.

-- Every change made on this device, written in the same transaction as the chunk holding it.
-- `saved_at` is set once the relay advertised heads that include the change: the relay answers
-- only after committing, so that is when the change is durable on the server. Rows are kept after
-- that, so the app can show "saved" next to any local change.
CREATE TABLE outbox (
    change     BLOB PRIMARY KEY NOT NULL CHECK (length(change) = 32),
    document   BLOB NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    saved_at   INTEGER
) STRICT, WITHOUT ROWID;

-- "What is not on the server yet", per document and in total.
CREATE INDEX outbox_unsaved ON outbox (document) WHERE saved_at IS NULL;

-- Documents the app asked to keep in sync (typically directories; their entries follow them).
-- No foreign key to `documents`: a device follows a directory before it has received it.
CREATE TABLE followed (
    document    BLOB PRIMARY KEY NOT NULL CHECK (length(document) = 16),
    followed_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
