//! Instruction-count benchmarks of the hot paths, for `valgrind --tool=callgrind`: wall-clock
//! figures on a shared 2-core machine move by tens of percent between runs, instruction counts by
//! well under one.
//!
//! `scripts/bench-instructions.sh` runs this binary under callgrind twice per path, once with
//! `setup` (the setup alone) and once measuring, and prints (total Ir - setup Ir) / N. By hand:
//!
//! ```text
//! instructions <path> <N>          # setup, then N operations of <path>
//! instructions <path> <N> setup    # the same setup, no operation
//! instructions                     # every path a few times, wall clock, a smoke test
//! instructions memory <N>          # where a relay's memory per hot document goes (RSS)
//! ```
//!
//! Paths:
//! - `decode`: `Message::decode` of a `sync` frame carrying one small change (the frame a device
//!   sends after `put(ROOT, "last_session", n)` on a plan).
//! - `sync`: a relay engine (`Role::Relay`, in-memory storage answered at once) receiving that
//!   kind of frame for a hot document and carrying out everything it asks for, up to and including
//!   the reply frame (decode, access decision, apply, persist + `persisted`, reply). The frames
//!   were recorded in the setup from a real device/relay exchange and are replayed into a fresh
//!   relay that went through the same setup frames, so the relay sees exactly what it would.
//! - `sync-policy`: the same with the relay's real access policy (`tandem_server`'s
//!   `RelayPolicy`) and the device's connection authenticated as the plan's mentee, as a relay
//!   started with tokens runs: the policy's per-message check (actors, trailers, dependencies) is
//!   in the count; after each frame the bench does the hub's commit bookkeeping.
//! - `append`: `Store::append_chunk` of a ~640 B incremental chunk (a logged session, as the
//!   store bench writes it) with its session projection, in an in-memory store.
//! - `append-file`: the same against a store file in a temporary folder, `synchronous=NORMAL`
//!   (no fsync per commit; WAL writes and checkpoints are in the count, the kernel's work is not).
//! - `projection`: `Store::append_chunk` with no bytes and the projection of a plan with 10 goals
//!   (no milestones or check-ins): the delete-and-insert of the plan's query rows, in memory.
//! - `fetch`: a fresh device engine (`Role::Device`, storage answered at once) receiving a relay
//!   engine's answer to its `tandem-fetch` `want` for N plan-like documents (~390 B saved each,
//!   as the sync bench seeds them): manifest, snapshot batches, `done`, and every effect carried
//!   out. One operation is one document. The relay's answer is recorded in the setup.
//! - `fetch-device`: the same answer (for N plans made by a `Repo`) received by a real
//!   [`Device`](tandem_core::device::Device) on a store file (`Durability::Full`; the kernel's
//!   work, fsync included, is not in the count): each snapshot verified, stored with its
//!   projection, progress and the app's events. One operation is one document.
//!
//! Operations are run through `std::hint::black_box` so the optimiser cannot drop them.

use std::hint::black_box;
use std::time::Instant;

use anyhow::{Context, bail};
use automerge::transaction::Transactable;
use automerge::{AutomergeError, ROOT};
use chrono::{TimeZone, Utc};
use tandem_core::DocumentId;
use tandem_core::device::SyncEvent;
use tandem_core::model::{
    DirectoryEntry, DocKind, NewDirectory, NewGoal, NewPlan, Plan, SessionLog,
};
use tandem_core::repo::{Repo, RepoConfig};
use tandem_core::store::{ChunkKind, DocumentWrite, Durability, Projection, Store, StoreConfig};
use tandem_core::sync::{
    ConnectionId, Direction, Effect, EngineConfig, Message, Role, StoredDocument, SyncEngine,
};
use tandem_core::{PlanId, UserId};
use tandem_server::access::RelayPolicy;
use tandem_server::accounts::{Device, Grant, Role as AccountRole, TokenState, User};
use tandem_server::auth::Identity;
use tandem_tests::fixtures::{fill_plan, new_session};

const PATHS: [&str; 8] = [
    "decode",
    "sync",
    "sync-policy",
    "append",
    "append-file",
    "projection",
    "fetch",
    "fetch-device",
];

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; everything starting with `--` is cargo's, not ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    match args.as_slice() {
        [] => smoke(),
        [mode, n] if mode == "memory" => memory(n.parse().context("N")?),
        [path, n] => run(path, n.parse().context("N")?, false).map(|_| ()),
        [path, n, setup] if setup == "setup" => {
            run(path, n.parse().context("N")?, true).map(|_| ())
        }
        _ => bail!("usage: instructions [<{}> <N> [setup]]", PATHS.join("|")),
    }
}

