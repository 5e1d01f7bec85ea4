//! The relay's hub. One task owns the [`SyncEngine`]; connection tasks hand it frames, storage
//! tasks hand it loaded documents and commit confirmations, and it turns the engine's effects into
//! frames to send, loads and commits.
//!
//! Durability: the engine emits `Persist` for every batch of new changes and holds back whatever
//! reflects them until it hears `persisted`. The writer task commits persists in batches (group
//! commit) and only then reports them, so "the relay answered" always means "it is on disk".

use std::collections::{HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tandem_core::DocumentId;
use tandem_core::sync::{
    ConnectionId, Direction, Effect, EngineConfig, Limits, PersistTicket, Role, StorageId,
    StoredDocument, SyncEngine,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::access::{DocumentRecord, Kind, RelayPolicy};
use crate::accounts::{Accounts, now_millis};
use crate::auth::Identity;
use crate::metrics::Metrics;
use crate::store::{NewChanges, RelayStore, StoreEvent, SyncStateRecord, Watch};

/// Most persists committed in one transaction.
const MAX_BATCH: usize = 4096;

/// While changes keep arriving, sync states are written at most this often (see `run_writer`).
const SYNC_STATE_DELAY: Duration = Duration::from_secs(1);

/// How often the relay looks at the accounts revision: a revoked token or an ended pairing
/// takes effect on live connections within this delay (and the time to re-read the accounts).
const ACCOUNTS_POLL: Duration = Duration::from_millis(250);

/// What the relay's tasks tell the hub.
#[derive(Debug)]
pub(crate) enum Command {
    Open {
        outbound: Outbox,
        identity: Identity,
        reply: oneshot::Sender<ConnectionId>,
    },
    Frame {
        connection: ConnectionId,
        frame: Vec<u8>,
    },
    Closed {
        connection: ConnectionId,
    },
    Loaded {
        document: DocumentId,
        stored: crate::Result<StoredDocument>,
        /// What the document is, read with it when the relay did not know (another relay
        /// stored it).
        record: Option<DocumentRecord>,
    },
    /// Another relay sharing the database committed something (or the watch reconnected).
    Store(StoreEvent),
    /// Bytes another relay committed for a document in memory, read back from storage (`None`:
    /// nothing stored).
    StoredChanges {
        document: DocumentId,
        bytes: crate::Result<Option<Vec<u8>>>,
    },
    /// Records of documents another relay stored.
    Records(crate::Result<Vec<(DocumentId, DocumentRecord)>>),
    /// Pairings' directories another relay changed, read from storage for their listings.
    Listings(crate::Result<Vec<(DocumentId, automerge::Automerge)>>),
    Committed {
        tickets: Vec<PersistTicket>,
        ok: bool,
    },
    /// The driver's read of a peer's index for the reconnect digest.
    PeerIndex {
        connection: ConnectionId,
        index: crate::Result<Vec<(DocumentId, Vec<automerge::ChangeHash>)>>,
    },
    /// The poller's tick: new accounts if an administrator changed something.
    Accounts(Option<Box<Accounts>>),
    /// Time to drop cold documents from memory.
    Sweep,
    Shutdown,
}

/// What the hub tells one connection task.
#[derive(Debug)]
pub(crate) enum Outbound {
    Frame(Vec<u8>),
    /// Close for a reason of this connection's own (policy: refused, revoked, bad input).
    Close(String),
    /// Close because the relay is stopping ("going away"), the same answer the shutdown signal
    /// gives, whichever reaches the connection first.
    Shutdown,
}

/// The frames waiting for one connection, bounded in bytes rather than in count: a device that
/// reconnects with thousands of documents is answered with thousands of small frames at once, and
/// that is no reason to drop it, while a peer that stops reading must not grow the relay's memory
/// without bound.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    sender: mpsc::UnboundedSender<Outbound>,
    queued: Arc<AtomicUsize>,
    limit: usize,
}

/// The connection task's end of an [`Outbox`].
#[derive(Debug)]
pub(crate) struct OutboxReceiver {
    receiver: mpsc::UnboundedReceiver<Outbound>,
    queued: Arc<AtomicUsize>,
}

impl Outbox {
    pub(crate) fn new(limit: usize) -> (Self, OutboxReceiver) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let outbox = Self {
            sender,
            queued: queued.clone(),
            limit,
        };
        (outbox, OutboxReceiver { receiver, queued })
    }

    /// Queues a frame; false when the connection is over its budget (or gone). A frame larger
    /// than the whole budget still goes out when nothing else is waiting.
    fn push_frame(&self, frame: Vec<u8>) -> bool {
        let queued = self.queued.load(Ordering::Acquire);
        if queued > 0 && queued + frame.len() > self.limit {
            return false;
        }
        self.queued.fetch_add(frame.len(), Ordering::AcqRel);
        self.sender.send(Outbound::Frame(frame)).is_ok()
    }

    fn close(&self, reason: String) {
        let _ = self.sender.send(Outbound::Close(reason));
    }

    /// The connection task is gone; its `Closed` command is on its way.
    fn is_gone(&self) -> bool {
        self.sender.is_closed()
    }

    fn shut_down(&self) {
        let _ = self.sender.send(Outbound::Shutdown);
    }
}

