//! The outbox: every change made on this device, and whether the relay has it durably ("saved to
//! server"); and the documents the app follows.
//!
//! Local changes enter the outbox in the transaction that stores their chunk
//! ([`Store::append_local_chunk`]), so nothing stored can be missing from it. The sync layer marks
//! them saved when the relay's advertised heads cover them ([`Store::mark_saved`]).

use automerge::ChangeHash;
use rusqlite::{Connection, OptionalExtension, params};

use super::{Store, now_millis};
use crate::error::{Error, Result};
use crate::ids::DocumentId;

/// How much of this device's work the relay does not have yet.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Unsaved {
    /// Documents with at least one local change not saved on the relay.
    pub documents: usize,
    /// Local changes not saved on the relay.
    pub changes: usize,
}

/// Adds local changes to the outbox inside the caller's transaction. A change recorded twice
/// keeps its first row.
pub(super) fn record(
    tx: &Connection,
    document: DocumentId,
    changes: &[ChangeHash],
    now: i64,
) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut insert = tx.prepare_cached(
        "INSERT INTO outbox (change, document, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (change) DO NOTHING",
    )?;
    for change in changes {
        insert.execute(params![&change.0[..], &document.as_bytes()[..], now])?;
    }
    Ok(())
}

fn change_hash(bytes: &[u8]) -> Result<ChangeHash> {
    ChangeHash::try_from(bytes)
        .map_err(|_| Error::malformed("the outbox holds a change hash that is not 32 bytes"))
}

