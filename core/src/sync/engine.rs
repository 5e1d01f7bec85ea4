//! [`SyncEngine`]: the automerge-repo protocol as a state machine. Events go in as method calls;
//! effects come out of [`SyncEngine::take_effects`]. No IO, no clock, no threads.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};

use automerge::PatchAction;
use automerge::sync::{self, SyncDoc};
use automerge::{Automerge, ChangeHash, Prop, ReadDoc};

use super::digest::{self, DigestOutcomes, DigestState, Held, HeldIndex};
use super::document::{HotDocument, PeerSession, PeerStatus, Queued};
use super::fetch::{Fetching, Serving, SnapshotPersist};
use super::message::{DigestStep, Message, PROTOCOL_VERSION};
use super::peer_index::PeerIndexCache;
use super::sketch::{self, Sketch};
use super::{
    Access, AccessPolicy, AllowAll, ChangedPaths, Connection, ConnectionId, Direction, Effect,
    EngineConfig, PeerId, PeerInfo, PersistTicket, Role, StorageId,
};
use crate::error::{Error, Result};
use crate::ids::DocumentId;

mod fetch;
mod phantom;
mod stored;

/// What the driver read from storage for one document.
#[derive(Clone, Debug, Default)]
pub struct StoredDocument {
    /// The stored document (a snapshot followed by any change chunks), or `None` if there is none.
    pub bytes: Option<Vec<u8>>,
    /// Every saved sync state of this document, by the peer storage id it was saved under.
    pub sync_states: Vec<(StorageId, Vec<u8>)>,
}

/// The sans-IO sync engine shared by the device and the relay.
pub struct SyncEngine {
    config: EngineConfig,
    policy: Box<dyn AccessPolicy>,
    connections: BTreeMap<ConnectionId, Connection>,
    documents: BTreeMap<DocumentId, HotDocument>,
    tickets: BTreeMap<PersistTicket, DocumentId>,
    /// The highest ephemeral `count` seen per (sender, session), to drop repeats and loops.
    ephemeral_seen: HashMap<(PeerId, String), u64>,
    ephemeral_count: u64,
    next_connection: u64,
    next_ticket: u64,
    effects: Vec<Effect>,
    /// The reconnect digest exchange per connection (see `sync::digest`).
    digests: BTreeMap<ConnectionId, DigestState>,
    /// Device: the entry hash of every loaded document at its current heads, kept as they move.
    held_index: HeldIndex,
    /// Relay: the documents a connection was found to hold at our heads, by the entry hash they
    /// were equal at. Once one of them moves, the connection gets a session for it.
    subscribed: HashMap<ConnectionId, HashMap<DocumentId, u128>>,
    /// The document's heads right after the changes of each outstanding persist.
    ticket_heads: HashMap<PersistTicket, Vec<ChangeHash>>,
    /// What peers are answered about documents they may not see (see `phantom`).
    phantoms: HashMap<ConnectionId, HashMap<DocumentId, phantom::Phantom>>,
    /// Device: the snapshot fetch with each peer (see `sync::fetch`).
    fetching: HashMap<ConnectionId, Fetching>,
    /// Device: stored snapshots whose persists are outstanding.
    snapshot_persists: HashMap<PersistTicket, SnapshotPersist>,
    /// Relay: the `want`s being answered per connection, oldest first.
    serving: HashMap<ConnectionId, VecDeque<Serving>>,
    /// Relay: the connections whose `want`s wait for a document to load or commit.
    fetch_waiters: fetch::FetchWaiters,
    /// Relay: peers' digest indexes kept between reconnects (see `sync::peer_index`).
    peer_indexes: PeerIndexCache,
    /// Relay: sketches answered so far, one input of each sketch's seed.
    sketches: u64,
    /// Device: how its reconnect digests ended.
    digest_outcomes: DigestOutcomes,
    /// Makes the next received sync message panic inside automerge's place, so tests can reach
    /// the recovery path without a real automerge bug.
    #[cfg(test)]
    pub(crate) panic_on_next_receive: bool,
    /// Tests: the size of every sketch the relay answers with, to force one too small.
    #[cfg(test)]
    pub(crate) sketch_cells: Option<usize>,
}

impl std::fmt::Debug for SyncEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncEngine")
            .field("peer_id", &self.config.peer_id)
            .field("connections", &self.connections.len())
            .field("documents", &self.documents.len())
            .finish_non_exhaustive()
    }
}

impl SyncEngine {
    /// An engine that lets every peer read and write every document.
    pub fn new(config: EngineConfig) -> Self {
        Self::with_policy(config, Box::new(AllowAll))
    }

