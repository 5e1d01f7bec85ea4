//! The coaching domain as plain Rust values: what a plan, a session log, private notes and a
//! directory hold when read, and the inputs of the edits that change them.
//!
//! These types know nothing of Automerge or SQLite. The `doc` layer reads them out of documents and
//! writes edits into documents; the `store` layer projects them into query tables; the bindings
//! flatten them into records for Swift and Kotlin.

use chrono::{DateTime, NaiveDate, Utc};

use crate::ids::{
    ActionItemId, CheckInId, DeviceId, DirectoryId, DocumentId, GoalId, MilestoneId, NotesId,
    PlanId, SessionId, UserId,
};

/// The schema version this release writes into every document it creates. A reader keeps what it
/// does not know: documents from newer releases open, and their unknown fields survive edits.
pub const SCHEMA_VERSION: u64 = 1;

/// Which kind of document a document is. Stored in the document as the `type` field.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DocKind {
    Plan,
    Session,
    Notes,
    Directory,
}

impl DocKind {
    pub const ALL: [DocKind; 4] = [Self::Plan, Self::Session, Self::Notes, Self::Directory];

    /// The name written into documents and into the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plan => "plan",
            Self::Session => "session",
            Self::Notes => "notes",
            Self::Directory => "directory",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// Who made an edit: the person and the device they made it on.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Author {
    pub user: UserId,
    pub device: DeviceId,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum GoalStatus {
    NotStarted,
    InProgress,
    Completed,
    Deferred,
    Dropped,
    /// A status this release does not know, written by a newer one. The document keeps the
    /// original value; an app shows the goal without a status it can name, and cannot write this.
    Unknown,
}

impl GoalStatus {
    /// The statuses an edit may set.
    pub const ALL: [GoalStatus; 5] = [
        Self::NotStarted,
        Self::InProgress,
        Self::Completed,
        Self::Deferred,
        Self::Dropped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotStarted => "not_started",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Deferred => "deferred",
            Self::Dropped => "dropped",
            Self::Unknown => "unknown",
        }
    }

    /// The status named `text`; `None` for a name this release does not know.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .chain([Self::Unknown])
            .find(|status| status.as_str() == text)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SessionMode {
    InPerson,
    Video,
    Phone,
    Group,
    /// A mode this release does not know, written by a newer one. The document keeps the
    /// original value; it cannot be written.
    Unknown,
}

impl SessionMode {
    /// The modes a session may be logged with.
    pub const ALL: [SessionMode; 4] = [Self::InPerson, Self::Video, Self::Phone, Self::Group];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InPerson => "in_person",
            Self::Video => "video",
            Self::Phone => "phone",
            Self::Group => "group",
            Self::Unknown => "unknown",
        }
    }

    /// The mode named `text`; `None` for a name this release does not know.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .chain([Self::Unknown])
            .find(|mode| mode.as_str() == text)
    }
}

/// A mentee's Individualized Academic Success Plan.
#[derive(Clone, PartialEq, Debug)]
pub struct Plan {
    pub id: PlanId,
    pub schema_version: u64,
    pub mentee: UserId,
    pub coaches: Vec<UserId>,
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

#[derive(Clone, PartialEq, Debug)]
pub struct Goal {
    pub id: GoalId,
    pub title: String,
    pub description: String,
    pub category: String,
    pub target_date: Option<NaiveDate>,
    pub status: GoalStatus,
    /// Percent, 0 to 100.
    pub progress: u8,
    /// In due-date order, undated last.
    pub milestones: Vec<Milestone>,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, PartialEq, Debug)]
pub struct Milestone {
    pub id: MilestoneId,
    pub title: String,
    pub due: Option<NaiveDate>,
    pub done: bool,
}

/// A resource the mentee uses: a tutoring centre, a website, a study group.
#[derive(Clone, PartialEq, Debug)]
pub struct Resource {
    pub title: String,
    pub url: Option<String>,
}

/// An agreed measure of success, such as a GPA target or the share of courses completed.
#[derive(Clone, PartialEq, Debug)]
pub struct Metric {
    pub name: String,
    pub target: f64,
    pub current: Option<f64>,
}

/// A mentee's periodic check-in: how confident or well they feel, and a reflection.
#[derive(Clone, PartialEq, Debug)]
pub struct CheckIn {
    pub id: CheckInId,
    pub at: DateTime<Utc>,
    /// 1 (struggling) to 5 (thriving).
    pub rating: u8,
    pub reflection: String,
    pub by: UserId,
}

/// The log of one coaching session.
#[derive(Clone, PartialEq, Debug)]
pub struct SessionLog {
    pub id: SessionId,
    pub schema_version: u64,
    pub plan: PlanId,
    pub coach: UserId,
    pub mentee: UserId,
    pub start: DateTime<Utc>,
    pub duration_minutes: u32,
    pub mode: SessionMode,
    pub topics: Vec<String>,
    /// Collaborative notes, merged character by character.
    pub notes: String,
    /// The mentee's mood at check-in, 1 to 5.
    pub mood: Option<u8>,
    /// In creation order.
    pub action_items: Vec<ActionItem>,
    pub goals_discussed: Vec<GoalId>,
    pub follow_up: Option<NaiveDate>,
}

