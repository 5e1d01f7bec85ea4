//! The engine's side of the snapshot fetch (see `sync::fetch` for the exchange): the device
//! lists the documents it holds nothing of and stores the snapshots it gets; the relay answers
//! with committed snapshots of the readable ones.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};

use automerge::sync;
use automerge::{Automerge, ChangeHash, Prop, ReadDoc};

use super::{SyncEngine, changed_paths};
use crate::ids::DocumentId;
use crate::sync::digest;
use crate::sync::document::{HotDocument, PeerStatus, UnloadedSnapshot};
use crate::sync::fetch::{
    self, BATCH_BYTES, FetchProgress, MAX_SNAPSHOT_BYTES, MAX_WANT_IDS, Serving, SnapshotPersist,
};
use crate::sync::message::{FetchStep, Message};
use crate::sync::{Access, ChangedPaths, Connection, ConnectionId, Effect, PersistTicket, Role};

impl SyncEngine {
    /// How far the snapshot fetch with the peer on `connection` has come; `None` if it never
    /// started one.
    pub fn fetch_progress(&self, connection: ConnectionId) -> Option<FetchProgress> {
        self.fetching.get(&connection).map(|f| f.progress)
    }

    fn send_fetch(&mut self, connection: ConnectionId, step: FetchStep) {
        let Some(peer) = self.connections.get(&connection).and_then(Connection::peer) else {
            return;
        };
        let message = Message::Fetch {
            sender_id: self.config.peer_id.clone(),
            target_id: peer.peer_id.clone(),
            step,
        };
        self.send(connection, &message);
    }

    // ---- device -----------------------------------------------------------------------------

    /// Device: lists a loaded document that holds nothing in the next `want` to the peer on
    /// `connection`, if that peer answers them. False if the document goes the plain way.
    pub(super) fn want(&mut self, document: DocumentId, connection: ConnectionId) -> bool {
        if self.config.role != Role::Device || !self.config.snapshot_fetch {
            return false;
        }
        if !self
            .connections
            .get(&connection)
            .and_then(Connection::peer)
            .is_some_and(|peer| peer.metadata.fetch)
        {
            return false;
        }
        let Some(hot) = self.documents.get(&document) else {
            return false;
        };
        // A session already running (a reload resuming it) stays on the plain protocol.
        if hot.is_loading()
            || !hot.is_empty()
            || !hot.pending.is_empty()
            || hot.sessions.contains_key(&connection)
        {
            return false;
        }
        if self.decide(connection, &document) == Access::None {
            return false;
        }
        let fetching = self.fetching.entry(connection).or_default();
        if !fetching.awaits(&document) {
            fetching.to_want.insert(document);
        }
        true
    }

    /// Device: sends the ids collected since the last call as `want`s. Run when the driver takes
    /// the effects, so every document opened in one turn goes in one message.
    pub(super) fn send_wants(&mut self) {
        let mut connections: Vec<ConnectionId> = self
            .fetching
            .iter()
            .filter(|(_, f)| !f.to_want.is_empty())
            .map(|(c, _)| *c)
            .collect();
        connections.sort();
        for connection in connections {
            let Some(fetching) = self.fetching.get_mut(&connection) else {
                continue;
            };
            let ids: Vec<DocumentId> = std::mem::take(&mut fetching.to_want).into_iter().collect();
            for chunk in ids.chunks(MAX_WANT_IDS) {
                if let Some(fetching) = self.fetching.get_mut(&connection) {
                    fetching
                        .outstanding
                        .push_back(chunk.iter().copied().collect());
                }
                self.send_fetch(connection, FetchStep::Want(fetch::encode_ids(chunk.iter())));
            }
        }
    }

    pub(super) fn receive_fetch(&mut self, connection: ConnectionId, step: FetchStep) {
        if !self.config.snapshot_fetch {
            // We never advertised it; a peer sending it anyway is ignored like any unknown type.
            return;
        }
        match (self.config.role, step) {
            (Role::Relay, FetchStep::Want(ids)) => self.serve_want(connection, &ids),
            (Role::Device, FetchStep::Manifest { count, bytes }) => {
                if let Some(fetching) = self.fetching.get_mut(&connection)
                    && !fetching.outstanding.is_empty()
                {
                    fetching.progress.documents_total += count;
                    fetching.progress.bytes_total += bytes;
                }
            }
            (Role::Device, FetchStep::Snapshots(batch)) => {
                self.receive_snapshots(connection, &batch);
            }
            (Role::Device, FetchStep::Done { unavailable, plain }) => {
                self.fetch_done(connection, &unavailable, &plain);
            }
            (role, step) => {
                tracing::debug!(%connection, ?role, step = ?std::mem::discriminant(&step), "ignoring an unexpected fetch step");
            }
        }
    }

