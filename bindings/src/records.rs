//! Flat records and enums mirroring `tandem_core::model` and the store's query rows, with their
//! conversions. No logic: each conversion moves fields across.
//!
//! Conventions across the boundary:
//! - Ids are strings. Plan, session, notes and directory ids are automerge-repo document ids
//!   (bs58check); goal, milestone, action item and check-in ids are short strings.
//! - Instants are uniffi timestamps: `java.time.Instant` in Kotlin, `Date` in Swift, a UTC-aware
//!   `datetime.datetime` in Python.
//! - Calendar dates (due dates, target dates, follow-ups) are ISO `YYYY-MM-DD` strings:
//!   `LocalDate.parse(s)` in Kotlin, `date.fromisoformat(s)` in Python, an ISO-8601 date
//!   formatter in Swift. They carry no time zone, as on a paper calendar.

use std::time::SystemTime;

use chrono::{DateTime, NaiveDate, Utc};
use tandem_core::model;
use tandem_core::store::{self, projection};
use tandem_core::{DirectoryId, DocumentId, GoalId, NotesId, PlanId, SessionId, UserId};

use crate::error::{ApiError, ApiResult};

// ---- conversions of scalars ----

pub(crate) fn document_id(text: &str) -> ApiResult<DocumentId> {
    Ok(DocumentId::parse(text)?)
}

pub(crate) fn plan_id(text: &str) -> ApiResult<PlanId> {
    document_id(text).map(PlanId)
}

pub(crate) fn session_id(text: &str) -> ApiResult<SessionId> {
    document_id(text).map(SessionId)
}

pub(crate) fn notes_id(text: &str) -> ApiResult<NotesId> {
    document_id(text).map(NotesId)
}

pub(crate) fn directory_id(text: &str) -> ApiResult<DirectoryId> {
    document_id(text).map(DirectoryId)
}

pub(crate) fn date_in(text: Option<String>) -> ApiResult<Option<NaiveDate>> {
    text.map(|text| {
        NaiveDate::parse_from_str(&text, "%Y-%m-%d")
            .map_err(|e| ApiError::invalid(format!("date {text:?} is not YYYY-MM-DD: {e}")))
    })
    .transpose()
}

fn date_out(date: Option<NaiveDate>) -> Option<String> {
    date.map(|date| date.format("%Y-%m-%d").to_string())
}

pub(crate) fn instant_in(at: SystemTime) -> DateTime<Utc> {
    at.into()
}

pub(crate) fn instant_out(at: DateTime<Utc>) -> SystemTime {
    at.into()
}

fn strings<T: ToString>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

fn users(items: Vec<String>) -> Vec<UserId> {
    items.into_iter().map(UserId::from).collect()
}

// ---- enums ----

#[derive(Clone, Copy, PartialEq, Eq, Debug, uniffi::Enum)]
pub enum DocKind {
    Plan,
    Session,
    Notes,
    Directory,
}

impl From<model::DocKind> for DocKind {
    fn from(kind: model::DocKind) -> Self {
        match kind {
            model::DocKind::Plan => Self::Plan,
            model::DocKind::Session => Self::Session,
            model::DocKind::Notes => Self::Notes,
            model::DocKind::Directory => Self::Directory,
        }
    }
}

