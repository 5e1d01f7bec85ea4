//! Sync figures: Tandem's relay against the official automerge-repo JS sync server, side by side on
//! loopback, driven by the same Rust client (`SyncEngine`, `Role::Device`, over tokio-tungstenite
//! with in-memory storage), so that differences are the servers'.
//!
//! Run with `scripts/bench-sync.sh` (it builds the release relay first); it prints a table. Three
//! workloads, each against a fresh server process:
//! 1. a fresh device downloads documents it knows the ids of;
//! 2. a device holding many synced documents reconnects with nothing changed;
//! 3. a writer edits documents that many connected clients are syncing; delivery latency.
//!
//! Sizes come from `TANDEM_BENCH_*` environment variables (see [`Sizes::from_env`]). Every wait has
//! a timeout; a server that does not finish a workload gets its failure printed as its figure.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use automerge::transaction::Transactable;
use automerge::{Automerge, AutomergeError, ChangeHash, ObjType, ROOT};
use futures_util::{SinkExt, StreamExt};
use tandem_core::DocumentId;
use tandem_core::sync::{
    ConnectionId, Direction, Effect, EngineConfig, Message, Role, StorageId, StoredDocument,
    SyncEngine,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite;

/// No frame in either direction for this long counts as quiet.
const QUIET: Duration = Duration::from_millis(500);
/// Documents a seeding client creates and uploads at a time.
const SEED_BATCH: usize = 200;
/// How long a server may take to print its address.
const STARTUP: Duration = Duration::from_secs(30);

// ---- sizes ----------------------------------------------------------------------------------

/// How big each workload is; defaults are the figures in BENCHMARKS.md.
#[derive(Clone, Debug)]
struct Sizes {
    fresh_documents: usize,
    idle_documents: usize,
    subscribers: usize,
    latency_documents: usize,
    rounds: usize,
    /// Per-workload limit; a server that has not finished by then fails the workload.
    timeout: Duration,
    servers: Vec<ServerKind>,
}

impl Sizes {
    fn from_env() -> anyhow::Result<Self> {
        fn number(name: &str, default: usize) -> anyhow::Result<usize> {
            match std::env::var(name) {
                Ok(text) => text.parse().with_context(|| format!("{name}={text}")),
                Err(_) => Ok(default),
            }
        }
        let servers = match std::env::var("TANDEM_BENCH_SERVERS").as_deref() {
            Ok("tandem") => vec![ServerKind::Tandem],
            Ok("js") => vec![ServerKind::Js],
            Ok("both") | Err(_) => vec![ServerKind::Tandem, ServerKind::Js],
            Ok(other) => bail!("TANDEM_BENCH_SERVERS={other}: expected tandem, js or both"),
        };
        let sizes = Self {
            fresh_documents: number("TANDEM_BENCH_FRESH_DOCS", 1_000)?,
            idle_documents: number("TANDEM_BENCH_IDLE_DOCS", 10_000)?,
            subscribers: number("TANDEM_BENCH_SUBSCRIBERS", 500)?,
            latency_documents: number("TANDEM_BENCH_LATENCY_DOCS", 50)?,
            rounds: number("TANDEM_BENCH_ROUNDS", 100)?,
            timeout: Duration::from_secs(number("TANDEM_BENCH_TIMEOUT_SECS", 120)? as u64),
            servers,
        };
        if sizes.latency_documents == 0 || sizes.subscribers < sizes.latency_documents {
            bail!("need at least one latency document and one subscriber per document");
        }
        Ok(sizes)
    }
}

// ---- the servers ----------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ServerKind {
    Tandem,
    Js,
}

impl ServerKind {
    fn name(self) -> &'static str {
        match self {
            Self::Tandem => "Tandem relay",
            Self::Js => "JS sync server",
        }
    }
}

/// A server child process on a loopback port, with its log in a temporary folder.
struct Server {
    kind: ServerKind,
    child: Child,
    address: String,
    dir: tempfile::TempDir,
}

