//! The device's connection loop (cargo feature `client`): the one place in the core that does
//! network IO and spawns a task.
//!
//! [`SyncClient`] owns a [`Device`] behind a mutex shared with the app, so the app keeps editing
//! while sync runs; the lock is never held across an `.await`. One task on the caller's tokio
//! runtime dials the relay with `Authorization: Bearer <token>`, feeds frames to the device,
//! writes its outgoing frames, pings so the relay's idle timeout does not fire, and reconnects with
//! jittered exponential backoff. Status changes and [`SyncEvent`]s reach the app through
//! [`SyncClient::subscribe`] (a tokio broadcast) and through [`SyncObserver`]s, which the task
//! calls in order, never under the lock.
//!
//! Only `ws://` URLs work: no TLS feature of tokio-tungstenite is enabled yet.
//!
//! ```no_run
//! # async fn example(device: tandem_core::device::Device) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tandem_core::client::{ClientConfig, SyncClient};
//!
//! let config = ClientConfig::new("ws://127.0.0.1:3030/sync").with_token("device-token");
//! let client = SyncClient::start(device, config, &tokio::runtime::Handle::current());
//! client.add_observer(Box::new(|event: &tandem_core::device::SyncEvent| println!("{event:?}")));
//! client.sync_now(Duration::from_secs(30)).await?;
//! client.stop().await;
//! # Ok(()) }
//! ```

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::RngExt;
use tokio::net::TcpStream;
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::device::{ConnectionState, Device, Outgoing, SyncEvent, SyncStatus};
use crate::error::Result;
use crate::ids::DocumentId;
use crate::repo::Repo;

/// How the client reaches the relay.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The relay's websocket URL, e.g. `ws://relay.example:3030/sync`.
    pub url: String,
    /// Sent as `Authorization: Bearer <token>` on the websocket upgrade.
    pub token: Option<String>,
    /// The first reconnect waits about this long; each failure doubles it, up to `backoff_max`.
    /// Every wait is drawn uniformly from its upper half, so devices that lost the relay together
    /// do not come back together.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// A dial (TCP and websocket handshake) that takes longer is abandoned.
    pub connect_timeout: Duration,
    /// A websocket ping this often keeps an idle connection from the relay's idle timeout.
    pub ping_interval: Duration,
}

impl ClientConfig {
    /// No token, backoff from 500 ms to 30 s, 10 s connect timeout, a ping a minute.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: None,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(60),
        }
    }

    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    pub fn with_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max.max(base);
        self
    }
}

/// Told about every [`SyncEvent`], in order, on the client's task. Closures
/// `Fn(&SyncEvent) + Send + Sync` are observers.
pub trait SyncObserver: Send + Sync {
    fn on_event(&self, event: &SyncEvent);
}

impl<F: Fn(&SyncEvent) + Send + Sync> SyncObserver for F {
    fn on_event(&self, event: &SyncEvent) {
        self(event);
    }
}

/// Why [`SyncClient::sync_now`] did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The device was not connected and in sync within the time given.
    #[error("not in sync after {waited:?} (status: {status:?})")]
    TimedOut {
        waited: Duration,
        status: SyncStatus,
    },
    /// [`SyncClient::stop`] was called.
    #[error("the sync client is stopped")]
    Stopped,
    /// The relay refused the token (HTTP 401 or 403 at the upgrade): it is missing, expired or
    /// revoked. Retrying with the same token will not help; the app needs a new one.
    #[error("the relay refused this device's token ({0})")]
    Refused(String),
}

/// A device syncing with a relay. See the [module documentation](self).
pub struct SyncClient {
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for SyncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncClient")
            .field("url", &self.shared.config.url)
            .field("status", &*self.shared.status.borrow())
            .finish_non_exhaustive()
    }
}

