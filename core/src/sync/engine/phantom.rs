//! Phantoms: how a peer is answered about a document it may not see.
//!
//! A denied document must be indistinguishable from an absent one for every message a peer can
//! send. An absent document is answered from a fresh, empty document and a fresh sync session
//! (a `request` gets `doc-unavailable`, a `sync` gets automerge's reply inviting the peer to send
//! what it has). So the engine serves a peer that may not see an existing document a *phantom*:
//! its own empty document and sync session for that (connection, document), never stored, never
//! forwarded, never visible to anyone else, answering exactly as an absent document's session
//! would. Changes sent into a phantom are judged as the creation of a new document would be
//! ([`AccessPolicy::judge_creation`](crate::sync::AccessPolicy::judge_creation)); since the id is
//! taken they are never applied, even when that creation would be allowed.
//!
//! Phantoms count against the connection's `max_documents_per_connection`, exactly as the
//! sessions of absent documents do, and are dropped when the connection closes.

use std::panic::{AssertUnwindSafe, catch_unwind};

use automerge::sync::{self, SyncDoc};
use automerge::{Automerge, ReadDoc};

use super::SyncEngine;
use crate::ids::DocumentId;
use crate::sync::document::{PeerSession, PeerStatus};
use crate::sync::message::Message;
use crate::sync::{Access, Connection, ConnectionId};

/// One peer's view of a document it may not see: what it would see were the document absent.
#[derive(Debug)]
pub(super) struct Phantom {
    doc: Automerge,
    session: PeerSession,
}

impl Phantom {
    fn new() -> Self {
        // An absent document's session: nothing saved to resume from, and the access an absent
        // document has (anyone may offer one).
        Self {
            doc: Automerge::new(),
            session: PeerSession::new(None, Access::ReadWrite),
        }
    }
}

/// Whether a sync message brings any change to an empty document: its change chunks may be
/// present yet hold none (automerge's v2 format). Unreadable chunks count as changes, for the
/// policy to judge as it would for an absent document.
fn carries_changes(message: &sync::Message) -> bool {
    if message.changes.is_empty() {
        return false;
    }
    catch_unwind(AssertUnwindSafe(|| {
        let mut scratch = Automerge::new();
        for chunk in message.changes.iter() {
            if scratch.load_incremental(chunk).is_err() {
                return true;
            }
        }
        !scratch.get_heads().is_empty() || !scratch.get_missing_deps(&[]).is_empty()
    }))
    .unwrap_or(true)
}

