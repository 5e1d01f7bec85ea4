//! Crash safety of the device store: a writer process is SIGKILLed at random moments, and every
//! edit it acknowledged must still be there, in the document and in the projection, in a file
//! that passes `PRAGMA integrity_check`.
//!
//! SIGKILL stops the process, not the machine: it proves that an acknowledged edit was committed
//! (and that a torn transaction never shows), not that the OS cache reached the disk. That second
//! half is `synchronous=FULL`'s promise, which only a power cut can test.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use rand::RngExt;
use tandem_core::repo::{Repo, RepoConfig};
use tandem_core::store::{Store, StoreConfig};
use tandem_core::{DocumentId, GoalId, PlanId, SessionId, UserId};

const KILLS: usize = 60;

#[derive(Default)]
struct Acknowledged {
    plan: Option<PlanId>,
    goals: BTreeSet<GoalId>,
    sessions: BTreeSet<SessionId>,
}

impl Acknowledged {
    fn record(&mut self, line: &str) -> anyhow::Result<()> {
        match line.split_once(' ') {
            Some(("plan", id)) => self.plan = Some(PlanId(DocumentId::parse(id)?)),
            Some(("goal", id)) => {
                self.goals.insert(GoalId::from(id));
            }
            Some(("session", id)) => {
                self.sessions.insert(SessionId(DocumentId::parse(id)?));
            }
            _ => bail!("unexpected line from the writer: {line:?}"),
        }
        Ok(())
    }
}

/// Runs the writer once, kills it after `after`, and records the lines it finished writing.
fn run_and_kill(
    path: &std::path::Path,
    after: Duration,
    acks: &mut Acknowledged,
) -> anyhow::Result<()> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash_writer"))
        .arg(path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting crash_writer")?;
    let stdout = child.stdout.take().context("the writer's stdout")?;
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut reader = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                // Only a whole line is an acknowledgement: a kill can cut one in half.
                Ok(n) if n > 0 && line.ends_with('\n') => lines.push(line.trim_end().to_owned()),
                _ => break,
            }
        }
        lines
    });
    std::thread::sleep(after);
    child.kill().context("killing the writer")?;
    child.wait()?;
    let lines = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader thread panicked"))?;
    for line in &lines {
        acks.record(line)?;
    }
    Ok(())
}

fn verify(path: &std::path::Path, acks: &Acknowledged) -> anyhow::Result<()> {
    let store = Store::open(path, StoreConfig::default())?;
    ensure!(store.integrity_check()? == ["ok"], "integrity check failed");
    drop(store);
    let Some(plan) = acks.plan else {
        return Ok(());
    };
    let mut repo = Repo::open(path, RepoConfig::new(UserId::from("carla"), "crash test"))?;
    let in_document: BTreeSet<GoalId> = repo.plan(plan)?.goals.into_iter().map(|g| g.id).collect();
    let in_projection: BTreeSet<GoalId> = repo
        .store()
        .goals_of_plan(plan)?
        .into_iter()
        .map(|g| g.id)
        .collect();
    ensure!(
        in_document == in_projection,
        "document and projection disagree"
    );
    let lost: Vec<_> = acks.goals.difference(&in_document).collect();
    ensure!(lost.is_empty(), "acknowledged goals lost: {lost:?}");

    let projected: BTreeSet<SessionId> = repo
        .store()
        .sessions_of_plan(plan)?
        .into_iter()
        .map(|s| s.id)
        .collect();
    let lost: Vec<_> = acks.sessions.difference(&projected).collect();
    ensure!(
        lost.is_empty(),
        "acknowledged sessions missing from the projection: {lost:?}"
    );
    for session in &acks.sessions {
        repo.session(*session)
            .with_context(|| format!("acknowledged session {session:?}"))?;
    }
    Ok(())
}

#[test]
fn acknowledged_edits_survive_sigkill() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("device.db");
    let mut acks = Acknowledged::default();
    let started = Instant::now();
    for _ in 0..KILLS {
        let after = Duration::from_millis(rand::rng().random_range(10..200));
        run_and_kill(&path, after, &mut acks)?;
        verify(&path, &acks)?;
    }
    eprintln!(
        "{KILLS} kills in {:?}: {} goals and {} sessions acknowledged, all present",
        started.elapsed(),
        acks.goals.len(),
        acks.sessions.len()
    );
    ensure!(
        acks.plan.is_some(),
        "the writer never acknowledged its plan"
    );
    ensure!(
        !acks.goals.is_empty(),
        "the writer never acknowledged an edit"
    );
    Ok(())
}
