//! Sync figures: Tandem's relay against the official automerge-repo JS sync server, side by side on
//! loopback, driven by the same Rust client (`SyncEngine`, `Role::Device`, over tokio-tungstenite
//! with in-memory storage), so that differences are the servers'.
//!
//! Run with `scripts/bench-sync.sh` (it builds the release relay first); it prints one table:
//! workload, measure, our figure, the JS server's, the ratio, and the performance issue's goal.
//! Seven workloads (`TANDEM_BENCH_WORKLOADS` picks some), each against a fresh server process:
//! 1. a fresh device downloads documents it knows the ids of;
//! 2. a device holding many synced documents reconnects with nothing changed, then again with a few
//!    documents changed on both sides;
//! 3. a writer edits documents that many connected clients are syncing; delivery latency;
//! 4. fan-out: one writer and one subscriber per document, thousands connected;
//! 5. memory per idle connection and per hot document (server RSS);
//! 6. durable ingest, closed loop: each writer's next change once the last one is acknowledged;
//! 7. durable ingest, open loop: each writer makes changes on a clock.
//!
//! Sizes come from `TANDEM_BENCH_*` environment variables (see [`Sizes::from_env`]). Every wait has
//! a timeout; a server that does not finish a workload gets its failure printed as its figure.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use automerge::transaction::Transactable;
use automerge::{AutomergeError, ChangeHash, ROOT, ReadDoc};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tandem_core::DocumentId;
use tandem_core::sync::{
    ConnectionId, Direction, Effect, EngineConfig, Message, Role, StorageId, StoredDocument,
    SyncEngine,
};
use tandem_tests::fixtures::fill_plan;
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
    /// Workload 2, second reconnect: documents changed while the device was away (half on the
    /// device, half by another device through the server).
    changed_documents: usize,
    subscribers: usize,
    latency_documents: usize,
    rounds: usize,
    /// Workload 4: documents, each with one writer and one subscriber (2 devices per document).
    fanout_documents: usize,
    /// Workload 4: writes per document, each writer writing once a second, staggered.
    fanout_rounds: usize,
    /// Workload 5: idle connections held open at once.
    idle_connections: usize,
    /// Workload 5: documents one connected client keeps hot on the server.
    hot_documents: usize,
    /// Workload 6: writers, one document each, each writing as fast as the server acknowledges.
    ingest_writers: usize,
    /// Workload 6: how long the writers write.
    ingest_duration: Duration,
    /// Workload 7: changes per second each writer makes, whatever the server does.
    ingest_rate: usize,
    /// Which workloads run (1 to 7).
    workloads: Vec<usize>,
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
            changed_documents: number("TANDEM_BENCH_CHANGED_DOCS", 10)?,
            subscribers: number("TANDEM_BENCH_SUBSCRIBERS", 500)?,
            latency_documents: number("TANDEM_BENCH_LATENCY_DOCS", 50)?,
            rounds: number("TANDEM_BENCH_ROUNDS", 100)?,
            fanout_documents: number("TANDEM_BENCH_FANOUT_DOCS", 1_000)?,
            fanout_rounds: number("TANDEM_BENCH_FANOUT_ROUNDS", 5)?,
            idle_connections: number("TANDEM_BENCH_IDLE_CONNECTIONS", 2_000)?,
            hot_documents: number("TANDEM_BENCH_HOT_DOCS", 1_000)?,
            ingest_writers: number("TANDEM_BENCH_INGEST_WRITERS", 500)?,
            ingest_duration: Duration::from_secs(number("TANDEM_BENCH_INGEST_SECS", 10)? as u64),
            ingest_rate: number("TANDEM_BENCH_INGEST_RATE", 50)?,
            workloads: match std::env::var("TANDEM_BENCH_WORKLOADS") {
                Ok(list) => list
                    .split(',')
                    .map(|w| {
                        w.trim()
                            .parse()
                            .with_context(|| format!("TANDEM_BENCH_WORKLOADS={list}"))
                    })
                    .collect::<anyhow::Result<_>>()?,
                Err(_) => (1..=7).collect(),
            },
            timeout: Duration::from_secs(number("TANDEM_BENCH_TIMEOUT_SECS", 120)? as u64),
            servers,
        };
        if sizes.changed_documents > sizes.idle_documents {
            bail!("more changed documents than idle documents");
        }
        if sizes.latency_documents == 0 || sizes.subscribers < sizes.latency_documents {
            bail!("need at least one latency document and one subscriber per document");
        }
        if sizes.fanout_documents == 0
            || sizes.idle_connections == 0
            || sizes.ingest_writers == 0
            || sizes.ingest_rate == 0
        {
            bail!("fan-out documents, idle connections, ingest writers and rate must not be zero");
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
    /// `ws://address/`.
    url: String,
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
            url: format!("ws://{address}/"),
            address,
            dir,
        })
    }

    /// The most resident memory the process has used so far (VmHWM), in bytes.
    fn peak_rss(&self) -> Option<u64> {
        self.status_kib("VmHWM:").map(|kib| kib * 1024)
    }

    /// The resident memory of the process now (VmRSS), in bytes.
    fn rss(&self) -> Option<u64> {
        self.status_kib("VmRSS:").map(|kib| kib * 1024)
    }

    fn status_kib(&self, field: &str) -> Option<u64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse().ok()
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
    /// Flights: times the client sent after hearing from the server since it last sent. Frames
    /// that arrive together are handled together, so a flight answers everything that came in.
    flights: AtomicU64,
    heard: AtomicBool,
    /// Bytes of the reconnect digest's messages (`tandem-digest`), both ways.
    digest_bytes: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default)]
