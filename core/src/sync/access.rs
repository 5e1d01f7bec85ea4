//! The access hook: who may read or write which document, decided per document per message.

use super::PeerInfo;
use crate::ids::DocumentId;

/// What a peer may do with one document.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    /// The peer is answered exactly as if the document did not exist (`doc-unavailable`).
    None,
    /// The peer receives changes; changes it sends are never applied, persisted or forwarded
    /// (automerge's read-only sync state).
    Read,
    ReadWrite,
}

/// Decides a peer's access to a document. The engine asks on every incoming `request`, `sync` and
/// `ephemeral` message and before every outgoing sync message, so a revoked pairing takes effect on
/// the next message. Implementations should be cheap (the relay caches per connection).
pub trait AccessPolicy: Send {
    fn access(&self, peer: &PeerInfo, document: &DocumentId) -> Access;

    /// Asked before a peer with `ReadWrite` access applies a sync message that carries changes,
    /// with the document as it stands (empty if new). The relay checks here that every change is
    /// written under an actor bound to the peer's device, and what a new document claims to be.
    /// `ReadWrite` applies the message; `Read` applies it read-only (its changes are dropped,
    /// neither stored nor forwarded); `None` answers `doc-unavailable` as for an absent document.
    fn accept_changes(
        &self,
        _peer: &PeerInfo,
        _document: &DocumentId,
        _current: &automerge::Automerge,
        _message: &automerge::sync::Message,
    ) -> Access {
        Access::ReadWrite
    }

    /// Asked when a peer sends changes for a document it may not see (`access` said `None`). The
    /// engine answers such a peer exactly as it would about an absent document, so the policy
    /// says what it would answer if these changes created a *new* document: `None` if that
    /// creation would be refused, `Read` if the changes would be applied read-only (they cannot
    /// be checked), `ReadWrite` if it would be accepted. Nothing may be recorded: the changes are
    /// never applied, since the id is taken. The default refuses, as the strictest answer.
    fn judge_creation(
        &self,
        _peer: &PeerInfo,
        _document: &DocumentId,
        _message: &automerge::sync::Message,
    ) -> Access {
        Access::None
    }
}

/// automerge-repo's default: whoever knows a document id may read and write it.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl AccessPolicy for AllowAll {
    fn access(&self, _peer: &PeerInfo, _document: &DocumentId) -> Access {
        Access::ReadWrite
    }
}