/// Without arguments (`cargo bench` of every bench): each path a few times on the wall clock, so
/// the binary is exercised; the figures that count come from `scripts/bench-instructions.sh`.
fn smoke() -> anyhow::Result<()> {
    let recording = record_sync(3)?;
    for (round, frames) in recording.rounds.iter().enumerate() {
        let described: Vec<String> = frames
            .iter()
            .map(|f| match Message::decode(f) {
                Ok(Message::Sync { data, .. }) => {
                    let changes =
                        automerge::sync::Message::decode(&data).map_or(0, |m| m.changes.len());
                    format!("sync {} B ({changes} changes)", f.len())
                }
                Ok(other) => format!("{} {} B", other.message_type(), f.len()),
                Err(e) => format!("undecodable: {e}"),
            })
            .collect();
        println!(
            "sync round {round}: the device sent {}",
            described.join(", ")
        );
    }
    for path in PATHS {
        let n = 200;
        let began = Instant::now();
        run(path, n, false)?;
        let total = began.elapsed();
        let began = Instant::now();
        run(path, n, true)?;
        let setup = began.elapsed();
        let per = total.saturating_sub(setup) / n as u32;
        println!(
            "{path:<12} ~{per:>10.1?} per operation (wall clock, noisy; use scripts/bench-instructions.sh)"
        );
    }
    Ok(())
}

/// Sets up `path` for `n` operations, then runs them unless `setup_only`. Returns what the
/// operations produced, summed, so the work is observable.
fn run(path: &str, n: usize, setup_only: bool) -> anyhow::Result<u64> {
    let mut out = 0u64;
    match path {
        "decode" => {
            let recording = record_sync(1)?;
            let frame = recording.rounds[0]
                .first()
                .context("no frame in the round")?
                .clone();
            match Message::decode(&frame)? {
                Message::Sync { .. } => {}
                other => bail!("expected a sync frame, got {}", other.message_type()),
            }
            if !setup_only {
                for _ in 0..n {
                    let message = Message::decode(black_box(&frame));
                    out += u64::from(black_box(message).is_ok());
                }
            }
        }
        "sync" => {
            let recording = record_sync(n)?;
            let mut relay = relay_engine();
            let connection = relay.connection_opened(Direction::Incoming);
            for frame in &recording.setup {
                out += relay_receives(&mut relay, connection, frame);
            }
            if !setup_only {
                for round in &recording.rounds {
                    for frame in round {
                        out += relay_receives(&mut relay, connection, black_box(frame));
                    }
                }
                if out == 0 {
                    bail!("the relay sent nothing");
                }
            }
        }
        "sync-policy" => {
            let recording = record_sync(n)?;
            let (mut relay, policy, connection) = policed_relay("student-1");
            for frame in &recording.setup {
                out += relay_receives(&mut relay, connection, frame);
                commit_bookkeeping(&policy);
            }
            if !setup_only {
                for round in &recording.rounds {
                    for frame in round {
                        out += relay_receives(&mut relay, connection, black_box(frame));
                        commit_bookkeeping(&policy);
                    }
                }
                if out == 0 {
                    bail!("the relay sent nothing");
                }
            }
        }
        "append" | "append-file" => {
            let (session, bytes) = logged_session()?;
            let dir = tempfile::tempdir()?;
            let mut store = if path == "append" {
                Store::open_in_memory()?
            } else {
                Store::open(
                    dir.path().join("append.db"),
                    StoreConfig {
                        durability: Durability::Normal,
                        ..StoreConfig::default()
                    },
                )?
            };
            let write = DocumentWrite {
                id: session.id.0,
                kind: DocKind::Session,
                chunk_kind: ChunkKind::Incremental,
                bytes: &bytes,
                projection: Projection::Session(&session),
            };
            // The first write creates the document; the measured ones append to it.
            store.append_chunk(&write)?;
            if !setup_only {
                for _ in 0..n {
                    let id = store.append_chunk(black_box(&write))?;
                    out += u64::from(id.is_some());
                }
            }
        }
        "projection" => {
            let (plan, bytes) = plan_with_goals(10)?;
            anyhow::ensure!(plan.goals.len() == 10, "expected 10 goals");
            let mut store = Store::open_in_memory()?;
            let mut write = DocumentWrite {
                id: plan.id.0,
                kind: DocKind::Plan,
                chunk_kind: ChunkKind::Snapshot,
                bytes: &bytes,
                projection: Projection::Plan(&plan),
            };
            store.append_chunk(&write)?;
            // No bytes: only the projection rows are replaced.
            write.bytes = &[];
            if !setup_only {
                for _ in 0..n {
                    let id = store.append_chunk(black_box(&write))?;
                    out += u64::from(id.is_none());
                }
            }
        }
        "fetch" => {
            let answer = record_fetch(n)?;
            let (mut device, connection) = fetching_device(&answer)?;
            if !setup_only {
                for frame in &answer.frames {
                    device.frame_received(connection, black_box(frame));
                    out += device_carries_out(&mut device);
                }
                let progress = device
                    .fetch_progress(connection)
                    .context("no fetch progress")?;
                if progress.documents_done != n as u64 || out != n as u64 {
                    bail!("fetched {progress:?}, {out} documents changed, of {n}");
                }
            }
        }
        "fetch-device" => {
            let answer = record_fetch_plans(n)?;
            let dir = tempfile::tempdir()?;
            let (mut device, connection) =
                fetching_repo_device(&answer, &dir.path().join("fetch.db"))?;
            if !setup_only {
                for frame in &answer.frames {
                    device.frame_received(connection, black_box(frame));
                    let _ = device.take_outgoing();
                    out += device
                        .take_events()
                        .iter()
                        .filter(|e| matches!(e, SyncEvent::RemoteChange(_)))
                        .count() as u64;
                }
                let progress = device.status().fetch;
                if progress.documents_done != n as u64 || out != n as u64 {
                    bail!("fetched {progress:?}, {out} documents changed, of {n}");
                }
            }
        }
        other => bail!("unknown path {other}: expected one of {}", PATHS.join(", ")),
    }
    Ok(black_box(out))
}

