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
            tx.put(&obj, "progress", 0_i64)?;
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
        if status == GoalStatus::Unknown {
            return Err(Error::invalid("a goal's status cannot be set to unknown"));
        }
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
            Ok(tx.put(&target.obj, "progress", i64::from(progress))?)
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
            tx.put(&obj, "rating", i64::from(check_in.rating))?;
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
    // A status from a newer release reads as unknown rather than failing the whole plan.
    let status = GoalStatus::parse(&status_text).unwrap_or(GoalStatus::Unknown);
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::doc::testing::{coach, ctx, mentee, new_plan, plan_doc, session_doc};
    use crate::model::NewGoal;

    fn goal(title: &str) -> NewGoal {
        NewGoal {
            title: title.to_owned(),
            description: String::new(),
            category: "academic".to_owned(),
            target_date: None,
        }
    }

    fn date(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn a_new_plan_reads_back_as_created() {
        let doc = plan_doc();
        let plan = doc.read_plan().unwrap();
        let input = new_plan();
        assert_eq!(plan.id.document_id(), doc.id());
        assert_eq!(plan.schema_version, crate::model::SCHEMA_VERSION);
        assert_eq!(plan.mentee, input.mentee);
        assert_eq!(plan.coaches, input.coaches);
        assert_eq!(plan.program, input.program);
        assert_eq!(plan.term, input.term);
        assert_eq!(plan.strengths, input.strengths);
        assert_eq!(plan.challenges, input.challenges);
        assert_eq!(plan.learning_style, input.learning_style);
        assert!(plan.goals.is_empty() && plan.resources.is_empty());
        assert!(plan.metrics.is_empty() && plan.check_ins.is_empty());
    }

    #[test]
    fn goals_read_back_in_creation_order_with_sorted_milestones() {
        let mut doc = plan_doc();
        let later = doc
            .add_goal(&ctx("maya", 1, 5), goal("Pass calculus"))
            .unwrap();
        let earlier = doc
            .add_goal(&ctx("maya", 1, 1), goal("Join a study group"))
            .unwrap();
        let undated = doc
            .add_milestone(
                &mentee(),
                &later,
                NewMilestone {
                    title: "Undated".into(),
                    due: None,
                },
            )
            .unwrap();
        let may = doc
            .add_milestone(
                &mentee(),
                &later,
                NewMilestone {
                    title: "Final".into(),
                    due: Some(date("2025-05-20")),
                },
            )
            .unwrap();
        let april = doc
            .add_milestone(
                &mentee(),
                &later,
                NewMilestone {
                    title: "Midterm".into(),
                    due: Some(date("2025-04-01")),
                },
            )
            .unwrap();
        doc.set_goal_progress(&mentee(), &later, 40).unwrap();
        doc.set_goal_status(&mentee(), &later, GoalStatus::InProgress)
            .unwrap();
        doc.set_goal_target_date(&mentee(), &later, Some(date("2025-05-31")))
            .unwrap();
        doc.set_milestone_done(&mentee(), &later, &april, true)
            .unwrap();
        doc.edit_goal(
            &mentee(),
            &later,
            GoalEdit {
                description: Some("B or better".into()),
                ..GoalEdit::default()
            },
        )
        .unwrap();

        let plan = doc.read_plan().unwrap();
        let ids: Vec<_> = plan.goals.iter().map(|g| g.id.clone()).collect();
        assert_eq!(ids, [earlier, later.clone()]);
        let calculus = &plan.goals[1];
        assert_eq!(calculus.title, "Pass calculus");
        assert_eq!(calculus.description, "B or better");
        assert_eq!(calculus.category, "academic");
        assert_eq!(calculus.progress, 40);
        assert_eq!(calculus.status, GoalStatus::InProgress);
        assert_eq!(calculus.target_date, Some(date("2025-05-31")));
        assert_eq!(calculus.created_at, ctx("maya", 1, 5).at);
        let order: Vec<_> = calculus.milestones.iter().map(|m| m.id.clone()).collect();
        assert_eq!(order, [april.clone(), may, undated]);
        assert!(calculus.milestones[0].done && !calculus.milestones[1].done);

        doc.set_milestone_done(&mentee(), &later, &april, false)
            .unwrap();
        doc.set_milestone_due(&mentee(), &later, &april, None)
            .unwrap();
        doc.set_goal_target_date(&mentee(), &later, None).unwrap();
        let calculus = doc.read_plan().unwrap().goals[1].clone();
        assert_eq!(calculus.target_date, None);
        let reopened = calculus.milestones.iter().find(|m| m.id == april).unwrap();
        assert!(!reopened.done);
        assert_eq!(reopened.due, None);
    }

    #[test]
    fn words_resources_metrics_and_check_ins_are_recorded() {
        let mut doc = plan_doc();
        doc.set_term(&mentee(), "Fall 2025").unwrap();
        doc.set_learning_style(&mentee(), "hands-on").unwrap();
        doc.add_strength(&mentee(), "persistent").unwrap();
        doc.remove_strength(&mentee(), "curious").unwrap();
        doc.add_challenge(&mentee(), "math anxiety").unwrap();
        doc.remove_challenge(&mentee(), "time management").unwrap();
        doc.add_resource(
            &coach(),
            Resource {
                title: "Writing centre".into(),
                url: Some("https://example.edu".into()),
            },
        )
        .unwrap();
        doc.set_metric(
            &coach(),
            Metric {
                name: "GPA".into(),
                target: 3.0,
                current: Some(2.5),
            },
        )
        .unwrap();
        doc.set_metric(
            &coach(),
            Metric {
                name: "GPA".into(),
                target: 3.2,
                current: None,
            },
        )
        .unwrap();
        let check_in = doc
            .add_check_in(
                &mentee(),
                NewCheckIn {
                    at: ctx("maya", 1, 30).at,
                    rating: 4,
                    reflection: "Better".into(),
                },
            )
            .unwrap();

        let plan = doc.read_plan().unwrap();
        assert_eq!(plan.term, "Fall 2025");
        assert_eq!(plan.learning_style, "hands-on");
        assert_eq!(plan.strengths, ["persistent"]);
        assert_eq!(plan.challenges, ["math anxiety"]);
        assert_eq!(
            plan.resources[0].url.as_deref(),
            Some("https://example.edu")
        );
        assert_eq!(
            plan.metrics,
            [Metric {
                name: "GPA".into(),
                target: 3.2,
                current: None
            }]
        );
        assert_eq!(plan.check_ins.len(), 1);
        assert_eq!(plan.check_ins[0].id, check_in);
        assert_eq!(plan.check_ins[0].rating, 4);
        assert_eq!(plan.check_ins[0].by, UserId::new("maya"));
    }

    #[test]
    fn adding_a_strength_already_listed_changes_nothing() {
        let mut doc = plan_doc();
        let heads = doc.heads();
        doc.add_strength(&mentee(), "  curious ").unwrap();
        assert_eq!(doc.heads(), heads);
    }

    /// Every refused edit names what was wrong and leaves the document byte-for-byte unchanged.
    #[test]
    fn refused_edits_leave_the_plan_unchanged() {
        let mut doc = plan_doc();
        let goal_id = doc.add_goal(&mentee(), goal("Pass calculus")).unwrap();
        let unknown_goal = GoalId::new("no-such-goal");
        let unknown_milestone = MilestoneId::new("no-such-milestone");
        let heads = doc.heads();
        let bytes = doc.to_bytes();
        let c = mentee();

        let refusals: Vec<(Result<()>, &str)> = vec![
            (doc.set_goal_progress(&c, &goal_id, 101), "101"),
            (doc.set_goal_progress(&c, &unknown_goal, 50), "no-such-goal"),
            (doc.add_goal(&c, goal("   ")).map(drop), "goal title"),
            (
                doc.edit_goal(
                    &c,
                    &goal_id,
                    GoalEdit {
                        title: Some("".into()),
                        ..GoalEdit::default()
                    },
                ),
                "goal title",
            ),
            (
                doc.set_goal_target_date(&c, &unknown_goal, None),
                "no-such-goal",
            ),
            (
                doc.set_goal_status(&c, &unknown_goal, GoalStatus::Completed),
                "no-such-goal",
            ),
            (
                doc.add_milestone(
                    &c,
                    &unknown_goal,
                    NewMilestone {
                        title: "x".into(),
                        due: None,
                    },
                )
                .map(drop),
                "no-such-goal",
            ),
            (
                doc.add_milestone(
                    &c,
                    &goal_id,
                    NewMilestone {
                        title: "\t".into(),
                        due: None,
                    },
                )
                .map(drop),
                "milestone title",
            ),
            (
                doc.set_milestone_done(&c, &goal_id, &unknown_milestone, true),
                "no-such-milestone",
            ),
            (
                doc.set_milestone_due(&c, &goal_id, &unknown_milestone, None),
                "no-such-milestone",
            ),
            (
                doc.add_check_in(
                    &c,
                    NewCheckIn {
                        at: c.at,
                        rating: 0,
                        reflection: String::new(),
                    },
                )
                .map(drop),
                "rating",
            ),
            (
                doc.add_check_in(
                    &c,
                    NewCheckIn {
                        at: c.at,
                        rating: 6,
                        reflection: String::new(),
                    },
                )
                .map(drop),
                "rating",
            ),
            (doc.remove_strength(&c, "patience"), "patience"),
            (doc.remove_challenge(&c, "nothing"), "nothing"),
            (
                doc.set_metric(
                    &c,
                    Metric {
                        name: "GPA".into(),
                        target: f64::NAN,
                        current: None,
                    },
                ),
                "GPA",
            ),
            (
                doc.add_resource(
                    &c,
                    Resource {
                        title: " ".into(),
                        url: None,
                    },
                ),
                "resource title",
            ),
            (doc.set_mood(&c, Some(3)), "not a session"),
        ];
        for (result, named) in refusals {
            let error = result.expect_err("the edit should be refused");
            assert!(
                matches!(error, Error::Invalid(_) | Error::NotFound(_)),
                "unexpected error kind: {error}"
            );
            let message = error.to_string();
            assert!(
                message.contains(named) || message.contains("session"),
                "{message} should name {named}"
            );
            assert_eq!(doc.heads(), heads, "{message} changed the document");
        }
        assert_eq!(doc.to_bytes(), bytes);
    }

    #[test]
    fn reading_a_plan_from_another_kind_of_document_is_refused() {
        let session = session_doc();
        assert!(matches!(session.read_plan(), Err(Error::Invalid(_))));
    }

    #[test]
    fn concurrent_edits_of_different_goals_both_survive() {
        let mut doc = plan_doc();
        let calculus = doc.add_goal(&mentee(), goal("Pass calculus")).unwrap();
        let essay = doc.add_goal(&mentee(), goal("Write essay")).unwrap();
        let mut phone = doc.fork();
        let mut laptop = doc.fork();
        phone.set_goal_progress(&mentee(), &calculus, 60).unwrap();
        phone.add_goal(&mentee(), goal("Sleep 8 hours")).unwrap();
        laptop
            .set_goal_status(&coach(), &essay, GoalStatus::Completed)
            .unwrap();
        laptop
            .add_goal(&coach(), goal("Visit office hours"))
            .unwrap();
        phone.merge(&mut laptop).unwrap();
        laptop.merge(&mut phone).unwrap();

        let plan = phone.read_plan().unwrap();
        assert_eq!(plan, laptop.read_plan().unwrap());
        assert_eq!(plan.goals.len(), 4);
        let find = |id: &GoalId| plan.goals.iter().find(|g| &g.id == id).unwrap();
        assert_eq!(find(&calculus).progress, 60);
        assert_eq!(find(&essay).status, GoalStatus::Completed);
        assert!(phone.conflicts().unwrap().is_empty());
    }
}