struct TrafficFigures {
    sent_bytes: u64,
    sent_messages: u64,
    received_bytes: u64,
    received_messages: u64,
}

impl Traffic {
    fn record(&self, epoch: Instant, frame: &[u8], sent: bool) {
        let bytes = frame.len();
        // The message type is a CBOR text in the frame; no need to decode every frame.
        if frame.windows(13).any(|w| w == b"tandem-digest") {
            self.digest_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        }
        let (b, m) = if sent {
            (&self.sent_bytes, &self.sent_messages)
        } else {
            (&self.received_bytes, &self.received_messages)
        };
        b.fetch_add(bytes as u64, Ordering::Relaxed);
        m.fetch_add(1, Ordering::Relaxed);
        if !sent {
            self.heard.store(true, Ordering::Relaxed);
        } else if self.heard.swap(false, Ordering::Relaxed) {
            self.flights.fetch_add(1, Ordering::Relaxed);
        }
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
    /// Workload 6: while set, the driver writes again each time the server acknowledged.
    ingest: Option<Ingest>,
    /// The connection the driver opened, once it did.
    connection: Option<ConnectionId>,
    /// Workload 2: documents whose reconnect is timed.
    watch: Option<Watch>,
}

/// Documents whose reconnect is timed: when (and after how many flights) the server first
/// advertised our heads of every one of them.
#[derive(Debug)]
struct Watch {
    documents: Arc<Vec<DocumentId>>,
    done: Option<(Instant, u64)>,
}

/// One ingest writer: a change, then the next as soon as the server advertised our heads.
#[derive(Debug)]
struct Ingest {
    document: DocumentId,
    until: Instant,
    /// When the change the server has not acknowledged yet was written.
    outstanding: Option<Instant>,
    /// Write-to-acknowledgement times of the changes acknowledged before `until`.
    acknowledged: Vec<Duration>,
    /// Workload 7 (open loop): changes per second, made on a clock rather than on answers.
    open_loop: Option<OpenLoop>,
}

/// An open-loop writer: change `i` is due at `began + i / rate`, whether or not the server has
/// answered. As automerge-repo does, changes made while a message is in flight go out together
/// in the next one, once the server answered the previous: so when the server has answered,
/// every change that fell due since is made (one transaction each) and sent in one message. The
/// latency of a change is from when it was due to its acknowledgement.
#[derive(Debug)]
struct OpenLoop {
    rate: f64,
    began: Instant,
    /// Changes made so far.
    made: u64,
    /// When each change in flight (made, not yet acknowledged) was due.
    in_flight: Vec<Instant>,
    /// Messages that carried changes.
    messages: u64,
}

impl OpenLoop {
    fn due_at(&self, change: u64) -> Instant {
        self.began + Duration::from_secs_f64(change as f64 / self.rate)
    }
}

impl Ingest {
    /// When the driver must wake up to make the next change: only while nothing is in flight
    /// (otherwise the server's answer wakes it).
    fn next_wake(&self) -> Option<Instant> {
        let open = self.open_loop.as_ref()?;
        if !open.in_flight.is_empty() {
            return None;
        }
        let due = open.due_at(open.made);
        (due < self.until).then_some(due)
    }
}

impl Device {
    fn new(name: &str) -> Self {
        // `TANDEM_BENCH_SKETCH=0`: a device from before the reconnect digest's sketch, which the
        // relay answers with its bucket digests (the baseline of the changed reconnect).
        let sketch = std::env::var("TANDEM_BENCH_SKETCH").as_deref() != Ok("0");
        let config = EngineConfig::new(format!("bench-{name}"), Role::Device)
            .with_storage_id(format!("bench-storage-{name}"))
            .with_reconnect_sketch(sketch);
        Self {
            engine: SyncEngine::new(config),
            documents: HashMap::new(),
            sync_states: HashMap::new(),
            sent_per_document: HashMap::new(),
            count_per_document: false,
            ingest: None,
            connection: None,
            watch: None,
        }
    }