impl OutboxReceiver {
    pub(crate) async fn recv(&mut self) -> Option<Outbound> {
        self.receiver.recv().await
    }

    /// The connection wrote a frame of `len` bytes: it no longer counts against the budget.
    pub(crate) fn written(&self, len: usize) {
        self.queued.fetch_sub(len, Ordering::AcqRel);
    }
}

/// Work for the writer task.
#[derive(Debug)]
enum Write {
    Changes {
        ticket: PersistTicket,
        changes: NewChanges,
    },
    SyncState(SyncStateRecord),
}

/// Limits and identity of the relay's engine.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub limits: Limits,
    pub eviction: Eviction,
}

/// When the hub drops documents from memory. Only cold documents go (see
/// [`SyncEngine::cold_documents`]: no peer syncing them, nothing waiting for a commit); they stay
/// on disk and are loaded again when a peer asks for one.
#[derive(Debug, Clone)]
pub struct Eviction {
    /// A document cold for this long is dropped.
    pub idle: Duration,
    /// Beyond this many documents in memory, cold ones are dropped at once, the longest cold first.
    pub max_hot_documents: Option<usize>,
    /// How many peers' reconnect-digest indexes stay in memory between reconnects (0: each
    /// reconnect reads its peer's index from storage).
    pub peer_indexes: usize,
}

impl Eviction {
    /// How often the hub looks for documents to drop: a few times per idle delay, so a document
    /// goes within about 1.25 × `idle`, but not more often than needed to stay cheap.
    fn sweep_interval(&self) -> Duration {
        (self.idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
    }
}

/// A running hub and writer. Cloneable handles to it go to the HTTP handlers.
#[derive(Debug)]
pub struct Relay {
    handle: RelayHandle,
    hub: JoinHandle<()>,
    writer: JoinHandle<()>,
    poller: JoinHandle<()>,
    sweeper: JoinHandle<()>,
    /// Changes other relays commit to a shared database (PostgreSQL); dropped at shutdown.
    watch: Option<Watch>,
}

/// What a connection needs to talk to the hub.
#[derive(Debug, Clone)]
pub struct RelayHandle {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) store: Arc<dyn RelayStore>,
}

impl std::fmt::Debug for dyn RelayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayStore")
    }
}

impl Relay {
    /// Starts the hub and the writer on the current tokio runtime.
    pub async fn start(
        store: Arc<dyn RelayStore>,
        config: RelayConfig,
        metrics: Arc<Metrics>,
    ) -> crate::Result<Self> {
        let reading = store.clone();
        let (storage_id, accounts, documents) = crate::blocking(move || {
            Ok((
                reading.storage_id()?,
                reading.load_accounts()?,
                reading.document_records()?,
            ))
        })
        .await?;
        let engine_config = EngineConfig::new(format!("tandem-relay-{storage_id}"), Role::Relay)
            .with_storage_id(StorageId::new(storage_id))
            .with_limits(config.limits)
            .with_reconnect_digest(true)
            .with_snapshot_fetch(true)
            .with_peer_index_cache(config.eviction.peer_indexes);
        let policy = RelayPolicy::default();
        let listing = store.clone();
        let listings = crate::blocking(move || {
            read_directory_listings(&*listing, &documents).map(|listed| (documents, listed))
        })
        .await?;
        let revision = {
            let mut state = policy.lock();
            state.accounts = accounts;
            let (documents, directories) = listings;
            state.documents = documents.into_iter().collect();
            for (directory, doc) in directories {
                state.note_listing(&directory, &doc);
            }
            state.accounts.revision
        };
        let engine = SyncEngine::with_policy(engine_config, Box::new(policy.clone()));
        let (commands, receiver) = mpsc::channel(1024);
        // Unbounded on purpose: the hub must never wait on the writer while the writer waits to
        // report to the hub. Its length is bounded by the frames the hub accepted.
        let (writes, write_queue) = mpsc::unbounded_channel();
        let handle = RelayHandle {
            commands: commands.clone(),
            metrics: metrics.clone(),
            store: store.clone(),
        };
        let writer = tokio::spawn(run_writer(
            store.clone(),
            write_queue,
            commands.clone(),
            metrics.clone(),
        ));
        let poller = tokio::spawn(poll_accounts(store.clone(), commands.clone(), revision));
        let sweeper = tokio::spawn(tick_sweeps(
            commands.clone(),
            config.eviction.sweep_interval(),
        ));
        let notify = commands.clone();
        let watch = store.watch(Box::new(move |event| {
            notify.blocking_send(Command::Store(event)).is_ok()
        }))?;
        let hub = Hub {
            loading: HashSet::new(),
            reread: HashSet::new(),
            engine,
            policy,
            creating: HashMap::new(),
            connections: HashMap::new(),
            store,
            writes,
            commands,
            metrics,
            shutting_down: false,
            eviction: config.eviction,
            cold_since: HashMap::new(),
        };
        let hub = tokio::spawn(hub.run(receiver));
        Ok(Self {
            handle,
            hub,
            writer,
            poller,
            sweeper,
            watch,
        })
    }