// ---- memory: a relay engine's hot documents ------------------------------------------------------

/// The process's resident set size (`/proc/self/statm`, in pages of 4 KiB).
fn rss() -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .context("statm has a resident field")?
        .parse()?;
    Ok(pages * 4096)
}

/// Where a relay engine's memory per hot document goes, from RSS growth over `n` plan-like
/// documents (each uploaded by one device, as workload 5 of the sync bench does). Everything
/// measured stays alive until the end, so no step reuses memory an earlier one freed:
/// 1. a relay engine receiving the device's frames (recorded beforehand): hot documents built
///    by sync, one device session each, and the engine's bookkeeping;
/// 2. a copy of each of those documents: the Automerge document as sync built it;
/// 3. a second relay engine holding the same documents loaded from their stored bytes, with no
///    session (a document reloaded after eviction, before a peer comes back);
/// 4. the documents alone, loaded from the stored bytes;
/// 5. copies of those (automerge's own `Clone`);
/// 6. the device's frames replayed into the engine of step 3: a session per document.
fn memory(n: usize) -> anyhow::Result<()> {
    anyhow::ensure!(n > 0, "N must be positive");
    // Setup: a device uploads n plans to a recording relay; keep its frames and stored bytes.
    let mut device = SyncEngine::new(
        EngineConfig::new("bench-device", Role::Device).with_storage_id("bench-device-storage"),
    );
    let mut recorder = relay_engine();
    let on_relay = recorder.connection_opened(Direction::Incoming);
    let on_device = device.connection_opened(Direction::Outgoing);
    let mut frames = Vec::new();
    exchange(&mut device, on_device, &mut recorder, on_relay, &mut frames);
    let mut documents = Vec::with_capacity(n);
    for i in 0..n {
        let document = DocumentId::random();
        device
            .create_document(document, |doc| fill_plan(doc, &format!("student-{i}")))?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        exchange(&mut device, on_device, &mut recorder, on_relay, &mut frames);
        documents.push(document);
    }
    let stored: Vec<Vec<u8>> = documents
        .iter()
        .map(|d| {
            recorder
                .save_document(d)
                .context("the relay holds the plan")
        })
        .collect::<anyhow::Result<_>>()?;
    let stored_bytes: usize = stored.iter().map(Vec::len).sum();

    let per = |before: u64, after: u64| after.saturating_sub(before) as f64 / n as f64;
    // 1. The relay engine as the relay holds these documents.
    let r0 = rss()?;
    let mut relay = relay_engine();
    let connection = relay.connection_opened(Direction::Incoming);
    for frame in &frames {
        relay_receives(&mut relay, connection, frame);
    }
    anyhow::ensure!(relay.hot_document_count() == n, "every plan is hot");
    let r1 = rss()?;
    // 2. The documents as sync built them.
    let copies: Vec<automerge::Automerge> = documents
        .iter()
        .map(|d| relay.document(d).cloned().context("hot"))
        .collect::<anyhow::Result<_>>()?;
    let r2 = rss()?;
    // 3. Loaded from storage, no session.
    let mut reloaded = relay_engine();
    for (document, bytes) in documents.iter().zip(&stored) {
        load_stored(&mut reloaded, *document, bytes)?;
    }
    let r3 = rss()?;
    // 4. The documents alone, loaded from storage.
    let loaded: Vec<automerge::Automerge> = stored
        .iter()
        .map(|bytes| automerge::Automerge::load(bytes))
        .collect::<Result<_, _>>()?;
    let r4 = rss()?;
    // 5. Copies of those: what automerge holds once the load's spare capacity is gone.
    let loaded_copies: Vec<automerge::Automerge> = loaded.to_vec();
    let r5 = rss()?;
    // 6. The device's frames into the engine of step 3, which already holds every change: one
    // session per document, and nothing else grows.
    let connection = reloaded.connection_opened(Direction::Incoming);
    for frame in &frames {
        relay_receives(&mut reloaded, connection, frame);
    }
    let r6 = rss()?;
    println!(
        "{n} plan-like documents, {} B stored each on average",
        stored_bytes / n
    );
    println!(
        "relay engine, hot with one device session (as in the relay):  {:>8.0} B per document",
        per(r0, r1)
    );
    println!(
        "a copy of the Automerge document as sync built it:            {:>8.0} B per document",
        per(r1, r2)
    );
    println!(
        "relay engine, loaded from storage, no session:                {:>8.0} B per document",
        per(r2, r3)
    );
    println!(
        "the Automerge document alone, loaded from storage:            {:>8.0} B per document",
        per(r3, r4)
    );
    println!(
        "a copy of that loaded document:                               {:>8.0} B per document",
        per(r4, r5)
    );
    println!(
        "one device session per document (on the engine of step 3):    {:>8.0} B per document",
        per(r5, r6)
    );
    black_box((copies, loaded, loaded_copies, relay, reloaded));
    black_box((device, recorder));
    Ok(())
}