    fn create(&mut self, document: DocumentId, index: usize) -> anyhow::Result<()> {
        self.engine
            .create_document(document, |doc| fill_plan(doc, &format!("student-{index}")))??;
        Ok(())
    }
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
    device.connection = Some(connection);
    let mut open = carry_out(&mut device, &out, &reporter);
    // `TANDEM_BENCH_DELAY_MS`: every frame from the server is handed to the engine that much
    // later, as over a network with that round trip; frames due within half of it are handled
    // together (they left the server as one burst).
    let delay = Duration::from_millis(
        std::env::var("TANDEM_BENCH_DELAY_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(0),
    );
    let mut delayed: std::collections::VecDeque<(Instant, Incoming)> = Default::default();
    let mut stream_done = false;
    while open {
        let due = delayed.front().map(|(at, _)| *at);
        let wake = device.ingest.as_ref().and_then(Ingest::next_wake);
        let wake_at = tokio::time::Instant::from_std(wake.unwrap_or_else(Instant::now));
        tokio::select! {
            () = tokio::time::sleep_until(wake_at), if wake.is_some() => {}
            frame = stream.next(), if !stream_done => {
                if delay.is_zero() {
                    open = receive(&mut device, connection, frame, &reporter);
                    // Frames that arrived together are handled before anything goes out, so the
                    // answers to them leave as one flight.
                    while open && let Some(frame) = stream.next().now_or_never() {
                        open = receive(&mut device, connection, frame, &reporter);
                    }
                } else {
                    stream_done = !matches!(frame, Some(Ok(_)));
                    delayed.push_back((Instant::now() + delay, frame));
                }
            }
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now).into()), if due.is_some() => {
                let until = Instant::now() + delay / 2;
                while open && delayed.front().is_some_and(|(at, _)| *at <= until) {
                    if let Some((_, frame)) = delayed.pop_front() {
                        open = receive(&mut device, connection, frame, &reporter);
                    }
                }
            }
            command = commands.recv() => match command {
                Some(Order::Run(job)) => job(&mut device, connection),
                Some(Order::Leave) | None => {
                    device.engine.disconnect(connection);
                }
            },
        }
        open &= carry_out(&mut device, &out, &reporter);
        if open && ingest_step(&mut device, connection) {
            open &= carry_out(&mut device, &out, &reporter);
        }
    }
    let _ = out.send(Outgoing::Close);
    drop(out);
    let _ = writer.await;
    device
}

/// One item from the websocket.
type Incoming = Option<Result<tungstenite::Message, tungstenite::Error>>;

/// Hands one websocket item to the engine; false once the connection is gone.
fn receive(
    device: &mut Device,
    connection: ConnectionId,
    frame: Incoming,
    reporter: &Reporter,
) -> bool {
    match frame {
        Some(Ok(tungstenite::Message::Binary(bytes))) => {
            reporter.traffic.record(reporter.epoch, &bytes, false);
            device.engine.frame_received(connection, &bytes);
            true
        }
        Some(Ok(tungstenite::Message::Close(frame))) => {
            device.engine.connection_closed(connection);
            reporter.event(Event::Closed(format!("server closed: {frame:?}")));
            false
        }
        Some(Ok(_)) => true,
        Some(Err(e)) => {
            device.engine.connection_closed(connection);
            reporter.event(Event::Closed(format!("websocket error: {e}")));
            false
        }
        None => {
            device.engine.connection_closed(connection);
            reporter.event(Event::Closed("server went away".into()));
            false
        }
    }
}

/// Workload 2: records when the server first advertised our heads of every watched document
/// (once the client has sent its first flight, before which no session exists to tell).
fn check_watch(device: &mut Device, traffic: &Traffic) {
    let (Some(watch), Some(connection)) = (device.watch.as_mut(), device.connection) else {
        return;
    };
    let flights = traffic.flights.load(Ordering::Relaxed);
    if watch.done.is_none()
        && flights > 0
        && watch
            .documents
            .iter()
            .all(|d| device.engine.in_sync_with(d, connection))
    {
        watch.done = Some((Instant::now(), flights));
    }
}

/// Workload 6: once the server advertised our heads, counts the acknowledgement and writes the
/// next change (until the writer's time is up). True when it wrote. Workload 7: see [`OpenLoop`].
fn ingest_step(device: &mut Device, connection: ConnectionId) -> bool {
    let Some(ingest) = device.ingest.as_mut() else {
        return false;
    };
    if !device.engine.in_sync_with(&ingest.document, connection) {
        return false;
    }
    let now = Instant::now();
    if let Some(open) = ingest.open_loop.as_mut() {
        if now <= ingest.until {
            ingest
                .acknowledged
                .extend(open.in_flight.drain(..).map(|due| now - due));
        }
        open.in_flight.clear();
        let mut due = Vec::new();
        while open.due_at(open.made) <= now.min(ingest.until) {
            due.push(open.due_at(open.made));
            open.made += 1;
        }
        if due.is_empty() {
            return false;
        }
        let (first, count) = (open.made - due.len() as u64, due.len() as u64);
        open.in_flight = due;
        open.messages += 1;
        let document = ingest.document;
        return device
            .engine
            .local_change(document, |doc| {
                for n in first..first + count {
                    doc.transact::<_, _, AutomergeError>(|tx| {
                        tx.put(ROOT, "notes", n as i64)?;
                        Ok(())
                    })
                    .map_err(|f| f.error)?;
                }
                Ok::<_, AutomergeError>(())
            })
            .is_ok();
    }
    if let Some(written) = ingest.outstanding.take()
        && now <= ingest.until
    {
        ingest.acknowledged.push(now - written);
    }
    if now >= ingest.until {
        return false;
    }
    let n = ingest.acknowledged.len() as i64;
    let document = ingest.document;
    ingest.outstanding = Some(now);
    device
        .engine
        .local_change(document, |doc| {
            doc.transact::<_, _, AutomergeError>(|tx| {
                tx.put(ROOT, "last_session", n)?;
                Ok(())
            })
            .map(|_| ())
            .map_err(|f| f.error)
        })
        .is_ok()
}

