//! The `Engine`: one device's documents, opened on a database file. Each method converts its
//! arguments, calls the core's `Device` (the `inner`: its [`Repo`], or the `SyncClient` holding
//! it while sync runs), and converts the answer.
//!
//! Every call is safe from any thread: the device sits behind one mutex, held only while Rust code
//! runs. A panic inside the core is caught here and returned as `ApiError::Other`; the engine stays
//! usable, because the repo never caches a change that is not stored.

use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use automerge::ChangeHash;
use tandem_core::client::ClientConfig;
use tandem_core::device::{Device, RemoteChange};
use tandem_core::repo::{Repo, RepoConfig};
use tandem_core::store::EncryptionKey;
use tandem_core::{ActionItemId, DocumentId, GoalId, MilestoneId, UserId};
use tokio::runtime::Runtime;

use crate::error::{ApiError, ApiResult};
use crate::observer::{ChangeOrigin, DocumentChange, DocumentObserver, Notifier, SyncObserver};
use crate::records::{
    ActionItemSummary, CheckInSummary, Conflict, Directory, DirectoryEntry, DocKind, Durability,
    GoalEdit, GoalStatus, GoalSummary, HistoryEntry, ImportedDocument, Metric, MilestoneDue,
    MilestonesDueQuery, NewActionItem, NewCheckIn, NewDirectory, NewGoal, NewMilestone, NewNotes,
    NewPlan, NewSession, Plan, PlanSummary, PrivateNotes, Resource, SessionLog, SessionSummary,
    SessionsBetweenQuery, StalePlan, date_in, directory_id, document_id, instant_in, notes_id,
    plan_id, session_id,
};
use crate::sync::{Core, SyncStatus};

/// How to open an [`Engine`].
#[derive(Clone, PartialEq, Eq, Debug, uniffi::Record)]
pub struct EngineConfig {
    /// The person using this device. A database belongs to one user; opening it as another is
    /// refused with `InvalidInput`.
    pub user_id: String,
    /// A name people recognise, such as "Ana's phone". Shown in history and conflicts.
    pub device_name: String,
    pub durability: Durability,
    /// The relay's websocket URL, e.g. `ws://relay.example:3030/sync`; needed by `start_sync`.
    #[uniffi(default)]
    pub relay_url: Option<String>,
    /// This device's token (`tandem-server admin token issue`), sent as a bearer token.
    #[uniffi(default)]
    pub token: Option<String>,
    /// 32 random bytes kept in the Keychain or Keystore: the database file is then encrypted at
    /// rest (SQLCipher). The same key must be given on every open; a wrong one is `Storage`.
    #[uniffi(default)]
    pub encryption_key: Option<Vec<u8>>,
}

impl TryFrom<EngineConfig> for RepoConfig {
    type Error = tandem_core::Error;

    fn try_from(config: EngineConfig) -> Result<Self, Self::Error> {
        let mut repo = RepoConfig::new(UserId::from(config.user_id), config.device_name);
        repo.durability = config.durability.into();
        repo.key = config
            .encryption_key
            .as_deref()
            .map(EncryptionKey::from_slice)
            .transpose()?;
        Ok(repo)
    }
}

/// One device's coaching documents, stored in one database file. Every edit returns only once it
/// is on disk.
#[derive(Debug, uniffi::Object)]
pub struct Engine {
    inner: Mutex<Core>,
    notifier: Notifier,
    /// Relay URL and token, from the config.
    relay: (Option<String>, Option<String>),
    /// The sync client's runtime (one worker), started by the first `start_sync`. Dropped last.
    runtime: OnceLock<Runtime>,
}

#[uniffi::export]
impl Engine {
    /// Opens (creating if needed) the database at `path`.
    #[uniffi::constructor]
    pub fn open(path: String, config: EngineConfig) -> ApiResult<Arc<Self>> {
        let relay = (config.relay_url.clone(), config.token.clone());
        let device = guard(|| Device::new(Repo::open(&path, config.try_into()?)?))?;
        let engine = Arc::new(Self {
            inner: Mutex::new(Core::new(device)),
            notifier: Notifier::start()?,
            relay,
            runtime: OnceLock::new(),
        });
        // Weak: the delivery thread must not keep the engine alive.
        let weak = Arc::downgrade(&engine);
        engine
            .notifier
            .describe_remote_with(Box::new(move |change| {
                weak.upgrade()?.describe_remote(change)
            }));
        Ok(engine)
    }