    pub fn with_policy(config: EngineConfig, policy: Box<dyn AccessPolicy>) -> Self {
        Self {
            peer_indexes: PeerIndexCache::new(config.peer_index_cache),
            sketches: 0,
            digest_outcomes: DigestOutcomes::default(),
            config,
            policy,
            connections: BTreeMap::new(),
            documents: BTreeMap::new(),
            tickets: BTreeMap::new(),
            ephemeral_seen: HashMap::new(),
            ephemeral_count: 0,
            next_connection: 0,
            next_ticket: 0,
            effects: Vec::new(),
            digests: BTreeMap::new(),
            held_index: HeldIndex::default(),
            subscribed: HashMap::new(),
            ticket_heads: HashMap::new(),
            phantoms: HashMap::new(),
            fetching: HashMap::new(),
            snapshot_persists: HashMap::new(),
            serving: HashMap::new(),
            fetch_waiters: HashMap::new(),
            #[cfg(test)]
            panic_on_next_receive: false,
            #[cfg(test)]
            sketch_cells: None,
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Everything the engine wants done since the last call, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        // The end of a turn: documents opened during it are asked for in one `want`.
        self.send_wants();
        std::mem::take(&mut self.effects)
    }

    // ---- connections ------------------------------------------------------------------------

    /// A transport connection is open. For [`Direction::Outgoing`] the engine sends `join`.
    pub fn connection_opened(&mut self, direction: Direction) -> ConnectionId {
        self.next_connection += 1;
        let id = ConnectionId(self.next_connection);
        match direction {
            Direction::Outgoing => {
                self.connections.insert(id, Connection::AwaitingPeer);
                let join = Message::Join {
                    sender_id: self.config.peer_id.clone(),
                    supported_protocol_versions: vec![PROTOCOL_VERSION.to_owned()],
                    metadata: Some(self.config.metadata()),
                };
                self.send(id, &join);
            }
            Direction::Incoming => {
                self.connections.insert(id, Connection::AwaitingJoin);
            }
        }
        id
    }

    /// The transport closed (or failed). Unknown or already closed connections are ignored.
    pub fn connection_closed(&mut self, connection: ConnectionId) {
        self.forget_connection(connection);
    }

    /// We are leaving: sends `leave` and closes.
    pub fn disconnect(&mut self, connection: ConnectionId) {
        if self.connections.contains_key(&connection) {
            let leave = Message::Leave {
                sender_id: self.config.peer_id.clone(),
            };
            self.send(connection, &leave);
            self.close(connection, "leaving");
        }
    }

    /// The peers that completed the handshake.
    pub fn peers(&self) -> impl Iterator<Item = &PeerInfo> {
        self.connections.values().filter_map(Connection::peer)
    }

    /// One binary frame arrived on a connection.
    pub fn frame_received(&mut self, connection: ConnectionId, frame: &[u8]) {
        let Some(state) = self.connections.get(&connection) else {
            return;
        };
        if frame.len() > self.config.limits.max_frame_bytes {
            let reason = format!(
                "frame of {} bytes exceeds the limit of {}",
                frame.len(),
                self.config.limits.max_frame_bytes
            );
            return self.fail(connection, &reason);
        }
        let message = match Message::decode(frame) {
            Ok(message) => message,
            Err(e) => return self.fail(connection, &e.to_string()),
        };
        match (state, message) {
            (
                Connection::AwaitingJoin,
                Message::Join {
                    sender_id,
                    supported_protocol_versions,
                    metadata,
                },
            ) => {
                if !supported_protocol_versions
                    .iter()
                    .any(|v| v == PROTOCOL_VERSION)
                {
                    return self.fail(connection, "unsupported protocol version");
                }
                let peer = PeerInfo {
                    connection,
                    peer_id: sender_id.clone(),
                    metadata: metadata.unwrap_or_default(),
                };
                let reply = Message::Peer {
                    sender_id: self.config.peer_id.clone(),
                    selected_protocol_version: PROTOCOL_VERSION.to_owned(),
                    target_id: sender_id,
                    metadata: Some(self.config.metadata()),
                };
                self.send(connection, &reply);
                self.establish(peer);
            }
            (
                Connection::AwaitingPeer,
                Message::Peer {
                    sender_id,
                    selected_protocol_version,
                    metadata,
                    ..
                },
            ) => {
                if selected_protocol_version != PROTOCOL_VERSION {
                    return self.fail(connection, "unsupported protocol version");
                }
                self.establish(PeerInfo {
                    connection,
                    peer_id: sender_id,
                    metadata: metadata.unwrap_or_default(),
                });
            }
            (_, Message::Error { message, .. }) => {
                self.close(connection, &format!("peer reported an error: {message}"));
            }
            (Connection::AwaitingJoin, other) => {
                let reason = format!("expected `join`, got `{}`", other.message_type());
                self.fail(connection, &reason);
            }
            (Connection::AwaitingPeer, other) => {
                let reason = format!("expected `peer`, got `{}`", other.message_type());
                self.fail(connection, &reason);
            }
            (Connection::Established(_), message) => self.established_message(connection, message),
        }
    }

    fn established_message(&mut self, connection: ConnectionId, message: Message) {
        match message {
            Message::Join { .. } | Message::Peer { .. } => {
                self.fail(connection, "handshake message after the handshake");
            }
            Message::Leave { .. } => self.close(connection, "peer left"),
            Message::Request {
                document_id, data, ..
            } => self.receive_sync(connection, document_id, data, true),
            Message::Sync {
                document_id, data, ..
            } => self.receive_sync(connection, document_id, data, false),
            Message::DocUnavailable { document_id, .. } => {
                self.receive_unavailable(connection, document_id);
            }
            Message::Ephemeral {
                sender_id,
                count,
                session_id,
                document_id,
                data,
                ..
            } => {
                self.receive_ephemeral(connection, document_id, sender_id, count, session_id, data)
            }
            // Handled before we get here; listed so the match stays exhaustive.
            Message::Error { .. } => {}
            Message::Digest { step, .. } => self.receive_digest(connection, step),
            Message::Fetch { step, .. } => self.receive_fetch(connection, step),
            // The JS repo logs and ignores message types it does not handle; so do we, which
            // keeps newer peers (remote-heads gossip, future types) connected.
            Message::Other { message_type } => {
                tracing::debug!(%connection, message_type, "ignoring message type");
            }
        }
    }

    fn establish(&mut self, peer: PeerInfo) {
        let connection = peer.connection;
        self.connections
            .insert(connection, Connection::Established(peer.clone()));
        let use_digest = self.config.reconnect_digest && peer.metadata.digest;
        let use_sketch = use_digest && self.config.reconnect_sketch && peer.metadata.sketch;
        let storage_id = peer.durable_storage_id().cloned();
        self.effects.push(Effect::PeerJoined(peer));
        if self.config.role == Role::Relay
            && use_digest
            && let Some(storage_id) = storage_id.clone()
        {
            self.prefetch_peer_index(connection, storage_id);
        }
        if self.config.role == Role::Device {
            // A device offers everything it holds, like an automerge-repo client; with a peer
            // that answers digests, only what the digest cannot cover (documents without heads).
            let mut held = BTreeMap::new();
            let mut changed = 0u64;
            let ids: Vec<DocumentId> = self.documents.keys().copied().collect();
            for id in ids {
                let Some(heads) = self.documents.get(&id).and_then(HotDocument::heads) else {
                    continue;
                };
                if use_digest && !heads.is_empty() {
                    if self.decide(connection, &id) != Access::None {
                        // Rehashes only if the heads moved without a flush (none should).
                        let hash = self
                            .held_index
                            .record(id, &heads)
                            .unwrap_or_else(|| digest::entry_hash(&id, &heads));
                        if use_sketch && self.changed_since_synced(&id, storage_id.as_ref(), &heads)
                        {
                            changed += 1;
                        }
                        held.insert(id, Held { heads, hash });
                    }
                    continue;
                }
                // Documents holding nothing are fetched as snapshots from a peer that serves them.
                if self.want(id, connection) {
                    continue;
                }
                self.offer(id, connection);
                self.flush(id);
            }
            if use_digest && !held.is_empty() {
                // The running total, less the documents not offered (loading, or not readable
                // by this peer).
                let mut total = self.held_index.total();
                for (document, entry) in self.held_index.iter() {
                    if !held.contains_key(document) {
                        total ^= entry.hash;
                    }
                }
                debug_assert_eq!(total, digest::total(held.values().map(|h| &h.hash)));
                let step = DigestStep::Offer {
                    count: held.len() as u64,
                    digest: total.to_be_bytes().to_vec(),
                    changed: use_sketch.then_some(changed),
                };
                self.digests.insert(connection, DigestState::Offered(held));
                self.send_digest(connection, step);
            }
        }
    }

    // ---- the reconnect digest ---------------------------------------------------------------

    fn send_digest(&mut self, connection: ConnectionId, step: DigestStep) {
        let Some(peer) = self.connections.get(&connection).and_then(Connection::peer) else {
            return;
        };
        let message = Message::Digest {
            sender_id: self.config.peer_id.clone(),
            target_id: peer.peer_id.clone(),
            step,
        };
        self.send(connection, &message);
    }

    fn receive_digest(&mut self, connection: ConnectionId, step: DigestStep) {
        if !self.config.reconnect_digest {
            // We never advertised it; a peer sending it anyway is ignored like any unknown type.
            return;
        }
        match (self.config.role, step) {
            (
                Role::Relay,
                DigestStep::Offer {
                    count,
                    digest,
                    changed,
                },
            ) => {
                let Some(peer) = self.connections.get(&connection).and_then(Connection::peer)
                else {
                    return;
                };
                let storage_id = peer.durable_storage_id().cloned();
                // Only a peer that advertised the sketch gets one.
                let changed = changed.filter(|_| peer.metadata.sketch);
                self.digests.insert(
                    connection,
                    DigestState::Loading {
                        count,
                        digest,
                        changed,
                    },
                );
                match storage_id {
                    // Answered from memory: no read, no hashing (see `sync::peer_index`).
                    Some(storage_id) if self.peer_indexes.touch(&storage_id) => {
                        let ours = match self.peer_indexes.get(&storage_id) {
                            Some(index) => self.readable_entries(connection, &index.entries),
                            None => HashMap::new(),
                        };
                        self.answer_offer(connection, ours);
                    }
                    // Read since the handshake: answered when it arrives.
                    Some(_) if self.peer_indexes.is_filling(connection) => {}
                    Some(storage_id) => {
                        self.peer_indexes.start_fill(connection, storage_id.clone());
                        self.effects.push(Effect::LoadPeerIndex {
                            connection,
                            storage_id,
                        });
                    }
                    // Nothing is kept for a peer without storage: everything it holds differs.
                    None => self.peer_index_loaded(connection, Vec::new()),
                }
            }
            (Role::Relay, DigestStep::Entries(bytes)) => {
                let Some(DigestState::Answered(ours)) = self.digests.remove(&connection) else {
                    return;
                };
                let Some(entries) = digest::decode_entries(&bytes) else {
                    return self.fail(connection, "malformed digest entries");
                };
                let mut differ = Vec::new();
                let mut listed = HashSet::new();
                let mut touched_buckets = HashSet::new();
                let buckets = digest::bucket_count(ours.len().max(1));
                for (document, hash) in entries {
                    listed.insert(document);
                    touched_buckets.insert(digest::bucket_of(&document, buckets));
                    if ours.get(&document).map(|h| digest::short(*h)) != Some(hash) {
                        differ.extend_from_slice(document.as_bytes());
                    }
                }
                let differing: HashSet<DocumentId> = digest::decode_ids(&differ)
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                // Equal: every document of ours in a bucket the device did not list (its bucket
                // digest matched), and the listed ones whose hash matched.
                let equal: HashMap<DocumentId, u128> = ours
                    .into_iter()
                    .filter(|(document, _)| {
                        if listed.contains(document) {
                            !differing.contains(document)
                        } else {
                            !touched_buckets.contains(&digest::bucket_of(document, buckets))
                        }
                    })
                    .collect();
                // Added to what the connection holds already (fetched snapshots).
                self.subscribed.entry(connection).or_default().extend(equal);
                // Speak first about the differing documents instead of waiting for the device's
                // offer: our messages (heads and have) go out before `differ`, so the device's
                // next flight answers them, which saves a round trip (see `sync::digest`). Past
                // `MAX_RELAY_STARTS` or the per-connection session limit, the rest is left to the
                // device's offers, which get the usual answer.
                let room = self
                    .config
                    .limits
                    .max_documents_per_connection
                    .saturating_sub(self.session_count(connection));
                let mut differing: Vec<DocumentId> = differing.into_iter().collect();
                differing.sort();
                let mut loading = HashSet::new();
                let mut ready = Vec::new();
                for document in differing
                    .into_iter()
                    .take(room.min(digest::MAX_RELAY_STARTS))
                {
                    match self.prepare_digest_session(connection, document) {
                        Some(true) => ready.push(document),
                        Some(false) => {
                            loading.insert(document);
                        }
                        None => {}
                    }
                }
                self.digests.insert(
                    connection,
                    DigestState::Starting {
                        differ,
                        loading,
                        ready,
                    },
                );
                self.start_digest_sessions(connection);
            }
            (Role::Relay, DigestStep::Decoded(bytes)) => {
                let Some(DigestState::Sketched { ours, cells }) = self.digests.remove(&connection)
                else {
                    return;
                };
                // A sketch of `cells` cells never decodes to more documents than that: checked
                // before anything is allocated for them.
                if bytes.len() / digest::ID_BYTES > cells {
                    return self.fail(
                        connection,
                        "more differing documents than the digest sketch could hold",
                    );
                }
                let Some(ids) = digest::decode_ids(&bytes) else {
                    return self.fail(connection, "malformed differing document ids");
                };
                let differing: HashSet<DocumentId> = ids.into_iter().collect();
                // Every other entry is equal; the device syncs the differing ones it holds.
                let equal: HashMap<DocumentId, u128> = ours
                    .into_iter()
                    .filter(|(document, _)| !differing.contains(document))
                    .collect();
                self.subscribed.entry(connection).or_default().extend(equal);
                self.digests.insert(connection, DigestState::Done);
            }
            (Role::Relay, DigestStep::Undecodable) => {
                let Some(DigestState::Sketched { ours, .. }) = self.digests.remove(&connection)
                else {
                    return;
                };
                self.answer_with_buckets(connection, ours);
            }
            (
                Role::Device,
                DigestStep::Sketch {
                    count,
                    total,
                    seed,
                    cells,
                },
            ) => {
                let Some(DigestState::Offered(held)) = self.digests.remove(&connection) else {
                    return;
                };
                let theirs = match Sketch::decode(seed, &cells) {
                    Ok(theirs) => theirs,
                    Err(e) => {
                        return self.fail(connection, &format!("malformed digest sketch: {e}"));
                    }
                };
                let Ok(total) = <[u8; 16]>::try_from(total.as_slice()) else {
                    return self.fail(connection, "malformed digest sketch: a total of 16 bytes");
                };
                let total = u128::from_be_bytes(total);
                let Some(differing) = digest::reconcile(&held, &theirs, count, total) else {
                    // Rare (see `sync::sketch`): the bucket exchange follows, one round trip more.
                    self.digest_outcomes.undecodable += 1;
                    self.digests.insert(connection, DigestState::Offered(held));
                    self.send_digest(connection, DigestStep::Undecodable);
                    return;
                };
                self.digest_outcomes.decoded += 1;
                let ids: Vec<u8> = differing.iter().flat_map(|d| *d.as_bytes()).collect();
                let to_sync = self.agree_except(connection, held, |d| differing.contains(d));
                self.send_digest(connection, DigestStep::Decoded(ids));
                // We know exactly what differs, so we offer it at once: the relay's answer
                // carries the changes we lack, and our next message the ones it lacks.
                self.offer_differing(connection, to_sync);
            }
            (Role::Device, DigestStep::Match) => {
                let Some(DigestState::Offered(held)) = self.digests.remove(&connection) else {
                    return;
                };
                self.digest_outcomes.matched += 1;
                let agreed = held.into_iter().map(|(d, h)| (d, h.heads)).collect();
                self.digests.insert(connection, DigestState::Agreed(agreed));
            }
            (Role::Device, DigestStep::Buckets(bytes)) => {
                let Some(DigestState::Offered(held)) = self.digests.remove(&connection) else {
                    return;
                };
                let Some(theirs) = digest::decode_buckets(&bytes) else {
                    return self.fail(connection, "malformed digest buckets");
                };
                self.digest_outcomes.bucketed += 1;
                let entries = digest::differing_entries(&held, &theirs);
                self.digests
                    .insert(connection, DigestState::Narrowing(held));
                self.send_digest(connection, DigestStep::Entries(entries));
            }
            (Role::Device, DigestStep::Differ(bytes)) => {
                let Some(DigestState::Narrowing(held)) = self.digests.remove(&connection) else {
                    return;
                };
                let Some(ids) = digest::decode_ids(&bytes) else {
                    return self.fail(connection, "malformed digest answer");
                };
                let differing: HashSet<DocumentId> = ids.into_iter().collect();
                let to_sync = self.agree_except(connection, held, |d| differing.contains(d));
                self.offer_differing(connection, to_sync);
            }
            (role, step) => {
                tracing::debug!(%connection, ?role, ?step, "ignoring an unexpected digest step");
            }
        }
    }

    /// Device: the digest exchange is over; every held document but the differing ones is
    /// agreed at the heads it was offered at. Returns the differing ones.
    fn agree_except(
        &mut self,
        connection: ConnectionId,
        held: BTreeMap<DocumentId, Held>,
        differs: impl Fn(&DocumentId) -> bool,
    ) -> Vec<DocumentId> {
        let mut agreed = HashMap::new();
        let mut to_sync = Vec::new();
        for (document, held) in held {
            if differs(&document) {
                to_sync.push(document);
            } else {
                agreed.insert(document, held.heads);
            }
        }
        self.digests.insert(connection, DigestState::Agreed(agreed));
        to_sync
    }

    /// Device: offers the documents the digest found differing that it holds (loaded, or a
    /// fetched snapshot kept unloaded, which the offer loads). After a sketch the relay starts
    /// none of them itself, so skipping an unloaded snapshot would leave it unsynced.
    fn offer_differing(&mut self, connection: ConnectionId, documents: Vec<DocumentId>) {
        for document in documents {
            if self
                .documents
                .get(&document)
                .is_some_and(|d| !d.is_loading())
            {
                self.offer(document, connection);
                self.flush(document);
            }
        }
    }

    /// Relay: gets a document the digest found differing with the device on `connection` ready
    /// for us to start its sync: `Some(true)` if it is loaded, `Some(false)` if it is loading
    /// now. Documents the peer may not read (`None`) are left to the device's own offer, which
    /// gets the same answer as for an absent document.
    fn prepare_digest_session(
        &mut self,
        connection: ConnectionId,
        document: DocumentId,
    ) -> Option<bool> {
        if self.decide(connection, &document) == Access::None {
            return None;
        }
        match self.documents.get_mut(&document) {
            Some(hot) if !hot.is_loading() => Some(true),
            Some(hot) => {
                hot.start_sessions.push(connection);
                Some(false)
            }
            None => {
                let mut hot = HotDocument::loading();
                hot.start_sessions.push(connection);
                self.documents.insert(document, hot);
                self.effects.push(Effect::LoadDocument { document });
                Some(false)
            }
        }
    }

    /// Relay: a document prepared for the digest exchanges in `connections` loaded (`loaded`)
    /// or failed to.
    fn digest_start_settled(
        &mut self,
        document: DocumentId,
        connections: &[ConnectionId],
        loaded: bool,
    ) {
        for connection in connections {
            let Some(DigestState::Starting { loading, ready, .. }) =
                self.digests.get_mut(connection)
            else {
                continue;
            };
            if loading.remove(&document) && loaded {
                ready.push(document);
            }
            self.start_digest_sessions(*connection);
        }
    }

    /// Relay: once nothing it prepared is loading, sends our first sync message for every
    /// prepared document, then `differ`.
    fn start_digest_sessions(&mut self, connection: ConnectionId) {
        match self.digests.get(&connection) {
            Some(DigestState::Starting { loading, .. }) if loading.is_empty() => {}
            _ => return,
        }
        let Some(DigestState::Starting { differ, ready, .. }) =
            self.digests.insert(connection, DigestState::Done)
        else {
            return;
        };
        for document in ready {
            let access = self.decide(connection, &document);
            if access != Access::None {
                self.ensure_session(document, connection, access);
                self.flush(document);
            }
        }
        self.send_digest(connection, DigestStep::Differ(differ));
    }

    /// The driver's answer to [`Effect::LoadPeerIndex`]: the documents synced with the peer on
    /// `connection` before, at the heads storage has committed. Documents the peer may not read
    /// are left out, so the answer reveals nothing about them. The index is kept in memory for
    /// the peer's next reconnect if nothing that moved while it was read leaves a doubt.
    pub fn peer_index_loaded(
        &mut self,
        connection: ConnectionId,
        index: Vec<(DocumentId, Vec<ChangeHash>)>,
    ) {
        let fill = self.peer_indexes.take_fill(connection);
        let offered = matches!(
            self.digests.get(&connection),
            Some(DigestState::Loading { .. })
        );
        if !offered && fill.is_none() {
            return;
        }
        let mut entries = HashMap::new();
        for (document, stored_heads) in index {
            // A hot document with nothing waiting for a commit is exactly what storage holds,
            // and may be newer than what the driver read.
            let heads = self.committed_heads(&document).unwrap_or(stored_heads);
            if !heads.is_empty() {
                entries.insert(document, digest::entry_hash(&document, &heads));
            }
        }
        if let Some(fill) = fill {
            // Sync states saved but perhaps not yet written when storage was read.
            for (document, hot) in &self.documents {
                if hot.saved_states.contains_key(&fill.storage_id)
                    && !entries.contains_key(document)
                    && let Some(heads) = self.committed_heads(document)
                    && !heads.is_empty()
                {
                    entries.insert(*document, digest::entry_hash(document, &heads));
                }
            }
            // A document that moved during the read and whose committed heads are not in memory
            // may have been read before it moved: it is left out (the device syncs it), and the
            // index is not kept.
            let mut exact = true;
            for document in &fill.moved {
                if self.committed_heads(document).is_none() {
                    entries.remove(document);
                    exact = false;
                }
            }
            if exact {
                self.peer_indexes.insert(fill.storage_id, entries.clone());
            }
        }
        if offered {
            let ours = self.readable_entries(connection, &entries);
            self.answer_offer(connection, ours);
        }
    }

    /// The driver could not read the index asked for by [`Effect::LoadPeerIndex`]: every document
    /// the peer holds counts as different, and nothing is kept.
    pub fn peer_index_failed(&mut self, connection: ConnectionId) {
        self.peer_indexes.take_fill(connection);
        self.answer_offer(connection, HashMap::new());
    }

    /// Relay: a peer that speaks the digest joined. Unless its index is cached, it is read now,
    /// before its `offer` (which follows the handshake at once, so this costs no time): a device
    /// that held nothing when it connected offers nothing, and its next reconnect is then answered
    /// from memory too, its index having been kept as its documents were synced.
    fn prefetch_peer_index(&mut self, connection: ConnectionId, storage_id: StorageId) {
        if !self.peer_indexes.is_enabled() || self.peer_indexes.touch(&storage_id) {
            return;
        }
        self.peer_indexes.start_fill(connection, storage_id.clone());
        self.effects.push(Effect::LoadPeerIndex {
            connection,
            storage_id,
        });
    }

    /// The entries of an index for documents the peer on `connection` may read.
    fn readable_entries(
        &self,
        connection: ConnectionId,
        entries: &HashMap<DocumentId, u128>,
    ) -> HashMap<DocumentId, u128> {
        entries
            .iter()
            .filter(|(document, _)| self.decide(connection, document) != Access::None)
            .map(|(document, hash)| (*document, *hash))
            .collect()
    }

    /// Relay: answers the device's `offer` on `connection` with our entries for it: `match`, a
    /// sketch sized to the expected difference, or our bucket digests.
    fn answer_offer(&mut self, connection: ConnectionId, ours: HashMap<DocumentId, u128>) {
        let Some(DigestState::Loading {
            count,
            digest,
            changed,
        }) = self.digests.remove(&connection)
        else {
            return;
        };
        let total = digest::total(ours.values());
        if ours.len() as u64 == count && digest == total.to_be_bytes() {
            self.subscribed.entry(connection).or_default().extend(ours);
            self.digests.insert(connection, DigestState::Done);
            self.send_digest(connection, DigestStep::Match);
            return;
        }
        // The expected difference: the documents the device changed since it last synced them
        // with us, and those whose entry moved here since its last settled connection (unknown
        // for an index read from storage since: then the buckets).
        let moved = self
            .connections
            .get(&connection)
            .and_then(Connection::peer)
            .and_then(PeerInfo::durable_storage_id)
            .and_then(|storage_id| self.peer_indexes.get(storage_id))
            .and_then(|index| index.moved());
        let cells = match (changed, moved) {
            (Some(changed), Some(moved)) => {
                // A document changed on both sides is two pairs (old and new hash); no more
                // pairs can differ than both sides hold.
                let pairs = (changed as usize)
                    .saturating_add(moved)
                    .saturating_mul(2)
                    .min((count as usize).saturating_add(ours.len()));
                // Past what the bucket exchange costs when every entry is listed (a device
                // that kept no sync state with us counts all it holds as changed), buckets.
                let buckets = digest::bucket_count(ours.len().max(1));
                let listed = (digest::ID_BYTES + digest::HASH_BYTES)
                    .saturating_mul(count as usize)
                    .saturating_add(digest::HASH_BYTES * buckets);
                Some(sketch::cells_for(pairs)).filter(|cells| {
                    *cells <= sketch::MAX_CELLS
                        && cells.saturating_mul(sketch::CELL_BYTES) <= listed
                })
            }
            _ => None,
        };
        #[cfg(test)]
        let cells = cells.map(|cells| self.sketch_cells.unwrap_or(cells));
        let Some(cells) = cells else {
            return self.answer_with_buckets(connection, ours);
        };
        self.sketches += 1;
        let seed = digest::sketch_seed(total, &digest, self.sketches);
        let mut table = Sketch::new(seed, cells);
        for (document, hash) in &ours {
            table.insert(document, digest::short(*hash));
        }
        let step = DigestStep::Sketch {
            count: ours.len() as u64,
            total: total.to_be_bytes().to_vec(),
            seed,
            cells: table.encode(),
        };
        self.digests.insert(
            connection,
            DigestState::Sketched {
                ours,
                cells: table.len(),
            },
        );
        self.send_digest(connection, step);
    }

    /// Relay: answers with our bucket digests (to a device without the sketch, when the
    /// difference cannot be estimated, or after a sketch that did not decode).
    fn answer_with_buckets(&mut self, connection: ConnectionId, ours: HashMap<DocumentId, u128>) {
        let buckets = digest::bucket_count(ours.len().max(1));
        let encoded = digest::encode_buckets(ours.iter(), buckets);
        self.digests.insert(connection, DigestState::Answered(ours));
        self.send_digest(connection, DigestStep::Buckets(encoded));
    }

    /// Device: whether the document's `heads` differ from those it last synced with the peer
    /// whose storage id is `storage_id` (the saved sync state's shared heads): one of the
    /// documents the reconnect digest expects to differ on our side.
    fn changed_since_synced(
        &self,
        document: &DocumentId,
        storage_id: Option<&StorageId>,
        heads: &[ChangeHash],
    ) -> bool {
        let Some(saved) = storage_id
            .and_then(|s| self.documents.get(document)?.saved_states.get(s))
            .and_then(|bytes| sync::State::decode(bytes).ok())
        else {
            return true;
        };
        let mut shared = saved.shared_heads;
        shared.sort();
        let mut ours = heads.to_vec();
        ours.sort();
        shared != ours
    }

    /// Relay: the heads storage has committed for a document, if memory knows them: loaded,
    /// with nothing waiting for a commit.
    fn committed_heads(&self, document: &DocumentId) -> Option<Vec<ChangeHash>> {
        let hot = self.documents.get(document)?;
        if !hot.pending.is_empty() {
            return None;
        }
        hot.heads()
    }

    /// Relay: the committed heads of a document moved (or may have): cached peer indexes holding
    /// it follow, or are dropped if memory does not know them.
    fn index_moved(&mut self, document: DocumentId, committed: Option<&[ChangeHash]>) {
        if self.config.role != Role::Relay || self.peer_indexes.is_idle() {
            return;
        }
        self.peer_indexes.note_moved(document);
        if !self.peer_indexes.is_held(&document) {
            return;
        }
        match committed {
            Some(heads) if !heads.is_empty() => {
                let hash = digest::entry_hash(&document, heads);
                self.peer_indexes.committed(document, hash);
            }
            _ => self.peer_indexes.forget_document(&document),
        }
    }

    /// Relay: a sync state of the document is being saved for `storage_id`: the peer's cached
    /// index holds the document from now on, at its committed heads.
    pub(super) fn index_synced(&mut self, document: DocumentId, storage_id: &StorageId) {
        if self.config.role != Role::Relay || self.peer_indexes.is_idle() {
            return;
        }
        self.peer_indexes.note_moved(document);
        if self.peer_indexes.get(storage_id).is_none() {
            return;
        }
        match self.committed_heads(&document) {
            // Nothing stored yet: no entry, as storage's index would have none.
            Some(heads) if heads.is_empty() => {}
            Some(heads) => {
                let hash = digest::entry_hash(&document, &heads);
                self.peer_indexes.synced(document, storage_id, hash);
            }
            None => self.peer_indexes.remove(storage_id),
        }
    }

    /// How many peers' digest indexes are held in memory.
    pub fn cached_peer_indexes(&self) -> usize {
        self.peer_indexes.len()
    }

    /// Device: how its reconnect digests ended so far.
    pub fn digest_outcomes(&self) -> DigestOutcomes {
        self.digest_outcomes
    }

    /// Relay: connections found holding the document at heads it has since moved from get a
    /// session for it now.
    fn open_subscribed(&mut self, document: DocumentId) {
        if self.subscribed.is_empty() {
            return;
        }
        let Some(heads) = self.heads(&document) else {
            return;
        };
        let mut hash = None;
        let mut moved = Vec::new();
        for (connection, documents) in &mut self.subscribed {
            if let Some(agreed) = documents.get(&document) {
                let now = *hash.get_or_insert_with(|| digest::entry_hash(&document, &heads));
                if now != *agreed {
                    documents.remove(&document);
                    moved.push(*connection);
                }
            }
        }
        for connection in moved {
            let access = self.decide(connection, &document);
            if access != Access::None {
                self.ensure_session(document, connection, access);
            }
        }
    }

    // ---- documents --------------------------------------------------------------------------

    /// Make a stored document hot: the engine asks the driver to load it. A device then offers
    /// it to its peers; if neither storage nor any peer has it, [`Effect::DocumentUnavailable`].
    pub fn open_document(&mut self, document: DocumentId) {
        if let Some(hot) = self.documents.get_mut(&document) {
            hot.wanted_locally = true;
            return;
        }
        let mut hot = HotDocument::loading();
        hot.wanted_locally = true;
        self.documents.insert(document, hot);
        self.effects.push(Effect::LoadDocument { document });
    }

    /// The driver's answer to [`Effect::LoadDocument`]. A stored document that automerge cannot
    /// load is reported as [`Error::Corrupt`]; peers waiting for it are told it is unavailable.
    pub fn document_loaded(&mut self, document: DocumentId, stored: StoredDocument) -> Result<()> {
        let Some(hot) = self.documents.get_mut(&document) else {
            return Ok(());
        };
        if !hot.is_loading() {
            return Ok(());
        }
        let doc = match stored.bytes {
            None => Automerge::new(),
            Some(bytes) => match catch_unwind(|| Automerge::load(&bytes)) {
                Ok(Ok(doc)) => doc,
                failure => {
                    let reason = match failure {
                        Ok(Err(e)) => e.to_string(),
                        _ => "automerge panicked while loading".to_owned(),
                    };
                    self.document_load_failed(document);
                    return Err(Error::Corrupt { document, reason });
                }
            },
        };
        hot.doc = Some(compact(doc));
        hot.saved_states = stored.sync_states.into_iter().collect();
        let queued = std::mem::take(&mut hot.queued);
        let resume = std::mem::take(&mut hot.resume_sessions);
        let start = std::mem::take(&mut hot.start_sessions);
        for connection in resume {
            let access = self.decide(connection, &document);
            if access != Access::None {
                self.ensure_session(document, connection, access);
                if let Some(session) = self
                    .documents
                    .get_mut(&document)
                    .and_then(|hot| hot.sessions.get_mut(&connection))
                {
                    session.state.needs_reset = true;
                }
            }
        }
        for input in queued {
            if self.connections.contains_key(&input.connection) {
                self.apply_sync(document, input);
            }
        }
        if self.config.role == Role::Device {
            let connections: Vec<ConnectionId> = self.peers().map(|p| p.connection).collect();
            for connection in connections {
                if !self.want(document, connection) {
                    self.offer(document, connection);
                }
            }
        }
        self.report_if_unavailable(document);
        self.flush(document);
        self.digest_start_settled(document, &start, true);
        self.fetch_document_settled(document);
        Ok(())
    }

    /// The driver could not read the document (storage error). Peers waiting for it hear
    /// `doc-unavailable`; the document is no longer hot.
    pub fn document_load_failed(&mut self, document: DocumentId) {
        let Some(hot) = self.documents.remove(&document) else {
            return;
        };
        self.held_index.remove(&document);
        self.digest_start_settled(document, &hot.start_sessions, false);
        self.fetch_document_settled(document);
        for input in hot.queued {
            self.send_unavailable(input.connection, document);
        }
        if hot.wanted_locally {
            self.effects.push(Effect::DocumentUnavailable { document });
        }
    }

    /// Creates a new document, lets `init` fill it, and persists it. It is offered to peers (on a
    /// device) once persisted.
    pub fn create_document<R>(
        &mut self,
        document: DocumentId,
        init: impl FnOnce(&mut Automerge) -> R,
    ) -> Result<R> {
        if self.documents.contains_key(&document) {
            return Err(Error::invalid(format!(
                "document {document} already exists"
            )));
        }
        let hot = HotDocument {
            doc: Some(Automerge::new()),
            ..HotDocument::default()
        };
        self.documents.insert(document, hot);
        let result = self.local_change(document, init)?;
        if self.config.role == Role::Device {
            let connections: Vec<ConnectionId> = self.peers().map(|p| p.connection).collect();
            for connection in connections {
                self.offer(document, connection);
            }
        }
        self.flush(document);
        Ok(result)
    }

    /// Applies a local edit to a hot document. New changes are persisted (an [`Effect::Persist`])
    /// and reach peers only after [`SyncEngine::persisted`].
    pub fn local_change<R>(
        &mut self,
        document: DocumentId,
        edit: impl FnOnce(&mut Automerge) -> R,
    ) -> Result<R> {
        self.loaded(document);
        let doc = self
            .documents
            .get_mut(&document)
            .and_then(|hot| hot.doc.as_mut())
            .ok_or_else(|| Error::not_found(format!("document {document} is not open")))?;
        let before = doc.get_heads();
        let result = edit(doc);
        let after = doc.get_heads();
        if before != after {
            let changes = doc.save_after(&before);
            self.persist(document, changes, None);
            self.offer_to_peers(document);
        }
        self.flush(document);
        Ok(result)
    }

    /// Applies changes the driver has already made durable (written by another relay process, or
    /// by the device's own store) and syncs them to peers without another persist.
    pub fn apply_stored_changes(&mut self, document: DocumentId, changes: &[u8]) -> Result<()> {
        self.loaded(document);
        let doc = self
            .documents
            .get_mut(&document)
            .and_then(|hot| hot.doc.as_mut())
            .ok_or_else(|| Error::not_found(format!("document {document} is not open")))?;
        match catch_unwind(AssertUnwindSafe(|| doc.load_incremental(changes))) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(Error::malformed(e.to_string())),
            Err(_) => {
                self.reload_document(document);
                return Err(Error::malformed("automerge panicked on stored changes"));
            }
        }
        // Stored by someone else: which heads storage holds now is not ours to tell.
        self.index_moved(document, None);
        self.offer_to_peers(document);
        self.flush(document);
        Ok(())
    }

