//! What the device's sync layer tells the app: its status, and events about documents.

use automerge::{ChangeHash, Prop};
use chrono::{DateTime, Utc};

use crate::ids::DocumentId;
use crate::model::DocKind;
use crate::sync::{ChangedPaths, ConnectionId, FetchProgress};

/// Whether the device can reach the relay.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum ConnectionState {
    /// Not connected, and not trying right now (waiting out a backoff, or stopped).
    #[default]
    Offline,
    /// Dialling, or waiting for the relay's handshake.
    Connecting,
    /// The handshake with the relay is done; documents sync.
    Connected,
}

/// The sync status a UI shows.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct SyncStatus {
    pub connection: ConnectionState,
    /// Documents holding local changes the relay has not saved yet.
    pub pending_documents: usize,
    /// Local changes the relay has not saved yet.
    pub pending_changes: usize,
    /// Connected, every local change is saved on the relay, and every document the device syncs
    /// has the relay's heads: nothing is in flight in either direction.
    pub in_sync: bool,
    /// The last time the device was [`in_sync`](Self::in_sync), in this run or a previous one.
    pub last_synced_at: Option<DateTime<Utc>>,
    /// Documents this device held nothing of, fetched from the relay as snapshots over the
    /// current connection: how many documents and bytes the relay announced, and how many of
    /// them are stored. All zero until a fetch starts; reset on each connection.
    pub fetch: FetchProgress,
}

impl SyncStatus {
    /// Connected and in sync: what `sync_now` waits for.
    pub fn is_complete(&self) -> bool {
        self.connection == ConnectionState::Connected && self.in_sync
    }
}

/// Changes from a peer, now stored and visible: which document and which parts of it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RemoteChange {
    pub document: DocumentId,
    /// `None` if the document could not be read back as a Tandem document.
    pub kind: Option<DocKind>,
    /// The document's heads after the change.
    pub heads: Vec<ChangeHash>,
    /// Its heads before (empty: the document is new here). With `heads`,
    /// [`Repo::history_between`](crate::repo::Repo::history_between) lists the changes that
    /// arrived.
    pub before: Vec<ChangeHash>,
    /// The keys of the document's root under which anything changed (`"goals"`, `"notes"`, ...).
    pub top_level_keys: Vec<String>,
    /// Each changed location as a `/`-separated path from the root, list positions as numbers:
    /// `"goals/g-1a2b/progress"`, `"notes/12"`.
    pub paths: Vec<String>,
}

impl RemoteChange {
    pub(crate) fn new(document: DocumentId, kind: Option<DocKind>, changes: ChangedPaths) -> Self {
        Self {
            document,
            kind,
            heads: changes.heads,
            before: changes.before,
            top_level_keys: changes.top_level_keys.into_iter().collect(),
            paths: changes
                .paths
                .iter()
                .map(|path| {
                    path.iter()
                        .map(|prop| match prop {
                            Prop::Map(key) => key.clone(),
                            Prop::Seq(index) => index.to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join("/")
                })
                .collect(),
        }
    }
}

/// Something the app may want to react to.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum SyncEvent {
    /// The status changed.
    Status(SyncStatus),
    /// A peer's changes to a document are stored and visible.
    RemoteChange(RemoteChange),
    /// The snapshot fetch moved on (the relay announced more documents, or more are stored);
    /// the same figures as [`SyncStatus::fetch`]. At most one per frame from the relay.
    FetchProgress(FetchProgress),
    /// These local changes are now saved on the relay.
    Saved {
        document: DocumentId,
        changes: Vec<ChangeHash>,
    },
    /// A document the device asked for exists neither here nor at any connected peer (yet;
    /// while offline that is every document not stored here). The device keeps asking; it
    /// arrives with a [`SyncEvent::RemoteChange`] if someone uploads it.
    Unavailable { document: DocumentId },
    /// A document stopped syncing for this run: its stored bytes are damaged, or a peer sent
    /// changes that are not a valid Tandem document. Nothing stored was deleted.
    Failed {
        document: DocumentId,
        reason: String,
    },
}

/// What the driver must write to a connection.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Outgoing {
    /// One binary websocket frame.
    Frame {
        connection: ConnectionId,
        frame: Vec<u8>,
    },
    /// Close the connection (after sending the frames before this one).
    Close {
        connection: ConnectionId,
        reason: String,
    },
}
