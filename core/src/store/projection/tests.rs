//! Projection queries over realistic plans and sessions, built directly as model values.

use chrono::{Duration, NaiveDate, TimeZone, Utc};

use super::*;
use crate::ids::{ActionItemId, CheckInId, GoalId, MilestoneId};
use crate::model::{ActionItem, CheckIn, Goal, GoalStatus, Milestone, SCHEMA_VERSION};
use crate::store::tests::temp_store;
use crate::store::{ChunkKind, DocumentWrite, StoreConfig};

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
}

fn milestone(id: &str, title: &str, due: Option<NaiveDate>, done: bool) -> Milestone {
    Milestone {
        id: MilestoneId::from(id),
        title: title.to_owned(),
        due,
        done,
    }
}

fn plan(mentee: &str, coaches: &[&str]) -> Plan {
    Plan {
        id: PlanId(DocumentId::random()),
        schema_version: SCHEMA_VERSION,
        mentee: UserId::from(mentee),
        coaches: coaches.iter().map(|c| UserId::from(*c)).collect(),
        program: "First-year success".to_owned(),
        term: "Spring 2025".to_owned(),
        strengths: vec!["curious".to_owned()],
        challenges: vec!["time management".to_owned()],
        learning_style: "visual".to_owned(),
        goals: vec![
            Goal {
                id: GoalId::from("g-calc"),
                title: "Pass Calculus I".to_owned(),
                description: "At least a C+".to_owned(),
                category: "academic".to_owned(),
                target_date: Some(day(2025, 5, 15)),
                status: GoalStatus::InProgress,
                progress: 40,
                milestones: vec![
                    milestone(
                        "m-tutor",
                        "Book a tutoring slot",
                        Some(day(2025, 3, 4)),
                        true,
                    ),
                    milestone("m-mid", "Midterm review", Some(day(2025, 3, 6)), false),
                    milestone("m-final", "Final exam plan", Some(day(2025, 5, 1)), false),
                ],
                created_at: at(2025, 1, 20, 10),
            },
            Goal {
                id: GoalId::from("g-sleep"),
                title: "Sleep 7 hours".to_owned(),
                description: String::new(),
                category: "wellbeing".to_owned(),
                target_date: None,
                status: GoalStatus::NotStarted,
                progress: 0,
                milestones: vec![milestone("m-log", "Keep a sleep log", None, false)],
                created_at: at(2025, 1, 21, 10),
            },
        ],
        resources: Vec::new(),
        metrics: Vec::new(),
        check_ins: vec![
            CheckIn {
                id: CheckInId::from("c1"),
                at: at(2025, 2, 1, 9),
                rating: 2,
                reflection: "Behind on homework".to_owned(),
                by: UserId::from(mentee),
            },
            CheckIn {
                id: CheckInId::from("c2"),
                at: at(2025, 3, 1, 9),
                rating: 4,
                reflection: "Much better".to_owned(),
                by: UserId::from(mentee),
            },
        ],
    }
}

fn session(plan: &Plan, coach: &str, start: DateTime<Utc>, items: Vec<ActionItem>) -> SessionLog {
    SessionLog {
        id: SessionId(DocumentId::random()),
        schema_version: SCHEMA_VERSION,
        plan: plan.id,
        coach: UserId::from(coach),
        mentee: plan.mentee.clone(),
        start,
        duration_minutes: 45,
        mode: SessionMode::Video,
        topics: vec!["study plan".to_owned()],
        notes: "Talked about the midterm.".to_owned(),
        mood: Some(3),
        action_items: items,
        goals_discussed: vec![GoalId::from("g-calc")],
        follow_up: Some(day(2025, 3, 10)),
    }
}

fn item(id: &str, owner: &str, due: Option<NaiveDate>, done: bool) -> ActionItem {
    ActionItem {
        id: ActionItemId::from(id),
        text: format!("do {id}"),
        owner: UserId::from(owner),
        due,
        done,
    }
}

fn write_plan(store: &mut Store, plan: &Plan) {
    store
        .append_chunk(&DocumentWrite {
            id: plan.id.0,
            kind: DocKind::Plan,
            chunk_kind: ChunkKind::Incremental,
            bytes: b"plan change",
            projection: Projection::Plan(plan),
        })
        .unwrap();
}

fn write_session(store: &mut Store, session: &SessionLog) {
    store
        .append_chunk(&DocumentWrite {
            id: session.id.0,
            kind: DocKind::Session,
            chunk_kind: ChunkKind::Incremental,
            bytes: b"session change",
            projection: Projection::Session(session),
        })
        .unwrap();
}

/// Two mentees, three coaches, sessions over a month.
struct Program {
    ana: Plan,
    ben: Plan,
    first: SessionLog,
    second: SessionLog,
    bens: SessionLog,
}