/// Carries out every pending effect, storage ones at once. False once the engine closed.
fn carry_out(
    device: &mut Device,
    out: &mpsc::UnboundedSender<Outgoing>,
    reporter: &Reporter,
) -> bool {
    let mut open = true;
    loop {
        // Before the answers go out: a reply sent after everything is in sync is no round trip.
        check_watch(device, &reporter.traffic);
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
                    reporter.traffic.record(reporter.epoch, &frame, true);
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

/// Workload 1: a fresh device that knows the ids downloads every document. From our relay it
/// comes as snapshots (the device asks with one `tandem-fetch` want); the JS server, which does
/// not advertise the fetch, gets the plain automerge-repo requests.
async fn fresh_device(url: &str, sizes: &Sizes, rows: &mut Rows) -> anyhow::Result<()> {
    let workload = format!("1. fresh device, {} docs", sizes.fresh_documents);
    let deadline = Instant::now() + sizes.timeout;
    let (seeder, documents, upload) = seed(url, "seeder", sizes.fresh_documents, deadline).await?;
    rows.push((
        workload.clone(),
        "seeding upload (not the measure)".into(),
        Figure::Millis(ms(upload)),
    ));
    // The anchor for the bytes: what the documents take compacted (`Automerge::save`).
    let snapshots: u64 = documents
        .iter()
        .filter_map(|d| seeder.engine.save_document(d))
        .map(|bytes| bytes.len() as u64)
        .sum();
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
    // Which way the documents came: our relay offers the snapshot fetch, the JS server does not.
    let fetched = client
        .run(|device, connection| device.engine.fetch_progress(connection))
        .await?;
    client.leave().await?;
    rows.push((
        workload.clone(),
        "wall time until all complete".into(),
        Figure::Millis(ms(took)),
    ));
    rows.push((
        workload.clone(),
        "protocol (fetch progress: docs, bytes)".into(),
        Figure::Text(match fetched {
            Some(p) => format!(
                "snapshot fetch ({}/{} docs, {}/{} B)",
                p.documents_done, p.documents_total, p.bytes_done, p.bytes_total
            ),
            None => "plain automerge-repo".into(),
        }),
    ));
    let traffic = difference(after, before);
    traffic_rows(&workload, traffic, rows);
    rows.push((
        workload.clone(),
        "sum of the documents' snapshots (save())".into(),
        Figure::Bytes(snapshots),
    ));
    rows.push((
        workload,
        "bytes received / sum of snapshots".into(),
        Figure::Text(format!(
            "{:.2}",
            traffic.received_bytes as f64 / snapshots.max(1) as f64
        )),
    ));
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
    let device = client.leave().await?;
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
    if sizes.changed_documents > 0 {
        changed_reconnect(url, sizes, device, &documents, rows).await?;
    }
    Ok(())
}

/// Workload 2, second reconnect: while the device is away it edits half of `changed_documents`
/// and another device edits the other half through the server; then it reconnects. Measured
/// until the server has advertised our heads of every changed document (and, for the bytes,
/// until quiet).
async fn changed_reconnect(
    url: &str,
    sizes: &Sizes,
    mut device: Device,
    documents: &Arc<Vec<DocumentId>>,
    rows: &mut Rows,
) -> anyhow::Result<()> {
    let workload = format!(
        "2. reconnect, {} of {} docs changed{}",
        sizes.changed_documents,
        sizes.idle_documents,
        if std::env::var("TANDEM_BENCH_SKETCH").as_deref() == Ok("0") {
            " (no sketch: buckets)"
        } else {
            ""
        }
    );
    let deadline = Instant::now() + sizes.timeout;
    let changed = Arc::new(documents[..sizes.changed_documents].to_vec());
    let (here, there) = changed.split_at(changed.len() / 2);
    let there = Arc::new(there.to_vec());

    // The other device fetches its documents, edits them, and leaves once the server has them.
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let editor = Client::connect(Device::new("editor"), url, 1, events_tx).await?;
    until_joined(&mut events, deadline).await?;
    let open = there.clone();
    editor
        .run(move |device, _| {
            for document in open.iter() {
                device.engine.open_document(*document);
            }
        })
        .await?;
    editor.until_in_sync(there.clone(), deadline).await?;
    let edit = there.clone();
    editor
        .run(move |device, _| {
            for document in edit.iter() {
                device.engine.local_change(*document, |doc| {
                    doc.transact::<_, _, AutomergeError>(|tx| tx.put(ROOT, "edited_by", "editor"))
                        .map(|_| ())
                        .map_err(|f| f.error)
                })??;
            }
            Ok::<_, anyhow::Error>(())
        })
        .await??;
    editor.until_in_sync(there.clone(), deadline).await?;
    editor.until_quiet(Instant::now(), deadline).await?;
    editor.leave().await?;

    for document in here {
        device.engine.local_change(*document, |doc| {
            doc.transact::<_, _, AutomergeError>(|tx| tx.put(ROOT, "edited_by", "holder"))
                .map(|_| ())
                .map_err(|f| f.error)
        })??;
    }
    device.watch = Some(Watch {
        documents: changed.clone(),
        done: None,
    });
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let began = Instant::now();
    let client = Client::connect(device, url, 0, events_tx).await?;
    let mut synced = None;
    while synced.is_none() {
        synced = client
            .run(|device, _| device.watch.as_ref().and_then(|w| w.done))
            .await?;
        if synced.is_none() {
            if Instant::now() > deadline {
                bail!("the changed documents were not in sync at the timeout");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let last = client.until_quiet(began, deadline).await?;
    let traffic = client.traffic.figures();
    let digest_bytes = client.traffic.digest_bytes.load(Ordering::Relaxed);
    let check = there.clone();
    let got_remote = client
        .run(move |device, _| {
            check.iter().all(|document| {
                device.engine.document(document).is_some_and(|doc| {
                    matches!(
                        doc.get(ROOT, "edited_by"),
                        Ok(Some((automerge::Value::Scalar(s), _)))
                            if s.as_str() == Some("editor")
                    )
                })
            })
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
    if !got_remote {
        bail!("the other device's edits did not arrive");
    }
    let Some((in_sync_at, flights)) = synced else {
        bail!("never in sync");
    };
    rows.push((
        workload.clone(),
        "time until changed docs in sync".into(),
        Figure::Millis(ms(in_sync_at - began)),
    ));
    rows.push((
        workload.clone(),
        "time until quiet (last frame)".into(),
        Figure::Millis(ms(last - began)),
    ));
    traffic_rows(&workload, traffic, rows);
    // Flights the client sent after hearing from the server (the handshake's `join` is not one),
    // until the server had advertised our heads of every changed document.
    rows.push((
        workload.clone(),
        "round trips after the handshake (client flights until in sync)".into(),
        Figure::Count(flights),
    ));
    rows.push((
        workload.clone(),
        "digest exchange bytes both ways (offer to decoded, or to differ)".into(),
        Figure::Bytes(digest_bytes),
    ));
    rows.push((
        workload,
        "bytes both ways per changed document".into(),
        Figure::Count(
            (traffic.sent_bytes + traffic.received_bytes) / sizes.changed_documents as u64,
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
    // Every subscriber gets the document as the writer left it.
    let mut waiting: HashSet<usize> = (1..=subscribers).collect();
    // A document opened during the handshake is reported unavailable at once (no peer yet), so
    // each subscriber opens its document only after it joined. The first subscribers may have
    // their document before the last ones joined.
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
            Ok(_) => {}
            Err(e) => bail!("{} subscribers never joined: {e}", subscribers - joined),
        }
    }
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

/// Connects `count` devices (indices `first..first + count`), each made by `make`, and waits until
/// every one finished the handshake.
async fn connect_all(
    url: &str,
    first: usize,
    count: usize,
    mut make: impl FnMut(usize) -> anyhow::Result<Device>,
    events_tx: &mpsc::UnboundedSender<(usize, Event)>,
    events: &mut mpsc::UnboundedReceiver<(usize, Event)>,
    deadline: Instant,
) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(count);
    for i in first..first + count {
        let device = make(i)?;
        clients.push(Client::connect(device, url, i, events_tx.clone()).await?);
    }
    let mut joined = 0;
    while joined < count {
        match next_event(events, deadline).await {
            Ok((_, Event::Joined)) => joined += 1,
            Ok((i, Event::Closed(reason))) => bail!("client {i} closed: {reason}"),
            Ok(_) => {}
            Err(e) => bail!("{} of {count} clients never joined: {e}", count - joined),
        }
    }
    Ok(clients)
}

/// Every client leaves, all at once.
async fn leave_all(clients: Vec<Client>) {
    futures_util::future::join_all(clients.into_iter().map(Client::leave)).await;
}

/// Workload 4: fan-out. Each of `fanout_documents` documents has one writer and one subscriber
/// (2 devices per document, all connected at once). Every writer writes once a second, the
/// writers staggered evenly over the second; time from each write to its subscriber's
/// `DocumentChanged`.
async fn fan_out(url: &str, sizes: &Sizes, rows: &mut Rows) -> anyhow::Result<()> {
    let docs = sizes.fanout_documents;
    let workload = format!("4. fan-out, {} devices ({docs} docs x 2)", 2 * docs);
    let deadline = Instant::now() + sizes.timeout;
    let documents: Vec<DocumentId> = (0..docs).map(|_| DocumentId::random()).collect();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let began = Instant::now();
    // Writers are clients 0..docs; each holds its document before it connects and offers it.
    let writers = connect_all(
        url,
        0,
        docs,
        |i| {
            let mut device = Device::new(&format!("writer-{i}"));
            device.create(documents[i], i)?;
            Ok(device)
        },
        &events_tx,
        &mut events,
        deadline,
    )
    .await?;
    let mut initial = HashMap::with_capacity(docs);
    for (writer, document) in writers.iter().zip(&documents) {
        writer
            .until_in_sync(Arc::new(vec![*document]), deadline)
            .await?;
        let d = *document;
        let heads = writer
            .run(move |device, _| sorted(device.engine.heads(&d).unwrap_or_default()))
            .await?;
        initial.insert(*document, heads);
    }
    // Subscribers are clients docs..2*docs; subscriber docs + i syncs document i.
    let subscribers = connect_all(
        url,
        docs,
        docs,
        |i| Ok(Device::new(&format!("sub-{i}"))),
        &events_tx,
        &mut events,
        deadline,
    )
    .await?;
    for (i, subscriber) in subscribers.iter().enumerate() {
        let document = documents[i];
        subscriber
            .run(move |device, _| device.engine.open_document(document))
            .await?;
    }
    let mut waiting: HashSet<usize> = (docs..2 * docs).collect();
    while !waiting.is_empty() {
        match next_event(&mut events, deadline).await {
            Ok((
                i,
                Event::Changed {
                    document, heads, ..
                },
            )) if i >= docs => {
                if initial.get(&document) == Some(&sorted(heads)) {
                    waiting.remove(&i);
                }
            }
            Ok((i, Event::Closed(reason))) => bail!("client {i} closed: {reason}"),
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

    // The writes: write k goes to document k % docs at k / docs seconds.
    let total = docs * sizes.fanout_rounds;
    let interval = Duration::from_secs(1) / docs as u32;
    let (wrote_tx, mut wrote) = mpsc::unbounded_channel::<(DocumentId, Vec<ChangeHash>, Instant)>();
    let mut written_at: HashMap<(DocumentId, Vec<ChangeHash>), Instant> = HashMap::new();
    let mut arrived_at: HashMap<(DocumentId, Vec<ChangeHash>), Instant> = HashMap::new();
    let mut latencies = Vec::with_capacity(total);
    let mut closed = Vec::new();
    let start = tokio::time::Instant::now();
    // Deliveries may trail the last write by at most 10 s.
    let stop = (start + interval * total as u32 + Duration::from_secs(10))
        .min(tokio::time::Instant::from_std(deadline));
    let mut next = 0usize;
    while latencies.len() < total {
        let due = start + interval * next as u32;
        tokio::select! {
            _ = tokio::time::sleep_until(due), if next < total => {
                let index = next % docs;
                let document = documents[index];
                let value = (next / docs) as i64;
                let tx = wrote_tx.clone();
                let written = Instant::now();
                let job: Job = Box::new(move |device, _| {
                    let edit = device.engine.local_change(document, |doc| {
                        doc.transact::<_, _, AutomergeError>(|tx| {
                            tx.put(ROOT, "last_session", value)?;
                            Ok(())
                        })
                        .map(|_| ())
                        .map_err(|f| f.error)
                    });
                    if matches!(edit, Ok(Ok(()))) {
                        let heads = sorted(device.engine.heads(&document).unwrap_or_default());
                        let _ = tx.send((document, heads, written));
                    }
                });
                let _ = writers[index].commands.send(Order::Run(job));
                next += 1;
            }
            Some((document, heads, written)) = wrote.recv() => {
                let key = (document, heads);
                match arrived_at.remove(&key) {
                    Some(at) => latencies.push(at.saturating_duration_since(written)),
                    None => {
                        written_at.insert(key, written);
                    }
                }
            }
            event = events.recv() => match event {
                Some((i, Event::Changed { document, heads, at })) if i >= docs => {
                    let key = (document, sorted(heads));
                    match written_at.remove(&key) {
                        Some(written) => latencies.push(at.saturating_duration_since(written)),
                        None => {
                            arrived_at.insert(key, at);
                        }
                    }
                }
                Some((i, Event::Closed(reason))) => closed.push(format!("client {i}: {reason}")),
                Some(_) => {}
                None => bail!("every client is gone"),
            },
            _ = tokio::time::sleep_until(stop) => break,
        }
    }
    let writes_took = start.elapsed();
    leave_all(writers).await;
    leave_all(subscribers).await;
    if latencies.is_empty() {
        bail!("no deliveries ({closed:?})");
    }
    latencies.sort();
    rows.push((
        workload.clone(),
        format!("writes: {total} at {docs}/s (not the measure; all delivered after)"),
        Figure::Millis(ms(writes_took)),
    ));
    for (name, p) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
        rows.push((
            workload.clone(),
            format!("{name} write-to-subscriber"),
            Figure::Millis(ms(percentile(&latencies, p))),
        ));
    }
    rows.push((
        workload,
        "deliveries".into(),
        Figure::Text(format!("{} / {total}", latencies.len())),
    ));
    if !closed.is_empty() {
        eprintln!(
            "closed during fan-out: {:?}",
            &closed[..closed.len().min(5)]
        );
    }
    Ok(())
}

/// Workload 5: the server's resident memory with `idle_connections` idle clients (handshake
/// done, no document) against none, per connection; then with one more client syncing
/// `hot_documents` documents, per document.
async fn memory(server: &Server, sizes: &Sizes, rows: &mut Rows) -> anyhow::Result<()> {
    let url = server.url.as_str();
    let n = sizes.idle_connections;
    let workload = format!(
        "5. memory, {n} idle conns, {} hot docs",
        sizes.hot_documents
    );
    let deadline = Instant::now() + sizes.timeout;
    let settle = Duration::from_secs(1);
    let (events_tx, mut events) = mpsc::unbounded_channel();
    // One client joins and leaves first, so what the first connection builds lazily is not
    // counted per connection.
    let warm = connect_all(
        url,
        0,
        1,
        |_| Ok(Device::new("warm")),
        &events_tx,
        &mut events,
        deadline,
    )
    .await?;
    leave_all(warm).await;
    tokio::time::sleep(settle).await;
    let none = server.rss().context("no RSS for the server")?;
    let idle = connect_all(
        url,
        1,
        n,
        |i| Ok(Device::new(&format!("idle-{i}"))),
        &events_tx,
        &mut events,
        deadline,
    )
    .await?;
    tokio::time::sleep(settle).await;
    let connected = server.rss().context("no RSS for the server")?;
    rows.push((
        workload.clone(),
        "server RSS, no client".into(),
        Figure::Bytes(none),
    ));
    rows.push((
        workload.clone(),
        format!("server RSS, {n} idle connections"),
        Figure::Bytes(connected),
    ));
    rows.push((
        workload.clone(),
        "RSS per idle connection".into(),
        Figure::Bytes(connected.saturating_sub(none) / n as u64),
    ));

    // One more client uploads documents in batches and stays connected: they stay hot.
    let (holder_tx, mut holder_events) = mpsc::unbounded_channel();
    let holder = Client::connect(Device::new("holder"), url, 0, holder_tx).await?;
    until_joined(&mut holder_events, deadline).await?;
    tokio::time::sleep(settle).await;
    let before = server.rss().context("no RSS for the server")?;
    let documents: Vec<DocumentId> = (0..sizes.hot_documents)
        .map(|_| DocumentId::random())
        .collect();
    for (batch, ids) in documents.chunks(SEED_BATCH).enumerate() {
        let ids = Arc::new(ids.to_vec());
        let create = ids.clone();
        holder
            .run(move |device, _| {
                for (i, document) in create.iter().enumerate() {
                    device.create(*document, batch * SEED_BATCH + i)?;
                }
                Ok::<_, anyhow::Error>(())
            })
            .await??;
        holder.until_in_sync(ids, deadline).await?;
    }
    holder.until_quiet(Instant::now(), deadline).await?;
    tokio::time::sleep(settle).await;
    let hot = server.rss().context("no RSS for the server")?;
    rows.push((
        workload.clone(),
        format!("server RSS, + {} hot docs", sizes.hot_documents),
        Figure::Bytes(hot),
    ));
    rows.push((
        workload,
        "RSS per hot doc (1 peer syncing it)".into(),
        Figure::Bytes(hot.saturating_sub(before) / sizes.hot_documents.max(1) as u64),
    ));
    holder.leave().await?;
    leave_all(idle).await;
    Ok(())
}

/// Workload 6: durable ingest. `ingest_writers` clients, one document each, each writing its
/// next change as soon as the server advertised the heads of its last one (for the relay: once
/// committed), for `ingest_duration`. Acknowledged changes per second, and write-to-ack times.
/// Workload 7 (`rate` given): the same writers in an open loop, each making `rate` changes per
/// second on a clock (see [`OpenLoop`]); a change counts once acknowledged within the window.
async fn ingest(
    server: &Server,
    sizes: &Sizes,
    rate: Option<usize>,
    rows: &mut Rows,
) -> anyhow::Result<()> {
    let url = server.url.as_str();
    let w = sizes.ingest_writers;
    let workload = match rate {
        None => format!("6. durable ingest, {w} writers"),
        Some(rate) => format!("7. open-loop ingest, {w} writers x {rate} changes/s"),
    };
    let deadline = Instant::now() + sizes.timeout;
    let documents: Vec<DocumentId> = (0..w).map(|_| DocumentId::random()).collect();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let writers = connect_all(
        url,
        0,
        w,
        |i| {
            let mut device = Device::new(&format!("ingest-{i}"));
            device.create(documents[i], i)?;
            Ok(device)
        },
        &events_tx,
        &mut events,
        deadline,
    )
    .await?;
    for (writer, document) in writers.iter().zip(&documents) {
        writer
            .until_in_sync(Arc::new(vec![*document]), deadline)
            .await?;
    }
    let commits_before = relay_commits(server).await;
    let began = Instant::now();
    let until = began + sizes.ingest_duration;
    for (writer, document) in writers.iter().zip(&documents) {
        let document = *document;
        let job: Job = Box::new(move |device, _| {
            device.ingest = Some(Ingest {
                document,
                until,
                outstanding: None,
                acknowledged: Vec::new(),
                open_loop: rate.map(|rate| OpenLoop {
                    rate: rate as f64,
                    began,
                    made: 0,
                    in_flight: Vec::new(),
                    messages: 0,
                }),
            });
        });
        let _ = writer.commands.send(Order::Run(job));
    }
    tokio::time::sleep_until(tokio::time::Instant::from_std(until)).await;
    let window = began.elapsed();
    let commits_after = relay_commits(server).await;
    let mut acknowledged = Vec::new();
    let (mut made, mut messages) = (0, 0);
    for writer in &writers {
        if let Some(ingest) = writer.run(|device, _| device.ingest.take()).await? {
            acknowledged.extend(ingest.acknowledged);
            if let Some(open) = ingest.open_loop {
                made += open.made;
                messages += open.messages;
            }
        }
    }
    leave_all(writers).await;
    while let Ok((i, event)) = events.try_recv() {
        if let Event::Closed(reason) = event
            && !reason.starts_with("server closed")
        {
            bail!("writer {i} closed: {reason}");
        }
    }
    if acknowledged.is_empty() {
        bail!("no change acknowledged");
    }
    let count = acknowledged.len();
    acknowledged.sort();
    if let Some(rate) = rate {
        rows.push((
            workload.clone(),
            "changes/s offered (writers x rate)".into(),
            Figure::Count((w * rate) as u64),
        ));
        rows.push((
            workload.clone(),
            "changes made in the window".into(),
            Figure::Count(made),
        ));
        rows.push((
            workload.clone(),
            "changes per message (made / messages)".into(),
            Figure::Count((made as f64 / messages.max(1) as f64).round() as u64),
        ));
    }
    rows.push((
        workload.clone(),
        format!("changes acknowledged in {:.0} s", window.as_secs_f64()),
        Figure::Count(count as u64),
    ));
    rows.push((
        workload.clone(),
        "changes/s acknowledged (higher is better)".into(),
        Figure::Count((count as f64 / window.as_secs_f64()) as u64),
    ));
    for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
        rows.push((
            workload.clone(),
            format!("{name} write-to-acknowledgement"),
            Figure::Millis(ms(percentile(&acknowledged, p))),
        ));
    }
    if let (Some((c0, s0)), Some((c1, s1))) = (commits_before, commits_after)
        && c1 > c0
    {
        let commits = c1 - c0;
        rows.push((
            workload.clone(),
            "relay commits (group commit batches)".into(),
            Figure::Count(commits as u64),
        ));
        rows.push((
            workload.clone(),
            "changes per commit".into(),
            Figure::Count((count as f64 / commits).round() as u64),
        ));
        rows.push((
            workload,
            "mean commit time".into(),
            Figure::Millis((s1 - s0) * 1000.0 / commits),
        ));
    }
    Ok(())
}

/// The relay's commit counter and total commit seconds from `/metrics`; `None` for the JS server
/// or when the relay does not say.
async fn relay_commits(server: &Server) -> Option<(f64, f64)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if server.kind != ServerKind::Tandem {
        return None;
    }
    let mut stream = tokio::net::TcpStream::connect(&server.address).await.ok()?;
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        server.address
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut text))
        .await
        .ok()?
        .ok()?;
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    Some((
        value("tandem_relay_commits_total")?,
        value("tandem_relay_commit_seconds_sum")?,
    ))
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
    &'a Server,
    &'a Sizes,
    &'a mut Rows,
) -> std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>;

/// Runs every workload against a fresh process of `kind`; failures become figures.
async fn bench_server(kind: ServerKind, sizes: &Sizes, notes: &mut Vec<String>) -> Rows {
    let workloads: Vec<(String, Workload, &[&str])> = vec![
        (
            "1. fresh device".into(),
            |v, s, r| Box::pin(fresh_device(&v.url, s, r)),
            &[],
        ),
        (
            "2. idle reconnect".into(),
            |v, s, r| Box::pin(idle_reconnect(&v.url, s, r)),
            &[],
        ),
        (
            "3. latency".into(),
            |v, s, r| Box::pin(delivery_latency(&v.url, s, r)),
            &[],
        ),
        (
            "4. fan-out".into(),
            |v, s, r| Box::pin(fan_out(&v.url, s, r)),
            &[],
        ),
        ("5. memory".into(), |v, s, r| Box::pin(memory(v, s, r)), &[]),
        (
            "6. durable ingest".into(),
            |v, s, r| Box::pin(ingest(v, s, None, r)),
            &[],
        ),
        (
            "7. open-loop ingest".into(),
            |v, s, r| Box::pin(ingest(v, s, Some(s.ingest_rate), r)),
            &[],
        ),
    ];
    let mut rows = Rows::new();
    for (name, workload, relay_args) in workloads {
        let number: usize = name
            .split('.')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if !sizes.workloads.contains(&number) {
            continue;
        }
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
        let outcome = tokio::time::timeout(
            sizes.timeout + Duration::from_secs(30),
            workload(&server, sizes, &mut rows),
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
    println!("| workload | measure | Tandem relay | JS sync server | JS / Tandem | goal |");
    println!("|---|---|---:|---:|---:|---|");
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
        let goal = goal(&w, &m).unwrap_or("");
        println!(
            "| {w} | {m} | {} | {} | {ratio} | {goal} |",
            show(t),
            show(j)
        );
    }
}

/// The performance issue's goal for a row, if it has one.
fn goal(workload: &str, measure: &str) -> Option<&'static str> {
    let reconnect_changed = workload.starts_with("2. reconnect");
    Some(match workload.split('.').next()? {
        "1" if measure == "wall time until all complete" => "JS / Tandem >= 5",
        "1" if measure == "bytes received / sum of snapshots" => "<= 1.1",
        "2" if !reconnect_changed && measure == "bytes received by client" => {
            "<= 1 KB both ways in total"
        }
        "2" if reconnect_changed && measure.starts_with("round trips") => "<= 3",
        "2" if reconnect_changed && measure == "bytes both ways per changed document" => {
            "proportional to the changed documents"
        }
        "4" if measure == "p99 write-to-subscriber" => "< 50 ms, JS / Tandem >= 10",
        "5" if measure == "RSS per idle connection" => "<= 16 KB",
        "5" if measure.starts_with("RSS per hot doc") => "<= 32 KB",
        "6" | "7" if measure == "changes/s acknowledged (higher is better)" => ">= 20,000 durable",
        _ => return None,
    })
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
