//! Document chunks: appending an edit's bytes with its projection in one transaction, loading them
//! back with checksums verified, and compacting them into one snapshot without losing a change.
//!
//! A document is stored as the concatenation of its chunks, snapshots first, then incremental
//! chunks in the order they were appended; that is exactly what Automerge's `load` reads. Each
//! chunk carries its length and the first 16 bytes of its SHA-256, so damage or truncation is
//! reported as [`Error::Corrupt`] naming the document, before Automerge sees the bytes. Nothing is
//! ever deleted because it failed to load.

use automerge::ChangeHash;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use super::outbox;
use super::projection::{self, Projection};
use super::{Store, now_millis, parse_kind};
use crate::error::{Error, Result};
use crate::ids::DocumentId;
use crate::model::DocKind;

/// How many bytes of SHA-256 a chunk keeps: plenty to detect damage, which is all it is for.
const CHECKSUM_LEN: usize = 16;

/// The position of a chunk in the store. Ids only grow (the table is `AUTOINCREMENT`), so "every
/// chunk up to id N" names a fixed set even while new chunks are appended.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ChunkId(pub i64);

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ChunkKind {
    /// A whole compacted document, as `Automerge::save` writes it.
    Snapshot,
    /// Changes since an earlier chunk, as `Automerge::save_after` writes them.
    Incremental,
}

impl ChunkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Snapshot => "snapshot",
            Self::Incremental => "incremental",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Snapshot, Self::Incremental]
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// One stored chunk of a document, its checksum already verified.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Chunk {
    pub id: ChunkId,
    pub kind: ChunkKind,
    pub bytes: Vec<u8>,
    pub created_at: DateTime<Utc>,
}

/// One durable write of a document: its new bytes and what the query tables should now say.
#[derive(Clone, Copy, Debug)]
pub struct DocumentWrite<'a> {
    pub id: DocumentId,
    pub kind: DocKind,
    pub chunk_kind: ChunkKind,
    /// The chunk to append. Empty means "no new changes": only the projection is rewritten.
    pub bytes: &'a [u8],
    /// The document as read after the change; it replaces the document's projection rows.
    pub projection: Projection<'a>,
}

/// The concatenated chunks of a document, ready for `Document::load`, and the last chunk they
/// include (what [`Store::compact`] may fold).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StoredBytes {
    pub bytes: Vec<u8>,
    pub last_chunk: ChunkId,
}

impl Store {
    /// Appends a document's chunk and replaces its projection rows, in one transaction. Returns
    /// only after `COMMIT` (inside [`Store::in_one_transaction`]: as part of that transaction,
    /// which the caller commits); on any error nothing of the write is stored.
    ///
    /// Returns the new chunk's id, or `None` when `bytes` was empty (projection only). A new
    /// document needs bytes; a document stored with another kind, or a projection of another
    /// kind, is [`Error::Invalid`].
    pub fn append_chunk(&mut self, write: &DocumentWrite<'_>) -> Result<Option<ChunkId>> {
        self.append_local_chunk(write, &[])
    }

    /// [`Store::append_chunk`] for changes made on this device: `local_changes` (the hashes of
    /// the changes in the chunk) enter the [outbox](super::outbox) in the same transaction, so a
    /// stored local change is never missing from "not yet saved to the server".
    pub fn append_local_chunk(
        &mut self,
        write: &DocumentWrite<'_>,
        local_changes: &[ChangeHash],
    ) -> Result<Option<ChunkId>> {
        if write.projection.kind() != write.kind {
            return Err(Error::invalid(format!(
                "a {} projection cannot describe {} document {}",
                write.projection.kind().as_str(),
                write.kind.as_str(),
                write.id
            )));
        }
        let now = now_millis();
        // A savepoint: its own transaction when alone, one part of the caller's when inside
        // `Store::in_one_transaction` (a failed write then undoes only itself).
        let tx = self.conn.savepoint()?;
        upsert_document(&tx, write, now)?;
        let chunk = if write.bytes.is_empty() {
            None
        } else {
            Some(insert_chunk(
                &tx,
                write.id,
                write.chunk_kind,
                write.bytes,
                now,
            )?)
        };
        projection::replace(&tx, write.id, &write.projection)?;
        outbox::record(&tx, write.id, local_changes, now)?;
        tx.commit()?;
        Ok(chunk)
    }