fn program(store: &mut Store) -> Program {
    let ana = plan("ana", &["carla", "dev"]);
    let mut ben = plan("ben", &["carla"]);
    ben.goals[0].milestones[1].due = Some(day(2025, 3, 5));
    let first = session(
        &ana,
        "carla",
        at(2025, 2, 20, 15),
        vec![item("a1", "ana", Some(day(2025, 3, 7)), false)],
    );
    let second = session(
        &ana,
        "dev",
        at(2025, 3, 3, 15),
        vec![
            item("a2", "ana", None, false),
            item("a3", "dev", Some(day(2025, 3, 5)), false),
            item("a4", "ana", Some(day(2025, 3, 2)), true),
        ],
    );
    let bens = session(&ben, "carla", at(2025, 3, 4, 11), Vec::new());
    write_plan(store, &ana);
    write_plan(store, &ben);
    for s in [&first, &second, &bens] {
        write_session(store, s);
    }
    Program {
        ana,
        ben,
        first,
        second,
        bens,
    }
}

#[test]
fn milestones_due_this_week_are_listed_by_date_and_can_be_narrowed_to_a_mentee() {
    let (_dir, _path, mut store) = temp_store(StoreConfig::default());
    let p = program(&mut store);
    let week = MilestonesDue {
        from: day(2025, 3, 3),
        until: day(2025, 3, 10),
        mentee: None,
        include_done: false,
    };
    let due = store.milestones_due(&week).unwrap();
    let listed: Vec<_> = due
        .iter()
        .map(|m| (m.mentee.as_str(), m.id.as_str(), m.due))
        .collect();
    assert_eq!(
        listed,
        [
            ("ben", "m-mid", Some(day(2025, 3, 5))),
            ("ana", "m-mid", Some(day(2025, 3, 6))),
        ],
        "done and out-of-range milestones are left out"
    );
    assert_eq!(due[1].plan, p.ana.id);
    assert_eq!(due[1].goal_title, "Pass Calculus I");

    let anas = store
        .milestones_due(&MilestonesDue {
            mentee: Some(UserId::from("ana")),
            include_done: true,
            ..week
        })
        .unwrap();
    let ids: Vec<_> = anas.iter().map(|m| (m.id.as_str(), m.done)).collect();
    assert_eq!(ids, [("m-tutor", true), ("m-mid", false)]);
}

#[test]
fn sessions_in_a_range_optionally_of_one_coach_or_mentee() {
    let (_dir, _path, mut store) = temp_store(StoreConfig::default());
    let p = program(&mut store);
    let march = SessionsBetween {
        from: at(2025, 3, 1, 0),
        until: at(2025, 4, 1, 0),
        coach: None,
        mentee: None,
    };
    let ids = |rows: Vec<SessionRow>| rows.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.sessions_between(&march).unwrap()),
        [p.second.id, p.bens.id]
    );
    let carla = SessionsBetween {
        coach: Some(UserId::from("carla")),
        ..march.clone()
    };
    assert_eq!(ids(store.sessions_between(&carla).unwrap()), [p.bens.id]);
    let ana = SessionsBetween {
        mentee: Some(UserId::from("ana")),
        from: at(2025, 1, 1, 0),
        ..march
    };
    assert_eq!(
        ids(store.sessions_between(&ana).unwrap()),
        [p.first.id, p.second.id]
    );

    let row = &store.sessions_of_plan(p.ana.id).unwrap()[0];
    assert_eq!(row.id, p.second.id);
    assert_eq!(row.start, p.second.start);
    assert_eq!(row.mode, SessionMode::Video);
    assert_eq!(row.mood, Some(3));
    assert_eq!(row.duration_minutes, 45);
    assert_eq!(row.follow_up, Some(day(2025, 3, 10)));
}