    pub fn handle(&self) -> RelayHandle {
        self.handle.clone()
    }

    /// Closes every connection, lets the writer commit what it holds, and waits for both tasks.
    pub async fn shutdown(self) {
        let _ = self.handle.commands.send(Command::Shutdown).await;
        self.poller.abort();
        self.sweeper.abort();
        drop(self.watch);
        drop(self.handle);
        if let Err(e) = self.hub.await {
            tracing::error!("relay hub ended abnormally: {e}");
        }
        if let Err(e) = self.writer.await {
            tracing::error!("relay writer ended abnormally: {e}");
        }
    }
}

struct Hub {
    engine: SyncEngine,
    /// Documents being read from storage.
    loading: HashSet<DocumentId>,
    /// Documents another relay changed while they were being read: read again once loaded.
    reread: HashSet<DocumentId>,
    policy: RelayPolicy,
    /// Persists that create a document, committed with its record.
    creating: HashMap<PersistTicket, DocumentId>,
    connections: HashMap<ConnectionId, (Outbox, Identity)>,
    store: Arc<dyn RelayStore>,
    writes: mpsc::UnboundedSender<Write>,
    commands: mpsc::Sender<Command>,
    metrics: Arc<Metrics>,
    shutting_down: bool,
    eviction: Eviction,
    /// Since when each cold document has been seen cold, by the sweeps.
    cold_since: HashMap<DocumentId, Instant>,
}