    pub fn user_id(&self) -> ApiResult<String> {
        self.read(|repo| Ok(repo.user().to_string()))
    }

    /// This device's id (hex), as history entries and conflicts name it.
    pub fn device_id(&self) -> ApiResult<String> {
        self.read(|repo| Ok(repo.device().to_string()))
    }

    /// Sets (or with `null` removes) the observer told of every document change. It is called on
    /// a background thread, never on the caller's.
    pub fn set_document_observer(&self, observer: Option<Arc<dyn DocumentObserver>>) {
        self.notifier.set(observer);
    }

    // ---- sync ----

    /// Sets (or with `null` removes) the observer told of sync status, saved changes and remote
    /// changes, on the same background thread as the document observer.
    pub fn set_sync_observer(&self, observer: Option<Arc<dyn SyncObserver>>) {
        self.notifier.set_sync(observer);
    }

    /// Starts syncing with the config's relay in the background, reconnecting with backoff until
    /// `stop_sync`. Edits keep working offline meanwhile. A no-op while sync runs.
    pub fn start_sync(&self) -> ApiResult<()> {
        let (config, runtime) = (self.client_config()?, self.runtime()?);
        self.lock()
            .start(config, runtime.handle(), self.notifier.sync_forwarder())
    }

    /// Leaves the relay politely and stops syncing; blocks until the connection is closed.
    pub fn stop_sync(&self) {
        let client = self.lock().stopping();
        if let (Some(client), Some(runtime)) = (client, self.runtime.get()) {
            runtime.block_on(client.stop());
        }
        self.lock().reclaim();
    }

    /// Connects now if offline, and returns once every local change is saved on the relay and
    /// every synced document has the relay's changes. `Offline` after `timeout_ms`, or if sync is
    /// not started.
    pub async fn sync_now(&self, timeout_ms: u64) -> ApiResult<SyncStatus> {
        let (client, runtime) = (self.lock().client(), self.runtime.get());
        let (Some(client), Some(runtime)) = (client, runtime) else {
            return Err(ApiError::offline("sync is not started"));
        };
        let timeout = Duration::from_millis(timeout_ms);
        let done = runtime.spawn(async move { client.sync_now(timeout).await });
        Ok(done.await.map_err(ApiError::from_join)??.into())
    }

    pub fn sync_status(&self) -> ApiResult<SyncStatus> {
        guard(|| Ok(self.lock().status()))?
    }

    /// Whether a change made on this device (a `HistoryEntry.hash`) is stored on the relay;
    /// `null` if the change was not made on this device.
    pub fn is_saved_to_server(&self, change_hash: String) -> ApiResult<Option<bool>> {
        let hash: ChangeHash = change_hash
            .parse()
            .map_err(|e| ApiError::invalid(format!("change hash {change_hash:?}: {e}")))?;
        self.device(|device| device.is_saved_to_server(&hash))
    }

    /// Keeps a document in sync from now on, across restarts; for a directory, every document it
    /// lists too. A document this device does not hold yet is fetched from the relay.
    pub fn follow(&self, document: String) -> ApiResult<()> {
        let id = document_id(&document)?;
        self.device(|device| device.follow(id))
    }

    // ---- plans ----

    /// Creates a plan and returns its id.
    pub fn create_plan(&self, plan: NewPlan) -> ApiResult<String> {
        self.create(|repo| Ok(repo.create_plan(plan.into())?.0))
    }

    pub fn plan(&self, plan: String) -> ApiResult<Plan> {
        let id = plan_id(&plan)?;
        self.read(|repo| repo.plan(id)).map(Plan::from)
    }

    pub fn set_term(&self, plan: String, term: String) -> ApiResult<()> {
        let id = plan_id(&plan)?;
        self.edit(id.0, |repo| repo.set_term(id, &term))
    }