/// Makes `document` hot in a relay engine from its stored bytes, as the relay's hub does when it
/// loads a document (here without any peer asking).
fn load_stored(relay: &mut SyncEngine, document: DocumentId, bytes: &[u8]) -> anyhow::Result<()> {
    relay.open_document(document);
    let _ = relay.take_effects();
    relay.document_loaded(
        document,
        StoredDocument {
            bytes: Some(bytes.to_vec()),
            sync_states: Vec::new(),
        },
    )?;
    let _ = relay.take_effects();
    Ok(())
}

// ---- sync: a device/relay exchange, recorded ---------------------------------------------------

/// What a device sent a relay: the frames of the handshake and the first upload of the document,
/// then, per round, the frames that followed one small local change.
struct Recording {
    setup: Vec<Vec<u8>>,
    rounds: Vec<Vec<Vec<u8>>>,
}

fn relay_engine() -> SyncEngine {
    SyncEngine::new(
        EngineConfig::new("bench-relay", Role::Relay).with_storage_id("bench-relay-storage"),
    )
}

/// A relay engine with the relay's access policy, accounts holding one program (the one
/// `fill_plan` names) and its mentee `mentee` with one web device (actors bound on first use), and
/// a connection authenticated as that device.
fn policed_relay(mentee: &str) -> (SyncEngine, RelayPolicy, ConnectionId) {
    let policy = RelayPolicy::default();
    let mut relay = SyncEngine::with_policy(
        EngineConfig::new("bench-relay", Role::Relay).with_storage_id("bench-relay-storage"),
        Box::new(policy.clone()),
    );
    let connection = relay.connection_opened(Direction::Incoming);
    let grant = Grant {
        token: 1,
        user: 1,
        user_name: mentee.to_owned(),
        device: 1,
        device_id: [1; 16],
        expires_at: i64::MAX,
    };
    {
        let mut state = policy.lock();
        let accounts = &mut state.accounts;
        accounts
            .programs
            .insert(1, "First-year mentoring".to_owned());
        accounts.users.insert(
            1,
            User {
                id: 1,
                name: mentee.to_owned(),
                role: AccountRole::Mentee,
                program: Some(1),
            },
        );
        accounts.devices.insert(
            1,
            Device {
                id: 1,
                device_id: [1; 16],
                user: 1,
                name: "web".to_owned(),
                bind_on_first_use: true,
            },
        );
        accounts.tokens.insert(
            1,
            TokenState {
                id: 1,
                user: 1,
                device: 1,
                expires_at: i64::MAX,
                revoked_at: None,
            },
        );
        state
            .connections
            .insert(connection, Identity::Device(grant));
    }
    (relay, policy, connection)
}