impl SyncEngine {
    /// A `request` or `sync` about a document the peer may not see: answered as `apply_sync`
    /// answers it for an absent document.
    pub(super) fn phantom_sync(
        &mut self,
        connection: ConnectionId,
        document: DocumentId,
        data: Vec<u8>,
        is_request: bool,
    ) {
        // A real session of this peer (access was just withdrawn) must not keep syncing.
        if let Some(hot) = self.documents.get_mut(&document) {
            hot.sessions.remove(&connection);
        }
        let exists = self
            .phantoms
            .get(&connection)
            .is_some_and(|held| held.contains_key(&document));
        if !exists {
            if self.session_count(connection) >= self.config.limits.max_documents_per_connection {
                return self.fail(connection, "too many documents on one connection");
            }
            self.phantoms
                .entry(connection)
                .or_default()
                .insert(document, Phantom::new());
        }
        // Borrowed field by field: the policy and the peer are read while the phantom changes.
        let Some(phantom) = self
            .phantoms
            .get_mut(&connection)
            .and_then(|held| held.get_mut(&document))
        else {
            return;
        };
        phantom.session.apply_access(Access::ReadWrite);
        if is_request && phantom.session.status == PeerStatus::Unknown {
            phantom.session.status = PeerStatus::Wants;
        }
        let message = match sync::Message::decode(&data) {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(%connection, %document, "undecodable sync message: {e}");
                phantom.session = PeerSession::restarted(None, Access::ReadWrite);
                return self.flush_phantom(connection, document);
            }
        };
        if carries_changes(&message) {
            let verdict = match self.connections.get(&connection).and_then(Connection::peer) {
                Some(peer) => self.policy.judge_creation(peer, &document, &message),
                None => Access::None,
            };
            match verdict {
                Access::Read => phantom.session.apply_access(Access::Read),
                // A creation that would be refused is answered as for an absent id; one that
                // would be accepted cannot be stored under a taken id and is refused too (the
                // one residual difference, documented in docs/access.md).
                Access::None | Access::ReadWrite => {
                    self.drop_phantoms(connection, Some(document));
                    return self.send_unavailable(connection, document);
                }
            }
        }
        if !message.heads.is_empty() {
            phantom.session.status = PeerStatus::Has;
        }
        let Phantom { doc, session } = phantom;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            doc.receive_sync_message(&mut session.state, message)
        }));
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(%connection, %document, "automerge rejected a sync message: {e}");
                *session = PeerSession::restarted(None, Access::ReadWrite);
                return self.flush_phantom(connection, document);
            }
            Err(_) => {
                tracing::error!(%connection, %document, "automerge panicked on a sync message");
                *doc = Automerge::new();
                *session = PeerSession::restarted(None, Access::ReadWrite);
                return self.flush_phantom(connection, document);
            }
        }
        // Read-only or without changes: the phantom stays empty, so a request is answered as
        // `answer_unavailable` answers one for an empty document nobody supplies.
        if is_request {
            session.status = PeerStatus::ToldUnavailable;
            return self.send_unavailable(connection, document);
        }
        self.flush_phantom(connection, document);
    }

    /// `flush` for one phantom: what an empty document's session would send. Sync states are
    /// not saved (a phantom is never stored).
    fn flush_phantom(&mut self, connection: ConnectionId, document: DocumentId) {
        let Some(peer) = self.connections.get(&connection).and_then(Connection::peer) else {
            return;
        };
        let target_id = peer.peer_id.clone();
        let Some(Phantom { doc, session }) = self.phantom_mut(connection, document) else {
            return;
        };
        if session.status == PeerStatus::ToldUnavailable {
            return;
        }
        session.apply_access(Access::ReadWrite);
        session.advertise(&doc.get_heads());
        let generated = catch_unwind(AssertUnwindSafe(|| {
            doc.generate_sync_message(&mut session.state)
        }));
        let Ok(message) = generated else {
            tracing::error!(%connection, %document, "automerge panicked generating a message");
            *session = PeerSession::restarted(None, Access::ReadWrite);
            return;
        };
        let is_request =
            session.state.shared_heads.is_empty() && session.status == PeerStatus::Unknown;
        let Some(message) = message else {
            return;
        };
        session.advertised = Some(message.heads.clone());
        let data = message.encode();
        let sender_id = self.config.peer_id.clone();
        let wire = Message::sync_data(is_request, sender_id, target_id, document, data);
        self.send(connection, &wire);
    }

    fn phantom_mut(
        &mut self,
        connection: ConnectionId,
        document: DocumentId,
    ) -> Option<&mut Phantom> {
        self.phantoms.get_mut(&connection)?.get_mut(&document)
    }

    /// How many phantoms a connection holds.
    pub(super) fn phantom_count(&self, connection: ConnectionId) -> usize {
        self.phantoms.get(&connection).map_or(0, |held| held.len())
    }

    /// Drops a connection's phantoms (it closed), or the phantom of a document it may now see.
    pub(super) fn drop_phantoms(&mut self, connection: ConnectionId, document: Option<DocumentId>) {
        if self.phantoms.is_empty() {
            return;
        }
        match document {
            Some(document) => {
                if let Some(held) = self.phantoms.get_mut(&connection) {
                    held.remove(&document);
                    if held.is_empty() {
                        self.phantoms.remove(&connection);
                    }
                }
            }
            None => {
                self.phantoms.remove(&connection);
            }
        }
    }

    /// How many phantoms the engine holds, over all connections.
    #[cfg(test)]
    pub(crate) fn phantom_total(&self) -> usize {
        self.phantoms.values().map(|held| held.len()).sum()
    }
}
