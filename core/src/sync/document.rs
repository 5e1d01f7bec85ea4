//! A document the engine holds in memory ("hot"), with one sync session per peer syncing it.

use std::collections::{BTreeMap, HashMap};

use automerge::sync::State;
use automerge::{Automerge, ChangeHash};

use super::{Access, ChangedPaths, ConnectionId, PersistTicket, StorageId};

/// A hot document.
#[derive(Debug, Default)]
pub(crate) struct HotDocument {
    /// The loaded document. `None` while the driver loads it (inputs wait in `queued`), or while
    /// it is held as a stored snapshot not yet loaded (`snapshot`).
    pub(crate) doc: Option<Automerge>,
    /// Device: a fetched snapshot handed to storage whole and not loaded, because nothing has
    /// read the document since (loading is most of what storing a small fetched document
    /// costs). Its heads answer every question about where the document is; anything that needs
    /// its content loads it first (`SyncEngine::loaded`). Never set together with `doc`.
    pub(crate) snapshot: Option<UnloadedSnapshot>,
    pub(crate) queued: Vec<Queued>,
    pub(crate) sessions: BTreeMap<ConnectionId, PeerSession>,
    /// Persists not yet confirmed; while any is outstanding, no sync message for this document is
    /// generated. The value is what changed when the changes came from a peer.
    pub(crate) pending: BTreeMap<PersistTicket, Option<ChangedPaths>>,
    /// The last sync state saved per peer storage id: what a new session resumes from, and what
    /// keeps identical states from being saved again.
    pub(crate) saved_states: HashMap<StorageId, Vec<u8>>,
    /// The driver opened it and wants to hear if no one has it.
    pub(crate) wanted_locally: bool,
    /// Connections whose sessions are recreated once a reload finishes.
    pub(crate) resume_sessions: Vec<ConnectionId>,
    /// Relay: connections the reconnect digest found differing on this document; their sessions
    /// start (and the relay speaks first) once it is loaded.
    pub(crate) start_sessions: Vec<ConnectionId>,
}

impl HotDocument {
    pub(crate) fn loading() -> Self {
        Self::default()
    }

    /// The driver has not answered its load yet.
    pub(crate) fn is_loading(&self) -> bool {
        self.doc.is_none() && self.snapshot.is_none()
    }

    /// The document's heads; `None` while it loads.
    pub(crate) fn heads(&self) -> Option<Vec<ChangeHash>> {
        match (&self.doc, &self.snapshot) {
            (Some(doc), _) => Some(doc.get_heads()),
            (None, Some(snapshot)) => Some(snapshot.heads.clone()),
            (None, None) => None,
        }
    }

    /// Nothing but the stored document is held: it can be dropped and loaded again later
    /// without losing an input, an unconfirmed change or a peer's subscription.
    pub(crate) fn is_cold(&self) -> bool {
        !self.is_loading()
            && self.pending.is_empty()
            && self.queued.is_empty()
            && self.sessions.is_empty()
            && self.resume_sessions.is_empty()
            && !self.wanted_locally
    }

    pub(crate) fn is_empty(&self) -> bool {
        match (&self.doc, &self.snapshot) {
            (Some(doc), _) => doc.get_heads().is_empty(),
            (None, Some(snapshot)) => snapshot.heads.is_empty(),
            (None, None) => true,
        }
    }
}

/// A document's `save()` bytes as a peer sent them, with the heads their header names.
#[derive(Debug)]
pub(crate) struct UnloadedSnapshot {
    pub(crate) bytes: Vec<u8>,
    pub(crate) heads: Vec<ChangeHash>,
}

/// An input that arrived while the document was loading.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) connection: ConnectionId,
    pub(crate) access: Access,
    pub(crate) data: Vec<u8>,
    pub(crate) is_request: bool,
}

/// What we know about a peer and one document.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum PeerStatus {
    Unknown,
    /// It asked for the document (`request`).
    Wants,
    /// It advertised heads: it has the document.
    Has,
    /// It told us it does not have the document.
    Unavailable,
    /// We told it we do not have the document; it hears from us again once we do.
    ToldUnavailable,
}

/// The automerge sync session with one peer for one document.
#[derive(Debug)]
pub(crate) struct PeerSession {
    pub(crate) state: State,
    pub(crate) status: PeerStatus,
    /// The heads in the last message we sent this peer: what it knows of our heads.
    pub(crate) advertised: Option<Vec<ChangeHash>>,
}

impl PeerSession {
    /// A session resuming from a saved state if there is a usable one.
    pub(crate) fn new(saved: Option<&Vec<u8>>, access: Access) -> Self {
        let state = saved
            .and_then(|bytes| State::decode(bytes).ok())
            .unwrap_or_default();
        let mut session = Self {
            state,
            status: PeerStatus::Unknown,
            advertised: None,
        };
        session.apply_access(access);
        session
    }

    /// A session started over after we lost or refused what the peer sent: the first message
    /// tells the peer to forget what it believes it sent us (automerge's sync reset), or it would
    /// never send those changes again.
    pub(crate) fn restarted(saved: Option<&Vec<u8>>, access: Access) -> Self {
        let mut session = Self::new(saved, access);
        session.state.needs_reset = true;
        session
    }

    /// Makes sure the peer hears our current heads at least once.
    ///
    /// automerge skips answering a message that carries no changes and the heads we already
    /// have, assuming the peer knows we have them (it records them as `last_sent_heads`). While
    /// the engine holds messages back until a persist commits, that assumption is wrong: we never
    /// told the peer, and it waits for an answer forever (a device would never learn that its
    /// changes are saved). Restoring `last_sent_heads` to what we really sent makes automerge
    /// answer.
    pub(crate) fn advertise(&mut self, heads: &[ChangeHash]) {
        if self.advertised.as_deref() != Some(heads) && self.state.last_sent_heads == heads {
            self.state.last_sent_heads = self.advertised.clone().unwrap_or_default();
        }
    }

    /// A read-only peer's changes are ignored by automerge itself (`State::read_only`).
    pub(crate) fn apply_access(&mut self, access: Access) {
        self.state.set_read_only(access != Access::ReadWrite);
    }
}
