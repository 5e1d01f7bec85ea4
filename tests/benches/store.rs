//! Device store figures: the cost of a durable "log a session" against a bare SQLite commit of the
//! same bytes, opening a store of 10,000 documents and listing this week's sessions, and memory per
//! loaded document. Run with `cargo bench -p tandem-tests --bench store`; it prints a table.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{Datelike, TimeZone, Utc};
use rusqlite::Connection;
use tandem_core::UserId;
use tandem_core::model::{NewCheckIn, NewGoal, NewMilestone, NewPlan};
use tandem_core::repo::{Repo, RepoConfig};
use tandem_core::store::Durability;
use tandem_core::store::projection::SessionsBetween;
use tandem_tests::fixtures::new_session;

const SAMPLES: usize = 300;
const DOCUMENTS: usize = 10_000;
const LOADED: usize = 1_000;

/// Set in the child process that measures memory, so that memory freed by earlier work in this
/// process does not hide what loading takes.
const MEMORY_CHILD: &str = "TANDEM_BENCH_MEMORY_CHILD";

fn main() -> anyhow::Result<()> {
    if let Ok(path) = std::env::var(MEMORY_CHILD) {
        return load_and_measure(std::path::Path::new(&path));
    }
    let dir = tempfile::tempdir()?;
    for durability in [Durability::Full, Durability::Normal] {
        log_session_latency(dir.path(), durability)?;
    }
    open_and_list(dir.path())?;
    memory_per_document(dir.path())?;
    Ok(())
}

fn config(durability: Durability) -> RepoConfig {
    let mut config = RepoConfig::new(UserId::from("carla"), "bench");
    config.durability = durability;
    config.cache_limit = 100_000;
    config
}

