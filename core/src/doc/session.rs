//! Session-log documents: logging a whole session in one change, the edits made during and after
//! it, and reading it back as a [`SessionLog`].

use automerge::transaction::{Transactable, Transaction};
use automerge::{ObjId, ObjType, ROOT, ReadDoc};
use chrono::{DateTime, NaiveDate, Utc};

use super::codec::{ObjReader, child, date_to_string, index_of_string, timestamp};
use super::notes::read_document_ref;
use super::plan::{check_rating, non_blank, put_date};
use super::{Document, EditContext};
use crate::error::{Error, Result};
use crate::ids::{ActionItemId, GoalId, PlanId, SessionId, UserId, new_item_id};
use crate::model::{ActionItem, DocKind, NewActionItem, NewSession, SessionLog, SessionMode};

impl Document {
    /// Logs a session: every field of `session` in the document's first change, so a session
    /// recorded offline arrives whole or not at all.
    pub fn create_session(
        id: SessionId,
        ctx: &EditContext,
        session: NewSession,
    ) -> Result<Document> {
        if session.duration_minutes == 0 {
            return Err(Error::invalid("the session duration is zero minutes"));
        }
        if session.mode == SessionMode::Unknown {
            return Err(Error::invalid(
                "a session cannot be logged with an unknown mode",
            ));
        }
        if let Some(mood) = session.mood {
            check_rating("mood", mood)?;
        }
        check_follow_up(session.start, session.follow_up)?;
        for item in &session.action_items {
            non_blank(&item.text, "action item text")?;
        }
        let description = format!(
            "logged a {} session of {} with {} on {}",
            session.mode.as_str(),
            session.coach,
            session.mentee,
            session.start.date_naive()
        );
        Self::create(id.document_id(), DocKind::Session, ctx, description, |tx| {
            tx.put(ROOT, "plan", session.plan.document_id().url())?;
            tx.put(ROOT, "coach", session.coach.as_str())?;
            tx.put(ROOT, "mentee", session.mentee.as_str())?;
            tx.put(ROOT, "start", timestamp(session.start))?;
            tx.put(ROOT, "durationMinutes", i64::from(session.duration_minutes))?;
            tx.put(ROOT, "mode", session.mode.as_str())?;
            let topics = tx.put_object(ROOT, "topics", ObjType::List)?;
            for (index, topic) in session.topics.iter().enumerate() {
                tx.insert(&topics, index, topic.as_str())?;
            }
            let notes = tx.put_object(ROOT, "notes", ObjType::Text)?;
            tx.splice_text(&notes, 0, 0, &session.notes)?;
            if let Some(mood) = session.mood {
                tx.put(ROOT, "mood", i64::from(mood))?;
            }
            let items = tx.put_object(ROOT, "actionItems", ObjType::Map)?;
            for (rank, item) in session.action_items.iter().enumerate() {
                put_action_item(tx, &items, &new_item_id().into(), item, ctx.at, rank)?;
            }
            let goals = tx.put_object(ROOT, "goalsDiscussed", ObjType::List)?;
            for (index, goal) in session.goals_discussed.iter().enumerate() {
                tx.insert(&goals, index, goal.as_str())?;
            }
            put_date(tx, &ROOT, "followUp", session.follow_up)
        })
    }

    pub fn read_session(&self) -> Result<SessionLog> {
        self.expect_kind(DocKind::Session)?;
        let root = ObjReader::root(&self.doc);
        let mode_text = root.str("mode")?;
        // A mode from a newer release reads as unknown rather than failing the whole log.
        let mode = SessionMode::parse(&mode_text).unwrap_or(SessionMode::Unknown);
        let mut items = match root.opt_object("actionItems", ObjType::Map)? {
            None => Vec::new(),
            Some(map) => map
                .map_entries()?
                .into_iter()
                .map(|(id, item)| {
                    let order = (
                        item.timestamp("createdAt").ok(),
                        item.opt_u64("rank")?.unwrap_or_default(),
                    );
                    let item = ActionItem {
                        id: ActionItemId::new(id),
                        text: item.str_or_empty("text")?,
                        owner: UserId::new(item.str_or_empty("owner")?),
                        due: item.opt_date("due")?,
                        done: item.bool_or_false("done")?,
                    };
                    Ok((order, item))
                })
                .collect::<Result<Vec<_>>>()?,
        };
        items.sort_by(|(a_order, a), (b_order, b)| (a_order, &a.id).cmp(&(b_order, &b.id)));
        Ok(SessionLog {
            id: SessionId(self.id),
            schema_version: root.u64("schemaVersion")?,
            plan: PlanId(read_document_ref(&root, "plan")?),
            coach: UserId::new(root.str("coach")?),
            mentee: UserId::new(root.str("mentee")?),
            start: root.timestamp("start")?,
            duration_minutes: root.opt_small("durationMinutes")?.unwrap_or_default(),
            mode,
            topics: root.string_list("topics")?,
            notes: root.text_or_empty("notes")?,
            mood: root.opt_small("mood")?,
            action_items: items.into_iter().map(|(_, item)| item).collect(),
            goals_discussed: root
                .string_list("goalsDiscussed")?
                .into_iter()
                .map(GoalId::new)
                .collect(),
            follow_up: root.opt_date("followUp")?,
        })
    }

