//! Tandem documents are plain Automerge: the official JS library (`@automerge/automerge`, through
//! `tests/js/doc.mjs`) reads what `doc::export` writes, and Tandem reads and keeps editing what the
//! JS library changed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, ensure};
use chrono::{NaiveDate, TimeZone, Utc};
use serde_json::{Value, json};
use tandem_core::doc::{self, Document, EditContext};
use tandem_core::model::{Author, NewActionItem, NewGoal, NewPlan, NewSession, SessionMode};
use tandem_core::{DeviceId, DocumentId, GoalId, PlanId, SessionId, UserId};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_owned()
}

/// Runs `node tests/js/doc.mjs args…`, installing the JS packages first if they are missing.
fn doc_mjs(args: &[&str]) -> anyhow::Result<String> {
    let root = workspace_root();
    if !root
        .join("tests/js/node_modules/@automerge/automerge")
        .is_dir()
    {
        let status = Command::new(root.join("scripts/setup.sh"))
            .current_dir(&root)
            .status()
            .context("run scripts/setup.sh (the JS interop tests need node and npm)")?;
        ensure!(status.success(), "scripts/setup.sh failed");
    }
    let output = Command::new("node")
        .arg(root.join("tests/js/doc.mjs"))
        .args(args)
        .output()
        .context("run node")?;
    ensure!(
        output.status.success(),
        "node doc.mjs {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

fn js_to_json(bytes: &[u8]) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("doc.automerge");
    std::fs::write(&file, bytes)?;
    let text = doc_mjs(&["to-json", path_str(&file)?])?;
    Ok(serde_json::from_str(&text)?)
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("a UTF-8 temp path")
}

fn edit_ctx(user: &str, device: u8) -> EditContext {
    EditContext::new(
        Author {
            user: UserId::new(user),
            device: DeviceId::from_bytes([device; 16]),
        },
        Utc.with_ymd_and_hms(2026, 9, 1, 10, 0, 0)
            .single()
            .expect("a valid instant"),
    )
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("a valid date")
}

/// A plan with one dated goal, as a mentee would start it.
fn plan_with_goal() -> anyhow::Result<(Document, GoalId)> {
    let plan_id = PlanId(DocumentId::random());
    let mut plan = Document::create_plan(
        plan_id,
        &edit_ctx("maya", 1),
        NewPlan {
            mentee: UserId::new("maya"),
            coaches: vec![UserId::new("carl")],
            program: "First-year success".to_owned(),
            term: "Fall 2026".to_owned(),
            strengths: vec!["curious".to_owned()],
            challenges: vec!["time management".to_owned()],
            learning_style: "visual".to_owned(),
        },
    )?;
    let goal = plan.add_goal(
        &edit_ctx("maya", 1),
        NewGoal {
            title: "Pass calculus".to_owned(),
            description: "At least a B".to_owned(),
            category: "academic".to_owned(),
            target_date: Some(date(2026, 12, 15)),
        },
    )?;
    Ok((plan, goal))
}

#[test]
fn js_reads_an_exported_plan_and_session_log() -> anyhow::Result<()> {
    let (plan, goal) = plan_with_goal()?;
    let plan_id = PlanId(plan.id());
    let session = Document::create_session(
        SessionId(DocumentId::random()),
        &edit_ctx("carl", 2),
        NewSession {
            plan: plan_id,
            coach: UserId::new("carl"),
            mentee: UserId::new("maya"),
            start: Utc
                .with_ymd_and_hms(2026, 9, 2, 15, 0, 0)
                .single()
                .expect("a valid instant"),
            duration_minutes: 45,
            mode: SessionMode::Video,
            topics: vec!["study plan".to_owned()],
            notes: "Talked about the calculus exam.".to_owned(),
            mood: Some(4),
            action_items: vec![NewActionItem {
                text: "Book a tutor".to_owned(),
                owner: UserId::new("maya"),
                due: Some(date(2026, 9, 9)),
            }],
            goals_discussed: vec![goal.clone()],
            follow_up: Some(date(2026, 9, 16)),
        },
    )?;

    let plan_json = js_to_json(&doc::export(&plan))?;
    assert_eq!(plan_json["type"], "plan");
    assert_eq!(plan_json["mentee"], "maya");
    assert_eq!(plan_json["coaches"], json!(["carl"]));
    assert_eq!(plan_json["term"], "Fall 2026");
    assert_eq!(plan_json["strengths"], json!(["curious"]));
    let goal_json = &plan_json["goals"][goal.as_str()];
    assert_eq!(goal_json["title"], "Pass calculus", "{plan_json}");
    assert_eq!(goal_json["description"], "At least a B");
    assert_eq!(goal_json["targetDate"], "2026-12-15");
    assert_eq!(goal_json["status"], "not_started");
    assert_eq!(goal_json["progress"], 0);

    let session_json = js_to_json(&doc::export(&session))?;
    assert_eq!(session_json["type"], "session");
    assert_eq!(session_json["plan"], plan_id.document_id().url());
    assert_eq!(session_json["notes"], "Talked about the calculus exam.");
    assert_eq!(session_json["mode"], "video");
    assert_eq!(session_json["durationMinutes"], 45);
    assert_eq!(session_json["mood"], 4);
    assert_eq!(session_json["topics"], json!(["study plan"]));
    assert_eq!(session_json["goalsDiscussed"], json!([goal.as_str()]));
    assert_eq!(session_json["followUp"], "2026-09-16");
    let items: Vec<&Value> = session_json["actionItems"]
        .as_object()
        .context("actionItems is a map")?
        .values()
        .collect();
    assert_eq!(items.len(), 1, "{session_json}");
    assert_eq!(items[0]["text"], "Book a tutor");
    assert_eq!(items[0]["owner"], "maya");
    assert_eq!(items[0]["due"], "2026-09-09");
    assert_eq!(items[0]["done"], false);
    Ok(())
}

#[test]
fn tandem_reads_and_keeps_editing_a_plan_that_js_changed() -> anyhow::Result<()> {
    let (plan, goal) = plan_with_goal()?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("plan.automerge");
    std::fs::write(&file, doc::export(&plan))?;

    doc_mjs(&["edit", path_str(&file)?, "term", "Spring 2027"])?;
    let bytes = std::fs::read(&file)?;

    // Imported as a new document, and loaded under its own id: both read the JS edit.
    let imported = doc::import(&bytes)?;
    assert_eq!(imported.read_plan()?.term, "Spring 2027");
    let mut loaded = Document::load(plan.id(), &bytes)?;
    let read = loaded.read_plan()?;
    assert_eq!(read.term, "Spring 2027");
    assert_eq!(read.mentee, UserId::new("maya"));
    assert_eq!(read.goals.len(), 1);
    assert_eq!(read.goals[0].id, goal);
    assert_eq!(read.goals[0].target_date, Some(date(2026, 12, 15)));

    // Tandem edits still work on top of the JS change, and JS reads them back.
    let ctx = edit_ctx("carl", 2);
    loaded.add_challenge(&ctx, "commute")?;
    let second = loaded.add_goal(
        &ctx,
        NewGoal {
            title: "Join a study group".to_owned(),
            description: String::new(),
            category: "social".to_owned(),
            target_date: None,
        },
    )?;
    let read = loaded.read_plan()?;
    assert_eq!(read.term, "Spring 2027");
    assert_eq!(read.goals.len(), 2);
    assert_eq!(read.challenges, vec!["time management", "commute"]);

    let json = js_to_json(&doc::export(&loaded))?;
    assert_eq!(json["term"], "Spring 2027");
    assert_eq!(
        json["goals"][second.as_str()]["title"],
        "Join a study group",
        "{json}"
    );
    assert_eq!(json["challenges"], json!(["time management", "commute"]));
    Ok(())
}