    /// The driver committed the changes of [`Effect::Persist`] `ticket`. Held-back sync messages
    /// for that document go out once no persist for it is outstanding.
    pub fn persisted(&mut self, ticket: PersistTicket) {
        let heads = self.ticket_heads.remove(&ticket);
        if let (Some(heads), Some(document)) = (heads, self.tickets.get(&ticket).copied()) {
            // Storage holds these heads now, even while later persists are outstanding.
            self.index_moved(document, Some(&heads));
        }
        self.snapshot_persisted(ticket);
        let Some(document) = self.tickets.remove(&ticket) else {
            return;
        };
        let Some(hot) = self.documents.get_mut(&document) else {
            return;
        };
        if let Some(Some(changes)) = hot.pending.remove(&ticket) {
            self.effects
                .push(Effect::DocumentChanged { document, changes });
        }
        self.flush(document);
    }

    /// The driver could not commit [`Effect::Persist`] `ticket` (disk full, ...). The in-memory
    /// document holds changes storage does not, so it is dropped and reloaded from storage; peers
    /// resync and resend what was lost.
    pub fn persist_failed(&mut self, ticket: PersistTicket) {
        self.ticket_heads.remove(&ticket);
        self.snapshot_persist_failed(ticket);
        if let Some(document) = self.tickets.remove(&ticket) {
            self.reload_document(document);
        }
    }