    /// A document's chunks, snapshots first, then in append order, each checked against its
    /// length and checksum. Empty when the store does not hold the document.
    ///
    /// A damaged or truncated chunk is [`Error::Corrupt`] naming the document and the chunk; the
    /// chunk stays in the store, and every other document loads as before.
    pub fn load_chunks(&self, id: DocumentId) -> Result<Vec<Chunk>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT id, kind, bytes, length, checksum, created_at FROM chunks
             WHERE document = ?1
             ORDER BY kind <> 'snapshot', id",
        )?;
        let rows = statement.query_map([&id.as_bytes()[..]], |row| {
            Ok(RawChunk {
                id: row.get(0)?,
                kind: row.get(1)?,
                bytes: row.get(2)?,
                length: row.get(3)?,
                checksum: row.get(4)?,
                created_at: row.get(5)?,
            })
        })?;
        let mut chunks = Vec::new();
        for row in rows {
            chunks.push(row?.verify(id)?);
        }
        Ok(chunks)
    }

    /// A document's verified chunks concatenated, or `None` when the store holds no bytes for it.
    pub fn load_document_bytes(&self, id: DocumentId) -> Result<Option<StoredBytes>> {
        let chunks = self.load_chunks(id)?;
        let Some(last_chunk) = chunks.iter().map(|chunk| chunk.id).max() else {
            return Ok(None);
        };
        let mut bytes = Vec::with_capacity(chunks.iter().map(|c| c.bytes.len()).sum());
        for chunk in &chunks {
            bytes.extend_from_slice(&chunk.bytes);
        }
        Ok(Some(StoredBytes { bytes, last_chunk }))
    }

    /// The newest chunk of a document, if it has any.
    pub fn last_chunk_id(&self, id: DocumentId) -> Result<Option<ChunkId>> {
        Ok(self
            .conn
            .query_row(
                "SELECT max(id) FROM chunks WHERE document = ?1",
                [&id.as_bytes()[..]],
                |row| row.get::<_, Option<i64>>(0),
            )?
            .map(ChunkId))
    }

    /// Replaces the chunks up to and including `folded` with one snapshot, in one transaction.
    ///
    /// `snapshot` must hold every change of the chunks up to `folded` (the caller loaded them,
    /// then saved): chunks appended after the caller read them have larger ids and are kept, so a
    /// change written concurrently with a compaction is never lost. Returns the snapshot's id.
    pub fn compact(&mut self, id: DocumentId, snapshot: &[u8], folded: ChunkId) -> Result<ChunkId> {
        if snapshot.is_empty() {
            return Err(Error::invalid(format!(
                "an empty snapshot cannot replace the chunks of document {id}"
            )));
        }
        let now = now_millis();
        let tx = self.conn.transaction()?;
        let exists = tx
            .query_row(
                "SELECT 1 FROM documents WHERE id = ?1",
                [&id.as_bytes()[..]],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if !exists {
            return Err(Error::not_found(format!("document {id}")));
        }
        let snapshot_id = insert_chunk(&tx, id, ChunkKind::Snapshot, snapshot, now)?;
        let removed = tx.execute(
            "DELETE FROM chunks WHERE document = ?1 AND id <= ?2",
            params![&id.as_bytes()[..], folded.0],
        )?;
        tx.commit()?;
        tracing::debug!(document = %id, removed, "document compacted");
        Ok(snapshot_id)
    }
}