impl Hub {
    async fn run(mut self, mut receiver: mpsc::Receiver<Command>) {
        while let Some(command) = receiver.recv().await {
            self.handle(command);
            self.dispatch();
            self.metrics
                .documents_in_memory
                .set(self.engine.hot_document_count() as i64);
            if self.shutting_down && self.connections.is_empty() {
                break;
            }
        }
        // Dropping `writes` lets the writer finish what is queued and stop.
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Open {
                outbound,
                identity,
                reply,
            } => {
                if self.shutting_down {
                    outbound.shut_down();
                    return;
                }
                let connection = self.engine.connection_opened(Direction::Incoming);
                tracing::info!(%connection, user = %identity, "connection opened");
                self.policy
                    .lock()
                    .connections
                    .insert(connection, identity.clone());
                self.connections.insert(connection, (outbound, identity));
                let _ = reply.send(connection);
            }
            Command::Frame { connection, frame } => {
                let engine = &mut self.engine;
                // The engine catches panics inside automerge itself; this guard keeps a bug in
                // the engine from taking down every other connection with the hub.
                let outcome = catch_unwind(AssertUnwindSafe(|| {
                    engine.frame_received(connection, &frame);
                }));
                if outcome.is_err() {
                    tracing::error!(%connection, "sync engine panicked on a frame; closing");
                    self.metrics.rejected_frames.inc();
                    self.close(connection, "internal error");
                }
                let violators = std::mem::take(&mut self.policy.lock().violations);
                for (connection, violation) in violators {
                    self.close(connection, violation.reason());
                }
                self.forget_refused_writes();
            }
            Command::Closed { connection } => {
                self.connections.remove(&connection);
                self.policy.lock().connections.remove(&connection);
                self.engine.connection_closed(connection);
            }
            Command::Accounts(accounts) => self.refresh(accounts),
            Command::Sweep => self.sweep(Instant::now()),
            Command::PeerIndex { connection, index } => match index {
                Ok(index) => self.engine.peer_index_loaded(connection, index),
                Err(e) => {
                    // Without the index every document the device holds counts as different.
                    tracing::warn!(%connection, "reading a peer index failed: {e}");
                    self.engine.peer_index_failed(connection);
                }
            },
            Command::Store(event) => self.stored_elsewhere(event),
            Command::StoredChanges { document, bytes } => match bytes {
                Ok(Some(bytes)) => self.merge_stored(document, &bytes),
                Ok(None) => {}
                Err(e) => {
                    // Read again when the watch next reconnects; until then peers of this relay
                    // do not see that change (they still see their own and this relay's).
                    tracing::error!(%document, "reading another relay's changes failed: {e}");
                }
            },
            Command::Records(records) => match records {
                Ok(records) => {
                    let mut directories = Vec::new();
                    {
                        let mut state = self.policy.lock();
                        for (document, record) in records {
                            // A record is fixed once made, except an untyped document's, which
                            // its creator's first typed change classifies (perhaps through
                            // another relay).
                            let known = state.documents.entry(document).or_insert(record.clone());
                            if known.kind == Kind::Other {
                                *known = record;
                            }
                            if known.kind == Kind::Directory
                                && known.pairing.is_some()
                                && self.engine.document(&document).is_none()
                            {
                                directories.push((document, known.clone()));
                            }
                        }
                    }
                    self.read_listings(directories);
                }
                Err(e) => tracing::error!("reading document records failed: {e}"),
            },
            Command::Listings(listings) => match listings {
                Ok(listings) => {
                    let mut state = self.policy.lock();
                    for (directory, doc) in listings {
                        state.note_listing(&directory, &doc);
                    }
                }
                Err(e) => tracing::error!("reading directory listings failed: {e}"),
            },
            Command::Loaded {
                document,
                stored,
                record,
            } => match stored {
                Ok(stored) => {
                    self.loading.remove(&document);
                    if let Some(record) = record {
                        self.policy
                            .lock()
                            .documents
                            .entry(document)
                            .or_insert(record);
                    }
                    if self.reread.remove(&document) {
                        self.read_stored(document, None);
                    }
                    if let Err(e) = self.engine.document_loaded(document, stored) {
                        tracing::error!(%document, "stored document cannot be loaded: {e}");
                    }
                    // A directory another relay stored or changed lists what it lists now.
                    if let Some(doc) = self.engine.document(&document) {
                        self.policy.lock().note_listing(&document, doc);
                    }
                }
                Err(e) => {
                    tracing::error!(%document, "loading the document failed: {e}");
                    self.loading.remove(&document);
                    self.reread.remove(&document);
                    self.engine.document_load_failed(document);
                }
            },
            Command::Committed { tickets, ok } => {
                for ticket in tickets {
                    if let Some(document) = self.creating.remove(&ticket) {
                        let mut state = self.policy.lock();
                        let record = state.pending.remove(&document);
                        if let (true, Some(record)) = (ok, record) {
                            state.documents.insert(document, record);
                        }
                    }
                    if ok {
                        self.engine.persisted(ticket);
                    } else {
                        self.engine.persist_failed(ticket);
                    }
                }
            }
            Command::Shutdown => {
                self.shutting_down = true;
                for (outbound, _) in self.connections.values() {
                    outbound.shut_down();
                }
            }
        }
    }

    /// Drops the documents that have been cold for the idle delay, and more (the longest cold
    /// first) while over the budget. A document that was used between two sweeps but is cold at
    /// both keeps its first time and may go up to one sweep early: harmless, it is only loaded
    /// again. The engine refuses anything that is not cold, so no change waiting for its commit
    /// and no peer's session is ever dropped.
    fn sweep(&mut self, now: Instant) {
        let seen = std::mem::take(&mut self.cold_since);
        let mut cold: Vec<(Instant, DocumentId)> = self
            .engine
            .cold_documents()
            .map(|document| (seen.get(&document).copied().unwrap_or(now), document))
            .collect();
        cold.sort_unstable();
        let mut over = self.eviction.max_hot_documents.map_or(0, |max| {
            self.engine.hot_document_count().saturating_sub(max)
        });
        let mut evicted = 0u64;
        for (since, document) in cold {
            let idle = now.saturating_duration_since(since) >= self.eviction.idle;
            if (idle || over > 0) && self.engine.evict(document) {
                evicted += 1;
                over = over.saturating_sub(1);
            } else {
                self.cold_since.insert(document, since);
            }
        }
        if evicted > 0 {
            tracing::debug!(evicted, "cold documents dropped from memory");
            self.metrics.evictions.inc_by(evicted);
        }
    }

    /// Closes a connection. Its identity is forgotten at once, so frames still in flight from it
    /// are answered as for a stranger.
    fn close(&mut self, connection: ConnectionId, reason: &str) {
        if let Some((outbound, _)) = self.connections.get(&connection) {
            outbound.close(reason.to_owned());
        }
        self.policy.lock().connections.remove(&connection);
    }

    /// New accounts (if any), then every connection whose token was revoked or has expired is
    /// closed. Pairings need nothing more: the policy reads the new accounts on the next message.
    fn refresh(&mut self, accounts: Option<Box<Accounts>>) {
        let now = now_millis();
        let mut closing = Vec::new();
        {
            let mut state = self.policy.lock();
            if let Some(accounts) = accounts {
                let mut accounts = *accounts;
                // Actors bound on first use but not yet committed stay bound.
                for (actor, device) in &state.new_bindings {
                    accounts.actors.insert(actor.clone(), *device);
                }
                tracing::info!(revision = accounts.revision, "accounts changed");
                state.accounts = accounts;
            }
            for (connection, identity) in &state.connections {
                if let Identity::Device(grant) = identity {
                    let valid = state
                        .accounts
                        .tokens
                        .get(&grant.token)
                        .is_some_and(|token| token.is_valid(now));
                    if !valid {
                        closing.push(*connection);
                    }
                }
            }
        }
        for connection in closing {
            tracing::info!(%connection, "closing: token revoked or expired");
            self.close(connection, "token revoked or expired");
        }
    }

    fn dispatch(&mut self) {
        for effect in self.engine.take_effects() {
            match effect {
                Effect::Send { connection, frame } => {
                    let Some((outbound, _)) = self.connections.get(&connection) else {
                        continue;
                    };
                    if !outbound.push_frame(frame) && !outbound.is_gone() {
                        // A peer that does not read its frames would grow the relay's memory
                        // without bound; it is disconnected and resyncs when it reconnects.
                        tracing::warn!(%connection, "send queue over its byte budget; disconnecting");
                        self.connections.remove(&connection);
                        self.policy.lock().connections.remove(&connection);
                        self.engine.connection_closed(connection);
                    }
                }
                Effect::Close { connection, reason } => {
                    tracing::info!(%connection, "closing connection: {reason}");
                    self.metrics.rejected_frames.inc();
                    self.close(connection, &reason);
                }
                Effect::LoadDocument { document } => self.load(document),
                Effect::LoadPeerIndex {
                    connection,
                    storage_id,
                } => self.load_peer_index(connection, storage_id),
                Effect::Persist {
                    ticket,
                    document,
                    changes,
                } => {
                    let changes = self.with_access_records(ticket, document, changes);
                    let _ = self.writes.send(Write::Changes { ticket, changes });
                }
                Effect::SaveSyncState {
                    document,
                    storage_id,
                    state,
                } => {
                    let record = SyncStateRecord {
                        document,
                        peer_storage_id: storage_id.as_str().to_owned(),
                        state,
                    };
                    let _ = self.writes.send(Write::SyncState(record));
                }
                Effect::DocumentUnavailable { document } => {
                    tracing::debug!(%document, "document unavailable");
                }
                Effect::PeerJoined(peer) => tracing::info!(peer = %peer.peer_id, "peer joined"),
                Effect::PeerLeft(peer) => tracing::info!(peer = %peer.peer_id, "peer left"),
                Effect::DocumentChanged { .. } | Effect::EphemeralReceived { .. } => {}
            }
        }
    }

    /// Drops the audit entries of accepted messages whose changes the document did not take.
    /// Once a frame is handled its changes are in the document, or waiting in automerge's queue
    /// for a dependency the policy saw missing (those entries stay while something waits, within
    /// `MAX_WAITING_CHANGES`), unless automerge refused them (a change the policy read but
    /// automerge will not apply, such as a reused sequence number): such an entry would wait for
    /// its commit forever, and a peer sending many would grow it without bound. Entries of
    /// documents not in memory (reloading after a panic) wait.
    fn forget_refused_writes(&mut self) {
        let mut state = self.policy.lock();
        if state.written.is_empty() {
            return;
        }
        let engine = &self.engine;
        crate::access::forget_unapplied(&mut state.written, |document| engine.document(document));
    }

    /// Attaches to a persist what must be committed with it: the document's record if these are
    /// its first changes, the audit of who wrote them, and actors bound on first use.
    fn with_access_records(
        &mut self,
        ticket: PersistTicket,
        document: DocumentId,
        bytes: Vec<u8>,
    ) -> NewChanges {
        let mut changes = NewChanges::new(document, bytes);
        changes.heads = self.engine.persist_heads(ticket).map(<[_]>::to_vec);
        let mut state = self.policy.lock();
        match state.pending.get(&document) {
            Some(record) => {
                changes.record = Some(record.clone());
                self.creating.insert(ticket, document);
            }
            None if !state.documents.contains_key(&document) => {
                tracing::error!(%document, "a new document without a record");
            }
            None => {}
        }
        changes.bindings = std::mem::take(&mut state.new_bindings);
        let doc = self.engine.document(&document);
        let (audited, waiting) =
            std::mem::take(&mut state.written)
                .into_iter()
                .partition(|written| {
                    written.document == document
                        && doc.is_some_and(|doc| {
                            written
                                .hashes
                                .iter()
                                .all(|hash| doc.get_change_meta_by_hash(hash).is_some())
                        })
                });
        changes.audit = audited;
        state.written = waiting;
        changes
    }

    fn load_peer_index(&self, connection: ConnectionId, storage_id: StorageId) {
        self.metrics.peer_index_reads.inc();
        let store = self.store.clone();
        let commands = self.commands.clone();
        tokio::spawn(async move {
            let index = tokio::task::spawn_blocking(move || store.peer_index(storage_id.as_str()))
                .await
                .unwrap_or_else(|e| {
                    Err(crate::Error::Io(std::io::Error::other(format!(
                        "index task failed: {e}"
                    ))))
                });
            let _ = commands
                .send(Command::PeerIndex { connection, index })
                .await;
        });
    }

    fn load(&mut self, document: DocumentId) {
        self.loading.insert(document);
        // A document another relay stored is not in this relay's records yet.
        let known = self.policy.lock().is_known(&document);
        let store = self.store.clone();
        let commands = self.commands.clone();
        tokio::spawn(async move {
            let read = crate::blocking(move || {
                let record = if known {
                    None
                } else {
                    store.document_record(document)?
                };
                Ok((read_document(&*store, document)?, record))
            })
            .await;
            let (stored, record) = match read {
                Ok((stored, record)) => (Ok(stored), record),
                Err(e) => (Err(e), None),
            };
            let _ = commands
                .send(Command::Loaded {
                    document,
                    stored,
                    record,
                })
                .await;
        });
    }

    /// Another relay sharing the database committed a chunk (or the watch (re)connected, and
    /// any commit since the last notification may have been missed).
    fn stored_elsewhere(&mut self, event: StoreEvent) {
        match event {
            StoreEvent::Committed { document, seq } => {
                self.metrics.stored_elsewhere.inc();
                self.engine.changed_in_storage(document);
                let record = self.policy.lock().documents.get(&document).cloned();
                match record {
                    // Unknown, or untyped (maybe typed now): read, and its listing if it is a
                    // directory not in memory.
                    None => self.read_records(Some(document)),
                    Some(record) if record.kind == Kind::Other => {
                        self.read_records(Some(document));
                    }
                    // A directory in memory is listed again when the change is merged.
                    Some(record)
                        if record.kind == Kind::Directory
                            && record.pairing.is_some()
                            && self.engine.document(&document).is_none() =>
                    {
                        self.read_listings(vec![(document, record)]);
                    }
                    Some(_) => {}
                }
                if self.engine.document(&document).is_some() {
                    self.read_stored(document, Some(seq));
                } else if self.loading.contains(&document) {
                    self.reread.insert(document);
                }
            }
            StoreEvent::Listening => {
                let hot: Vec<DocumentId> = self.engine.hot_documents().collect();
                for document in hot {
                    self.engine.changed_in_storage(document);
                    if self.engine.document(&document).is_some() {
                        self.read_stored(document, None);
                    } else if self.loading.contains(&document) {
                        self.reread.insert(document);
                    }
                }
                self.read_records(None);
            }
        }
    }

    /// Reads one chunk another relay committed (`seq`), or the whole stored document (`None`, or
    /// when that chunk was folded into a snapshot meanwhile), for [`Hub::merge_stored`].
    fn read_stored(&self, document: DocumentId, seq: Option<i64>) {
        let store = self.store.clone();
        let commands = self.commands.clone();
        tokio::spawn(async move {
            let bytes = crate::blocking(move || {
                if let Some(seq) = seq
                    && let Some(bytes) = store.load_chunk(document, seq)?
                {
                    return Ok(Some(bytes));
                }
                Ok(store
                    .load_document(document)?
                    .map(|chunks| chunks.into_iter().flat_map(|chunk| chunk.bytes).collect()))
            })
            .await;
            let _ = commands
                .send(Command::StoredChanges { document, bytes })
                .await;
        });
    }

    /// Reads pairings' directories (not in memory) another relay changed, for their listings.
    fn read_listings(&self, directories: Vec<(DocumentId, DocumentRecord)>) {
        if directories.is_empty() {
            return;
        }
        let store = self.store.clone();
        let commands = self.commands.clone();
        tokio::spawn(async move {
            let listings =
                crate::blocking(move || read_directory_listings(&*store, &directories)).await;
            let _ = commands.send(Command::Listings(listings)).await;
        });
    }

    /// Reads the records of documents another relay stored: one, or all of them.
    fn read_records(&self, document: Option<DocumentId>) {
        let store = self.store.clone();
        let commands = self.commands.clone();
        tokio::spawn(async move {
            let records = crate::blocking(move || match document {
                Some(document) => Ok(store
                    .document_record(document)?
                    .map(|record| (document, record))
                    .into_iter()
                    .collect()),
                None => store.document_records(),
            })
            .await;
            let _ = commands.send(Command::Records(records)).await;
        });
    }

    /// Merges what another relay committed into the document in memory; the engine syncs it to
    /// this relay's peers without persisting it again (it is stored already).
    fn merge_stored(&mut self, document: DocumentId, bytes: &[u8]) {
        if self.engine.document(&document).is_none() {
            return;
        }
        if let Err(e) = self.engine.apply_stored_changes(document, bytes) {
            tracing::error!(%document, "merging another relay's changes failed: {e}");
            return;
        }
        let mut state = self.policy.lock();
        if let Some(doc) = self.engine.document(&document) {
            state.note_listing(&document, doc);
        }
    }
}

