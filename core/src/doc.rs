//! Typed coaching documents over Automerge: creating, editing, reading, conflicts and history.
//!
//! A [`Document`] is one Automerge document together with its [`DocumentId`] and [`DocKind`].
//! Every edit is one Automerge transaction that touches only the keys it changes, so concurrent
//! edits of different fields or different items merge, and fields written by newer releases
//! survive. Edits validate before they write: a refused edit leaves the document byte-for-byte as
//! it was. The doc layer never reads the clock: the caller passes the time in an [`EditContext`].
//!
//! # Document layout
//!
//! Plain camelCase keys, so JS clients (`@automerge/automerge`) read the same documents. Dates are
//! `"YYYY-MM-DD"` strings (absent when unset); instants are Automerge timestamps (milliseconds
//! since the Unix epoch); counts are `uint` (readers also accept `int` and whole `f64`, which is
//! what JS writes). Collections that two people may add to or edit at once are maps keyed by
//! the item's id, not lists, so concurrent additions and edits of different items all survive.
//!
//! ```text
//! every document   { type: "plan" | "session" | "notes" | "directory", schemaVersion: uint, … }
//! plan             { mentee: str, coaches: [str], program: str, term: str,
//!                    strengths: [str], challenges: [str], learningStyle: str,
//!                    goals: { <goalId>: { id, title, description, category, targetDate?: date,
//!                                         status: "not_started" | "in_progress" | "completed"
//!                                                 | "deferred" | "dropped",
//!                                         progress: uint 0..=100, createdAt: timestamp,
//!                                         milestones: { <milestoneId>: { id, title, due?: date,
//!                                                                        done: bool } } } },
//!                    resources: [ { title: str, url?: str } ],
//!                    metrics: { <name>: { target: f64, current?: f64 } },
//!                    checkIns: { <checkInId>: { id, at: timestamp, rating: uint 1..=5,
//!                                               reflection: str, by: str } } }
//! session          { plan: "automerge:<id>", coach: str, mentee: str, start: timestamp,
//!                    durationMinutes: uint, mode: "in_person" | "video" | "phone" | "group",
//!                    topics: [str], notes: Text, mood?: uint 1..=5,
//!                    actionItems: { <itemId>: { id, text, owner, due?: date, done: bool,
//!                                               createdAt: timestamp, rank: uint } },
//!                    goalsDiscussed: [goalId], followUp?: date }
//! notes            { coach: str, mentee: str, plan: "automerge:<id>", text: Text }
//! directory        { program: str, coach: str, mentee: str,
//!                    entries: { <documentId>: { kind: "plan" | "session" | "notes", title: str } } }
//! ```
//!
//! Read-back order: goals by `createdAt` then id; milestones by `due` (undated last) then title
//! then id; check-ins by `at` then id; action items by `createdAt`, then `rank` (their position
//! in the call that created them), then id; metrics by name; directory entries by kind, title, id.
//!
//! # Commit messages
//!
//! Every change Tandem makes carries a commit message of one description line followed by
//! trailers (see [`history`]):
//!
//! ```text
//! set target date of goal "Pass calculus" to 2025-05-01
//!
//! Tandem-User: alice
//! Tandem-Device: 00112233445566778899aabbccddeeff
//! Tandem-At: 2025-03-01T10:00:00.000Z
//! ```
//!
//! The change's own timestamp is the same instant in whole seconds, as Automerge defines it.

mod codec;
pub mod conflicts;
pub mod directory;
pub mod history;
pub mod notes;
pub mod plan;
pub mod session;
#[cfg(test)]
mod testing;

use std::panic::{AssertUnwindSafe, catch_unwind};

use automerge::transaction::{CommitOptions, Transaction};
use automerge::{Automerge, ChangeHash, LoadOptions, OnPartialLoad, VerificationMode};
use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::ids::DocumentId;
use crate::model::{Author, DocKind, SCHEMA_VERSION};

use codec::ObjReader;

/// Who is editing and when: every edit takes one, and records both in its commit message.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct EditContext {
    pub author: Author,
    pub at: DateTime<Utc>,
}

impl EditContext {
    pub fn new(author: Author, at: DateTime<Utc>) -> Self {
        Self { author, at }
    }
}