/// Creates the document's row, or touches it, refusing a change of kind.
fn upsert_document(tx: &Connection, write: &DocumentWrite<'_>, now: i64) -> Result<()> {
    let id = &write.id.as_bytes()[..];
    let stored: Option<String> = tx
        .query_row("SELECT kind FROM documents WHERE id = ?1", [id], |row| {
            row.get(0)
        })
        .optional()?;
    match stored {
        None if write.bytes.is_empty() => Err(Error::invalid(format!(
            "document {} is new, so its first write needs bytes",
            write.id
        ))),
        None => {
            tx.execute(
                "INSERT INTO documents (id, kind, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
                params![id, write.kind.as_str(), now],
            )?;
            Ok(())
        }
        Some(kind) => {
            let kind = parse_kind(write.id, &kind)?;
            if kind != write.kind {
                return Err(Error::invalid(format!(
                    "document {} is a {}, not a {}",
                    write.id,
                    kind.as_str(),
                    write.kind.as_str()
                )));
            }
            tx.execute(
                "UPDATE documents SET updated_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            Ok(())
        }
    }
}

fn insert_chunk(
    tx: &Connection,
    document: DocumentId,
    kind: ChunkKind,
    bytes: &[u8],
    now: i64,
) -> Result<ChunkId> {
    let length = i64::try_from(bytes.len())
        .map_err(|_| Error::invalid(format!("a chunk of {} bytes is too large", bytes.len())))?;
    tx.execute(
        "INSERT INTO chunks (document, kind, bytes, length, checksum, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            &document.as_bytes()[..],
            kind.as_str(),
            bytes,
            length,
            &checksum(bytes)[..],
            now
        ],
    )?;
    Ok(ChunkId(tx.last_insert_rowid()))
}

fn checksum(bytes: &[u8]) -> [u8; CHECKSUM_LEN] {
    let digest = Sha256::digest(bytes);
    let mut checksum = [0; CHECKSUM_LEN];
    checksum.copy_from_slice(&digest[..CHECKSUM_LEN]);
    checksum
}

/// A chunk row as read, before it is trusted.
struct RawChunk {
    id: i64,
    kind: String,
    bytes: Vec<u8>,
    length: i64,
    checksum: Vec<u8>,
    created_at: i64,
}

