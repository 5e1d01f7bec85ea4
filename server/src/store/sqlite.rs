//! [`RelayStore`] over one SQLite file, in WAL mode with `synchronous=FULL`: the relay's embedded
//! default, needing no setup.

use std::path::Path;
use std::sync::Mutex;

use automerge::ChangeHash;
use rusqlite::{Connection, OptionalExtension, params};
use tandem_core::DocumentId;

use super::sql::{Sql, SqliteSql};
use super::{
    NewChanges, RelayStore, StoredChunk, SyncStateRecord, decode_heads, encode_heads, now_millis,
};
use crate::access::{DocumentRecord, Kind};
use crate::accounts::{self, Accounts, Grant};
use crate::error::{Error, Result};

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/001_documents.sql"),
    include_str!("../../migrations/002_accounts.sql"),
    include_str!("../../migrations/003_heads.sql"),
    include_str!("../../migrations/004_pairing_documents.sql"),
];

/// The relay's SQLite database. One connection behind a mutex: SQLite has one writer anyway, and
/// batching (group commit) is what makes writes fast, not more connections.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        Self::from_connection(Connection::open(path)?)
    }

    pub fn open_in_memory() -> Result<Self> {
        Self::from_connection(Connection::open_in_memory()?)
    }

    fn from_connection(mut conn: Connection) -> Result<Self> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    /// The connection, for tests that look at the file's tables directly.
    pub fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn()
    }

    /// Runs `f` in one transaction: committed if it succeeds, rolled back if it fails. How the
    /// account functions of [`crate::accounts`] reach this database.
    pub fn transaction<T>(&self, f: impl FnOnce(&mut dyn Sql) -> Result<T>) -> Result<T> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let value = f(&mut SqliteSql(&tx))?;
        tx.commit()?;
        Ok(value)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-done transaction behind: rusqlite
        // rolls back an unfinished transaction when it is dropped, so the connection is usable.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let supported = MIGRATIONS.len() as i64;
    let found: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > supported {
        return Err(Error::SchemaTooNew { found, supported });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

impl RelayStore for SqliteStore {
    fn load_document(&self, document: DocumentId) -> Result<Option<Vec<StoredChunk>>> {
        let conn = self.conn();
        let known = conn
            .query_row(
                "SELECT 1 FROM documents WHERE id = ?1",
                [&document.as_bytes()[..]],
                |_| Ok(()),
            )
            .optional()?;
        if known.is_none() {
            return Ok(None);
        }
        let mut statement = conn.prepare_cached(
            "SELECT seq, is_snapshot, bytes FROM chunks WHERE document = ?1 ORDER BY seq",
        )?;
        let chunks = statement
            .query_map([&document.as_bytes()[..]], |row| {
                Ok(StoredChunk {
                    seq: row.get(0)?,
                    is_snapshot: row.get(1)?,
                    bytes: row.get(2)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Some(chunks))
    }

    fn append_changes(&self, batch: &[NewChanges]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let now = now_millis();
            let mut add_document = tx.prepare_cached(
                "INSERT INTO documents (id, created_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            )?;
            let mut set_record = tx.prepare_cached(
                "UPDATE documents SET kind = ?2, program = ?3, coach = ?4, mentee = ?5,
                 creator = ?6, pairing = ?7 WHERE id = ?1",
            )?;
            // A pairing's directory is the first one recorded for it.
            let mut set_directory = tx.prepare_cached(
                "UPDATE pairings SET directory = ?2 WHERE id = ?1 AND directory IS NULL",
            )?;
            let mut add_chunk = tx.prepare_cached(
                "INSERT INTO chunks (document, is_snapshot, bytes, created_at)
                 VALUES (?1, 0, ?2, ?3)",
            )?;
            let mut add_audit = tx.prepare_cached(
                "INSERT INTO audit (document, user_id, device, changes, hashes, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut set_heads =
                tx.prepare_cached("UPDATE documents SET heads = ?2 WHERE id = ?1")?;
            let mut bind = tx.prepare_cached(
                "INSERT INTO device_actors (actor, device, bound_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
            )?;
            for changes in batch {
                let id = &changes.document.as_bytes()[..];
                add_document.execute(params![id, now])?;
                if let Some(record) = &changes.record {
                    set_record.execute(params![
                        id,
                        record.kind.as_str(),
                        record.program,
                        record.coach,
                        record.mentee,
                        record.creator,
                        record.pairing,
                    ])?;
                    if let (Kind::Directory, Some(pairing)) = (record.kind, record.pairing) {
                        set_directory.execute(params![pairing, id])?;
                    }
                }
                add_chunk.execute(params![id, changes.bytes, now])?;
                if let Some(heads) = &changes.heads {
                    set_heads.execute(params![id, encode_heads(heads)])?;
                }
                for written in &changes.audit {
                    let hashes: Vec<String> =
                        written.hashes.iter().map(|h| h.to_string()).collect();
                    add_audit.execute(params![
                        id,
                        written.user,
                        written.device,
                        written.hashes.len() as i64,
                        hashes.join(" "),
                        now
                    ])?;
                }
                for (actor, device) in &changes.bindings {
                    bind.execute(params![actor, device, now])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn peer_index(&self, peer_storage_id: &str) -> Result<Vec<(DocumentId, Vec<ChangeHash>)>> {
        let rows: Vec<(Vec<u8>, Option<Vec<u8>>)> = {
            let conn = self.conn();
            let mut query = conn.prepare_cached(
                "SELECT d.id, d.heads FROM sync_states s JOIN documents d ON d.id = s.document
                 WHERE s.peer_storage_id = ?1",
            )?;
            query
                .query_map([peer_storage_id], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?
        };
        let mut index = Vec::with_capacity(rows.len());
        for (id, heads) in rows {
            let Ok(document) = DocumentId::from_slice(&id) else {
                continue;
            };
            let heads = match heads.as_deref().and_then(decode_heads) {
                Some(heads) => heads,
                // Stored before heads were recorded: read them once from the document.
                None => {
                    let Some(chunks) = self.load_document(document)? else {
                        continue;
                    };
                    let bytes: Vec<u8> = chunks.into_iter().flat_map(|c| c.bytes).collect();
                    let Ok(doc) = automerge::Automerge::load(&bytes) else {
                        continue;
                    };
                    let heads = doc.get_heads();
                    self.conn().execute(
                        "UPDATE documents SET heads = ?2 WHERE id = ?1 AND heads IS NULL",
                        params![&id, encode_heads(&heads)],
                    )?;
                    heads
                }
            };
            index.push((document, heads));
        }
        Ok(index)
    }

    fn compact(&self, document: DocumentId, snapshot: &[u8], folded: &[i64]) -> Result<bool> {
        let Some(&at) = folded.iter().max() else {
            return Ok(false);
        };
        let mut conn = self.conn();
        // Immediate: the check below and the rewrite hold the write lock together, so no chunk
        // can be appended in between (by another process sharing the file).
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let id = &document.as_bytes()[..];
        let stored: std::collections::BTreeSet<i64> = tx
            .prepare("SELECT seq FROM chunks WHERE document = ?1 AND seq <= ?2")?
            .query_map(params![id, at], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        if stored != folded.iter().copied().collect() {
            return Ok(false);
        }
        {
            let mut delete = tx.prepare("DELETE FROM chunks WHERE document = ?1 AND seq = ?2")?;
            for seq in folded {
                delete.execute(params![id, seq])?;
            }
        }
        // The snapshot takes the place of the chunks it folds, so it must sort before any chunk
        // appended after it was taken: it reuses the highest folded sequence number.
        tx.execute(
            "INSERT INTO chunks (seq, document, is_snapshot, bytes, created_at)
             VALUES (?1, ?2, 1, ?3, ?4)",
            params![at, id, snapshot, now_millis()],
        )?;
        tx.commit()?;
        Ok(true)
    }

    fn load_chunk(&self, document: DocumentId, seq: i64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT bytes FROM chunks WHERE document = ?1 AND seq = ?2",
                params![&document.as_bytes()[..], seq],
                |row| row.get(0),
            )
            .optional()?)
    }

    fn document_record(&self, document: DocumentId) -> Result<Option<DocumentRecord>> {
        let conn = self.conn();
        let record = conn
            .query_row(
                "SELECT kind, program, coach, mentee, creator, pairing FROM documents
                 WHERE id = ?1",
                [&document.as_bytes()[..]],
                |row| {
                    let kind: String = row.get(0)?;
                    Ok(DocumentRecord {
                        kind: Kind::parse(&kind),
                        program: row.get(1)?,
                        coach: row.get(2)?,
                        mentee: row.get(3)?,
                        creator: row.get(4)?,
                        pairing: row.get(5)?,
                    })
                },
            )
            .optional()?;
        Ok(record)
    }

    fn load_sync_states(&self, document: DocumentId) -> Result<Vec<(String, Vec<u8>)>> {
        let conn = self.conn();
        let mut statement = conn
            .prepare_cached("SELECT peer_storage_id, state FROM sync_states WHERE document = ?1")?;
        let states = statement
            .query_map([&document.as_bytes()[..]], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(states)
    }

    fn save_sync_states(&self, batch: &[SyncStateRecord]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO sync_states (document, peer_storage_id, state) VALUES (?1, ?2, ?3)
                 ON CONFLICT (document, peer_storage_id) DO UPDATE SET state = excluded.state",
            )?;
            for record in batch {
                upsert.execute(params![
                    &record.document.as_bytes()[..],
                    record.peer_storage_id,
                    record.state
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn storage_id(&self) -> Result<String> {
        let conn = self.conn();
        let fresh = DocumentId::random().to_string();
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('storage_id', ?1) ON CONFLICT DO NOTHING",
            [&fresh],
        )?;
        let id = conn.query_row(
            "SELECT value FROM meta WHERE key = 'storage_id'",
            [],
            |row| row.get(0),
        )?;
        Ok(id)
    }

    fn document_count(&self) -> Result<u64> {
        let count: i64 = self
            .conn()
            .query_row("SELECT count(*) FROM documents", [], |row| row.get(0))?;
        Ok(count as u64)
    }

    fn authenticate(&self, token: &str, now: i64) -> Result<Option<Grant>> {
        accounts::authenticate(&mut SqliteSql(&self.conn()), token, now)
    }

    fn revision(&self) -> Result<i64> {
        accounts::revision(&mut SqliteSql(&self.conn()))
    }

    fn load_accounts(&self) -> Result<Accounts> {
        self.transaction(accounts::load)
    }

    fn document_records(&self) -> Result<Vec<(DocumentId, DocumentRecord)>> {
        let conn = self.conn();
        let mut statement = conn
            .prepare("SELECT id, kind, program, coach, mentee, creator, pairing FROM documents")?;
        let rows = statement.query_map([], |row| {
            let id: Vec<u8> = row.get(0)?;
            let kind: String = row.get(1)?;
            Ok((
                id,
                DocumentRecord {
                    kind: Kind::parse(&kind),
                    program: row.get(2)?,
                    coach: row.get(3)?,
                    mentee: row.get(4)?,
                    creator: row.get(5)?,
                    pairing: row.get(6)?,
                },
            ))
        })?;
        let mut records = Vec::new();
        for row in rows {
            let (id, record) = row?;
            if let Ok(id) = DocumentId::from_slice(&id) {
                records.push((id, record));
            }
        }
        Ok(records)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn changes(document: DocumentId, bytes: &[u8]) -> NewChanges {
        NewChanges::new(document, bytes.to_vec())
    }

    #[test]
    fn unknown_documents_are_none_and_appended_ones_load_in_order() {
        let store = SqliteStore::open_in_memory().unwrap();
        let (a, b) = (DocumentId::random(), DocumentId::random());
        assert!(store.load_document(a).unwrap().is_none());
        store
            .append_changes(&[changes(a, b"one"), changes(b, b"other"), changes(a, b"two")])
            .unwrap();
        let loaded: Vec<_> = store
            .load_document(a)
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|chunk| chunk.bytes)
            .collect();
        assert_eq!(loaded, vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(store.document_count().unwrap(), 2);
    }

    #[test]
    fn compaction_keeps_chunks_appended_after_the_snapshot_was_taken() {
        let store = SqliteStore::open_in_memory().unwrap();
        let doc = DocumentId::random();
        store
            .append_changes(&[changes(doc, b"1"), changes(doc, b"2")])
            .unwrap();
        let folded: Vec<i64> = store
            .load_document(doc)
            .unwrap()
            .unwrap()
            .iter()
            .map(|chunk| chunk.seq)
            .collect();
        store.append_changes(&[changes(doc, b"3")]).unwrap();
        assert!(store.compact(doc, b"snapshot(1,2)", &folded).unwrap());
        let chunks = store.load_document(doc).unwrap().unwrap();
        let bytes: Vec<_> = chunks.iter().map(|chunk| chunk.bytes.clone()).collect();
        assert_eq!(bytes, vec![b"snapshot(1,2)".to_vec(), b"3".to_vec()]);
        assert!(chunks[0].is_snapshot);
    }

    #[test]
    fn sync_states_are_upserted_per_document_and_peer() {
        let store = SqliteStore::open_in_memory().unwrap();
        let doc = DocumentId::random();
        store.append_changes(&[changes(doc, b"x")]).unwrap();
        let record = |state: &[u8]| SyncStateRecord {
            document: doc,
            peer_storage_id: "peer-storage".into(),
            state: state.to_vec(),
        };
        store.save_sync_states(&[record(b"first")]).unwrap();
        store.save_sync_states(&[record(b"second")]).unwrap();
        assert_eq!(
            store.load_sync_states(doc).unwrap(),
            vec![("peer-storage".to_owned(), b"second".to_vec())]
        );
        assert!(
            store
                .load_sync_states(DocumentId::random())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn the_storage_id_is_stable_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.sqlite");
        let first = SqliteStore::open(&path).unwrap().storage_id().unwrap();
        assert_eq!(
            SqliteStore::open(&path).unwrap().storage_id().unwrap(),
            first
        );
    }

    /// Every table, index and column definition, as SQLite reports them.
    fn schema(conn: &Connection) -> Vec<(String, String)> {
        let mut statement = conn
            .prepare("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
            .unwrap();
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn a_database_upgraded_from_every_earlier_version_equals_a_fresh_one() {
        let dir = tempfile::tempdir().unwrap();
        let fresh_path = dir.path().join("fresh.sqlite");
        drop(SqliteStore::open(&fresh_path).unwrap());
        let expected = schema(&Connection::open(&fresh_path).unwrap());
        assert!(
            expected
                .iter()
                .any(|(_, sql)| sql.contains("directory BLOB"))
        );
        for old in 0..MIGRATIONS.len() {
            let path = dir.path().join(format!("from-{old}.sqlite"));
            let mut conn = Connection::open(&path).unwrap();
            for (index, sql) in MIGRATIONS.iter().enumerate().take(old) {
                let tx = conn.transaction().unwrap();
                tx.execute_batch(sql).unwrap();
                tx.pragma_update(None, "user_version", index as i64 + 1)
                    .unwrap();
                tx.commit().unwrap();
            }
            drop(conn);
            let store = SqliteStore::open(&path).unwrap();
            assert!(store.document_records().unwrap().is_empty(), "from {old}");
            drop(store);
            let upgraded = Connection::open(&path).unwrap();
            let version: i64 = upgraded
                .pragma_query_value(None, "user_version", |row| row.get(0))
                .unwrap();
            assert_eq!(version, MIGRATIONS.len() as i64, "from {old}");
            assert_eq!(schema(&upgraded), expected, "upgraded from {old}");
        }
    }

    #[test]
    fn a_database_from_a_newer_release_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.sqlite");
        drop(SqliteStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let error = SqliteStore::open(&path).unwrap_err();
        assert!(
            matches!(error, Error::SchemaTooNew { found: 99, .. }),
            "{error}"
        );
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, 99);
    }
}
