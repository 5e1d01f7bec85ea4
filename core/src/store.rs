//! The device's durable SQLite store: document chunks, sync state, metadata and the query projection.
//!
//! One [`Store`] owns one rusqlite [`Connection`], the device's only writer. Writes take `&mut
//! self`, so the compiler enforces that; a caller that shares the store across threads wraps it in
//! a mutex. Every write is one SQLite transaction and returns only after `COMMIT`: when
//! [`Store::append_chunk`] returns `Ok`, the chunk and its projection rows are on disk, to the
//! degree promised by the configured [`Durability`].
//!
//! # Typical use
//!
//! ```
//! use tandem_core::store::{ChunkKind, DocumentWrite, Projection, Store};
//! use tandem_core::{DocumentId, model::DocKind};
//!
//! let mut store = Store::open_in_memory()?;
//! let id = DocumentId::random();
//! store.append_chunk(&DocumentWrite {
//!     id,
//!     kind: DocKind::Notes,
//!     chunk_kind: ChunkKind::Incremental,
//!     bytes: b"automerge change bytes",
//!     projection: Projection::Notes,
//! })?;
//! let chunks = store.load_chunks(id)?;
//! assert_eq!(chunks[0].bytes, b"automerge change bytes");
//! # Ok::<(), tandem_core::Error>(())
//! ```
//!
//! The schema lives in numbered files under `core/migrations/` (see [`schema`]).

pub mod chunks;
pub mod encryption;
pub mod outbox;
pub mod projection;
pub mod schema;
pub mod sync_state;

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};

use crate::error::{Error, Result};
use crate::ids::{DeviceId, DocumentId, UserId};
use crate::model::DocKind;

pub use chunks::{Chunk, ChunkId, ChunkKind, DocumentWrite};
pub use encryption::EncryptionKey;
pub use outbox::Unsaved;
pub use projection::{
    ActionItemRow, CheckInRow, GoalRow, MilestoneRow, PlanRow, Projection, SessionRow, StalePlan,
};

/// How hard a commit works to survive a power loss: SQLite's `synchronous` setting, in WAL mode.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Durability {
    /// `PRAGMA synchronous=FULL`: the write-ahead log is flushed to stable storage (fsync) at
    /// every commit. A write that returned `Ok` survives an app crash, an OS crash and a power
    /// loss. Costs one fsync per write.
    #[default]
    Full,
    /// `PRAGMA synchronous=NORMAL`: the log is flushed only at checkpoints. A write that returned
    /// `Ok` survives an app crash (it is in the OS's file cache); an OS crash or power loss may
    /// lose the transactions committed since the last checkpoint, but the database stays
    /// consistent: it never holds half a transaction, and a chunk is never separated from its
    /// projection rows.
    Normal,
}

impl Durability {
    fn pragma_value(self) -> &'static str {
        match self {
            Self::Full => "FULL",
            Self::Normal => "NORMAL",
        }
    }
}

/// How to open a [`Store`].
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub durability: Durability,
    /// How long a write waits for another connection's lock before failing with
    /// [`Error::Storage`] (`SQLITE_BUSY`).
    pub busy_timeout: Duration,
    /// Encrypts the whole file at rest (needs the `encryption` feature). The same key must be
    /// given on every open; a wrong one fails with [`Error::WrongKey`] and changes nothing.
    pub key: Option<EncryptionKey>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            busy_timeout: Duration::from_secs(5),
            key: None,
        }
    }
}

