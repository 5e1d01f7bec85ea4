//! What the engine wraps: the core's `Device` while offline, its `SyncClient` while sync runs, and
//! the sync records the apps see.
//!
//! Edits go through `with_repo` on either, so the sync engine sees every local commit.

use std::sync::Arc;
use std::time::SystemTime;

use tandem_core::client::{ClientConfig, SyncClient};
use tandem_core::device::{self, Device};
use tandem_core::repo::Repo;

use crate::error::{ApiError, ApiResult};
use crate::records::{DocKind, instant_out};

/// The device, offline or handed to a running (or stopped, not yet reclaimed) sync client.
#[derive(Debug)]
pub(crate) struct Core {
    device: Option<Device>,
    client: Option<Arc<SyncClient>>,
    /// `stop_sync` was called on `client`.
    stopped: bool,
}

impl Core {
    pub(crate) fn new(device: Device) -> Self {
        Self {
            device: Some(device),
            client: None,
            stopped: false,
        }
    }

    pub(crate) fn with_repo<T>(
        &mut self,
        f: impl FnOnce(&mut Repo) -> tandem_core::Result<T>,
    ) -> tandem_core::Result<T> {
        self.with_device(|device| device.with_repo(f))?
    }

    pub(crate) fn with_device<T>(
        &mut self,
        f: impl FnOnce(&mut Device) -> T,
    ) -> tandem_core::Result<T> {
        match (&mut self.device, &self.client) {
            (Some(device), _) => Ok(f(device)),
            (None, Some(client)) => Ok(client.with_device(f)),
            (None, None) => Err(tandem_core::Error::protocol(
                "the sync client did not hand the device back; open the engine again",
            )),
        }
    }

    pub(crate) fn status(&mut self) -> ApiResult<SyncStatus> {
        match &self.client {
            Some(client) if self.device.is_none() => Ok(client.status().into()),
            _ => Ok(self.with_device(|device| device.status())?.into()),
        }
    }

    /// The running client, for `sync_now`.
    pub(crate) fn client(&self) -> Option<Arc<SyncClient>> {
        self.client.clone().filter(|_| !self.stopped)
    }

    /// Hands the device to a new sync client (a no-op while one runs).
    pub(crate) fn start(
        &mut self,
        config: ClientConfig,
        runtime: &tokio::runtime::Handle,
        observer: Box<dyn tandem_core::client::SyncObserver>,
    ) -> ApiResult<()> {
        self.reclaim();
        if self.client.is_some() {
            return match self.stopped {
                false => Ok(()),
                true => Err(ApiError::Other {
                    reason: "sync is still stopping (a sync_now is finishing); try again".into(),
                }),
            };
        }
        let device = self.device.take().ok_or_else(|| ApiError::Other {
            reason: "the engine has no device".into(),
        })?;
        let client = SyncClient::start(device, config, runtime);
        client.add_observer(observer);
        (self.client, self.stopped) = (Some(Arc::new(client)), false);
        Ok(())
    }

    /// Marks the client stopping and returns it, for the caller to stop without the lock held.
    pub(crate) fn stopping(&mut self) -> Option<Arc<SyncClient>> {
        self.stopped = self.client.is_some();
        self.client.clone()
    }

    /// Takes the device back from a stopped client no `sync_now` still holds.
    pub(crate) fn reclaim(&mut self) {
        if !self.stopped {
            return;
        }
        match self.client.take().map(Arc::try_unwrap) {
            Some(Ok(client)) => (self.device, self.stopped) = (client.into_device(), false),
            Some(Err(held)) => self.client = Some(held),
            None => {}
        }
    }
}

/// Whether the device can reach the relay.
#[derive(Clone, Copy, PartialEq, Eq, Debug, uniffi::Enum)]
pub enum ConnectionState {
    /// Not connected and not trying right now (sync stopped, or waiting before a retry).
    Offline,
    /// Dialling the relay, or waiting for its handshake.
    Connecting,
    /// Connected; documents sync.
    Connected,
}

impl From<device::ConnectionState> for ConnectionState {
    fn from(state: device::ConnectionState) -> Self {
        match state {
            device::ConnectionState::Offline => Self::Offline,
            device::ConnectionState::Connecting => Self::Connecting,
            device::ConnectionState::Connected => Self::Connected,
        }
    }
}

/// The sync status a UI shows.
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct SyncStatus {
    pub connection: ConnectionState,
    /// Documents holding local changes the relay has not saved yet.
    pub pending_documents: u64,
    /// Local changes the relay has not saved yet.
    pub pending_changes: u64,
    /// Connected, every local change saved on the relay, and nothing in flight either way.
    pub in_sync: bool,
    /// The last time the device was in sync, in this run or an earlier one.
    pub last_synced_at: Option<SystemTime>,
    /// Documents this device held nothing of, fetched from the relay as snapshots over the current
    /// connection: a progress bar's figures.
    pub fetch: FetchProgress,
}

/// How far fetching documents from the relay has come: of the documents and bytes the relay
/// announced on this connection, how many are stored here.
#[derive(Clone, Copy, PartialEq, Eq, Debug, uniffi::Record)]
pub struct FetchProgress {
    pub documents_done: u64,
    pub documents_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

impl From<tandem_core::sync::FetchProgress> for FetchProgress {
    fn from(progress: tandem_core::sync::FetchProgress) -> Self {
        Self {
            documents_done: progress.documents_done,
            documents_total: progress.documents_total,
            bytes_done: progress.bytes_done,
            bytes_total: progress.bytes_total,
        }
    }
}

impl From<device::SyncStatus> for SyncStatus {
    fn from(status: device::SyncStatus) -> Self {
        Self {
            connection: status.connection.into(),
            pending_documents: status.pending_documents as u64,
            pending_changes: status.pending_changes as u64,
            in_sync: status.in_sync,
            last_synced_at: status.last_synced_at.map(instant_out),
            fetch: status.fetch.into(),
        }
    }
}

/// Another device's changes, stored here and visible.
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct RemoteChange {
    pub document: String,
    /// `null` if the document could not be read as a Tandem document.
    pub kind: Option<DocKind>,
    /// Each changed location, `/`-separated from the root: `"goals/g-1a2b/targetDate"`.
    pub paths: Vec<String>,
}

impl From<device::RemoteChange> for RemoteChange {
    fn from(change: device::RemoteChange) -> Self {
        Self {
            document: change.document.to_string(),
            kind: change.kind.map(DocKind::from),
            paths: change.paths,
        }
    }
}