impl From<DocKind> for model::DocKind {
    fn from(kind: DocKind) -> Self {
        match kind {
            DocKind::Plan => Self::Plan,
            DocKind::Session => Self::Session,
            DocKind::Notes => Self::Notes,
            DocKind::Directory => Self::Directory,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, uniffi::Enum)]
pub enum GoalStatus {
    NotStarted,
    InProgress,
    Completed,
    Deferred,
    Dropped,
    /// Written by a newer release; shown, never set.
    Unknown,
}

impl From<model::GoalStatus> for GoalStatus {
    fn from(status: model::GoalStatus) -> Self {
        match status {
            model::GoalStatus::NotStarted => Self::NotStarted,
            model::GoalStatus::InProgress => Self::InProgress,
            model::GoalStatus::Completed => Self::Completed,
            model::GoalStatus::Deferred => Self::Deferred,
            model::GoalStatus::Dropped => Self::Dropped,
            model::GoalStatus::Unknown => Self::Unknown,
        }
    }
}

impl From<GoalStatus> for model::GoalStatus {
    fn from(status: GoalStatus) -> Self {
        match status {
            GoalStatus::NotStarted => Self::NotStarted,
            GoalStatus::InProgress => Self::InProgress,
            GoalStatus::Completed => Self::Completed,
            GoalStatus::Deferred => Self::Deferred,
            GoalStatus::Dropped => Self::Dropped,
            GoalStatus::Unknown => Self::Unknown,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, uniffi::Enum)]
pub enum SessionMode {
    InPerson,
    Video,
    Phone,
    Group,
    /// Written by a newer release; shown, never set.
    Unknown,
}

impl From<model::SessionMode> for SessionMode {
    fn from(mode: model::SessionMode) -> Self {
        match mode {
            model::SessionMode::InPerson => Self::InPerson,
            model::SessionMode::Video => Self::Video,
            model::SessionMode::Phone => Self::Phone,
            model::SessionMode::Group => Self::Group,
            model::SessionMode::Unknown => Self::Unknown,
        }
    }
}

impl From<SessionMode> for model::SessionMode {
    fn from(mode: SessionMode) -> Self {
        match mode {
            SessionMode::InPerson => Self::InPerson,
            SessionMode::Video => Self::Video,
            SessionMode::Phone => Self::Phone,
            SessionMode::Group => Self::Group,
            SessionMode::Unknown => Self::Unknown,
        }
    }
}

/// How hard each local write works to survive a power loss. See `tandem_core::store::Durability`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, uniffi::Enum)]
pub enum Durability {
    /// Every write is flushed to stable storage before it returns: it survives an app crash, an
    /// OS crash and a power loss. One fsync per write. The default.
    Full,
    /// A returned write survives an app crash; an OS crash or power loss may lose the writes made
    /// since the last checkpoint, but never leaves the database half-written.
    Normal,
}

impl From<Durability> for store::Durability {
    fn from(durability: Durability) -> Self {
        match durability {
            Durability::Full => Self::Full,
            Durability::Normal => Self::Normal,
        }
    }
}

// ---- plans ----

/// A mentee's Individualized Academic Success Plan.
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct Plan {
    pub id: String,
    pub schema_version: u64,
    pub mentee: String,
    pub coaches: Vec<String>,
    pub program: String,
    pub term: String,
    pub strengths: Vec<String>,
    pub challenges: Vec<String>,
    pub learning_style: String,
    /// In creation order.
    pub goals: Vec<Goal>,
    pub resources: Vec<Resource>,
    pub metrics: Vec<Metric>,
    /// In time order.
    pub check_ins: Vec<CheckIn>,
}

impl From<model::Plan> for Plan {
    fn from(plan: model::Plan) -> Self {
        Self {
            id: plan.id.to_string(),
            schema_version: plan.schema_version,
            mentee: plan.mentee.to_string(),
            coaches: strings(&plan.coaches),
            program: plan.program,
            term: plan.term,
            strengths: plan.strengths,
            challenges: plan.challenges,
            learning_style: plan.learning_style,
            goals: plan.goals.into_iter().map(Goal::from).collect(),
            resources: plan.resources.into_iter().map(Resource::from).collect(),
            metrics: plan.metrics.into_iter().map(Metric::from).collect(),
            check_ins: plan.check_ins.into_iter().map(CheckIn::from).collect(),
        }
    }
}

#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct Goal {
    pub id: String,
    pub title: String,
    pub description: String,
    pub category: String,
    /// `YYYY-MM-DD`.
    pub target_date: Option<String>,
    pub status: GoalStatus,
    /// Percent, 0 to 100.
    pub progress: u8,
    /// In due-date order, undated last.
    pub milestones: Vec<Milestone>,
    pub created_at: SystemTime,
}

impl From<model::Goal> for Goal {
    fn from(goal: model::Goal) -> Self {
        Self {
            id: goal.id.to_string(),
            title: goal.title,
            description: goal.description,
            category: goal.category,
            target_date: date_out(goal.target_date),
            status: goal.status.into(),
            progress: goal.progress,
            milestones: goal.milestones.into_iter().map(Milestone::from).collect(),
            created_at: instant_out(goal.created_at),
        }
    }
}

#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct Milestone {
    pub id: String,
    pub title: String,
    /// `YYYY-MM-DD`.
    pub due: Option<String>,
    pub done: bool,
}

