//! The device-facing repository: typed edits made durable in the local store.
//!
//! [`Repo`] is what the app (through the bindings) talks to. Each domain edit
//! 1. takes the document from the in-memory cache, or loads it from its stored chunks,
//! 2. applies the edit as one Automerge change, authored by this user on this device, now,
//! 3. appends the change's bytes and the document's new projection rows in one SQLite
//!    transaction, and returns only after that transaction commits.
//!
//! If anything after step 2 fails (disk full, locked database), the edited copy is dropped from
//! the cache, so the next read reloads the document from what is really stored: the app never sees
//! a change that is not on disk.
//!
//! ```
//! use tandem_core::model::{NewGoal, NewPlan};
//! use tandem_core::repo::{Repo, RepoConfig};
//! use tandem_core::UserId;
//!
//! let mut repo = Repo::open_in_memory(RepoConfig::new(UserId::from("carla"), "Carla's phone"))?;
//! let plan = repo.create_plan(NewPlan {
//!     mentee: UserId::from("ana"),
//!     coaches: vec![UserId::from("carla")],
//!     program: "First-year success".into(),
//!     term: "Spring 2025".into(),
//!     strengths: vec![],
//!     challenges: vec![],
//!     learning_style: String::new(),
//! })?;
//! let goal = repo.add_goal(plan, NewGoal {
//!     title: "Pass Calculus I".into(),
//!     description: String::new(),
//!     category: "academic".into(),
//!     target_date: None,
//! })?;
//! repo.update_progress(plan, &goal, 40)?;
//! assert_eq!(repo.plan(plan)?.goals[0].progress, 40);
//! assert_eq!(repo.store().goals_of_plan(plan)?[0].progress, 40);
//! # Ok::<(), tandem_core::Error>(())
//! ```

mod cache;

use std::path::Path;
use std::time::Duration;

use automerge::{ChangeHash, ReadDoc};
use chrono::{NaiveDate, Utc};

use self::cache::DocumentCache;
use crate::doc::{self, Document, EditContext};
use crate::error::{Error, Result};
use crate::ids::{
    ActionItemId, CheckInId, DeviceId, DirectoryId, DocumentId, GoalId, MilestoneId, NotesId,
    PlanId, SessionId, UserId,
};
use crate::model::{
    Author, Conflict, Directory, DirectoryEntry, DocKind, GoalEdit, GoalStatus, HistoryEntry,
    Metric, NewActionItem, NewCheckIn, NewDirectory, NewGoal, NewMilestone, NewNotes, NewPlan,
    NewSession, Plan, PrivateNotes, Resource, SessionLog,
};
use crate::store::projection::{MilestonesDue, SessionsBetween};
use crate::store::{
    ActionItemRow, CheckInRow, ChunkKind, DocumentWrite, Durability, EncryptionKey, MilestoneRow,
    PlanRow, Projection, SessionRow, StalePlan, Store, StoreConfig,
};

/// How to open a [`Repo`].
#[derive(Clone, Debug)]
pub struct RepoConfig {
    /// The person using this device. A store belongs to one user; opening it as another is
    /// refused.
    pub user: UserId,
    /// A name for this device that people recognise ("Ana's phone").
    pub device_name: String,
    pub durability: Durability,
    pub busy_timeout: Duration,
    /// How many documents stay loaded in memory. Each costs roughly its saved size a few times
    /// over; small documents are tens of kilobytes.
    pub cache_limit: usize,
    /// Encrypts the device's database at rest with this key (see [`StoreConfig::key`]).
    pub key: Option<EncryptionKey>,
}

impl RepoConfig {
    /// A configuration with [`Durability::Full`], a 5 s busy timeout and 256 cached documents.
    pub fn new(user: UserId, device_name: impl Into<String>) -> Self {
        Self {
            user,
            device_name: device_name.into(),
            durability: Durability::Full,
            busy_timeout: Duration::from_secs(5),
            cache_limit: 256,
            key: None,
        }
    }
}

/// The device's documents: typed edits, durable before they return. See the
/// [module documentation](self).
#[derive(Debug)]
pub struct Repo {
    store: Store,
    author: Author,
    cache: DocumentCache,
    /// Local writes since the sync layer last looked, when it asked to see them.
    local_commits: Option<Vec<LocalCommit>>,
}

