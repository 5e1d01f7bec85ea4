//! Persisted automerge sync state, per document and per peer storage id, so a reconnect resumes
//! the exchange where it stopped instead of starting over.
//!
//! The bytes are whatever the sync engine gives (`automerge::sync::State::encode`); the store does
//! not interpret them. A sync state may exist for a document the device does not hold yet: the
//! engine keeps one while it asks peers for the document.

use rusqlite::{OptionalExtension, params};

use super::{Store, now_millis};
use crate::error::Result;
use crate::ids::DocumentId;

impl Store {
    /// The sync state saved for `document` with the peer whose storage id is `peer`.
    pub fn sync_state(&self, document: DocumentId, peer: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT state FROM sync_state WHERE document = ?1 AND peer_storage_id = ?2",
            )?
            .query_row(params![&document.as_bytes()[..], peer], |row| row.get(0))
            .optional()?)
    }

    /// Every sync state saved for `document`, by peer storage id.
    pub fn sync_states_of(&self, document: DocumentId) -> Result<Vec<(String, Vec<u8>)>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT peer_storage_id, state FROM sync_state WHERE document = ?1
             ORDER BY peer_storage_id",
        )?;
        let rows = statement.query_map([&document.as_bytes()[..]], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Saves (replacing) the sync state for `document` with `peer`.
    pub fn put_sync_state(&mut self, document: DocumentId, peer: &str, state: &[u8]) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO sync_state (document, peer_storage_id, state, updated_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (document, peer_storage_id)
                 DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
            )?
            .execute(params![&document.as_bytes()[..], peer, state, now_millis()])?;
        Ok(())
    }

    /// Forgets the sync state for `document` with `peer` (e.g. after the peer reset its storage).
    /// Returns whether there was one.
    pub fn delete_sync_state(&mut self, document: DocumentId, peer: &str) -> Result<bool> {
        let removed = self
            .conn
            .prepare_cached("DELETE FROM sync_state WHERE document = ?1 AND peer_storage_id = ?2")?
            .execute(params![&document.as_bytes()[..], peer])?;
        Ok(removed > 0)
    }

    /// Forgets every sync state with `peer`, e.g. when its storage id is known to be gone.
    pub fn delete_sync_states_of_peer(&mut self, peer: &str) -> Result<usize> {
        Ok(self
            .conn
            .prepare_cached("DELETE FROM sync_state WHERE peer_storage_id = ?1")?
            .execute([peer])?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::ids::DocumentId;
    use crate::model::DocKind;
    use crate::store::tests::temp_store;
    use crate::store::{ChunkKind, DocumentWrite, Projection, Store, StoreConfig};

    #[test]
    fn sync_state_is_kept_per_document_and_peer_across_reopens() {
        let (_dir, path, mut store) = temp_store(StoreConfig::default());
        let doc = DocumentId::random();
        store
            .append_chunk(&DocumentWrite {
                id: doc,
                kind: DocKind::Directory,
                chunk_kind: ChunkKind::Incremental,
                bytes: b"bytes",
                projection: Projection::Directory,
            })
            .unwrap();
        store.put_sync_state(doc, "relay-1", b"state one").unwrap();
        store.put_sync_state(doc, "relay-2", b"other").unwrap();
        store.put_sync_state(doc, "relay-1", b"state two").unwrap();
        assert_eq!(
            store.sync_states_of(doc).unwrap(),
            vec![
                ("relay-1".to_owned(), b"state two".to_vec()),
                ("relay-2".to_owned(), b"other".to_vec())
            ]
        );
        drop(store);

        let mut store = Store::open(&path, StoreConfig::default()).unwrap();
        assert_eq!(
            store.sync_state(doc, "relay-1").unwrap().as_deref(),
            Some(&b"state two"[..])
        );
        assert!(store.delete_sync_state(doc, "relay-1").unwrap());
        assert!(!store.delete_sync_state(doc, "relay-1").unwrap());
        assert_eq!(store.sync_state(doc, "relay-1").unwrap(), None);
        assert_eq!(store.delete_sync_states_of_peer("relay-2").unwrap(), 1);
        assert_eq!(store.sync_state(doc, "relay-2").unwrap(), None);

        // The engine may keep state for a document it is still asking for.
        let wanted = DocumentId::random();
        store.put_sync_state(wanted, "relay-1", b"asking").unwrap();
        assert!(store.sync_state(wanted, "relay-1").unwrap().is_some());
    }
}
