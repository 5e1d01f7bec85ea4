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
            tx.put(automerge::ROOT, "schemaVersion", SCHEMA_VERSION)?;
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
