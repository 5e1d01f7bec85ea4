//! The relay's storage seam: one small trait, implemented over SQLite (the embedded default) and
//! PostgreSQL (several relay processes sharing one database).
//!
//! The relay writes through [`RelayStore::append_changes`] in batches: every change a sync message
//! brought is committed in one transaction before anything that reflects it is sent, and changes
//! arriving from many peers at once share that transaction (group commit).

mod database;
mod postgresql;
pub mod sql;
mod sqlite;

pub use self::database::{Database, DatabaseLocation};
pub use self::postgresql::PostgresStore;
pub use self::sqlite::SqliteStore;

use automerge::ChangeHash;
use tandem_core::DocumentId;

use crate::access::{DocumentRecord, Written};
use crate::accounts::{Accounts, Grant};
use crate::error::Result;

/// Bytes of Automerge changes for one document, to be committed, with what access needs kept in
/// the same transaction.
#[derive(Debug, Clone)]
pub struct NewChanges {
    pub document: DocumentId,
    pub bytes: Vec<u8>,
    /// What the document is, when these are its first changes.
    pub record: Option<DocumentRecord>,
    /// Who wrote them.
    pub audit: Vec<Written>,
    /// Actors bound to web devices on first use: (actor, device).
    pub bindings: Vec<(Vec<u8>, i64)>,
    /// The document's heads once these changes are applied, recorded for the reconnect digest.
    pub heads: Option<Vec<ChangeHash>>,
}

impl NewChanges {
    /// Changes with nothing else to record.
    pub fn new(document: DocumentId, bytes: Vec<u8>) -> Self {
        Self {
            document,
            bytes,
            record: None,
            audit: Vec::new(),
            bindings: Vec::new(),
            heads: None,
        }
    }
}

/// One stored chunk of a document: a compacted snapshot or the changes of one commit.
#[derive(Debug, Clone)]
pub struct StoredChunk {
    pub seq: i64,
    pub is_snapshot: bool,
    pub bytes: Vec<u8>,
}

/// A sync state to remember for (document, peer storage id).
#[derive(Debug, Clone)]
pub struct SyncStateRecord {
    pub document: DocumentId,
    pub peer_storage_id: String,
    pub state: Vec<u8>,
}

/// What another relay process sharing the database did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// A chunk of `document` was committed.
    Committed { document: DocumentId, seq: i64 },
    /// The watch is (again) listening; what was committed before may not have been told.
    Listening,
}

/// Where a watch delivers [`StoreEvent`]s; `false` stops the watch.
pub type EventSink = Box<dyn Fn(StoreEvent) -> bool + Send>;

/// A running watch of the database; dropping it stops the watch (within about a second).
#[derive(Debug)]
pub struct Watch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Watch {
    fn new(stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Self {
        Self { stop }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// What the relay needs from its database. Calls block; the relay runs them off the async runtime.
pub trait RelayStore: Send + Sync + 'static {
    /// Every chunk of a document in commit order, or `None` if the relay has never seen it.
    fn load_document(&self, document: DocumentId) -> Result<Option<Vec<StoredChunk>>>;

    /// Commits all of `batch` in one transaction; returns only after the commit.
    fn append_changes(&self, batch: &[NewChanges]) -> Result<()>;

    /// Replaces exactly the chunks `folded` (the `seq`s of the chunks the snapshot was made from:
    /// those this relay loaded, appended or merged) by one snapshot, in one transaction, at the
    /// highest of those `seq`s. Chunks appended after the snapshot was taken are kept.
    ///
    /// Refused (`false`, nothing changed) when a stored chunk that is not in `folded` sorts below
    /// that `seq` (another relay's change this snapshot does not hold: folding would move it
    /// before a snapshot it may depend on), or a chunk of `folded` is gone (another relay folded
    /// it). The caller merges what it lacks and compacts again later; no change is ever deleted
    /// that the snapshot does not hold.
    fn compact(&self, document: DocumentId, snapshot: &[u8], folded: &[i64]) -> Result<bool>;

    /// The bytes of one chunk, if it is still stored (a compaction may have folded it).
    fn load_chunk(&self, document: DocumentId, seq: i64) -> Result<Option<Vec<u8>>>;

    /// What one stored document is, if it is stored.
    fn document_record(&self, document: DocumentId) -> Result<Option<DocumentRecord>>;

    /// Starts telling `sink` about changes other relay processes commit to this database (and
    /// every time the watch (re)connects, since changes may have been missed while it was not).
    /// `None` for a database no other relay writes to (SQLite). Watching stops when the returned
    /// [`Watch`] is dropped or `sink` answers `false`.
    fn watch(&self, sink: EventSink) -> Result<Option<Watch>> {
        let _ = sink;
        Ok(None)
    }

    /// Every sync state saved for a document, as (peer storage id, state).
    fn load_sync_states(&self, document: DocumentId) -> Result<Vec<(String, Vec<u8>)>>;

    fn save_sync_states(&self, batch: &[SyncStateRecord]) -> Result<()>;

    /// Every stored document with a sync state saved for `peer_storage_id`, at its committed
    /// heads: what the relay's answer to that peer's reconnect digest is computed from.
    fn peer_index(&self, peer_storage_id: &str) -> Result<Vec<(DocumentId, Vec<ChangeHash>)>>;

    /// This relay's storage id, made on first use and stable across restarts: peers key the sync
    /// states they keep for the relay by it.
    fn storage_id(&self) -> Result<String>;

    /// How many documents the relay holds.
    fn document_count(&self) -> Result<u64>;

    /// The grant of a presented token, if it is known, unexpired and unrevoked at `now`.
    fn authenticate(&self, token: &str, now: i64) -> Result<Option<Grant>>;

    /// The accounts revision: it moves whenever an administrator changes anything.
    fn revision(&self) -> Result<i64>;

    fn load_accounts(&self) -> Result<Accounts>;

    /// What every stored document is.
    fn document_records(&self) -> Result<Vec<(DocumentId, DocumentRecord)>>;
}

pub(crate) fn encode_heads(heads: &[ChangeHash]) -> Vec<u8> {
    heads.iter().flat_map(|h| h.0).collect()
}

pub(crate) fn decode_heads(bytes: &[u8]) -> Option<Vec<ChangeHash>> {
    if !bytes.len().is_multiple_of(32) {
        return None;
    }
    bytes
        .chunks_exact(32)
        .map(|c| ChangeHash::try_from(c).ok())
        .collect()
}

pub(crate) fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
