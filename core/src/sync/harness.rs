//! A deterministic in-memory world for engine tests: several engines, a network of frame queues
//! and a storage map per engine, run until nothing moves. No threads, no sleeps, no clock.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, VecDeque};

use super::{
    AccessPolicy, ConnectionId, Direction, Effect, EngineConfig, Message, PersistTicket, StorageId,
    StoredDocument, SyncEngine,
};
use crate::ids::DocumentId;

/// A peer index as the driver reads it: documents at their stored heads.
type PeerIndexRead = Vec<(DocumentId, Vec<automerge::ChangeHash>)>;

/// What one engine has on "disk".
#[derive(Clone, Debug, Default)]
pub(crate) struct MemoryStorage {
    /// Stored document bytes: a concatenation of change chunks, as an append-only store keeps.
    pub(crate) documents: BTreeMap<DocumentId, Vec<u8>>,
    pub(crate) sync_states: BTreeMap<(DocumentId, StorageId), Vec<u8>>,
    pub(crate) persists: usize,
}

impl MemoryStorage {
    /// Every stored document with a sync state saved for `storage_id`, at its stored heads.
    pub(crate) fn peer_index(&self, storage_id: &StorageId) -> PeerIndexRead {
        self.sync_states
            .keys()
            .filter(|(_, s)| s == storage_id)
            .filter_map(|(document, _)| {
                let bytes = self.documents.get(document)?;
                let doc = automerge::Automerge::load(bytes).ok()?;
                Some((*document, doc.get_heads()))
            })
            .collect()
    }

    fn load(&self, document: DocumentId) -> StoredDocument {
        StoredDocument {
            bytes: self.documents.get(&document).cloned(),
            sync_states: self
                .sync_states
                .iter()
                .filter(|((d, _), _)| *d == document)
                .map(|((_, s), state)| (s.clone(), state.clone()))
                .collect(),
        }
    }
}

/// One engine with its storage and what it did.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) engine: SyncEngine,
    pub(crate) storage: MemoryStorage,
    /// While set, persists are held back until [`Harness::release_persists`].
    pub(crate) hold_persists: bool,
    held: Vec<(PersistTicket, DocumentId, Vec<u8>)>,
    /// Effects other than sends and storage, in order, for assertions.
    pub(crate) events: Vec<Effect>,
    /// Every frame this engine sent, decoded.
    pub(crate) sent: Vec<(ConnectionId, Message, usize)>,
    /// How many peer indexes were read from storage.
    pub(crate) index_loads: usize,
    /// While set, peer index reads (taken from storage when asked for) are answered only at
    /// [`Harness::release_peer_indexes`], as a driver reading on another thread would.
    pub(crate) hold_peer_indexes: bool,
    held_indexes: Vec<(ConnectionId, PeerIndexRead)>,
}

/// Something travelling between two engines.
#[derive(Debug)]
enum Delivery {
    Frame {
        node: usize,
        connection: ConnectionId,
        frame: Vec<u8>,
    },
    Closed {
        node: usize,
        connection: ConnectionId,
    },
}

/// The world: nodes and the links between them.
#[derive(Debug, Default)]
pub(crate) struct Harness {
    pub(crate) nodes: Vec<Node>,
    /// Each link joins (node, connection) on one side to (node, connection) on the other.
    links: Vec<((usize, ConnectionId), (usize, ConnectionId))>,
    in_flight: VecDeque<Delivery>,
}

impl Harness {
    pub(crate) fn add(&mut self, config: EngineConfig) -> usize {
        self.add_engine(SyncEngine::new(config), MemoryStorage::default())
    }

    pub(crate) fn add_with_policy(
        &mut self,
        config: EngineConfig,
        policy: Box<dyn AccessPolicy>,
    ) -> usize {
        self.add_engine(
            SyncEngine::with_policy(config, policy),
            MemoryStorage::default(),
        )
    }

    /// A node with existing storage: an engine restarted over the same database.
    pub(crate) fn add_engine(&mut self, engine: SyncEngine, storage: MemoryStorage) -> usize {
        self.nodes.push(Node {
            engine,
            storage,
            hold_persists: false,
            held: Vec::new(),
            events: Vec::new(),
            sent: Vec::new(),
            index_loads: 0,
            hold_peer_indexes: false,
            held_indexes: Vec::new(),
        });
        self.nodes.len() - 1
    }

    pub(crate) fn engine(&mut self, node: usize) -> &mut SyncEngine {
        &mut self.nodes[node].engine
    }

    /// `dialer` opens a connection to `listener`. Returns both ends' connection ids.
    pub(crate) fn connect(
        &mut self,
        dialer: usize,
        listener: usize,
    ) -> (ConnectionId, ConnectionId) {
        let listening = self.nodes[listener]
            .engine
            .connection_opened(Direction::Incoming);
        let dialling = self.nodes[dialer]
            .engine
            .connection_opened(Direction::Outgoing);
        self.links.push(((dialer, dialling), (listener, listening)));
        (dialling, listening)
    }

    /// Delivers a raw frame as if the peer on the other end of the link had sent it.
    pub(crate) fn inject(&mut self, node: usize, connection: ConnectionId, frame: &[u8]) {
        self.nodes[node].engine.frame_received(connection, frame);
    }