    /// Deletes `delete` characters at `position` of the session notes and inserts `insert`.
    pub fn splice_session_notes(
        &mut self,
        ctx: &EditContext,
        position: usize,
        delete: usize,
        insert: &str,
    ) -> Result<()> {
        self.expect_kind(DocKind::Session)?;
        self.splice_text_field(ctx, "notes", "session notes", position, delete, insert)
    }

    /// Makes the session notes read `text`, writing only the difference (Automerge's
    /// `update_text`), so a coach's and a mentee's concurrent edits both survive.
    pub fn replace_session_notes(&mut self, ctx: &EditContext, text: &str) -> Result<()> {
        self.expect_kind(DocKind::Session)?;
        self.replace_text_field(ctx, "notes", "session notes", text)
    }

    /// Adds an action item, not done. Returns its new id.
    pub fn add_action_item(
        &mut self,
        ctx: &EditContext,
        item: NewActionItem,
    ) -> Result<ActionItemId> {
        self.expect_kind(DocKind::Session)?;
        let text = non_blank(&item.text, "action item text")?;
        let items = child(&self.doc, &ROOT, "actionItems", ObjType::Map);
        let id = ActionItemId::new(new_item_id());
        self.edit(ctx, format!("added action item {text:?}"), |tx| {
            let items = match items {
                Some(items) => items,
                None => tx.put_object(ROOT, "actionItems", ObjType::Map)?,
            };
            put_action_item(tx, &items, &id, &item, ctx.at, 0)
        })?;
        Ok(id)
    }

    /// Ticks (`done = true`) or unticks an action item.
    pub fn set_action_item_done(
        &mut self,
        ctx: &EditContext,
        item: &ActionItemId,
        done: bool,
    ) -> Result<()> {
        self.expect_kind(DocKind::Session)?;
        let obj = child(&self.doc, &ROOT, "actionItems", ObjType::Map)
            .and_then(|items| child(&self.doc, &items, item.as_str(), ObjType::Map))
            .ok_or_else(|| {
                Error::not_found(format!("action item {item} is not in session {}", self.id))
            })?;
        let text = match self.doc.get(&obj, "text") {
            Ok(Some((value, _))) => value.as_str().unwrap_or_default().to_owned(),
            _ => String::new(),
        };
        let verb = if done { "ticked" } else { "unticked" };
        self.edit(ctx, format!("{verb} action item {text:?}"), |tx| {
            Ok(tx.put(&obj, "done", done)?)
        })
    }

    /// Sets or clears the follow-up date; one before the session's start date is
    /// [`Error::Invalid`].
    pub fn set_follow_up(&mut self, ctx: &EditContext, date: Option<NaiveDate>) -> Result<()> {
        self.expect_kind(DocKind::Session)?;
        let start = ObjReader::root(&self.doc).timestamp("start")?;
        check_follow_up(start, date)?;
        let description = match date {
            Some(date) => format!("set the follow-up to {date}"),
            None => "cleared the follow-up".to_owned(),
        };
        self.edit(ctx, description, |tx| put_date(tx, &ROOT, "followUp", date))
    }

