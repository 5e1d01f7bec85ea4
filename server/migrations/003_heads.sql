-- The reconnect digest (DESIGN.md §3): the heads each document has committed, so the relay can
-- answer a device's digest without loading every document, and the documents synced with each
-- peer storage id. `heads` is NULL for documents stored before this migration; it is filled the
-- first time a digest needs it.
ALTER TABLE documents ADD COLUMN heads BLOB;
CREATE INDEX sync_states_by_peer ON sync_states (peer_storage_id);