#[derive(Clone, PartialEq, Debug)]
pub struct ActionItem {
    pub id: ActionItemId,
    pub text: String,
    pub owner: UserId,
    pub due: Option<NaiveDate>,
    pub done: bool,
}

/// A coach's private notes on a mentee: readable by that coach and the program's coordinators.
#[derive(Clone, PartialEq, Debug)]
pub struct PrivateNotes {
    pub id: NotesId,
    pub schema_version: u64,
    pub coach: UserId,
    pub mentee: UserId,
    pub plan: PlanId,
    pub text: String,
}

/// The list of documents belonging to one pairing, so a new device can discover what to fetch.
#[derive(Clone, PartialEq, Debug)]
pub struct Directory {
    pub id: DirectoryId,
    pub schema_version: u64,
    pub program: String,
    pub coach: UserId,
    pub mentee: UserId,
    pub entries: Vec<DirectoryEntry>,
}

#[derive(Clone, PartialEq, Debug)]
pub struct DirectoryEntry {
    pub document: DocumentId,
    pub kind: DocKind,
    pub title: String,
}

/// Input of "create a plan".
#[derive(Clone, PartialEq, Debug)]
pub struct NewPlan {
    pub mentee: UserId,
    pub coaches: Vec<UserId>,
    pub program: String,
    pub term: String,
    pub strengths: Vec<String>,
    pub challenges: Vec<String>,
    pub learning_style: String,
}

/// Input of "add a goal".
#[derive(Clone, PartialEq, Debug)]
pub struct NewGoal {
    pub title: String,
    pub description: String,
    pub category: String,
    pub target_date: Option<NaiveDate>,
}

/// Input of "edit a goal": the fields to change; `None` leaves a field as it is.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct GoalEdit {
    pub title: Option<String>,
    pub description: Option<String>,
    pub category: Option<String>,
}

/// Input of "add a milestone".
#[derive(Clone, PartialEq, Debug)]
pub struct NewMilestone {
    pub title: String,
    pub due: Option<NaiveDate>,
}

/// Input of "add a check-in".
#[derive(Clone, PartialEq, Debug)]
pub struct NewCheckIn {
    pub at: DateTime<Utc>,
    pub rating: u8,
    pub reflection: String,
}

/// Input of "log a session": everything a coach records, possibly offline, in one call.
#[derive(Clone, PartialEq, Debug)]
pub struct NewSession {
    pub plan: PlanId,
    pub coach: UserId,
    pub mentee: UserId,
    pub start: DateTime<Utc>,
    pub duration_minutes: u32,
    pub mode: SessionMode,
    pub topics: Vec<String>,
    pub notes: String,
    pub mood: Option<u8>,
    pub action_items: Vec<NewActionItem>,
    pub goals_discussed: Vec<GoalId>,
    pub follow_up: Option<NaiveDate>,
}

/// Input of "create private notes".
#[derive(Clone, PartialEq, Debug)]
pub struct NewNotes {
    pub coach: UserId,
    pub mentee: UserId,
    pub plan: PlanId,
    pub text: String,
}

/// Input of "create a directory".
#[derive(Clone, PartialEq, Debug)]
pub struct NewDirectory {
    pub program: String,
    pub coach: UserId,
    pub mentee: UserId,
}

/// Input of "add an action item".
#[derive(Clone, PartialEq, Debug)]
pub struct NewActionItem {
    pub text: String,
    pub owner: UserId,
    pub due: Option<NaiveDate>,
}

/// Concurrent writes of one scalar field that Automerge kept side by side. The app shows them and
/// lets a person choose; [`Conflict::values`] lists every candidate, the winner first.
#[derive(Clone, PartialEq, Debug)]
pub struct Conflict {
    /// Where the field is, as a path of keys from the document root, e.g. `goals/<id>/targetDate`.
    pub path: Vec<String>,
    pub values: Vec<ConflictValue>,
}

#[derive(Clone, PartialEq, Debug)]
pub struct ConflictValue {
    /// The value as text (dates as `YYYY-MM-DD`, numbers in decimal).
    pub value: String,
    /// Who wrote it, when the change that wrote it names its author.
    pub author: Option<UserId>,
    pub device: Option<DeviceId>,
    pub at: Option<DateTime<Utc>>,
}

/// One change in a document's history.
#[derive(Clone, PartialEq, Debug)]
pub struct HistoryEntry {
    /// The Automerge change hash, hex.
    pub hash: String,
    pub author: Option<UserId>,
    pub device: Option<DeviceId>,
    pub at: DateTime<Utc>,
    /// One line saying what the change did, such as `completed milestone "Draft essay"`.
    pub description: String,
}