    /// Drops a hot document from memory; it is loaded again from storage when a peer or the
    /// driver next needs it. Refused (false) unless it is cold (see
    /// [`SyncEngine::cold_documents`]): never while it loads, has inputs waiting, has a persist
    /// not yet confirmed (memory would be the only copy of those changes the engine answers
    /// from), or a peer is syncing it (that peer would stop hearing about new changes).
    pub fn evict(&mut self, document: DocumentId) -> bool {
        match self.documents.get(&document) {
            Some(hot) if hot.is_cold() => {
                self.documents.remove(&document);
                self.held_index.remove(&document);
                true
            }
            _ => false,
        }
    }

    /// The hot documents [`SyncEngine::evict`] would drop: loaded, nothing pending or queued, no
    /// peer session, not opened by the driver itself.
    pub fn cold_documents(&self) -> impl Iterator<Item = DocumentId> + '_ {
        self.documents
            .iter()
            .filter(|(_, hot)| hot.is_cold())
            .map(|(id, _)| *id)
    }

    /// The document's heads once the changes of an outstanding [`Effect::Persist`] are applied:
    /// what storage holds once it commits them (and every persist before them).
    pub fn persist_heads(&self, ticket: PersistTicket) -> Option<&[ChangeHash]> {
        self.ticket_heads.get(&ticket).map(Vec::as_slice)
    }

    /// A hot document, if loaded. A fetched snapshot the engine stored without loading it (see
    /// `sync::fetch`) is not loaded until something needs its content: [`SyncEngine::heads`]
    /// and [`SyncEngine::save_document`] answer for it, this does not.
    pub fn document(&self, document: &DocumentId) -> Option<&Automerge> {
        self.documents.get(document)?.doc.as_ref()
    }

    pub fn heads(&self, document: &DocumentId) -> Option<Vec<ChangeHash>> {
        self.documents.get(document)?.heads()
    }

    /// The heads the peer on `connection` last advertised for the document (the sync state's
    /// `their_heads`), or `None` before it said anything about it. A peer that stores before it
    /// answers (the relay) holds at least these changes durably.
    pub fn peer_heads(
        &self,
        document: &DocumentId,
        connection: ConnectionId,
    ) -> Option<Vec<ChangeHash>> {
        let hot = self.documents.get(document)?;
        match hot.sessions.get(&connection) {
            Some(session) => session.state.their_heads.clone(),
            None if self.fetched_heads(document, connection).is_some() => {
                self.fetched_heads(document, connection).cloned()
            }
            None => match self.digests.get(&connection) {
                Some(DigestState::Agreed(agreed)) => agreed.get(document).cloned(),
                _ => None,
            },
        }
    }

    /// Whether the exchange about the document with `connection` has settled: nothing is loading,
    /// queued or waiting to be persisted, and the peer either advertised exactly our heads or told
    /// us it does not have the document. A document that is not hot is settled.
    pub fn in_sync_with(&self, document: &DocumentId, connection: ConnectionId) -> bool {
        let Some(hot) = self.documents.get(document) else {
            return true;
        };
        let Some(mut ours) = hot.heads() else {
            return false;
        };
        ours.sort();
        if !hot.pending.is_empty() || !hot.queued.is_empty() {
            return false;
        }
        let Some(session) = hot.sessions.get(&connection) else {
            // Asked for as a snapshot and not yet stored: not settled.
            if self.fetch_awaits(document, connection) {
                return false;
            }
            // The peer sent us this document's snapshot at these heads.
            if let Some(heads) = self.fetched_heads(document, connection) {
                let mut theirs = heads.clone();
                theirs.sort();
                return ours == theirs;
            }
            // Without a session, the digest exchange says whether the peer holds our heads.
            return match self.digests.get(&connection) {
                Some(DigestState::Offered(held) | DigestState::Narrowing(held)) => {
                    !held.contains_key(document)
                }
                Some(DigestState::Agreed(agreed)) => agreed.get(document).is_none_or(|heads| {
                    let mut theirs = heads.clone();
                    theirs.sort();
                    ours == theirs
                }),
                _ => true,
            };
        };
        if session.status == PeerStatus::Unavailable {
            return true;
        }
        match session.state.their_heads.as_ref() {
            Some(theirs) => {
                let mut theirs = theirs.clone();
                theirs.sort();
                theirs == ours
            }
            None => false,
        }
    }

    /// The documents the engine holds in memory (loaded or loading).
    pub fn hot_documents(&self) -> impl Iterator<Item = DocumentId> + '_ {
        self.documents.keys().copied()
    }

    /// How many documents are in memory (loaded or loading).
    pub fn hot_document_count(&self) -> usize {
        self.documents.len()
    }

    /// The whole document in automerge's compact form.
    pub fn save_document(&self, document: &DocumentId) -> Option<Vec<u8>> {
        let hot = self.documents.get(document)?;
        match (&hot.doc, &hot.snapshot) {
            (Some(doc), _) => Some(doc.save()),
            (None, Some(snapshot)) => Some(snapshot.bytes.clone()),
            (None, None) => None,
        }
    }

    /// Sends application data about a document to every peer syncing it; never stored.
    pub fn broadcast_ephemeral(&mut self, document: DocumentId, data: Vec<u8>) {
        self.ephemeral_count += 1;
        let sender = self.config.peer_id.clone();
        let session = self.config.ephemeral_session_id.clone();
        let count = self.ephemeral_count;
        self.fan_out_ephemeral(document, None, sender, count, session, data);
    }

    // ---- incoming document messages ---------------------------------------------------------

    fn receive_sync(
        &mut self,
        connection: ConnectionId,
        document: DocumentId,
        data: Vec<u8>,
        is_request: bool,
    ) {
        let access = self.decide(connection, &document);
        if access == Access::None {
            // Answered exactly as an absent document would be.
            return self.phantom_sync(connection, document, data, is_request);
        }
        self.drop_phantoms(connection, Some(document));
        let input = Queued {
            connection,
            access,
            data,
            is_request,
        };
        match self.documents.get_mut(&document) {
            Some(hot) if !hot.is_loading() => self.apply_sync(document, input),
            Some(hot) => hot.queued.push(input),
            None => {
                let mut hot = HotDocument::loading();
                hot.queued.push(input);
                self.documents.insert(document, hot);
                self.effects.push(Effect::LoadDocument { document });
            }
        }
    }

    /// Applies one peer's sync message to a loaded document.
    fn apply_sync(&mut self, document: DocumentId, input: Queued) {
        if !self.loaded(document) {
            // Its stored snapshot did not load: the input waits for the reload from storage.
            if let Some(hot) = self.documents.get_mut(&document) {
                hot.queued.push(input);
            }
            return;
        }
        let Queued {
            connection,
            access,
            data,
            is_request,
        } = input;
        let is_new_session = self
            .documents
            .get(&document)
            .is_some_and(|hot| !hot.sessions.contains_key(&connection));
        if is_new_session
            && self.session_count(connection) >= self.config.limits.max_documents_per_connection
        {
            return self.fail(connection, "too many documents on one connection");
        }
        self.ensure_session(document, connection, access);
        let Some(hot) = self.documents.get_mut(&document) else {
            return;
        };
        let (Some(doc), Some(session)) = (hot.doc.as_mut(), hot.sessions.get_mut(&connection))
        else {
            return;
        };
        session.apply_access(access);
        if is_request && session.status == PeerStatus::Unknown {
            session.status = PeerStatus::Wants;
        }
        let message = match sync::Message::decode(&data) {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(%connection, %document, "undecodable sync message: {e}");
                self.reset_session(document, connection);
                return self.flush(document);
            }
        };
        if access == Access::ReadWrite && !message.changes.is_empty() {
            let verdict = match self.connections.get(&connection).and_then(Connection::peer) {
                Some(peer) => self.policy.accept_changes(peer, &document, doc, &message),
                None => Access::None,
            };
            match verdict {
                Access::ReadWrite => {}
                Access::Read => session.apply_access(Access::Read),
                Access::None => {
                    hot.sessions.remove(&connection);
                    return self.send_unavailable(connection, document);
                }
            }
        }
        if !message.heads.is_empty() {
            session.status = PeerStatus::Has;
        }
        let before = doc.get_heads();
        let received = new_change_chunks(doc, &message);
        #[cfg(test)]
        let inject_panic = std::mem::take(&mut self.panic_on_next_receive);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            #[cfg(test)]
            if inject_panic {
                panic!("injected automerge panic");
            }
            doc.receive_sync_message(&mut session.state, message)
        }));
        let mut received = received;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                received = None;
                tracing::warn!(%connection, %document, "automerge rejected a sync message: {e}");
                if doc.get_heads() == before {
                    self.reset_session(document, connection);
                    return self.flush(document);
                }
                // Some changes were valid and applied before the error: keep and persist them.
            }
            Err(_) => {
                // The document may be half-updated: rebuild it from storage, and restart this
                // peer's session from scratch.
                tracing::error!(%connection, %document, "automerge panicked on a sync message");
                self.reset_session(document, connection);
                return self.reload_document(document);
            }
        }
        let after = doc.get_heads();
        if before.is_empty() && !after.is_empty() {
            // The first message of a document is loaded whole, like a stored one.
            *doc = compact(std::mem::take(doc));
        }
        if after != before {
            // The message's own bytes for its new changes when all of them applied (nothing is
            // left waiting for a missing dependency); otherwise automerge rebuilds what is new
            // from the op set, a walk of the whole document.
            let changes = match received {
                Some(bytes) if doc.get_missing_deps(&[]).is_empty() => bytes,
                _ => doc.save_after(&before),
            };
            // Which paths moved is for an app's UI. Working it out (an Automerge diff) was about
            // 40% of the relay's cost per sync message, so the relay reports the new heads only.
            let paths = match self.config.role {
                Role::Device => changed_paths(doc, &before, &after),
                Role::Relay => ChangedPaths {
                    heads: after,
                    before,
                    ..ChangedPaths::default()
                },
            };
            self.persist(document, changes, Some(paths));
        }
        if is_request && self.answer_unavailable(document, connection) {
            return;
        }
        self.flush(document);
    }

    /// automerge-repo semantics for a `request` of a document we have no data for: unless another
    /// peer is supplying it, say so. The requester stays subscribed and gets the document if it
    /// arrives later.
    fn answer_unavailable(&mut self, document: DocumentId, connection: ConnectionId) -> bool {
        let Some(hot) = self.documents.get_mut(&document) else {
            return false;
        };
        let supplied = hot
            .sessions
            .iter()
            .any(|(c, s)| *c != connection && s.status == PeerStatus::Has);
        if !hot.is_empty() || supplied || !hot.pending.is_empty() {
            return false;
        }
        if let Some(session) = hot.sessions.get_mut(&connection) {
            session.status = PeerStatus::ToldUnavailable;
        }
        self.send_unavailable(connection, document);
        true
    }

    fn receive_unavailable(&mut self, connection: ConnectionId, document: DocumentId) {
        if let Some(session) = self
            .documents
            .get_mut(&document)
            .and_then(|hot| hot.sessions.get_mut(&connection))
        {
            session.status = PeerStatus::Unavailable;
        }
        self.report_if_unavailable(document);
    }

    /// Tells the driver a document it opened exists nowhere: not in storage, and every peer
    /// asked said no (or there is no peer to ask).
    fn report_if_unavailable(&mut self, document: DocumentId) {
        let Some(hot) = self.documents.get_mut(&document) else {
            return;
        };
        // Only peers can say a document does not exist. With none connected (a device offline,
        // or before its handshake) the document stays wanted and is asked for once one connects.
        let nobody_has_it = !hot.sessions.is_empty()
            && hot
                .sessions
                .values()
                .all(|s| s.status == PeerStatus::Unavailable);
        if hot.wanted_locally && !hot.is_loading() && hot.is_empty() && nobody_has_it {
            hot.wanted_locally = false;
            self.effects.push(Effect::DocumentUnavailable { document });
        }
    }

    fn receive_ephemeral(
        &mut self,
        connection: ConnectionId,
        document: DocumentId,
        sender: PeerId,
        count: u64,
        session: String,
        data: Vec<u8>,
    ) {
        let seen = self
            .ephemeral_seen
            .entry((sender.clone(), session.clone()))
            .or_insert(0);
        if count <= *seen && *seen != 0 {
            return;
        }
        *seen = count;
        // After the repeat check, so a denied document counts its messages as an absent one
        // does; nothing about it is passed on.
        if self.decide(connection, &document) == Access::None {
            return;
        }
        self.effects.push(Effect::EphemeralReceived {
            document,
            sender: sender.clone(),
            data: data.clone(),
        });
        self.fan_out_ephemeral(document, Some(connection), sender, count, session, data);
    }

    /// Sends an ephemeral message to every peer syncing the document, except where it came from.
    fn fan_out_ephemeral(
        &mut self,
        document: DocumentId,
        from: Option<ConnectionId>,
        sender: PeerId,
        count: u64,
        session: String,
        data: Vec<u8>,
    ) {
        let Some(hot) = self.documents.get(&document) else {
            return;
        };
        let targets: Vec<ConnectionId> = hot
            .sessions
            .keys()
            .copied()
            .filter(|c| Some(*c) != from)
            .collect();
        for target in targets {
            if self.decide(target, &document) == Access::None {
                continue;
            }
            let Some(peer) = self.connections.get(&target).and_then(Connection::peer) else {
                continue;
            };
            let message = Message::Ephemeral {
                sender_id: sender.clone(),
                target_id: peer.peer_id.clone(),
                count,
                session_id: session.clone(),
                document_id: document,
                data: data.clone(),
            };
            self.send(target, &message);
        }
    }

    // ---- the outgoing side ------------------------------------------------------------------

    /// Generates and sends whatever each peer syncing the document needs, and saves changed sync
    /// states. Does nothing while the document loads or has unconfirmed persists: that is the
    /// durability rule, nothing reflecting unpersisted changes leaves.
    fn flush(&mut self, document: DocumentId) {
        let Some(hot) = self.documents.get(&document) else {
            return;
        };
        if self.config.role == Role::Device
            && let Some(heads) = hot.heads()
        {
            self.held_index.record(document, &heads);
        }
        if hot.is_loading() || !hot.pending.is_empty() {
            return;
        }
        if self.config.role == Role::Relay {
            // Loaded with nothing waiting for a commit: storage holds exactly these heads.
            if !self.peer_indexes.is_idle() {
                let heads = self.heads(&document);
                self.index_moved(document, heads.as_deref());
            }
            self.open_subscribed(document);
            self.fetch_document_settled(document);
        }
        let Some(hot) = self.documents.get(&document) else {
            return;
        };
        let connections: Vec<ConnectionId> = hot.sessions.keys().copied().collect();
        // A session generates its messages from the document's content.
        if !connections.is_empty() && !self.loaded(document) {
            return;
        }
        for connection in connections {
            // The one place access is decided for outgoing messages: a revoked peer stops
            // hearing about the document at once.
            let access = self.decide(connection, &document);
            let Some(peer) = self.connections.get(&connection).and_then(Connection::peer) else {
                continue;
            };
            let peer = peer.clone();
            let Some(hot) = self.documents.get_mut(&document) else {
                return;
            };
            if access == Access::None {
                hot.sessions.remove(&connection);
                continue;
            }
            let empty = hot.is_empty();
            let (Some(doc), Some(session)) = (hot.doc.as_ref(), hot.sessions.get_mut(&connection))
            else {
                continue;
            };
            if empty && session.status == PeerStatus::ToldUnavailable {
                continue;
            }
            session.apply_access(access);
            session.advertise(&doc.get_heads());
            let generated = catch_unwind(AssertUnwindSafe(|| {
                doc.generate_sync_message(&mut session.state)
            }));
            let message = match generated {
                Ok(message) => message,
                Err(_) => {
                    tracing::error!(%connection, %document, "automerge panicked generating a message");
                    *session = PeerSession::restarted(None, access);
                    continue;
                }
            };
            let is_request = empty
                && session.state.shared_heads.is_empty()
                && session.status == PeerStatus::Unknown;
            let state_to_save = peer.durable_storage_id().and_then(|storage_id| {
                let encoded = session.state.encode();
                if hot.saved_states.get(storage_id) == Some(&encoded) {
                    None
                } else {
                    hot.saved_states.insert(storage_id.clone(), encoded.clone());
                    Some((storage_id.clone(), encoded))
                }
            });
            if let Some(message) = message {
                session.advertised = Some(message.heads.clone());
                let data = message.encode();
                let sender_id = self.config.peer_id.clone();
                let target_id = peer.peer_id.clone();
                let wire = Message::sync_data(is_request, sender_id, target_id, document, data);
                self.send(connection, &wire);
            }
            if let Some((storage_id, state)) = state_to_save {
                self.index_synced(document, &storage_id);
                self.effects.push(Effect::SaveSyncState {
                    document,
                    storage_id,
                    state,
                });
            }
        }
    }

    fn persist(
        &mut self,
        document: DocumentId,
        changes: Vec<u8>,
        paths: Option<ChangedPaths>,
    ) -> PersistTicket {
        self.next_ticket += 1;
        let ticket = PersistTicket(self.next_ticket);
        if let Some(hot) = self.documents.get_mut(&document) {
            hot.pending.insert(ticket, paths);
            if let Some(heads) = hot.heads() {
                self.ticket_heads.insert(ticket, heads);
            }
        }
        self.tickets.insert(ticket, document);
        self.effects.push(Effect::Persist {
            ticket,
            document,
            changes,
        });
        ticket
    }

    /// Makes sure a hot document's content is in memory: a fetched snapshot stored without
    /// loading is loaded now. False if the document is not hot, still loading, or its snapshot
    /// does not load (then it is dropped and loaded again from storage, whose refusal reaches
    /// the driver as [`Error::Corrupt`] from [`SyncEngine::document_loaded`]).
    pub(super) fn loaded(&mut self, document: DocumentId) -> bool {
        let Some(hot) = self.documents.get_mut(&document) else {
            return false;
        };
        if hot.doc.is_some() {
            return true;
        }
        let Some(snapshot) = hot.snapshot.take() else {
            return false;
        };
        match catch_unwind(|| Automerge::load(&snapshot.bytes)) {
            Ok(Ok(doc)) if doc.get_heads() == snapshot.heads => {
                hot.doc = Some(doc);
                true
            }
            failure => {
                let reason = match failure {
                    Ok(Ok(_)) => "its heads are not the ones its header names".to_owned(),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "automerge panicked".to_owned(),
                };
                tracing::error!(%document, "a stored snapshot does not load: {reason}");
                self.reload_document(document);
                false
            }
        }
    }

    /// Throws the in-memory document away and loads it again from storage, keeping the peers
    /// that were syncing it. Outstanding persists are forgotten: the driver still commits them,
    /// and (storage effects being ordered) the reload sees them.
    fn reload_document(&mut self, document: DocumentId) {
        let Some(old) = self.documents.remove(&document) else {
            return;
        };
        self.held_index.remove(&document);
        // Outstanding persists may still commit unseen: the committed heads are unknown until
        // the document is loaded again.
        self.index_moved(document, None);
        self.tickets.retain(|_, d| *d != document);
        let hot = HotDocument {
            wanted_locally: old.wanted_locally,
            resume_sessions: old.sessions.keys().copied().collect(),
            start_sessions: old.start_sessions,
            queued: old.queued,
            ..HotDocument::default()
        };
        self.documents.insert(document, hot);
        self.effects.push(Effect::LoadDocument { document });
    }

    /// Starts this peer's session for the document over, from nothing.
    fn reset_session(&mut self, document: DocumentId, connection: ConnectionId) {
        let access = self.decide(connection, &document);
        if let Some(session) = self
            .documents
            .get_mut(&document)
            .and_then(|hot| hot.sessions.get_mut(&connection))
        {
            *session = PeerSession::restarted(None, access);
        }
    }

    /// A device offers a document that changed to every peer: one found equal by the digest has
    /// no session for it yet.
    fn offer_to_peers(&mut self, document: DocumentId) {
        if self.config.role != Role::Device {
            return;
        }
        let connections: Vec<ConnectionId> = self.peers().map(|p| p.connection).collect();
        for connection in connections {
            self.offer(document, connection);
        }
    }

    /// A device offering a document to a peer: a session, unless the peer may not see it.
    fn offer(&mut self, document: DocumentId, connection: ConnectionId) {
        let access = self.decide(connection, &document);
        if access != Access::None {
            self.ensure_session(document, connection, access);
        }
    }

    fn ensure_session(&mut self, document: DocumentId, connection: ConnectionId, access: Access) {
        let Some(peer) = self.connections.get(&connection).and_then(Connection::peer) else {
            return;
        };
        let storage_id = peer.durable_storage_id().cloned();
        let Some(hot) = self.documents.get_mut(&document) else {
            return;
        };
        if !hot.sessions.contains_key(&connection) {
            let saved = storage_id.and_then(|s| hot.saved_states.get(&s));
            let session = PeerSession::new(saved, access);
            hot.sessions.insert(connection, session);
        }
    }

    fn session_count(&self, connection: ConnectionId) -> usize {
        self.documents
            .values()
            .filter(|hot| hot.sessions.contains_key(&connection))
            .count()
            + self.phantom_count(connection)
    }

    /// The single place where the access policy is consulted.
    fn decide(&self, connection: ConnectionId, document: &DocumentId) -> Access {
        match self.connections.get(&connection).and_then(Connection::peer) {
            Some(peer) => self.policy.access(peer, document),
            None => Access::None,
        }
    }

    fn send_unavailable(&mut self, connection: ConnectionId, document: DocumentId) {
        let Some(peer) = self.connections.get(&connection).and_then(Connection::peer) else {
            return;
        };
        let message = Message::DocUnavailable {
            sender_id: self.config.peer_id.clone(),
            target_id: peer.peer_id.clone(),
            document_id: document,
        };
        self.send(connection, &message);
    }

    fn send(&mut self, connection: ConnectionId, message: &Message) {
        self.effects.push(Effect::Send {
            connection,
            frame: message.encode(),
        });
    }

    /// Tells the peer what went wrong, then closes.
    fn fail(&mut self, connection: ConnectionId, reason: &str) {
        tracing::info!(%connection, reason, "closing connection on protocol error");
        let target_id = self
            .connections
            .get(&connection)
            .and_then(Connection::peer)
            .map(|p| p.peer_id.clone());
        let error = Message::Error {
            sender_id: Some(self.config.peer_id.clone()),
            target_id,
            message: reason.to_owned(),
        };
        self.send(connection, &error);
        self.close(connection, reason);
    }

    fn close(&mut self, connection: ConnectionId, reason: &str) {
        if self.connections.contains_key(&connection) {
            self.effects.push(Effect::Close {
                connection,
                reason: reason.to_owned(),
            });
            self.forget_connection(connection);
        }
    }

    fn forget_connection(&mut self, connection: ConnectionId) {
        let Some(state) = self.connections.remove(&connection) else {
            return;
        };
        let digest = self.digests.remove(&connection);
        self.peer_indexes.take_fill(connection);
        self.subscribed.remove(&connection);
        self.drop_phantoms(connection, None);
        self.forget_fetches(connection);
        let mut touched = Vec::new();
        for (id, hot) in &mut self.documents {
            if hot.sessions.remove(&connection).is_some() {
                touched.push(*id);
            }
            hot.queued.retain(|q| q.connection != connection);
            hot.resume_sessions.retain(|c| *c != connection);
            hot.start_sessions.retain(|c| *c != connection);
        }
        if let Connection::Established(peer) = state {
            // The exchange finished: what moved from here on is what the peer's next reconnect
            // will find different (see `sync::peer_index`).
            if matches!(digest, Some(DigestState::Done))
                && let Some(storage_id) = peer.durable_storage_id()
            {
                self.peer_indexes.settled(storage_id);
            }
            self.effects.push(Effect::PeerLeft(peer));
        }
        for document in touched {
            self.report_if_unavailable(document);
        }
    }
}