/// The device's database. See the [module documentation](self).
#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the database file at `path` and brings its schema up to date.
    ///
    /// Fails with [`Error::SchemaTooNew`] when a newer release wrote the file, and with
    /// [`Error::Storage`] when SQLite cannot open or write it.
    pub fn open(path: impl AsRef<Path>, config: StoreConfig) -> Result<Self> {
        Self::from_connection(Connection::open(path)?, &config)
    }

    /// A store that lives in memory only, for tests and previews. WAL does not apply there.
    pub fn open_in_memory() -> Result<Self> {
        Self::from_connection(Connection::open_in_memory()?, &StoreConfig::default())
    }

    fn from_connection(mut conn: Connection, config: &StoreConfig) -> Result<Self> {
        configure(&conn, config)?;
        schema::migrate(&mut conn)?;
        Ok(Self { conn })
    }

    /// The raw value stored under `key` in `meta`.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
                row.get(0)
            })
            .optional()?)
    }

    /// Stores `value` under `key` in `meta`, replacing any earlier value.
    pub fn put_meta(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            rusqlite::params![key, value],
        )?;
        Ok(())
    }

    /// A `meta` value that is UTF-8 text.
    pub fn meta_text(&self, key: &str) -> Result<Option<String>> {
        self.meta(key)?
            .map(|bytes| {
                String::from_utf8(bytes)
                    .map_err(|_| Error::malformed(format!("meta value {key:?} is not UTF-8 text")))
            })
            .transpose()
    }

    pub fn put_meta_text(&mut self, key: &str, value: &str) -> Result<()> {
        self.put_meta(key, value.as_bytes())
    }

    /// This device's id, if one was stored.
    pub fn device_id(&self) -> Result<Option<DeviceId>> {
        self.meta(meta_keys::DEVICE_ID)?
            .map(|bytes| DeviceId::from_slice(&bytes))
            .transpose()
    }

    /// This device's id, made with [`DeviceId::random`] and stored on first call. Atomic: two
    /// processes opening a new file at once agree on one id.
    pub fn device_id_or_create(&mut self) -> Result<DeviceId> {
        // Read first: every open after the first should not pay for a write transaction.
        if let Some(id) = self.device_id()? {
            return Ok(id);
        }
        let fresh = DeviceId::random();
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
            rusqlite::params![meta_keys::DEVICE_ID, &fresh.as_bytes()[..]],
        )?;
        let stored: Vec<u8> = tx.query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [meta_keys::DEVICE_ID],
            |row| row.get(0),
        )?;
        tx.commit()?;
        DeviceId::from_slice(&stored)
    }

    /// The user this device belongs to, if one was stored.
    pub fn user(&self) -> Result<Option<UserId>> {
        Ok(self.meta_text(meta_keys::USER)?.map(UserId::from))
    }

    pub fn set_user(&mut self, user: &UserId) -> Result<()> {
        self.put_meta_text(meta_keys::USER, user.as_str())
    }

    /// The name the person gave this device ("Ana's phone"), if one was stored.
    pub fn device_name(&self) -> Result<Option<String>> {
        self.meta_text(meta_keys::DEVICE_NAME)
    }

    pub fn set_device_name(&mut self, name: &str) -> Result<()> {
        self.put_meta_text(meta_keys::DEVICE_NAME, name)
    }

    /// Whether the store holds a document with this id.
    /// Runs `writes` as one transaction: the chunks, projection rows and outbox entries it
    /// writes through this store commit together, with one flush of the log (one fsync under
    /// [`Durability::Full`]) instead of one per write. Each write inside is a savepoint, so one
    /// that fails undoes only itself. Returns `writes`' result only after `COMMIT`; if the
    /// commit fails, none of it is stored and the error is returned instead.
    pub fn in_one_transaction<T>(&mut self, writes: impl FnOnce(&mut Self) -> T) -> Result<T> {
        self.begin()?;
        let out = writes(self);
        self.commit()?;
        Ok(out)
    }

    /// Opens the transaction of [`Store::in_one_transaction`], for a caller that cannot pass a
    /// closure (the repo writes through itself).
    pub(crate) fn begin(&mut self) -> Result<()> {
        if !self.conn.is_autocommit() {
            // Left open by a batch that never finished (a panic): none of it was reported
            // durable, so none of it is kept.
            self.conn.execute_batch("ROLLBACK")?;
        }
        self.conn.execute_batch("BEGIN")?;
        Ok(())
    }

    /// Commits what [`Store::begin`] opened; on failure nothing of it is stored.
    pub(crate) fn commit(&mut self) -> Result<()> {
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            if !self.conn.is_autocommit() {
                let _ = self.conn.execute_batch("ROLLBACK");
            }
            return Err(e.into());
        }
        Ok(())
    }

    pub fn document_exists(&self, id: DocumentId) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM documents WHERE id = ?1",
                [&id.as_bytes()[..]],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// The kind of a stored document, or `None` when the store does not hold it.
    pub fn document_kind(&self, id: DocumentId) -> Result<Option<DocKind>> {
        self.conn
            .query_row(
                "SELECT kind FROM documents WHERE id = ?1",
                [&id.as_bytes()[..]],
                |row| row.get::<_, String>(0),
            )
            .optional()?
            .map(|kind| parse_kind(id, &kind))
            .transpose()
    }

    /// Every stored document with its kind, in id order.
    pub fn list_documents(&self) -> Result<Vec<(DocumentId, DocKind)>> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT id, kind FROM documents ORDER BY id")?;
        let rows = statement.query_map([], |row| {
            Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, String>(1)?))
        })?;
        let mut documents = Vec::new();
        for row in rows {
            let (id, kind) = row?;
            let id = DocumentId::from_slice(&id)?;
            documents.push((id, parse_kind(id, &kind)?));
        }
        Ok(documents)
    }

    /// The stored documents of one kind, in id order.
    pub fn list_documents_of_kind(&self, kind: DocKind) -> Result<Vec<DocumentId>> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT id FROM documents WHERE kind = ?1 ORDER BY id")?;
        let rows = statement.query_map([kind.as_str()], |row| row.get::<_, Vec<u8>>(0))?;
        let mut documents = Vec::new();
        for row in rows {
            documents.push(DocumentId::from_slice(&row?)?);
        }
        Ok(documents)
    }

    /// Runs `PRAGMA integrity_check` and returns its report: `["ok"]` for a sound file.
    pub fn integrity_check(&self) -> Result<Vec<String>> {
        let mut statement = self.conn.prepare("PRAGMA integrity_check")?;
        let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Copies committed WAL pages into the main file and truncates the log, e.g. when the app
    /// goes to the background. Not needed for durability; it keeps the log small.
    pub fn checkpoint(&self) -> Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

/// The keys Tandem uses in `meta`.
pub mod meta_keys {
    pub const DEVICE_ID: &str = "device_id";
    pub const USER: &str = "user";
    pub const DEVICE_NAME: &str = "device_name";
    /// The storage id this device announces to sync peers, so they keep their sync state with it
    /// across reconnects.
    pub const SYNC_STORAGE_ID: &str = "sync_storage_id";
    /// When the device was last completely in sync with the relay (RFC 3339).
    pub const LAST_SYNCED_AT: &str = "last_synced_at";
}

/// The connection defaults, set in one place for every connection the store opens.
///
/// WAL lets readers (e.g. a widget process) read while the app writes and makes a commit one
/// append to the log; `synchronous` then decides when that log reaches stable storage (see
/// [`Durability`]). Foreign keys keep chunks, sync state and projection rows attached to a
/// document that exists.
fn configure(conn: &Connection, config: &StoreConfig) -> Result<()> {
    if let Some(key) = &config.key {
        encryption::apply(conn, key)?;
    }
    encryption::verify(conn, config.key.is_some())?;
    conn.busy_timeout(config.busy_timeout)?;
    // `journal_mode` answers with the mode in force; an in-memory database stays "memory".
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    tracing::debug!(journal_mode = %mode, "store opened");
    conn.pragma_update(None, "synchronous", config.durability.pragma_value())?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

fn parse_kind(id: DocumentId, kind: &str) -> Result<DocKind> {
    DocKind::parse(kind).ok_or_else(|| Error::Corrupt {
        document: id,
        reason: format!("the store lists it with an unknown kind {kind:?}"),
    })
}

/// Milliseconds since the Unix epoch, the store's representation of an instant.
fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::{ChunkKind, DocumentWrite, Projection};

    pub(crate) fn temp_store(
        config: StoreConfig,
    ) -> (tempfile::TempDir, std::path::PathBuf, Store) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tandem.db");
        let store = Store::open(&path, config).unwrap();
        (dir, path, store)
    }

    fn pragma_text(store: &Store, name: &str) -> String {
        store
            .conn
            .query_row(&format!("PRAGMA {name}"), [], |row| {
                row.get::<_, rusqlite::types::Value>(0)
            })
            .map(|value| match value {
                rusqlite::types::Value::Text(text) => text,
                rusqlite::types::Value::Integer(n) => n.to_string(),
                other => format!("{other:?}"),
            })
            .unwrap()
    }

    #[test]
    fn a_file_store_uses_wal_foreign_keys_and_the_configured_durability() {
        let (_dir, _path, store) = temp_store(StoreConfig::default());
        assert_eq!(pragma_text(&store, "journal_mode"), "wal");
        assert_eq!(pragma_text(&store, "synchronous"), "2", "FULL is 2");
        assert_eq!(pragma_text(&store, "foreign_keys"), "1");

        let (_dir, _path, store) = temp_store(StoreConfig {
            durability: Durability::Normal,
            ..StoreConfig::default()
        });
        assert_eq!(pragma_text(&store, "synchronous"), "1", "NORMAL is 1");
    }

    #[test]
    fn the_device_id_is_made_once_and_kept_across_reopens() {
        let (_dir, path, mut store) = temp_store(StoreConfig::default());
        assert_eq!(store.device_id().unwrap(), None);
        let id = store.device_id_or_create().unwrap();
        assert_eq!(store.device_id_or_create().unwrap(), id);
        store.set_user(&UserId::from("ana")).unwrap();
        store.set_device_name("Ana's phone").unwrap();
        drop(store);

        let store = Store::open(&path, StoreConfig::default()).unwrap();
        assert_eq!(store.device_id().unwrap(), Some(id));
        assert_eq!(store.user().unwrap(), Some(UserId::from("ana")));
        assert_eq!(store.device_name().unwrap().as_deref(), Some("Ana's phone"));
    }

    #[test]
    fn a_damaged_device_id_is_an_error_not_a_panic() {
        let mut store = Store::open_in_memory().unwrap();
        store.put_meta(meta_keys::DEVICE_ID, b"short").unwrap();
        assert!(matches!(store.device_id(), Err(Error::Invalid(_))));
        store.put_meta(meta_keys::USER, &[0xff, 0xfe]).unwrap();
        assert!(matches!(store.user(), Err(Error::Malformed(_))));
    }

    fn a_write(id: DocumentId) -> DocumentWrite<'static> {
        DocumentWrite {
            id,
            kind: DocKind::Notes,
            chunk_kind: ChunkKind::Incremental,
            bytes: b"change",
            projection: Projection::Notes,
        }
    }

    fn is_storage_error(result: &Result<impl std::fmt::Debug>) -> bool {
        matches!(result, Err(Error::Storage(_)))
    }

    #[test]
    fn a_read_only_file_makes_writes_fail_with_a_storage_error() {
        let (_dir, path, mut store) = temp_store(StoreConfig::default());
        let existing = DocumentId::random();
        store.append_chunk(&a_write(existing)).unwrap();
        drop(store);

        // File permissions do not stop root (which CI runs as), so ask SQLite for read-only.
        let conn = Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .unwrap();
        let mut store = Store::from_connection(conn, &StoreConfig::default()).unwrap();
        let result = store.append_chunk(&a_write(DocumentId::random()));
        assert!(is_storage_error(&result), "{result:?}");
        assert!(is_storage_error(&store.put_meta("k", b"v")));
        // Reading still works.
        assert_eq!(store.load_chunks(existing).unwrap().len(), 1);
    }

    #[test]
    fn a_locked_database_makes_writes_fail_after_the_busy_timeout() {
        let (_dir, path, mut store) = temp_store(StoreConfig {
            busy_timeout: Duration::from_millis(50),
            ..StoreConfig::default()
        });
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE").unwrap();

        let id = DocumentId::random();
        let result = store.append_chunk(&a_write(id));
        assert!(is_storage_error(&result), "{result:?}");

        other.execute_batch("ROLLBACK").unwrap();
        store.append_chunk(&a_write(id)).unwrap();
        assert_eq!(
            store.load_chunks(id).unwrap().len(),
            1,
            "the failed write left nothing"
        );
    }

    #[test]
    fn a_full_disk_makes_writes_fail_and_keeps_what_was_committed() {
        let (_dir, _path, mut store) = temp_store(StoreConfig::default());
        let kept = DocumentId::random();
        store.append_chunk(&a_write(kept)).unwrap();
        // Cap the file at its current size: the next page it needs is "disk full".
        let pages: i64 = store
            .conn
            .query_row("PRAGMA page_count", [], |row| row.get(0))
            .unwrap();
        store
            .conn
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .unwrap();
        let big = vec![7u8; 64 * 1024];
        let failed = DocumentId::random();
        let result = store.append_chunk(&DocumentWrite {
            bytes: &big,
            ..a_write(failed)
        });
        match &result {
            Err(Error::Storage(rusqlite::Error::SqliteFailure(e, _))) => {
                assert_eq!(e.code, rusqlite::ErrorCode::DiskFull);
            }
            other => panic!("expected disk full, got {other:?}"),
        }
        assert!(!store.document_exists(failed).unwrap());
        assert_eq!(store.load_chunks(kept).unwrap().len(), 1);
    }

    #[test]
    fn a_path_that_cannot_be_created_is_a_storage_error() {
        let dir = tempfile::tempdir().unwrap();
        let result = Store::open(
            dir.path().join("missing").join("tandem.db"),
            StoreConfig::default(),
        );
        assert!(is_storage_error(&result), "{result:?}");
    }
}