/// Tells the hub, every [`ACCOUNTS_POLL`], whether the accounts changed (and how they are now).
async fn poll_accounts(store: Arc<dyn RelayStore>, hub: mpsc::Sender<Command>, revision: i64) {
    let mut seen = revision;
    let mut ticks = tokio::time::interval(ACCOUNTS_POLL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let store = store.clone();
        let last = seen;
        let read = tokio::task::spawn_blocking(move || -> crate::Result<_> {
            let revision = store.revision()?;
            if revision == last {
                return Ok((revision, None));
            }
            Ok((revision, Some(Box::new(store.load_accounts()?))))
        })
        .await;
        let accounts = match read {
            Ok(Ok((revision, accounts))) => {
                seen = revision;
                accounts
            }
            Ok(Err(e)) => {
                tracing::warn!("reading the accounts failed: {e}");
                None
            }
            Err(_) => None,
        };
        if hub.send(Command::Accounts(accounts)).await.is_err() {
            return;
        }
    }
}

/// The stored directories of pairings, read for which pairing's directory lists which document:
/// what a session log or notes document reaching the relay later is checked against. An
/// unreadable directory is skipped (logged): its entries are then checked only against their own
/// content.
fn read_directory_listings(
    store: &dyn RelayStore,
    documents: &[(DocumentId, DocumentRecord)],
) -> crate::Result<Vec<(DocumentId, automerge::Automerge)>> {
    let mut directories = Vec::new();
    for (directory, _) in documents
        .iter()
        .filter(|(_, record)| record.kind == Kind::Directory && record.pairing.is_some())
    {
        let loaded = read_document(store, *directory).ok().and_then(|stored| {
            let bytes = stored.bytes?;
            catch_unwind(|| automerge::Automerge::load(&bytes))
                .ok()?
                .ok()
        });
        match loaded {
            Some(doc) => directories.push((*directory, doc)),
            None => {
                tracing::warn!(%directory, "a stored directory could not be read for its listing")
            }
        }
    }
    Ok(directories)
}