impl Server {
    async fn start(kind: ServerKind, relay_args: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let mut command = match kind {
            ServerKind::Tandem => {
                let binary = relay_binary()?;
                // Relays with access control refuse tokenless peers unless told otherwise; the
                // bench's clients are anonymous on both servers.
                let help = std::process::Command::new(&binary)
                    .args(["serve", "--help"])
                    .output()?;
                let anonymous = String::from_utf8_lossy(&help.stdout).contains("--allow-anonymous");
                let mut command = Command::new(binary);
                command
                    .args(["serve", "--listen", "127.0.0.1:0", "--data"])
                    .arg(dir.path().join("data"))
                    .args(relay_args)
                    .env("TANDEM_LOG", "warn");
                if anonymous {
                    command.arg("--allow-anonymous");
                }
                command
            }
            ServerKind::Js => {
                let script = workspace_root().join("tests/js/sync-server.mjs");
                let mut command = Command::new("node");
                command.arg(script);
                command
            }
        };
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting the {}", kind.name()))?;
        let stdout = child.stdout.take().context("server stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let address = tokio::time::timeout(STARTUP, async {
            while let Some(line) = lines.next_line().await? {
                if let Some((_, address)) = line.split_once("listening on ") {
                    return Ok(address.trim().to_owned());
                }
            }
            bail!("the {} exited before listening", kind.name())
        })
        .await
        .with_context(|| format!("the {} did not start", kind.name()))??;
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            kind,
            child,
            address,
            dir,
        })
    }

    fn url(&self) -> String {
        format!("ws://{}/", self.address)
    }

    /// The most resident memory the process has used so far (VmHWM), in bytes.
    fn peak_rss(&self) -> Option<u64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Stops the process and returns the warnings and errors it logged, if any.
    async fn stop(mut self) -> anyhow::Result<Vec<String>> {
        let exited = self.child.try_wait()?;
        self.child.kill().await.ok();
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        // Repeated lines are counted once; timestamps and colours are dropped.
        let mut counted: Vec<(String, usize)> = Vec::new();
        for line in log.lines() {
            let lower = line.to_ascii_lowercase();
            if !(lower.contains("warn") || lower.contains("error") || lower.contains("panic")) {
                continue;
            }
            let plain = strip_ansi(line);
            let text = match plain.split_once(' ') {
                Some((stamp, rest)) if stamp.starts_with("20") => rest.trim().to_owned(),
                _ => plain,
            };
            match counted.iter_mut().find(|(t, _)| *t == text) {
                Some((_, n)) => *n += 1,
                None => counted.push((text, 1)),
            }
        }
        let mut notes: Vec<String> = counted
            .into_iter()
            .map(|(text, n)| format!("{}: {text} (x{n})", self.kind.name()))
            .collect();
        if let Some(status) = exited {
            notes.push(format!("{} exited early: {status}", self.kind.name()));
        }
        Ok(notes)
    }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The release relay, built by `scripts/bench-sync.sh` (or named by `TANDEM_SERVER_BIN`).
fn relay_binary() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("TANDEM_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| workspace_root().join("target"), PathBuf::from)
                .join("release/tandem-server")
        });
    if !path.exists() {
        bail!(
            "{} is missing: run scripts/bench-sync.sh, or `cargo build --release -p tandem-server` first",
            path.display()
        );
    }
    Ok(path)
}

// ---- the client -----------------------------------------------------------------------------

/// What crossed one client's websocket: binary messages and their payload bytes.
#[derive(Debug, Default)]
struct Traffic {
    sent_bytes: AtomicU64,
    sent_messages: AtomicU64,
    received_bytes: AtomicU64,
    received_messages: AtomicU64,
    /// When the last frame went either way, in microseconds since `epoch`.
    last_frame_micros: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default)]
struct TrafficFigures {
    sent_bytes: u64,
    sent_messages: u64,
    received_bytes: u64,
    received_messages: u64,
}

