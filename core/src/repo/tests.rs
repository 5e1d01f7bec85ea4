//! The repo over real files: durability across reopen, the projection in step with every edit,
//! compaction that keeps every change, damaged chunks, failed commits, and exchange between
//! devices.

use chrono::{NaiveDate, TimeZone};

use super::*;
use crate::model::{NewActionItem, SessionMode};

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn config(user: &str) -> RepoConfig {
    RepoConfig::new(UserId::from(user), format!("{user}'s phone"))
}

fn temp_repo(user: &str) -> (tempfile::TempDir, std::path::PathBuf, Repo) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let repo = Repo::open(&path, config(user)).unwrap();
    (dir, path, repo)
}

fn new_plan(mentee: &str) -> NewPlan {
    NewPlan {
        mentee: UserId::from(mentee),
        coaches: vec![UserId::from("carla")],
        program: "First-year success".to_owned(),
        term: "Spring 2025".to_owned(),
        strengths: vec!["curious".to_owned()],
        challenges: vec!["time management".to_owned()],
        learning_style: "visual".to_owned(),
    }
}

fn new_goal(title: &str) -> NewGoal {
    NewGoal {
        title: title.to_owned(),
        description: String::new(),
        category: "academic".to_owned(),
        target_date: Some(day(2025, 5, 15)),
    }
}

fn new_session(plan: PlanId, mentee: &str) -> NewSession {
    NewSession {
        plan,
        coach: UserId::from("carla"),
        mentee: UserId::from(mentee),
        start: Utc.with_ymd_and_hms(2025, 3, 3, 15, 0, 0).unwrap(),
        duration_minutes: 45,
        mode: SessionMode::Video,
        topics: vec!["midterms".to_owned()],
        notes: "Planned the week.".to_owned(),
        mood: Some(3),
        action_items: vec![NewActionItem {
            text: "Book tutoring".to_owned(),
            owner: UserId::from(mentee),
            due: Some(day(2025, 3, 5)),
        }],
        goals_discussed: Vec::new(),
        follow_up: Some(day(2025, 3, 10)),
    }
}

/// Everything the projection says about a plan equals what the document says.
fn assert_plan_projection(repo: &mut Repo, id: PlanId) {
    let plan = repo.plan(id).unwrap();
    let row = repo.store().plan_row(id).unwrap().unwrap();
    assert_eq!(row.mentee, plan.mentee);
    assert_eq!(row.term, plan.term);
    let mut coaches = plan.coaches.clone();
    coaches.sort();
    assert_eq!(row.coaches, coaches);

    let goals = repo.store().goals_of_plan(id).unwrap();
    let from_doc: Vec<_> = plan
        .goals
        .iter()
        .map(|g| {
            (
                g.id.clone(),
                g.title.clone(),
                g.status,
                g.progress,
                g.target_date,
            )
        })
        .collect();
    let from_rows: Vec<_> = goals
        .into_iter()
        .map(|g| (g.id, g.title, g.status, g.progress, g.target_date))
        .collect();
    assert_eq!(from_rows, from_doc);

    let everything = MilestonesDue {
        from: day(1970, 1, 1),
        until: day(9999, 1, 1),
        mentee: Some(plan.mentee.clone()),
        include_done: true,
    };
    let mut from_rows: Vec<_> = repo
        .milestones_due(&everything)
        .unwrap()
        .into_iter()
        .filter(|m| m.plan == id)
        .map(|m| (m.id, m.done, m.due))
        .collect();
    let mut from_doc: Vec<_> = plan
        .goals
        .iter()
        .flat_map(|g| &g.milestones)
        .filter(|m| m.due.is_some())
        .map(|m| (m.id.clone(), m.done, m.due))
        .collect();
    from_rows.sort_by(|a, b| a.0.cmp(&b.0));
    from_doc.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(from_rows, from_doc);

    let check_ins = repo.latest_check_ins(Some(id), 1000).unwrap();
    assert_eq!(check_ins.len(), plan.check_ins.len());
}