    /// Carries out every effect and delivers every frame until nothing is left to do.
    pub(crate) fn run_until_quiet(&mut self) {
        for _ in 0..1_000_000 {
            let mut progressed = false;
            for node in 0..self.nodes.len() {
                let effects = self.nodes[node].engine.take_effects();
                progressed |= !effects.is_empty();
                for effect in effects {
                    self.carry_out(node, effect);
                }
            }
            if let Some(delivery) = self.in_flight.pop_front() {
                progressed = true;
                match delivery {
                    Delivery::Frame {
                        node,
                        connection,
                        frame,
                    } => self.nodes[node].engine.frame_received(connection, &frame),
                    Delivery::Closed { node, connection } => {
                        self.nodes[node].engine.connection_closed(connection);
                    }
                }
            }
            if !progressed {
                return;
            }
        }
        panic!("the network never went quiet");
    }

    /// One network round: carries out every pending effect, then delivers exactly the frames that
    /// were in flight at that point (what they cause travels in the next round). Two rounds are
    /// one round trip. False if nothing was in flight.
    pub(crate) fn deliver_round(&mut self) -> bool {
        for node in 0..self.nodes.len() {
            for effect in self.nodes[node].engine.take_effects() {
                self.carry_out(node, effect);
            }
        }
        let round: Vec<Delivery> = self.in_flight.drain(..).collect();
        if round.is_empty() {
            return false;
        }
        for delivery in round {
            match delivery {
                Delivery::Frame {
                    node,
                    connection,
                    frame,
                } => self.nodes[node].engine.frame_received(connection, &frame),
                Delivery::Closed { node, connection } => {
                    self.nodes[node].engine.connection_closed(connection);
                }
            }
            for node in 0..self.nodes.len() {
                for effect in self.nodes[node].engine.take_effects() {
                    self.carry_out(node, effect);
                }
            }
        }
        true
    }

    /// Commits every held persist and confirms it to the engine.
    pub(crate) fn release_persists(&mut self, node: usize) {
        let held = std::mem::take(&mut self.nodes[node].held);
        for (ticket, document, changes) in held {
            let n = &mut self.nodes[node];
            n.storage
                .documents
                .entry(document)
                .or_default()
                .extend(changes);
            n.storage.persists += 1;
            n.engine.persisted(ticket);
        }
    }

    /// Answers every held peer index read with what storage held when it was asked for.
    pub(crate) fn release_peer_indexes(&mut self, node: usize) {
        let held = std::mem::take(&mut self.nodes[node].held_indexes);
        for (connection, index) in held {
            self.nodes[node].engine.peer_index_loaded(connection, index);
        }
    }

    /// Reports every held peer index read as failed.
    pub(crate) fn fail_peer_indexes(&mut self, node: usize) {
        let held = std::mem::take(&mut self.nodes[node].held_indexes);
        for (connection, _) in held {
            self.nodes[node].engine.peer_index_failed(connection);
        }
    }

    /// Reports every held persist as failed, storing nothing.
    pub(crate) fn fail_held_persists(&mut self, node: usize) {
        let held = std::mem::take(&mut self.nodes[node].held);
        for (ticket, _, _) in held {
            self.nodes[node].engine.persist_failed(ticket);
        }
    }

    fn other_end(&self, node: usize, connection: ConnectionId) -> Option<(usize, ConnectionId)> {
        self.links.iter().find_map(|(a, b)| {
            if *a == (node, connection) {
                Some(*b)
            } else if *b == (node, connection) {
                Some(*a)
            } else {
                None
            }
        })
    }

    fn carry_out(&mut self, node: usize, effect: Effect) {
        match effect {
            Effect::Send { connection, frame } => {
                let decoded = Message::decode(&frame).unwrap();
                self.nodes[node]
                    .sent
                    .push((connection, decoded, frame.len()));
                if let Some((other, other_connection)) = self.other_end(node, connection) {
                    self.in_flight.push_back(Delivery::Frame {
                        node: other,
                        connection: other_connection,
                        frame,
                    });
                }
            }
            Effect::Close { connection, .. } => {
                if let Some(other) = self.other_end(node, connection) {
                    self.in_flight.push_back(Delivery::Closed {
                        node: other.0,
                        connection: other.1,
                    });
                    self.links
                        .retain(|(a, b)| *a != (node, connection) && *b != (node, connection));
                }
                self.nodes[node].events.push(effect);
            }
            Effect::LoadDocument { document } => {
                let n = &mut self.nodes[node];
                let stored = n.storage.load(document);
                n.engine.document_loaded(document, stored).unwrap();
            }
            Effect::Persist {
                ticket,
                document,
                changes,
            } => {
                let n = &mut self.nodes[node];
                if n.hold_persists {
                    n.held.push((ticket, document, changes));
                } else {
                    n.storage
                        .documents
                        .entry(document)
                        .or_default()
                        .extend(changes);
                    n.storage.persists += 1;
                    n.engine.persisted(ticket);
                }
            }
            Effect::SaveSyncState {
                document,
                storage_id,
                state,
            } => {
                self.nodes[node]
                    .storage
                    .sync_states
                    .insert((document, storage_id), state);
            }
            Effect::LoadPeerIndex {
                connection,
                storage_id,
            } => {
                let n = &mut self.nodes[node];
                let index = n.storage.peer_index(&storage_id);
                n.index_loads += 1;
                if n.hold_peer_indexes {
                    n.held_indexes.push((connection, index));
                } else {
                    n.engine.peer_index_loaded(connection, index);
                }
            }
            other => self.nodes[node].events.push(other),
        }
    }

    /// Closes a link from one side, as a dropped network would.
    pub(crate) fn drop_link(&mut self, node: usize, connection: ConnectionId) {
        if let Some(other) = self.other_end(node, connection) {
            self.links
                .retain(|(a, b)| *a != (node, connection) && *b != (node, connection));
            self.nodes[node].engine.connection_closed(connection);
            self.nodes[other.0].engine.connection_closed(other.1);
        }
    }
}
