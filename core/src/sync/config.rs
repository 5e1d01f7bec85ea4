//! How an engine presents itself and the limits it enforces on peers.

use super::{PeerId, PeerMetadata, StorageId};

/// Which side of the product this engine runs on. Both speak the same protocol; they differ in
/// whom they offer documents to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    /// Syncs every document it holds in memory with every peer it is connected to (the relay),
    /// as an automerge-repo client with `sharePolicy: true` does.
    Device,
    /// Never offers a document first: it syncs a document with a peer only after that peer sent a
    /// `request` or `sync` for it, so a client learns nothing about documents it did not name.
    Relay,
}

/// Limits on what one peer may make the engine do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Limits {
    /// Larger incoming frames get an `error` and the connection is closed.
    pub max_frame_bytes: usize,
    /// How many documents one connection may sync at once; going over gets an `error` and a close.
    pub max_documents_per_connection: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 32 * 1024 * 1024,
            max_documents_per_connection: 100_000,
        }
    }
}

/// How many peers' digest indexes a relay keeps in memory unless configured otherwise.
pub const DEFAULT_PEER_INDEX_CACHE: usize = 256;

/// The engine's configuration.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Our peer id, sent in `join` / `peer` and as `senderId`.
    pub peer_id: PeerId,
    /// Our storage id; peers save their sync state with us under it. `None` makes us an ephemeral
    /// peer (`isEphemeral: true`), as automerge-repo does for a repo without storage.
    pub storage_id: Option<StorageId>,
    pub role: Role,
    pub limits: Limits,
    /// The `sessionId` of the ephemeral messages this engine originates. The engine reads no
    /// randomness, so the driver picks it (a fresh random string per process).
    pub ephemeral_session_id: String,
    /// Take part in the reconnect digest (advertised as `tandemDigest` in `peerMetadata`). On by
    /// default for a device (it only starts one with a peer that advertised it); a relay turns it
    /// on only if its driver answers [`Effect::LoadPeerIndex`](super::Effect::LoadPeerIndex).
    pub reconnect_digest: bool,
    /// With the reconnect digest on, also take part in its sketch (advertised as `tandemSketch`,
    /// see `sync::sketch`): a differing reconnect then costs bytes in proportion to the documents
    /// that differ instead of a bucket list. On by default; off behaves as a Tandem peer from
    /// before the sketch (the bucket exchange).
    pub reconnect_sketch: bool,
    /// Take part in the snapshot fetch (advertised as `tandemFetch` in `peerMetadata`, see
    /// `sync::fetch`). On by default for a device (it only fetches from a peer that advertised
    /// it); a relay turns it on with [`EngineConfig::with_snapshot_fetch`].
    pub snapshot_fetch: bool,
    /// Relay: how many peers' reconnect-digest indexes are kept in memory between reconnects
    /// (see `sync::peer_index`), least recently used out first; 0 reads every peer's index from
    /// storage on each reconnect. Each costs about 200 bytes per document synced with that peer.
    pub peer_index_cache: usize,
}

impl EngineConfig {
    pub fn new(peer_id: impl Into<PeerId>, role: Role) -> Self {
        let peer_id = peer_id.into();
        Self {
            ephemeral_session_id: peer_id.as_str().to_owned(),
            peer_id,
            storage_id: None,
            role,
            limits: Limits::default(),
            reconnect_digest: role == Role::Device,
            reconnect_sketch: true,
            snapshot_fetch: role == Role::Device,
            peer_index_cache: match role {
                Role::Device => 0,
                Role::Relay => DEFAULT_PEER_INDEX_CACHE,
            },
        }
    }

    pub fn with_storage_id(mut self, storage_id: impl Into<StorageId>) -> Self {
        self.storage_id = Some(storage_id.into());
        self
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Turns the reconnect digest on or off.
    pub fn with_reconnect_digest(mut self, on: bool) -> Self {
        self.reconnect_digest = on;
        self
    }

    /// Turns the reconnect digest's sketch on or off (off: the bucket exchange only).
    pub fn with_reconnect_sketch(mut self, on: bool) -> Self {
        self.reconnect_sketch = on;
        self
    }

    /// How many peers' digest indexes a relay keeps in memory (0: none).
    pub fn with_peer_index_cache(mut self, indexes: usize) -> Self {
        self.peer_index_cache = indexes;
        self
    }

    /// Turns the snapshot fetch on or off.
    pub fn with_snapshot_fetch(mut self, on: bool) -> Self {
        self.snapshot_fetch = on;
        self
    }

    pub(crate) fn metadata(&self) -> PeerMetadata {
        PeerMetadata {
            storage_id: self.storage_id.clone(),
            is_ephemeral: self.storage_id.is_none(),
            digest: self.reconnect_digest,
            sketch: self.reconnect_digest && self.reconnect_sketch,
            fetch: self.snapshot_fetch,
        }
    }
}
