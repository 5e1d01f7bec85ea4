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
}

/// automerge-repo's default: whoever knows a document id may read and write it.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl AccessPolicy for AllowAll {
    fn access(&self, _peer: &PeerInfo, _document: &DocumentId) -> Access {
        Access::ReadWrite
    }
}
