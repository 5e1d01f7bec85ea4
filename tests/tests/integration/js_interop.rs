//! A Tandem device and the official JS automerge-repo 2.5.6 peers sync the same documents over
//! real sockets, both ways:
//!
//! - through **our relay**: JS reads and edits a plan the device made, the device reads and edits
//!   a plan-shaped document JS made, and concurrent edits from both converge to the same heads;
//! - through **the JS automerge-repo sync server** (`tests/js/sync-server.mjs`), with no Tandem
//!   relay in the path at all.
//!
//! The JS side is `tests/js/plan-peer.mjs` and `tests/js/new-plan.mjs`; each prints JSON lines as
//! it reaches a step and exits non-zero after 20 s without the event it waits for. The Rust side
//! waits on sync events and on those lines, with [`TIMEOUT`], never on the clock.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail, ensure};
use automerge::ReadDoc;
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};
use tandem_core::client::SyncClient;
use tandem_core::device::SyncEvent;
use tandem_core::model::{GoalStatus, NewGoal, NewPlan};
use tandem_core::repo::Repo;
use tandem_core::{DocumentId, GoalId, PlanId, UserId};
use tempfile::TempDir;
use tokio::sync::{broadcast, mpsc};

use crate::device_sync::{InProcessRelay, TIMEOUT, date, device, go_offline, start};

// ---- node -----------------------------------------------------------------------------------

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// Installs the JS packages (`scripts/setup.sh`) if they are missing.
fn ensure_js_peers() -> anyhow::Result<()> {
    let dir = js_dir();
    if dir.join("node_modules/@automerge/automerge-repo").is_dir() {
        return Ok(());
    }
    let root = dir.join("../..");
    let status = Command::new(root.join("scripts/setup.sh"))
        .current_dir(&root)
        .status()
        .context("run scripts/setup.sh (the JS interop tests need node and npm)")?;
    ensure!(status.success(), "scripts/setup.sh failed");
    Ok(())
}

/// `node tests/js/<script> args…` in the background: its stdout lines as they arrive, its stderr
/// kept for error messages. Killed when dropped.
struct Node {
    script: String,
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Node {
    fn spawn(script: &str, args: &[&str]) -> anyhow::Result<Self> {
        ensure_js_peers()?;
        let mut child = Command::new("node")
            .arg(js_dir().join(script))
            .args(args)
            .current_dir(js_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("run node {script}"))?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let (send, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let mut pipe = child.stderr.take().context("piped stderr")?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let kept = stderr.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            kept.lock().expect("not poisoned").push_str(&text);
        });
        Ok(Self {
            script: script.to_owned(),
            child,
            lines,
            stderr,
        })
    }

    /// The next stdout line, or an error naming the script and what it wrote to stderr.
    async fn line(&mut self) -> anyhow::Result<String> {
        match tokio::time::timeout(TIMEOUT, self.lines.recv()).await {
            Ok(Some(line)) => Ok(line),
            outcome => {
                let why = if outcome.is_err() {
                    "printed nothing in time"
                } else {
                    "exited"
                };
                // Give the stderr reader a moment to see the end of a process that exited.
                let status = if outcome.is_ok() {
                    self.child.wait().ok()
                } else {
                    None
                };
                let stderr = self.stderr.lock().expect("not poisoned").clone();
                bail!(
                    "node {} {why} (status {status:?}); stderr:\n{stderr}",
                    self.script
                )
            }
        }
    }

