//! The device side of sync, sans-IO: the device's [`Repo`] composed with a [`SyncEngine`].
//!
//! [`Device`] carries out the engine's effects synchronously against the store, so a driver only
//! moves frames: it calls [`Device::connection_opened`], [`Device::frame_received`] and
//! [`Device::connection_closed`], and writes out [`Device::take_outgoing`]. Like the rest of the
//! core it does no network IO and spawns nothing; `client` (the `client` feature) is the tokio
//! driver.
//!
//! - **Remote changes** are applied through [`Repo::apply_changes`]: the chunk and the new
//!   projection rows commit in one transaction before the engine is told they are durable, and a
//!   [`SyncEvent::RemoteChange`] names the document and the paths that moved.
//! - **Local edits** ([`Device::with_repo`]) are stored by the repo as usual; their bytes then go
//!   to the engine with [`SyncEngine::apply_stored_changes`], without a second write.
//! - **Saved to server.** Every local change enters the store's outbox in the transaction that
//!   stores it. When the relay (which answers only after committing) advertises heads that cover
//!   a change, the change is marked saved and [`SyncEvent::Saved`] says so.
//! - **What syncs.** The documents with unsaved local changes, the followed documents, the
//!   entries of followed directories (also ones added later), documents edited in this run and
//!   those passed to [`Device::open`]. Offline edits are therefore offered on every (re)connect.
//! - **Sync state** is saved per (document, relay storage id) and resumed on reconnect.
//! - **Fresh documents.** Documents the device holds nothing of come from a relay that offers it
//!   as compacted snapshots (`sync::fetch`) rather than change by change; the relay announces how
//!   many documents and bytes follow, and [`SyncStatus::fetch`] and [`SyncEvent::FetchProgress`]
//!   count them as they are stored. The persists of one batch of snapshots (hundreds) are
//!   stored in one SQLite transaction, each document's write a savepoint of it, and the engine
//!   hears they are durable only after its `COMMIT`. Each snapshot is loaded once, by the repo,
//!   which verifies it, reads its projection and stores the bytes as they came.
//!
//! ```
//! use tandem_core::device::{ConnectionState, Device};
//! use tandem_core::model::NewDirectory;
//! use tandem_core::repo::{Repo, RepoConfig};
//! use tandem_core::UserId;
//!
//! let repo = Repo::open_in_memory(RepoConfig::new(UserId::from("carla"), "Carla's phone"))?;
//! let mut device = Device::new(repo)?;
//! let directory = device.with_repo(|repo| {
//!     repo.create_directory(NewDirectory {
//!         program: "First-year success".into(),
//!         coach: UserId::from("carla"),
//!         mentee: UserId::from("ana"),
//!     })
//! })?;
//! assert_eq!(device.status().pending_changes, 1, "made offline, not on the relay yet");
//!
//! // A driver dials the relay: the engine's `join` is the first frame to write.
//! let connection = device.connection_opened();
//! assert_eq!(device.status().connection, ConnectionState::Connecting);
//! assert_eq!(device.take_outgoing().len(), 1);
//! # let _ = (directory, connection);
//! # Ok::<(), tandem_core::Error>(())
//! ```

mod status;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use automerge::{ChangeHash, Prop};
use chrono::Utc;

pub use status::{ConnectionState, Outgoing, RemoteChange, SyncEvent, SyncStatus};

use crate::error::{Error, Result};
use crate::ids::{DirectoryId, DocumentId};
use crate::model::DocKind;
use crate::repo::{CreatedDocument, LocalCommit, Repo};
use crate::store::meta_keys;
use crate::sync::{
    ConnectionId, Direction, Effect, EngineConfig, FetchProgress, Message, PersistTicket, Role,
    StorageId, StoredDocument, SyncEngine,
};

