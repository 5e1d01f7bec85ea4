//! Devices sync through the relay over real sockets: `tandem_core::client::SyncClient` against
//! `tandem_server::Server` in this process, and against the `tandem-server` binary killed with
//! SIGKILL mid-stream. Everything waits on an event (a status, a sync event) with [`TIMEOUT`].

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use automerge::ChangeHash;
use chrono::{NaiveDate, TimeZone, Utc};
use tandem_core::client::{ClientConfig, SyncClient};
use tandem_core::device::{Device, SyncEvent};
use tandem_core::model::{DirectoryEntry, DocKind, NewDirectory, NewGoal, NewPlan, NewSession};
use tandem_core::repo::{Repo, RepoConfig};
use tandem_core::store::projection::SessionsBetween;
use tandem_core::{DirectoryId, GoalId, PlanId, SessionId, UserId};
use tandem_server::Server;
use tandem_server::config::ServeConfig;
use tempfile::TempDir;
use tokio::sync::oneshot;

/// How long any awaited event may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);

// ---- relays ---------------------------------------------------------------------------------

/// `tandem-server serve` flags, parsed as the binary parses them (new flags keep their defaults).
#[derive(clap::Parser)]
struct Serve {
    #[command(flatten)]
    config: ServeConfig,
}

/// A relay on `listen` keeping its data in `data`, admitting the tests' devices anonymously.
pub fn serve_config(data: &Path, listen: SocketAddr) -> ServeConfig {
    use clap::Parser;
    let data = data.to_string_lossy();
    Serve::parse_from([
        "serve",
        "--listen",
        &listen.to_string(),
        "--data",
        &data,
        "--allow-anonymous",
    ])
    .config
}

/// A relay running on the test's runtime.
pub struct InProcessRelay {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<tandem_server::Result<()>>,
    _data: TempDir,
}

impl InProcessRelay {
    pub async fn start() -> anyhow::Result<Self> {
        let data = TempDir::new()?;
        let server = Server::bind(&serve_config(
            data.path(),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        ))
        .await?;
        let url = format!("ws://{}/sync", server.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            url,
            stop: Some(stop),
            task,
            _data: data,
        })
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(TIMEOUT, &mut self.task).await???;
        Ok(())
    }
}

// ---- devices --------------------------------------------------------------------------------

/// A device with its own SQLite file in `dir`.
pub fn device(dir: &Path, user: &str) -> anyhow::Result<Device> {
    let repo = Repo::open(
        dir.join(format!("{user}.db")),
        RepoConfig::new(UserId::from(user), format!("{user}'s phone")),
    )?;
    Ok(Device::new(repo)?)
}

/// Starts syncing with quick reconnects, as a test wants.
pub fn start(device: Device, url: &str) -> SyncClient {
    // No token: the test relays admit anonymous devices (the relay's own tests cover tokens).
    let config =
        ClientConfig::new(url).with_backoff(Duration::from_millis(20), Duration::from_millis(500));
    SyncClient::start(device, config, &tokio::runtime::Handle::current())
}

/// Stops the client and hands the device back, for offline work.
pub async fn go_offline(client: SyncClient) -> anyhow::Result<Device> {
    client.stop().await;
    client.into_device().context("the device back after stop")
}

pub fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("a valid date")
}