    fn receive_snapshots(&mut self, connection: ConnectionId, batch: &[u8]) {
        let Some(entries) = fetch::decode_snapshots(batch) else {
            return self.fail(connection, "malformed snapshot batch");
        };
        for (document, snapshot) in entries {
            // Only what the oldest unanswered `want` asked for; anything else is ignored.
            let asked = self
                .fetching
                .get_mut(&connection)
                .and_then(|f| f.outstanding.front_mut())
                .is_some_and(|front| front.remove(&document));
            if asked {
                self.load_snapshot(connection, document, snapshot);
            }
        }
    }

    /// Device: stores one snapshot into the (hot) document: a document that holds nothing and
    /// that no session reads gets it whole without loading it (see [`Self::store_unloaded`]);
    /// otherwise it is loaded or merged and the new changes persisted. Progress counts it once
    /// the persist commits.
    fn load_snapshot(&mut self, connection: ConnectionId, document: DocumentId, snapshot: &[u8]) {
        let size = snapshot.len() as u64;
        if self.store_unloaded(connection, document, snapshot) {
            return;
        }
        let Some(doc) = self
            .documents
            .get_mut(&document)
            .and_then(|h| h.doc.as_mut())
        else {
            // No longer hot: nothing to store it into. The plain protocol gets it when reopened.
            return self.count_fetched(connection, size);
        };
        let before = doc.get_heads();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            if before.is_empty() {
                // Loading whole is cheaper than merging into the empty document.
                *doc = Automerge::load(snapshot)?;
                Ok(0)
            } else {
                doc.load_incremental(snapshot)
            }
        }));
        let after = doc.get_heads();
        match outcome {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(%connection, %document, "a snapshot automerge refused: {e}");
            }
            Err(_) => {
                tracing::error!(%connection, %document, "automerge panicked loading a snapshot");
                self.count_fetched(connection, size);
                return self.reload_document(document);
            }
        }
        if after == before {
            // Nothing new (or nothing usable): the plain protocol settles it with the peer.
            self.count_fetched(connection, size);
            self.offer(document, connection);
            return self.flush(document);
        }
        let Some(doc) = self.documents.get(&document).and_then(|h| h.doc.as_ref()) else {
            return;
        };
        // Into an empty document the snapshot is stored as it came: compact already.
        let changes = if before.is_empty() {
            snapshot.to_vec()
        } else {
            doc.save_after(&before)
        };
        // A document that arrives whole changed everywhere: its root keys say so without
        // diffing every value (which cost about as much as loading it).
        let paths = if before.is_empty() {
            whole_document_paths(doc, &after)
        } else {
            changed_paths(doc, &before, &after)
        };
        let heads = before.is_empty().then(|| after.clone());
        let known_heads = heads.is_some();
        let ticket = self.persist(document, changes, Some(paths));
        self.snapshot_persists.insert(
            ticket,
            SnapshotPersist {
                connection,
                document,
                heads,
                bytes: size,
            },
        );
        if !known_heads {
            // The document held local changes: what the peer holds is settled the plain way.
            self.offer(document, connection);
        }
    }

    /// Device: hands a snapshot to storage as it came and keeps it unloaded, if the document
    /// holds nothing, no session is running for it and the snapshot is one document chunk whose
    /// header names its heads (`fetch::snapshot_heads`). Loading it would be most of the cost
    /// of a fetched document, and nothing may ever read it in this run: its heads alone answer
    /// the sync state, the digest, progress and the change notification. It is loaded when
    /// something needs its content (`SyncEngine::loaded`). The driver verifies it as it stores
    /// it: the device's store loads every document it creates (its query projection is read
    /// from it) and refuses one that does not load, so nothing unverified is committed.
    fn store_unloaded(
        &mut self,
        connection: ConnectionId,
        document: DocumentId,
        snapshot: &[u8],
    ) -> bool {
        let Some(hot) = self.documents.get_mut(&document) else {
            return false;
        };
        if hot.doc.is_none()
            || !hot.is_empty()
            || !hot.sessions.is_empty()
            || !hot.pending.is_empty()
            || !hot.queued.is_empty()
        {
            return false;
        }
        let Some(heads) = fetch::snapshot_heads(snapshot) else {
            return false;
        };
        hot.doc = None;
        hot.snapshot = Some(UnloadedSnapshot {
            bytes: snapshot.to_vec(),
            heads: heads.clone(),
        });
        let paths = ChangedPaths {
            heads: heads.clone(),
            whole_document: true,
            ..ChangedPaths::default()
        };
        let ticket = self.persist(document, snapshot.to_vec(), Some(paths));
        self.snapshot_persists.insert(
            ticket,
            SnapshotPersist {
                connection,
                document,
                heads: Some(heads),
                bytes: snapshot.len() as u64,
            },
        );
        true
    }

    fn count_fetched(&mut self, connection: ConnectionId, bytes: u64) {
        if let Some(fetching) = self.fetching.get_mut(&connection) {
            fetching.progress.documents_done += 1;
            fetching.progress.bytes_done += bytes;
        }
    }

    /// Device: a stored snapshot's persist committed; the peer that sent it holds its heads.
    pub(super) fn snapshot_persisted(&mut self, ticket: PersistTicket) {
        let Some(stored) = self.snapshot_persists.remove(&ticket) else {
            return;
        };
        self.count_fetched(stored.connection, stored.bytes);
        if let Some(heads) = stored.heads {
            self.save_shared_heads(stored.connection, stored.document, &heads);
            if let Some(fetching) = self.fetching.get_mut(&stored.connection) {
                fetching.held_by_peer.insert(stored.document, heads);
            }
        }
    }

    /// Device: a stored snapshot's persist failed; the document reloads and is asked for again.
    pub(super) fn snapshot_persist_failed(&mut self, ticket: PersistTicket) {
        self.snapshot_persists.remove(&ticket);
    }

    fn fetch_done(&mut self, connection: ConnectionId, unavailable: &[u8], plain: &[u8]) {
        let (Some(unavailable), Some(_plain)) =
            (digest::decode_ids(unavailable), digest::decode_ids(plain))
        else {
            return self.fail(connection, "malformed fetch answer");
        };
        let Some(asked) = self
            .fetching
            .get_mut(&connection)
            .and_then(|f| f.outstanding.pop_front())
        else {
            return;
        };
        let unavailable: HashSet<DocumentId> = unavailable.into_iter().collect();
        let mut rest: Vec<DocumentId> = asked.into_iter().collect();
        rest.sort();
        for document in rest {
            if unavailable.contains(&document) {
                // As a `doc-unavailable` answer to a `request`: the session records it, and the
                // peer sends the document if it appears later.
                let access = self.decide(connection, &document);
                if access != Access::None {
                    self.ensure_session(document, connection, access);
                    if let Some(session) = self
                        .documents
                        .get_mut(&document)
                        .and_then(|hot| hot.sessions.get_mut(&connection))
                    {
                        session.status = PeerStatus::Unavailable;
                    }
                }
                self.report_if_unavailable(document);
            } else {
                // Left to the plain protocol, or not answered at all: asked for the plain way.
                self.offer(document, connection);
                self.flush(document);
            }
        }
    }

    /// Device: the heads a peer holds because it sent us their snapshot, while no session runs.
    pub(super) fn fetched_heads(
        &self,
        document: &DocumentId,
        connection: ConnectionId,
    ) -> Option<&Vec<ChangeHash>> {
        self.fetching.get(&connection)?.held_by_peer.get(document)
    }

    /// Device: whether the document is asked for on `connection` and not yet answered.
    pub(super) fn fetch_awaits(&self, document: &DocumentId, connection: ConnectionId) -> bool {
        self.fetching
            .get(&connection)
            .is_some_and(|f| f.awaits(document))
            || self
                .snapshot_persists
                .values()
                .any(|p| p.connection == connection && p.document == *document)
    }

    // ---- relay ------------------------------------------------------------------------------

    fn serve_want(&mut self, connection: ConnectionId, ids: &[u8]) {
        let Some(ids) = digest::decode_ids(ids) else {
            return self.fail(connection, "malformed fetch want");
        };
        if ids.len() > MAX_WANT_IDS {
            return self.fail(connection, "too many documents in one fetch");
        }
        // Unanswered `want`s hold their documents' snapshots: bounded like sessions are.
        let queued: usize = self.serving.get(&connection).map_or(0, |queue| {
            queue
                .iter()
                .map(|s| s.waiting.len() + s.snapshots.len() + s.unavailable.len() + s.plain.len())
                .sum()
        });
        if queued + ids.len() > self.config.limits.max_documents_per_connection {
            return self.fail(connection, "too many documents on one connection");
        }
        let mut serving = Serving::default();
        let mut seen = HashSet::new();
        for document in ids {
            if !seen.insert(document) {
                continue;
            }
            // Denied documents are answered in `done` exactly as absent ones are; they are not
            // even loaded.
            if self.decide(connection, &document) == Access::None {
                serving.unavailable.push(document);
                continue;
            }
            serving.waiting.insert(document);
            let waiters = self.fetch_waiters.entry(document).or_default();
            if !waiters.contains(&connection) {
                waiters.push(connection);
            }
            if let std::collections::btree_map::Entry::Vacant(entry) =
                self.documents.entry(document)
            {
                entry.insert(HotDocument::loading());
                self.effects.push(Effect::LoadDocument { document });
            }
        }
        let mut ready: Vec<DocumentId> = serving.waiting.iter().copied().collect();
        ready.sort();
        self.serving
            .entry(connection)
            .or_default()
            .push_back(serving);
        for document in ready {
            self.fetch_document_settled(document);
        }
        self.send_served(connection);
    }

    /// Relay: the document loaded, committed, or failed to load; the fetches waiting for it take
    /// its snapshot now unless it is still loading or has a commit outstanding.
    pub(super) fn fetch_document_settled(&mut self, document: DocumentId) {
        if !self.fetch_waiters.contains_key(&document) {
            return;
        }
        // (heads, snapshot) of a committed document holding something; `None` if absent.
        let snapshot = match self.documents.get(&document) {
            Some(hot) if hot.is_loading() || !hot.pending.is_empty() => return,
            Some(hot) if hot.is_empty() => None,
            Some(_) => self.heads(&document).zip(self.save_document(&document)),
            None => None,
        };
        let waiters = self.fetch_waiters.remove(&document).unwrap_or_default();
        for connection in waiters {
            let access = self.decide(connection, &document);
            let mut absent_readable = false;
            if let Some(queue) = self.serving.get_mut(&connection) {
                for serving in queue.iter_mut() {
                    if !serving.waiting.remove(&document) {
                        continue;
                    }
                    match &snapshot {
                        _ if access == Access::None => serving.unavailable.push(document),
                        None => {
                            serving.unavailable.push(document);
                            absent_readable = true;
                        }
                        Some((_, bytes)) if bytes.len() > MAX_SNAPSHOT_BYTES => {
                            serving.plain.push(document);
                        }
                        Some((heads, bytes)) => {
                            serving
                                .snapshots
                                .push((document, heads.clone(), bytes.clone()));
                        }
                    }
                }
            }
            if absent_readable
                && self
                    .documents
                    .get(&document)
                    .is_some_and(|h| !h.is_loading())
            {
                // As after a `request` we had to answer with `doc-unavailable`: the peer hears
                // from us once the document holds something.
                self.ensure_session(document, connection, access);
                if let Some(session) = self
                    .documents
                    .get_mut(&document)
                    .and_then(|hot| hot.sessions.get_mut(&connection))
                {
                    session.status = PeerStatus::ToldUnavailable;
                }
            }
            self.send_served(connection);
        }
    }

    /// Relay: answers every `want` at the front of the connection's queue whose documents are all
    /// settled, in the order they came.
    fn send_served(&mut self, connection: ConnectionId) {
        loop {
            let ready = self
                .serving
                .get(&connection)
                .and_then(|queue| queue.front())
                .is_some_and(|serving| serving.waiting.is_empty());
            if !ready {
                return;
            }
            let Some(mut serving) = self
                .serving
                .get_mut(&connection)
                .and_then(|queue| queue.pop_front())
            else {
                return;
            };
            serving.snapshots.sort_by_key(|(document, _, _)| *document);
            let total: u64 = serving
                .snapshots
                .iter()
                .map(|(_, _, bytes)| bytes.len() as u64)
                .sum();
            self.send_fetch(
                connection,
                FetchStep::Manifest {
                    count: serving.snapshots.len() as u64,
                    bytes: total,
                },
            );
            let mut batch = Vec::new();
            for (document, _, bytes) in &serving.snapshots {
                if !batch.is_empty() && batch.len() + bytes.len() > BATCH_BYTES {
                    let full = std::mem::take(&mut batch);
                    self.send_fetch(connection, FetchStep::Snapshots(full));
                }
                fetch::push_snapshot(&mut batch, document, bytes);
            }
            if !batch.is_empty() {
                self.send_fetch(connection, FetchStep::Snapshots(batch));
            }
            // Sorted, so the order tells nothing about which ids were denied.
            serving.unavailable.sort();
            serving.plain.sort();
            self.send_fetch(
                connection,
                FetchStep::Done {
                    unavailable: fetch::encode_ids(serving.unavailable.iter()),
                    plain: fetch::encode_ids(serving.plain.iter()),
                },
            );
            for (document, heads, _) in serving.snapshots {
                self.subscribe_fetched(connection, document, heads);
            }
        }
    }

    /// Relay: the peer on `connection` holds the document at `heads` (we sent it that snapshot),
    /// as after a digest match: it gets a session once the document moves, and the sync state
    /// saved for its storage id starts from those heads.
    fn subscribe_fetched(
        &mut self,
        connection: ConnectionId,
        document: DocumentId,
        heads: Vec<ChangeHash>,
    ) {
        self.subscribed
            .entry(connection)
            .or_default()
            .insert(document, digest::entry_hash(&document, &heads));
        self.save_shared_heads(connection, document, &heads);
        // Moved since the snapshot was taken: its session starts now.
        if self.heads(&document).is_some_and(|now| now != heads) {
            self.flush(document);
        }
    }

    /// Both sides of a fetch: the peer on `connection` and we share the document at `heads`.
    /// The sync state saved for the peer's storage id says so, as a completed sync would: the
    /// relay's next session with the device starts from there, and the device counts the
    /// document as unchanged since it last synced with that relay (the `changed` of its next
    /// reconnect digest, which sizes the sketch).
    fn save_shared_heads(
        &mut self,
        connection: ConnectionId,
        document: DocumentId,
        heads: &[ChangeHash],
    ) {
        let Some(storage_id) = self
            .connections
            .get(&connection)
            .and_then(Connection::peer)
            .and_then(|peer| peer.durable_storage_id().cloned())
        else {
            return;
        };
        let mut state = sync::State::new();
        state.shared_heads = heads.to_vec();
        let state = state.encode();
        if let Some(hot) = self.documents.get_mut(&document) {
            hot.saved_states.insert(storage_id.clone(), state.clone());
        }
        self.index_synced(document, &storage_id);
        self.effects.push(Effect::SaveSyncState {
            document,
            storage_id,
            state,
        });
    }

    /// Forgets the fetch state of a closed connection.
    pub(super) fn forget_fetches(&mut self, connection: ConnectionId) {
        self.fetching.remove(&connection);
        self.snapshot_persists
            .retain(|_, p| p.connection != connection);
        self.serving.remove(&connection);
        self.fetch_waiters.retain(|_, waiters| {
            waiters.retain(|c| *c != connection);
            !waiters.is_empty()
        });
    }
}

/// What changed in a document that was empty: everything under each of its root keys.
fn whole_document_paths(doc: &Automerge, heads: &[ChangeHash]) -> ChangedPaths {
    let top_level_keys: BTreeSet<String> = doc.keys(automerge::ROOT).collect();
    let paths = top_level_keys
        .iter()
        .map(|key| vec![Prop::Map(key.clone())])
        .collect();
    ChangedPaths {
        heads: heads.to_vec(),
        before: Vec::new(),
        top_level_keys,
        paths,
        whole_document: false,
    }
}

/// Relay: the fetches waiting for documents to load or commit, by document.
pub(super) type FetchWaiters = HashMap<DocumentId, Vec<ConnectionId>>;