impl From<model::Milestone> for Milestone {
    fn from(milestone: model::Milestone) -> Self {
        Self {
            id: milestone.id.to_string(),
            title: milestone.title,
            due: date_out(milestone.due),
            done: milestone.done,
        }
    }
}

/// A resource the mentee uses: a tutoring centre, a website, a study group.
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct Resource {
    pub title: String,
    #[uniffi(default)]
    pub url: Option<String>,
}

impl From<model::Resource> for Resource {
    fn from(resource: model::Resource) -> Self {
        Self {
            title: resource.title,
            url: resource.url,
        }
    }
}

impl From<Resource> for model::Resource {
    fn from(resource: Resource) -> Self {
        Self {
            title: resource.title,
            url: resource.url,
        }
    }
}

/// An agreed measure of success, such as a GPA target.
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct Metric {
    pub name: String,
    pub target: f64,
    #[uniffi(default)]
    pub current: Option<f64>,
}

impl From<model::Metric> for Metric {
    fn from(metric: model::Metric) -> Self {
        Self {
            name: metric.name,
            target: metric.target,
            current: metric.current,
        }
    }
}

impl From<Metric> for model::Metric {
    fn from(metric: Metric) -> Self {
        Self {
            name: metric.name,
            target: metric.target,
            current: metric.current,
        }
    }
}

/// A mentee's periodic check-in.
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct CheckIn {
    pub id: String,
    pub at: SystemTime,
    /// 1 (struggling) to 5 (thriving).
    pub rating: u8,
    pub reflection: String,
    pub by: String,
}

impl From<model::CheckIn> for CheckIn {
    fn from(check_in: model::CheckIn) -> Self {
        Self {
            id: check_in.id.to_string(),
            at: instant_out(check_in.at),
            rating: check_in.rating,
            reflection: check_in.reflection,
            by: check_in.by.to_string(),
        }
    }
}

/// Input of "create a plan".
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct NewPlan {
    pub mentee: String,
    pub coaches: Vec<String>,
    pub program: String,
    pub term: String,
    #[uniffi(default)]
    pub strengths: Vec<String>,
    #[uniffi(default)]
    pub challenges: Vec<String>,
    #[uniffi(default)]
    pub learning_style: String,
}

impl From<NewPlan> for model::NewPlan {
    fn from(plan: NewPlan) -> Self {
        Self {
            mentee: plan.mentee.into(),
            coaches: users(plan.coaches),
            program: plan.program,
            term: plan.term,
            strengths: plan.strengths,
            challenges: plan.challenges,
            learning_style: plan.learning_style,
        }
    }
}

/// Input of "add a goal".
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct NewGoal {
    pub title: String,
    #[uniffi(default)]
    pub description: String,
    #[uniffi(default)]
    pub category: String,
    /// `YYYY-MM-DD`.
    #[uniffi(default)]
    pub target_date: Option<String>,
}

impl TryFrom<NewGoal> for model::NewGoal {
    type Error = ApiError;
    fn try_from(goal: NewGoal) -> ApiResult<Self> {
        Ok(Self {
            title: goal.title,
            description: goal.description,
            category: goal.category,
            target_date: date_in(goal.target_date)?,
        })
    }
}

/// Input of "edit a goal": the fields to change; `null` leaves a field as it is.
#[derive(Clone, PartialEq, Debug, Default, uniffi::Record)]
pub struct GoalEdit {
    #[uniffi(default)]
    pub title: Option<String>,
    #[uniffi(default)]
    pub description: Option<String>,
    #[uniffi(default)]
    pub category: Option<String>,
}