    /// The next stdout line, as JSON.
    async fn json(&mut self) -> anyhow::Result<Value> {
        let line = self.line().await?;
        serde_json::from_str(&line).with_context(|| format!("{} printed {line:?}", self.script))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The JS automerge-repo sync server (`tests/js/sync-server.mjs`, also the sync benchmark's):
/// in-memory storage, `sharePolicy` false, on a free loopback port.
async fn js_sync_server() -> anyhow::Result<(Node, String)> {
    let mut server = Node::spawn("sync-server.mjs", &[])?;
    let line = server.line().await?;
    let addr = line
        .rsplit_once("listening on ")
        .map(|(_, addr)| addr.trim().to_owned())
        .with_context(|| format!("sync-server.mjs printed {line:?}"))?;
    Ok((server, format!("ws://{addr}")))
}

// ---- devices and plans ----------------------------------------------------------------------

fn new_plan() -> NewPlan {
    NewPlan {
        mentee: UserId::from("ana"),
        coaches: vec![UserId::from("carla")],
        program: "First-year success".into(),
        term: "Spring 2026".into(),
        strengths: vec!["curious".into()],
        challenges: vec!["commute".into()],
        learning_style: "visual".into(),
    }
}

fn goal(title: &str) -> NewGoal {
    NewGoal {
        title: title.into(),
        description: String::new(),
        category: "academic".into(),
        target_date: Some(date(2026, 5, 1)),
    }
}

/// A plan with one goal, made on the device.
fn create_plan(repo: &mut Repo) -> tandem_core::Result<(PlanId, GoalId)> {
    let plan = repo.create_plan(new_plan())?;
    let goal = repo.add_goal(plan, goal("Pass calculus"))?;
    Ok((plan, goal))
}

/// Waits for the device's `RemoteChange` of `document` that touches the root key `key`.
async fn remote_change(
    events: &mut broadcast::Receiver<SyncEvent>,
    document: DocumentId,
    key: &str,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .with_context(|| format!("no remote change of {key:?} in {document}"))??;
        match event {
            SyncEvent::RemoteChange(change)
                if change.document == document
                    && change.top_level_keys.iter().any(|k| k == key) =>
            {
                return Ok(());
            }
            SyncEvent::Failed {
                document: d,
                reason,
            } if d == document => {
                bail!("the device stopped syncing {document}: {reason}")
            }
            _ => {}
        }
    }
}

/// The device's heads of `document`, as the hex strings JS prints.
fn heads_hex(client: &SyncClient, document: DocumentId) -> anyhow::Result<BTreeSet<String>> {
    Ok(client
        .with_repo(|repo| repo.heads(document))?
        .iter()
        .map(ToString::to_string)
        .collect())
}

fn js_heads(line: &Value) -> anyhow::Result<BTreeSet<String>> {
    line["heads"]
        .as_array()
        .with_context(|| format!("heads in {line}"))?
        .iter()
        .map(|h| h.as_str().map(str::to_owned).context("a hash string"))
        .collect()
}

/// The titles of the goals of a plan as JS printed it.
fn js_goal_titles(doc: &Value) -> BTreeSet<String> {
    doc["goals"]
        .as_object()
        .map(|goals| {
            goals
                .values()
                .filter_map(|g| g["title"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn titles<const N: usize>(titles: [&str; N]) -> BTreeSet<String> {
    titles.into_iter().map(str::to_owned).collect()
}

/// A top-level string field of the device's stored document that Tandem's model does not know.
fn unknown_field(client: &SyncClient, document: DocumentId, key: &str) -> anyhow::Result<String> {
    let bytes = client.with_repo(|repo| repo.export(document))?;
    let doc = automerge::Automerge::load(&bytes)?;
    // Automerge 3 JS writes a plain JS string as a Text object.
    match doc.get(automerge::ROOT, key)? {
        Some((automerge::Value::Object(automerge::ObjType::Text), text)) => Ok(doc.text(&text)?),
        Some((automerge::Value::Scalar(value), _)) => match value.as_ref() {
            automerge::ScalarValue::Str(text) => Ok(text.to_string()),
            other => bail!("{key} is {other:?}"),
        },
        other => bail!("{key} is {other:?}"),
    }
}

// ---- through our relay ----------------------------------------------------------------------

/// The device makes a plan and syncs it; a JS client finds it by URL, reads its fields, and edits
/// it (a known field and one Tandem does not know) while the device is offline editing too; the
/// device comes back, receives the JS edit as a `RemoteChange`, and both end on the same two
/// concurrent heads with both edits kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_js_client_reads_and_edits_a_plan_the_device_made_and_concurrent_edits_converge()
-> anyhow::Result<()> {
    let relay = InProcessRelay::start().await?;
    let dir = TempDir::new()?;
    let mut device = device(dir.path(), "carla")?;
    let (plan, goal_id) = device.with_repo(create_plan)?;
    let client = start(device, &relay.url);
    client.sync_now(TIMEOUT).await?;
    let synced = heads_hex(&client, plan.0)?;

    // Offline, the device adds a goal: concurrent with whatever JS does next.
    let mut device = go_offline(client).await?;
    device.with_repo(|repo| repo.add_goal(plan, goal("Visit office hours")))?;

    let mut js = Node::spawn(
        "plan-peer.mjs",
        &[&relay.url, &plan.0.url(), "Fall 2026", "Visit office hours"],
    )?;
    let edited = js.json().await?;
    let seen = &edited["seen"];
    ensure!(
        seen["type"] == "plan" && seen["schemaVersion"] == 1,
        "{seen}"
    );
    ensure!(seen["mentee"] == "ana", "{seen}");
    ensure!(seen["coaches"] == json!(["carla"]), "{seen}");
    ensure!(seen["program"] == "First-year success", "{seen}");
    ensure!(seen["term"] == "Spring 2026", "{seen}");
    ensure!(seen["challenges"] == json!(["commute"]), "{seen}");
    let js_goal = &seen["goals"][goal_id.as_str()];
    ensure!(js_goal["title"] == "Pass calculus", "{seen}");
    ensure!(js_goal["targetDate"] == "2026-05-01", "{seen}");
    ensure!(js_goal["status"] == "not_started", "{seen}");
    ensure!(js_goal_titles(seen) == titles(["Pass calculus"]), "{seen}");
    ensure!(js_heads(&edited)? != synced, "JS stored a new change");

    // Back online: the JS edit arrives as a remote change of `term`.
    let client = start(device, &relay.url);
    let mut events = client.subscribe();
    remote_change(&mut events, plan.0, "term").await?;
    let read = client.with_repo(|repo| repo.plan(plan))?;
    ensure!(read.term == "Fall 2026", "{read:?}");
    let read_titles: BTreeSet<String> = read.goals.iter().map(|g| g.title.clone()).collect();
    ensure!(
        read_titles == titles(["Pass calculus", "Visit office hours"]),
        "{read_titles:?}"
    );
    ensure!(unknown_field(&client, plan.0, "jsNote")? == "added by automerge-repo");
    let status = client.sync_now(TIMEOUT).await?;
    ensure!(status.pending_changes == 0, "{status:?}");

    // JS received the device's offline goal; both hold the same two concurrent heads.
    let last = js.json().await?;
    let final_doc = &last["final"];
    ensure!(
        js_goal_titles(final_doc) == titles(["Pass calculus", "Visit office hours"]),
        "{final_doc}"
    );
    ensure!(final_doc["term"] == "Fall 2026", "{final_doc}");
    ensure!(
        final_doc["jsNote"] == "added by automerge-repo",
        "{final_doc}"
    );
    let ours = heads_hex(&client, plan.0)?;
    ensure!(js_heads(&last)? == ours, "JS {last} vs the device {ours:?}");
    ensure!(ours.len() == 2, "two concurrent heads: {ours:?}");
    client.stop().await;
    relay.stop().await
}

/// A JS client creates a document of Tandem's plan shape; the device follows it by URL, reads it
/// as a typed plan, and edits it; the JS client, still connected, receives the edit and ends on
/// the device's heads.
///
/// The JS client writes the strings inside the `coaches` and `strengths` lists as
/// `ImmutableString`s (scalar strings, the `[str]` of Tandem's layout); the next test writes them
/// as plain JS strings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_reads_and_edits_a_plan_a_js_client_made() -> anyhow::Result<()> {
    device_reads_and_edits_a_js_plan("scalar").await
}

/// The same with every string a plain JS string, as most JS apps write them: Automerge 3 then
/// stores the list items of `coaches` and `strengths` as Text objects too, and Tandem reads them
/// as the strings they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_reads_a_plan_whose_list_strings_js_wrote_as_text() -> anyhow::Result<()> {
    device_reads_and_edits_a_js_plan("text").await
}

async fn device_reads_and_edits_a_js_plan(lists: &str) -> anyhow::Result<()> {
    let relay = InProcessRelay::start().await?;
    let dir = TempDir::new()?;
    let mut js = Node::spawn("new-plan.mjs", &[&relay.url, "40", lists])?;
    let created = js.json().await?;
    let url = created["url"].as_str().context("a url")?;
    let plan = PlanId(DocumentId::parse(url)?);

    let mut device = device(dir.path(), "carl")?;
    device.follow(plan.0)?;
    let client = start(device, &relay.url);
    let mut events = client.subscribe();
    client.sync_now(TIMEOUT).await?;
    while let Ok(event) = events.try_recv() {
        if let SyncEvent::Failed { reason, .. } = event {
            bail!("the device could not use the plan JS wrote: {reason}");
        }
    }
    let read = client.with_repo(|repo| repo.plan(plan))?;
    ensure!(read.schema_version == 1, "{read:?}");
    ensure!(read.mentee == UserId::from("maya"), "{read:?}");
    ensure!(read.coaches == vec![UserId::from("carl")], "{read:?}");
    ensure!(
        read.program == "First-year success" && read.term == "Fall 2026",
        "{read:?}"
    );
    ensure!(read.strengths == vec!["curious".to_owned()], "{read:?}");
    ensure!(read.goals.len() == 1, "{read:?}");
    let js_goal = &read.goals[0];
    ensure!(js_goal.id == GoalId::new("js-goal-1"), "{js_goal:?}");
    ensure!(js_goal.title == "Pass calculus", "{js_goal:?}");
    ensure!(
        js_goal.target_date == Some(date(2026, 12, 15)),
        "{js_goal:?}"
    );
    ensure!(
        js_goal.status == GoalStatus::NotStarted && js_goal.progress == 0,
        "{js_goal:?}"
    );
    let written = Utc
        .with_ymd_and_hms(2026, 9, 1, 10, 0, 0)
        .single()
        .context("an instant")?;
    ensure!(js_goal.created_at == written, "{js_goal:?}");
    // The projection indexed it too.
    let rows = client.with_repo(|repo| repo.plans_of_mentee(&UserId::from("maya")))?;
    ensure!(rows.len() == 1 && rows[0].id == plan, "{rows:?}");

    // The device edits it: a new goal, then progress on JS's goal (which JS waits for).
    client.with_repo(|repo| {
        repo.add_goal(plan, goal("Join a study group"))?;
        repo.update_progress(plan, &js_goal.id, 40)
    })?;
    client.sync_now(TIMEOUT).await?;
    let last = js.json().await?;
    let final_doc = &last["final"];
    ensure!(
        js_goal_titles(final_doc) == titles(["Pass calculus", "Join a study group"]),
        "{final_doc}"
    );
    ensure!(
        final_doc["goals"]["js-goal-1"]["progress"] == 40,
        "{final_doc}"
    );
    let ours = heads_hex(&client, plan.0)?;
    ensure!(js_heads(&last)? == ours, "JS {last} vs the device {ours:?}");
    client.stop().await;
    relay.stop().await
}

// ---- through the JS sync server -------------------------------------------------------------

/// The device syncs with the JS automerge-repo sync server instead of our relay: it uploads a
/// plan, a separate JS client finds it there and edits it, and the device receives the edit.
///
/// Which event to wait on: the JS server is a `Repo` with a storage adapter (in memory), so its
/// peer metadata carries a storage id and `isEphemeral: false`, and the device counts it as a
/// storing peer. Its sync messages advertise heads covering the device's changes, so the changes
/// are marked saved and `sync_now` resolves, as against our relay (checked: 0 pending changes).
/// A server without storage would announce itself ephemeral and `sync_now` would wait forever;
/// then the JS client seeing the content would be the event to wait on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_syncs_through_the_js_sync_server() -> anyhow::Result<()> {
    let (_server, url) = js_sync_server().await?;
    let dir = TempDir::new()?;
    let mut device = device(dir.path(), "carla")?;
    let (plan, goal_id) = device.with_repo(create_plan)?;
    let client = start(device, &url);
    let mut events = client.subscribe();
    let status = client.sync_now(TIMEOUT).await?;
    ensure!(status.pending_changes == 0, "{status:?}");

    let mut js = Node::spawn("plan-peer.mjs", &[&url, &plan.0.url(), "Spring 2027"])?;
    let edited = js.json().await?;
    let seen = &edited["seen"];
    ensure!(seen["mentee"] == "ana", "{seen}");
    ensure!(
        seen["goals"][goal_id.as_str()]["title"] == "Pass calculus",
        "{seen}"
    );

    remote_change(&mut events, plan.0, "term").await?;
    let read = client.with_repo(|repo| repo.plan(plan))?;
    ensure!(read.term == "Spring 2027", "{read:?}");
    ensure!(heads_hex(&client, plan.0)? == js_heads(&edited)?);
    client.stop().await;
    Ok(())
}