/// Bytes of local changes just committed, for the sync layer to hand to its engine without
/// storing them a second time.
#[derive(Clone, Debug)]
pub(crate) struct LocalCommit {
    pub(crate) document: DocumentId,
    pub(crate) bytes: Vec<u8>,
}

/// A document a peer's changes created: read while it was loaded to be stored.
#[derive(Clone, Debug)]
pub(crate) struct CreatedDocument {
    pub(crate) kind: DocKind,
    pub(crate) root_keys: Vec<String>,
}

/// Where the changes of a write come from: this device (they enter the outbox) or a peer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Origin {
    Local,
    Peer,
}

impl Repo {
    /// Opens (creating if needed) the store at `path`. The first open makes this device's id
    /// and records the user; later opens read them back.
    pub fn open(path: impl AsRef<Path>, config: RepoConfig) -> Result<Self> {
        let store = Store::open(
            path,
            StoreConfig {
                durability: config.durability,
                busy_timeout: config.busy_timeout,
                key: config.key.clone(),
            },
        )?;
        Self::with_store(store, config)
    }

    /// A repo whose store lives in memory, for tests and previews.
    pub fn open_in_memory(config: RepoConfig) -> Result<Self> {
        Self::with_store(Store::open_in_memory()?, config)
    }

    fn with_store(mut store: Store, config: RepoConfig) -> Result<Self> {
        let device = store.device_id_or_create()?;
        match store.user()? {
            Some(owner) if owner != config.user => {
                return Err(Error::invalid(format!(
                    "this store belongs to {owner}, not {}",
                    config.user
                )));
            }
            Some(_) => {}
            None => store.set_user(&config.user)?,
        }
        if store.device_name()?.as_deref() != Some(config.device_name.as_str()) {
            store.set_device_name(&config.device_name)?;
        }
        Ok(Self {
            store,
            author: Author {
                user: config.user,
                device,
            },
            cache: DocumentCache::new(config.cache_limit),
            local_commits: None,
        })
    }

    pub fn user(&self) -> &UserId {
        &self.author.user
    }

    pub fn device(&self) -> DeviceId {
        self.author.device
    }

    /// The store, for the projection queries not wrapped here and for the sync driver.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The store for writing, e.g. sync state. Document chunks should go through the repo, so
    /// that its cache stays in step.
    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    // ---- plans ----

    pub fn create_plan(&mut self, plan: NewPlan) -> Result<PlanId> {
        let id = PlanId(DocumentId::random());
        let ctx = self.context();
        self.create_local(Document::create_plan(id, &ctx, plan)?)?;
        Ok(id)
    }

    pub fn plan(&mut self, id: PlanId) -> Result<Plan> {
        self.document(id.0)?.read_plan()
    }

    pub fn set_term(&mut self, plan: PlanId, term: &str) -> Result<()> {
        self.edit(plan.0, |doc, ctx| doc.set_term(ctx, term))
    }

    pub fn set_learning_style(&mut self, plan: PlanId, style: &str) -> Result<()> {
        self.edit(plan.0, |doc, ctx| doc.set_learning_style(ctx, style))
    }

    pub fn add_strength(&mut self, plan: PlanId, strength: &str) -> Result<()> {
        self.edit(plan.0, |doc, ctx| doc.add_strength(ctx, strength))
    }

    pub fn add_challenge(&mut self, plan: PlanId, challenge: &str) -> Result<()> {
        self.edit(plan.0, |doc, ctx| doc.add_challenge(ctx, challenge))
    }

    pub fn add_goal(&mut self, plan: PlanId, goal: NewGoal) -> Result<GoalId> {
        self.edit(plan.0, |doc, ctx| doc.add_goal(ctx, goal))
    }

    pub fn edit_goal(&mut self, plan: PlanId, goal: &GoalId, edit: GoalEdit) -> Result<()> {
        self.edit(plan.0, |doc, ctx| doc.edit_goal(ctx, goal, edit))
    }

    pub fn set_goal_status(
        &mut self,
        plan: PlanId,
        goal: &GoalId,
        status: GoalStatus,
    ) -> Result<()> {
        self.edit(plan.0, |doc, ctx| doc.set_goal_status(ctx, goal, status))
    }

    pub fn set_goal_target_date(
        &mut self,
        plan: PlanId,
        goal: &GoalId,
        date: Option<NaiveDate>,
    ) -> Result<()> {
        self.edit(plan.0, |doc, ctx| doc.set_goal_target_date(ctx, goal, date))
    }

