//! What the engine asks its driver to do: send, close, load, persist, notify.

use std::collections::BTreeSet;

use automerge::{ChangeHash, Prop};

use super::{ConnectionId, PeerId, PeerInfo, StorageId};
use crate::ids::DocumentId;

/// Names one [`Effect::Persist`]; the driver hands it back through
/// [`SyncEngine::persisted`](super::SyncEngine::persisted) once the changes are durable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct PersistTicket(pub(crate) u64);

/// One thing for the driver to do.
///
/// Storage effects (`LoadDocument`, `Persist`, `SaveSyncState`) must be carried out in the order
/// they were emitted for any one document: a `LoadDocument` that follows a `Persist` must see the
/// persisted changes. A single writer connection does this naturally.
#[derive(Clone, PartialEq, Debug)]
pub enum Effect {
    /// Send one binary websocket frame.
    Send {
        connection: ConnectionId,
        frame: Vec<u8>,
    },
    /// Close the connection. The engine has already forgotten it; any `error` frame to send first
    /// precedes this effect.
    Close {
        connection: ConnectionId,
        reason: String,
    },
    /// Read the document's stored bytes and its saved sync states, and answer with
    /// [`SyncEngine::document_loaded`](super::SyncEngine::document_loaded).
    LoadDocument {
        document: DocumentId,
    },
    /// Commit these changes (automerge change chunks, appendable to the stored document) and
    /// answer with [`SyncEngine::persisted`](super::SyncEngine::persisted). Until then nothing
    /// about this document leaves the engine.
    Persist {
        ticket: PersistTicket,
        document: DocumentId,
        changes: Vec<u8>,
    },
    /// Save the sync state for (document, the peer's storage id), replacing the old one. Only for
    /// peers that announced a storage id and are not ephemeral.
    SaveSyncState {
        document: DocumentId,
        storage_id: StorageId,
        state: Vec<u8>,
    },
    /// Changes from a peer are now durable and visible in the document.
    DocumentChanged {
        document: DocumentId,
        changes: ChangedPaths,
    },
    /// A document that was opened or requested exists neither in storage nor at any connected peer.
    DocumentUnavailable {
        document: DocumentId,
    },
    /// An ephemeral message for a document (presence, cursors); never stored.
    EphemeralReceived {
        document: DocumentId,
        sender: PeerId,
        data: Vec<u8>,
    },
    /// A relay with the reconnect digest on: read every document that has a sync state saved for
    /// `storage_id` (the device on `connection`, after its handshake or its `offer`, unless the
    /// engine holds that index in memory), with the heads storage holds committed, and answer
    /// with [`SyncEngine::peer_index_loaded`](super::SyncEngine::peer_index_loaded) (or
    /// [`SyncEngine::peer_index_failed`](super::SyncEngine::peer_index_failed)).
    LoadPeerIndex {
        connection: ConnectionId,
        storage_id: StorageId,
    },
    PeerJoined(PeerInfo),
    PeerLeft(PeerInfo),
}

/// Where a document changed: enough for a UI or a query projection to refresh only what moved.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct ChangedPaths {
    /// The document's heads after the change.
    pub heads: Vec<ChangeHash>,
    /// Its heads before the change: empty if it held nothing. The changes since are what
    /// arrived (a driver lists them for the app's history view).
    pub before: Vec<ChangeHash>,
    /// The keys of the document's root map under which anything changed.
    pub top_level_keys: BTreeSet<String>,
    /// Each changed location, from the root to the changed property, without duplicates.
    pub paths: Vec<Vec<Prop>>,
    /// The document was empty and arrived whole (a fetched snapshot, which the engine stores
    /// without loading it): everything in it changed. `top_level_keys` and `paths` are then
    /// left empty; a driver that needs them reads the root keys of the document it stored.
    pub whole_document: bool,
}