/// The change chunks of a sync message that `doc` does not hold yet, joined, if every chunk is one
/// well-formed change (automerge verifies it) and no earlier change waits in automerge's queue for
/// a dependency (this message could release it, and its bytes are not in this message); `None`
/// otherwise (also for a whole-document chunk, or anything automerge would only partly load), and
/// the caller falls back to `save_after`.
fn new_change_chunks(doc: &Automerge, message: &sync::Message) -> Option<Vec<u8>> {
    if message.changes.is_empty() || !doc.get_missing_deps(&[]).is_empty() {
        return None;
    }
    let mut joined = Vec::new();
    for chunk in message.changes.iter() {
        let change = automerge::Change::try_from(chunk).ok()?;
        if doc.get_change_meta_by_hash(&change.hash()).is_none() {
            joined.extend_from_slice(chunk);
        }
    }
    Some(joined)
}

/// A document loaded whole (from storage, or from a peer's first message) holds about 80% more
/// memory than it uses (measured on a plan: 18.2 KB loaded, 10.1 KB for a copy; see the
/// `memory` mode of the instructions bench); automerge's `Clone` copies only what is used. Done
/// once per load, never per change: a relay holds thousands of documents hot.
fn compact(doc: Automerge) -> Automerge {
    doc.clone()
}

