//! Tandem's relay: devices sync through it over the automerge-repo protocol. It authenticates
//! devices, persists changes before acknowledging them and fans them out to the other peers.
//!
//! `tandem-server serve` runs it; [`Server`] runs it inside another program (the tests do).
#![forbid(unsafe_code)]

pub mod access;
pub mod accounts;
pub mod admin;
pub mod app;
pub mod auth;
pub mod config;
mod connection;
pub mod error;
pub mod metrics;
pub mod relay;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use tandem_core::sync::Limits;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use error::{Error, Result};

use crate::app::AppState;
use crate::auth::AuthConfig;
use crate::config::ServeConfig;
use crate::connection::{ConnectionLimits, UserConnections};
use crate::metrics::Metrics;
use crate::relay::{Relay, RelayConfig};
use crate::store::Database;

/// A relay bound to its address, ready to run.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    relay: Relay,
    state: AppState,
    shutdown: watch::Sender<bool>,
}

impl Server {
    /// Opens the database (`config.database`, or the SQLite file under `config.data`) and binds
    /// `config.listen`.
    pub async fn bind(config: &ServeConfig) -> Result<Self> {
        config.validate()?;
        let location = config.database_location()?;
        // Opening is blocking (and the PostgreSQL client must not run inside an async task).
        let store = blocking(move || Database::open(&location))
            .await?
            .into_relay_store();
        let listener = TcpListener::bind(config.listen).await?;
        let limits = Limits {
            max_frame_bytes: config.max_frame_bytes,
            max_documents_per_connection: config.max_documents_per_connection,
        };
        let relay_config = RelayConfig {
            limits,
            eviction: config.eviction(),
        };
        let relay = Relay::start(store, relay_config, Arc::new(Metrics::new())).await?;
        let (shutdown, shutdown_watch) = watch::channel(false);
        let state = AppState {
            relay: relay.handle(),
            limits: ConnectionLimits {
                idle_timeout: config.idle_timeout(),
                send_queue_bytes: config.send_queue_bytes,
                messages_per_second: config.max_messages_per_second,
                message_burst: config.message_burst,
            },
            per_user: UserConnections::new(config.max_connections_per_user),
            max_frame_bytes: config.max_frame_bytes,
            auth: AuthConfig {
                allow_anonymous: config.allow_anonymous,
            },
            shutdown: shutdown_watch,
        };
        Ok(Self {
            listener,
            relay,
            state,
            shutdown,
        })
    }

    /// The address the relay listens on (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `stop` completes, then closes every connection and waits until everything
    /// the relay accepted is committed.
    pub async fn run(self, stop: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let Self {
            listener,
            relay,
            state,
            shutdown,
        } = self;
        let router = app::app(state);
        let graceful = async move {
            stop.await;
            tracing::info!("shutting down: closing connections");
            let _ = shutdown.send(true);
        };
        // Frames go out as the hub hands them over: without TCP_NODELAY a small frame after a
        // large one (a fetch's `done` after its snapshot batches) can wait for the peer's
        // delayed acknowledgement, tens of milliseconds.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!("could not set TCP_NODELAY on a connection: {e}");
            }
        });
        axum::serve(listener, router)
            .with_graceful_shutdown(graceful)
            .await?;
        relay.shutdown().await;
        tracing::info!("relay stopped");
        Ok(())
    }
}

/// Runs the relay until SIGTERM or Ctrl-C.
pub async fn serve(config: ServeConfig) -> Result<()> {
    let server = Server::bind(&config).await?;
    let address = server.local_addr()?;
    // The location shows no password.
    let database = config.database_location()?;
    tracing::info!(%address, %database, "relay listening");
    if config.allow_anonymous {
        tracing::warn!(
            "--allow-anonymous: connections without a token may read and write everything"
        );
    }
    // A line on stdout that scripts and tests wait for.
    println!("tandem-server listening on {address}");
    server.run(stop_signal()).await
}

/// Runs blocking work (storage) on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(Error::Io(std::io::Error::other(format!(
            "storage task failed: {e}"
        ))))
    })
}

/// Completes on SIGTERM or SIGINT.
async fn stop_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