#[test]
fn every_edit_survives_reopening_the_store() {
    let (_dir, path, mut repo) = temp_repo("carla");
    let device = repo.device();
    let plan = repo.create_plan(new_plan("ana")).unwrap();
    let goal = repo.add_goal(plan, new_goal("Pass Calculus I")).unwrap();
    let milestone = repo
        .add_milestone(
            plan,
            &goal,
            NewMilestone {
                title: "Midterm review".to_owned(),
                due: Some(day(2025, 3, 6)),
            },
        )
        .unwrap();
    repo.update_progress(plan, &goal, 40).unwrap();
    repo.complete_milestone(plan, &goal, &milestone).unwrap();
    repo.add_check_in(
        plan,
        NewCheckIn {
            at: Utc.with_ymd_and_hms(2025, 3, 1, 9, 0, 0).unwrap(),
            rating: 4,
            reflection: "Better week".to_owned(),
        },
    )
    .unwrap();
    let session = repo.log_session(new_session(plan, "ana")).unwrap();
    let item = repo.session(session).unwrap().action_items[0].id.clone();
    repo.tick_action_item(session, &item, true).unwrap();
    repo.edit_session_notes(session, "Planned the week. Ana will book tutoring.")
        .unwrap();
    let notes = repo
        .create_private_notes(NewNotes {
            coach: UserId::from("carla"),
            mentee: UserId::from("ana"),
            plan,
            text: "Seems tired.".to_owned(),
        })
        .unwrap();
    repo.edit_private_notes(notes, "Seems tired; ask about sleep.")
        .unwrap();
    let directory = repo
        .create_directory(NewDirectory {
            program: "First-year success".to_owned(),
            coach: UserId::from("carla"),
            mentee: UserId::from("ana"),
        })
        .unwrap();
    repo.add_directory_entry(
        directory,
        DirectoryEntry {
            document: plan.0,
            kind: DocKind::Plan,
            title: "Ana's plan".to_owned(),
        },
    )
    .unwrap();
    let before = (
        repo.plan(plan).unwrap(),
        repo.session(session).unwrap(),
        repo.private_notes(notes).unwrap(),
        repo.directory(directory).unwrap(),
    );
    drop(repo);

    let mut repo = Repo::open(&path, config("carla")).unwrap();
    assert_eq!(repo.device(), device, "the device id is kept");
    let after = (
        repo.plan(plan).unwrap(),
        repo.session(session).unwrap(),
        repo.private_notes(notes).unwrap(),
        repo.directory(directory).unwrap(),
    );
    assert_eq!(after, before);
    assert_eq!(after.0.goals[0].progress, 40);
    assert!(after.0.goals[0].milestones[0].done);
    assert!(after.1.action_items[0].done);
    assert_eq!(after.2.text, "Seems tired; ask about sleep.");
    assert_eq!(after.3.entries.len(), 1);
    // Every change names this user and device.
    let history = repo.history(plan.0).unwrap();
    assert_eq!(history.len(), 6);
    assert!(history.iter().all(|h| h.device == Some(device)));
    assert!(
        repo.open_action_items_of_mentee(&UserId::from("ana"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn the_projection_is_in_step_after_each_edit() {
    let (_dir, _path, mut repo) = temp_repo("carla");
    let plan = repo.create_plan(new_plan("ana")).unwrap();
    assert_plan_projection(&mut repo, plan);
    let calc = repo.add_goal(plan, new_goal("Pass Calculus I")).unwrap();
    assert_plan_projection(&mut repo, plan);
    let sleep = repo.add_goal(plan, new_goal("Sleep 7 hours")).unwrap();
    assert_plan_projection(&mut repo, plan);
    let m = repo
        .add_milestone(
            plan,
            &calc,
            NewMilestone {
                title: "Midterm review".to_owned(),
                due: Some(day(2025, 3, 6)),
            },
        )
        .unwrap();
    assert_plan_projection(&mut repo, plan);
    repo.set_milestone_due(plan, &calc, &m, Some(day(2025, 3, 7)))
        .unwrap();
    assert_plan_projection(&mut repo, plan);
    repo.complete_milestone(plan, &calc, &m).unwrap();
    assert_plan_projection(&mut repo, plan);
    repo.update_progress(plan, &sleep, 10).unwrap();
    repo.set_goal_status(plan, &sleep, GoalStatus::InProgress)
        .unwrap();
    repo.set_goal_target_date(plan, &calc, None).unwrap();
    repo.set_term(plan, "Fall 2025").unwrap();
    assert_plan_projection(&mut repo, plan);

    let session = repo.log_session(new_session(plan, "ana")).unwrap();
    let open = repo
        .open_action_items_owned_by(&UserId::from("ana"))
        .unwrap();
    assert_eq!(open.len(), 1);
    let added = repo
        .add_action_item(
            session,
            NewActionItem {
                text: "Send the essay draft".to_owned(),
                owner: UserId::from("carla"),
                due: None,
            },
        )
        .unwrap();
    assert_eq!(
        repo.open_action_items_owned_by(&UserId::from("carla"))
            .unwrap()[0]
            .id,
        added
    );
    repo.tick_action_item(session, &added, true).unwrap();
    assert!(
        repo.open_action_items_owned_by(&UserId::from("carla"))
            .unwrap()
            .is_empty()
    );
    repo.set_mood(session, Some(5)).unwrap();
    let march = SessionsBetween {
        from: Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap(),
        until: Utc.with_ymd_and_hms(2025, 4, 1, 0, 0, 0).unwrap(),
        coach: Some(UserId::from("carla")),
        mentee: None,
    };
    let rows = repo.sessions_between(&march).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].mood, Some(5));
}

#[test]
fn a_refused_edit_changes_nothing_anywhere() {
    let (_dir, _path, mut repo) = temp_repo("carla");
    let plan = repo.create_plan(new_plan("ana")).unwrap();
    let goal = repo.add_goal(plan, new_goal("Pass Calculus I")).unwrap();
    let heads = repo.heads(plan.0).unwrap();
    let chunks = repo.store().load_chunks(plan.0).unwrap().len();
    assert!(matches!(
        repo.update_progress(plan, &goal, 101),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        repo.update_progress(plan, &GoalId::from("nope"), 10),
        Err(Error::NotFound(_))
    ));
    assert_eq!(repo.heads(plan.0).unwrap(), heads);
    assert_eq!(repo.store().load_chunks(plan.0).unwrap().len(), chunks);
    assert!(matches!(
        repo.plan(PlanId(DocumentId::random())),
        Err(Error::NotFound(_))
    ));
    // A session id is not a plan.
    let session = repo.log_session(new_session(plan, "ana")).unwrap();
    assert!(repo.plan(PlanId(session.0)).is_err());
}

#[test]
fn a_failed_commit_leaves_no_unstored_change_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let mut repo = Repo::open(
        &path,
        RepoConfig {
            busy_timeout: Duration::from_millis(50),
            ..config("carla")
        },
    )
    .unwrap();
    let plan = repo.create_plan(new_plan("ana")).unwrap();
    let goal = repo.add_goal(plan, new_goal("Pass Calculus I")).unwrap();
    let heads = repo.heads(plan.0).unwrap();

    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let result = repo.update_progress(plan, &goal, 70);
    assert!(matches!(result, Err(Error::Storage(_))), "{result:?}");
    other.execute_batch("ROLLBACK").unwrap();

    assert_eq!(
        repo.heads(plan.0).unwrap(),
        heads,
        "the change was not kept"
    );
    assert_eq!(repo.plan(plan).unwrap().goals[0].progress, 0);
    assert_eq!(repo.store().goals_of_plan(plan).unwrap()[0].progress, 0);
    repo.update_progress(plan, &goal, 80).unwrap();
    drop(repo);

    let mut repo = Repo::open(&path, config("carla")).unwrap();
    assert_eq!(repo.plan(plan).unwrap().goals[0].progress, 80);
    assert_eq!(repo.history(plan.0).unwrap().len(), 3);
    assert_plan_projection(&mut repo, plan);
}

#[test]
fn compaction_keeps_every_change() {
    let (_dir, path, mut repo) = temp_repo("carla");
    let plan = repo.create_plan(new_plan("ana")).unwrap();
    let goal = repo.add_goal(plan, new_goal("Pass Calculus I")).unwrap();
    for progress in 1..=20 {
        repo.update_progress(plan, &goal, progress * 5).unwrap();
    }
    let heads = repo.heads(plan.0).unwrap();
    let history = repo.history(plan.0).unwrap();
    let read = repo.plan(plan).unwrap();
    assert_eq!(repo.store().load_chunks(plan.0).unwrap().len(), 22);

    repo.compact(plan.0).unwrap();
    let chunks = repo.store().load_chunks(plan.0).unwrap();
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].kind, ChunkKind::Snapshot);
    repo.clear_cache();
    assert_eq!(
        repo.heads(plan.0).unwrap(),
        heads,
        "reloaded from the snapshot alone"
    );
    assert_eq!(repo.history(plan.0).unwrap(), history);
    // Editing after compaction appends after the snapshot.
    repo.set_term(plan, "Fall 2025").unwrap();
    drop(repo);

    let mut repo = Repo::open(&path, config("carla")).unwrap();
    let after = repo.history(plan.0).unwrap();
    assert_eq!(after.len(), history.len() + 1);
    assert_eq!(after[..history.len()], history[..]);
    let mut reopened = repo.plan(plan).unwrap();
    assert_eq!(reopened.term, "Fall 2025");
    reopened.term = read.term.clone();
    assert_eq!(reopened, read);
    repo.compact(plan.0).unwrap();
    repo.clear_cache();
    assert_eq!(repo.history(plan.0).unwrap(), after);
    assert_ne!(repo.heads(plan.0).unwrap(), heads);
}

