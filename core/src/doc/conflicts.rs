//! Concurrent writes of one field that Automerge kept side by side, with who wrote each value.
//!
//! Automerge resolves such a conflict deterministically (every replica shows the same winner) but
//! keeps the losing values; Tandem lists them so the app can show both and let a person choose.
//! The author of each value is found through the operation that wrote it: its op id names the
//! change containing it, and that change's commit message names the user, device and time.

use automerge::{ObjId, ObjType, Prop, ReadDoc, Value};

use super::Document;
use super::codec::scalar_to_text;
use super::history::change_info;
use crate::error::Result;
use crate::model::{Conflict, ConflictValue};

impl Document {
    /// Every scalar field with more than one concurrent value, in document order (map keys
    /// sorted, list items by index). Each conflict's values list the winner first.
    ///
    /// Two people creating the same nested object at once (which Tandem's edits never do, since
    /// items have random ids) is not listed; only the winning object is searched further.
    pub fn conflicts(&self) -> Result<Vec<Conflict>> {
        let mut found = Vec::new();
        self.collect_conflicts(&ObjId::Root, &mut Vec::new(), &mut found)?;
        Ok(found)
    }

    fn collect_conflicts(
        &self,
        obj: &ObjId,
        path: &mut Vec<String>,
        found: &mut Vec<Conflict>,
    ) -> Result<()> {
        let props: Vec<Prop> = match self.doc.object_type(obj)? {
            ObjType::Map | ObjType::Table => self.doc.keys(obj).map(Prop::Map).collect(),
            ObjType::List => (0..self.doc.length(obj)).map(Prop::Seq).collect(),
            // Text merges character by character: there is nothing to choose between.
            ObjType::Text => return Ok(()),
        };
        for prop in props {
            let name = match &prop {
                Prop::Map(key) => key.clone(),
                Prop::Seq(index) => index.to_string(),
            };
            path.push(name);
            let current = self.doc.get(obj, prop.clone())?;
            let values = self.doc.get_all(obj, prop)?;
            if values.len() > 1 {
                let winner = current.as_ref().map(|(_, id)| id);
                let mut candidates: Vec<ConflictValue> = Vec::new();
                for (value, id) in &values {
                    let Value::Scalar(scalar) = value else {
                        continue;
                    };
                    let candidate = self.conflict_value(scalar_to_text(scalar), id);
                    if winner == Some(id) {
                        candidates.insert(0, candidate);
                    } else {
                        candidates.push(candidate);
                    }
                }
                if candidates.len() > 1 {
                    found.push(Conflict {
                        path: path.clone(),
                        values: candidates,
                    });
                }
            }
            if let Some((Value::Object(_), child)) = &current {
                self.collect_conflicts(child, path, found)?;
            }
            path.pop();
        }
        Ok(())
    }

    fn conflict_value(&self, value: String, op: &ObjId) -> ConflictValue {
        let info = self
            .doc
            .hash_for_opid(op)
            .and_then(|hash| self.doc.get_change_meta_by_hash(&hash))
            .map(|change| change_info(&change))
            .unwrap_or_default();
        ConflictValue {
            value,
            author: info.user,
            device: info.device,
            at: info.at,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::NaiveDate;

    use crate::doc::testing::{coach, ctx, mentee, plan_doc};
    use crate::ids::{DeviceId, UserId};
    use crate::model::NewGoal;

    #[test]
    fn concurrent_target_dates_are_one_conflict_naming_both_authors() {
        let mut doc = plan_doc();
        let goal = doc
            .add_goal(
                &mentee(),
                NewGoal {
                    title: "Pass calculus".into(),
                    description: String::new(),
                    category: String::new(),
                    target_date: None,
                },
            )
            .unwrap();
        let mut phone = doc.fork();
        let mut laptop = doc.fork();
        let may = NaiveDate::from_ymd_opt(2025, 5, 1).unwrap();
        let june = NaiveDate::from_ymd_opt(2025, 6, 1).unwrap();
        phone
            .set_goal_target_date(&ctx("maya", 1, 10), &goal, Some(may))
            .unwrap();
        laptop
            .set_goal_target_date(&ctx("carl", 2, 20), &goal, Some(june))
            .unwrap();
        phone.merge(&mut laptop).unwrap();

        let conflicts = phone.conflicts().unwrap();
        assert_eq!(conflicts.len(), 1, "{conflicts:?}");
        let conflict = &conflicts[0];
        assert_eq!(conflict.path, ["goals", goal.as_str(), "targetDate"]);
        let shown = phone.read_plan().unwrap().goals[0].target_date.unwrap();
        assert_eq!(
            conflict.values[0].value,
            shown.to_string(),
            "the winner comes first"
        );

        let mut values: Vec<_> = conflict
            .values
            .iter()
            .map(|v| (v.value.clone(), v.author.clone(), v.device, v.at))
            .collect();
        values.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            values,
            [
                (
                    "2025-05-01".to_owned(),
                    Some(UserId::new("maya")),
                    Some(DeviceId::from_bytes([1; 16])),
                    Some(ctx("maya", 1, 10).at)
                ),
                (
                    "2025-06-01".to_owned(),
                    Some(UserId::new("carl")),
                    Some(DeviceId::from_bytes([2; 16])),
                    Some(ctx("carl", 2, 20).at)
                ),
            ]
        );
        // The other replica sees the same conflict with the same winner.
        laptop.merge(&mut phone).unwrap();
        assert_eq!(laptop.conflicts().unwrap(), conflicts);
    }

    #[test]
    fn a_document_edited_in_sequence_has_no_conflicts() {
        let mut doc = plan_doc();
        doc.set_term(&mentee(), "Fall").unwrap();
        doc.set_term(&coach(), "Winter").unwrap();
        assert!(doc.conflicts().unwrap().is_empty());
    }
}