impl From<GoalEdit> for model::GoalEdit {
    fn from(edit: GoalEdit) -> Self {
        Self {
            title: edit.title,
            description: edit.description,
            category: edit.category,
        }
    }
}

/// Input of "add a milestone".
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct NewMilestone {
    pub title: String,
    /// `YYYY-MM-DD`.
    #[uniffi(default)]
    pub due: Option<String>,
}

impl TryFrom<NewMilestone> for model::NewMilestone {
    type Error = ApiError;
    fn try_from(milestone: NewMilestone) -> ApiResult<Self> {
        Ok(Self {
            title: milestone.title,
            due: date_in(milestone.due)?,
        })
    }
}

/// Input of "add a check-in".
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct NewCheckIn {
    pub at: SystemTime,
    /// 1 (struggling) to 5 (thriving).
    pub rating: u8,
    #[uniffi(default)]
    pub reflection: String,
}

impl From<NewCheckIn> for model::NewCheckIn {
    fn from(check_in: NewCheckIn) -> Self {
        Self {
            at: instant_in(check_in.at),
            rating: check_in.rating,
            reflection: check_in.reflection,
        }
    }
}

// ---- sessions ----

/// The log of one coaching session.
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct SessionLog {
    pub id: String,
    pub schema_version: u64,
    pub plan: String,
    pub coach: String,
    pub mentee: String,
    pub start: SystemTime,
    pub duration_minutes: u32,
    pub mode: SessionMode,
    pub topics: Vec<String>,
    /// Collaborative notes, merged character by character.
    pub notes: String,
    /// The mentee's mood at check-in, 1 to 5.
    pub mood: Option<u8>,
    /// In creation order.
    pub action_items: Vec<ActionItem>,
    /// Goal ids.
    pub goals_discussed: Vec<String>,
    /// `YYYY-MM-DD`.
    pub follow_up: Option<String>,
}

impl From<model::SessionLog> for SessionLog {
    fn from(session: model::SessionLog) -> Self {
        Self {
            id: session.id.to_string(),
            schema_version: session.schema_version,
            plan: session.plan.to_string(),
            coach: session.coach.to_string(),
            mentee: session.mentee.to_string(),
            start: instant_out(session.start),
            duration_minutes: session.duration_minutes,
            mode: session.mode.into(),
            topics: session.topics,
            notes: session.notes,
            mood: session.mood,
            action_items: session
                .action_items
                .into_iter()
                .map(ActionItem::from)
                .collect(),
            goals_discussed: strings(&session.goals_discussed),
            follow_up: date_out(session.follow_up),
        }
    }
}

#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct ActionItem {
    pub id: String,
    pub text: String,
    pub owner: String,
    /// `YYYY-MM-DD`.
    pub due: Option<String>,
    pub done: bool,
}

impl From<model::ActionItem> for ActionItem {
    fn from(item: model::ActionItem) -> Self {
        Self {
            id: item.id.to_string(),
            text: item.text,
            owner: item.owner.to_string(),
            due: date_out(item.due),
            done: item.done,
        }
    }
}

/// Input of "log a session": everything a coach records, possibly offline, in one call.
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct NewSession {
    pub plan: String,
    pub coach: String,
    pub mentee: String,
    pub start: SystemTime,
    pub duration_minutes: u32,
    pub mode: SessionMode,
    #[uniffi(default)]
    pub topics: Vec<String>,
    #[uniffi(default)]
    pub notes: String,
    #[uniffi(default)]
    pub mood: Option<u8>,
    #[uniffi(default)]
    pub action_items: Vec<NewActionItem>,
    /// Goal ids.
    #[uniffi(default)]
    pub goals_discussed: Vec<String>,
    /// `YYYY-MM-DD`.
    #[uniffi(default)]
    pub follow_up: Option<String>,
}