/// What the relay's hub does when a commit succeeds: the new documents' records become stored
/// ones, and the audit and actor bindings (committed with the changes) are drained.
fn commit_bookkeeping(policy: &RelayPolicy) {
    let mut state = policy.lock();
    let pending: Vec<_> = state.pending.drain().collect();
    state.documents.extend(pending);
    state.written.clear();
    state.new_bindings.clear();
}

/// Hands a frame to the relay and carries out every effect at once (storage answers
/// immediately). Returns the bytes the relay sent back.
fn relay_receives(relay: &mut SyncEngine, connection: ConnectionId, frame: &[u8]) -> u64 {
    relay.frame_received(connection, frame);
    let mut sent = 0u64;
    loop {
        let effects = relay.take_effects();
        if effects.is_empty() {
            return sent;
        }
        for effect in effects {
            match effect {
                Effect::Send { frame, .. } => sent += black_box(frame).len() as u64,
                Effect::Persist { ticket, .. } => relay.persisted(ticket),
                Effect::LoadDocument { document } => {
                    // Only a document the relay never stored is loaded here: none in storage.
                    let _ = relay.document_loaded(document, StoredDocument::default());
                }
                _ => {}
            }
        }
    }
}

/// Runs a device against a relay (both engines in memory): handshake, a plan-like document
/// uploaded, then `rounds` small edits, each carried to quiet. Records what the device sent.
fn record_sync(rounds: usize) -> anyhow::Result<Recording> {
    let mut device = SyncEngine::new(
        EngineConfig::new("bench-device", Role::Device).with_storage_id("bench-device-storage"),
    );
    let mut relay = relay_engine();
    let on_relay = relay.connection_opened(Direction::Incoming);
    let on_device = device.connection_opened(Direction::Outgoing);
    let document = DocumentId::random();
    device
        .create_document(document, |doc| fill_plan(doc, "student-1"))?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut recording = Recording {
        setup: Vec::new(),
        rounds: Vec::with_capacity(rounds),
    };
    exchange(
        &mut device,
        on_device,
        &mut relay,
        on_relay,
        &mut recording.setup,
    );
    for round in 0..rounds {
        device
            .local_change(document, |doc| {
                doc.transact::<_, _, AutomergeError>(|tx| {
                    tx.put(ROOT, "last_session", round as i64)?;
                    Ok(())
                })
                .map(|_| ())
                .map_err(|f| f.error)
            })?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut frames = Vec::new();
        exchange(&mut device, on_device, &mut relay, on_relay, &mut frames);
        if frames.is_empty() {
            bail!("round {round}: the device sent nothing");
        }
        recording.rounds.push(frames);
    }
    Ok(recording)
}

/// Carries frames both ways until neither engine has anything left to do.
fn exchange(
    device: &mut SyncEngine,
    on_device: ConnectionId,
    relay: &mut SyncEngine,
    on_relay: ConnectionId,
    sent_by_device: &mut Vec<Vec<u8>>,
) {
    loop {
        let mut quiet = true;
        for effect in device.take_effects() {
            quiet = false;
            match effect {
                Effect::Send { frame, .. } => {
                    relay.frame_received(on_relay, &frame);
                    sent_by_device.push(frame);
                }
                Effect::Persist { ticket, .. } => device.persisted(ticket),
                Effect::LoadDocument { document } => {
                    let _ = device.document_loaded(document, StoredDocument::default());
                }
                _ => {}
            }
        }
        for effect in relay.take_effects() {
            quiet = false;
            match effect {
                Effect::Send { frame, .. } => device.frame_received(on_device, &frame),
                Effect::Persist { ticket, .. } => relay.persisted(ticket),
                Effect::LoadDocument { document } => {
                    let _ = relay.document_loaded(document, StoredDocument::default());
                }
                _ => {}
            }
        }
        if quiet {
            return;
        }
    }
}