/// A device's documents and their sync with a relay. See the [module documentation](self).
#[derive(Debug)]
pub struct Device {
    repo: Repo,
    engine: SyncEngine,
    /// Connections opened and not yet seen closed.
    open: BTreeSet<ConnectionId>,
    /// The relay's connection once its handshake is done, and whether it stores what it gets
    /// (only then do its heads count as "saved to server").
    relay: Option<(ConnectionId, bool)>,
    connecting: bool,
    /// Documents loaded into the engine.
    hot: BTreeSet<DocumentId>,
    followed: BTreeSet<DocumentId>,
    /// Hot documents whose exchange with the relay has not settled since they last moved.
    unsettled: BTreeSet<DocumentId>,
    /// Documents that stopped syncing for this run, with why.
    failed: BTreeMap<DocumentId, String>,
    outgoing: Vec<Outgoing>,
    events: Vec<SyncEvent>,
    status: SyncStatus,
    /// Something moved (remote changes applied, changes saved) since the status was computed.
    progressed: bool,
    /// The snapshot fetch over the relay's connection, as last reported.
    fetch: FetchProgress,
    /// Documents peers' changes created and whose change the app has not heard of yet: their
    /// kind and root keys, read as they were stored (the engine may not have loaded them).
    created: HashMap<DocumentId, CreatedDocument>,
}

impl Device {
    /// Composes `repo` with a sync engine. The engine's storage id is kept in the store's meta
    /// (made on first use), so the relay resumes its sync state with this device across runs;
    /// the peer id is derived from the device id. Documents with unsaved local changes and the
    /// followed ones are loaded, ready to be offered when a relay connects.
    pub fn new(mut repo: Repo) -> Result<Self> {
        repo.track_local_commits();
        let storage_id = match repo.store().meta_text(meta_keys::SYNC_STORAGE_ID)? {
            Some(id) => id,
            None => {
                let id = format!("tandem-{}", DocumentId::random());
                repo.store_mut()
                    .put_meta_text(meta_keys::SYNC_STORAGE_ID, &id)?;
                id
            }
        };
        let mut config =
            EngineConfig::new(format!("tandem-device-{}", repo.device()), Role::Device)
                .with_storage_id(StorageId::new(storage_id));
        config.ephemeral_session_id = DocumentId::random().to_string();
        let followed: BTreeSet<DocumentId> = repo.store().followed()?.into_iter().collect();
        let unsaved = repo.store().documents_with_unsaved_changes()?;
        let last_synced_at = repo
            .store()
            .meta_text(meta_keys::LAST_SYNCED_AT)?
            .and_then(|text| chrono::DateTime::parse_from_rfc3339(&text).ok())
            .map(|at| at.with_timezone(&Utc));
        let mut device = Self {
            repo,
            engine: SyncEngine::new(config),
            open: BTreeSet::new(),
            relay: None,
            connecting: false,
            hot: BTreeSet::new(),
            followed: followed.clone(),
            unsettled: BTreeSet::new(),
            failed: BTreeMap::new(),
            outgoing: Vec::new(),
            events: Vec::new(),
            status: SyncStatus {
                last_synced_at,
                ..SyncStatus::default()
            },
            progressed: false,
            fetch: FetchProgress::default(),
            created: HashMap::new(),
        };
        for document in unsaved.into_iter().chain(followed) {
            device.engine.open_document(document);
        }
        device.pump();
        for directory in device.followed.clone() {
            device.open_entries(directory);
        }
        device.settle();
        device.events.clear();
        Ok(device)
    }

    /// The repository, for reading through `&self` (e.g. projection queries).
    pub fn repo(&self) -> &Repo {
        &self.repo
    }

    /// Runs `f` with the repository. Local changes it commits are handed to the sync engine
    /// afterwards (and offered to the relay if connected); nothing is stored twice.
    pub fn with_repo<T>(&mut self, f: impl FnOnce(&mut Repo) -> Result<T>) -> Result<T> {
        let result = f(&mut self.repo);
        self.pump();
        self.settle();
        result
    }

    /// The engine, for inspection.
    pub fn engine(&self) -> &SyncEngine {
        &self.engine
    }

    // ---- what syncs -------------------------------------------------------------------------

    /// Keeps `document` in sync from now on, across restarts. If it is a directory, every
    /// document it lists (now or later) syncs too. A document this device does not hold is
    /// requested from the relay.
    pub fn follow(&mut self, document: DocumentId) -> Result<()> {
        self.repo.store_mut().follow(document)?;
        self.followed.insert(document);
        self.engine.open_document(document);
        self.pump();
        self.open_entries(document);
        self.settle();
        Ok(())
    }

