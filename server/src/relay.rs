//! The relay's hub. One task owns the [`SyncEngine`]; connection tasks hand it frames, storage
//! tasks hand it loaded documents and commit confirmations, and it turns the engine's effects into
//! frames to send, loads and commits.
//!
//! Durability: the engine emits `Persist` for every batch of new changes and holds back whatever
//! reflects them until it hears `persisted`. The writer task commits persists in batches (group
//! commit) and only then reports them, so "the relay answered" always means "it is on disk".

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use tandem_core::DocumentId;
use tandem_core::sync::{
    ConnectionId, Direction, Effect, EngineConfig, Limits, PersistTicket, Role, StorageId,
    StoredDocument, SyncEngine,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::auth::Identity;
use crate::metrics::Metrics;
use crate::store::{NewChanges, RelayStore, SyncStateRecord};

/// Most persists committed in one transaction.
const MAX_BATCH: usize = 4096;

/// What the relay's tasks tell the hub.
#[derive(Debug)]
pub(crate) enum Command {
    Open {
        outbound: mpsc::Sender<Outbound>,
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
    },
    Committed {
        tickets: Vec<PersistTicket>,
        ok: bool,
    },
    Shutdown,
}

/// What the hub tells one connection task.
#[derive(Debug)]
pub(crate) enum Outbound {
    Frame(Vec<u8>),
    Close(String),
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
}

/// A running hub and writer. Cloneable handles to it go to the HTTP handlers.
#[derive(Debug)]
pub struct Relay {
    handle: RelayHandle,
    hub: JoinHandle<()>,
    writer: JoinHandle<()>,
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
    pub fn start(
        store: Arc<dyn RelayStore>,
        config: RelayConfig,
        metrics: Arc<Metrics>,
    ) -> crate::Result<Self> {
        let storage_id = store.storage_id()?;
        let engine_config = EngineConfig::new(format!("tandem-relay-{storage_id}"), Role::Relay)
            .with_storage_id(StorageId::new(storage_id))
            .with_limits(config.limits);
        let engine = SyncEngine::new(engine_config);
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
        let hub = Hub {
            engine,
            connections: HashMap::new(),
            store,
            writes,
            commands,
            metrics,
            shutting_down: false,
        };
        let hub = tokio::spawn(hub.run(receiver));
        Ok(Self {
            handle,
            hub,
            writer,
        })
    }

    pub fn handle(&self) -> RelayHandle {
        self.handle.clone()
    }

    /// Closes every connection, lets the writer commit what it holds, and waits for both tasks.
    pub async fn shutdown(self) {
        let _ = self.handle.commands.send(Command::Shutdown).await;
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
    connections: HashMap<ConnectionId, (mpsc::Sender<Outbound>, Identity)>,
    store: Arc<dyn RelayStore>,
    writes: mpsc::UnboundedSender<Write>,
    commands: mpsc::Sender<Command>,
    metrics: Arc<Metrics>,
    shutting_down: bool,
}

impl Hub {
    async fn run(mut self, mut receiver: mpsc::Receiver<Command>) {
        while let Some(command) = receiver.recv().await {
            self.handle(command);
            self.dispatch();
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
                    let _ = outbound.try_send(Outbound::Close("relay shutting down".into()));
                    return;
                }
                let connection = self.engine.connection_opened(Direction::Incoming);
                tracing::debug!(%connection, user = %identity, "connection opened");
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
            }
            Command::Closed { connection } => {
                self.connections.remove(&connection);
                self.engine.connection_closed(connection);
            }
            Command::Loaded { document, stored } => match stored {
                Ok(stored) => {
                    if let Err(e) = self.engine.document_loaded(document, stored) {
                        tracing::error!(%document, "stored document cannot be loaded: {e}");
                    }
                }
                Err(e) => {
                    tracing::error!(%document, "loading the document failed: {e}");
                    self.engine.document_load_failed(document);
                }
            },
            Command::Committed { tickets, ok } => {
                for ticket in tickets {
                    if ok {
                        self.engine.persisted(ticket);
                    } else {
                        self.engine.persist_failed(ticket);
                    }
                }
            }
            Command::Shutdown => {
                self.shutting_down = true;
                let open: Vec<_> = self.connections.keys().copied().collect();
                for connection in open {
                    self.close(connection, "relay shutting down");
                }
            }
        }
    }

    fn close(&mut self, connection: ConnectionId, reason: &str) {
        if let Some((outbound, _)) = self.connections.get(&connection) {
            let _ = outbound.try_send(Outbound::Close(reason.to_owned()));
        }
    }

    fn dispatch(&mut self) {
        for effect in self.engine.take_effects() {
            match effect {
                Effect::Send { connection, frame } => {
                    let Some((outbound, _)) = self.connections.get(&connection) else {
                        continue;
                    };
                    if outbound.try_send(Outbound::Frame(frame)).is_err() {
                        // A peer that does not read its frames would grow the relay's memory
                        // without bound; it is disconnected and resyncs when it reconnects.
                        tracing::warn!(%connection, "send queue full; disconnecting slow peer");
                        self.connections.remove(&connection);
                        self.engine.connection_closed(connection);
                    }
                }
                Effect::Close { connection, reason } => {
                    tracing::info!(%connection, "closing connection: {reason}");
                    self.metrics.rejected_frames.inc();
                    self.close(connection, &reason);
                }
                Effect::LoadDocument { document } => self.load(document),
                Effect::Persist {
                    ticket,
                    document,
                    changes,
                } => {
                    let changes = NewChanges {
                        document,
                        bytes: changes,
                    };
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

    fn load(&self, document: DocumentId) {
        let store = self.store.clone();
        let commands = self.commands.clone();
        tokio::spawn(async move {
            let stored = tokio::task::spawn_blocking(move || read_document(&*store, document))
                .await
                .unwrap_or_else(|e| {
                    Err(crate::Error::Io(std::io::Error::other(format!(
                        "load task failed: {e}"
                    ))))
                });
            let _ = commands.send(Command::Loaded { document, stored }).await;
        });
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
async fn run_writer(
    store: Arc<dyn RelayStore>,
    mut queue: mpsc::UnboundedReceiver<Write>,
    hub: mpsc::Sender<Command>,
    metrics: Arc<Metrics>,
) {
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
        let mut states = Vec::new();
        for write in batch {
            match write {
                Write::Changes { ticket, changes: c } => {
                    tickets.push(ticket);
                    changes.push(c);
                }
                Write::SyncState(record) => states.push(record),
            }
        }
        let store = store.clone();
        let started = Instant::now();
        let outcome = tokio::task::spawn_blocking(move || {
            let committed = if changes.is_empty() {
                Ok(())
            } else {
                store.append_changes(&changes)
            };
            // Sync states only save bandwidth on the next reconnect: failing to keep them must
            // not fail the commit of the changes.
            if !states.is_empty()
                && let Err(e) = store.save_sync_states(&states)
            {
                tracing::warn!("saving sync states failed: {e}");
            }
            committed
        })
        .await;
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
        if !tickets.is_empty() {
            let _ = hub.send(Command::Committed { tickets, ok }).await;
        }
    }
}
