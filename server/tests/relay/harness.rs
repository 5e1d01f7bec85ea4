//! Relays to test against (a real `tandem-server` child process, or a [`Server`] in this process),
//! a raw websocket client speaking CBOR by hand, plain HTTP, and the official JS peers under node.
//!
//! Everything waits on an event (a line on stdout, a frame, a close, end of file) with
//! [`TIMEOUT`]; nothing sleeps to wait for a state.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use automerge::Automerge;
use automerge::sync::{self, SyncDoc};
use ciborium::Value;
use futures_util::{SinkExt, StreamExt};
use tandem_server::Server;
use tandem_server::config::ServeConfig;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single awaited event may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The workspace root (the server crate's parent folder).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the server crate sits in the workspace")
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// The relay as a child process

/// A `tandem-server serve` child process on a free loopback port. Killed (SIGKILL) when dropped;
/// its log is printed if the test is failing.
#[derive(Debug)]
pub struct RelayProcess {
    child: Child,
    pub addr: SocketAddr,
    /// Stdout lines after the "listening on" line; disconnected once the process closed stdout,
    /// that is, once it exited.
    stdout: mpsc::Receiver<String>,
    log: PathBuf,
}

impl RelayProcess {
    /// Starts a development relay (`--allow-anonymous`: the tests that are not about access
    /// connect without tokens) on `data`; see [`RelayProcess::start_secure`].
    pub fn start(data: &Path, extra_args: &[&str]) -> Self {
        let mut args = vec!["--allow-anonymous"];
        args.extend_from_slice(extra_args);
        Self::start_secure(data, &args)
    }

    /// Starts the relay as it runs by default (tokens required) on `data` with
    /// `--listen 127.0.0.1:0`, and waits for its "listening on" line to learn the port.
    pub fn start_secure(data: &Path, extra_args: &[&str]) -> Self {
        let log = data.join("relay.log");
        std::fs::create_dir_all(data).expect("create the data folder");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the relay log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tandem-server"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(extra_args)
            .env("TANDEM_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("start tandem-server");
        let pipe = child.stdout.take().expect("piped stdout");
        let (lines, stdout) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut relay = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stdout,
            log,
        };
        relay.addr = relay.wait_for_listening();
        relay
    }

    fn wait_for_listening(&mut self) -> SocketAddr {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("tandem-server listening on ") {
                        return addr.trim().parse().expect("a socket address");
                    }
                }
                Err(e) => panic!(
                    "the relay did not say it was listening ({e}); log:\n{}",
                    self.log_text()
                ),
            }
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits (at most `limit`) for the process to exit, observed as the end of its stdout.
    pub fn wait_for_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("the relay did not exit within {limit:?}")
                }
            }
        }
        self.child.wait().expect("wait for the relay")
    }

    /// SIGKILL, then reap: no chance to flush or clean up anything.
    pub fn kill_hard(&mut self) {
        self.child.kill().expect("kill -9 the relay");
        self.child.wait().expect("reap the relay");
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("query the relay").is_none()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- relay log ({}) ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The relay in this process

/// Settings for an in-process relay; port 0 and a fresh data folder.
pub fn config(data: &Path) -> ServeConfig {
    ServeConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data: data.to_owned(),
        database: None,
        max_frame_bytes: 16 * 1024 * 1024,
        idle_timeout_secs: 300,
        send_queue_bytes: 8 * 1024 * 1024,
        max_documents_per_connection: 100_000,
        max_connections_per_user: 16,
        max_messages_per_second: 1_000,
        message_burst: 100_000,
        allow_anonymous: true,
        behind_tls_proxy: false,
        evict_idle_secs: 60,
        max_hot_documents: None,
        peer_index_cache: tandem_core::sync::DEFAULT_PEER_INDEX_CACHE,
    }
}

/// A [`Server`] running on the test's tokio runtime.
#[derive(Debug)]
pub struct InProcessRelay {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<tandem_server::Result<()>>>,
    _data: TempDir,
}

impl InProcessRelay {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut ServeConfig)) -> Self {
        let data = TempDir::new().expect("temp dir");
        let mut config = config(data.path());
        configure(&mut config);
        let server = Server::bind(&config).await.expect("bind the relay");
        let addr = server.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
            _data: data,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Stops the relay and waits until it has closed every connection and committed everything.
    pub async fn stop(mut self) -> tandem_server::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("running");
        tokio::time::timeout(TIMEOUT, task)
            .await
            .expect("the relay stops in time")
            .expect("the relay task does not panic")
    }
}

