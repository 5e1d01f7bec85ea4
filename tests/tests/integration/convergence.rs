//! Convergence, end to end through the durable store: three devices apply random sequences of the
//! domain edits to one plan and one session log, exchange changes in random orders, reopen their
//! SQLite files and compact between steps, and must end equal: same heads, same typed values, same
//! projection rows.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use proptest::prelude::*;
use tandem_core::model::{
    NewActionItem, NewCheckIn, NewGoal, NewMilestone, NewPlan, NewSession, SessionMode,
};
use tandem_core::repo::{Repo, RepoConfig};
use tandem_core::store::Durability;
use tandem_core::{DocumentId, PlanId, SessionId, UserId};

const USERS: [&str; 3] = ["carla", "ana", "ben"];

/// One step of the scenario. Indices pick among what the acting device currently sees, so every
/// generated step is meaningful whatever came before it.
#[derive(Clone, Debug)]
enum Step {
    AddGoal {
        device: usize,
        title: u8,
    },
    UpdateProgress {
        device: usize,
        goal: usize,
        progress: u8,
    },
    SetTargetDate {
        device: usize,
        goal: usize,
        day: u8,
    },
    AddMilestone {
        device: usize,
        goal: usize,
        day: u8,
    },
    CompleteMilestone {
        device: usize,
        goal: usize,
        milestone: usize,
    },
    AddCheckIn {
        device: usize,
        rating: u8,
    },
    SetTerm {
        device: usize,
        term: u8,
    },
    EditNotes {
        device: usize,
        at: usize,
        text: String,
    },
    AddActionItem {
        device: usize,
        day: u8,
    },
    TickActionItem {
        device: usize,
        item: usize,
    },
    Send {
        from: usize,
        to: usize,
    },
    Reopen {
        device: usize,
    },
    Compact {
        device: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let device = 0..USERS.len();
    prop_oneof![
        (device.clone(), any::<u8>()).prop_map(|(device, title)| Step::AddGoal { device, title }),
        (device.clone(), any::<usize>(), 0..=100u8).prop_map(|(device, goal, progress)| {
            Step::UpdateProgress {
                device,
                goal,
                progress,
            }
        }),
        (device.clone(), any::<usize>(), 0..60u8)
            .prop_map(|(device, goal, day)| Step::SetTargetDate { device, goal, day }),
        (device.clone(), any::<usize>(), 0..60u8)
            .prop_map(|(device, goal, day)| Step::AddMilestone { device, goal, day }),
        (device.clone(), any::<usize>(), any::<usize>()).prop_map(|(device, goal, milestone)| {
            Step::CompleteMilestone {
                device,
                goal,
                milestone,
            }
        }),
        (device.clone(), 1..=5u8).prop_map(|(device, rating)| Step::AddCheckIn { device, rating }),
        (device.clone(), 0..4u8).prop_map(|(device, term)| Step::SetTerm { device, term }),
        (device.clone(), any::<usize>(), "[a-z é]{1,6}")
            .prop_map(|(device, at, text)| Step::EditNotes { device, at, text }),
        (device.clone(), 0..60u8).prop_map(|(device, day)| Step::AddActionItem { device, day }),
        (device.clone(), any::<usize>())
            .prop_map(|(device, item)| Step::TickActionItem { device, item }),
        (device.clone(), device.clone()).prop_map(|(from, to)| Step::Send { from, to }),
        device.clone().prop_map(|device| Step::Reopen { device }),
        device.prop_map(|device| Step::Compact { device }),
    ]
}

struct Devices {
    folder: tempfile::TempDir,
    repos: Vec<Repo>,
    plan: PlanId,
    session: SessionId,
}

fn config(user: &str) -> RepoConfig {
    let mut config = RepoConfig::new(UserId::from(user), format!("{user}'s phone"));
    // Durability does not change what a reopened store holds after a clean close; NORMAL keeps
    // a thousand cases fast.
    config.durability = Durability::Normal;
    config
}

fn path(folder: &Path, device: usize) -> PathBuf {
    folder.join(format!("device-{device}.sqlite"))
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 2, 3, 15, 0, 0)
        .single()
        .expect("a valid instant")
}