    pub fn set_learning_style(&self, plan: String, style: String) -> ApiResult<()> {
        let id = plan_id(&plan)?;
        self.edit(id.0, |repo| repo.set_learning_style(id, &style))
    }

    pub fn add_strength(&self, plan: String, strength: String) -> ApiResult<()> {
        let id = plan_id(&plan)?;
        self.edit(id.0, |repo| repo.add_strength(id, &strength))
    }

    pub fn add_challenge(&self, plan: String, challenge: String) -> ApiResult<()> {
        let id = plan_id(&plan)?;
        self.edit(id.0, |repo| repo.add_challenge(id, &challenge))
    }

    /// Adds a goal to the plan and returns the goal's id.
    pub fn add_goal(&self, plan: String, goal: NewGoal) -> ApiResult<String> {
        let (id, goal) = (plan_id(&plan)?, goal.try_into()?);
        self.edit(id.0, |repo| repo.add_goal(id, goal))
            .map(|goal| goal.to_string())
    }

    pub fn edit_goal(&self, plan: String, goal: String, edit: GoalEdit) -> ApiResult<()> {
        let id = plan_id(&plan)?;
        self.edit(id.0, |repo| {
            repo.edit_goal(id, &GoalId::from(goal), edit.into())
        })
    }

    pub fn set_goal_status(&self, plan: String, goal: String, status: GoalStatus) -> ApiResult<()> {
        let id = plan_id(&plan)?;
        self.edit(id.0, |repo| {
            repo.set_goal_status(id, &GoalId::from(goal), status.into())
        })
    }

    /// `date` is `YYYY-MM-DD`, or `null` to clear it.
    pub fn set_goal_target_date(
        &self,
        plan: String,
        goal: String,
        date: Option<String>,
    ) -> ApiResult<()> {
        let (id, date) = (plan_id(&plan)?, date_in(date)?);
        self.edit(id.0, |repo| {
            repo.set_goal_target_date(id, &GoalId::from(goal), date)
        })
    }

    /// Sets a goal's progress, in percent (0 to 100).
    pub fn update_progress(&self, plan: String, goal: String, progress: u8) -> ApiResult<()> {
        let id = plan_id(&plan)?;
        self.edit(id.0, |repo| {
            repo.update_progress(id, &GoalId::from(goal), progress)
        })
    }

    /// Adds a milestone to a goal and returns the milestone's id.
    pub fn add_milestone(
        &self,
        plan: String,
        goal: String,
        milestone: NewMilestone,
    ) -> ApiResult<String> {
        let (id, milestone) = (plan_id(&plan)?, milestone.try_into()?);
        self.edit(id.0, |repo| {
            repo.add_milestone(id, &GoalId::from(goal), milestone)
        })
        .map(|milestone| milestone.to_string())
    }

    pub fn set_milestone_done(
        &self,
        plan: String,
        goal: String,
        milestone: String,
        done: bool,
    ) -> ApiResult<()> {
        let id = plan_id(&plan)?;
        self.edit(id.0, |repo| {
            repo.set_milestone_done(id, &GoalId::from(goal), &MilestoneId::from(milestone), done)
        })
    }

    /// `due` is `YYYY-MM-DD`, or `null` to clear it.
    pub fn set_milestone_due(
        &self,
        plan: String,
        goal: String,
        milestone: String,
        due: Option<String>,
    ) -> ApiResult<()> {
        let (id, due) = (plan_id(&plan)?, date_in(due)?);
        self.edit(id.0, |repo| {
            repo.set_milestone_due(id, &GoalId::from(goal), &MilestoneId::from(milestone), due)
        })
    }

    pub fn add_resource(&self, plan: String, resource: Resource) -> ApiResult<()> {
        let id = plan_id(&plan)?;
        self.edit(id.0, |repo| repo.add_resource(id, resource.into()))
    }

    /// Sets the metric of that name, adding it if the plan has none.
    pub fn set_metric(&self, plan: String, metric: Metric) -> ApiResult<()> {
        let id = plan_id(&plan)?;
        self.edit(id.0, |repo| repo.set_metric(id, metric.into()))
    }