impl Drop for InProcessRelay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Plain HTTP

/// A response to [`http_get`].
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// `GET path` over HTTP/1.1 with `Connection: close`, read to the end.
pub async fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        raw
    };
    let raw = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .expect("HTTP answer in time");
    let text = String::from_utf8(raw).expect("a text response");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    HttpResponse {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// The value of a metric sample named exactly `name` (no labels) in Prometheus text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

// ---------------------------------------------------------------------------------------------
// A raw protocol client

/// A CBOR map with text keys, in the given order.
pub fn cbor_map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(key, value)| (Value::Text(key.to_owned()), value))
            .collect(),
    )
}

pub fn text(value: impl Into<String>) -> Value {
    Value::Text(value.into())
}

/// A field of a CBOR map.
pub fn field<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
}

/// A text field of a CBOR map.
pub fn text_field<'a>(map: &'a Value, key: &str) -> Option<&'a str> {
    field(map, key)?.as_text()
}

pub fn message_type(map: &Value) -> &str {
    text_field(map, "type").unwrap_or("<none>")
}

/// What a raw client saw next.
#[derive(Debug)]
pub enum Seen {
    /// A binary frame, decoded from CBOR.
    Frame(Value),
    /// A close frame (with its code and reason, if any) or the end of the stream.
    Closed(Option<CloseFrame>),
    /// The connection broke without a close frame.
    Broken(String),
}

/// A websocket client that speaks the automerge-repo protocol by hand.
#[derive(Debug)]
pub struct RawClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub peer_id: String,
    /// The relay's peer id, learnt from its `peer` message.
    pub relay_id: String,
}

impl RawClient {
    /// Opens a websocket to `url` without joining.
    pub async fn connect(url: &str, peer_id: &str) -> Self {
        Self::connect_with(url, peer_id, None)
            .await
            .unwrap_or_else(|status| panic!("websocket upgrade refused with {status}"))
    }

