//! Success-plan documents: creating a plan, the edits a mentee or coach makes to it, and reading
//! it back as a [`Plan`].

use automerge::transaction::{Transactable, Transaction};
use automerge::{ObjId, ObjType, ROOT, ReadDoc};
use chrono::NaiveDate;

use super::codec::{ObjReader, child, date_to_string, index_of_string, timestamp};
use super::{Document, EditContext};
use crate::error::{Error, Result};
use crate::ids::{CheckInId, GoalId, MilestoneId, PlanId, UserId, new_item_id};
use crate::model::{
    CheckIn, DocKind, Goal, GoalEdit, GoalStatus, Metric, Milestone, NewCheckIn, NewGoal,
    NewMilestone, NewPlan, Plan, Resource,
};

/// Which list of words about the mentee an edit is about.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum WordList {
    Strengths,
    Challenges,
}

impl WordList {
    fn key(self) -> &'static str {
        match self {
            Self::Strengths => "strengths",
            Self::Challenges => "challenges",
        }
    }

    fn singular(self) -> &'static str {
        match self {
            Self::Strengths => "strength",
            Self::Challenges => "challenge",
        }
    }
}

/// A goal's object and title, looked up before an edit so the edit can name it.
struct GoalRef {
    obj: ObjId,
    title: String,
}

impl Document {
    /// Creates a success plan: the root fields and empty goal, metric and check-in maps.
    pub fn create_plan(id: PlanId, ctx: &EditContext, plan: NewPlan) -> Result<Document> {
        if plan.mentee.as_str().trim().is_empty() {
            return Err(Error::invalid("a plan needs a mentee"));
        }
        let description = format!("created the plan of {}", plan.mentee);
        Self::create(id.document_id(), DocKind::Plan, ctx, description, |tx| {
            tx.put(ROOT, "mentee", plan.mentee.as_str())?;
            let coaches = tx.put_object(ROOT, "coaches", ObjType::List)?;
            for (index, coach) in plan.coaches.iter().enumerate() {
                tx.insert(&coaches, index, coach.as_str())?;
            }
            tx.put(ROOT, "program", plan.program.as_str())?;
            tx.put(ROOT, "term", plan.term.as_str())?;
            for (key, words) in [
                ("strengths", &plan.strengths),
                ("challenges", &plan.challenges),
            ] {
                let list = tx.put_object(ROOT, key, ObjType::List)?;
                for (index, word) in words.iter().enumerate() {
                    tx.insert(&list, index, word.as_str())?;
                }
            }
            tx.put(ROOT, "learningStyle", plan.learning_style.as_str())?;
            tx.put_object(ROOT, "goals", ObjType::Map)?;
            tx.put_object(ROOT, "resources", ObjType::List)?;
            tx.put_object(ROOT, "metrics", ObjType::Map)?;
            tx.put_object(ROOT, "checkIns", ObjType::Map)?;
            Ok(())
        })
    }