    /// Records a check-in and returns its id.
    pub fn add_check_in(&self, plan: String, check_in: NewCheckIn) -> ApiResult<String> {
        let id = plan_id(&plan)?;
        self.edit(id.0, |repo| repo.add_check_in(id, check_in.into()))
            .map(|check_in| check_in.to_string())
    }

    // ---- sessions ----

    /// Logs a whole session, possibly offline, and returns its id.
    pub fn log_session(&self, session: NewSession) -> ApiResult<String> {
        let session = session.try_into()?;
        self.create(|repo| Ok(repo.log_session(session)?.0))
    }

    pub fn session(&self, session: String) -> ApiResult<SessionLog> {
        let id = session_id(&session)?;
        self.read(|repo| repo.session(id)).map(SessionLog::from)
    }

    /// Replaces the notes; only the difference is recorded, so a concurrent edit elsewhere in
    /// the text survives.
    pub fn edit_session_notes(&self, session: String, text: String) -> ApiResult<()> {
        let id = session_id(&session)?;
        self.edit(id.0, |repo| repo.edit_session_notes(id, &text))
    }

    /// Deletes `delete` characters at `position` (in Unicode scalar values) and inserts `insert`.
    pub fn splice_session_notes(
        &self,
        session: String,
        position: u32,
        delete: u32,
        insert: String,
    ) -> ApiResult<()> {
        let id = session_id(&session)?;
        let (position, delete) = (position as usize, delete as usize);
        self.edit(id.0, |repo| {
            repo.splice_session_notes(id, position, delete, &insert)
        })
    }

    /// Adds an action item and returns its id.
    pub fn add_action_item(&self, session: String, item: NewActionItem) -> ApiResult<String> {
        let (id, item) = (session_id(&session)?, item.try_into()?);
        self.edit(id.0, |repo| repo.add_action_item(id, item))
            .map(|item| item.to_string())
    }

    /// Ticks an action item off, or back on with `done == false`.
    pub fn tick_action_item(&self, session: String, item: String, done: bool) -> ApiResult<()> {
        let id = session_id(&session)?;
        self.edit(id.0, |repo| {
            repo.tick_action_item(id, &ActionItemId::from(item), done)
        })
    }

    /// `date` is `YYYY-MM-DD`, or `null` to clear it.
    pub fn set_follow_up(&self, session: String, date: Option<String>) -> ApiResult<()> {
        let (id, date) = (session_id(&session)?, date_in(date)?);
        self.edit(id.0, |repo| repo.set_follow_up(id, date))
    }

    pub fn set_mood(&self, session: String, mood: Option<u8>) -> ApiResult<()> {
        let id = session_id(&session)?;
        self.edit(id.0, |repo| repo.set_mood(id, mood))
    }

    pub fn add_topic(&self, session: String, topic: String) -> ApiResult<()> {
        let id = session_id(&session)?;
        self.edit(id.0, |repo| repo.add_topic(id, &topic))
    }

    pub fn mark_goal_discussed(&self, session: String, goal: String) -> ApiResult<()> {
        let id = session_id(&session)?;
        self.edit(id.0, |repo| {
            repo.mark_goal_discussed(id, &GoalId::from(goal))
        })
    }

    // ---- private notes ----

    /// Creates a coach's private notes on a mentee and returns their id.
    pub fn create_private_notes(&self, notes: NewNotes) -> ApiResult<String> {
        let notes = notes.try_into()?;
        self.create(|repo| Ok(repo.create_private_notes(notes)?.0))
    }

    pub fn private_notes(&self, notes: String) -> ApiResult<PrivateNotes> {
        let id = notes_id(&notes)?;
        self.read(|repo| repo.private_notes(id))
            .map(PrivateNotes::from)
    }

    pub fn edit_private_notes(&self, notes: String, text: String) -> ApiResult<()> {
        let id = notes_id(&notes)?;
        self.edit(id.0, |repo| repo.edit_private_notes(id, &text))
    }

    // ---- directories ----