    /// Sets a goal's progress, in percent (0 to 100).
    pub fn update_progress(&mut self, plan: PlanId, goal: &GoalId, progress: u8) -> Result<()> {
        self.edit(plan.0, |doc, ctx| {
            doc.set_goal_progress(ctx, goal, progress)
        })
    }

    pub fn add_milestone(
        &mut self,
        plan: PlanId,
        goal: &GoalId,
        milestone: NewMilestone,
    ) -> Result<MilestoneId> {
        self.edit(plan.0, |doc, ctx| doc.add_milestone(ctx, goal, milestone))
    }

    pub fn complete_milestone(
        &mut self,
        plan: PlanId,
        goal: &GoalId,
        milestone: &MilestoneId,
    ) -> Result<()> {
        self.set_milestone_done(plan, goal, milestone, true)
    }

    pub fn set_milestone_done(
        &mut self,
        plan: PlanId,
        goal: &GoalId,
        milestone: &MilestoneId,
        done: bool,
    ) -> Result<()> {
        self.edit(plan.0, |doc, ctx| {
            doc.set_milestone_done(ctx, goal, milestone, done)
        })
    }

    pub fn set_milestone_due(
        &mut self,
        plan: PlanId,
        goal: &GoalId,
        milestone: &MilestoneId,
        due: Option<NaiveDate>,
    ) -> Result<()> {
        self.edit(plan.0, |doc, ctx| {
            doc.set_milestone_due(ctx, goal, milestone, due)
        })
    }

    pub fn add_resource(&mut self, plan: PlanId, resource: Resource) -> Result<()> {
        self.edit(plan.0, |doc, ctx| doc.add_resource(ctx, resource))
    }

    pub fn set_metric(&mut self, plan: PlanId, metric: Metric) -> Result<()> {
        self.edit(plan.0, |doc, ctx| doc.set_metric(ctx, metric))
    }

    pub fn add_check_in(&mut self, plan: PlanId, check_in: NewCheckIn) -> Result<CheckInId> {
        self.edit(plan.0, |doc, ctx| doc.add_check_in(ctx, check_in))
    }

    // ---- sessions ----

    /// Logs a whole session, possibly offline, as one new document.
    pub fn log_session(&mut self, session: NewSession) -> Result<SessionId> {
        let id = SessionId(DocumentId::random());
        let ctx = self.context();
        self.create_local(Document::create_session(id, &ctx, session)?)?;
        Ok(id)
    }

    pub fn session(&mut self, id: SessionId) -> Result<SessionLog> {
        self.document(id.0)?.read_session()
    }

    /// Replaces the session's notes; Automerge records it as the smallest splice, so a
    /// concurrent edit elsewhere in the text survives.
    pub fn edit_session_notes(&mut self, session: SessionId, text: &str) -> Result<()> {
        self.edit(session.0, |doc, ctx| doc.replace_session_notes(ctx, text))
    }

    pub fn splice_session_notes(
        &mut self,
        session: SessionId,
        position: usize,
        delete: usize,
        insert: &str,
    ) -> Result<()> {
        self.edit(session.0, |doc, ctx| {
            doc.splice_session_notes(ctx, position, delete, insert)
        })
    }

    pub fn add_action_item(
        &mut self,
        session: SessionId,
        item: NewActionItem,
    ) -> Result<ActionItemId> {
        self.edit(session.0, |doc, ctx| doc.add_action_item(ctx, item))
    }

    /// Ticks an action item off (or back on, with `done == false`).
    pub fn tick_action_item(
        &mut self,
        session: SessionId,
        item: &ActionItemId,
        done: bool,
    ) -> Result<()> {
        self.edit(session.0, |doc, ctx| {
            doc.set_action_item_done(ctx, item, done)
        })
    }

    pub fn set_follow_up(&mut self, session: SessionId, date: Option<NaiveDate>) -> Result<()> {
        self.edit(session.0, |doc, ctx| doc.set_follow_up(ctx, date))
    }

    pub fn set_mood(&mut self, session: SessionId, mood: Option<u8>) -> Result<()> {
        self.edit(session.0, |doc, ctx| doc.set_mood(ctx, mood))
    }

    pub fn add_topic(&mut self, session: SessionId, topic: &str) -> Result<()> {
        self.edit(session.0, |doc, ctx| doc.add_topic(ctx, topic))
    }