struct Shared {
    device: Mutex<Device>,
    config: ClientConfig,
    /// The device has frames to write.
    wake: Notify,
    /// Skip the current backoff wait.
    connect_now: Notify,
    stopping: watch::Sender<bool>,
    /// Why the relay last refused the token, until a dial gets through.
    refused: watch::Sender<Option<String>>,
    status: watch::Sender<SyncStatus>,
    events: broadcast::Sender<SyncEvent>,
    to_observers: mpsc::UnboundedSender<SyncEvent>,
    observers: Mutex<Vec<Arc<dyn SyncObserver>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic under the lock leaves a device whose every write was a committed transaction; it
    // is safe to keep using.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Runs `f` on the device, then publishes its events and status (in order, still under the
    /// lock, so two threads never publish out of order) and wakes the task to write frames.
    fn with_device<T>(&self, f: impl FnOnce(&mut Device) -> T) -> T {
        let mut device = lock(&self.device);
        let output = f(&mut device);
        let status = device.status();
        for event in device.take_events() {
            let _ = self.events.send(event.clone());
            let _ = self.to_observers.send(event);
        }
        self.status.send_if_modified(|current| {
            let changed = *current != status;
            *current = status;
            changed
        });
        drop(device);
        self.wake.notify_one();
        output
    }

    fn take_outgoing(&self) -> Vec<Outgoing> {
        lock(&self.device).take_outgoing()
    }
}

impl SyncClient {
    /// Starts syncing `device` with the relay at `config.url`, on a task spawned on `runtime`.
    pub fn start(device: Device, config: ClientConfig, runtime: &tokio::runtime::Handle) -> Self {
        let status = device.status();
        let (to_observers, observer_queue) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            device: Mutex::new(device),
            config,
            wake: Notify::new(),
            connect_now: Notify::new(),
            stopping: watch::channel(false).0,
            refused: watch::channel(None).0,
            status: watch::channel(status).0,
            events: broadcast::channel(1024).0,
            to_observers,
            observers: Mutex::new(Vec::new()),
        });
        let task = runtime.spawn(run(shared.clone(), observer_queue));
        Self {
            shared,
            task: Mutex::new(Some(task)),
        }
    }

    /// The current status.
    pub fn status(&self) -> SyncStatus {
        self.shared.status.borrow().clone()
    }

    /// Status changes, as a watch channel.
    pub fn watch_status(&self) -> watch::Receiver<SyncStatus> {
        self.shared.status.subscribe()
    }

    /// Every event from now on. A receiver that falls more than 1024 events behind loses the
    /// oldest (`RecvError::Lagged`); observers never lose any.
    pub fn subscribe(&self) -> broadcast::Receiver<SyncEvent> {
        self.shared.events.subscribe()
    }

    /// Calls `observer` with every event from now on, in order, on the client's task.
    pub fn add_observer(&self, observer: Box<dyn SyncObserver>) {
        lock(&self.shared.observers).push(Arc::from(observer));
    }

    /// Runs `f` with the device's repository (edits, reads, queries). Local changes it commits
    /// are sent to the relay as soon as the connection allows.
    pub fn with_repo<T>(&self, f: impl FnOnce(&mut Repo) -> Result<T>) -> Result<T> {
        self.shared.with_device(|device| device.with_repo(f))
    }

    /// Runs `f` with the device (follow, saved-to-server queries, ...).
    pub fn with_device<T>(&self, f: impl FnOnce(&mut Device) -> T) -> T {
        self.shared.with_device(f)
    }

    /// See [`Device::follow`].
    pub fn follow(&self, document: DocumentId) -> Result<()> {
        self.shared.with_device(|device| device.follow(document))
    }

    /// Connects now if offline (skipping any backoff wait) and resolves once the device is
    /// connected, every local change is saved on the relay and every synced document has the
    /// relay's heads; or fails after `timeout`.
    pub async fn sync_now(
        &self,
        timeout: Duration,
    ) -> std::result::Result<SyncStatus, ClientError> {
        if *self.shared.stopping.borrow() {
            return Err(ClientError::Stopped);
        }
        // A refusal seen before this call is stale: the dial it triggers decides anew.
        self.shared.refused.send_replace(None);
        self.shared.connect_now.notify_one();
        let mut status = self.shared.status.subscribe();
        let mut stopping = self.shared.stopping.subscribe();
        let mut refused = self.shared.refused.subscribe();
        let complete = async {
            tokio::select! {
                done = status.wait_for(SyncStatus::is_complete) => {
                    done.map(|s| Ok(s.clone())).unwrap_or(Err(ClientError::Stopped))
                }
                reason = refused.wait_for(Option::is_some) => Err(match reason {
                    Ok(reason) => ClientError::Refused(reason.clone().unwrap_or_default()),
                    Err(_) => ClientError::Stopped,
                }),
                _ = stopping.wait_for(|stop| *stop) => Err(ClientError::Stopped),
            }
        };
        match tokio::time::timeout(timeout, complete).await {
            Ok(outcome) => outcome,
            Err(_) => Err(ClientError::TimedOut {
                waited: timeout,
                status: self.status(),
            }),
        }
    }

    /// Leaves the relay politely and stops the task. The device stays usable offline through
    /// [`SyncClient::with_repo`], or take it back with [`SyncClient::into_device`].
    pub async fn stop(&self) {
        self.shared.stopping.send_replace(true);
        let task = lock(&self.task).take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!("the sync task ended abnormally: {e}");
        }
    }

    /// The device back, once [`SyncClient::stop`] has returned; `None` while the task runs.
    pub fn into_device(self) -> Option<Device> {
        if lock(&self.task).is_some() {
            return None;
        }
        let shared = Arc::clone(&self.shared);
        drop(self);
        Arc::try_unwrap(shared).ok().map(|shared| {
            shared
                .device
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner)
        })
    }
}