    /// Creates a pairing's directory and returns its id.
    pub fn create_directory(&self, directory: NewDirectory) -> ApiResult<String> {
        self.create(|repo| Ok(repo.create_directory(directory.into())?.0))
    }

    pub fn directory(&self, directory: String) -> ApiResult<Directory> {
        let id = directory_id(&directory)?;
        self.read(|repo| repo.directory(id)).map(Directory::from)
    }

    pub fn add_directory_entry(&self, directory: String, entry: DirectoryEntry) -> ApiResult<()> {
        let (id, entry) = (directory_id(&directory)?, entry.try_into()?);
        self.edit(id.0, |repo| repo.add_directory_entry(id, entry))
    }

    pub fn remove_directory_entry(&self, directory: String, document: String) -> ApiResult<()> {
        let (id, document) = (directory_id(&directory)?, document_id(&document)?);
        self.edit(id.0, |repo| repo.remove_directory_entry(id, document))
    }

    // ---- any document ----

    /// The kind of a document, or `null` when this device does not hold it.
    pub fn document_kind(&self, document: String) -> ApiResult<Option<DocKind>> {
        let id = document_id(&document)?;
        self.read(|repo| repo.kind(id))
            .map(|kind| kind.map(DocKind::from))
    }

    /// Fields that concurrent edits left with several values, for the app to resolve.
    pub fn conflicts(&self, document: String) -> ApiResult<Vec<Conflict>> {
        let id = document_id(&document)?;
        self.read(|repo| repo.conflicts(id))
            .map(|all| all.into_iter().map(Conflict::from).collect())
    }

    /// Every change of the document, oldest first, with who made it and when.
    pub fn history(&self, document: String) -> ApiResult<Vec<HistoryEntry>> {
        let id = document_id(&document)?;
        self.read(|repo| repo.history(id))
            .map(|all| all.into_iter().map(HistoryEntry::from).collect())
    }

    /// The document in the plain Automerge format, which other Automerge programs read.
    pub fn export_document(&self, document: String) -> ApiResult<Vec<u8>> {
        let id = document_id(&document)?;
        self.read(|repo| repo.export(id))
    }

    /// Stores an exported document as a new document with a fresh id.
    pub fn import_document(&self, bytes: Vec<u8>) -> ApiResult<ImportedDocument> {
        self.change(ChangeOrigin::Local, None, |repo| {
            let (id, kind) = repo.import(&bytes)?;
            Ok((id, (id, kind)))
        })
        .map(|(id, kind)| ImportedDocument {
            id: id.to_string(),
            kind: kind.into(),
        })
    }

    /// Merges changes of a document received from another device out of band (a file, a share
    /// sheet): the bytes of `export_document`, or Automerge changes. A document this device does
    /// not hold yet is stored under the same id. Concurrent edits then show in `conflicts`.
    pub fn apply_changes(&self, document: String, bytes: Vec<u8>) -> ApiResult<()> {
        let id = document_id(&document)?;
        self.change(ChangeOrigin::Remote, Some(id), |repo| {
            Ok((id, repo.apply_changes(id, &bytes)?))
        })
    }

    /// Folds the document's stored chunks into one snapshot; every change survives.
    pub fn compact(&self, document: String) -> ApiResult<()> {
        let id = document_id(&document)?;
        self.read(|repo| repo.compact(id))
    }

    // ---- queries over the projection ----

    pub fn plans_of_mentee(&self, mentee: String) -> ApiResult<Vec<PlanSummary>> {
        self.list(|repo| repo.plans_of_mentee(&UserId::from(mentee)))
    }

    pub fn plans_of_coach(&self, coach: String) -> ApiResult<Vec<PlanSummary>> {
        self.list(|repo| repo.plans_of_coach(&UserId::from(coach)))
    }

    pub fn goals_of_plan(&self, plan: String) -> ApiResult<Vec<GoalSummary>> {
        let id = plan_id(&plan)?;
        self.list(|repo| repo.store().goals_of_plan(id))
    }

