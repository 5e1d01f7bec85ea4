//! The child process of the crash test: makes durable edits in a loop and acknowledges each on
//! stdout only after the repo returned, until it is killed.
//!
//! Usage: `crash_writer <store path>`. Prints `plan <id>` once, then `goal <id>` or
//! `session <id>` per acknowledged edit; every 16th edit also compacts the plan, so kills land
//! inside compactions too.

use std::io::Write;

use anyhow::Context;
use chrono::Utc;
use tandem_core::model::{NewGoal, NewPlan, NewSession, SessionMode};
use tandem_core::repo::{Repo, RepoConfig};
use tandem_core::store::Durability;
use tandem_core::{PlanId, UserId};

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .context("usage: crash_writer <store path>")?;
    let mut config = RepoConfig::new(UserId::from("carla"), "crash test");
    config.durability = Durability::Full;
    let mut repo = Repo::open(&path, config)?;
    let mentee = UserId::from("ana");
    let plan = match repo.plans_of_mentee(&mentee)?.first() {
        Some(row) => row.id,
        None => repo.create_plan(NewPlan {
            mentee: mentee.clone(),
            coaches: vec![UserId::from("carla")],
            program: "crash".into(),
            term: "now".into(),
            strengths: Vec::new(),
            challenges: Vec::new(),
            learning_style: String::new(),
        })?,
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "plan {}", plan.0)?;
    out.flush()?;
    for n in 0u64.. {
        if n % 2 == 0 {
            let goal = repo.add_goal(
                plan,
                NewGoal {
                    title: format!("goal {n}"),
                    description: String::new(),
                    category: "crash".into(),
                    target_date: None,
                },
            )?;
            writeln!(out, "goal {goal}")?;
        } else {
            let session = repo.log_session(session(plan, &mentee))?;
            writeln!(out, "session {}", session.0)?;
        }
        out.flush()?;
        if n % 16 == 15 {
            repo.compact(plan.0)?;
        }
    }
    Ok(())
}

fn session(plan: PlanId, mentee: &UserId) -> NewSession {
    NewSession {
        plan,
        coach: UserId::from("carla"),
        mentee: mentee.clone(),
        start: Utc::now(),
        duration_minutes: 30,
        mode: SessionMode::Phone,
        topics: vec!["crash".into()],
        notes: "written before the kill".into(),
        mood: None,
        action_items: Vec::new(),
        goals_discussed: Vec::new(),
        follow_up: None,
    }
}