// ---- fetch: a fresh device receiving a relay's snapshot fetch ------------------------------------

/// A relay's answer to one `want`: the frames a relay engine sent (the manifest, the snapshot
/// batches, `done`) for `ids`, and the handshake frames a device needs before it.
struct FetchAnswer {
    ids: Vec<DocumentId>,
    /// The relay's `peer` answer to a device's `join`.
    handshake: Vec<u8>,
    frames: Vec<Vec<u8>>,
}

/// `n` plan-like documents (`fill_plan`, ~390 B saved, as the sync bench seeds) hot in a relay
/// engine that offers the snapshot fetch, and its answer to a device wanting all of them.
fn record_fetch(n: usize) -> anyhow::Result<FetchAnswer> {
    let mut relay = fetch_relay();
    let mut ids = Vec::with_capacity(n);
    for index in 0..n {
        let document = DocumentId::random();
        relay
            .create_document(document, |doc| fill_plan(doc, &format!("student-{index}")))?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        ids.push(document);
    }
    relay_answers_want(relay, ids)
}

/// The same with plans made by a `Repo` (with ids, goals and the layout the projection reads),
/// stored on the relay as the repo saved them.
fn record_fetch_plans(n: usize) -> anyhow::Result<FetchAnswer> {
    let mut repo = repo()?;
    let mut relay = fetch_relay();
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let plan = repo.create_plan(new_plan())?;
        repo.add_goal(
            plan,
            NewGoal {
                title: "Pass calculus".into(),
                description: String::new(),
                category: "academic".into(),
                target_date: None,
            },
        )?;
        let bytes: Vec<u8> = repo
            .store()
            .load_chunks(plan.0)?
            .into_iter()
            .flat_map(|c| c.bytes)
            .collect();
        load_stored(&mut relay, plan.0, &bytes)?;
        ids.push(plan.0);
    }
    repo.clear_cache();
    relay_answers_want(relay, ids)
}

fn fetch_relay() -> SyncEngine {
    SyncEngine::new(
        EngineConfig::new("bench-relay", Role::Relay)
            .with_storage_id("bench-relay-storage")
            .with_snapshot_fetch(true),
    )
}

/// Runs a device engine's handshake and `want` against `relay` and records the relay's answer.
fn relay_answers_want(mut relay: SyncEngine, ids: Vec<DocumentId>) -> anyhow::Result<FetchAnswer> {
    let mut device = SyncEngine::new(
        EngineConfig::new("bench-device", Role::Device).with_storage_id("bench-device-storage"),
    );
    let on_relay = relay.connection_opened(Direction::Incoming);
    let on_device = device.connection_opened(Direction::Outgoing);
    let mut handshake = None;
    let mut frames = Vec::new();
    let mut opened = false;
    loop {
        let mut quiet = true;
        for effect in device.take_effects() {
            quiet = false;
            match effect {
                Effect::Send { frame, .. } => relay.frame_received(on_relay, &frame),
                Effect::LoadDocument { document } => {
                    device.document_loaded(document, StoredDocument::default())?;
                }
                _ => {}
            }
        }
        for effect in relay.take_effects() {
            quiet = false;
            match effect {
                Effect::Send { frame, .. } => {
                    if handshake.is_none() {
                        handshake = Some(frame.clone());
                        device.frame_received(on_device, &frame);
                    } else {
                        frames.push(frame);
                    }
                }
                Effect::Persist { ticket, .. } => relay.persisted(ticket),
                _ => {}
            }
        }
        if quiet && !opened && handshake.is_some() {
            opened = true;
            quiet = false;
            for document in &ids {
                device.open_document(*document);
            }
        }
        if quiet {
            break;
        }
    }
    Ok(FetchAnswer {
        ids,
        handshake: handshake.context("the relay never answered the join")?,
        frames,
    })
}