    /// Milestones due between two dates, such as this week.
    pub fn milestones_due(&self, query: MilestonesDueQuery) -> ApiResult<Vec<MilestoneDue>> {
        let query = query.try_into()?;
        self.list(|repo| repo.milestones_due(&query))
    }

    /// Sessions that started between two instants, such as this month.
    pub fn sessions_between(&self, query: SessionsBetweenQuery) -> ApiResult<Vec<SessionSummary>> {
        let query = query.into();
        self.list(|repo| repo.sessions_between(&query))
    }

    pub fn sessions_of_plan(&self, plan: String) -> ApiResult<Vec<SessionSummary>> {
        let id = plan_id(&plan)?;
        self.list(|repo| repo.store().sessions_of_plan(id))
    }

    /// Action items not yet done that this person owns.
    pub fn open_action_items_owned_by(&self, owner: String) -> ApiResult<Vec<ActionItemSummary>> {
        self.list(|repo| repo.open_action_items_owned_by(&UserId::from(owner)))
    }

    /// Action items not yet done in this mentee's sessions.
    pub fn open_action_items_of_mentee(&self, mentee: String) -> ApiResult<Vec<ActionItemSummary>> {
        self.list(|repo| repo.open_action_items_of_mentee(&UserId::from(mentee)))
    }

    /// The latest check-ins, newest first, of one plan or (with `null`) of every plan.
    pub fn latest_check_ins(
        &self,
        plan: Option<String>,
        limit: u32,
    ) -> ApiResult<Vec<CheckInSummary>> {
        let plan = plan.as_deref().map(plan_id).transpose()?;
        self.list(|repo| repo.latest_check_ins(plan, limit))
    }

    /// Plans whose pair has had no session since `since`: the "no session in 14 days" list.
    pub fn plans_without_session_since(&self, since: SystemTime) -> ApiResult<Vec<StalePlan>> {
        self.list(|repo| repo.plans_without_session_since(instant_in(since)))
    }
}

impl Engine {
    fn lock(&self) -> MutexGuard<'_, Core> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the repo, through the device so the sync engine sees local commits, with
    /// panics caught.
    fn read<T>(&self, f: impl FnOnce(&mut Repo) -> tandem_core::Result<T>) -> ApiResult<T> {
        guard(|| self.lock().with_repo(f))
    }

    /// Runs `f` on the device, with panics caught.
    fn device<T>(&self, f: impl FnOnce(&mut Device) -> tandem_core::Result<T>) -> ApiResult<T> {
        guard(|| self.lock().with_device(f)?)
    }

    fn client_config(&self) -> ApiResult<ClientConfig> {
        let (url, token) = &self.relay;
        let url = url
            .clone()
            .ok_or_else(|| ApiError::invalid("EngineConfig.relay_url is not set"))?;
        let config = ClientConfig::new(url);
        Ok(match token {
            Some(token) => config.with_token(token),
            None => config,
        })
    }

