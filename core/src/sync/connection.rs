//! One connection's place in the handshake.

use std::fmt;

use super::PeerInfo;

/// A connection as the engine numbers them; the driver maps it to its socket.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ConnectionId(pub(crate) u64);

impl ConnectionId {
    /// The number behind the id, for logs and for drivers that key sockets by integer.
    pub fn get(&self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn-{}", self.0)
    }
}

/// Who opened the connection, which decides who speaks first.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Direction {
    /// We dialled: we send `join` and wait for `peer`.
    Outgoing,
    /// We accepted: we wait for `join` and answer `peer`.
    Incoming,
}

/// Where a connection is in its life.
#[derive(Clone, Debug)]
pub(crate) enum Connection {
    AwaitingJoin,
    AwaitingPeer,
    Established(PeerInfo),
}

impl Connection {
    pub(crate) fn peer(&self) -> Option<&PeerInfo> {
        match self {
            Self::Established(peer) => Some(peer),
            Self::AwaitingJoin | Self::AwaitingPeer => None,
        }
    }
}