impl Drop for SyncClient {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

/// The client's task: the connection loop and the observer calls, side by side.
async fn run(shared: Arc<Shared>, mut observer_queue: mpsc::UnboundedReceiver<SyncEvent>) {
    let observers = async {
        while let Some(event) = observer_queue.recv().await {
            let observers = lock(&shared.observers).clone();
            for observer in observers {
                observer.on_event(&event);
            }
        }
    };
    tokio::select! {
        _ = connection_loop(&shared) => {}
        _ = observers => {}
    }
    // Events published while stopping still reach the observers.
    while let Ok(event) = observer_queue.try_recv() {
        let observers = lock(&shared.observers).clone();
        for observer in observers {
            observer.on_event(&event);
        }
    }
}

async fn connection_loop(shared: &Shared) {
    let mut stop = shared.stopping.subscribe();
    let mut failures: u32 = 0;
    loop {
        if *stop.borrow_and_update() {
            break;
        }
        shared.with_device(Device::dialing);
        let dialled = tokio::select! {
            dialled = dial(&shared.config) => dialled,
            _ = stop.changed() => break,
        };
        match dialled {
            Ok(socket) => {
                shared.refused.send_replace(None);
                if run_session(shared, socket, &mut stop).await {
                    failures = 0;
                }
            }
            Err(DialError::Refused(reason)) => {
                tracing::warn!(url = %shared.config.url, "the relay refused the token: {reason}");
                shared.refused.send_replace(Some(reason));
                shared.with_device(Device::dial_failed);
                // The same token will be refused again: wait the longest backoff, unless the app
                // asks to sync now (with a new token, after a restart of the client).
                failures = u32::MAX;
            }
            Err(DialError::Failed(e)) => {
                tracing::info!(url = %shared.config.url, "connecting to the relay failed: {e}");
                shared.with_device(Device::dial_failed);
            }
        }
        if *stop.borrow_and_update() {
            break;
        }
        let wait = backoff(&shared.config, failures);
        failures = failures.saturating_add(1);
        tracing::debug!(?wait, "reconnecting after a pause");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.connect_now.notified() => failures = 0,
            _ = stop.changed() => break,
        }
    }
    shared.with_device(Device::dial_failed);
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a dial did not give a websocket.
enum DialError {
    /// The relay answered the upgrade with 401 or 403.
    Refused(String),
    Failed(String),
}

async fn dial(config: &ClientConfig) -> std::result::Result<Socket, DialError> {
    let mut request = config
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| DialError::Failed(format!("bad relay URL: {e}")))?;
    if let Some(token) = &config.token {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| DialError::Refused("the token is not a valid header value".to_owned()))?;
        request.headers_mut().insert(header::AUTHORIZATION, value);
    }
    match tokio::time::timeout(
        config.connect_timeout,
        // Nagle off: a small frame written after a large one must not wait for the relay's
        // delayed acknowledgement.
        tokio_tungstenite::connect_async_with_config(request, None, true),
    )
    .await
    {
        Ok(Ok((socket, _response))) => Ok(socket),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response)))
            if matches!(response.status().as_u16(), 401 | 403) =>
        {
            Err(DialError::Refused(format!("HTTP {}", response.status())))
        }
        Ok(Err(e)) => Err(DialError::Failed(e.to_string())),
        Err(_) => Err(DialError::Failed(format!(
            "no answer within {:?}",
            config.connect_timeout
        ))),
    }
}

