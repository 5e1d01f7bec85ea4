//! The query projection: plans, goals, milestones, check-ins, sessions and action items as SQL rows,
//! so the app's lists never load an Automerge document.
//!
//! The rows are derived data. Each write of a document replaces that document's rows (delete, then
//! insert) in the same transaction as its chunk, so the projection always matches the stored
//! chunks. Ranges are half-open, `from <= x < until`, so consecutive weeks never overlap.

use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::types::Type;
use rusqlite::{Connection, Row, params};

use super::Store;
use crate::error::{Error, Result};
use crate::ids::{
    ActionItemId, CheckInId, DocumentId, GoalId, MilestoneId, PlanId, SessionId, UserId,
};
use crate::model::{DocKind, GoalStatus, Plan, SessionLog, SessionMode};

/// What the query tables should say about a document after a write.
#[derive(Clone, Copy, Debug)]
pub enum Projection<'a> {
    Plan(&'a Plan),
    Session(&'a SessionLog),
    /// Private notes have no query rows: they stay inside their document.
    Notes,
    /// Directories have no query rows.
    Directory,
}

impl Projection<'_> {
    pub fn kind(&self) -> DocKind {
        match self {
            Self::Plan(_) => DocKind::Plan,
            Self::Session(_) => DocKind::Session,
            Self::Notes => DocKind::Notes,
            Self::Directory => DocKind::Directory,
        }
    }
}

