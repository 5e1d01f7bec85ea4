//! Fixtures shared by the doc layer's tests: authors, edit contexts and small documents.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, TimeZone, Utc};

use super::{Document, EditContext};
use crate::ids::{DeviceId, DocumentId, GoalId, PlanId, SessionId, UserId};
use crate::model::{Author, NewActionItem, NewPlan, NewSession, SessionMode};

/// 1 March 2025, 10:00 UTC, plus `minutes`.
pub(crate) fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 10, 0, 0).unwrap() + chrono::Duration::minutes(minutes)
}

/// An edit by `user` on device number `device`, `minutes` after the fixtures' epoch.
pub(crate) fn ctx(user: &str, device: u8, minutes: i64) -> EditContext {
    EditContext::new(
        Author {
            user: UserId::new(user),
            device: DeviceId::from_bytes([device; 16]),
        },
        at(minutes),
    )
}

pub(crate) fn mentee() -> EditContext {
    ctx("maya", 1, 0)
}

pub(crate) fn coach() -> EditContext {
    ctx("carl", 2, 0)
}

pub(crate) fn new_plan() -> NewPlan {
    NewPlan {
        mentee: UserId::new("maya"),
        coaches: vec![UserId::new("carl")],
        program: "First-year success".to_owned(),
        term: "Spring 2025".to_owned(),
        strengths: vec!["curious".to_owned()],
        challenges: vec!["time management".to_owned()],
        learning_style: "visual".to_owned(),
    }
}

pub(crate) fn plan_doc() -> Document {
    Document::create_plan(plan_id(), &mentee(), new_plan()).unwrap()
}

pub(crate) fn new_session(plan: PlanId) -> NewSession {
    NewSession {
        plan,
        coach: UserId::new("carl"),
        mentee: UserId::new("maya"),
        start: at(60),
        duration_minutes: 45,
        mode: SessionMode::Video,
        topics: vec!["study plan".to_owned()],
        notes: "Talked about the calculus exam.".to_owned(),
        mood: Some(3),
        action_items: vec![
            NewActionItem {
                text: "Book a tutor".to_owned(),
                owner: UserId::new("maya"),
                due: None,
            },
            NewActionItem {
                text: "Send practice problems".to_owned(),
                owner: UserId::new("carl"),
                due: None,
            },
        ],
        goals_discussed: vec![GoalId::new("g1")],
        follow_up: None,
    }
}

pub(crate) fn session_doc() -> Document {
    Document::create_session(session_id(), &coach(), new_session(plan_id())).unwrap()
}

pub(crate) fn plan_id() -> PlanId {
    PlanId(DocumentId::random())
}

pub(crate) fn session_id() -> SessionId {
    SessionId(DocumentId::random())
}