impl RawChunk {
    fn verify(self, document: DocumentId) -> Result<Chunk> {
        let corrupt = |reason: String| Error::Corrupt { document, reason };
        let kind = ChunkKind::parse(&self.kind).ok_or_else(|| {
            corrupt(format!(
                "chunk {} has unknown kind {:?}",
                self.id, self.kind
            ))
        })?;
        if i64::try_from(self.bytes.len()).ok() != Some(self.length) {
            return Err(corrupt(format!(
                "chunk {} is truncated: {} bytes stored, {} written",
                self.id,
                self.bytes.len(),
                self.length
            )));
        }
        if self.checksum[..] != checksum(&self.bytes)[..] {
            return Err(corrupt(format!(
                "chunk {} ({} bytes) does not match its checksum",
                self.id,
                self.bytes.len()
            )));
        }
        let created_at = DateTime::from_timestamp_millis(self.created_at).ok_or_else(|| {
            corrupt(format!(
                "chunk {} has an impossible time {}",
                self.id, self.created_at
            ))
        })?;
        Ok(Chunk {
            id: ChunkId(self.id),
            kind,
            bytes: self.bytes,
            created_at,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::tests::temp_store;
    use crate::store::{Store, StoreConfig};

    fn notes_write(id: DocumentId, bytes: &[u8]) -> DocumentWrite<'_> {
        DocumentWrite {
            id,
            kind: DocKind::Notes,
            chunk_kind: ChunkKind::Incremental,
            bytes,
            projection: Projection::Notes,
        }
    }

    fn all_bytes(chunks: &[Chunk]) -> Vec<Vec<u8>> {
        chunks.iter().map(|chunk| chunk.bytes.clone()).collect()
    }

    #[test]
    fn chunks_come_back_in_append_order_and_survive_reopen() {
        let (_dir, path, mut store) = temp_store(StoreConfig::default());
        let a = DocumentId::random();
        let b = DocumentId::random();
        store.append_chunk(&notes_write(a, b"one")).unwrap();
        store.append_chunk(&notes_write(b, b"other")).unwrap();
        store.append_chunk(&notes_write(a, b"two")).unwrap();
        drop(store);

        let store = Store::open(&path, StoreConfig::default()).unwrap();
        assert_eq!(all_bytes(&store.load_chunks(a).unwrap()), [b"one", b"two"]);
        assert_eq!(all_bytes(&store.load_chunks(b).unwrap()), [b"other"]);
        assert!(store.document_exists(a).unwrap());
        assert!(!store.document_exists(DocumentId::random()).unwrap());
        assert!(store.load_chunks(DocumentId::random()).unwrap().is_empty());
        let mut expected = vec![(a, DocKind::Notes), (b, DocKind::Notes)];
        expected.sort_by_key(|(id, _)| *id);
        assert_eq!(store.list_documents().unwrap(), expected, "in id order");
        assert_eq!(store.document_kind(a).unwrap(), Some(DocKind::Notes));
        assert_eq!(
            store.load_document_bytes(a).unwrap().unwrap().bytes,
            b"onetwo"
        );
    }

    #[test]
    fn writes_in_one_transaction_commit_together_and_a_refused_one_alone_is_left_out() {
        let (_dir, path, mut store) = temp_store(StoreConfig::default());
        let kept = DocumentId::random();
        store.append_chunk(&notes_write(kept, b"first")).unwrap();
        let (a, b) = (DocumentId::random(), DocumentId::random());
        let results = store
            .in_one_transaction(|store| {
                let mut results = vec![
                    store.append_chunk(&notes_write(a, b"a")).map(|_| ()),
                    // Refused (another kind): only this write is undone.
                    store
                        .append_chunk(&DocumentWrite {
                            kind: DocKind::Directory,
                            projection: Projection::Directory,
                            ..notes_write(kept, b"second")
                        })
                        .map(|_| ()),
                    store.append_chunk(&notes_write(b, b"b")).map(|_| ()),
                ];
                // Another connection sees none of it before the commit.
                let other = Connection::open(&path).unwrap();
                let visible: i64 = other
                    .query_row("SELECT count(*) FROM documents", [], |row| row.get(0))
                    .unwrap();
                results.push(if visible == 1 {
                    Ok(())
                } else {
                    Err(Error::invalid(format!("{visible} documents visible")))
                });
                results
            })
            .unwrap();
        assert!(results[0].is_ok() && results[2].is_ok() && results[3].is_ok());
        assert!(matches!(results[1], Err(Error::Invalid(_))));
        drop(store);
        let store = Store::open(&path, StoreConfig::default()).unwrap();
        assert_eq!(all_bytes(&store.load_chunks(a).unwrap()), [b"a"]);
        assert_eq!(all_bytes(&store.load_chunks(b).unwrap()), [b"b"]);
        assert_eq!(all_bytes(&store.load_chunks(kept).unwrap()), [b"first"]);
    }

    #[test]
    fn a_document_keeps_its_kind_and_a_projection_must_match_it() {
        let mut store = Store::open_in_memory().unwrap();
        let id = DocumentId::random();
        store.append_chunk(&notes_write(id, b"x")).unwrap();
        let as_directory = DocumentWrite {
            kind: DocKind::Directory,
            projection: Projection::Directory,
            ..notes_write(id, b"y")
        };
        assert!(matches!(
            store.append_chunk(&as_directory),
            Err(Error::Invalid(_))
        ));
        let mismatched = DocumentWrite {
            projection: Projection::Directory,
            ..notes_write(id, b"y")
        };
        assert!(matches!(
            store.append_chunk(&mismatched),
            Err(Error::Invalid(_))
        ));
        assert_eq!(all_bytes(&store.load_chunks(id).unwrap()), [b"x"]);
        // A new document cannot start without bytes.
        assert!(matches!(
            store.append_chunk(&notes_write(DocumentId::random(), b"")),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn compaction_keeps_chunks_appended_after_the_snapshot_was_taken() {
        let (_dir, path, mut store) = temp_store(StoreConfig::default());
        let id = DocumentId::random();
        store.append_chunk(&notes_write(id, b"a")).unwrap();
        store.append_chunk(&notes_write(id, b"b")).unwrap();
        let read = store.load_document_bytes(id).unwrap().unwrap();
        assert_eq!(read.bytes, b"ab");

        // Another writer appends between the read and the compaction.
        store.append_chunk(&notes_write(id, b"c")).unwrap();
        let snapshot = store.compact(id, b"AB", read.last_chunk).unwrap();
        assert!(snapshot > read.last_chunk);
        drop(store);

        let store = Store::open(&path, StoreConfig::default()).unwrap();
        let chunks = store.load_chunks(id).unwrap();
        assert_eq!(all_bytes(&chunks), [&b"AB"[..], b"c"], "snapshot first");
        assert_eq!(chunks[0].kind, ChunkKind::Snapshot);
        assert_eq!(chunks[1].kind, ChunkKind::Incremental);
    }

    #[test]
    fn compaction_refuses_an_unknown_document_or_an_empty_snapshot() {
        let mut store = Store::open_in_memory().unwrap();
        assert!(matches!(
            store.compact(DocumentId::random(), b"s", ChunkId(1)),
            Err(Error::NotFound(_))
        ));
        let id = DocumentId::random();
        let chunk = store.append_chunk(&notes_write(id, b"a")).unwrap().unwrap();
        assert!(matches!(
            store.compact(id, b"", chunk),
            Err(Error::Invalid(_))
        ));
        assert_eq!(all_bytes(&store.load_chunks(id).unwrap()), [b"a"]);
    }

    #[test]
    fn a_damaged_chunk_names_its_document_and_leaves_the_others_readable() {
        let (_dir, path, mut store) = temp_store(StoreConfig::default());
        let damaged = DocumentId::random();
        let healthy = DocumentId::random();
        store.append_chunk(&notes_write(damaged, b"first")).unwrap();
        store
            .append_chunk(&notes_write(damaged, b"second"))
            .unwrap();
        store.append_chunk(&notes_write(healthy, b"fine")).unwrap();
        drop(store);

        // Flip bytes in place, as a bad sector or a buggy tool would.
        let raw = Connection::open(&path).unwrap();
        raw.execute(
            "UPDATE chunks SET bytes = X'7365636F6E64FF' WHERE bytes = CAST('second' AS BLOB)",
            [],
        )
        .unwrap();
        raw.execute(
            "UPDATE chunks SET length = 7 WHERE document = ?1 AND length = 6",
            [&damaged.as_bytes()[..]],
        )
        .unwrap();
        drop(raw);

        let store = Store::open(&path, StoreConfig::default()).unwrap();
        match store.load_chunks(damaged) {
            Err(Error::Corrupt { document, reason }) => {
                assert_eq!(document, damaged);
                assert!(reason.contains("checksum"), "{reason}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert_eq!(all_bytes(&store.load_chunks(healthy).unwrap()), [b"fine"]);
        // Nothing was deleted: both chunks of the damaged document are still there.
        let count: i64 = store
            .conn
            .query_row(
                "SELECT count(*) FROM chunks WHERE document = ?1",
                [&damaged.as_bytes()[..]],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(count, 2);
    }

    #[test]
    fn a_truncated_chunk_is_reported_as_corrupt() {
        let (_dir, path, mut store) = temp_store(StoreConfig::default());
        let truncated = DocumentId::random();
        let healthy = DocumentId::random();
        store
            .append_chunk(&notes_write(truncated, b"a long enough chunk"))
            .unwrap();
        store.append_chunk(&notes_write(healthy, b"fine")).unwrap();
        drop(store);

        let raw = Connection::open(&path).unwrap();
        raw.execute(
            "UPDATE chunks SET bytes = substr(bytes, 1, 5) WHERE document = ?1",
            [&truncated.as_bytes()[..]],
        )
        .unwrap();
        drop(raw);

        let store = Store::open(&path, StoreConfig::default()).unwrap();
        match store.load_document_bytes(truncated) {
            Err(Error::Corrupt { document, reason }) => {
                assert_eq!(document, truncated);
                assert!(reason.contains("truncated"), "{reason}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(store.load_document_bytes(healthy).unwrap().is_some());
    }
}