impl TryFrom<NewSession> for model::NewSession {
    type Error = ApiError;
    fn try_from(session: NewSession) -> ApiResult<Self> {
        Ok(Self {
            plan: plan_id(&session.plan)?,
            coach: session.coach.into(),
            mentee: session.mentee.into(),
            start: instant_in(session.start),
            duration_minutes: session.duration_minutes,
            mode: session.mode.into(),
            topics: session.topics,
            notes: session.notes,
            mood: session.mood,
            action_items: session
                .action_items
                .into_iter()
                .map(model::NewActionItem::try_from)
                .collect::<ApiResult<_>>()?,
            goals_discussed: session
                .goals_discussed
                .into_iter()
                .map(GoalId::from)
                .collect(),
            follow_up: date_in(session.follow_up)?,
        })
    }
}

/// Input of "add an action item".
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct NewActionItem {
    pub text: String,
    pub owner: String,
    /// `YYYY-MM-DD`.
    #[uniffi(default)]
    pub due: Option<String>,
}

impl TryFrom<NewActionItem> for model::NewActionItem {
    type Error = ApiError;
    fn try_from(item: NewActionItem) -> ApiResult<Self> {
        Ok(Self {
            text: item.text,
            owner: item.owner.into(),
            due: date_in(item.due)?,
        })
    }
}

// ---- private notes and directories ----

/// A coach's private notes on a mentee: readable by that coach and the program's coordinators.
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct PrivateNotes {
    pub id: String,
    pub schema_version: u64,
    pub coach: String,
    pub mentee: String,
    pub plan: String,
    pub text: String,
}

impl From<model::PrivateNotes> for PrivateNotes {
    fn from(notes: model::PrivateNotes) -> Self {
        Self {
            id: notes.id.to_string(),
            schema_version: notes.schema_version,
            coach: notes.coach.to_string(),
            mentee: notes.mentee.to_string(),
            plan: notes.plan.to_string(),
            text: notes.text,
        }
    }
}

/// Input of "create private notes".
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct NewNotes {
    pub coach: String,
    pub mentee: String,
    pub plan: String,
    #[uniffi(default)]
    pub text: String,
}

impl TryFrom<NewNotes> for model::NewNotes {
    type Error = ApiError;
    fn try_from(notes: NewNotes) -> ApiResult<Self> {
        Ok(Self {
            coach: notes.coach.into(),
            mentee: notes.mentee.into(),
            plan: plan_id(&notes.plan)?,
            text: notes.text,
        })
    }
}

/// The list of documents belonging to one pairing, so a new device can discover what to fetch.
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct Directory {
    pub id: String,
    pub schema_version: u64,
    pub program: String,
    pub coach: String,
    pub mentee: String,
    pub entries: Vec<DirectoryEntry>,
}

impl From<model::Directory> for Directory {
    fn from(directory: model::Directory) -> Self {
        Self {
            id: directory.id.to_string(),
            schema_version: directory.schema_version,
            program: directory.program,
            coach: directory.coach.to_string(),
            mentee: directory.mentee.to_string(),
            entries: directory
                .entries
                .into_iter()
                .map(DirectoryEntry::from)
                .collect(),
        }
    }
}

#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct DirectoryEntry {
    pub document: String,
    pub kind: DocKind,
    pub title: String,
}

impl From<model::DirectoryEntry> for DirectoryEntry {
    fn from(entry: model::DirectoryEntry) -> Self {
        Self {
            document: entry.document.to_string(),
            kind: entry.kind.into(),
            title: entry.title,
        }
    }
}

impl TryFrom<DirectoryEntry> for model::DirectoryEntry {
    type Error = ApiError;
    fn try_from(entry: DirectoryEntry) -> ApiResult<Self> {
        Ok(Self {
            document: document_id(&entry.document)?,
            kind: entry.kind.into(),
            title: entry.title,
        })
    }
}

/// Input of "create a directory".
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct NewDirectory {
    pub program: String,
    pub coach: String,
    pub mentee: String,
}

impl From<NewDirectory> for model::NewDirectory {
    fn from(directory: NewDirectory) -> Self {
        Self {
            program: directory.program,
            coach: directory.coach.into(),
            mentee: directory.mentee.into(),
        }
    }
}