    /// Sets or clears the mentee's mood, 1 to 5.
    pub fn set_mood(&mut self, ctx: &EditContext, mood: Option<u8>) -> Result<()> {
        self.expect_kind(DocKind::Session)?;
        if let Some(mood) = mood {
            check_rating("mood", mood)?;
        }
        let description = match mood {
            Some(mood) => format!("set the mood to {mood}"),
            None => "cleared the mood".to_owned(),
        };
        self.edit(ctx, description, |tx| {
            match mood {
                Some(mood) => tx.put(ROOT, "mood", i64::from(mood))?,
                None if tx.get(ROOT, "mood")?.is_some() => tx.delete(ROOT, "mood")?,
                None => {}
            }
            Ok(())
        })
    }

    /// Adds a topic; one already listed is left as it is (no change is made).
    pub fn add_topic(&mut self, ctx: &EditContext, topic: &str) -> Result<()> {
        self.expect_kind(DocKind::Session)?;
        let topic = non_blank(topic, "topic")?;
        self.append_unique(ctx, "topics", topic, format!("added topic {topic:?}"))
    }

    /// Removes a topic; [`Error::NotFound`] if it is not listed.
    pub fn remove_topic(&mut self, ctx: &EditContext, topic: &str) -> Result<()> {
        self.expect_kind(DocKind::Session)?;
        let found = child(&self.doc, &ROOT, "topics", ObjType::List)
            .and_then(|obj| index_of_string(&self.doc, &obj, topic).map(|index| (obj, index)));
        let Some((obj, index)) = found else {
            return Err(Error::not_found(format!(
                "topic {topic:?} is not in the session"
            )));
        };
        self.edit(ctx, format!("removed topic {topic:?}"), |tx| {
            Ok(tx.delete(&obj, index)?)
        })
    }

    /// Records that a goal of the plan was discussed; already recorded is no change.
    pub fn mark_goal_discussed(&mut self, ctx: &EditContext, goal: &GoalId) -> Result<()> {
        self.expect_kind(DocKind::Session)?;
        non_blank(goal.as_str(), "goal id")?;
        let description = format!("discussed goal {goal}");
        self.append_unique(ctx, "goalsDiscussed", goal.as_str(), description)
    }

    fn append_unique(
        &mut self,
        ctx: &EditContext,
        key: &str,
        value: &str,
        description: String,
    ) -> Result<()> {
        let list = child(&self.doc, &ROOT, key, ObjType::List);
        if let Some(obj) = &list
            && index_of_string(&self.doc, obj, value).is_some()
        {
            return Ok(());
        }
        self.edit(ctx, description, |tx| {
            let list = match list {
                Some(list) => list,
                None => tx.put_object(ROOT, key, ObjType::List)?,
            };
            let end = tx.length(&list);
            Ok(tx.insert(&list, end, value)?)
        })
    }
}

fn put_action_item(
    tx: &mut Transaction<'_>,
    items: &ObjId,
    id: &ActionItemId,
    item: &NewActionItem,
    at: DateTime<Utc>,
    rank: usize,
) -> Result<()> {
    let obj = tx.put_object(items, id.as_str(), ObjType::Map)?;
    tx.put(&obj, "id", id.as_str())?;
    tx.put(&obj, "text", item.text.trim())?;
    tx.put(&obj, "owner", item.owner.as_str())?;
    if let Some(due) = item.due {
        tx.put(&obj, "due", date_to_string(due))?;
    }
    tx.put(&obj, "done", false)?;
    tx.put(&obj, "createdAt", timestamp(at))?;
    tx.put(&obj, "rank", rank as i64)?;
    Ok(())
}