/// One websocket's life. Returns whether the relay's handshake completed.
async fn run_session(shared: &Shared, socket: Socket, stop: &mut watch::Receiver<bool>) -> bool {
    let (mut sink, mut stream) = socket.split();
    let connection = shared.with_device(Device::connection_opened);
    let mut ping = tokio::time::interval(shared.config.ping_interval);
    ping.tick().await;
    let mut reached = false;
    let mut leaving = false;
    'session: loop {
        for out in shared.take_outgoing() {
            match out {
                Outgoing::Frame {
                    connection: c,
                    frame,
                } if c == connection => {
                    if sink.send(Message::Binary(frame.into())).await.is_err() {
                        break 'session;
                    }
                }
                Outgoing::Close { connection: c, .. } if c == connection => {
                    let _ = sink.close().await;
                    break 'session;
                }
                // Left over from an earlier connection.
                Outgoing::Frame { .. } | Outgoing::Close { .. } => {}
            }
        }
        if leaving {
            let _ = sink.close().await;
            break;
        }
        reached |= shared.status.borrow().connection == ConnectionState::Connected;
        tokio::select! {
            message = stream.next() => match message {
                Some(Ok(Message::Binary(frame))) => {
                    shared.with_device(|device| device.frame_received(connection, &frame));
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                // Pings are answered by tungstenite; the protocol has no text frames.
                Some(Ok(_)) => {}
            },
            _ = shared.wake.notified() => {}
            _ = ping.tick() => {
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
            _ = stop.changed() => {
                shared.with_device(|device| device.disconnect(connection));
                leaving = true;
            }
        }
    }
    shared.with_device(|device| device.connection_closed(connection));
    reached
}

/// The wait before reconnect attempt `failures + 1`: exponential, capped, from its upper half.
fn backoff(config: &ClientConfig, failures: u32) -> Duration {
    let exponential = config
        .backoff_base
        .saturating_mul(1u32 << failures.min(20))
        .min(config.backoff_max);
    let half = exponential / 2;
    let jitter = rand::rng().random_range(0..=half.as_millis().max(1) as u64);
    half + Duration::from_millis(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let config = ClientConfig::new("ws://x")
            .with_backoff(Duration::from_millis(100), Duration::from_secs(2));
        for (failures, full) in [
            (0, 100),
            (1, 200),
            (2, 400),
            (4, 1600),
            (5, 2000),
            (60, 2000),
        ] {
            for _ in 0..50 {
                let wait = backoff(&config, failures).as_millis() as u64;
                assert!(
                    (full / 2..=full + 1).contains(&wait),
                    "failures {failures}: {wait} ms"
                );
            }
        }
    }
}