/// A document stored by `Engine::import_document`.
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct ImportedDocument {
    pub id: String,
    pub kind: DocKind,
}

// ---- conflicts and history ----

/// Concurrent writes of one field that Automerge kept side by side, for the app to show and let a
/// person choose.
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct Conflict {
    /// Where the field is, as keys from the document root, e.g. `["goals", "<id>", "targetDate"]`.
    pub path: Vec<String>,
    /// Every candidate, the value currently shown first.
    pub values: Vec<ConflictValue>,
}

impl From<model::Conflict> for Conflict {
    fn from(conflict: model::Conflict) -> Self {
        Self {
            path: conflict.path,
            values: conflict
                .values
                .into_iter()
                .map(ConflictValue::from)
                .collect(),
        }
    }
}

#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct ConflictValue {
    /// The value as text (dates as `YYYY-MM-DD`, numbers in decimal).
    pub value: String,
    pub author: Option<String>,
    pub device: Option<String>,
    pub at: Option<SystemTime>,
}

impl From<model::ConflictValue> for ConflictValue {
    fn from(value: model::ConflictValue) -> Self {
        Self {
            value: value.value,
            author: value.author.map(|user| user.to_string()),
            device: value.device.map(|device| device.to_string()),
            at: value.at.map(instant_out),
        }
    }
}

/// One change in a document's history.
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct HistoryEntry {
    /// The Automerge change hash, hex.
    pub hash: String,
    pub author: Option<String>,
    pub device: Option<String>,
    pub at: SystemTime,
    /// One line saying what the change did, such as `completed milestone "Draft essay"`.
    pub description: String,
}

impl From<model::HistoryEntry> for HistoryEntry {
    fn from(entry: model::HistoryEntry) -> Self {
        Self {
            hash: entry.hash,
            author: entry.author.map(|user| user.to_string()),
            device: entry.device.map(|device| device.to_string()),
            at: instant_out(entry.at),
            description: entry.description,
        }
    }
}

// ---- query rows ----

/// A plan as listed.
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct PlanSummary {
    pub id: String,
    pub mentee: String,
    pub coaches: Vec<String>,
    pub program: String,
    pub term: String,
}

impl From<store::PlanRow> for PlanSummary {
    fn from(row: store::PlanRow) -> Self {
        Self {
            id: row.id.to_string(),
            mentee: row.mentee.to_string(),
            coaches: strings(&row.coaches),
            program: row.program,
            term: row.term,
        }
    }
}

/// A goal as listed.
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct GoalSummary {
    pub plan: String,
    pub id: String,
    pub title: String,
    pub category: String,
    pub status: GoalStatus,
    pub progress: u8,
    pub target_date: Option<String>,
    pub created_at: SystemTime,
}

impl From<store::GoalRow> for GoalSummary {
    fn from(row: store::GoalRow) -> Self {
        Self {
            plan: row.plan.to_string(),
            id: row.id.to_string(),
            title: row.title,
            category: row.category,
            status: row.status.into(),
            progress: row.progress,
            target_date: date_out(row.target_date),
            created_at: instant_out(row.created_at),
        }
    }
}

/// A milestone as listed by "milestones due".
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct MilestoneDue {
    pub plan: String,
    pub mentee: String,
    pub goal: String,
    pub goal_title: String,
    pub id: String,
    pub title: String,
    pub due: Option<String>,
    pub done: bool,
}

impl From<store::MilestoneRow> for MilestoneDue {
    fn from(row: store::MilestoneRow) -> Self {
        Self {
            plan: row.plan.to_string(),
            mentee: row.mentee.to_string(),
            goal: row.goal.to_string(),
            goal_title: row.goal_title,
            id: row.id.to_string(),
            title: row.title,
            due: date_out(row.due),
            done: row.done,
        }
    }
}

/// A check-in as listed.
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct CheckInSummary {
    pub plan: String,
    pub mentee: String,
    pub id: String,
    pub at: SystemTime,
    pub rating: u8,
    pub reflection: String,
    pub by: String,
}