fn check_follow_up(start: DateTime<Utc>, follow_up: Option<NaiveDate>) -> Result<()> {
    match follow_up {
        Some(date) if date < start.date_naive() => Err(Error::invalid(format!(
            "the follow-up date {date} is before the session's start on {}",
            start.date_naive()
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::doc::testing::{
        at, coach, ctx, mentee, new_session, plan_doc, plan_id, session_doc, session_id,
    };

    fn date(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn a_logged_session_reads_back_whole_in_one_change() {
        let input = new_session(plan_id());
        let doc = Document::create_session(session_id(), &coach(), input.clone()).unwrap();
        assert_eq!(doc.history().len(), 1);
        let log = doc.read_session().unwrap();
        assert_eq!(log.plan, input.plan);
        assert_eq!((log.coach, log.mentee), (input.coach, input.mentee));
        assert_eq!(log.start, input.start);
        assert_eq!(log.duration_minutes, 45);
        assert_eq!(log.mode, SessionMode::Video);
        assert_eq!(log.topics, input.topics);
        assert_eq!(log.notes, input.notes);
        assert_eq!(log.mood, Some(3));
        let texts: Vec<_> = log.action_items.iter().map(|i| i.text.as_str()).collect();
        assert_eq!(
            texts,
            ["Book a tutor", "Send practice problems"],
            "in the order given"
        );
        assert_eq!(log.goals_discussed, input.goals_discussed);
        assert_eq!(log.follow_up, None);
    }

    #[test]
    fn session_edits_are_recorded() {
        let mut doc = session_doc();
        let item = doc
            .add_action_item(
                &ctx("carl", 2, 90),
                NewActionItem {
                    text: "Email advisor".into(),
                    owner: UserId::new("maya"),
                    due: Some(date("2025-03-08")),
                },
            )
            .unwrap();
        doc.set_action_item_done(&mentee(), &item, true).unwrap();
        doc.set_follow_up(&coach(), Some(date("2025-03-15")))
            .unwrap();
        doc.set_mood(&coach(), Some(5)).unwrap();
        doc.add_topic(&coach(), "exam stress").unwrap();
        doc.remove_topic(&coach(), "study plan").unwrap();
        doc.mark_goal_discussed(&coach(), &GoalId::new("g2"))
            .unwrap();
        doc.splice_session_notes(&coach(), 0, 6, "Discussed")
            .unwrap();

        let log = doc.read_session().unwrap();
        let added = log.action_items.last().unwrap();
        assert_eq!(
            (added.id.clone(), added.done, added.due),
            (item.clone(), true, Some(date("2025-03-08")))
        );
        assert_eq!(log.follow_up, Some(date("2025-03-15")));
        assert_eq!(log.mood, Some(5));
        assert_eq!(log.topics, ["exam stress"]);
        assert_eq!(log.goals_discussed, [GoalId::new("g1"), GoalId::new("g2")]);
        assert_eq!(log.notes, "Discussed about the calculus exam.");

        doc.set_action_item_done(&mentee(), &item, false).unwrap();
        doc.set_mood(&coach(), None).unwrap();
        doc.set_follow_up(&coach(), None).unwrap();
        let log = doc.read_session().unwrap();
        assert!(!log.action_items.last().unwrap().done);
        assert_eq!((log.mood, log.follow_up), (None, None));
    }

    #[test]
    fn refused_session_edits_leave_the_document_unchanged() {
        let mut doc = session_doc();
        let heads = doc.heads();
        let c = coach();
        let refusals: Vec<(Result<()>, &str)> = vec![
            (
                doc.set_follow_up(&c, Some(date("2025-02-28"))),
                "before the session",
            ),
            (doc.set_mood(&c, Some(0)), "mood"),
            (doc.set_mood(&c, Some(6)), "mood"),
            (
                doc.set_action_item_done(&c, &ActionItemId::new("nope"), true),
                "nope",
            ),
            (
                doc.add_action_item(
                    &c,
                    NewActionItem {
                        text: " ".into(),
                        owner: UserId::new("maya"),
                        due: None,
                    },
                )
                .map(drop),
                "action item text",
            ),
            (doc.remove_topic(&c, "astronomy"), "astronomy"),
            (doc.add_topic(&c, ""), "topic"),
            (doc.splice_session_notes(&c, 1000, 0, "x"), "session notes"),
            (doc.splice_session_notes(&c, 0, 1000, ""), "session notes"),
            (doc.set_term(&c, "Fall"), "not a plan"),
        ];
        for (result, named) in refusals {
            let message = result.expect_err("the edit should be refused").to_string();
            assert!(message.contains(named), "{message} should name {named}");
            assert_eq!(doc.heads(), heads, "{message} changed the document");
        }
    }

    #[test]
    fn sessions_that_cannot_have_happened_are_refused() {
        let mut zero = new_session(plan_id());
        zero.duration_minutes = 0;
        let error = Document::create_session(session_id(), &coach(), zero).unwrap_err();
        assert!(error.to_string().contains("duration"), "{error}");

        let mut early = new_session(plan_id());
        early.follow_up = Some(at(-24 * 60).date_naive());
        let error = Document::create_session(session_id(), &coach(), early).unwrap_err();
        assert!(error.to_string().contains("follow-up"), "{error}");

        let mut moody = new_session(plan_id());
        moody.mood = Some(9);
        assert!(matches!(
            Document::create_session(session_id(), &coach(), moody),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn concurrent_edits_of_the_same_notes_merge_character_by_character() {
        let doc = session_doc();
        let mut coach_copy = doc.fork();
        let mut mentee_copy = doc.fork();
        let original = "Talked about the calculus exam.";
        coach_copy
            .splice_session_notes(&coach(), 0, 0, "Coach: ")
            .unwrap();
        // The mentee rewrites the end with a whole-text replacement; it must diff, not overwrite.
        mentee_copy
            .replace_session_notes(
                &mentee(),
                &original.replace("exam.", "exam and the lab report."),
            )
            .unwrap();
        coach_copy.merge(&mut mentee_copy).unwrap();
        mentee_copy.merge(&mut coach_copy).unwrap();
        let expected = "Coach: Talked about the calculus exam and the lab report.";
        assert_eq!(coach_copy.read_session().unwrap().notes, expected);
        assert_eq!(mentee_copy.read_session().unwrap().notes, expected);
        assert!(coach_copy.conflicts().unwrap().is_empty());
    }

    #[test]
    fn replacing_notes_with_the_same_text_changes_nothing() {
        let mut doc = session_doc();
        let heads = doc.heads();
        doc.replace_session_notes(&coach(), "Talked about the calculus exam.")
            .unwrap();
        assert_eq!(doc.heads(), heads);
        let _ = plan_doc();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod convergence {
    use proptest::prelude::*;

    use super::*;
    use crate::doc::testing::{ctx, session_doc};

    #[derive(Clone, Debug)]
    enum Step {
        Splice {
            replica: usize,
            at: usize,
            delete: usize,
            insert: String,
        },
        Replace {
            replica: usize,
            text: String,
        },
        Tick {
            replica: usize,
            done: bool,
        },
        Merge {
            from: usize,
            into: usize,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        let r = 0..3_usize;
        prop_oneof![
            (r.clone(), 0..64_usize, 0..4_usize, "[a-zé ]{0,6}").prop_map(
                |(replica, at, delete, insert)| Step::Splice {
                    replica,
                    at,
                    delete,
                    insert
                }
            ),
            (r.clone(), "[a-z ]{0,20}").prop_map(|(replica, text)| Step::Replace { replica, text }),
            (r.clone(), any::<bool>()).prop_map(|(replica, done)| Step::Tick { replica, done }),
            (r.clone(), r).prop_map(|(from, into)| Step::Merge { from, into }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Concurrent note edits (splices and whole-text replacements) and ticks converge.
        #[test]
        fn session_notes_converge(steps in proptest::collection::vec(step(), 0..30)) {
            let origin = session_doc();
            let mut replicas: Vec<Document> = (0..3).map(|_| origin.clone()).collect();
            for (minute, step) in steps.iter().enumerate() {
                match step {
                    Step::Splice { replica, at, delete, insert } => {
                        let c = ctx("u", *replica as u8 + 1, minute as i64);
                        let length = replicas[*replica].read_session().unwrap().notes.chars().count();
                        let at = at % (length + 1);
                        let delete = (*delete).min(length - at);
                        replicas[*replica].splice_session_notes(&c, at, delete, insert).unwrap();
                    }
                    Step::Replace { replica, text } => {
                        let c = ctx("u", *replica as u8 + 1, minute as i64);
                        replicas[*replica].replace_session_notes(&c, text).unwrap();
                    }
                    Step::Tick { replica, done } => {
                        let c = ctx("u", *replica as u8 + 1, minute as i64);
                        let item = replicas[*replica].read_session().unwrap().action_items[0].id.clone();
                        replicas[*replica].set_action_item_done(&c, &item, *done).unwrap();
                    }
                    Step::Merge { from, into } => {
                        if from != into {
                            let mut source = replicas[*from].clone();
                            replicas[*into].merge(&mut source).unwrap();
                        }
                    }
                }
            }
            for (from, into) in [(1, 0), (2, 0), (0, 1), (0, 2)] {
                let mut source = replicas[from].clone();
                replicas[into].merge(&mut source).unwrap();
            }
            let expected = replicas[0].read_session().unwrap();
            for replica in &replicas[1..] {
                prop_assert_eq!(replica.heads(), replicas[0].heads());
                prop_assert_eq!(&replica.read_session().unwrap(), &expected);
            }
        }
    }
}
