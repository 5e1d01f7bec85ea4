//! Fixtures the benchmarks share: the same documents and sessions, so their figures compare.

use automerge::transaction::Transactable;
use automerge::{Automerge, AutomergeError, ObjType, ROOT};
use chrono::{DateTime, Utc};
use tandem_core::model::{NewSession, SessionMode};
use tandem_core::{PlanId, UserId};

/// Fills `doc` as a plan-like document of a few hundred bytes: a mentee, coaches, strengths and
/// two goals, written with raw Automerge (for engines that sync documents they do not type).
pub fn fill_plan(doc: &mut Automerge, mentee: &str) -> Result<(), AutomergeError> {
    doc.transact::<_, _, AutomergeError>(|tx| {
        tx.put(ROOT, "type", "plan")?;
        tx.put(ROOT, "mentee", mentee)?;
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

/// A 45-minute video session of coach carla with `mentee`, notes and a mood, as a coach logs it.
pub fn new_session(plan: PlanId, mentee: &str, start: DateTime<Utc>) -> NewSession {
    NewSession {
        plan,
        coach: UserId::from("carla"),
        mentee: UserId::from(mentee),
        start,
        duration_minutes: 45,
        mode: SessionMode::Video,
        topics: vec!["midterms".into(), "sleep".into()],
        notes: "Went through the study plan for the week and the midterm topics.".into(),
        mood: Some(3),
        action_items: Vec::new(),
        goals_discussed: Vec::new(),
        follow_up: None,
    }
}