#[test]
fn open_action_items_of_an_owner_or_a_mentee_undated_last() {
    let (_dir, _path, mut store) = temp_store(StoreConfig::default());
    program(&mut store);
    let ids = |rows: Vec<ActionItemRow>| {
        rows.into_iter()
            .map(|a| a.id.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    let ana = UserId::from("ana");
    assert_eq!(
        ids(store.open_action_items_owned_by(&ana).unwrap()),
        ["a1", "a2"]
    );
    assert_eq!(
        ids(store
            .open_action_items_owned_by(&UserId::from("dev"))
            .unwrap()),
        ["a3"]
    );
    assert_eq!(
        ids(store.open_action_items_of_mentee(&ana).unwrap()),
        ["a3", "a1", "a2"]
    );
}

#[test]
fn plans_goals_and_check_ins_of_people() {
    let (_dir, _path, mut store) = temp_store(StoreConfig::default());
    let p = program(&mut store);
    let ana = &store.plans_of_mentee(&UserId::from("ana")).unwrap()[0];
    assert_eq!(ana.id, p.ana.id);
    assert_eq!(ana.coaches, [UserId::from("carla"), UserId::from("dev")]);
    assert_eq!(ana.term, "Spring 2025");
    let carlas: Vec<_> = store
        .plans_of_coach(&UserId::from("carla"))
        .unwrap()
        .into_iter()
        .map(|plan| plan.mentee)
        .collect();
    assert_eq!(carlas, [UserId::from("ana"), UserId::from("ben")]);
    assert_eq!(store.plans_of_coach(&UserId::from("dev")).unwrap().len(), 1);

    let goals = store.goals_of_plan(p.ana.id).unwrap();
    let titles: Vec<_> = goals.iter().map(|g| g.title.as_str()).collect();
    assert_eq!(titles, ["Pass Calculus I", "Sleep 7 hours"]);
    assert_eq!(goals[0].status, GoalStatus::InProgress);
    assert_eq!(goals[0].progress, 40);
    assert_eq!(goals[0].target_date, Some(day(2025, 5, 15)));
    assert_eq!(goals[0].created_at, at(2025, 1, 20, 10));

    let latest = store.latest_check_ins(Some(p.ben.id), 1).unwrap();
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[0].id.as_str(), "c2");
    assert_eq!(latest[0].rating, 4);
    assert_eq!(latest[0].mentee, UserId::from("ben"));
    assert_eq!(store.latest_check_ins(None, 10).unwrap().len(), 4);
}

#[test]
fn pairs_with_no_recent_session_are_found_for_the_coordinator() {
    let (_dir, _path, mut store) = temp_store(StoreConfig::default());
    let p = program(&mut store);
    let never = plan("cleo", &["dev"]);
    write_plan(&mut store, &never);

    // On 2025-03-18, "no session in the last 14 days" means none since 2025-03-04 00:00.
    let since = at(2025, 3, 18, 0) - Duration::days(14);
    let stale = store.plans_without_session_since(since).unwrap();
    let listed: Vec<_> = stale
        .iter()
        .map(|s| (s.plan.mentee.as_str(), s.last_session))
        .collect();
    assert_eq!(
        listed,
        [("cleo", None), ("ana", Some(p.second.start))],
        "ben met on 2025-03-04, inside the window"
    );
    assert_eq!(stale[0].plan.coaches, [UserId::from("dev")]);
}

#[test]
fn a_rewrite_replaces_the_document_rows_and_touches_no_other_document() {
    let (_dir, _path, mut store) = temp_store(StoreConfig::default());
    let mut p = program(&mut store);
    p.ana.goals.remove(1);
    p.ana.goals[0].milestones[1].done = true;
    p.ana.coaches = vec![UserId::from("dev")];
    p.ana.check_ins.clear();
    write_plan(&mut store, &p.ana);
    p.second.action_items.retain(|a| a.id.as_str() != "a2");
    write_session(&mut store, &p.second);

    assert_eq!(store.goals_of_plan(p.ana.id).unwrap().len(), 1);
    assert_eq!(store.goals_of_plan(p.ben.id).unwrap().len(), 2);
    assert_eq!(
        store.plans_of_coach(&UserId::from("carla")).unwrap().len(),
        1
    );
    assert!(
        store
            .latest_check_ins(Some(p.ana.id), 5)
            .unwrap()
            .is_empty()
    );
    let ana = UserId::from("ana");
    let open: Vec<_> = store
        .open_action_items_owned_by(&ana)
        .unwrap()
        .into_iter()
        .map(|a| a.id.as_str().to_owned())
        .collect();
    assert_eq!(open, ["a1"]);
    let week = MilestonesDue {
        from: day(2025, 3, 3),
        until: day(2025, 3, 10),
        mentee: Some(ana),
        include_done: false,
    };
    assert!(store.milestones_due(&week).unwrap().is_empty());
    // Still two chunks per plan: the projection rewrite never touched the chunks.
    assert_eq!(store.load_chunks(p.ana.id.0).unwrap().len(), 2);
}

#[test]
fn a_projection_naming_another_document_is_refused_with_nothing_written() {
    let mut store = Store::open_in_memory().unwrap();
    let plan = plan("ana", &["carla"]);
    let other = DocumentId::random();
    let error = store
        .append_chunk(&DocumentWrite {
            id: other,
            kind: DocKind::Plan,
            chunk_kind: ChunkKind::Incremental,
            bytes: b"bytes",
            projection: Projection::Plan(&plan),
        })
        .unwrap_err();
    assert!(matches!(error, Error::Invalid(_)), "{error:?}");
    assert!(!store.document_exists(other).unwrap());
    assert!(store.plan_row(plan.id).unwrap().is_none());
}