/// One Tandem document: an Automerge document with its id and kind.
///
/// Edits set the document's actor to the editing device, so one device must not edit two
/// in-memory copies of the same document independently (they would reuse sequence numbers);
/// the store keeps one open copy per document.
#[derive(Clone, Debug)]
pub struct Document {
    id: DocumentId,
    kind: DocKind,
    doc: Automerge,
    /// The heads at the last `save`/`save_incremental`/`load`, so `save_incremental` knows what
    /// is new.
    saved_heads: Vec<ChangeHash>,
}

impl Document {
    /// Starts a document of `kind` whose first change is written by `init` in one transaction.
    fn create(
        id: DocumentId,
        kind: DocKind,
        ctx: &EditContext,
        description: String,
        init: impl FnOnce(&mut Transaction<'_>) -> Result<()>,
    ) -> Result<Self> {
        let mut document = Self {
            id,
            kind,
            doc: Automerge::new().with_actor(ctx.author.device.actor()),
            saved_heads: Vec::new(),
        };
        document.edit(ctx, description, |tx| {
            use automerge::transaction::Transactable;
            tx.put(automerge::ROOT, "type", kind.as_str())?;
            tx.put(automerge::ROOT, "schemaVersion", SCHEMA_VERSION as i64)?;
            init(tx)
        })?;
        Ok(document)
    }

    /// Loads a document from saved bytes: a snapshot, change chunks, or a snapshot followed by
    /// incremental chunks, as `save` and `save_incremental` produce them.
    ///
    /// Bytes Automerge cannot read are [`Error::Corrupt`]; a readable document without a known
    /// `type` is [`Error::Malformed`]. Automerge has panicked on malformed input before; such a
    /// panic is caught and reported as `Corrupt`.
    pub fn load(id: DocumentId, bytes: &[u8]) -> Result<Self> {
        let doc = guarded(id, || {
            Automerge::load_with_options(
                bytes,
                LoadOptions::new()
                    .on_partial_load(OnPartialLoad::Error)
                    .verification_mode(VerificationMode::Check),
            )
        })?;
        Self::from_automerge(id, doc)
    }

    /// Wraps an Automerge document that is already in memory, reading its kind from `type`.
    pub fn from_automerge(id: DocumentId, doc: Automerge) -> Result<Self> {
        let kind = read_kind(&doc)?;
        let saved_heads = doc.get_heads();
        Ok(Self {
            id,
            kind,
            doc,
            saved_heads,
        })
    }

    pub fn id(&self) -> DocumentId {
        self.id
    }

    pub fn kind(&self) -> DocKind {
        self.kind
    }

    /// The schema version the document was created with (or last migrated to).
    pub fn schema_version(&self) -> Result<u64> {
        ObjReader::root(&self.doc).u64("schemaVersion")
    }

    pub fn heads(&self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    /// The whole document, compacted. Later `save_incremental` calls return what came after.
    pub fn save(&mut self) -> Vec<u8> {
        self.saved_heads = self.doc.get_heads();
        self.doc.save()
    }

    /// The whole document, compacted, without moving the incremental-save mark.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.doc.save()
    }

    /// The changes since the last `save`, `save_incremental` or `load`, as concatenated change
    /// chunks the store can append after a snapshot. Empty when nothing changed.
    pub fn save_incremental(&mut self) -> Vec<u8> {
        let bytes = self.doc.save_after(&self.saved_heads);
        self.saved_heads = self.doc.get_heads();
        bytes
    }

    /// Takes every change `other` has and this document lacks. Both must be the same document.
    pub fn merge(&mut self, other: &mut Document) -> Result<()> {
        if other.id != self.id {
            return Err(Error::invalid(format!(
                "cannot merge document {} into document {}",
                other.id, self.id
            )));
        }
        let id = self.id;
        let mut merged = self.doc.clone();
        guarded(id, || merged.merge(&mut other.doc))?;
        self.doc = merged;
        Ok(())
    }

    /// Applies change chunks (or a saved document) received from elsewhere. All or nothing: bytes
    /// that do not parse completely are refused and the document is unchanged.
    pub fn apply_changes(&mut self, bytes: &[u8]) -> Result<()> {
        let id = self.id;
        // `load_incremental` quietly skips an unreadable tail, so first parse the bytes strictly,
        // behind an empty snapshot so that changes whose dependencies are elsewhere are allowed.
        let mut probe = Automerge::new().save();
        probe.extend_from_slice(bytes);
        guarded(id, || {
            Automerge::load_with_options(
                &probe,
                LoadOptions::new()
                    .on_partial_load(OnPartialLoad::Error)
                    .verification_mode(VerificationMode::DontCheck),
            )
        })?;
        let mut updated = self.doc.clone();
        guarded(id, || updated.load_incremental(bytes))?;
        let kind = read_kind(&updated)?;
        if kind != self.kind {
            return Err(Error::malformed(format!(
                "changes would turn {} {} into a {}",
                self.kind.as_str(),
                self.id,
                kind.as_str()
            )));
        }
        self.doc = updated;
        Ok(())
    }

    /// A copy that writes with another actor, for tests and for trying edits out.
    pub fn fork(&self) -> Self {
        Self {
            id: self.id,
            kind: self.kind,
            doc: self.doc.fork(),
            saved_heads: self.saved_heads.clone(),
        }
    }

    /// The underlying Automerge document, for the sync engine.
    pub fn automerge(&self) -> &Automerge {
        &self.doc
    }

    /// The underlying Automerge document, for the sync engine to apply sync messages to.
    pub fn automerge_mut(&mut self) -> &mut Automerge {
        &mut self.doc
    }

    fn expect_kind(&self, kind: DocKind) -> Result<()> {
        if self.kind == kind {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "document {} is a {}, not a {}",
                self.id,
                self.kind.as_str(),
                kind.as_str()
            )))
        }
    }

    /// Runs one edit as one transaction with Tandem's commit message. If `write` fails, the
    /// transaction is rolled back and the document is exactly as before.
    fn edit<T>(
        &mut self,
        ctx: &EditContext,
        description: String,
        write: impl FnOnce(&mut Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        self.doc.set_actor(ctx.author.device.actor());
        let options = CommitOptions::default()
            .with_message(history::commit_message(ctx, &description))
            .with_time(ctx.at.timestamp());
        self.doc
            .transact_with(|_| options, write)
            .map(|success| success.result)
            .map_err(|failure| failure.error)
    }
}