    /// The sync runtime, started on first use.
    fn runtime(&self) -> ApiResult<&Runtime> {
        if let Some(runtime) = self.runtime.get() {
            return Ok(runtime);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tandem-sync")
            .enable_all()
            .build()
            .map_err(|e| ApiError::Other {
                reason: format!("could not start the sync runtime: {e}"),
            })?;
        Ok(self.runtime.get_or_init(|| runtime))
    }

    /// A query whose rows convert into records.
    fn list<Row, T: From<Row>>(
        &self,
        f: impl FnOnce(&Repo) -> tandem_core::Result<Vec<Row>>,
    ) -> ApiResult<Vec<T>> {
        self.read(|repo| f(repo))
            .map(|rows| rows.into_iter().map(T::from).collect())
    }

    /// An edit of one document; the observer hears of it once the lock is released.
    fn edit<T>(
        &self,
        document: DocumentId,
        f: impl FnOnce(&mut Repo) -> tandem_core::Result<T>,
    ) -> ApiResult<T> {
        self.change(ChangeOrigin::Local, Some(document), |repo| {
            Ok((document, f(repo)?))
        })
    }

    /// The creation of a document; returns its id.
    fn create(
        &self,
        f: impl FnOnce(&mut Repo) -> tandem_core::Result<DocumentId>,
    ) -> ApiResult<String> {
        self.change(ChangeOrigin::Local, None, |repo| {
            let id = f(repo)?;
            Ok((id, id))
        })
        .map(|id| id.to_string())
    }

    /// Runs a change of one document (`existing`, when it is known beforehand) and queues a
    /// [`DocumentChange`] for the observer, which runs after the lock is released.
    fn change<T>(
        &self,
        origin: ChangeOrigin,
        existing: Option<DocumentId>,
        f: impl FnOnce(&mut Repo) -> tandem_core::Result<(DocumentId, T)>,
    ) -> ApiResult<T> {
        let (output, change) = self.read(|repo| {
            let before = match existing {
                Some(id) if repo.kind(id)?.is_some() => repo.history(id)?.len(),
                _ => 0,
            };
            let (document, output) = f(repo)?;
            Ok((output, describe(repo, document, origin, before)?))
        })?;
        self.notifier.notify(change);
        Ok(output)
    }
}

impl Engine {
    /// What the document observer is told of another device's changes that sync stored: the
    /// history entries between the heads before and after them.
    fn describe_remote(&self, change: &RemoteChange) -> Option<DocumentChange> {
        let kind = change.kind?;
        // A document that cannot be read now (damaged) has no history to tell; the sync
        // observer's `remote_change` still names it.
        let entries = self
            .read(|repo| repo.history_between(change.document, &change.before, &change.heads))
            .ok()?;
        Some(DocumentChange {
            document: change.document.to_string(),
            kind: kind.into(),
            origin: ChangeOrigin::Remote,
            changes: entries.into_iter().map(HistoryEntry::from).collect(),
        })
    }
}

/// What the observer is told of a change made through this engine: the history entries it added.
///
/// A stopgap until the core reports changes itself (see bindings/README.md, "Missing core API"):
/// it compares the document's history before and after. Automerge lists changes in the order they
/// were applied, so the new ones are at the end.
fn describe(
    repo: &mut Repo,
    document: DocumentId,
    origin: ChangeOrigin,
    before: usize,
) -> tandem_core::Result<DocumentChange> {
    let kind = repo
        .kind(document)?
        .ok_or_else(|| tandem_core::Error::not_found(format!("document {document}")))?;
    let changes = repo.history(document)?.into_iter().skip(before);
    Ok(DocumentChange {
        document: document.to_string(),
        kind: kind.into(),
        origin,
        changes: changes.map(HistoryEntry::from).collect(),
    })
}

/// Runs `f`, turning a panic into [`ApiError::Other`] instead of unwinding into foreign code.
pub(crate) fn guard<T>(f: impl FnOnce() -> tandem_core::Result<T>) -> ApiResult<T> {
    panic::catch_unwind(AssertUnwindSafe(f))
        .map_err(ApiError::from_panic)?
        .map_err(ApiError::from)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn engine(dir: &std::path::Path) -> Arc<Engine> {
        let config = EngineConfig {
            user_id: "carla".into(),
            device_name: "Carla's phone".into(),
            durability: Durability::Normal,
            relay_url: None,
            token: None,
            encryption_key: None,
        };
        Engine::open(dir.join("t.db").display().to_string(), config).unwrap()
    }

    #[test]
    fn a_panic_in_the_core_is_an_error_and_the_engine_stays_usable() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        let result: ApiResult<()> = engine.read(|_| panic!("automerge fell over"));
        match result {
            Err(ApiError::Other { reason }) => assert!(reason.contains("automerge fell over")),
            other => panic!("expected ApiError::Other, got {other:?}"),
        }
        // The panic poisoned the mutex while it held the repo; the engine carries on.
        assert_eq!(engine.user_id().unwrap(), "carla");
    }

    #[test]
    fn core_errors_map_to_what_the_app_can_act_on() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        assert!(matches!(
            engine.plan("nope".into()),
            Err(ApiError::InvalidInput { .. })
        ));
        let unknown = DocumentId::random().to_string();
        assert!(matches!(
            engine.plan(unknown),
            Err(ApiError::NotFound { .. })
        ));
    }
}