#[test]
fn a_damaged_chunk_makes_only_its_document_unreadable() {
    let (_dir, path, mut repo) = temp_repo("carla");
    let damaged = repo.create_plan(new_plan("ana")).unwrap();
    let goal = repo.add_goal(damaged, new_goal("Pass Calculus I")).unwrap();
    repo.update_progress(damaged, &goal, 30).unwrap();
    let healthy = repo.create_plan(new_plan("ben")).unwrap();
    drop(repo);

    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute(
        "UPDATE chunks SET bytes = zeroblob(length(bytes))
         WHERE id = (SELECT max(id) FROM chunks WHERE document = ?1)",
        [&damaged.0.as_bytes()[..]],
    )
    .unwrap();
    drop(raw);

    let mut repo = Repo::open(&path, config("carla")).unwrap();
    match repo.plan(damaged) {
        Err(Error::Corrupt { document, reason }) => {
            assert_eq!(document, damaged.0);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(matches!(
        repo.update_progress(damaged, &goal, 50),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(repo.plan(healthy).unwrap().mentee, UserId::from("ben"));
    // The projection still lists both plans: the app can show the damaged one as such.
    assert_eq!(
        repo.plans_of_coach(&UserId::from("carla")).unwrap().len(),
        2
    );
    assert_eq!(repo.store().load_chunks(healthy.0).unwrap().len(), 1);
}

#[test]
fn bytes_automerge_cannot_read_are_reported_as_corrupt() {
    let (_dir, path, mut repo) = temp_repo("carla");
    let plan = repo.create_plan(new_plan("ana")).unwrap();
    drop(repo);
    // A chunk with a valid checksum but garbage inside, as a buggy writer might store.
    let mut store = Store::open(&path, StoreConfig::default()).unwrap();
    store
        .append_chunk(&DocumentWrite {
            id: plan.0,
            kind: DocKind::Plan,
            chunk_kind: ChunkKind::Incremental,
            bytes: b"not automerge at all",
            projection: Projection::Plan(
                &Repo::open(&path, config("carla"))
                    .unwrap()
                    .plan(plan)
                    .unwrap(),
            ),
        })
        .unwrap();
    drop(store);
    let mut repo = Repo::open(&path, config("carla")).unwrap();
    assert!(matches!(
        repo.plan(plan),
        Err(Error::Corrupt { document, .. }) if document == plan.0
    ));
}

#[test]
fn a_store_belongs_to_one_user() {
    let (_dir, path, repo) = temp_repo("carla");
    drop(repo);
    assert!(matches!(
        Repo::open(&path, config("mallory")),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn two_devices_exchange_documents_and_see_conflicts() {
    let (_dir_a, _path_a, mut coach) = temp_repo("carla");
    let (_dir_b, path_b, mut mentee) = temp_repo("ana");
    let plan = coach.create_plan(new_plan("ana")).unwrap();
    let goal = coach.add_goal(plan, new_goal("Pass Calculus I")).unwrap();
    mentee
        .apply_changes(plan.0, &coach.export(plan.0).unwrap())
        .unwrap();
    assert_eq!(mentee.plan(plan).unwrap(), coach.plan(plan).unwrap());
    assert_eq!(
        mentee.plans_of_mentee(&UserId::from("ana")).unwrap().len(),
        1
    );

    // Both change the same field offline.
    coach.update_progress(plan, &goal, 30).unwrap();
    mentee.update_progress(plan, &goal, 50).unwrap();
    mentee
        .apply_changes(plan.0, &coach.export(plan.0).unwrap())
        .unwrap();
    coach
        .apply_changes(plan.0, &mentee.export(plan.0).unwrap())
        .unwrap();
    assert_eq!(coach.heads(plan.0).unwrap(), mentee.heads(plan.0).unwrap());
    assert_eq!(coach.plan(plan).unwrap(), mentee.plan(plan).unwrap());
    let conflicts = mentee.conflicts(plan.0).unwrap();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(conflicts[0].values.len(), 2);
    drop(mentee);

    // What the mentee's device received is durable too, projection included.
    let mut mentee = Repo::open(&path_b, config("ana")).unwrap();
    assert_plan_projection(&mut mentee, plan);
    assert_eq!(mentee.heads(plan.0).unwrap(), coach.heads(plan.0).unwrap());
}

#[test]
fn an_exported_document_imports_as_a_new_document() {
    let (_dir, _path, mut repo) = temp_repo("carla");
    let plan = repo.create_plan(new_plan("ana")).unwrap();
    let bytes = repo.export(plan.0).unwrap();
    let (copy, kind) = repo.import(&bytes).unwrap();
    assert_eq!(kind, DocKind::Plan);
    assert_ne!(copy, plan.0);
    let copied = repo.plan(PlanId(copy)).unwrap();
    assert_eq!(copied.mentee, UserId::from("ana"));
    assert_eq!(repo.plans_of_mentee(&UserId::from("ana")).unwrap().len(), 2);
    assert!(repo.import(b"garbage").is_err());
}

#[test]
fn a_small_cache_still_serves_every_document() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = Repo::open(
        dir.path().join("device.db"),
        RepoConfig {
            cache_limit: 2,
            ..config("carla")
        },
    )
    .unwrap();
    let plans: Vec<_> = (0..5)
        .map(|i| repo.create_plan(new_plan(&format!("mentee{i}"))).unwrap())
        .collect();
    for (i, plan) in plans.iter().enumerate() {
        repo.add_goal(*plan, new_goal(&format!("goal {i}")))
            .unwrap();
    }
    assert!(repo.cache.len() <= 2);
    for (i, plan) in plans.iter().enumerate() {
        assert_eq!(
            repo.plan(*plan).unwrap().goals[0].title,
            format!("goal {i}")
        );
    }
}