    /// Opens a websocket to `url`, with `Authorization: Bearer <token>` if given; the HTTP
    /// status if the upgrade is refused.
    pub async fn connect_with(url: &str, peer_id: &str, token: Option<&str>) -> Result<Self, u16> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().expect("a websocket URL");
        if let Some(token) = token {
            let value = format!("Bearer {token}").parse().expect("a header value");
            request.headers_mut().insert("authorization", value);
        }
        let connected = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(request))
            .await
            .expect("websocket upgrade in time");
        match connected {
            Ok((ws, _)) => Ok(Self {
                ws,
                peer_id: peer_id.to_owned(),
                relay_id: String::new(),
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(e) => panic!("websocket upgrade failed: {e}"),
        }
    }

    /// Connects with `token` as a bearer header and joins.
    pub async fn join_with(url: &str, peer_id: &str, token: &str) -> Result<(Self, Value), u16> {
        let mut client = Self::connect_with(url, peer_id, Some(token)).await?;
        let peer = client.handshake("peerMetadata").await;
        Ok((client, peer))
    }

    /// Connects and joins, sending the peer's metadata under `metadata_key` (`peerMetadata` as the
    /// implementations write it, or `metadata` as the spec names it). Returns the relay's `peer`.
    pub async fn join(url: &str, peer_id: &str, metadata_key: &str) -> (Self, Value) {
        let mut client = Self::connect(url, peer_id).await;
        let peer = client.handshake(metadata_key).await;
        (client, peer)
    }

    /// Sends `join` and waits for the relay's `peer`.
    async fn handshake(&mut self, metadata_key: &str) -> Value {
        let peer_id = self.peer_id.clone();
        let client = self;
        let metadata = cbor_map(vec![
            ("storageId", text(format!("storage-of-{peer_id}"))),
            ("isEphemeral", Value::Bool(false)),
        ]);
        client
            .send(cbor_map(vec![
                ("type", text("join")),
                ("senderId", text(peer_id)),
                (metadata_key, metadata),
                ("supportedProtocolVersions", Value::Array(vec![text("1")])),
            ]))
            .await;
        let peer = client.expect("peer").await;
        client.relay_id = text_field(&peer, "senderId")
            .expect("the relay names itself")
            .to_owned();
        peer
    }

    pub async fn send(&mut self, message: Value) {
        let mut bytes = Vec::new();
        ciborium::into_writer(&message, &mut bytes).expect("encode CBOR");
        self.send_raw(Message::Binary(bytes.into())).await;
    }

    pub async fn send_raw(&mut self, message: Message) {
        tokio::time::timeout(TIMEOUT, self.ws.send(message))
            .await
            .expect("send in time")
            .expect("send");
    }

    /// The next frame or close, skipping pings and pongs.
    pub async fn next(&mut self) -> Seen {
        loop {
            let next = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("the relay said something in time");
            return match next {
                None => Seen::Closed(None),
                Some(Err(e)) => Seen::Broken(e.to_string()),
                Some(Ok(Message::Binary(bytes))) => Seen::Frame(
                    ciborium::from_reader(&bytes[..]).expect("the relay sends CBOR frames"),
                ),
                Some(Ok(Message::Close(frame))) => Seen::Closed(frame),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Text(text))) => panic!("the relay sent a text frame: {text}"),
            };
        }
    }

    /// The next frame, whatever its type.
    pub async fn expect_any(&mut self) -> Value {
        match self.next().await {
            Seen::Frame(message) => message,
            Seen::Broken(reason) => panic!("expected a message; the connection broke: {reason}"),
            closed => panic!("expected a message, got {closed:?}"),
        }
    }

    /// The next frame, which must be a message of type `kind`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        match self.next().await {
            Seen::Frame(message) if message_type(&message) == kind => message,
            other => panic!("expected a `{kind}` message, got {other:?}"),
        }
    }

    /// Reads until the relay closes the connection; returns the messages before the close and the
    /// close frame (`None` if the stream ended or broke without one).
    pub async fn expect_close(&mut self) -> (Vec<Value>, Option<CloseFrame>) {
        let mut before = Vec::new();
        loop {
            match self.next().await {
                Seen::Frame(message) => before.push(message),
                Seen::Closed(frame) => return (before, frame),
                Seen::Broken(_) => return (before, None),
            }
        }
    }

    /// A `request`/`sync` message for `document` carrying `data`.
    pub fn sync_message(&self, kind: &str, document: &str, data: Vec<u8>) -> Value {
        cbor_map(vec![
            ("type", text(kind)),
            ("senderId", text(self.peer_id.as_str())),
            ("targetId", text(self.relay_id.as_str())),
            ("documentId", text(document)),
            ("data", Value::Bytes(data)),
        ])
    }

    /// Runs the automerge sync protocol for `doc` with the relay until the relay reports the same
    /// heads as ours (so, since the relay acknowledges only what it committed, until it holds
    /// `doc` durably, or until we hold everything the relay has). An empty `doc` asks by
    /// `request`, one with changes offers them by `sync`; messages about other documents are
    /// skipped.
    pub async fn sync_until_same_heads(&mut self, document: &str, doc: &mut Automerge) {
        let mut state = sync::State::new();
        loop {
            if let Some(message) = doc.generate_sync_message(&mut state) {
                // `request` says "I don't have it"; a peer holding changes offers them by `sync`.
                let kind = if doc.get_heads().is_empty() {
                    "request"
                } else {
                    "sync"
                };
                let frame = self.sync_message(kind, document, message.encode());
                self.send(frame).await;
            }
            // Messages about other documents (a session reset elsewhere) are not ours to answer.
            let reply = loop {
                let reply = self.expect("sync").await;
                if text_field(&reply, "documentId") == Some(document) {
                    break reply;
                }
            };
            let data = field(&reply, "data")
                .and_then(Value::as_bytes)
                .expect("sync data");
            let message = sync::Message::decode(data).expect("an automerge sync message");
            let mut theirs = message.heads.clone();
            doc.receive_sync_message(&mut state, message)
                .expect("the relay's sync message applies");
            let mut ours = doc.get_heads();
            theirs.sort();
            ours.sort();
            if !ours.is_empty() && theirs == ours {
                return;
            }
        }
    }
}

/// A new document id, in the bs58check form the protocol uses.
pub fn new_document_id() -> String {
    tandem_core::DocumentId::random().to_string()
}

// ---------------------------------------------------------------------------------------------
// The official JS peers