fn day(offset: u8) -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 2, 3).expect("a valid date") + Duration::days(offset.into())
}

impl Devices {
    /// Device 0 creates the plan and the session log; the others receive them before any step.
    fn new() -> Self {
        let folder = tempfile::tempdir().expect("temp dir");
        let mut repos: Vec<Repo> = (0..USERS.len())
            .map(|device| Repo::open(path(folder.path(), device), config(USERS[device])))
            .collect::<Result<_, _>>()
            .expect("open stores");
        let plan = repos[0]
            .create_plan(NewPlan {
                mentee: UserId::from("ana"),
                coaches: vec![UserId::from("carla"), UserId::from("ben")],
                program: "First-year success".into(),
                term: "Spring 2025".into(),
                strengths: vec!["curiosity".into()],
                challenges: vec![],
                learning_style: "visual".into(),
            })
            .expect("create plan");
        let session = repos[0]
            .log_session(NewSession {
                plan,
                coach: UserId::from("carla"),
                mentee: UserId::from("ana"),
                start: start(),
                duration_minutes: 45,
                mode: SessionMode::Video,
                topics: vec!["time management".into()],
                notes: "Kickoff.".into(),
                mood: Some(3),
                action_items: vec![],
                goals_discussed: vec![],
                follow_up: None,
            })
            .expect("log session");
        let mut devices = Self {
            folder,
            repos,
            plan,
            session,
        };
        for to in 1..USERS.len() {
            devices.send(0, to);
        }
        devices
    }

    fn documents(&self) -> [DocumentId; 2] {
        [self.plan.document_id(), self.session.document_id()]
    }

    /// Ships everything `from` holds of both documents to `to`, as a peer would.
    fn send(&mut self, from: usize, to: usize) {
        if from == to {
            return;
        }
        for document in self.documents() {
            let bytes = self.repos[from].export(document).expect("export");
            self.repos[to]
                .apply_changes(document, &bytes)
                .expect("apply a peer's changes");
        }
    }

    fn reopen(&mut self, device: usize) {
        let fresh = Repo::open(path(self.folder.path(), device), config(USERS[device]))
            .expect("reopen store");
        // Dropping the old repo closes its connection only after the new one is open: both are
        // valid readers of the same committed file.
        self.repos[device] = fresh;
    }