    pub fn mark_goal_discussed(&mut self, session: SessionId, goal: &GoalId) -> Result<()> {
        self.edit(session.0, |doc, ctx| doc.mark_goal_discussed(ctx, goal))
    }

    // ---- private notes ----

    pub fn create_private_notes(&mut self, notes: NewNotes) -> Result<NotesId> {
        let id = NotesId(DocumentId::random());
        let ctx = self.context();
        self.create_local(Document::create_notes(id, &ctx, notes)?)?;
        Ok(id)
    }

    pub fn private_notes(&mut self, id: NotesId) -> Result<PrivateNotes> {
        self.document(id.0)?.read_notes()
    }

    pub fn edit_private_notes(&mut self, notes: NotesId, text: &str) -> Result<()> {
        self.edit(notes.0, |doc, ctx| doc.replace_private_notes(ctx, text))
    }

    // ---- directories ----

    pub fn create_directory(&mut self, directory: NewDirectory) -> Result<DirectoryId> {
        let id = DirectoryId(DocumentId::random());
        let ctx = self.context();
        self.create_local(Document::create_directory(id, &ctx, directory)?)?;
        Ok(id)
    }

    pub fn directory(&mut self, id: DirectoryId) -> Result<Directory> {
        self.document(id.0)?.read_directory()
    }

    pub fn add_directory_entry(
        &mut self,
        directory: DirectoryId,
        entry: DirectoryEntry,
    ) -> Result<()> {
        self.edit(directory.0, |doc, ctx| doc.add_directory_entry(ctx, entry))
    }

    pub fn remove_directory_entry(
        &mut self,
        directory: DirectoryId,
        document: DocumentId,
    ) -> Result<()> {
        self.edit(directory.0, |doc, ctx| {
            doc.remove_directory_entry(ctx, document)
        })
    }

    // ---- any document ----

    /// The kind of a stored document, or `None` when this device does not hold it.
    pub fn kind(&self, id: DocumentId) -> Result<Option<DocKind>> {
        self.store.document_kind(id)
    }

    /// The document's current heads (the hashes of its latest changes).
    pub fn heads(&mut self, id: DocumentId) -> Result<Vec<ChangeHash>> {
        Ok(self.document(id)?.heads())
    }

    /// Fields that concurrent edits left with several values, for the app to resolve.
    pub fn conflicts(&mut self, id: DocumentId) -> Result<Vec<Conflict>> {
        self.document(id)?.conflicts()
    }

    /// Every change of the document, with who made it and when.
    pub fn history(&mut self, id: DocumentId) -> Result<Vec<HistoryEntry>> {
        Ok(self.document(id)?.history())
    }

    /// The history entries of the changes that took the document from `before` to `after`
    /// (see [`Document::history_between`]): what a
    /// [`RemoteChange`](crate::device::RemoteChange) brought.
    pub fn history_between(
        &mut self,
        id: DocumentId,
        before: &[ChangeHash],
        after: &[ChangeHash],
    ) -> Result<Vec<HistoryEntry>> {
        Ok(self.document(id)?.history_between(before, after))
    }

    /// The document in the plain Automerge format, which other Automerge programs read.
    pub fn export(&mut self, id: DocumentId) -> Result<Vec<u8>> {
        Ok(doc::export(self.document(id)?))
    }

    /// Stores a document exported by [`Repo::export`] (or by any Automerge program) as a new
    /// document with a fresh id, and returns its id and kind.
    pub fn import(&mut self, bytes: &[u8]) -> Result<(DocumentId, DocKind)> {
        let document = doc::import(bytes)?;
        let (id, kind) = (document.id(), document.kind());
        self.create(document, Origin::Local)?;
        Ok((id, kind))
    }

    /// Applies changes received from a peer (change chunks or a saved document) and stores them
    /// with the refreshed projection. A document this device does not hold yet is created from
    /// them. Returns only after the commit.
    pub fn apply_changes(&mut self, id: DocumentId, bytes: &[u8]) -> Result<()> {
        self.apply_peer_changes(id, bytes).map(|_| ())
    }