    /// Stops following `document` (it stays stored, and syncs for the rest of this run).
    pub fn unfollow(&mut self, document: DocumentId) -> Result<()> {
        self.repo.store_mut().unfollow(document)?;
        self.followed.remove(&document);
        Ok(())
    }

    /// The followed documents.
    pub fn followed(&self) -> impl Iterator<Item = DocumentId> + '_ {
        self.followed.iter().copied()
    }

    /// Syncs `document` for the rest of this run (e.g. while the app shows it); requested from
    /// the relay if this device does not hold it.
    pub fn open(&mut self, document: DocumentId) {
        self.engine.open_document(document);
        self.pump();
        self.settle();
    }

    // ---- saved to server --------------------------------------------------------------------

    /// Whether a change made on this device is saved on the relay (`None`: not a local change).
    pub fn is_saved_to_server(&self, change: &ChangeHash) -> Result<Option<bool>> {
        self.repo.is_saved_to_server(change)
    }

    /// The document's local changes the relay has not saved yet.
    pub fn unsaved_changes(&self, document: DocumentId) -> Result<Vec<ChangeHash>> {
        self.repo.unsaved_changes(document)
    }

    pub fn status(&self) -> SyncStatus {
        self.status.clone()
    }

    // ---- the driver's side ------------------------------------------------------------------

    /// The driver is about to dial: the status says "connecting".
    pub fn dialing(&mut self) {
        self.connecting = true;
        self.settle();
    }

    /// The driver's dial failed or it gave up for now: "offline" (unless a connection is open).
    pub fn dial_failed(&mut self) {
        self.connecting = false;
        self.settle();
    }

    /// A websocket to the relay is open. The engine's `join` is queued in [`Self::take_outgoing`].
    pub fn connection_opened(&mut self) -> ConnectionId {
        let connection = self.engine.connection_opened(Direction::Outgoing);
        self.open.insert(connection);
        self.connecting = true;
        self.pump();
        self.settle();
        connection
    }

    /// One binary frame arrived.
    pub fn frame_received(&mut self, connection: ConnectionId, frame: &[u8]) {
        let document = document_of(frame);
        self.engine.frame_received(connection, frame);
        self.pump();
        match document {
            Some(document) => {
                self.check_saved(document);
                self.check_settled(document);
            }
            // A reconnect digest answer settles documents without a frame about any of them.
            None if self.relay.is_some_and(|(relay, _)| relay == connection) => {
                self.recheck_all();
            }
            None => {}
        }
        self.check_fetch_progress();
        self.settle();
    }

    /// Reports the snapshot fetch's progress if it moved.
    fn check_fetch_progress(&mut self) {
        let Some((relay, _)) = self.relay else {
            return;
        };
        if let Some(progress) = self.engine.fetch_progress(relay)
            && progress != self.fetch
        {
            self.fetch = progress;
            self.events.push(SyncEvent::FetchProgress(progress));
        }
    }

    /// Checks "saved to server" for every document with unsaved changes and settles every
    /// unsettled one.
    fn recheck_all(&mut self) {
        match self.repo.store().documents_with_unsaved_changes() {
            Ok(unsaved) => {
                for document in unsaved {
                    self.check_saved(document);
                }
            }
            Err(e) => tracing::warn!("reading the outbox failed: {e}"),
        }
        let unsettled: Vec<DocumentId> = self.unsettled.iter().copied().collect();
        for document in unsettled {
            self.check_settled(document);
        }
    }

    /// The websocket closed or failed.
    pub fn connection_closed(&mut self, connection: ConnectionId) {
        self.engine.connection_closed(connection);
        self.pump();
        self.forget(connection);
        self.settle();
    }

    /// Leaves the relay politely: queues `leave` and a close.
    pub fn disconnect(&mut self, connection: ConnectionId) {
        self.engine.disconnect(connection);
        self.pump();
        self.settle();
    }

    /// Frames and closes for the driver to write, in order.
    pub fn take_outgoing(&mut self) -> Vec<Outgoing> {
        std::mem::take(&mut self.outgoing)
    }

    /// Events for the app, in order.
    pub fn take_events(&mut self) -> Vec<SyncEvent> {
        std::mem::take(&mut self.events)
    }

    // ---- the machinery ----------------------------------------------------------------------

    /// Hands local commits to the engine and carries out its effects until it has none left.
    fn pump(&mut self) {
        loop {
            for commit in self.repo.take_local_commits() {
                self.local_commit(commit);
            }
            let effects = self.engine.take_effects();
            if effects.is_empty() {
                break;
            }
            // Persists in a row (a batch of fetched snapshots is hundreds) commit together.
            let mut persists = Vec::new();
            for effect in effects {
                match effect {
                    Effect::Persist {
                        ticket,
                        document,
                        changes,
                    } => persists.push((ticket, document, changes)),
                    other => {
                        self.persist(std::mem::take(&mut persists));
                        self.carry_out(other);
                    }
                }
            }
            self.persist(persists);
        }
        // Every commit's `DocumentChanged` came in the loop above (one whose document the
        // engine dropped meanwhile never comes).
        self.created.clear();
    }

    fn local_commit(&mut self, commit: LocalCommit) {
        let LocalCommit { document, bytes } = commit;
        if self.failed.contains_key(&document) {
            return;
        }
        // Hot with its heads known: loaded, or a fetched snapshot the engine loads now.
        if self.engine.heads(&document).is_some() {
            if let Err(e) = self.engine.apply_stored_changes(document, &bytes) {
                tracing::error!(%document, "the engine refused a stored local change: {e}");
            }
        } else {
            self.engine.open_document(document);
        }
        if self.relay.is_some() {
            self.unsettled.insert(document);
        }
        if self.followed.contains(&document) {
            self.open_entries(document);
        }
    }

    fn carry_out(&mut self, effect: Effect) {
        match effect {
            Effect::Send { connection, frame } => {
                self.outgoing.push(Outgoing::Frame { connection, frame });
            }
            Effect::Close { connection, reason } => {
                self.outgoing.push(Outgoing::Close { connection, reason });
                self.forget(connection);
            }
            Effect::LoadDocument { document } => self.load(document),
            Effect::Persist {
                ticket,
                document,
                changes,
            } => self.persist(vec![(ticket, document, changes)]),
            Effect::SaveSyncState {
                document,
                storage_id,
                state,
            } => {
                // Sync state only saves bandwidth on the next connect; losing it costs nothing else.
                if let Err(e) =
                    self.repo
                        .store_mut()
                        .put_sync_state(document, storage_id.as_str(), &state)
                {
                    tracing::warn!(%document, "saving a sync state failed: {e}");
                }
            }
            Effect::DocumentChanged {
                document,
                mut changes,
            } => {
                let created = self.created.remove(&document);
                let kind = match &created {
                    Some(created) => Some(created.kind),
                    None => self.repo.kind(document).ok().flatten(),
                };
                if changes.whole_document
                    && let Some(created) = created
                {
                    // Stored whole, not loaded by the engine: everything under every root key
                    // changed, as the repo read when it stored it.
                    changes.paths = created
                        .root_keys
                        .iter()
                        .map(|key| vec![Prop::Map(key.clone())])
                        .collect();
                    changes.top_level_keys = created.root_keys.into_iter().collect();
                }
                self.events.push(SyncEvent::RemoteChange(RemoteChange::new(
                    document, kind, changes,
                )));
                if self.followed.contains(&document) {
                    self.open_entries(document);
                }
            }
            Effect::DocumentUnavailable { document } => {
                self.events.push(SyncEvent::Unavailable { document });
            }
            // Only a relay is asked for its index.
            Effect::EphemeralReceived { .. } | Effect::LoadPeerIndex { .. } => {}
            Effect::PeerJoined(peer) => {
                if self.open.contains(&peer.connection) && self.relay.is_none() {
                    let stores = peer.durable_storage_id().is_some();
                    self.relay = Some((peer.connection, stores));
                    self.connecting = false;
                    self.fetch = FetchProgress::default();
                    self.unsettled = self.hot.clone();
                    tracing::info!(peer = %peer.peer_id, stores, "connected to the relay");
                }
            }
            Effect::PeerLeft(peer) => self.forget(peer.connection),
        }
    }

    /// Stores the changes of the engine's `Persist` effects, all in one transaction, and tells
    /// the engine which committed. Each document's changes are checked on their own (a refused
    /// one fails only that document); the engine hears `persisted` only after the commit.
    fn persist(&mut self, persists: Vec<(PersistTicket, DocumentId, Vec<u8>)>) {
        let results = match persists.as_slice() {
            [] => return,
            [(_, document, changes)] => vec![self.repo.apply_peer_changes(*document, changes)],
            many => {
                let changes: Vec<(DocumentId, &[u8])> = many
                    .iter()
                    .map(|(_, document, changes)| (*document, changes.as_slice()))
                    .collect();
                match self.repo.apply_changes_together(&changes) {
                    Ok(results) => results,
                    Err(e) => {
                        // Nothing of the batch is stored: every document reloads, the relay
                        // sends again.
                        tracing::error!("storing {} documents' changes failed: {e}", many.len());
                        for (ticket, _, _) in persists {
                            self.engine.persist_failed(ticket);
                        }
                        return;
                    }
                }
            }
        };
        for ((ticket, document, _), result) in persists.into_iter().zip(results) {
            match result {
                Ok(created) => {
                    if let Some(created) = created {
                        self.created.insert(document, created);
                    }
                    self.progressed = true;
                    self.engine.persisted(ticket);
                }
                Err(Error::Storage(e)) => {
                    // The engine reloads the document from the store; the relay sends again.
                    tracing::error!(%document, "storing a peer's changes failed: {e}");
                    self.engine.persist_failed(ticket);
                }
                Err(e) => {
                    tracing::warn!(%document, "refusing a peer's changes: {e}");
                    self.fail(
                        document,
                        format!("a peer sent changes Tandem cannot use: {e}"),
                    );
                    self.engine.persist_failed(ticket);
                }
            }
        }
    }

    /// Answers the engine's `LoadDocument` from the store.
    fn load(&mut self, document: DocumentId) {
        if self.failed.contains_key(&document) {
            self.engine.document_load_failed(document);
            self.hot.remove(&document);
            return;
        }
        let bytes = match self.repo.store().load_document_bytes(document) {
            Ok(stored) => stored.map(|stored| stored.bytes),
            Err(e) => {
                self.fail(document, e.to_string());
                self.engine.document_load_failed(document);
                self.hot.remove(&document);
                return;
            }
        };
        let sync_states = match self.repo.store().sync_states_of(document) {
            Ok(states) => states
                .into_iter()
                .map(|(peer, state)| (StorageId::new(peer), state))
                .collect(),
            Err(e) => {
                tracing::warn!(%document, "reading sync states failed: {e}");
                Vec::new()
            }
        };
        match self
            .engine
            .document_loaded(document, StoredDocument { bytes, sync_states })
        {
            Ok(()) => {
                self.hot.insert(document);
                if self.relay.is_some() {
                    self.unsettled.insert(document);
                }
            }
            Err(e) => {
                self.fail(document, e.to_string());
                self.hot.remove(&document);
            }
        }
    }

    fn fail(&mut self, document: DocumentId, reason: String) {
        self.unsettled.remove(&document);
        if self.failed.insert(document, reason.clone()).is_none() {
            self.events.push(SyncEvent::Failed { document, reason });
        }
    }

    /// Makes every document listed in a directory hot, if `directory` is a stored directory.
    fn open_entries(&mut self, directory: DocumentId) {
        if self.repo.kind(directory).ok().flatten() != Some(DocKind::Directory) {
            return;
        }
        let entries = match self.repo.directory(DirectoryId(directory)) {
            Ok(listing) => listing.entries,
            Err(e) => {
                tracing::warn!(%directory, "reading a followed directory failed: {e}");
                return;
            }
        };
        for entry in entries {
            if !self.hot.contains(&entry.document) && !self.failed.contains_key(&entry.document) {
                self.engine.open_document(entry.document);
            }
        }
        self.pump();
    }

    /// Marks the document's local changes that the relay's advertised heads cover as saved.
    fn check_saved(&mut self, document: DocumentId) {
        let Some((connection, true)) = self.relay else {
            return;
        };
        let (Some(theirs), Some(doc)) = (
            self.engine.peer_heads(&document, connection),
            self.engine.document(&document),
        ) else {
            return;
        };
        // Heads we do not hold yet cannot be reasoned about; they are covered once they arrive.
        let known: Vec<ChangeHash> = theirs
            .into_iter()
            .filter(|hash| doc.get_change_meta_by_hash(hash).is_some())
            .collect();
        if known.is_empty() {
            return;
        }
        let unsaved = match self.repo.unsaved_changes(document) {
            Ok(unsaved) if !unsaved.is_empty() => unsaved,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(%document, "reading the outbox failed: {e}");
                return;
            }
        };
        let not_covered: HashSet<ChangeHash> = doc
            .get_changes_meta(&known)
            .into_iter()
            .map(|change| change.hash)
            .collect();
        let saved: Vec<ChangeHash> = unsaved
            .into_iter()
            .filter(|hash| !not_covered.contains(hash))
            .collect();
        if saved.is_empty() {
            return;
        }
        match self.repo.store_mut().mark_saved(document, &saved) {
            Ok(marked) if !marked.is_empty() => {
                self.progressed = true;
                self.events.push(SyncEvent::Saved {
                    document,
                    changes: marked,
                });
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(%document, "marking changes saved failed: {e}"),
        }
    }

    fn check_settled(&mut self, document: DocumentId) {
        let Some((connection, _)) = self.relay else {
            return;
        };
        if self.engine.in_sync_with(&document, connection) {
            self.unsettled.remove(&document);
        } else if self.hot.contains(&document) {
            self.unsettled.insert(document);
        }
    }

    fn forget(&mut self, connection: ConnectionId) {
        self.open.remove(&connection);
        if self.relay.is_some_and(|(relay, _)| relay == connection) {
            self.relay = None;
            self.unsettled.clear();
        }
        if self.open.is_empty() {
            self.connecting = false;
        }
    }

    /// Recomputes the status; a change becomes a [`SyncEvent::Status`].
    fn settle(&mut self) {
        let unsaved = self.repo.store().unsaved().unwrap_or_else(|e| {
            tracing::warn!("reading the outbox failed: {e}");
            crate::store::Unsaved {
                documents: self.status.pending_documents,
                changes: self.status.pending_changes,
            }
        });
        let connection = if self.relay.is_some() {
            ConnectionState::Connected
        } else if self.connecting || !self.open.is_empty() {
            ConnectionState::Connecting
        } else {
            ConnectionState::Offline
        };
        let in_sync = connection == ConnectionState::Connected
            && self.unsettled.is_empty()
            && unsaved.changes == 0;
        let mut last_synced_at = self.status.last_synced_at;
        if in_sync && (!self.status.in_sync || self.progressed) {
            let now = Utc::now();
            last_synced_at = Some(now);
            if let Err(e) = self
                .repo
                .store_mut()
                .put_meta_text(meta_keys::LAST_SYNCED_AT, &now.to_rfc3339())
            {
                tracing::warn!("saving the last sync time failed: {e}");
            }
        }
        self.progressed = false;
        let status = SyncStatus {
            connection,
            pending_documents: unsaved.documents,
            pending_changes: unsaved.changes,
            in_sync,
            last_synced_at,
            fetch: self.fetch,
        };
        if status != self.status {
            self.status = status.clone();
            self.events.push(SyncEvent::Status(status));
        }
    }
}

/// The document a frame is about, if it is about one.
fn document_of(frame: &[u8]) -> Option<DocumentId> {
    match Message::decode(frame).ok()? {
        Message::Sync { document_id, .. }
        | Message::Request { document_id, .. }
        | Message::DocUnavailable { document_id, .. } => Some(document_id),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