/// Makes sure `tests/js/node_modules` exists, running `scripts/setup.sh` if it does not.
pub fn ensure_js_peers() {
    static SETUP: std::sync::Once = std::sync::Once::new();
    SETUP.call_once(|| {
        let root = workspace_root();
        if root
            .join("tests/js/node_modules/@automerge/automerge-repo")
            .is_dir()
        {
            return;
        }
        let status = Command::new(root.join("scripts/setup.sh"))
            .current_dir(&root)
            .status()
            .expect("run scripts/setup.sh (needs node and npm)");
        assert!(
            status.success(),
            "scripts/setup.sh failed: the JS interop tests need node, npm and the packages \
             pinned in tests/js/package-lock.json"
        );
    });
}

/// Runs `node tests/js/<script> args…` to completion and parses its last stdout line as JSON.
/// The scripts bound their own waits and exit non-zero on timeout.
pub fn node_json(script: &str, args: &[&str]) -> serde_json::Value {
    ensure_js_peers();
    let root = workspace_root();
    let output = Command::new("node")
        .arg(root.join("tests/js").join(script))
        .args(args)
        .current_dir(root.join("tests/js"))
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "node {script} {args:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().expect("the script printed a result");
    serde_json::from_str(last).expect("the script prints JSON")
}

/// A node script running in the background, its stdout lines parsed as JSON as they arrive.
/// Killed when dropped.
#[derive(Debug)]
pub struct NodeProcess {
    child: Child,
    lines: mpsc::Receiver<serde_json::Value>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl NodeProcess {
    pub fn spawn(script: &str, args: &[&str]) -> Self {
        ensure_js_peers();
        let root = workspace_root();
        let mut child = Command::new("node")
            .arg(root.join("tests/js").join(script))
            .args(args)
            .current_dir(root.join("tests/js"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run node");
        let stdout = child.stdout.take().expect("piped stdout");
        // Read stderr all along, so a chatty script never blocks on a full pipe.
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let collected = stderr.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                if let Ok(mut text) = collected.lock() {
                    text.push_str(&String::from_utf8_lossy(&chunk[..n]));
                }
            }
        });
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(value) = serde_json::from_str(&line) else {
                    continue;
                };
                if send.send(value).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            stderr,
        }
    }

    /// The next JSON line; panics on timeout or if the script ended (with its stderr).
    pub fn next_line(&mut self) -> serde_json::Value {
        match self.lines.recv_timeout(TIMEOUT) {
            Ok(value) => value,
            Err(e) => panic!(
                "node script gave no line ({e}): {}",
                self.stderr_after_kill()
            ),
        }
    }

    /// Kills the script and returns every line it printed that was not read yet.
    pub fn kill_and_drain(&mut self) -> Vec<serde_json::Value> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut rest = Vec::new();
        while let Ok(value) = self.lines.recv_timeout(TIMEOUT) {
            rest.push(value);
        }
        rest
    }

    fn stderr_after_kill(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Documents

/// An Automerge document with one change setting `key` to `value` at the root.
pub fn doc_with(key: &str, value: &str) -> Automerge {
    let mut doc = Automerge::new();
    put(&mut doc, key, value);
    doc
}

/// One change setting `key` to `value` at the root.
pub fn put(doc: &mut Automerge, key: &str, value: &str) {
    use automerge::transaction::Transactable;
    doc.transact::<_, _, automerge::AutomergeError>(|tx| {
        tx.put(automerge::ROOT, key, value)?;
        Ok(())
    })
    .expect("a local change");
}

/// The string at `key` in the root map, if any.
pub fn get_str(doc: &Automerge, key: &str) -> Option<String> {
    use automerge::ReadDoc;
    let (value, _) = doc.get(automerge::ROOT, key).ok()??;
    value.into_string().ok()
}

/// The next sync message for `doc`, carrying its last local change whatever the sync state says.
///
/// Automerge leaves out a change the peer's bloom filter claims to hold, and a false positive
/// (about 1% per change) is only corrected by further rounds; it also sends nothing to a peer
/// that declared itself read-only. A single message must therefore carry the change explicitly,
/// so that what the relay keeps shows its decision, and so that a read-only peer's write really
/// reaches the relay.
pub fn carrying_last_change(doc: &Automerge, state: &mut sync::State) -> sync::Message {
    let change = doc.get_last_local_change().expect("a local change");
    let mut message = doc
        .generate_sync_message(state)
        .unwrap_or_else(|| sync::Message {
            heads: doc.get_heads(),
            need: Vec::new(),
            have: Vec::new(),
            changes: sync::ChunkList::empty(),
            flags: None,
            version: sync::MessageVersion::V1,
        });
    message.changes = vec![change.raw_bytes().to_vec()].into();
    message
}