/// Tells the hub to sweep cold documents every `interval`.
async fn tick_sweeps(hub: mpsc::Sender<Command>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        if hub.send(Command::Sweep).await.is_err() {
            return;
        }
    }
}

fn read_document(store: &dyn RelayStore, document: DocumentId) -> crate::Result<StoredDocument> {
    let Some(chunks) = store.load_document(document)? else {
        return Ok(StoredDocument::default());
    };
    let bytes = chunks.into_iter().flat_map(|chunk| chunk.bytes).collect();
    let sync_states = store
        .load_sync_states(document)?
        .into_iter()
        .map(|(peer, state)| (StorageId::new(peer), state))
        .collect();
    Ok(StoredDocument {
        bytes: Some(bytes),
        sync_states,
    })
}

/// Commits persists in batches: whatever queued up while the previous transaction ran goes into
/// the next one.
///
/// Sync states are kept back, the newest per (document, peer), and written once nothing is
/// waiting, or every [`SYNC_STATE_DELAY`] under load: each is its own transaction with its own
/// fsync, and written after every batch they doubled the fsyncs every change waits behind. They
/// only save bandwidth on a peer's next reconnect; one lost in a crash costs that peer a longer
/// first exchange, never data.
async fn run_writer(
    store: Arc<dyn RelayStore>,
    mut queue: mpsc::UnboundedReceiver<Write>,
    hub: mpsc::Sender<Command>,
    metrics: Arc<Metrics>,
) {
    let mut states: HashMap<(DocumentId, String), SyncStateRecord> = HashMap::new();
    let mut states_written = Instant::now();
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        let mut tickets = Vec::new();
        let mut changes = Vec::new();
        for write in batch {
            match write {
                Write::Changes { ticket, changes: c } => {
                    tickets.push(ticket);
                    changes.push(c);
                }
                Write::SyncState(record) => {
                    states.insert((record.document, record.peer_storage_id.clone()), record);
                }
            }
        }
        if !changes.is_empty() {
            let started = Instant::now();
            let writing = store.clone();
            let outcome =
                tokio::task::spawn_blocking(move || writing.append_changes(&changes)).await;
            let ok = match outcome {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    tracing::error!("committing changes failed: {e}");
                    false
                }
                Err(e) => {
                    tracing::error!("commit task failed: {e}");
                    false
                }
            };
            metrics.commits.inc();
            metrics
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
            // The answers and the fan-out wait for this commit only: the sync states below are
            // not what anyone was promised, and their transaction (with its own fsync) used to
            // add its time to every acknowledgement.
            let _ = hub.send(Command::Committed { tickets, ok }).await;
        }
        if !states.is_empty() && (queue.is_empty() || states_written.elapsed() >= SYNC_STATE_DELAY)
        {
            save_sync_states(&store, std::mem::take(&mut states)).await;
            states_written = Instant::now();
        }
    }
    if !states.is_empty() {
        save_sync_states(&store, states).await;
    }
}