    fn apply(&mut self, step: &Step) {
        let (plan, session) = (self.plan, self.session);
        let goals = |repo: &mut Repo| repo.plan(plan).expect("read plan").goals;
        match step {
            Step::AddGoal { device, title } => {
                let goal = NewGoal {
                    title: format!("Goal {title}"),
                    description: String::new(),
                    category: "academic".into(),
                    target_date: None,
                };
                self.repos[*device].add_goal(plan, goal).expect("add goal");
            }
            Step::UpdateProgress {
                device,
                goal,
                progress,
            } => {
                let repo = &mut self.repos[*device];
                if let Some(goal) = pick(&goals(repo), *goal) {
                    repo.update_progress(plan, &goal.id, *progress)
                        .expect("progress");
                }
            }
            Step::SetTargetDate {
                device,
                goal,
                day: offset,
            } => {
                let repo = &mut self.repos[*device];
                if let Some(goal) = pick(&goals(repo), *goal) {
                    repo.set_goal_target_date(plan, &goal.id, Some(day(*offset)))
                        .expect("target date");
                }
            }
            Step::AddMilestone {
                device,
                goal,
                day: offset,
            } => {
                let repo = &mut self.repos[*device];
                if let Some(goal) = pick(&goals(repo), *goal) {
                    let milestone = NewMilestone {
                        title: format!("Milestone due {}", day(*offset)),
                        due: Some(day(*offset)),
                    };
                    repo.add_milestone(plan, &goal.id, milestone)
                        .expect("milestone");
                }
            }
            Step::CompleteMilestone {
                device,
                goal,
                milestone,
            } => {
                let repo = &mut self.repos[*device];
                if let Some(goal) = pick(&goals(repo), *goal)
                    && let Some(milestone) = pick(&goal.milestones, *milestone)
                {
                    repo.complete_milestone(plan, &goal.id, &milestone.id)
                        .expect("complete milestone");
                }
            }
            Step::AddCheckIn { device, rating } => {
                let check_in = NewCheckIn {
                    at: start() + Duration::hours((*rating).into()),
                    rating: *rating,
                    reflection: "Feeling better about exams".into(),
                };
                self.repos[*device]
                    .add_check_in(plan, check_in)
                    .expect("check-in");
            }
            Step::SetTerm { device, term } => {
                let term =
                    ["Spring 2025", "Summer 2025", "Fall 2025", "Winter 2026"][*term as usize];
                self.repos[*device].set_term(plan, term).expect("term");
            }
            Step::EditNotes { device, at, text } => {
                let repo = &mut self.repos[*device];
                let notes = repo.session(session).expect("read session").notes;
                let length = notes.chars().count();
                repo.splice_session_notes(session, at % (length + 1), 0, text)
                    .expect("splice notes");
            }
            Step::AddActionItem {
                device,
                day: offset,
            } => {
                let item = NewActionItem {
                    text: "Visit the tutoring centre".into(),
                    owner: UserId::from("ana"),
                    due: Some(day(*offset)),
                };
                self.repos[*device]
                    .add_action_item(session, item)
                    .expect("action item");
            }
            Step::TickActionItem { device, item } => {
                let repo = &mut self.repos[*device];
                let items = repo.session(session).expect("read session").action_items;
                if let Some(item) = pick(&items, *item) {
                    repo.tick_action_item(session, &item.id, !item.done)
                        .expect("tick");
                }
            }
            Step::Send { from, to } => self.send(*from, *to),
            Step::Reopen { device } => self.reopen(*device),
            Step::Compact { device } => {
                for document in self.documents() {
                    self.repos[*device].compact(document).expect("compact");
                }
            }
        }
    }

    /// Everyone sends to everyone, twice round, so every change reaches every device.
    fn exchange_all(&mut self) {
        for _ in 0..2 {
            for from in 0..USERS.len() {
                for to in 0..USERS.len() {
                    self.send(from, to);
                }
            }
        }
    }
}

fn pick<T>(items: &[T], index: usize) -> Option<&T> {
    (!items.is_empty()).then(|| &items[index % items.len()])
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000,
        // Shrinking a failing case with three SQLite files is slow and rarely clearer.
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    })]

    #[test]
    fn devices_converge_through_their_stores(steps in prop::collection::vec(step(), 1..24)) {
        let mut devices = Devices::new();
        for step in &steps {
            devices.apply(step);
        }
        devices.exchange_all();
        // Read back from disk, not from the caches that did the work.
        for device in 0..USERS.len() {
            devices.reopen(device);
        }
        let (plan, session) = (devices.plan, devices.session);
        let reference_heads: Vec<_> = devices
            .documents()
            .iter()
            .map(|document| devices.repos[0].heads(*document).expect("heads"))
            .collect();
        let reference_plan = devices.repos[0].plan(plan).expect("plan");
        let reference_session = devices.repos[0].session(session).expect("session");
        let reference_goals = devices.repos[0].store().goals_of_plan(plan).expect("goal rows");
        let documents = devices.documents();
        for device in 1..USERS.len() {
            let repo = &mut devices.repos[device];
            for (document, heads) in documents.iter().zip(&reference_heads) {
                prop_assert_eq!(&repo.heads(*document).expect("heads"), heads);
            }
            prop_assert_eq!(&repo.plan(plan).expect("plan"), &reference_plan);
            prop_assert_eq!(&repo.session(session).expect("session"), &reference_session);
            prop_assert_eq!(
                &repo.store().goals_of_plan(plan).expect("goal rows"),
                &reference_goals
            );
        }
    }
}
