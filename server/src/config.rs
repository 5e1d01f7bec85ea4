//! The relay's settings, read from command-line flags or `TANDEM_*` environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How `tandem-server serve` runs. Every field has a safe default: loopback only, data in
/// `./tandem-data`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// Address to listen on. Loopback by default, so a relay is never exposed by accident.
    #[arg(long, env = "TANDEM_LISTEN", default_value = "127.0.0.1:3030")]
    pub listen: SocketAddr,

    /// Folder for the relay's SQLite database (created if missing).
    #[arg(long, env = "TANDEM_DATA", default_value = "tandem-data")]
    pub data: PathBuf,

    /// A PostgreSQL database instead of the SQLite file under `--data`
    /// (`postgres://user:password@host:port/database`): several relays may share it, and changes
    /// made through one reach devices connected to the others. Its password is never logged.
    #[arg(long, env = "TANDEM_DATABASE", hide_env_values = true)]
    pub database: Option<String>,

    /// Largest websocket frame accepted, in bytes. Larger frames close the connection.
    #[arg(long, env = "TANDEM_MAX_FRAME_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_frame_bytes: usize,

    /// A connection that sends nothing for this many seconds is closed.
    #[arg(long, env = "TANDEM_IDLE_TIMEOUT_SECS", default_value_t = 300)]
    pub idle_timeout_secs: u64,

    /// Bytes of frames queued for one connection before it is dropped as too slow to read them.
    /// Bounds a connection's memory without punishing a device that reconnects with thousands of
    /// documents (thousands of small replies at once). One frame larger than this still goes out
    /// when nothing else is queued.
    #[arg(long, env = "TANDEM_SEND_QUEUE_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub send_queue_bytes: usize,

    /// Most documents one connection may sync.
    #[arg(
        long,
        env = "TANDEM_MAX_DOCUMENTS_PER_CONNECTION",
        default_value_t = 100_000
    )]
    pub max_documents_per_connection: usize,

    /// Most connections one user may hold at once (all devices together); more are refused at
    /// the upgrade with `429`. Anonymous development connections are not counted.
    #[arg(long, env = "TANDEM_MAX_CONNECTIONS_PER_USER", default_value_t = 16)]
    pub max_connections_per_user: usize,

    /// Messages per second one connection may send, sustained; beyond that the relay reads its
    /// frames more slowly (the socket's flow control holds the sender back), nothing is dropped.
    /// 0 turns the limit off.
    #[arg(long, env = "TANDEM_MAX_MESSAGES_PER_SECOND", default_value_t = 1_000)]
    pub max_messages_per_second: u32,

    /// Messages a connection may send at once above the sustained rate. Large by default: a
    /// device reconnecting may offer every document it holds in one burst.
    #[arg(long, env = "TANDEM_MESSAGE_BURST", default_value_t = 100_000)]
    pub message_burst: u32,

    /// A document no peer has synced for this many seconds is dropped from the relay's memory;
    /// it stays on disk and is loaded again when a peer next asks for it. 0 drops it at the next
    /// sweep (a few times per this delay, at least every 5 s). A document with a change not yet
    /// committed, or with a connected peer syncing it, is never dropped.
    #[arg(long, env = "TANDEM_EVICT_IDLE_SECS", default_value_t = 60)]
    pub evict_idle_secs: u64,

    /// Most documents held in memory: beyond it, documents no peer syncs are dropped at once,
    /// the longest unused first, without waiting for `--evict-idle-secs`. Documents peers are
    /// syncing count but are never dropped, so this is a target, not a hard limit. No limit by
    /// default.
    #[arg(long, env = "TANDEM_MAX_HOT_DOCUMENTS")]
    pub max_hot_documents: Option<usize>,

    /// How many devices' reconnect-digest indexes (one entry per document synced with that
    /// device, about 200 bytes each) stay in memory, so that a device reconnecting with nothing
    /// changed is answered without reading its documents' heads; the least recently reconnected
    /// go first. 0 reads them on every reconnect.
    #[arg(long, env = "TANDEM_PEER_INDEX_CACHE", default_value_t = tandem_core::sync::DEFAULT_PEER_INDEX_CACHE)]
    pub peer_index_cache: usize,

    /// DEVELOPMENT ONLY: admit connections without a token, as anonymous peers that may read and
    /// write every document. Never on by default.
    #[arg(long, env = "TANDEM_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,

    /// TLS terminates in a proxy in front of this relay: allows listening on a non-loopback
    /// address, which is otherwise refused (tokens would cross the network in clear text).
    #[arg(long, env = "TANDEM_BEHIND_TLS_PROXY")]
    pub behind_tls_proxy: bool,
}

impl ServeConfig {
    /// Refuses settings that would expose tokens: a non-loopback address without
    /// `--behind-tls-proxy` (the relay does not serve TLS itself).
    pub fn validate(&self) -> crate::Result<()> {
        if !self.listen.ip().is_loopback() && !self.behind_tls_proxy {
            return Err(crate::Error::Config(format!(
                "refusing to listen on {} without TLS: bearer tokens would cross the network in \
                 clear text. Put a TLS-terminating proxy in front and pass --behind-tls-proxy, or \
                 listen on a loopback address",
                self.listen
            )));
        }
        Ok(())
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    pub fn eviction(&self) -> crate::relay::Eviction {
        crate::relay::Eviction {
            idle: Duration::from_secs(self.evict_idle_secs),
            max_hot_documents: self.max_hot_documents,
            peer_indexes: self.peer_index_cache,
        }
    }

    /// The SQLite database file inside the data folder.
    pub fn database_path(&self) -> PathBuf {
        self.data.join("relay.sqlite")
    }

    /// Where the relay's database is: `--database`, or the SQLite file under `--data`.
    pub fn database_location(&self) -> crate::Result<crate::store::DatabaseLocation> {
        crate::store::DatabaseLocation::new(self.database.as_deref(), &self.data)
    }
}