impl From<store::CheckInRow> for CheckInSummary {
    fn from(row: store::CheckInRow) -> Self {
        Self {
            plan: row.plan.to_string(),
            mentee: row.mentee.to_string(),
            id: row.id.to_string(),
            at: instant_out(row.at),
            rating: row.rating,
            reflection: row.reflection,
            by: row.by.to_string(),
        }
    }
}

/// A session as listed.
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct SessionSummary {
    pub id: String,
    pub plan: String,
    pub coach: String,
    pub mentee: String,
    pub start: SystemTime,
    pub duration_minutes: u32,
    pub mode: SessionMode,
    pub mood: Option<u8>,
    pub follow_up: Option<String>,
}

impl From<store::SessionRow> for SessionSummary {
    fn from(row: store::SessionRow) -> Self {
        Self {
            id: row.id.to_string(),
            plan: row.plan.to_string(),
            coach: row.coach.to_string(),
            mentee: row.mentee.to_string(),
            start: instant_out(row.start),
            duration_minutes: row.duration_minutes,
            mode: row.mode.into(),
            mood: row.mood,
            follow_up: date_out(row.follow_up),
        }
    }
}

/// An open action item as listed.
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct ActionItemSummary {
    pub session: String,
    pub session_start: SystemTime,
    pub mentee: String,
    pub id: String,
    pub text: String,
    pub owner: String,
    pub due: Option<String>,
    pub done: bool,
}

impl From<store::ActionItemRow> for ActionItemSummary {
    fn from(row: store::ActionItemRow) -> Self {
        Self {
            session: row.session.to_string(),
            session_start: instant_out(row.session_start),
            mentee: row.mentee.to_string(),
            id: row.id.to_string(),
            text: row.text,
            owner: row.owner.to_string(),
            due: date_out(row.due),
            done: row.done,
        }
    }
}

/// A plan whose pair has not met recently.
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct StalePlan {
    pub plan: PlanSummary,
    /// The start of the plan's latest session, or `null` if it never had one.
    pub last_session: Option<SystemTime>,
}

impl From<store::StalePlan> for StalePlan {
    fn from(stale: store::StalePlan) -> Self {
        Self {
            plan: stale.plan.into(),
            last_session: stale.last_session.map(instant_out),
        }
    }
}

/// "Milestones due between two dates", e.g. this week: `since` inclusive, `until` exclusive.
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct MilestonesDueQuery {
    /// `YYYY-MM-DD`, inclusive.
    pub since: String,
    /// `YYYY-MM-DD`, exclusive.
    pub until: String,
    /// Only this mentee's plans; `null` for every plan on the device.
    #[uniffi(default)]
    pub mentee: Option<String>,
    /// Also list milestones already ticked off.
    #[uniffi(default)]
    pub include_done: bool,
}

impl TryFrom<MilestonesDueQuery> for projection::MilestonesDue {
    type Error = ApiError;
    fn try_from(query: MilestonesDueQuery) -> ApiResult<Self> {
        let required = |text: String| {
            date_in(Some(text))?.ok_or_else(|| ApiError::invalid("a date is required"))
        };
        Ok(Self {
            from: required(query.since)?,
            until: required(query.until)?,
            mentee: query.mentee.map(UserId::from),
            include_done: query.include_done,
        })
    }
}

/// "Sessions that started between two instants", e.g. this month: `since` inclusive, `until`
/// exclusive. (Not `from`, a keyword in Python.)
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct SessionsBetweenQuery {
    pub since: SystemTime,
    pub until: SystemTime,
    #[uniffi(default)]
    pub coach: Option<String>,
    #[uniffi(default)]
    pub mentee: Option<String>,
}

impl From<SessionsBetweenQuery> for projection::SessionsBetween {
    fn from(query: SessionsBetweenQuery) -> Self {
        Self {
            from: instant_in(query.since),
            until: instant_in(query.until),
            coach: query.coach.map(UserId::from),
            mentee: query.mentee.map(UserId::from),
        }
    }
}