/// A fresh device engine that joined and sent its `want` for the answer's documents, ready to
/// receive the answer.
fn fetching_device(answer: &FetchAnswer) -> anyhow::Result<(SyncEngine, ConnectionId)> {
    let mut device = SyncEngine::new(
        EngineConfig::new("bench-device", Role::Device).with_storage_id("bench-device-storage"),
    );
    let connection = device.connection_opened(Direction::Outgoing);
    device.frame_received(connection, &answer.handshake);
    for document in &answer.ids {
        device.open_document(*document);
    }
    device_carries_out(&mut device);
    Ok((device, connection))
}

/// Carries out a device engine's effects with storage answering at once. Returns how many
/// documents it reported changed.
fn device_carries_out(device: &mut SyncEngine) -> u64 {
    let mut changed = 0;
    loop {
        let effects = device.take_effects();
        if effects.is_empty() {
            return changed;
        }
        for effect in effects {
            match effect {
                Effect::Persist {
                    ticket, changes, ..
                } => {
                    black_box(changes);
                    device.persisted(ticket);
                }
                Effect::LoadDocument { document } => {
                    let _ = device.document_loaded(document, StoredDocument::default());
                }
                Effect::DocumentChanged { changes, .. } => {
                    black_box(changes);
                    changed += 1;
                }
                other => {
                    black_box(other);
                }
            }
        }
    }
}

/// A fresh `Device` (repo on a file at `path`, `Durability::Full` as on a phone) following a
/// directory that lists the answer's documents, connected: its `want` for all of them is sent.
fn fetching_repo_device(
    answer: &FetchAnswer,
    path: &std::path::Path,
) -> anyhow::Result<(tandem_core::device::Device, ConnectionId)> {
    let config = RepoConfig::new(UserId::from("carla"), "bench");
    {
        // The directory is written without a flush per entry; only the fetch is measured.
        let mut repo = Repo::open(
            path,
            RepoConfig {
                durability: Durability::Normal,
                ..config.clone()
            },
        )?;
        let directory = repo.create_directory(NewDirectory {
            program: "bench".into(),
            coach: UserId::from("carla"),
            mentee: UserId::from("ana"),
        })?;
        for (index, document) in answer.ids.iter().enumerate() {
            repo.add_directory_entry(
                directory,
                DirectoryEntry {
                    document: *document,
                    kind: DocKind::Plan,
                    title: format!("plan {index}"),
                },
            )?;
        }
        repo.store_mut().follow(directory.0)?;
    }
    let mut device = tandem_core::device::Device::new(Repo::open(path, config)?)?;
    let connection = device.connection_opened();
    device.frame_received(connection, &answer.handshake);
    let _ = device.take_outgoing();
    let _ = device.take_events();
    Ok((device, connection))
}

// ---- store: a logged session and a plan, made by the repo -----------------------------------

fn repo() -> anyhow::Result<Repo> {
    Ok(Repo::open_in_memory(RepoConfig::new(
        UserId::from("carla"),
        "bench",
    ))?)
}

fn new_plan() -> NewPlan {
    NewPlan {
        mentee: UserId::from("ana"),
        coaches: vec![UserId::from("carla")],
        program: "bench".into(),
        term: "Spring".into(),
        strengths: vec!["curious".into()],
        challenges: vec!["time".into()],
        learning_style: "visual".into(),
    }
}

/// A session logged as the store bench logs it, and the bytes of its one chunk (~640 B).
fn logged_session() -> anyhow::Result<(SessionLog, Vec<u8>)> {
    let mut repo = repo()?;
    let plan: PlanId = repo.create_plan(new_plan())?;
    let start = Utc
        .with_ymd_and_hms(2025, 3, 3, 15, 0, 0)
        .single()
        .context("date")?;
    let id = repo.log_session(new_session(plan, "ana", start))?;
    let bytes: Vec<u8> = repo
        .store()
        .load_chunks(id.0)?
        .into_iter()
        .flat_map(|c| c.bytes)
        .collect();
    Ok((repo.session(id)?, bytes))
}

/// A plan with `goals` goals, read back, and its whole document as one snapshot.
fn plan_with_goals(goals: usize) -> anyhow::Result<(Plan, Vec<u8>)> {
    let mut repo = repo()?;
    let plan = repo.create_plan(new_plan())?;
    for g in 0..goals {
        repo.add_goal(
            plan,
            NewGoal {
                title: format!("Goal {g}"),
                description: "A goal worth working on this term".into(),
                category: "academic".into(),
                target_date: None,
            },
        )?;
    }
    Ok((repo.plan(plan)?, repo.export(plan.0)?))
}