/// The kind named by a document's `type` field.
fn read_kind(doc: &Automerge) -> Result<DocKind> {
    let name = ObjReader::root(doc)
        .opt_str("type")?
        .ok_or_else(|| Error::malformed("the document has no `type` field"))?;
    DocKind::parse(&name).ok_or_else(|| Error::malformed(format!("unknown document type {name:?}")))
}

/// Runs an Automerge operation that may fail, or panic, on bad input, as `Error::Corrupt`.
fn guarded<T>(
    id: DocumentId,
    op: impl FnOnce() -> std::result::Result<T, automerge::AutomergeError>,
) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(op)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Error::Corrupt {
            document: id,
            reason: e.to_string(),
        }),
        Err(_) => Err(Error::Corrupt {
            document: id,
            reason: "automerge panicked while reading the bytes".to_owned(),
        }),
    }
}

/// A document's bytes for another system: the plain Automerge save format, which
/// `@automerge/automerge`'s `load` reads.
pub fn export(document: &Document) -> Vec<u8> {
    document.to_bytes()
}

/// Reads a document exported by [`export`] (or saved by any Automerge implementation), detecting
/// its kind from its `type` field. It is given a fresh id: importing makes a new document.
pub fn import(bytes: &[u8]) -> Result<Document> {
    Document::load(DocumentId::random(), bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use automerge::transaction::Transactable;
    use automerge::{ObjType, ROOT, ReadDoc, ScalarValue};
    use chrono::NaiveDate;
    use proptest::prelude::*;

    use super::testing::{ctx, mentee, plan_doc, session_doc};
    use super::*;
    use crate::ids::GoalId;
    use crate::model::{Metric, NewGoal, NewMilestone};

    fn goal(title: &str) -> NewGoal {
        NewGoal {
            title: title.to_owned(),
            description: String::new(),
            category: String::new(),
            target_date: None,
        }
    }

    #[test]
    fn a_saved_document_loads_with_its_kind_and_values() {
        let mut doc = session_doc();
        let bytes = doc.save();
        let loaded = Document::load(doc.id(), &bytes).unwrap();
        assert_eq!(loaded.kind(), DocKind::Session);
        assert_eq!(loaded.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(loaded.heads(), doc.heads());
        assert_eq!(loaded.read_session().unwrap(), doc.read_session().unwrap());
    }

    #[test]
    fn incremental_saves_append_to_a_snapshot() {
        let mut doc = plan_doc();
        let mut stored = doc.save();
        assert!(
            doc.save_incremental().is_empty(),
            "nothing changed since the save"
        );
        let goal_id = doc.add_goal(&mentee(), goal("Pass calculus")).unwrap();
        stored.extend(doc.save_incremental());
        doc.set_goal_progress(&mentee(), &goal_id, 30).unwrap();
        doc.set_term(&mentee(), "Fall").unwrap();
        let chunk = doc.save_incremental();
        assert!(!chunk.is_empty());
        stored.extend(chunk);

        let loaded = Document::load(doc.id(), &stored).unwrap();
        assert_eq!(loaded.heads(), doc.heads());
        assert_eq!(loaded.read_plan().unwrap(), doc.read_plan().unwrap());
    }

    #[test]
    fn changes_applied_from_bytes_bring_a_copy_up_to_date() {
        let mut doc = plan_doc();
        let mut copy = Document::load(doc.id(), &doc.save()).unwrap();
        doc.add_strength(&mentee(), "patient").unwrap();
        copy.apply_changes(&doc.save_incremental()).unwrap();
        assert_eq!(copy.heads(), doc.heads());
        // A whole saved document is accepted too, and applying twice is harmless.
        copy.apply_changes(&doc.to_bytes()).unwrap();
        assert_eq!(copy.heads(), doc.heads());
    }

    #[test]
    fn malformed_bytes_are_errors_not_panics() {
        let id = DocumentId::random();
        let mut good = plan_doc().save();
        let truncated = good[..good.len() / 2].to_vec();
        let flipped = {
            let last = good.len() - 1;
            good[last] ^= 0xff;
            good.clone()
        };
        let mut cases: Vec<Vec<u8>> = vec![
            b"not an automerge document".to_vec(),
            vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 0, 0xff, 0xff],
            truncated,
            flipped,
        ];
        cases.extend((0..64_u8).map(|seed| {
            (0..200_u32)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
                .collect()
        }));
        for bytes in &cases {
            match Document::load(id, bytes) {
                Err(Error::Corrupt { document, .. }) => assert_eq!(document, id),
                Err(Error::Malformed(_)) => {}
                other => panic!("expected an error for {} bytes, got {other:?}", bytes.len()),
            }
        }
        // An empty document, or one without Tandem's `type`, is readable Automerge but not Tandem's.
        assert!(matches!(Document::load(id, &[]), Err(Error::Malformed(_))));
        let mut foreign = Automerge::new();
        foreign
            .transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, "type", "spreadsheet"))
            .unwrap();
        let error = Document::load(id, &foreign.save()).unwrap_err();
        assert!(error.to_string().contains("spreadsheet"), "{error}");

        let mut doc = plan_doc();
        let heads = doc.heads();
        for bytes in &cases {
            assert!(doc.apply_changes(bytes).is_err());
            assert_eq!(doc.heads(), heads);
        }
    }

    #[test]
    fn export_then_import_detects_the_kind() {
        let doc = session_doc();
        let imported = import(&export(&doc)).unwrap();
        assert_eq!(imported.kind(), DocKind::Session);
        assert_ne!(imported.id(), doc.id(), "an import is a new document");
        assert_eq!(imported.heads(), doc.heads());
        assert_eq!(
            imported.read_session().unwrap().notes,
            doc.read_session().unwrap().notes
        );
    }

    #[test]
    fn merging_different_documents_is_refused() {
        let mut a = plan_doc();
        let mut b = plan_doc();
        assert!(matches!(a.merge(&mut b), Err(Error::Invalid(_))));
    }

    /// A document written by a newer release (schema 2, fields this release does not know)
    /// reads, takes edits, and keeps the unknown fields.
    #[test]
    fn documents_from_newer_releases_read_and_keep_unknown_fields() {
        let mut doc = plan_doc();
        let goal_id = doc.add_goal(&mentee(), goal("Pass calculus")).unwrap();
        doc.automerge_mut()
            .transact::<_, _, automerge::AutomergeError>(|tx| {
                tx.put(ROOT, "schemaVersion", 2_u64)?;
                tx.put(ROOT, "wellbeingScore", 7_u64)?;
                let goals = tx.get(ROOT, "goals")?.unwrap().1;
                let goal = tx.get(&goals, goal_id.as_str())?.unwrap().1;
                tx.put(&goal, "estimatedHours", 12.5)?;
                let extra = tx.put_object(&goal, "links", ObjType::List)?;
                tx.insert(&extra, 0, "https://example.edu")?;
                Ok(())
            })
            .unwrap();
        let mut newer = Document::load(doc.id(), &doc.to_bytes()).unwrap();
        let plan = newer.read_plan().unwrap();
        assert_eq!(plan.schema_version, 2);
        assert_eq!(plan.goals[0].title, "Pass calculus");

        newer.set_goal_progress(&mentee(), &goal_id, 80).unwrap();
        newer
            .edit_goal(
                &mentee(),
                &goal_id,
                crate::model::GoalEdit {
                    title: Some("Pass calculus II".into()),
                    ..Default::default()
                },
            )
            .unwrap();
        let raw = newer.automerge();
        assert_eq!(
            raw.get(ROOT, "wellbeingScore")
                .unwrap()
                .unwrap()
                .0
                .as_scalar(),
            Some(&ScalarValue::Uint(7))
        );
        let goals = raw.get(ROOT, "goals").unwrap().unwrap().1;
        let goal = raw.get(&goals, goal_id.as_str()).unwrap().unwrap().1;
        assert_eq!(
            raw.get(&goal, "estimatedHours")
                .unwrap()
                .unwrap()
                .0
                .as_f64(),
            Some(12.5)
        );
        assert!(raw.get(&goal, "links").unwrap().is_some());
        assert_eq!(newer.read_plan().unwrap().goals[0].progress, 80);
        assert_eq!(newer.schema_version().unwrap(), 2);
    }

    /// Values a newer release may add (a goal status, a session mode, a kind of document in a
    /// directory) read as unknown or unlisted instead of failing the document, survive edits, and
    /// cannot be written by this release.
    #[test]
    fn values_from_newer_releases_read_as_unknown_and_survive_edits() {
        use crate::model::{GoalStatus, SessionMode};

        let mut plan = plan_doc();
        let goal_id = plan.add_goal(&mentee(), goal("Pass calculus")).unwrap();
        let mut session = session_doc();
        let mut directory = Document::create_directory(
            crate::ids::DirectoryId(DocumentId::random()),
            &mentee(),
            crate::model::NewDirectory {
                program: "First-year success".into(),
                coach: "carla".into(),
                mentee: "ana".into(),
            },
        )
        .unwrap();
        let (plan_id, session_id) = (plan.id(), session.id());
        directory
            .add_directory_entry(
                &mentee(),
                crate::model::DirectoryEntry {
                    document: plan_id,
                    kind: DocKind::Plan,
                    title: "Plan".into(),
                },
            )
            .unwrap();
        plan.automerge_mut()
            .transact::<_, _, automerge::AutomergeError>(|tx| {
                let goals = tx.get(ROOT, "goals")?.unwrap().1;
                let goal = tx.get(&goals, goal_id.as_str())?.unwrap().1;
                tx.put(&goal, "status", "paused")
            })
            .unwrap();
        session
            .automerge_mut()
            .transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, "mode", "hybrid"))
            .unwrap();
        directory
            .automerge_mut()
            .transact::<_, _, automerge::AutomergeError>(|tx| {
                let entries = tx.get(ROOT, "entries")?.unwrap().1;
                let entry = tx.put_object(&entries, session_id.to_string(), ObjType::Map)?;
                tx.put(&entry, "kind", "recording")?;
                tx.put(&entry, "title", "Audio of the session")
            })
            .unwrap();

        assert_eq!(
            plan.read_plan().unwrap().goals[0].status,
            GoalStatus::Unknown
        );
        assert_eq!(session.read_session().unwrap().mode, SessionMode::Unknown);
        let entries = directory.read_directory().unwrap().entries;
        assert_eq!(
            entries.len(),
            1,
            "the unknown kind is not listed: {entries:?}"
        );
        assert_eq!(entries[0].document, plan_id);

        plan.set_goal_progress(&mentee(), &goal_id, 30).unwrap();
        session.set_mood(&mentee(), Some(4)).unwrap();
        let goals = plan.automerge().get(ROOT, "goals").unwrap().unwrap().1;
        let stored = plan
            .automerge()
            .get(&goals, goal_id.as_str())
            .unwrap()
            .unwrap()
            .1;
        assert_eq!(
            plan.automerge()
                .get(&stored, "status")
                .unwrap()
                .unwrap()
                .0
                .as_str(),
            Some("paused"),
            "edits keep the newer release's value"
        );
        let heads = plan.heads();
        assert!(matches!(
            plan.set_goal_status(&mentee(), &goal_id, GoalStatus::Unknown),
            Err(Error::Invalid(_))
        ));
        assert_eq!(plan.heads(), heads);
    }

    #[test]
    fn a_field_of_the_wrong_type_is_malformed_naming_the_field() {
        let mut doc = plan_doc();
        let goal_id = doc.add_goal(&mentee(), goal("Pass calculus")).unwrap();
        doc.automerge_mut()
            .transact::<_, _, automerge::AutomergeError>(|tx| {
                let goals = tx.get(ROOT, "goals")?.unwrap().1;
                let goal = tx.get(&goals, goal_id.as_str())?.unwrap().1;
                tx.put(&goal, "progress", "lots")
            })
            .unwrap();
        let error = doc.read_plan().unwrap_err();
        assert!(matches!(error, Error::Malformed(_)), "{error}");
        assert!(
            error
                .to_string()
                .contains(&format!("goals/{goal_id}/progress")),
            "{error}"
        );
    }

    /// One step of the convergence property: an edit on one replica, or an exchange of bytes.
    #[derive(Clone, Debug)]
    enum Step {
        AddGoal {
            replica: usize,
            title: u8,
        },
        Progress {
            replica: usize,
            goal: usize,
            progress: u8,
        },
        TargetDate {
            replica: usize,
            goal: usize,
            day: Option<u8>,
        },
        AddMilestone {
            replica: usize,
            goal: usize,
            due: Option<u8>,
        },
        ToggleMilestone {
            replica: usize,
            goal: usize,
            done: bool,
        },
        Strength {
            replica: usize,
            word: u8,
            add: bool,
        },
        Metric {
            replica: usize,
            name: u8,
            value: u8,
        },
        Term {
            replica: usize,
            term: u8,
        },
        Merge {
            from: usize,
            into: usize,
        },
        SaveAndLoad {
            replica: usize,
        },
        SendIncremental {
            from: usize,
            into: usize,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        let r = 0..3_usize;
        prop_oneof![
            (r.clone(), 0..4_u8).prop_map(|(replica, title)| Step::AddGoal { replica, title }),
            (r.clone(), 0..8_usize, 0..=100_u8).prop_map(|(replica, goal, progress)| {
                Step::Progress {
                    replica,
                    goal,
                    progress,
                }
            }),
            (r.clone(), 0..8_usize, proptest::option::of(0..60_u8))
                .prop_map(|(replica, goal, day)| Step::TargetDate { replica, goal, day }),
            (r.clone(), 0..8_usize, proptest::option::of(0..60_u8))
                .prop_map(|(replica, goal, due)| Step::AddMilestone { replica, goal, due }),
            (r.clone(), 0..8_usize, any::<bool>()).prop_map(|(replica, goal, done)| {
                Step::ToggleMilestone {
                    replica,
                    goal,
                    done,
                }
            }),
            (r.clone(), 0..3_u8, any::<bool>()).prop_map(|(replica, word, add)| Step::Strength {
                replica,
                word,
                add
            }),
            (r.clone(), 0..2_u8, 0..50_u8).prop_map(|(replica, name, value)| Step::Metric {
                replica,
                name,
                value
            }),
            (r.clone(), 0..3_u8).prop_map(|(replica, term)| Step::Term { replica, term }),
            (r.clone(), r.clone()).prop_map(|(from, into)| Step::Merge { from, into }),
            r.clone().prop_map(|replica| Step::SaveAndLoad { replica }),
            (r.clone(), r).prop_map(|(from, into)| Step::SendIncremental { from, into }),
        ]
    }

    fn day(offset: u8) -> NaiveDate {
        NaiveDate::from_ymd_opt(2025, 3, 1).unwrap() + chrono::Days::new(u64::from(offset))
    }

    /// Applies one step. Edits that the domain refuses (removing an absent strength) are fine:
    /// they must leave the replica unchanged, which the final comparison also checks.
    fn apply(replicas: &mut [Document], step: &Step, minute: i64) {
        let edit_ctx = |replica: usize| ctx(&format!("user{replica}"), replica as u8 + 1, minute);
        let pick_goal = |doc: &Document, index: usize| -> Option<GoalId> {
            let goals = doc.read_plan().unwrap().goals;
            (!goals.is_empty()).then(|| goals[index % goals.len()].id.clone())
        };
        match *step {
            Step::AddGoal { replica, title } => {
                let c = edit_ctx(replica);
                replicas[replica]
                    .add_goal(&c, goal(&format!("Goal {title}")))
                    .unwrap();
            }
            Step::Progress {
                replica,
                goal,
                progress,
            } => {
                if let Some(id) = pick_goal(&replicas[replica], goal) {
                    replicas[replica]
                        .set_goal_progress(&edit_ctx(replica), &id, progress)
                        .unwrap();
                }
            }
            Step::TargetDate {
                replica,
                goal,
                day: offset,
            } => {
                if let Some(id) = pick_goal(&replicas[replica], goal) {
                    let date = offset.map(day);
                    replicas[replica]
                        .set_goal_target_date(&edit_ctx(replica), &id, date)
                        .unwrap();
                }
            }
            Step::AddMilestone { replica, goal, due } => {
                if let Some(id) = pick_goal(&replicas[replica], goal) {
                    let milestone = NewMilestone {
                        title: "Step".into(),
                        due: due.map(day),
                    };
                    replicas[replica]
                        .add_milestone(&edit_ctx(replica), &id, milestone)
                        .unwrap();
                }
            }
            Step::ToggleMilestone {
                replica,
                goal,
                done,
            } => {
                if let Some(id) = pick_goal(&replicas[replica], goal) {
                    let plan = replicas[replica].read_plan().unwrap();
                    let target = plan.goals.iter().find(|g| g.id == id).unwrap();
                    if let Some(milestone) = target.milestones.first() {
                        replicas[replica]
                            .set_milestone_done(&edit_ctx(replica), &id, &milestone.id, done)
                            .unwrap();
                    }
                }
            }
            Step::Strength { replica, word, add } => {
                let word = ["curious", "kind", "organised"][usize::from(word)];
                let c = edit_ctx(replica);
                if add {
                    replicas[replica].add_strength(&c, word).unwrap();
                } else {
                    let heads = replicas[replica].heads();
                    if replicas[replica].remove_strength(&c, word).is_err() {
                        assert_eq!(replicas[replica].heads(), heads);
                    }
                }
            }
            Step::Metric {
                replica,
                name,
                value,
            } => {
                let metric = Metric {
                    name: ["GPA", "Credits"][usize::from(name)].into(),
                    target: 3.5,
                    current: Some(f64::from(value) / 10.0),
                };
                replicas[replica]
                    .set_metric(&edit_ctx(replica), metric)
                    .unwrap();
            }
            Step::Term { replica, term } => {
                replicas[replica]
                    .set_term(&edit_ctx(replica), &format!("Term {term}"))
                    .unwrap();
            }
            Step::Merge { from, into } => {
                if from != into {
                    let mut source = replicas[from].clone();
                    replicas[into].merge(&mut source).unwrap();
                }
            }
            Step::SaveAndLoad { replica } => {
                let id = replicas[replica].id();
                let bytes = replicas[replica].save();
                replicas[replica] = Document::load(id, &bytes).unwrap();
            }
            Step::SendIncremental { from, into } => {
                let bytes = replicas[from].save_incremental();
                if from != into {
                    replicas[into].apply_changes(&bytes).unwrap();
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Three replicas editing a plan in any interleaving, exchanging changes by merge, by
        /// save-and-load and by incremental chunks, end equal once everyone has everything.
        #[test]
        fn replicas_converge_whatever_the_order(steps in proptest::collection::vec(step(), 0..40)) {
            let origin = plan_doc();
            let mut replicas: Vec<Document> = (0..3)
                .map(|_| Document::load(origin.id(), &origin.to_bytes()).unwrap())
                .collect();
            for (minute, step) in steps.iter().enumerate() {
                apply(&mut replicas, step, minute as i64 + 1);
            }
            for (from, into) in [(1, 0), (2, 0), (0, 1), (0, 2)] {
                let mut source = replicas[from].clone();
                replicas[into].merge(&mut source).unwrap();
            }
            let expected = replicas[0].read_plan().unwrap();
            for replica in &replicas[1..] {
                prop_assert_eq!(replica.heads(), replicas[0].heads());
                prop_assert_eq!(&replica.read_plan().unwrap(), &expected);
                prop_assert_eq!(replica.conflicts().unwrap(), replicas[0].conflicts().unwrap());
            }
            let reloaded = Document::load(origin.id(), &replicas[0].to_bytes()).unwrap();
            prop_assert_eq!(reloaded.read_plan().unwrap(), expected);
        }
    }
}