impl Traffic {
    fn record(&self, epoch: Instant, bytes: usize, sent: bool) {
        let (b, m) = if sent {
            (&self.sent_bytes, &self.sent_messages)
        } else {
            (&self.received_bytes, &self.received_messages)
        };
        b.fetch_add(bytes as u64, Ordering::Relaxed);
        m.fetch_add(1, Ordering::Relaxed);
        self.last_frame_micros
            .store(epoch.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    fn figures(&self) -> TrafficFigures {
        TrafficFigures {
            sent_bytes: self.sent_bytes.load(Ordering::Relaxed),
            sent_messages: self.sent_messages.load(Ordering::Relaxed),
            received_bytes: self.received_bytes.load(Ordering::Relaxed),
            received_messages: self.received_messages.load(Ordering::Relaxed),
        }
    }
}

/// A device: the engine plus an in-memory "storage" that answers every storage effect at once.
struct Device {
    engine: SyncEngine,
    documents: HashMap<DocumentId, Vec<u8>>,
    sync_states: HashMap<DocumentId, Vec<(StorageId, Vec<u8>)>>,
    /// Sync and request messages sent per document, counted while `count_per_document` is set.
    sent_per_document: HashMap<DocumentId, u32>,
    count_per_document: bool,
}

impl Device {
    fn new(name: &str) -> Self {
        let config = EngineConfig::new(format!("bench-{name}"), Role::Device)
            .with_storage_id(format!("bench-storage-{name}"));
        Self {
            engine: SyncEngine::new(config),
            documents: HashMap::new(),
            sync_states: HashMap::new(),
            sent_per_document: HashMap::new(),
            count_per_document: false,
        }
    }

    fn create(&mut self, document: DocumentId, index: usize) -> anyhow::Result<()> {
        self.engine
            .create_document(document, |doc| fill_plan(doc, index))??;
        Ok(())
    }
}

/// A plan-like document of a few hundred bytes: a mentee, coaches, strengths and two goals.
fn fill_plan(doc: &mut Automerge, index: usize) -> Result<(), AutomergeError> {
    doc.transact::<_, _, AutomergeError>(|tx| {
        tx.put(ROOT, "type", "plan")?;
        tx.put(ROOT, "mentee", format!("student-{index}"))?;
        tx.put(ROOT, "program", "First-year mentoring")?;
        tx.put(ROOT, "term", "Spring 2025")?;
        let coaches = tx.put_object(ROOT, "coaches", ObjType::List)?;
        tx.insert(&coaches, 0, "carla")?;
        let strengths = tx.put_object(ROOT, "strengths", ObjType::List)?;
        tx.insert(&strengths, 0, "curious")?;
        tx.insert(&strengths, 1, "organised")?;
        let goals = tx.put_object(ROOT, "goals", ObjType::List)?;
        for (i, title) in ["Pass calculus", "Join a study group"].iter().enumerate() {
            let goal = tx.insert_object(&goals, i, ObjType::Map)?;
            tx.put(&goal, "title", *title)?;
            tx.put(&goal, "status", "active")?;
        }
        Ok(())
    })
    .map(|_| ())
    .map_err(|failure| failure.error)
}

/// What a client tells the bench.
#[derive(Debug)]
enum Event {
    Joined,
    Changed {
        document: DocumentId,
        heads: Vec<ChangeHash>,
        at: Instant,
    },
    Unavailable(DocumentId),
    Closed(String),
}

type Job = Box<dyn FnOnce(&mut Device, ConnectionId) + Send>;

enum Order {
    Run(Job),
    Leave,
}

/// One connected device: its engine runs in a task that owns the websocket.
struct Client {
    commands: mpsc::UnboundedSender<Order>,
    traffic: Arc<Traffic>,
    epoch: Instant,
    closed: Arc<Mutex<Option<String>>>,
    task: JoinHandle<Device>,
}

impl Client {
    async fn connect(
        device: Device,
        url: &str,
        index: usize,
        events: mpsc::UnboundedSender<(usize, Event)>,
    ) -> anyhow::Result<Self> {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let (commands, receiver) = mpsc::unbounded_channel();
        let traffic = Arc::new(Traffic::default());
        let epoch = Instant::now();
        let closed = Arc::new(Mutex::new(None));
        let task = tokio::spawn(drive(
            device,
            socket,
            receiver,
            Reporter {
                index,
                events,
                traffic: traffic.clone(),
                epoch,
                closed: closed.clone(),
            },
        ));
        Ok(Self {
            commands,
            traffic,
            epoch,
            closed,
            task,
        })
    }

    /// Runs `job` on the device inside its task and returns what it returns.
    async fn run<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Device, ConnectionId) -> R + Send + 'static,
    ) -> anyhow::Result<R> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |device, connection| {
            let _ = tx.send(job(device, connection));
        });
        if self.commands.send(Order::Run(job)).is_err() {
            bail!("{}", self.gone());
        }
        match rx.await {
            Ok(result) => Ok(result),
            Err(_) => bail!("{}", self.gone()),
        }
    }

    fn gone(&self) -> String {
        let reason = self.closed.lock().ok().and_then(|c| c.clone());
        format!(
            "the connection is gone ({})",
            reason.as_deref().unwrap_or("no reason given")
        )
    }

    /// Sends `leave`, closes, and hands back the device with everything it stored.
    async fn leave(self) -> anyhow::Result<Device> {
        let _ = self.commands.send(Order::Leave);
        Ok(self.task.await?)
    }

    /// Waits until no frame went either way for [`QUIET`]; returns when the last frame went.
    async fn until_quiet(&self, since: Instant, deadline: Instant) -> anyhow::Result<Instant> {
        loop {
            let last = self.epoch
                + Duration::from_micros(self.traffic.last_frame_micros.load(Ordering::Relaxed));
            let last = last.max(since);
            if last.elapsed() >= QUIET {
                return Ok(last);
            }
            if Instant::now() > deadline {
                bail!("still not quiet at the timeout");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the server has advertised our heads for every document in `documents`.
    async fn until_in_sync(
        &self,
        documents: Arc<Vec<DocumentId>>,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        loop {
            let docs = documents.clone();
            let behind = self
                .run(move |device, connection| {
                    docs.iter()
                        .filter(|d| !device.engine.in_sync_with(d, connection))
                        .count()
                })
                .await?;
            if behind == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{behind} of {} documents not in sync at the timeout",
                    documents.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

struct Reporter {
    index: usize,
    events: mpsc::UnboundedSender<(usize, Event)>,
    traffic: Arc<Traffic>,
    epoch: Instant,
    closed: Arc<Mutex<Option<String>>>,
}

impl Reporter {
    fn event(&self, event: Event) {
        if let Event::Closed(reason) = &event
            && let Ok(mut closed) = self.closed.lock()
        {
            closed.get_or_insert_with(|| reason.clone());
        }
        let _ = self.events.send((self.index, event));
    }
}

enum Outgoing {
    Frame(Vec<u8>),
    Close,
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The driver: frames and commands in, effects carried out, until either side closes. Writing
/// runs in its own task so a burst in both directions cannot stall on full socket buffers.
async fn drive(
    mut device: Device,
    socket: Socket,
    mut commands: mpsc::UnboundedReceiver<Order>,
    reporter: Reporter,
) -> Device {
    let (mut sink, mut stream) = socket.split();
    let (out, mut queue) = mpsc::unbounded_channel::<Outgoing>();
    let writer = tokio::spawn(async move {
        while let Some(first) = queue.recv().await {
            let mut next = Some(first);
            while let Some(item) = next.take() {
                match item {
                    Outgoing::Frame(frame) => {
                        if sink
                            .feed(tungstenite::Message::Binary(frame.into()))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Outgoing::Close => {
                        let _ = sink.close().await;
                        return;
                    }
                }
                next = queue.try_recv().ok();
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    let connection = device.engine.connection_opened(Direction::Outgoing);
    let mut open = carry_out(&mut device, &out, &reporter);
    while open {
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(tungstenite::Message::Binary(bytes))) => {
                    reporter.traffic.record(reporter.epoch, bytes.len(), false);
                    device.engine.frame_received(connection, &bytes);
                }
                Some(Ok(tungstenite::Message::Close(frame))) => {
                    device.engine.connection_closed(connection);
                    reporter.event(Event::Closed(format!("server closed: {frame:?}")));
                    open = false;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    device.engine.connection_closed(connection);
                    reporter.event(Event::Closed(format!("websocket error: {e}")));
                    open = false;
                }
                None => {
                    device.engine.connection_closed(connection);
                    reporter.event(Event::Closed("server went away".into()));
                    open = false;
                }
            },
            command = commands.recv() => match command {
                Some(Order::Run(job)) => job(&mut device, connection),
                Some(Order::Leave) | None => {
                    device.engine.disconnect(connection);
                }
            },
        }
        open &= carry_out(&mut device, &out, &reporter);
    }
    let _ = out.send(Outgoing::Close);
    drop(out);
    let _ = writer.await;
    device
}

/// Carries out every pending effect, storage ones at once. False once the engine closed.
fn carry_out(
    device: &mut Device,
    out: &mpsc::UnboundedSender<Outgoing>,
    reporter: &Reporter,
) -> bool {
    let mut open = true;
    loop {
        let effects = device.engine.take_effects();
        if effects.is_empty() {
            return open;
        }
        for effect in effects {
            match effect {
                Effect::Send { frame, .. } => {
                    if device.count_per_document
                        && let Ok(
                            Message::Sync { document_id, .. }
                            | Message::Request { document_id, .. },
                        ) = Message::decode(&frame)
                    {
                        *device.sent_per_document.entry(document_id).or_default() += 1;
                    }
                    reporter.traffic.record(reporter.epoch, frame.len(), true);
                    let _ = out.send(Outgoing::Frame(frame));
                }
                Effect::Close { reason, .. } => {
                    if reason != "leaving" {
                        reporter.event(Event::Closed(format!("engine closed: {reason}")));
                    }
                    open = false;
                }
                Effect::LoadDocument { document } => {
                    let stored = StoredDocument {
                        bytes: device.documents.get(&document).cloned(),
                        sync_states: device
                            .sync_states
                            .get(&document)
                            .cloned()
                            .unwrap_or_default(),
                    };
                    if let Err(e) = device.engine.document_loaded(document, stored) {
                        reporter.event(Event::Closed(format!("load failed: {e}")));
                    }
                }
                Effect::Persist {
                    ticket,
                    document,
                    changes,
                } => {
                    device
                        .documents
                        .entry(document)
                        .or_default()
                        .extend(changes);
                    device.engine.persisted(ticket);
                }
                Effect::SaveSyncState {
                    document,
                    storage_id,
                    state,
                } => {
                    let states = device.sync_states.entry(document).or_default();
                    states.retain(|(s, _)| *s != storage_id);
                    states.push((storage_id, state));
                }
                Effect::DocumentChanged { document, changes } => reporter.event(Event::Changed {
                    document,
                    heads: changes.heads,
                    at: Instant::now(),
                }),
                Effect::DocumentUnavailable { document } => {
                    reporter.event(Event::Unavailable(document));
                }
                Effect::PeerJoined(_) => reporter.event(Event::Joined),
                Effect::EphemeralReceived { .. }
                | Effect::PeerLeft(_)
                | Effect::LoadPeerIndex { .. } => {}
            }
        }
    }
}

/// Waits for the next event from any client.
async fn next_event(
    events: &mut mpsc::UnboundedReceiver<(usize, Event)>,
    deadline: Instant,
) -> anyhow::Result<(usize, Event)> {
    let left = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, events.recv()).await {
        Ok(Some(event)) => Ok(event),
        Ok(None) => bail!("every client is gone"),
        Err(_) => bail!("timed out"),
    }
}

async fn until_joined(
    events: &mut mpsc::UnboundedReceiver<(usize, Event)>,
    deadline: Instant,
) -> anyhow::Result<()> {
    loop {
        match next_event(events, deadline).await? {
            (_, Event::Joined) => return Ok(()),
            (_, Event::Closed(reason)) => bail!("connection closed: {reason}"),
            _ => {}
        }
    }
}

/// A device that creates `count` plans, uploads them, and leaves once the server has them all.
async fn seed(
    url: &str,
    name: &str,
    count: usize,
    deadline: Instant,
) -> anyhow::Result<(Device, Arc<Vec<DocumentId>>, Duration)> {
    let documents: Vec<DocumentId> = (0..count).map(|_| DocumentId::random()).collect();
    let documents = Arc::new(documents);
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let began = Instant::now();
    let client = Client::connect(Device::new(name), url, 0, events_tx).await?;
    // Before the handshake there are no sessions, and no session counts as in sync.
    until_joined(&mut events, deadline).await?;
    // In batches, as an app creates documents over time: a device that offers thousands at once
    // is a reconnect, which workload 2 measures.
    for (batch, ids) in documents.chunks(SEED_BATCH).enumerate() {
        let ids = Arc::new(ids.to_vec());
        let create = ids.clone();
        client
            .run(move |device, _| {
                for (i, document) in create.iter().enumerate() {
                    device.create(*document, batch * SEED_BATCH + i)?;
                }
                Ok::<_, anyhow::Error>(())
            })
            .await??;
        client.until_in_sync(ids, deadline).await?;
    }
    let took = began.elapsed();
    client.until_quiet(Instant::now(), deadline).await?;
    Ok((client.leave().await?, documents, took))
}

// ---- the workloads --------------------------------------------------------------------------

/// One figure, or why the server could not produce it.
#[derive(Clone, Debug)]
enum Figure {
    Millis(f64),
    Count(u64),
    Bytes(u64),
    Text(String),
    Failed(String),
}

impl Figure {
    fn value(&self) -> Option<f64> {
        match self {
            Self::Millis(v) => Some(*v),
            Self::Count(v) | Self::Bytes(v) => Some(*v as f64),
            Self::Text(_) | Self::Failed(_) => None,
        }
    }

    fn show(&self) -> String {
        match self {
            Self::Millis(ms) if *ms >= 10_000.0 => format!("{:.1} s", ms / 1000.0),
            Self::Millis(ms) => format!("{ms:.1} ms"),
            Self::Count(n) => n.to_string(),
            Self::Bytes(b) if *b >= 10 * 1024 * 1024 => format!("{:.1} MiB", *b as f64 / 1048576.0),
            Self::Bytes(b) if *b >= 10 * 1024 => format!("{:.1} KiB", *b as f64 / 1024.0),
            Self::Bytes(b) => format!("{b} B"),
            Self::Text(t) => t.clone(),
            Self::Failed(why) => format!("FAILED: {why}"),
        }
    }
}

/// Rows of (workload, measure, figure) for one server.
type Rows = Vec<(String, String, Figure)>;

fn traffic_rows(workload: &str, traffic: TrafficFigures, rows: &mut Rows) {
    let w = workload.to_owned();
    rows.push((
        w.clone(),
        "bytes received by client".into(),
        Figure::Bytes(traffic.received_bytes),
    ));
    rows.push((
        w.clone(),
        "bytes sent by client".into(),
        Figure::Bytes(traffic.sent_bytes),
    ));
    rows.push((
        w.clone(),
        "messages received by client".into(),
        Figure::Count(traffic.received_messages),
    ));
    rows.push((
        w,
        "messages sent by client".into(),
        Figure::Count(traffic.sent_messages),
    ));
}

/// Workload 1: a fresh device that knows the ids downloads every document.
async fn fresh_device(url: &str, sizes: &Sizes, rows: &mut Rows) -> anyhow::Result<()> {
    let workload = format!("1. fresh device, {} docs", sizes.fresh_documents);
    let deadline = Instant::now() + sizes.timeout;
    let (seeder, documents, upload) = seed(url, "seeder", sizes.fresh_documents, deadline).await?;
    rows.push((
        workload.clone(),
        "seeding upload (not the measure)".into(),
        Figure::Millis(ms(upload)),
    ));
    let mut expected: HashMap<DocumentId, Vec<ChangeHash>> = documents
        .iter()
        .map(|d| {
            let mut heads = seeder.engine.heads(d).unwrap_or_default();
            heads.sort();
            (*d, heads)
        })
        .collect();

    let (events_tx, mut events) = mpsc::unbounded_channel();
    let client = Client::connect(Device::new("fresh"), url, 0, events_tx).await?;
    until_joined(&mut events, deadline).await?;
    let before = client.traffic.figures();
    let began = Instant::now();
    let ids = documents.clone();
    client
        .run(move |device, _| {
            for document in ids.iter() {
                device.engine.open_document(*document);
            }
        })
        .await?;
    let mut unavailable = 0;
    while !expected.is_empty() {
        match next_event(&mut events, deadline).await {
            Ok((
                _,
                Event::Changed {
                    document,
                    mut heads,
                    ..
                },
            )) => {
                heads.sort();
                if expected.get(&document) == Some(&heads) {
                    expected.remove(&document);
                }
            }
            Ok((_, Event::Unavailable(document))) => {
                unavailable += 1;
                expected.remove(&document);
            }
            Ok((_, Event::Closed(reason))) => bail!("connection closed: {reason}"),
            Ok(_) => {}
            Err(e) => bail!("{} documents missing: {e}", expected.len()),
        }
    }
    let took = began.elapsed();
    if unavailable > 0 {
        bail!("{unavailable} documents reported unavailable");
    }
    let after = client.traffic.figures();
    client.leave().await?;
    rows.push((
        workload.clone(),
        "wall time until all complete".into(),
        Figure::Millis(ms(took)),
    ));
    traffic_rows(&workload, difference(after, before), rows);
    Ok(())
}

/// Workload 2: a device holding many synced documents reconnects; nothing changed.
async fn idle_reconnect(url: &str, sizes: &Sizes, rows: &mut Rows) -> anyhow::Result<()> {
    let workload = format!("2. idle reconnect, {} docs", sizes.idle_documents);
    let deadline = Instant::now() + sizes.timeout;
    let (mut device, documents, upload) =
        seed(url, "holder", sizes.idle_documents, deadline).await?;
    rows.push((
        workload.clone(),
        "initial upload (not the measure)".into(),
        Figure::Millis(ms(upload)),
    ));
    device.count_per_document = true;
    device.sent_per_document.clear();

    let (events_tx, mut events) = mpsc::unbounded_channel();
    let began = Instant::now();
    let client = Client::connect(device, url, 0, events_tx).await?;
    let last = client.until_quiet(began, deadline).await;
    let traffic = client.traffic.figures();
    let ids = documents.clone();
    let (behind, round_trips) = client
        .run(move |device, connection| {
            let behind = ids
                .iter()
                .filter(|d| !device.engine.in_sync_with(d, connection))
                .count();
            (
                behind,
                device
                    .sent_per_document
                    .values()
                    .copied()
                    .max()
                    .unwrap_or(0),
            )
        })
        .await?;
    client.leave().await?;
    while let Ok((_, event)) = events.try_recv() {
        if let Event::Closed(reason) = event
            && !reason.starts_with("server closed")
        {
            bail!("connection closed: {reason}");
        }
    }
    let last = last?;
    rows.push((
        workload.clone(),
        "time until quiet (last frame)".into(),
        Figure::Millis(ms(last - began)),
    ));
    traffic_rows(&workload, traffic, rows);
    // A server that answers nothing when nothing changed leaves the client without its heads.
    rows.push((
        workload.clone(),
        "docs whose heads the server re-advertised".into(),
        Figure::Count((documents.len() - behind) as u64),
    ));
    rows.push((
        workload.clone(),
        "round trips (most client msgs for one doc)".into(),
        Figure::Count(round_trips.into()),
    ));
    rows.push((
        workload,
        "bytes both ways per document".into(),
        Figure::Count(
            (traffic.sent_bytes + traffic.received_bytes) / sizes.idle_documents.max(1) as u64,
        ),
    ));
    Ok(())
}

/// Workload 3: `subscribers` clients each sync one of `latency_documents` documents; a writer
/// edits them round-robin; time from each write until each subscriber has it.
async fn delivery_latency(url: &str, sizes: &Sizes, rows: &mut Rows) -> anyhow::Result<()> {
    let per_doc = sizes.subscribers / sizes.latency_documents;
    let subscribers = per_doc * sizes.latency_documents;
    let workload = format!(
        "3. latency, {subscribers} clients ({} docs x {per_doc})",
        sizes.latency_documents
    );
    let deadline = Instant::now() + sizes.timeout;
    let (writer_device, documents, _) =
        seed(url, "writer", sizes.latency_documents, deadline).await?;
    let mut heads: HashMap<DocumentId, Vec<ChangeHash>> = documents
        .iter()
        .map(|d| {
            (
                *d,
                sorted(writer_device.engine.heads(d).unwrap_or_default()),
            )
        })
        .collect();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    // Index 0 is the writer; subscriber i (from 1) syncs document (i - 1) % documents.
    let writer = Client::connect(writer_device, url, 0, events_tx.clone()).await?;
    until_joined(&mut events, deadline).await?;

    let began = Instant::now();
    let mut clients = Vec::with_capacity(subscribers);
    for i in 1..=subscribers {
        let client =
            Client::connect(Device::new(&format!("sub-{i}")), url, i, events_tx.clone()).await?;
        clients.push(client);
    }
    // A document opened during the handshake is reported unavailable at once (no peer yet), so
    // each subscriber opens its document only after it joined.
    let mut joined = 0;
    while joined < subscribers {
        match next_event(&mut events, deadline).await {
            Ok((i, Event::Joined)) => {
                joined += 1;
                let document = documents[(i - 1) % documents.len()];
                clients[i - 1]
                    .run(move |device, _| device.engine.open_document(document))
                    .await?;
            }
            Ok((i, Event::Closed(reason))) => bail!("subscriber {i} closed: {reason}"),
            Ok(_) => {}
            Err(e) => bail!("{} subscribers never joined: {e}", subscribers - joined),
        }
    }
    // Every subscriber has the document as the writer left it.
    let mut waiting: HashSet<usize> = (1..=subscribers).collect();
    while !waiting.is_empty() {
        match next_event(&mut events, deadline).await {
            Ok((
                i,
                Event::Changed {
                    document, heads: h, ..
                },
            )) => {
                if heads.get(&document) == Some(&sorted(h)) {
                    waiting.remove(&i);
                }
            }
            Ok((i, Event::Closed(reason))) => bail!("subscriber {i} closed: {reason}"),
            Ok((i, Event::Unavailable(_))) => bail!("subscriber {i} was told unavailable"),
            Ok(_) => {}
            Err(e) => bail!("{} subscribers without their document: {e}", waiting.len()),
        }
    }
    rows.push((
        workload.clone(),
        "connect + first sync of all (not the measure)".into(),
        Figure::Millis(ms(began.elapsed())),
    ));

    let mut latencies = Vec::with_capacity(sizes.rounds * per_doc);
    let mut missed = 0usize;
    let mut closed = Vec::new();
    for round in 0..sizes.rounds {
        let index = round % documents.len();
        let document = documents[index];
        let written = Instant::now();
        let new_heads = writer
            .run(move |device, _| {
                device
                    .engine
                    .local_change(document, |doc| {
                        doc.transact::<_, _, AutomergeError>(|tx| {
                            tx.put(ROOT, "last_session", round as i64)?;
                            Ok(())
                        })
                        .map(|_| ())
                        .map_err(|f| f.error)
                    })
                    .map_err(anyhow::Error::from)
                    .and_then(|edit| edit.map_err(anyhow::Error::from))?;
                Ok::<_, anyhow::Error>(sorted(device.engine.heads(&document).unwrap_or_default()))
            })
            .await??;
        heads.insert(document, new_heads.clone());
        let mut waiting: HashSet<usize> = (1..=subscribers)
            .filter(|i| (i - 1) % documents.len() == index)
            .collect();
        let round_deadline = (Instant::now() + Duration::from_secs(10)).min(deadline);
        while !waiting.is_empty() {
            match next_event(&mut events, round_deadline).await {
                Ok((i, Event::Changed { heads: h, at, .. })) => {
                    if sorted(h) == new_heads && waiting.remove(&i) {
                        latencies.push(at - written);
                    }
                }
                Ok((i, Event::Closed(reason))) => {
                    closed.push(format!("client {i}: {reason}"));
                    waiting.remove(&i);
                    missed += 1;
                }
                Ok(_) => {}
                Err(_) => {
                    missed += waiting.len();
                    break;
                }
            }
        }
        if Instant::now() > deadline {
            break;
        }
    }
    let expected = sizes.rounds * per_doc;
    for client in clients {
        client.leave().await?;
    }
    writer.leave().await?;
    if latencies.is_empty() {
        bail!("no deliveries ({missed} missed; {closed:?})");
    }
    latencies.sort();
    rows.push((
        workload.clone(),
        "p50 write-to-subscriber".into(),
        Figure::Millis(ms(percentile(&latencies, 0.5))),
    ));
    rows.push((
        workload.clone(),
        "p99 write-to-subscriber".into(),
        Figure::Millis(ms(percentile(&latencies, 0.99))),
    ));
    rows.push((
        workload.clone(),
        "max write-to-subscriber".into(),
        Figure::Millis(ms(percentile(&latencies, 1.0))),
    ));
    rows.push((
        workload,
        "deliveries within 10 s".into(),
        Figure::Text(format!("{} / {expected}", latencies.len())),
    ));
    if !closed.is_empty() {
        eprintln!("closed during the latency rounds: {closed:?}");
    }
    Ok(())
}

fn sorted(mut heads: Vec<ChangeHash>) -> Vec<ChangeHash> {
    heads.sort();
    heads
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn difference(after: TrafficFigures, before: TrafficFigures) -> TrafficFigures {
    TrafficFigures {
        sent_bytes: after.sent_bytes - before.sent_bytes,
        sent_messages: after.sent_messages - before.sent_messages,
        received_bytes: after.received_bytes - before.received_bytes,
        received_messages: after.received_messages - before.received_messages,
    }
}

// ---- the run --------------------------------------------------------------------------------

type Workload = for<'a> fn(
    &'a str,
    &'a Sizes,
    &'a mut Rows,
) -> std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>;

/// Runs every workload against a fresh process of `kind`; failures become figures.
async fn bench_server(kind: ServerKind, sizes: &Sizes, notes: &mut Vec<String>) -> Rows {
    let workloads: Vec<(String, Workload, &[&str])> = vec![
        (
            "1. fresh device".into(),
            |u, s, r| Box::pin(fresh_device(u, s, r)),
            &[],
        ),
        (
            "2. idle reconnect".into(),
            |u, s, r| Box::pin(idle_reconnect(u, s, r)),
            &[],
        ),
        (
            "3. latency".into(),
            |u, s, r| Box::pin(delivery_latency(u, s, r)),
            &[],
        ),
    ];
    let mut rows = Rows::new();
    for (name, workload, relay_args) in workloads {
        eprintln!("{}: {name} ...", kind.name());
        let began = Instant::now();
        let first_row = rows.len();
        let server = match Server::start(kind, relay_args).await {
            Ok(server) => server,
            Err(e) => {
                rows.push((
                    name.clone(),
                    "server start".into(),
                    Figure::Failed(format!("{e:#}")),
                ));
                continue;
            }
        };
        let url = server.url();
        let outcome = tokio::time::timeout(
            sizes.timeout + Duration::from_secs(30),
            workload(&url, sizes, &mut rows),
        )
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("workload timed out")));
        if let Err(e) = outcome {
            rows.push((
                name.clone(),
                "outcome".into(),
                Figure::Failed(format!("{e:#}")),
            ));
        }
        let peak = server
            .peak_rss()
            .map_or(Figure::Text("?".into()), Figure::Bytes);
        rows.push((name.clone(), "server peak RSS".into(), peak));
        if !relay_args.is_empty() {
            let flags = relay_args.join(" ");
            for row in &mut rows[first_row..] {
                if !row.0.contains(&flags) {
                    row.0 = format!("{} [relay {flags}]", row.0);
                }
            }
        }
        match server.stop().await {
            Ok(logged) => notes.extend(logged.into_iter().take(20)),
            Err(e) => notes.push(format!("{}: stopping: {e:#}", kind.name())),
        }
        eprintln!(
            "{}: {name} done in {:.1} s",
            kind.name(),
            began.elapsed().as_secs_f64()
        );
    }
    rows
}

fn print_table(tandem: &Rows, js: &Rows) {
    println!();
    println!("| workload | measure | Tandem relay | JS sync server | JS / Tandem |");
    println!("|---|---|---:|---:|---:|");
    let mut keys: Vec<(String, String)> = Vec::new();
    for (w, m, _) in tandem.iter().chain(js.iter()) {
        if !keys.contains(&(w.clone(), m.clone())) {
            keys.push((w.clone(), m.clone()));
        }
    }
    // Workload names carry their sizes; group rows by the leading number.
    keys.sort_by_key(|(w, _)| w.chars().next());
    let find = |rows: &Rows, w: &str, m: &str| {
        rows.iter()
            .find(|(rw, rm, _)| rw == w && rm == m)
            .map(|(_, _, f)| f.clone())
    };
    for (w, m) in keys {
        let t = find(tandem, &w, &m);
        let j = find(js, &w, &m);
        let ratio = match (
            t.as_ref().and_then(Figure::value),
            j.as_ref().and_then(Figure::value),
        ) {
            (Some(t), Some(j)) if t > 0.0 && j / t < 0.1 => format!("{:.3}", j / t),
            (Some(t), Some(j)) if t > 0.0 => format!("{:.2}", j / t),
            _ => "-".into(),
        };
        let show = |f: Option<Figure>| f.map_or("-".into(), |f| f.show());
        println!("| {w} | {m} | {} | {} | {ratio} |", show(t), show(j));
    }
}

fn main() -> anyhow::Result<()> {
    let sizes = Sizes::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut notes = Vec::new();
        let mut tandem = Rows::new();
        let mut js = Rows::new();
        for kind in &sizes.servers {
            let rows = bench_server(*kind, &sizes, &mut notes).await;
            match kind {
                ServerKind::Tandem => tandem = rows,
                ServerKind::Js => js = rows,
            }
        }
        print_table(&tandem, &js);
        println!();
        println!("Sizes: {sizes:?}");
        for note in notes {
            println!("server log: {note}");
        }
        Ok(())
    })
}