fn new_plan() -> NewPlan {
    NewPlan {
        mentee: UserId::from("ana"),
        coaches: vec![UserId::from("carla")],
        program: "First-year success".into(),
        term: "Spring 2026".into(),
        strengths: vec!["curious".into()],
        challenges: vec![],
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

/// What the coach's device starts with: a plan with one goal, a session log, and the pairing's
/// directory listing both.
pub struct Pairing {
    pub plan: PlanId,
    pub goal: GoalId,
    pub session: SessionId,
    pub directory: DirectoryId,
}

pub fn create_pairing(repo: &mut Repo) -> tandem_core::Result<Pairing> {
    let plan = repo.create_plan(new_plan())?;
    let goal = repo.add_goal(plan, goal("Pass calculus"))?;
    let session = repo.log_session(NewSession {
        plan,
        coach: UserId::from("carla"),
        mentee: UserId::from("ana"),
        start: Utc
            .with_ymd_and_hms(2026, 3, 2, 15, 0, 0)
            .single()
            .expect("an instant"),
        duration_minutes: 45,
        mode: tandem_core::model::SessionMode::InPerson,
        topics: vec!["calculus".into()],
        notes: "Met at the library.".into(),
        mood: Some(4),
        action_items: vec![],
        goals_discussed: vec![goal.clone()],
        follow_up: None,
    })?;
    let directory = repo.create_directory(NewDirectory {
        program: "First-year success".into(),
        coach: UserId::from("carla"),
        mentee: UserId::from("ana"),
    })?;
    for (document, kind, title) in [
        (plan.0, DocKind::Plan, "Ana's plan"),
        (session.0, DocKind::Session, "2 March"),
    ] {
        repo.add_directory_entry(
            directory,
            DirectoryEntry {
                document,
                kind,
                title: title.into(),
            },
        )?;
    }
    Ok(Pairing {
        plan,
        goal,
        session,
        directory,
    })
}

/// Waits until every client holds the same heads of the pairing's documents, checking again after
/// any event of any of them.
async fn wait_until_converged(clients: &[&SyncClient], pairing: &Pairing) -> anyhow::Result<()> {
    let mut events: Vec<_> = clients.iter().map(|client| client.subscribe()).collect();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let all: Vec<_> = clients
            .iter()
            .map(|client| heads(client, pairing))
            .collect::<anyhow::Result<_>>()?;
        if all.windows(2).all(|pair| pair[0] == pair[1]) {
            return Ok(());
        }
        let any_event = futures_util::future::select_all(
            events.iter_mut().map(|receiver| Box::pin(receiver.recv())),
        );
        if tokio::time::timeout_at(deadline, any_event).await.is_err() {
            let statuses: Vec<_> = clients.iter().map(|client| client.status()).collect();
            bail!("timed out waiting until every device has every change ({statuses:?})");
        }
    }
}

fn heads(client: &SyncClient, pairing: &Pairing) -> anyhow::Result<Vec<Vec<ChangeHash>>> {
    Ok(client.with_repo(|repo| {
        Ok(vec![
            repo.heads(pairing.plan.0)?,
            repo.heads(pairing.session.0)?,
            repo.heads(pairing.directory.0)?,
        ])
    })?)
}

async fn synced(client: &SyncClient) -> anyhow::Result<()> {
    client.sync_now(TIMEOUT).await?;
    Ok(())
}

/// The coach's device A creates the pairing and syncs it; the mentee's device B follows the
/// directory and pulls it. Both go offline.
async fn two_devices_with_a_pairing(
    dir: &Path,
    url: &str,
) -> anyhow::Result<(Device, Device, Pairing)> {
    let mut a = device(dir, "carla")?;
    let pairing = a.with_repo(create_pairing)?;
    let a = start(a, url);
    synced(&a).await?;
    let mut b = device(dir, "ana")?;
    b.follow(pairing.directory.0)?;
    let b = start(b, url);
    synced(&b).await?;
    ensure!(heads(&a, &pairing)? == heads(&b, &pairing)?);
    Ok((go_offline(a).await?, go_offline(b).await?, pairing))
}

async fn edit_offline_and_reconnect(a_first: bool) -> anyhow::Result<()> {
    let relay = InProcessRelay::start().await?;
    let dir = TempDir::new()?;
    let (mut a, mut b, p) = two_devices_with_a_pairing(dir.path(), &relay.url).await?;

    // Offline on both: different new goals, the same notes, the same goal's target date.
    a.with_repo(|repo| {
        repo.add_goal(p.plan, goal("Join a study group"))?;
        repo.edit_session_notes(p.session, "Met at the library. Ana brought her notes.")?;
        repo.set_goal_target_date(p.plan, &p.goal, Some(date(2026, 6, 1)))
    })?;
    b.with_repo(|repo| {
        repo.add_goal(p.plan, goal("Visit office hours"))?;
        repo.edit_session_notes(p.session, "We met at the library.")?;
        repo.set_goal_target_date(p.plan, &p.goal, Some(date(2026, 6, 15)))
    })?;
    ensure!(a.status().pending_changes == 3 && b.status().pending_changes == 3);

    let (first, second) = if a_first { (a, b) } else { (b, a) };
    let first = start(first, &relay.url);
    synced(&first).await?;
    let second = start(second, &relay.url);
    synced(&second).await?;
    // The relay pushes the second device's changes to the first, which is still connected.
    wait_until_converged(&[&first, &second], &p).await?;

    for client in [&first, &second] {
        let (plan, session, conflicts) = client.with_repo(|repo| {
            Ok((
                repo.plan(p.plan)?,
                repo.session(p.session)?,
                repo.conflicts(p.plan.0)?,
            ))
        })?;
        let titles: BTreeSet<_> = plan.goals.iter().map(|g| g.title.as_str()).collect();
        ensure!(
            titles == BTreeSet::from(["Pass calculus", "Join a study group", "Visit office hours"]),
            "{titles:?}"
        );
        ensure!(
            session.notes == "We met at the library. Ana brought her notes.",
            "both notes edits are kept: {:?}",
            session.notes
        );
        let date_conflict = conflicts
            .iter()
            .find(|c| c.path.last().map(String::as_str) == Some("targetDate"))
            .with_context(|| format!("the target date conflict is visible: {conflicts:?}"))?;
        let values: BTreeSet<_> = date_conflict
            .values
            .iter()
            .map(|v| v.value.as_str())
            .collect();
        ensure!(
            values == BTreeSet::from(["2026-06-01", "2026-06-15"]),
            "{values:?}"
        );
        // The projection follows the merged document.
        let goals = client.with_repo(|repo| repo.store().goals_of_plan(p.plan))?;
        ensure!(goals.len() == 3);
        ensure!(client.status().pending_changes == 0);
    }
    first.stop().await;
    second.stop().await;
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_edit_a_plan_offline_and_converge_with_the_conflict_visible_a_first()
-> anyhow::Result<()> {
    edit_offline_and_reconnect(true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_edit_a_plan_offline_and_converge_with_the_conflict_visible_b_first()
-> anyhow::Result<()> {
    edit_offline_and_reconnect(false).await
}

/// The relay's counter `name` (its full OpenMetrics name) from `/metrics`.
async fn relay_counter(url: &str, name: &str) -> anyhow::Result<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("ws://").trim_end_matches("/sync");
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    // HTTP/1.0: the whole body, then the close; no chunks to decode.
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await?;
    let mut text = String::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_string(&mut text)).await??;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .with_context(|| format!("{name} in /metrics"))
}

const PEER_INDEX_READS: &str = "tandem_relay_peer_index_reads_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_changed_nothing_hears_what_was_committed_while_it_was_away()
-> anyhow::Result<()> {
    let relay = InProcessRelay::start().await?;
    let dir = TempDir::new()?;
    let (a, mut b, p) = two_devices_with_a_pairing(dir.path(), &relay.url).await?;

    // A comes back with nothing changed: the relay answers from its index in memory.
    let reads = relay_counter(&relay.url, PEER_INDEX_READS).await?;
    let a = start(a, &relay.url);
    synced(&a).await?;
    let a = go_offline(a).await?;
    ensure!(relay_counter(&relay.url, PEER_INDEX_READS).await? == reads);

    // B adds a goal while A is away; the relay commits it. A, still unchanged, comes back:
    // answered from memory again, and the answer must not be "nothing changed".
    b.with_repo(|repo| repo.add_goal(p.plan, goal("Visit office hours")))?;
    let b = start(b, &relay.url);
    synced(&b).await?;
    let reads = relay_counter(&relay.url, PEER_INDEX_READS).await?;
    let a = start(a, &relay.url);
    wait_until_converged(&[&a, &b], &p).await?;
    ensure!(relay_counter(&relay.url, PEER_INDEX_READS).await? == reads);
    let plan = a.with_repo(|repo| repo.plan(p.plan))?;
    ensure!(
        plan.goals.iter().any(|g| g.title == "Visit office hours"),
        "{:?}",
        plan.goals
    );
    a.stop().await;
    b.stop().await;
    relay.stop().await
}

/// A device holding many documents that changed one of them while away, with another changed
/// through the relay, reconnects through the digest's sketch: it decodes the difference (no
/// bucket list), and both sides' changes arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_changed_one_of_many_documents_reconnects_through_the_sketch()
-> anyhow::Result<()> {
    // Enough that listing every entry would cost more than a sketch.
    const PLANS: usize = 60;
    let relay = InProcessRelay::start().await?;
    let dir = TempDir::new()?;
    let (mut a, mut b, p) = two_devices_with_a_pairing(dir.path(), &relay.url).await?;
    let plans = a.with_repo(|repo| {
        (0..PLANS)
            .map(|_| repo.create_plan(new_plan()))
            .collect::<tandem_core::Result<Vec<_>>>()
    })?;
    let a = start(a, &relay.url);
    synced(&a).await?;
    let mut a = go_offline(a).await?;

    // While A is away it edits one of its plans, and B adds a goal to the shared plan.
    a.with_repo(|repo| repo.add_goal(plans[7], goal("Offline goal")))?;
    b.with_repo(|repo| repo.add_goal(p.plan, goal("Visit office hours")))?;
    let b = start(b, &relay.url);
    synced(&b).await?;

    let before = a.engine().digest_outcomes();
    let a = start(a, &relay.url);
    wait_until_converged(&[&a, &b], &p).await?;
    synced(&a).await?;
    let after = a.with_device(|device| device.engine().digest_outcomes());
    ensure!(
        after.decoded == before.decoded + 1 && after.bucketed == before.bucketed,
        "one sketch decoded, no buckets: {before:?} then {after:?}"
    );
    // A's offline edit is saved on the relay, and B's goal arrived.
    ensure!(a.status().pending_changes == 0);
    let plan = a.with_repo(|repo| repo.plan(p.plan))?;
    ensure!(
        plan.goals.iter().any(|g| g.title == "Visit office hours"),
        "{:?}",
        plan.goals
    );
    a.stop().await;
    b.stop().await;
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_device_pulls_everything_through_the_directory() -> anyhow::Result<()> {
    let relay = InProcessRelay::start().await?;
    let dir = TempDir::new()?;
    let mut a = device(dir.path(), "carla")?;
    let p = a.with_repo(create_pairing)?;
    let a = start(a, &relay.url);
    synced(&a).await?;

    let mut fresh = device(dir.path(), "coordinator")?;
    fresh.follow(p.directory.0)?;
    let fresh = start(fresh, &relay.url);
    let status = fresh.sync_now(TIMEOUT).await?;
    ensure!(status.last_synced_at.is_some());
    ensure!(heads(&fresh, &p)? == heads(&a, &p)?);
    let (plans, sessions) = fresh.with_repo(|repo| {
        let plans = repo.plans_of_mentee(&UserId::from("ana"))?;
        let sessions = repo.sessions_between(&SessionsBetween {
            from: Utc
                .with_ymd_and_hms(2026, 3, 1, 0, 0, 0)
                .single()
                .expect("an instant"),
            until: Utc
                .with_ymd_and_hms(2026, 4, 1, 0, 0, 0)
                .single()
                .expect("an instant"),
            coach: None,
            mentee: None,
        })?;
        Ok((plans, sessions))
    })?;
    ensure!(plans.len() == 1 && plans[0].id == p.plan, "{plans:?}");
    ensure!(
        sessions.len() == 1 && sessions[0].id == p.session,
        "{sessions:?}"
    );
    a.stop().await;
    fresh.stop().await;
    relay.stop().await
}

/// A fresh device following a directory of many plans gets them from the relay as snapshots,
/// and the app sees the progress reach every document and every byte the relay announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_device_fetches_many_documents_and_reports_progress() -> anyhow::Result<()> {
    const PLANS: usize = 200;
    let relay = InProcessRelay::start().await?;
    let dir = TempDir::new()?;
    let mut a = device(dir.path(), "carla")?;
    let (directory, plans) = a.with_repo(|repo| {
        let directory = repo.create_directory(NewDirectory {
            program: "First-year success".into(),
            coach: UserId::from("carla"),
            mentee: UserId::from("ana"),
        })?;
        let mut plans = Vec::new();
        for i in 0..PLANS {
            let plan = repo.create_plan(new_plan())?;
            repo.add_directory_entry(
                directory,
                DirectoryEntry {
                    document: plan.0,
                    kind: DocKind::Plan,
                    title: format!("plan {i}"),
                },
            )?;
            plans.push(plan);
        }
        Ok((directory, plans))
    })?;
    let a = start(a, &relay.url);
    synced(&a).await?;
    // What the relay holds, compacted: the snapshots the fresh device should receive.
    let snapshot_bytes: u64 = a.with_device(|device| {
        std::iter::once(directory.0)
            .chain(plans.iter().map(|plan| plan.0))
            .map(|id| {
                device
                    .engine()
                    .save_document(&id)
                    .map_or(0, |b| b.len() as u64)
            })
            .sum()
    });

    // Connected first, so no event is missed; then it follows the directory.
    let fresh = start(device(dir.path(), "coordinator")?, &relay.url);
    synced(&fresh).await?;
    let mut events = fresh.subscribe();
    fresh.follow(directory.0)?;
    let status = fresh.sync_now(TIMEOUT).await?;

    let total = PLANS as u64 + 1;
    ensure!(
        status.fetch.documents_done == total
            && status.fetch.documents_total == total
            && status.fetch.bytes_done == snapshot_bytes
            && status.fetch.bytes_total == snapshot_bytes,
        "{:?}, expected {total} documents of {snapshot_bytes} bytes",
        status.fetch
    );
    let mut reported = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let SyncEvent::FetchProgress(progress) = event {
            reported.push(progress);
        }
    }
    ensure!(
        reported.last() == Some(&status.fetch),
        "the last progress event is the final figure: {reported:?}"
    );
    ensure!(
        reported
            .windows(2)
            .all(|w| w[0].documents_done <= w[1].documents_done
                && w[0].bytes_done <= w[1].bytes_done),
        "progress only moves forward: {reported:?}"
    );
    ensure!(reported.len() > 1, "progress came in steps: {reported:?}");
    // Every plan is readable on the fresh device, through the projection.
    let on_fresh = fresh.with_repo(|repo| repo.plans_of_mentee(&UserId::from("ana")))?;
    ensure!(on_fresh.len() == PLANS, "{} plans", on_fresh.len());
    for plan in &plans {
        ensure!(
            fresh.with_repo(|repo| repo.heads(plan.0))? == a.with_repo(|repo| repo.heads(plan.0))?
        );
    }
    a.stop().await;
    fresh.stop().await;
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_offline_for_many_changes_catches_up() -> anyhow::Result<()> {
    const EDITS: u8 = 100;
    let relay = InProcessRelay::start().await?;
    let dir = TempDir::new()?;
    let (a, c, p) = two_devices_with_a_pairing(dir.path(), &relay.url).await?;
    let a = start(a, &relay.url);
    synced(&a).await?;
    for n in 0..EDITS {
        a.with_repo(|repo| {
            repo.update_progress(p.plan, &p.goal, n % 101)?;
            if n % 10 == 0 {
                repo.add_goal(p.plan, goal(&format!("Goal {n}")))?;
                repo.splice_session_notes(p.session, 0, 0, &format!("[{n}] "))?;
            }
            Ok(())
        })?;
    }
    let status = a.sync_now(TIMEOUT).await?;
    ensure!(status.pending_changes == 0);

    let started = Instant::now();
    let c = start(c, &relay.url);
    synced(&c).await?;
    ensure!(heads(&c, &p)? == heads(&a, &p)?, "caught up");
    let goals = c.with_repo(|repo| repo.store().goals_of_plan(p.plan))?;
    ensure!(goals.len() == 11, "{}", goals.len());
    eprintln!(
        "caught up on {} edits in {:?}",
        u32::from(EDITS) + 20,
        started.elapsed()
    );
    a.stop().await;
    c.stop().await;
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_to_server_flips_for_each_change_and_status_events_say_so() -> anyhow::Result<()> {
    let relay = InProcessRelay::start().await?;
    let dir = TempDir::new()?;
    let mut a = device(dir.path(), "carla")?;
    let p = a.with_repo(create_pairing)?;
    let local: Vec<ChangeHash> = a.with_repo(|repo| {
        Ok(repo
            .history(p.plan.0)?
            .iter()
            .map(|h| h.hash.parse().expect("a hash"))
            .collect())
    })?;
    for change in &local {
        ensure!(a.is_saved_to_server(change)? == Some(false));
    }
    let a = start(a, &relay.url);
    let mut events = a.subscribe();
    synced(&a).await?;
    for change in &local {
        ensure!(a.with_device(|d| d.is_saved_to_server(change))? == Some(true));
    }
    let mut saved = 0;
    while let Ok(event) = events.try_recv() {
        if let SyncEvent::Saved { changes, .. } = event {
            saved += changes.len();
        }
    }
    ensure!(
        saved >= local.len(),
        "{saved} saved events for {} changes",
        local.len()
    );
    a.stop().await;
    relay.stop().await
}

/// The `tandem-server` binary next to this test binary (built by `cargo build --workspace
/// --bins`, which `scripts/test.sh` runs first).
pub fn server_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test binary sits in target/<profile>/deps")?;
    let binary = dir.join("tandem-server");
    ensure!(
        binary.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        binary.display()
    );
    Ok(binary)
}

/// `tandem-server serve` as a child process on a loopback port. Killed (SIGKILL) when dropped.
pub struct RelayProcess {
    child: std::process::Child,
    pub addr: SocketAddr,
}

impl RelayProcess {
    /// Starts the relay on `data`, on `port` (0: any), and waits for its "listening on" line.
    pub fn start(data: &Path, port: u16) -> anyhow::Result<Self> {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let mut child = Command::new(server_binary()?)
            .args(["serve", "--allow-anonymous", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data")
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("start tandem-server")?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let (lines, listening) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("tandem-server listening on ") {
                    let _ = lines.send(addr.trim().to_owned());
                }
            }
        });
        let addr = listening
            .recv_timeout(TIMEOUT)
            .context("the relay did not say it was listening")?
            .parse()?;
        Ok(Self { child, addr })
    }

    pub fn url(&self) -> String {
        format!("ws://{}/sync", self.addr)
    }

    /// SIGKILL, then reap: the relay gets no chance to flush anything.
    pub fn kill_hard(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every change hash of the pairing's documents that `client` holds.
fn changes_held(client: &SyncClient, p: &Pairing) -> anyhow::Result<BTreeSet<ChangeHash>> {
    let mut held = BTreeSet::new();
    for document in [p.plan.0, p.session.0, p.directory.0] {
        for entry in client.with_repo(|repo| repo.history(document))? {
            held.insert(entry.hash.parse()?);
        }
    }
    Ok(held)
}

/// Two devices write while the relay is killed with SIGKILL. After a restart on the same data,
/// every change a device saw "saved to server" is on the relay (a fresh device pulls it from the
/// relay alone), the devices send what was not acknowledged again, and everyone converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_changes_survive_a_relay_killed_with_sigkill() -> anyhow::Result<()> {
    use std::sync::{Arc, Mutex};
    let data = TempDir::new()?;
    let dir = TempDir::new()?;
    let mut relay = RelayProcess::start(data.path(), 0)?;
    let url = relay.url();

    let mut a = device(dir.path(), "carla")?;
    let p = a.with_repo(create_pairing)?;
    let a = start(a, &url);
    synced(&a).await?;
    let mut b = device(dir.path(), "ana")?;
    b.follow(p.directory.0)?;
    let b = start(b, &url);
    synced(&b).await?;

    let acknowledged: Arc<Mutex<BTreeSet<ChangeHash>>> = Arc::default();
    for client in [&a, &b] {
        let acknowledged = acknowledged.clone();
        client.add_observer(Box::new(move |event: &SyncEvent| {
            if let SyncEvent::Saved { changes, .. } = event {
                acknowledged
                    .lock()
                    .expect("not poisoned")
                    .extend(changes.iter().copied());
            }
        }));
    }
    let count = |acknowledged: &Arc<Mutex<BTreeSet<ChangeHash>>>| {
        acknowledged.lock().expect("not poisoned").len()
    };
    // A stream of edits on both devices; the relay dies once some of them are acknowledged.
    for n in 0..30u8 {
        a.with_repo(|repo| repo.update_progress(p.plan, &p.goal, n))?;
        b.with_repo(|repo| repo.splice_session_notes(p.session, 0, 0, &format!("{n} ")))?;
    }
    let mut events = a.subscribe();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while count(&acknowledged) < 10 {
        tokio::time::timeout_at(deadline, events.recv())
            .await
            .context("acknowledgements before the kill")??;
    }
    relay.kill_hard()?;
    for n in 30..40u8 {
        a.with_repo(|repo| repo.update_progress(p.plan, &p.goal, n))?;
        b.with_repo(|repo| repo.splice_session_notes(p.session, 0, 0, &format!("{n} ")))?;
    }
    let a = go_offline(a).await?;
    let b = go_offline(b).await?;
    let acknowledged = acknowledged.lock().expect("not poisoned").clone();
    let unsaved = a.status().pending_changes + b.status().pending_changes;
    ensure!(unsaved > 0, "the edits after the kill are not acknowledged");

    // The relay restarts on its data, on the same port; a fresh device reads from it alone.
    let relay = RelayProcess::start(data.path(), relay.addr.port())?;
    ensure!(relay.url() == url);
    let mut fresh = device(dir.path(), "coordinator")?;
    fresh.follow(p.directory.0)?;
    let fresh = start(fresh, &url);
    synced(&fresh).await?;
    let on_relay = changes_held(&fresh, &p)?;
    let lost: Vec<_> = acknowledged.difference(&on_relay).collect();
    ensure!(lost.is_empty(), "acknowledged but lost: {lost:?}");

    // The devices come back and send what was not acknowledged; everyone converges.
    let a = start(a, &url);
    let b = start(b, &url);
    synced(&a).await?;
    synced(&b).await?;
    // Not a snapshot of one device's heads: the last changes of one device may still be on their
    // way to another when it reports itself in sync.
    wait_until_converged(&[&a, &b, &fresh], &p).await?;
    ensure!(a.status().pending_changes == 0 && b.status().pending_changes == 0);
    eprintln!(
        "SIGKILL: {} changes acknowledged before the kill, {unsaved} sent again after the restart",
        acknowledged.len()
    );
    for client in [a, b, fresh] {
        client.stop().await;
    }
    Ok(())
}