/// Writes sync states; failing to keep them fails nothing else.
async fn save_sync_states(
    store: &Arc<dyn RelayStore>,
    states: HashMap<(DocumentId, String), SyncStateRecord>,
) {
    let states: Vec<SyncStateRecord> = states.into_values().collect();
    let writing = store.clone();
    let outcome = tokio::task::spawn_blocking(move || writing.save_sync_states(&states)).await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("saving sync states failed: {e}"),
        Err(e) => tracing::warn!("sync state task failed: {e}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_outbox_is_bounded_in_bytes_not_frames() {
        let (outbox, mut receiver) = Outbox::new(1000);
        // Thousands of small frames fit as long as their bytes do.
        for _ in 0..99 {
            assert!(outbox.push_frame(vec![0; 10]));
        }
        assert!(
            !outbox.push_frame(vec![0; 20]),
            "990 + 20 bytes is over the budget"
        );
        assert!(outbox.push_frame(vec![0; 10]), "exactly 1000 bytes fits");
        // Writing frees the budget.
        let Some(Outbound::Frame(frame)) = receiver.receiver.try_recv().ok() else {
            panic!("a queued frame")
        };
        receiver.written(frame.len());
        assert!(outbox.push_frame(vec![0; 10]));
    }

    #[test]
    fn one_frame_larger_than_the_budget_goes_out_when_nothing_waits() {
        let (outbox, receiver) = Outbox::new(100);
        assert!(outbox.push_frame(vec![0; 5000]));
        assert!(
            !outbox.push_frame(vec![0; 1]),
            "but nothing may queue behind it"
        );
        receiver.written(5000);
        assert!(outbox.push_frame(vec![0; 1]));
    }
}