impl Store {
    /// The document's local changes that the relay has not saved yet, oldest first.
    pub fn unsaved_changes(&self, document: DocumentId) -> Result<Vec<ChangeHash>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT change FROM outbox WHERE document = ?1 AND saved_at IS NULL
             ORDER BY created_at, change",
        )?;
        let rows =
            statement.query_map([&document.as_bytes()[..]], |row| row.get::<_, Vec<u8>>(0))?;
        let mut changes = Vec::new();
        for row in rows {
            changes.push(change_hash(&row?)?);
        }
        Ok(changes)
    }

    /// The documents holding local changes that the relay has not saved yet, in id order.
    pub fn documents_with_unsaved_changes(&self) -> Result<Vec<DocumentId>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT DISTINCT document FROM outbox WHERE saved_at IS NULL ORDER BY document",
        )?;
        let rows = statement.query_map([], |row| row.get::<_, Vec<u8>>(0))?;
        let mut documents = Vec::new();
        for row in rows {
            documents.push(DocumentId::from_slice(&row?)?);
        }
        Ok(documents)
    }

    /// How many local changes (and in how many documents) the relay has not saved yet.
    pub fn unsaved(&self) -> Result<Unsaved> {
        let (documents, changes): (i64, i64) = self.conn.query_row(
            "SELECT count(DISTINCT document), count(*) FROM outbox WHERE saved_at IS NULL",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        Ok(Unsaved {
            documents: usize::try_from(documents).unwrap_or(0),
            changes: usize::try_from(changes).unwrap_or(0),
        })
    }

    /// Marks local changes of `document` as saved on the relay, in one transaction. Returns the
    /// changes that were not marked before (hashes that are not local changes are ignored).
    pub fn mark_saved(
        &mut self,
        document: DocumentId,
        changes: &[ChangeHash],
    ) -> Result<Vec<ChangeHash>> {
        let now = now_millis();
        let tx = self.conn.transaction()?;
        let mut marked = Vec::new();
        {
            let mut update = tx.prepare_cached(
                "UPDATE outbox SET saved_at = ?3
                 WHERE change = ?1 AND document = ?2 AND saved_at IS NULL",
            )?;
            for change in changes {
                if update.execute(params![&change.0[..], &document.as_bytes()[..], now])? > 0 {
                    marked.push(*change);
                }
            }
        }
        tx.commit()?;
        Ok(marked)
    }

    /// Whether a local change is saved on the relay; `None` when `change` was not made on this
    /// device (a peer's change, or unknown).
    pub fn is_saved_to_server(&self, change: &ChangeHash) -> Result<Option<bool>> {
        Ok(self
            .conn
            .prepare_cached("SELECT saved_at IS NOT NULL FROM outbox WHERE change = ?1")?
            .query_row([&change.0[..]], |row| row.get::<_, bool>(0))
            .optional()?)
    }

    /// Adds a document to the followed set. Returns whether it was new.
    pub fn follow(&mut self, document: DocumentId) -> Result<bool> {
        let added = self
            .conn
            .prepare_cached(
                "INSERT INTO followed (document, followed_at) VALUES (?1, ?2)
                 ON CONFLICT (document) DO NOTHING",
            )?
            .execute(params![&document.as_bytes()[..], now_millis()])?;
        Ok(added > 0)
    }

    /// Removes a document from the followed set. Returns whether it was followed.
    pub fn unfollow(&mut self, document: DocumentId) -> Result<bool> {
        let removed = self
            .conn
            .prepare_cached("DELETE FROM followed WHERE document = ?1")?
            .execute([&document.as_bytes()[..]])?;
        Ok(removed > 0)
    }

    /// The followed documents, in id order.
    pub fn followed(&self) -> Result<Vec<DocumentId>> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT document FROM followed ORDER BY document")?;
        let rows = statement.query_map([], |row| row.get::<_, Vec<u8>>(0))?;
        let mut documents = Vec::new();
        for row in rows {
            documents.push(DocumentId::from_slice(&row?)?);
        }
        Ok(documents)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use automerge::ChangeHash;

    use crate::ids::DocumentId;
    use crate::model::DocKind;
    use crate::store::tests::temp_store;
    use crate::store::{ChunkKind, DocumentWrite, Projection, StoreConfig, Unsaved};

    fn write(id: DocumentId) -> DocumentWrite<'static> {
        DocumentWrite {
            id,
            kind: DocKind::Notes,
            chunk_kind: ChunkKind::Incremental,
            bytes: b"change",
            projection: Projection::Notes,
        }
    }

    #[test]
    fn local_changes_are_unsaved_until_marked_and_survive_reopening() {
        let (_dir, path, mut store) = temp_store(StoreConfig::default());
        let (a, b) = (DocumentId::random(), DocumentId::random());
        let (one, two, three) = (
            ChangeHash([1; 32]),
            ChangeHash([2; 32]),
            ChangeHash([3; 32]),
        );
        store.append_local_chunk(&write(a), &[one, two]).unwrap();
        store.append_local_chunk(&write(b), &[three]).unwrap();
        store.append_chunk(&write(b)).unwrap();
        assert_eq!(
            store.unsaved().unwrap(),
            Unsaved {
                documents: 2,
                changes: 3
            }
        );
        assert_eq!(store.documents_with_unsaved_changes().unwrap().len(), 2);

        assert_eq!(store.mark_saved(a, &[one, three]).unwrap(), vec![one]);
        assert_eq!(store.mark_saved(a, &[one]).unwrap(), vec![]);
        assert_eq!(store.is_saved_to_server(&one).unwrap(), Some(true));
        assert_eq!(store.is_saved_to_server(&two).unwrap(), Some(false));
        assert_eq!(
            store.is_saved_to_server(&ChangeHash([9; 32])).unwrap(),
            None
        );
        drop(store);

        let store = crate::store::Store::open(&path, StoreConfig::default()).unwrap();
        assert_eq!(store.unsaved_changes(a).unwrap(), vec![two]);
        assert_eq!(store.unsaved_changes(b).unwrap(), vec![three]);
    }

    #[test]
    fn a_failed_write_records_nothing_in_the_outbox() {
        let (_dir, _path, mut store) = temp_store(StoreConfig::default());
        let id = DocumentId::random();
        let mut bad = write(id);
        bad.projection = Projection::Directory;
        assert!(
            store
                .append_local_chunk(&bad, &[ChangeHash([7; 32])])
                .is_err()
        );
        assert_eq!(store.unsaved().unwrap(), Unsaved::default());
    }

    #[test]
    fn following_is_a_set_kept_in_the_store() {
        let (_dir, _path, mut store) = temp_store(StoreConfig::default());
        let d = DocumentId::random();
        assert!(store.follow(d).unwrap());
        assert!(!store.follow(d).unwrap());
        assert_eq!(store.followed().unwrap(), vec![d]);
        assert!(store.unfollow(d).unwrap());
        assert!(store.followed().unwrap().is_empty());
    }
}
