//! Observers the app implements (foreign traits), and the thread that calls them.
//!
//! Callbacks never run on the thread that made the edit, and never with a Rust lock held: the
//! engine (and the sync client's task) queues each event, and one thread per engine
//! (`tandem-observers`) takes them in order and calls the observer. An app updates its UI by hopping to the main thread itself
//! (`Dispatchers.Main`, `DispatchQueue.main`). An observer may call back into the engine.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tandem_core::device::{self, SyncEvent};

use crate::error::{ApiError, ApiResult};
use crate::records::{DocKind, HistoryEntry};
use crate::sync::{RemoteChange, SyncStatus};

/// Told when a document changes: through this engine (`Local`), or by another device's changes
/// arriving through sync or `apply_changes` (`Remote`). Called on a background thread, in the
/// order of the changes.
#[uniffi::export(with_foreign)]
pub trait DocumentObserver: Send + Sync {
    fn document_changed(&self, change: DocumentChange);
}

/// Which document changed, and what changed in it.
#[derive(Clone, PartialEq, Debug, uniffi::Record)]
pub struct DocumentChange {
    pub document: String,
    pub kind: DocKind,
    pub origin: ChangeOrigin,
    /// The changes just made, oldest first, with their one-line descriptions.
    pub changes: Vec<HistoryEntry>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, uniffi::Enum)]
pub enum ChangeOrigin {
    /// Made through this engine, on this device.
    Local,
    /// Received from another device through sync.
    Remote,
}

/// Told how sync goes. Called on the same background thread as the [`DocumentObserver`], in the
/// order things happened.
#[uniffi::export(with_foreign)]
pub trait SyncObserver: Send + Sync {
    /// The connection, the pending counts, the last sync time or the fetch progress
    /// (`status.fetch`: documents and bytes stored of those the relay announced) changed.
    fn sync_status_changed(&self, status: SyncStatus);
    /// These local changes (hex hashes, as `history` lists them) are now stored on the relay.
    fn saved_to_server(&self, document: String, changes: Vec<String>);
    /// Another device's changes to `change.document` are stored here and visible.
    fn remote_change(&self, change: RemoteChange);
}

type Slot<T> = Arc<Mutex<Option<Arc<T>>>>;

/// Lists what a change that arrived through sync brought, as the [`DocumentObserver`] is told it
/// (`None` when it cannot: the engine is gone, or the document is not a Tandem document). Runs on
/// the delivery thread, only while a document observer is set.
pub(crate) type DescribeRemote =
    Box<dyn Fn(&device::RemoteChange) -> Option<DocumentChange> + Send + Sync>;

/// What the delivery thread hands to the app's observers.
enum Event {
    Document(DocumentChange),
    Sync(SyncEvent),
}

/// The queue of events and the thread that delivers them.
pub(crate) struct Notifier {
    documents: Slot<dyn DocumentObserver>,
    sync: Slot<dyn SyncObserver>,
    describe: Arc<OnceLock<DescribeRemote>>,
    events: Sender<Event>,
}

impl Notifier {
    /// Starts the delivery thread. It ends when the notifier (the engine) is dropped.
    pub(crate) fn start() -> ApiResult<Self> {
        let (documents, sync): (Slot<_>, Slot<_>) = (Arc::default(), Arc::default());
        let describe: Arc<OnceLock<DescribeRemote>> = Arc::default();
        let (events, queue) = channel();
        let observers = Observers {
            documents: Arc::clone(&documents),
            sync: Arc::clone(&sync),
            describe: Arc::clone(&describe),
        };
        std::thread::Builder::new()
            .name("tandem-observers".into())
            .spawn(move || observers.deliver(&queue))
            .map_err(|e| ApiError::Other {
                reason: format!("could not start the observer thread: {e}"),
            })?;
        Ok(Self {
            documents,
            sync,
            describe,
            events,
        })
    }

    /// How remote changes are described for the document observer; set once, by the engine.
    pub(crate) fn describe_remote_with(&self, describe: DescribeRemote) {
        let _ = self.describe.set(describe);
    }

    pub(crate) fn set(&self, observer: Option<Arc<dyn DocumentObserver>>) {
        *lock(&self.documents) = observer;
    }

    pub(crate) fn set_sync(&self, observer: Option<Arc<dyn SyncObserver>>) {
        *lock(&self.sync) = observer;
    }

    pub(crate) fn notify(&self, change: DocumentChange) {
        // The thread only stops when the engine is dropped, so a send cannot fail while it lives.
        let _ = self.events.send(Event::Document(change));
    }

    /// The sync client's observer: it only queues the event for the delivery thread, so the
    /// client's task never waits on foreign code.
    pub(crate) fn sync_forwarder(&self) -> Box<dyn tandem_core::client::SyncObserver> {
        let events = self.events.clone();
        Box::new(move |event: &SyncEvent| {
            let _ = events.send(Event::Sync(event.clone()));
        })
    }
}

fn lock<T: ?Sized>(slot: &Slot<T>) -> std::sync::MutexGuard<'_, Option<Arc<T>>> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the delivery thread calls.
struct Observers {
    documents: Slot<dyn DocumentObserver>,
    sync: Slot<dyn SyncObserver>,
    describe: Arc<OnceLock<DescribeRemote>>,
}

impl Observers {
    fn deliver(&self, queue: &Receiver<Event>) {
        for event in queue {
            // Clone the observer out and let go of the lock before foreign code runs. An observer
            // that throws must not stop the deliveries that follow.
            let _ = panic::catch_unwind(AssertUnwindSafe(|| match event {
                Event::Document(change) => self.document_changed(change),
                Event::Sync(event) => {
                    let remote = match &event {
                        SyncEvent::RemoteChange(change) => Some(change.clone()),
                        _ => None,
                    };
                    if let Some(observer) = lock(&self.sync).clone() {
                        tell(observer.as_ref(), event);
                    }
                    if let Some(change) = remote
                        && lock(&self.documents).is_some()
                        && let Some(describe) = self.describe.get()
                        && let Some(change) = describe(&change)
                    {
                        self.document_changed(change);
                    }
                }
            }));
        }
    }

    fn document_changed(&self, change: DocumentChange) {
        if let Some(observer) = lock(&self.documents).clone() {
            observer.document_changed(change);
        }
    }
}

/// One sync event as the [`SyncObserver`] call it is (unavailable and failed documents are not
/// exported yet; fetch progress arrives as part of the status, which changes with it).
fn tell(observer: &dyn SyncObserver, event: SyncEvent) {
    match event {
        SyncEvent::Status(status) => observer.sync_status_changed(status.into()),
        SyncEvent::Saved { document, changes } => observer.saved_to_server(
            document.to_string(),
            changes.iter().map(ToString::to_string).collect(),
        ),
        SyncEvent::RemoteChange(change) => observer.remote_change(change.into()),
        SyncEvent::Unavailable { .. } | SyncEvent::Failed { .. } | SyncEvent::FetchProgress(_) => {}
    }
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}