/// Which paths changed between two heads, from automerge's own diff.
fn changed_paths(doc: &Automerge, before: &[ChangeHash], after: &[ChangeHash]) -> ChangedPaths {
    let mut top_level_keys = BTreeSet::new();
    let mut paths: Vec<Vec<Prop>> = Vec::new();
    for patch in doc.diff(before, after) {
        let mut path: Vec<Prop> = patch.path.into_iter().map(|(_, prop)| prop).collect();
        let leaf = match patch.action {
            PatchAction::PutMap { key, .. } | PatchAction::DeleteMap { key } => {
                Some(Prop::Map(key))
            }
            PatchAction::PutSeq { index, .. }
            | PatchAction::Insert { index, .. }
            | PatchAction::SpliceText { index, .. }
            | PatchAction::DeleteSeq { index, .. } => Some(Prop::Seq(index)),
            PatchAction::Increment { prop, .. } | PatchAction::Conflict { prop } => Some(prop),
            PatchAction::Mark { .. } => None,
        };
        path.extend(leaf);
        if let Some(Prop::Map(key)) = path.first() {
            top_level_keys.insert(key.clone());
        }
        if !paths.contains(&path) {
            paths.push(path);
        }
    }
    ChangedPaths {
        heads: after.to_vec(),
        before: before.to_vec(),
        top_level_keys,
        paths,
        whole_document: false,
    }
}
