//! Who is on the other end of a connection: its peer id, its storage id and what it told us in the
//! handshake.

use super::ConnectionId;
use crate::ids::string_id_newtype;

string_id_newtype!(
    /// A peer's id for the lifetime of one process (a browser tab, an app run, a relay process).
    ///
    /// automerge-repo treats it as an opaque string; so do we.
    PeerId
);

string_id_newtype!(
    /// The id of a peer's persistent storage. Many peer ids may share one storage id (tabs of one
    /// browser); sync states are saved per storage id so a reconnect resumes where it stopped.
    StorageId
);

/// What a peer says about its storage in `join` and `peer` messages (`peerMetadata`).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct PeerMetadata {
    pub storage_id: Option<StorageId>,
    /// The peer does not expect to come back with this storage id, so its sync state is not worth
    /// saving.
    pub is_ephemeral: bool,
    /// Tandem's reconnect digest (`tandemDigest: 1`): a device that sees it on the relay starts
    /// a reconnect with one digest instead of offering every document; a relay that sees it
    /// answers digests. Plain automerge-repo peers do not send it.
    pub digest: bool,
    /// The reconnect digest's sketch (`tandemSketch: 1`, see `sync::sketch`): a relay that sees
    /// it on a device answers a differing `offer` with a sketch sized to the difference instead
    /// of its bucket digests; a device that sees it on the relay says in its `offer` how many of
    /// its documents changed. A Tandem peer without it gets the bucket exchange.
    pub sketch: bool,
    /// Tandem's snapshot fetch (`tandemFetch: 1`, see `sync::fetch`): a device that sees it on
    /// the relay asks for documents it holds nothing of in one `tandem-fetch` message and gets
    /// their snapshots; a relay that sees it answers such messages.
    pub fetch: bool,
}

/// A peer as the engine knows it once the handshake is done. This is what an
/// [`AccessPolicy`](super::AccessPolicy) decides on; the relay maps the connection id to the
/// authenticated user it accepted the websocket for.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PeerInfo {
    pub connection: ConnectionId,
    pub peer_id: PeerId,
    pub metadata: PeerMetadata,
}

impl PeerInfo {
    /// The storage id under which this peer's sync states are saved, if they are worth saving.
    pub fn durable_storage_id(&self) -> Option<&StorageId> {
        if self.metadata.is_ephemeral {
            None
        } else {
            self.metadata.storage_id.as_ref()
        }
    }
}