/// A plan as listed: who it is for and who coaches.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PlanRow {
    pub id: PlanId,
    pub mentee: UserId,
    /// In name order.
    pub coaches: Vec<UserId>,
    pub program: String,
    pub term: String,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct GoalRow {
    pub plan: PlanId,
    pub id: GoalId,
    pub title: String,
    pub category: String,
    pub status: GoalStatus,
    pub progress: u8,
    pub target_date: Option<NaiveDate>,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MilestoneRow {
    pub plan: PlanId,
    pub mentee: UserId,
    pub goal: GoalId,
    pub goal_title: String,
    pub id: MilestoneId,
    pub title: String,
    pub due: Option<NaiveDate>,
    pub done: bool,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CheckInRow {
    pub plan: PlanId,
    pub mentee: UserId,
    pub id: CheckInId,
    pub at: DateTime<Utc>,
    pub rating: u8,
    pub reflection: String,
    pub by: UserId,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SessionRow {
    pub id: SessionId,
    pub plan: PlanId,
    pub coach: UserId,
    pub mentee: UserId,
    pub start: DateTime<Utc>,
    pub duration_minutes: u32,
    pub mode: SessionMode,
    pub mood: Option<u8>,
    pub follow_up: Option<NaiveDate>,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ActionItemRow {
    pub session: SessionId,
    pub session_start: DateTime<Utc>,
    pub mentee: UserId,
    pub id: ActionItemId,
    pub text: String,
    pub owner: UserId,
    pub due: Option<NaiveDate>,
    pub done: bool,
}

/// A plan whose pair has not met recently: the coordinator's "no session in 14 days" list.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StalePlan {
    pub plan: PlanRow,
    /// The start of the plan's latest session, or `None` if it never had one.
    pub last_session: Option<DateTime<Utc>>,
}

/// "Milestones due between two dates", e.g. this week.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MilestonesDue {
    pub from: NaiveDate,
    /// Exclusive.
    pub until: NaiveDate,
    /// Only this mentee's plans; `None` for every plan on the device.
    pub mentee: Option<UserId>,
    /// Also list milestones already ticked off.
    pub include_done: bool,
}

/// "Sessions between two instants", e.g. this month, optionally of one coach or mentee.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SessionsBetween {
    pub from: DateTime<Utc>,
    /// Exclusive.
    pub until: DateTime<Utc>,
    pub coach: Option<UserId>,
    pub mentee: Option<UserId>,
}

impl Store {
    /// One plan's row, or `None` when the projection has no such plan.
    pub fn plan_row(&self, plan: PlanId) -> Result<Option<PlanRow>> {
        let rows = self.plan_rows(
            "SELECT id, mentee, program, term FROM plans WHERE id = ?1",
            [&plan.0.as_bytes()[..]],
        )?;
        Ok(rows.into_iter().next())
    }

    /// The plans of a mentee, by program and term.
    pub fn plans_of_mentee(&self, mentee: &UserId) -> Result<Vec<PlanRow>> {
        self.plan_rows(
            "SELECT id, mentee, program, term FROM plans WHERE mentee = ?1
             ORDER BY program, term, id",
            [mentee.as_str()],
        )
    }

    /// The plans a coach is assigned to, by mentee.
    pub fn plans_of_coach(&self, coach: &UserId) -> Result<Vec<PlanRow>> {
        self.plan_rows(
            "SELECT p.id, p.mentee, p.program, p.term FROM plans p
             JOIN plan_coaches c ON c.plan = p.id
             WHERE c.coach = ?1
             ORDER BY p.mentee, p.program, p.term, p.id",
            [coach.as_str()],
        )
    }

    /// The goals of a plan, in the plan's order (creation order).
    pub fn goals_of_plan(&self, plan: PlanId) -> Result<Vec<GoalRow>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT plan, id, title, category, status, progress, target_date, created_at
             FROM goals WHERE plan = ?1 ORDER BY position",
        )?;
        let rows = statement.query_map([&plan.0.as_bytes()[..]], |row| {
            Ok(GoalRow {
                plan: PlanId(document_id(row, 0)?),
                id: GoalId::new(row.get::<_, String>(1)?),
                title: row.get(2)?,
                category: row.get(3)?,
                status: parsed(row, 4, GoalStatus::parse)?,
                progress: row.get(5)?,
                target_date: date(row, 6)?,
                created_at: instant(row, 7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Milestones due in a date range, by due date.
    pub fn milestones_due(&self, query: &MilestonesDue) -> Result<Vec<MilestoneRow>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT m.plan, p.mentee, m.goal, g.title, m.id, m.title, m.due, m.done
             FROM milestones m
             JOIN goals g ON g.plan = m.plan AND g.id = m.goal
             JOIN plans p ON p.id = m.plan
             WHERE m.due >= ?1 AND m.due < ?2
               AND (?3 IS NULL OR p.mentee = ?3)
               AND (?4 OR m.done = 0)
             ORDER BY m.due, p.mentee, g.position, m.position",
        )?;
        let rows = statement.query_map(
            params![
                query.from.to_string(),
                query.until.to_string(),
                query.mentee.as_ref().map(UserId::as_str),
                query.include_done,
            ],
            |row| {
                Ok(MilestoneRow {
                    plan: PlanId(document_id(row, 0)?),
                    mentee: UserId::new(row.get::<_, String>(1)?),
                    goal: GoalId::new(row.get::<_, String>(2)?),
                    goal_title: row.get(3)?,
                    id: MilestoneId::new(row.get::<_, String>(4)?),
                    title: row.get(5)?,
                    due: date(row, 6)?,
                    done: row.get(7)?,
                })
            },
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Sessions starting in a time range, earliest first.
    pub fn sessions_between(&self, query: &SessionsBetween) -> Result<Vec<SessionRow>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT id, plan, coach, mentee, start, duration_minutes, mode, mood, follow_up
             FROM sessions
             WHERE start >= ?1 AND start < ?2
               AND (?3 IS NULL OR coach = ?3)
               AND (?4 IS NULL OR mentee = ?4)
             ORDER BY start, id",
        )?;
        let rows = statement.query_map(
            params![
                query.from.timestamp_millis(),
                query.until.timestamp_millis(),
                query.coach.as_ref().map(UserId::as_str),
                query.mentee.as_ref().map(UserId::as_str),
            ],
            session_row,
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The sessions of a plan, latest first.
    pub fn sessions_of_plan(&self, plan: PlanId) -> Result<Vec<SessionRow>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT id, plan, coach, mentee, start, duration_minutes, mode, mood, follow_up
             FROM sessions WHERE plan = ?1 ORDER BY start DESC, id",
        )?;
        let rows = statement.query_map([&plan.0.as_bytes()[..]], session_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Action items not yet done that `owner` is responsible for, by due date (undated last).
    pub fn open_action_items_owned_by(&self, owner: &UserId) -> Result<Vec<ActionItemRow>> {
        self.action_item_rows(
            "SELECT a.session, s.start, s.mentee, a.id, a.text, a.owner, a.due, a.done
             FROM action_items a JOIN sessions s ON s.id = a.session
             WHERE a.owner = ?1 AND a.done = 0
             ORDER BY a.due IS NULL, a.due, s.start, a.position",
            owner,
        )
    }

    /// Action items not yet done from the sessions of a mentee, whoever owns them.
    pub fn open_action_items_of_mentee(&self, mentee: &UserId) -> Result<Vec<ActionItemRow>> {
        self.action_item_rows(
            "SELECT a.session, s.start, s.mentee, a.id, a.text, a.owner, a.due, a.done
             FROM action_items a JOIN sessions s ON s.id = a.session
             WHERE s.mentee = ?1 AND a.done = 0
             ORDER BY a.due IS NULL, a.due, s.start, a.position",
            mentee,
        )
    }

    /// The latest check-ins, newest first: of one plan, or of every plan on the device.
    pub fn latest_check_ins(&self, plan: Option<PlanId>, limit: u32) -> Result<Vec<CheckInRow>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT c.plan, p.mentee, c.id, c.at, c.rating, c.reflection, c.by_user
             FROM check_ins c JOIN plans p ON p.id = c.plan
             WHERE ?1 IS NULL OR c.plan = ?1
             ORDER BY c.at DESC, c.id
             LIMIT ?2",
        )?;
        let plan = plan.map(|plan| plan.0.as_bytes().to_vec());
        let rows = statement.query_map(params![plan, limit], |row| {
            Ok(CheckInRow {
                plan: PlanId(document_id(row, 0)?),
                mentee: UserId::new(row.get::<_, String>(1)?),
                id: CheckInId::new(row.get::<_, String>(2)?),
                at: instant(row, 3)?,
                rating: row.get(4)?,
                reflection: row.get(5)?,
                by: UserId::new(row.get::<_, String>(6)?),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Plans whose latest session started before `since`, or that never had one: the pairs a
    /// coordinator should follow up. Never-met pairs first, then the longest silent.
    pub fn plans_without_session_since(&self, since: DateTime<Utc>) -> Result<Vec<StalePlan>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT p.id, p.mentee, p.program, p.term, max(s.start) AS last
             FROM plans p LEFT JOIN sessions s ON s.plan = p.id
             GROUP BY p.id
             HAVING last IS NULL OR last < ?1
             ORDER BY last IS NOT NULL, last, p.mentee, p.id",
        )?;
        let rows = statement.query_map([since.timestamp_millis()], |row| {
            let last: Option<i64> = row.get(4)?;
            Ok((
                plan_row_without_coaches(row)?,
                last.map(|ms| millis_to_instant(4, ms)).transpose()?,
            ))
        })?;
        let mut stale = Vec::new();
        for row in rows {
            let (mut plan, last_session) = row?;
            plan.coaches = self.coaches_of(plan.id)?;
            stale.push(StalePlan { plan, last_session });
        }
        Ok(stale)
    }

    fn plan_rows(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<PlanRow>> {
        let mut statement = self.conn.prepare_cached(sql)?;
        let rows = statement.query_map(params, plan_row_without_coaches)?;
        let mut plans = Vec::new();
        for row in rows {
            let mut plan = row?;
            plan.coaches = self.coaches_of(plan.id)?;
            plans.push(plan);
        }
        Ok(plans)
    }

    fn coaches_of(&self, plan: PlanId) -> Result<Vec<UserId>> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT coach FROM plan_coaches WHERE plan = ?1 ORDER BY coach")?;
        let rows = statement.query_map([&plan.0.as_bytes()[..]], |row| {
            Ok(UserId::new(row.get::<_, String>(0)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn action_item_rows(&self, sql: &str, person: &UserId) -> Result<Vec<ActionItemRow>> {
        let mut statement = self.conn.prepare_cached(sql)?;
        let rows = statement.query_map([person.as_str()], |row| {
            Ok(ActionItemRow {
                session: SessionId(document_id(row, 0)?),
                session_start: instant(row, 1)?,
                mentee: UserId::new(row.get::<_, String>(2)?),
                id: ActionItemId::new(row.get::<_, String>(3)?),
                text: row.get(4)?,
                owner: UserId::new(row.get::<_, String>(5)?),
                due: date(row, 6)?,
                done: row.get(7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

/// Replaces the projection rows of `document` with what `projection` says, inside the caller's
/// transaction.
pub(super) fn replace(
    tx: &Connection,
    document: DocumentId,
    projection: &Projection<'_>,
) -> Result<()> {
    match projection {
        Projection::Plan(plan) => {
            expect_id(document, plan.id.0)?;
            delete_plan(tx, document)?;
            insert_plan(tx, plan)
        }
        Projection::Session(session) => {
            expect_id(document, session.id.0)?;
            delete_session(tx, document)?;
            insert_session(tx, session)
        }
        Projection::Notes | Projection::Directory => Ok(()),
    }
}

fn expect_id(document: DocumentId, described: DocumentId) -> Result<()> {
    if document == described {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "the projection describes document {described}, not {document}"
        )))
    }
}

fn delete_plan(tx: &Connection, plan: DocumentId) -> Result<()> {
    let id = &plan.as_bytes()[..];
    // Children first, so this does not depend on cascades being enabled.
    for sql in [
        "DELETE FROM milestones WHERE plan = ?1",
        "DELETE FROM goals WHERE plan = ?1",
        "DELETE FROM check_ins WHERE plan = ?1",
        "DELETE FROM plan_coaches WHERE plan = ?1",
        "DELETE FROM plans WHERE id = ?1",
    ] {
        tx.prepare_cached(sql)?.execute([id])?;
    }
    Ok(())
}

fn insert_plan(tx: &Connection, plan: &Plan) -> Result<()> {
    let id = &plan.id.0.as_bytes()[..];
    tx.prepare_cached(
        "INSERT INTO plans (id, mentee, program, term, schema_version) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        id,
        plan.mentee.as_str(),
        plan.program,
        plan.term,
        version(plan.schema_version)
    ])?;
    let mut coach = tx.prepare_cached(
        "INSERT INTO plan_coaches (plan, coach) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
    )?;
    for name in &plan.coaches {
        coach.execute(params![id, name.as_str()])?;
    }
    let mut goal = tx.prepare_cached(
        "INSERT INTO goals
         (plan, id, position, title, category, status, progress, target_date, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let mut milestone = tx.prepare_cached(
        "INSERT INTO milestones (plan, goal, id, position, title, due, done)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for (position, g) in plan.goals.iter().enumerate() {
        goal.execute(params![
            id,
            g.id.as_str(),
            position as i64,
            g.title,
            g.category,
            g.status.as_str(),
            g.progress,
            g.target_date.map(|d| d.to_string()),
            g.created_at.timestamp_millis(),
        ])?;
        for (position, m) in g.milestones.iter().enumerate() {
            milestone.execute(params![
                id,
                g.id.as_str(),
                m.id.as_str(),
                position as i64,
                m.title,
                m.due.map(|d| d.to_string()),
                m.done,
            ])?;
        }
    }
    let mut check_in = tx.prepare_cached(
        "INSERT INTO check_ins (plan, id, at, rating, reflection, by_user)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for c in &plan.check_ins {
        check_in.execute(params![
            id,
            c.id.as_str(),
            c.at.timestamp_millis(),
            c.rating,
            c.reflection,
            c.by.as_str(),
        ])?;
    }
    Ok(())
}

fn delete_session(tx: &Connection, session: DocumentId) -> Result<()> {
    let id = &session.as_bytes()[..];
    tx.prepare_cached("DELETE FROM action_items WHERE session = ?1")?
        .execute([id])?;
    tx.prepare_cached("DELETE FROM sessions WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

fn insert_session(tx: &Connection, session: &SessionLog) -> Result<()> {
    let id = &session.id.0.as_bytes()[..];
    tx.prepare_cached(
        "INSERT INTO sessions
         (id, plan, coach, mentee, start, duration_minutes, mode, mood, follow_up, schema_version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        id,
        &session.plan.0.as_bytes()[..],
        session.coach.as_str(),
        session.mentee.as_str(),
        session.start.timestamp_millis(),
        session.duration_minutes,
        session.mode.as_str(),
        session.mood,
        session.follow_up.map(|d| d.to_string()),
        version(session.schema_version),
    ])?;
    let mut item = tx.prepare_cached(
        "INSERT INTO action_items (session, id, position, text, owner, due, done)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for (position, a) in session.action_items.iter().enumerate() {
        item.execute(params![
            id,
            a.id.as_str(),
            position as i64,
            a.text,
            a.owner.as_str(),
            a.due.map(|d| d.to_string()),
            a.done,
        ])?;
    }
    Ok(())
}

/// Schema versions are small; a value beyond `i64` (only a hostile document) is clamped.
fn version(schema_version: u64) -> i64 {
    i64::try_from(schema_version).unwrap_or(i64::MAX)
}

fn plan_row_without_coaches(row: &Row<'_>) -> rusqlite::Result<PlanRow> {
    Ok(PlanRow {
        id: PlanId(document_id(row, 0)?),
        mentee: UserId::new(row.get::<_, String>(1)?),
        coaches: Vec::new(),
        program: row.get(2)?,
        term: row.get(3)?,
    })
}

fn session_row(row: &Row<'_>) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        id: SessionId(document_id(row, 0)?),
        plan: PlanId(document_id(row, 1)?),
        coach: UserId::new(row.get::<_, String>(2)?),
        mentee: UserId::new(row.get::<_, String>(3)?),
        start: instant(row, 4)?,
        duration_minutes: row.get(5)?,
        mode: parsed(row, 6, SessionMode::parse)?,
        mood: row.get(7)?,
        follow_up: date(row, 8)?,
    })
}

// Column readers. A value the projection could not have written (only a damaged or hand-edited
// file has them) is a conversion error, which surfaces as `Error::Storage`.

fn bad_value(index: usize, column_type: Type, message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, column_type, message.into())
}

fn document_id(row: &Row<'_>, index: usize) -> rusqlite::Result<DocumentId> {
    let bytes: Vec<u8> = row.get(index)?;
    DocumentId::from_slice(&bytes).map_err(|e| bad_value(index, Type::Blob, e.to_string()))
}

fn date(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<NaiveDate>> {
    let text: Option<String> = row.get(index)?;
    text.map(|text| {
        text.parse::<NaiveDate>()
            .map_err(|e| bad_value(index, Type::Text, format!("date {text:?}: {e}")))
    })
    .transpose()
}

fn millis_to_instant(index: usize, ms: i64) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| {
        bad_value(
            index,
            Type::Integer,
            format!("instant {ms} is out of range"),
        )
    })
}

fn instant(row: &Row<'_>, index: usize) -> rusqlite::Result<DateTime<Utc>> {
    millis_to_instant(index, row.get(index)?)
}

fn parsed<T>(row: &Row<'_>, index: usize, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let text: String = row.get(index)?;
    parse(&text).ok_or_else(|| bad_value(index, Type::Text, format!("unknown value {text:?}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