    /// Reads the plan, goals by creation time, milestones by due date, check-ins by time.
    pub fn read_plan(&self) -> Result<Plan> {
        self.expect_kind(DocKind::Plan)?;
        let root = ObjReader::root(&self.doc);
        let mut goals = match root.opt_object("goals", ObjType::Map)? {
            None => Vec::new(),
            Some(map) => map
                .map_entries()?
                .into_iter()
                .map(|(id, goal)| read_goal(id, &goal))
                .collect::<Result<_>>()?,
        };
        goals.sort_by(|a: &Goal, b: &Goal| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let resources = match root.opt_object("resources", ObjType::List)? {
            None => Vec::new(),
            Some(list) => (0..list.list_len())
                .map(|index| {
                    let item = list.list_object(index, ObjType::Map)?;
                    Ok(Resource {
                        title: item.str_or_empty("title")?,
                        url: item.opt_str("url")?,
                    })
                })
                .collect::<Result<_>>()?,
        };
        let metrics = match root.opt_object("metrics", ObjType::Map)? {
            None => Vec::new(),
            // Map keys come out sorted, which is the documented order.
            Some(map) => map
                .map_entries()?
                .into_iter()
                .map(|(name, metric)| {
                    Ok(Metric {
                        target: metric.opt_f64("target")?.unwrap_or_default(),
                        current: metric.opt_f64("current")?,
                        name,
                    })
                })
                .collect::<Result<_>>()?,
        };
        let mut check_ins = match root.opt_object("checkIns", ObjType::Map)? {
            None => Vec::new(),
            Some(map) => map
                .map_entries()?
                .into_iter()
                .map(|(id, check_in)| {
                    Ok(CheckIn {
                        id: CheckInId::new(id),
                        at: check_in.timestamp("at")?,
                        rating: check_in.opt_small("rating")?.unwrap_or_default(),
                        reflection: check_in.str_or_empty("reflection")?,
                        by: UserId::new(check_in.str_or_empty("by")?),
                    })
                })
                .collect::<Result<_>>()?,
        };
        check_ins.sort_by(|a: &CheckIn, b: &CheckIn| (a.at, &a.id).cmp(&(b.at, &b.id)));
        Ok(Plan {
            id: PlanId(self.id),
            schema_version: root.u64("schemaVersion")?,
            mentee: UserId::new(root.str("mentee")?),
            coaches: root
                .string_list("coaches")?
                .into_iter()
                .map(UserId::new)
                .collect(),
            program: root.str_or_empty("program")?,
            term: root.str_or_empty("term")?,
            strengths: root.string_list("strengths")?,
            challenges: root.string_list("challenges")?,
            learning_style: root.str_or_empty("learningStyle")?,
            goals,
            resources,
            metrics,
            check_ins,
        })
    }

    pub fn set_term(&mut self, ctx: &EditContext, term: &str) -> Result<()> {
        self.expect_kind(DocKind::Plan)?;
        self.edit(ctx, format!("set the term to {term:?}"), |tx| {
            Ok(tx.put(ROOT, "term", term)?)
        })
    }

    pub fn set_learning_style(&mut self, ctx: &EditContext, style: &str) -> Result<()> {
        self.expect_kind(DocKind::Plan)?;
        self.edit(ctx, format!("set the learning style to {style:?}"), |tx| {
            Ok(tx.put(ROOT, "learningStyle", style)?)
        })
    }

    /// Adds a strength; one already listed is left as it is (no change is made).
    pub fn add_strength(&mut self, ctx: &EditContext, strength: &str) -> Result<()> {
        self.add_word(ctx, WordList::Strengths, strength)
    }

    /// Removes a strength; [`Error::NotFound`] if it is not listed.
    pub fn remove_strength(&mut self, ctx: &EditContext, strength: &str) -> Result<()> {
        self.remove_word(ctx, WordList::Strengths, strength)
    }

    /// Adds a challenge; one already listed is left as it is (no change is made).
    pub fn add_challenge(&mut self, ctx: &EditContext, challenge: &str) -> Result<()> {
        self.add_word(ctx, WordList::Challenges, challenge)
    }

    /// Removes a challenge; [`Error::NotFound`] if it is not listed.
    pub fn remove_challenge(&mut self, ctx: &EditContext, challenge: &str) -> Result<()> {
        self.remove_word(ctx, WordList::Challenges, challenge)
    }

    fn add_word(&mut self, ctx: &EditContext, list: WordList, word: &str) -> Result<()> {
        self.expect_kind(DocKind::Plan)?;
        let word = non_blank(word, list.singular())?;
        let existing = child(&self.doc, &ROOT, list.key(), ObjType::List);
        if let Some(obj) = &existing
            && index_of_string(&self.doc, obj, word).is_some()
        {
            return Ok(());
        }
        self.edit(ctx, format!("added {} {word:?}", list.singular()), |tx| {
            let obj = match existing {
                Some(obj) => obj,
                None => tx.put_object(ROOT, list.key(), ObjType::List)?,
            };
            let end = tx.length(&obj);
            Ok(tx.insert(&obj, end, word)?)
        })
    }

    fn remove_word(&mut self, ctx: &EditContext, list: WordList, word: &str) -> Result<()> {
        self.expect_kind(DocKind::Plan)?;
        let found = child(&self.doc, &ROOT, list.key(), ObjType::List)
            .and_then(|obj| index_of_string(&self.doc, &obj, word).map(|index| (obj, index)));
        let Some((obj, index)) = found else {
            return Err(Error::not_found(format!(
                "{} {word:?} is not in the plan",
                list.singular()
            )));
        };
        self.edit(ctx, format!("removed {} {word:?}", list.singular()), |tx| {
            Ok(tx.delete(&obj, index)?)
        })
    }

    /// Adds a goal, not started and at 0 %, created at `ctx.at`. Returns its new id.
    pub fn add_goal(&mut self, ctx: &EditContext, goal: NewGoal) -> Result<GoalId> {
        self.expect_kind(DocKind::Plan)?;
        let title = non_blank(&goal.title, "goal title")?;
        let id = GoalId::new(new_item_id());
        let goals = child(&self.doc, &ROOT, "goals", ObjType::Map);
        self.edit(ctx, format!("added goal {title:?}"), |tx| {
            let goals = match goals {
                Some(goals) => goals,
                None => tx.put_object(ROOT, "goals", ObjType::Map)?,
            };
            let obj = tx.put_object(&goals, id.as_str(), ObjType::Map)?;
            tx.put(&obj, "id", id.as_str())?;
            tx.put(&obj, "title", title)?;
            tx.put(&obj, "description", goal.description.as_str())?;
            tx.put(&obj, "category", goal.category.as_str())?;
            if let Some(date) = goal.target_date {
                tx.put(&obj, "targetDate", date_to_string(date))?;
            }
            tx.put(&obj, "status", GoalStatus::NotStarted.as_str())?;
            tx.put(&obj, "progress", 0_u64)?;
            tx.put(&obj, "createdAt", timestamp(ctx.at))?;
            tx.put_object(&obj, "milestones", ObjType::Map)?;
            Ok(())
        })?;
        Ok(id)
    }

    /// Changes a goal's title, description or category; fields left `None` are not touched.
    pub fn edit_goal(&mut self, ctx: &EditContext, goal: &GoalId, edit: GoalEdit) -> Result<()> {
        self.expect_kind(DocKind::Plan)?;
        let target = self.goal(goal)?;
        let title = edit
            .title
            .as_deref()
            .map(|title| non_blank(title, "goal title"))
            .transpose()?;
        let mut changed = Vec::new();
        if title.is_some() {
            changed.push("title");
        }
        if edit.description.is_some() {
            changed.push("description");
        }
        if edit.category.is_some() {
            changed.push("category");
        }
        let description = format!(
            "edited the {} of goal {:?}",
            changed.join(", "),
            target.title
        );
        self.edit(ctx, description, |tx| {
            if let Some(title) = title {
                tx.put(&target.obj, "title", title)?;
            }
            if let Some(text) = &edit.description {
                tx.put(&target.obj, "description", text.as_str())?;
            }
            if let Some(category) = &edit.category {
                tx.put(&target.obj, "category", category.as_str())?;
            }
            Ok(())
        })
    }

    /// Sets or clears a goal's target date.
    pub fn set_goal_target_date(
        &mut self,
        ctx: &EditContext,
        goal: &GoalId,
        date: Option<NaiveDate>,
    ) -> Result<()> {
        self.expect_kind(DocKind::Plan)?;
        let target = self.goal(goal)?;
        let description = match date {
            Some(date) => format!("set the target date of goal {:?} to {date}", target.title),
            None => format!("cleared the target date of goal {:?}", target.title),
        };
        self.edit(ctx, description, |tx| {
            put_date(tx, &target.obj, "targetDate", date)
        })
    }

    pub fn set_goal_status(
        &mut self,
        ctx: &EditContext,
        goal: &GoalId,
        status: GoalStatus,
    ) -> Result<()> {
        self.expect_kind(DocKind::Plan)?;
        let target = self.goal(goal)?;
        let description = format!(
            "set the status of goal {:?} to {}",
            target.title,
            status.as_str()
        );
        self.edit(ctx, description, |tx| {
            Ok(tx.put(&target.obj, "status", status.as_str())?)
        })
    }

    /// Sets a goal's progress in percent; more than 100 is [`Error::Invalid`].
    pub fn set_goal_progress(
        &mut self,
        ctx: &EditContext,
        goal: &GoalId,
        progress: u8,
    ) -> Result<()> {
        self.expect_kind(DocKind::Plan)?;
        if progress > 100 {
            return Err(Error::invalid(format!(
                "progress is a percentage from 0 to 100, not {progress}"
            )));
        }
        let target = self.goal(goal)?;
        let description = format!("set the progress of goal {:?} to {progress}%", target.title);
        self.edit(ctx, description, |tx| {
            Ok(tx.put(&target.obj, "progress", u64::from(progress))?)
        })
    }

    /// Adds a milestone to a goal. Returns its new id.
    pub fn add_milestone(
        &mut self,
        ctx: &EditContext,
        goal: &GoalId,
        milestone: NewMilestone,
    ) -> Result<MilestoneId> {
        self.expect_kind(DocKind::Plan)?;
        let target = self.goal(goal)?;
        let title = non_blank(&milestone.title, "milestone title")?;
        let milestones = child(&self.doc, &target.obj, "milestones", ObjType::Map);
        let id = MilestoneId::new(new_item_id());
        let description = format!("added milestone {title:?} to goal {:?}", target.title);
        self.edit(ctx, description, |tx| {
            let milestones = match milestones {
                Some(milestones) => milestones,
                None => tx.put_object(&target.obj, "milestones", ObjType::Map)?,
            };
            let obj = tx.put_object(&milestones, id.as_str(), ObjType::Map)?;
            tx.put(&obj, "id", id.as_str())?;
            tx.put(&obj, "title", title)?;
            if let Some(due) = milestone.due {
                tx.put(&obj, "due", date_to_string(due))?;
            }
            tx.put(&obj, "done", false)?;
            Ok(())
        })?;
        Ok(id)
    }

    /// Completes (`done = true`) or reopens a milestone.
    pub fn set_milestone_done(
        &mut self,
        ctx: &EditContext,
        goal: &GoalId,
        milestone: &MilestoneId,
        done: bool,
    ) -> Result<()> {
        self.expect_kind(DocKind::Plan)?;
        let (obj, title) = self.milestone(goal, milestone)?;
        let verb = if done { "completed" } else { "reopened" };
        self.edit(ctx, format!("{verb} milestone {title:?}"), |tx| {
            Ok(tx.put(&obj, "done", done)?)
        })
    }

    /// Sets or clears a milestone's due date.
    pub fn set_milestone_due(
        &mut self,
        ctx: &EditContext,
        goal: &GoalId,
        milestone: &MilestoneId,
        due: Option<NaiveDate>,
    ) -> Result<()> {
        self.expect_kind(DocKind::Plan)?;
        let (obj, title) = self.milestone(goal, milestone)?;
        let description = match due {
            Some(due) => format!("set the due date of milestone {title:?} to {due}"),
            None => format!("cleared the due date of milestone {title:?}"),
        };
        self.edit(ctx, description, |tx| put_date(tx, &obj, "due", due))
    }

    /// Appends a resource the mentee uses.
    pub fn add_resource(&mut self, ctx: &EditContext, resource: Resource) -> Result<()> {
        self.expect_kind(DocKind::Plan)?;
        let title = non_blank(&resource.title, "resource title")?;
        let list = child(&self.doc, &ROOT, "resources", ObjType::List);
        self.edit(ctx, format!("added resource {title:?}"), |tx| {
            let list = match list {
                Some(list) => list,
                None => tx.put_object(ROOT, "resources", ObjType::List)?,
            };
            let end = tx.length(&list);
            let obj = tx.insert_object(&list, end, ObjType::Map)?;
            tx.put(&obj, "title", title)?;
            if let Some(url) = &resource.url {
                tx.put(&obj, "url", url.as_str())?;
            }
            Ok(())
        })
    }

    /// Sets an agreed metric's target and current value, creating the metric if it is new.
    /// Only the two values are written, so concurrent updates of different metrics both survive.
    pub fn set_metric(&mut self, ctx: &EditContext, metric: Metric) -> Result<()> {
        self.expect_kind(DocKind::Plan)?;
        let name = non_blank(&metric.name, "metric name")?;
        for (what, value) in [("target", Some(metric.target)), ("current", metric.current)] {
            if value.is_some_and(|v| !v.is_finite()) {
                return Err(Error::invalid(format!(
                    "metric {name:?}: {what} is not a number"
                )));
            }
        }
        let metrics = child(&self.doc, &ROOT, "metrics", ObjType::Map);
        let existing = metrics
            .as_ref()
            .and_then(|metrics| child(&self.doc, metrics, name, ObjType::Map));
        self.edit(ctx, format!("set metric {name:?}"), |tx| {
            let obj = match existing {
                Some(obj) => obj,
                None => {
                    let metrics = match metrics {
                        Some(metrics) => metrics,
                        None => tx.put_object(ROOT, "metrics", ObjType::Map)?,
                    };
                    tx.put_object(&metrics, name, ObjType::Map)?
                }
            };
            tx.put(&obj, "target", metric.target)?;
            match metric.current {
                Some(current) => tx.put(&obj, "current", current)?,
                None if tx.get(&obj, "current")?.is_some() => tx.delete(&obj, "current")?,
                None => {}
            }
            Ok(())
        })
    }

    /// Records a check-in by `ctx.author.user`; a rating outside 1–5 is [`Error::Invalid`].
    pub fn add_check_in(&mut self, ctx: &EditContext, check_in: NewCheckIn) -> Result<CheckInId> {
        self.expect_kind(DocKind::Plan)?;
        check_rating("check-in rating", check_in.rating)?;
        let id = CheckInId::new(new_item_id());
        let map = child(&self.doc, &ROOT, "checkIns", ObjType::Map);
        let description = format!("checked in with rating {}", check_in.rating);
        self.edit(ctx, description, |tx| {
            let map = match map {
                Some(map) => map,
                None => tx.put_object(ROOT, "checkIns", ObjType::Map)?,
            };
            let obj = tx.put_object(&map, id.as_str(), ObjType::Map)?;
            tx.put(&obj, "id", id.as_str())?;
            tx.put(&obj, "at", timestamp(check_in.at))?;
            tx.put(&obj, "rating", u64::from(check_in.rating))?;
            tx.put(&obj, "reflection", check_in.reflection.as_str())?;
            tx.put(&obj, "by", ctx.author.user.as_str())?;
            Ok(())
        })?;
        Ok(id)
    }

    fn goal(&self, id: &GoalId) -> Result<GoalRef> {
        let obj = child(&self.doc, &ROOT, "goals", ObjType::Map)
            .and_then(|goals| child(&self.doc, &goals, id.as_str(), ObjType::Map))
            .ok_or_else(|| Error::not_found(format!("goal {id} is not in plan {}", self.id)))?;
        let title = ObjReader::root(&self.doc)
            .object("goals", ObjType::Map)
            .and_then(|goals| goals.object(id.as_str(), ObjType::Map))
            .and_then(|goal| goal.str_or_empty("title"))
            .unwrap_or_default();
        Ok(GoalRef { obj, title })
    }

    fn milestone(&self, goal: &GoalId, id: &MilestoneId) -> Result<(ObjId, String)> {
        let target = self.goal(goal)?;
        let obj = child(&self.doc, &target.obj, "milestones", ObjType::Map)
            .and_then(|milestones| child(&self.doc, &milestones, id.as_str(), ObjType::Map))
            .ok_or_else(|| {
                Error::not_found(format!("milestone {id} is not in goal {:?}", target.title))
            })?;
        let title = match self.doc.get(&obj, "title") {
            Ok(Some((value, _))) => value.as_str().unwrap_or_default().to_owned(),
            _ => String::new(),
        };
        Ok((obj, title))
    }
}

fn read_goal<R: ReadDoc>(key: String, goal: &ObjReader<'_, R>) -> Result<Goal> {
    let status_text = goal.str("status")?;
    let status = GoalStatus::parse(&status_text).ok_or_else(|| {
        Error::malformed(format!(
            "field {} has an unknown goal status {status_text:?}",
            goal.path_of("status")
        ))
    })?;
    let mut milestones = match goal.opt_object("milestones", ObjType::Map)? {
        None => Vec::new(),
        Some(map) => map
            .map_entries()?
            .into_iter()
            .map(|(id, milestone)| {
                Ok(Milestone {
                    id: MilestoneId::new(id),
                    title: milestone.str_or_empty("title")?,
                    due: milestone.opt_date("due")?,
                    done: milestone.bool_or_false("done")?,
                })
            })
            .collect::<Result<_>>()?,
    };
    // Dated milestones first, by date; undated last.
    milestones.sort_by(|a: &Milestone, b: &Milestone| {
        (a.due.is_none(), a.due, &a.title, &a.id).cmp(&(b.due.is_none(), b.due, &b.title, &b.id))
    });
    Ok(Goal {
        id: GoalId::new(key),
        title: goal.str_or_empty("title")?,
        description: goal.str_or_empty("description")?,
        category: goal.str_or_empty("category")?,
        target_date: goal.opt_date("targetDate")?,
        status,
        // A foreign writer may exceed 100; the model promises a percentage.
        progress: goal
            .opt_small::<u64>("progress")?
            .unwrap_or_default()
            .min(100) as u8,
        milestones,
        created_at: goal.timestamp("createdAt")?,
    })
}

/// Writes a date as `YYYY-MM-DD`, or removes the key for `None`.
pub(super) fn put_date(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    key: &str,
    date: Option<NaiveDate>,
) -> Result<()> {
    match date {
        Some(date) => tx.put(obj, key, date_to_string(date))?,
        None if tx.get(obj, key)?.is_some() => tx.delete(obj, key)?,
        None => {}
    }
    Ok(())
}

/// A title or name with surrounding blanks removed; empty is [`Error::Invalid`] naming `what`.
pub(super) fn non_blank<'a>(text: &'a str, what: &str) -> Result<&'a str> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        Err(Error::invalid(format!("the {what} is empty")))
    } else {
        Ok(trimmed)
    }
}

/// A 1-to-5 rating (check-ins, mood).
pub(super) fn check_rating(what: &str, rating: u8) -> Result<()> {
    if (1..=5).contains(&rating) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "the {what} must be from 1 to 5, not {rating}"
        )))
    }
}