    /// [`Repo::apply_changes`], telling what a document it created holds: its kind and root
    /// keys (`None` when the document was already stored).
    pub(crate) fn apply_peer_changes(
        &mut self,
        id: DocumentId,
        bytes: &[u8],
    ) -> Result<Option<CreatedDocument>> {
        if self.store.document_exists(id)? {
            self.persist_edit(id, Origin::Peer, |doc| doc.apply_changes(bytes))?;
            Ok(None)
        } else {
            // Loading verifies the bytes (hashes, a Tandem document) and gives the projection.
            let document = Document::load(id, bytes)?;
            // They load to exactly this document, so they are its first chunk as they came:
            // saving it again would only re-encode the same history.
            self.write(&document, ChunkKind::Snapshot, bytes, &[])?;
            let created = CreatedDocument {
                kind: document.kind(),
                root_keys: document.automerge().keys(automerge::ROOT).collect(),
            };
            self.keep(document);
            Ok(Some(created))
        }
    }

    /// [`Repo::apply_changes`] for several documents in one store transaction (one flush of the
    /// log instead of one per document). Returns each one's result, only after the commit; if
    /// the commit fails, nothing is stored and that error is returned.
    pub(crate) fn apply_changes_together(
        &mut self,
        changes: &[(DocumentId, &[u8])],
    ) -> Result<Vec<Result<Option<CreatedDocument>>>> {
        self.store.begin()?;
        let results: Vec<_> = changes
            .iter()
            .map(|(id, bytes)| self.apply_peer_changes(*id, bytes))
            .collect();
        if let Err(e) = self.store.commit() {
            // The cache holds what the lost transaction wrote: read it from the store again.
            for (id, _) in changes {
                self.cache.take(id);
            }
            return Err(e);
        }
        Ok(results)
    }

    /// Folds the document's chunks into one snapshot. Every change survives: the snapshot is
    /// made from exactly the chunks it replaces, and chunks stored meanwhile are kept.
    pub fn compact(&mut self, id: DocumentId) -> Result<()> {
        let stored = self
            .store
            .load_document_bytes(id)?
            .ok_or_else(|| Error::not_found(format!("document {id}")))?;
        let mut folded = Document::load(id, &stored.bytes)?;
        self.store.compact(id, &folded.save(), stored.last_chunk)?;
        Ok(())
    }

    /// Local changes made on this device that the relay has not saved yet.
    pub fn unsaved_changes(&self, id: DocumentId) -> Result<Vec<ChangeHash>> {
        self.store.unsaved_changes(id)
    }

    /// Whether a change made on this device is saved on the relay; `None` when the change was
    /// not made here.
    pub fn is_saved_to_server(&self, change: &ChangeHash) -> Result<Option<bool>> {
        self.store.is_saved_to_server(change)
    }

    /// From now on, keep the bytes of every local write for [`Repo::take_local_commits`].
    pub(crate) fn track_local_commits(&mut self) {
        self.local_commits.get_or_insert_with(Vec::new);
    }