fn new_plan(mentee: &str) -> NewPlan {
    NewPlan {
        mentee: UserId::from(mentee),
        coaches: vec![UserId::from("carla")],
        program: "bench".into(),
        term: "Spring".into(),
        strengths: vec!["curious".into()],
        challenges: vec!["time".into()],
        learning_style: "visual".into(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn log_session_latency(dir: &std::path::Path, durability: Durability) -> anyhow::Result<()> {
    let name = format!("{durability:?}").to_lowercase();
    let mut repo = Repo::open(dir.join(format!("latency-{name}.db")), config(durability))?;
    let plan = repo.create_plan(new_plan("ana"))?;
    let start = Utc
        .with_ymd_and_hms(2025, 3, 3, 15, 0, 0)
        .single()
        .context("date")?;
    let mut durable = Vec::with_capacity(SAMPLES);
    let mut payloads = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let began = Instant::now();
        let session = repo.log_session(new_session(plan, "ana", start))?;
        durable.push(began.elapsed());
        let chunks = repo.store().load_chunks(session.0)?;
        payloads.push(
            chunks
                .into_iter()
                .map(|c| c.bytes)
                .collect::<Vec<_>>()
                .concat(),
        );
    }

    // The floor: one INSERT of the same bytes per transaction, same journal and sync mode.
    let raw = Connection::open(dir.join(format!("raw-{name}.db")))?;
    raw.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    raw.pragma_update(
        None,
        "synchronous",
        if durability == Durability::Full {
            "FULL"
        } else {
            "NORMAL"
        },
    )?;
    raw.execute_batch("CREATE TABLE chunks (id INTEGER PRIMARY KEY, bytes BLOB NOT NULL)")?;
    let mut bare = Vec::with_capacity(SAMPLES);
    for bytes in &payloads {
        let began = Instant::now();
        raw.execute_batch("BEGIN")?;
        raw.execute("INSERT INTO chunks (bytes) VALUES (?1)", [bytes])?;
        raw.execute_batch("COMMIT")?;
        bare.push(began.elapsed());
    }
    durable.sort();
    bare.sort();
    let size = payloads.iter().map(Vec::len).sum::<usize>() / payloads.len();
    let (d50, d99, b50, b99) = (
        percentile(&durable, 0.5),
        percentile(&durable, 0.99),
        percentile(&bare, 0.5),
        percentile(&bare, 0.99),
    );
    println!(
        "log a session, synchronous={name:<6} ({size} B chunk): p50 {d50:>10.3?}  p99 {d99:>10.3?} | \
         raw commit p50 {b50:>10.3?}  p99 {b99:>10.3?} | ratio p50 {:.2}x  p99 {:.2}x",
        d50.as_secs_f64() / b50.as_secs_f64(),
        d99.as_secs_f64() / b99.as_secs_f64(),
    );
    Ok(())
}

fn open_and_list(dir: &std::path::Path) -> anyhow::Result<()> {
    let path = dir.join("ten-thousand.db");
    let built = Instant::now();
    {
        // Built with NORMAL so the setup does not cost 10,000 fsyncs; the figure is the open.
        let mut repo = Repo::open(&path, config(Durability::Normal))?;
        let monday = Utc
            .with_ymd_and_hms(2025, 1, 6, 9, 0, 0)
            .single()
            .context("date")?;
        let mut plan = repo.create_plan(new_plan("mentee0"))?;
        for n in 1..DOCUMENTS {
            if n % 20 == 0 {
                plan = repo.create_plan(new_plan(&format!("mentee{}", n / 20)))?;
            } else {
                // Spread the sessions over 40 weeks, a few hours apart.
                let start = monday + chrono::Duration::hours((n as i64 * 7) % (40 * 7 * 24));
                repo.log_session(new_session(plan, &format!("mentee{}", n / 20), start))?;
            }
        }
        repo.store().checkpoint()?;
    }
    let build = built.elapsed();

    let began = Instant::now();
    drop(tandem_core::store::Store::open(&path, Default::default())?);
    let store_opened = began.elapsed();
    let began = Instant::now();
    let repo = Repo::open(&path, config(Durability::Full))?;
    let opened = began.elapsed();
    let week_start = Utc
        .with_ymd_and_hms(2025, 3, 3, 0, 0, 0)
        .single()
        .context("date")?;
    assert_eq!(week_start.weekday(), chrono::Weekday::Mon);
    let began = Instant::now();
    let sessions = repo.sessions_between(&SessionsBetween {
        from: week_start,
        until: week_start + chrono::Duration::days(7),
        coach: None,
        mentee: None,
    })?;
    let listed = began.elapsed();
    let documents = repo.store().list_documents()?.len();
    println!(
        "store of {documents} documents (built in {build:.1?}): open {opened:.3?}, \
         list this week's {} sessions {listed:.3?}, open + list {:.3?} \
         (first Store::open, cold: {store_opened:.3?})",
        sessions.len(),
        opened + listed
    );
    Ok(())
}

/// Resident memory of this process, in bytes (Linux), or `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn memory_per_document(dir: &std::path::Path) -> anyhow::Result<()> {
    let path = dir.join("memory.db");
    let mut plans = Vec::with_capacity(LOADED);
    {
        let mut repo = Repo::open(&path, config(Durability::Normal))?;
        let at = Utc
            .with_ymd_and_hms(2025, 3, 1, 9, 0, 0)
            .single()
            .context("date")?;
        for n in 0..LOADED {
            let plan = repo.create_plan(new_plan(&format!("mentee{n}")))?;
            // A realistic plan: 4 goals with 3 milestones each, progress updates, 5 check-ins.
            for g in 0..4 {
                let goal = repo.add_goal(
                    plan,
                    NewGoal {
                        title: format!("Goal {g}"),
                        description: "A goal worth working on this term".into(),
                        category: "academic".into(),
                        target_date: None,
                    },
                )?;
                for m in 0..3 {
                    repo.add_milestone(
                        plan,
                        &goal,
                        NewMilestone {
                            title: format!("Milestone {m}"),
                            due: None,
                        },
                    )?;
                }
                repo.update_progress(plan, &goal, 25)?;
                repo.update_progress(plan, &goal, 50)?;
            }
            for c in 0..5 {
                repo.add_check_in(
                    plan,
                    NewCheckIn {
                        at,
                        rating: 3,
                        reflection: format!("Week {c} went fine"),
                    },
                )?;
            }
            repo.compact(plan.0)?;
            plans.push(plan);
        }
    }
    let status = std::process::Command::new(std::env::current_exe()?)
        .env(MEMORY_CHILD, &path)
        .status()?;
    anyhow::ensure!(status.success(), "the memory child failed");
    Ok(())
}

/// In a fresh process: loads every plan of the store at `path` and reports resident memory.
fn load_and_measure(path: &std::path::Path) -> anyhow::Result<()> {
    let mut repo = Repo::open(path, config(Durability::Normal))?;
    let plans = repo.store().list_documents()?;
    let saved: usize = plans
        .iter()
        .map(|(id, _)| {
            repo.store()
                .load_chunks(*id)
                .map(|c| c.iter().map(|c| c.bytes.len()).sum::<usize>())
        })
        .sum::<Result<usize, _>>()?;
    let count = plans.len().max(1);
    // Warm SQLite's page cache and the allocator with one document before the baseline.
    repo.heads(plans.first().context("no plans")?.0)?;
    let before = resident_bytes();
    let began = Instant::now();
    for (id, _) in &plans {
        repo.heads(*id)?;
    }
    let loading = began.elapsed();
    let after = resident_bytes();
    match (before, after) {
        (Some(before), Some(after)) => println!(
            "{count} loaded plans (35 changes each, {} B saved on average): \
             ~{} KB resident per loaded document, load {:.0?} per document",
            saved / count,
            after.saturating_sub(before) / count as u64 / 1024,
            loading / count as u32,
        ),
        _ => println!("memory per document: not measurable on this platform"),
    }
    Ok(())
}