    /// The local writes committed since the last call (if tracking is on).
    pub(crate) fn take_local_commits(&mut self) -> Vec<LocalCommit> {
        self.local_commits
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Drops every loaded document from memory; they are reloaded from the store on next use.
    pub fn clear_cache(&mut self) {
        self.cache.clear();
    }

    // ---- queries over the projection ----

    pub fn plans_of_mentee(&self, mentee: &UserId) -> Result<Vec<PlanRow>> {
        self.store.plans_of_mentee(mentee)
    }

    pub fn plans_of_coach(&self, coach: &UserId) -> Result<Vec<PlanRow>> {
        self.store.plans_of_coach(coach)
    }

    pub fn milestones_due(&self, query: &MilestonesDue) -> Result<Vec<MilestoneRow>> {
        self.store.milestones_due(query)
    }

    pub fn sessions_between(&self, query: &SessionsBetween) -> Result<Vec<SessionRow>> {
        self.store.sessions_between(query)
    }

    pub fn open_action_items_owned_by(&self, owner: &UserId) -> Result<Vec<ActionItemRow>> {
        self.store.open_action_items_owned_by(owner)
    }

    pub fn open_action_items_of_mentee(&self, mentee: &UserId) -> Result<Vec<ActionItemRow>> {
        self.store.open_action_items_of_mentee(mentee)
    }

    pub fn latest_check_ins(&self, plan: Option<PlanId>, limit: u32) -> Result<Vec<CheckInRow>> {
        self.store.latest_check_ins(plan, limit)
    }

    pub fn plans_without_session_since(
        &self,
        since: chrono::DateTime<Utc>,
    ) -> Result<Vec<StalePlan>> {
        self.store.plans_without_session_since(since)
    }

    // ---- the machinery ----

    fn context(&self) -> EditContext {
        EditContext::new(self.author.clone(), Utc::now())
    }

    /// The document, from the cache or loaded from its chunks (then cached).
    fn document(&mut self, id: DocumentId) -> Result<&Document> {
        let document = self.take(id)?;
        Ok(self.keep(document))
    }

    /// Removes the document from the cache for editing, loading it if it is not there.
    fn take(&mut self, id: DocumentId) -> Result<Document> {
        if let Some(document) = self.cache.take(&id) {
            return Ok(document);
        }
        let stored = self
            .store
            .load_document_bytes(id)?
            .ok_or_else(|| Error::not_found(format!("document {id}")))?;
        let document = Document::load(id, &stored.bytes)?;
        if let Some(listed) = self.store.document_kind(id)?
            && listed != document.kind()
        {
            return Err(Error::Corrupt {
                document: id,
                reason: format!(
                    "the store lists it as a {} but it holds a {}",
                    listed.as_str(),
                    document.kind().as_str()
                ),
            });
        }
        Ok(document)
    }

    /// Puts a document (whose every change is stored) back in the cache.
    fn keep(&mut self, document: Document) -> &Document {
        self.cache.keep(document)
    }

    /// Runs one domain edit, authored by this user on this device now, and makes it durable.
    fn edit<T>(
        &mut self,
        id: DocumentId,
        apply: impl FnOnce(&mut Document, &EditContext) -> Result<T>,
    ) -> Result<T> {
        let ctx = self.context();
        self.persist_edit(id, Origin::Local, |doc| apply(doc, &ctx))
    }

    /// Applies `change` to the document and stores the new changes with the projection.
    ///
    /// The document is out of the cache while this runs, and goes back only once its changes are
    /// committed; on any error it is dropped, so the cache never holds an unstored change.
    fn persist_edit<T>(
        &mut self,
        id: DocumentId,
        origin: Origin,
        change: impl FnOnce(&mut Document) -> Result<T>,
    ) -> Result<T> {
        let mut document = self.take(id)?;
        let before = document.heads();
        let output = change(&mut document)?;
        let bytes = document.save_incremental();
        let local = match origin {
            Origin::Local => changes_after(&document, &before),
            Origin::Peer => Vec::new(),
        };
        self.write(&document, ChunkKind::Incremental, &bytes, &local)?;
        self.keep(document);
        Ok(output)
    }

    /// Stores a document made on this device.
    fn create_local(&mut self, document: Document) -> Result<()> {
        self.create(document, Origin::Local)
    }

    /// Stores a new document as a snapshot with its projection, then caches it.
    fn create(&mut self, mut document: Document, origin: Origin) -> Result<()> {
        if self.store.document_exists(document.id())? {
            return Err(Error::invalid(format!(
                "document {} is already stored",
                document.id()
            )));
        }
        let bytes = document.save();
        let local = match origin {
            Origin::Local => changes_after(&document, &[]),
            Origin::Peer => Vec::new(),
        };
        self.write(&document, ChunkKind::Snapshot, &bytes, &local)?;
        self.keep(document);
        Ok(())
    }

    /// One durable write: the chunk, the projection read from the edited document, and the
    /// hashes of the local changes it holds (for the outbox).
    fn write(
        &mut self,
        document: &Document,
        chunk_kind: ChunkKind,
        bytes: &[u8],
        local_changes: &[ChangeHash],
    ) -> Result<()> {
        let plan;
        let session;
        let projection = match document.kind() {
            DocKind::Plan => {
                plan = document.read_plan()?;
                Projection::Plan(&plan)
            }
            DocKind::Session => {
                session = document.read_session()?;
                Projection::Session(&session)
            }
            DocKind::Notes => Projection::Notes,
            DocKind::Directory => Projection::Directory,
        };
        self.store.append_local_chunk(
            &DocumentWrite {
                id: document.id(),
                kind: document.kind(),
                chunk_kind,
                bytes,
                projection,
            },
            local_changes,
        )?;
        if !local_changes.is_empty()
            && let Some(commits) = self.local_commits.as_mut()
        {
            commits.push(LocalCommit {
                document: document.id(),
                bytes: bytes.to_vec(),
            });
        }
        Ok(())
    }
}

/// The hashes of the document's changes that are not covered by `heads`.
fn changes_after(document: &Document, heads: &[ChangeHash]) -> Vec<ChangeHash> {
    document
        .automerge()
        .get_changes_meta(heads)
        .into_iter()
        .map(|change| change.hash)
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
