//! Observers the app implements (foreign traits), and the thread that calls them.
//!
//! Callbacks never run on the thread that made the edit, and never with a Rust lock held: the
//! engine queues each event, and one thread per engine (`tandem-observers`) takes them in order
//! and calls the observer. An app updates its UI by hopping to the main thread itself
//! (`Dispatchers.Main`, `DispatchQueue.main`). An observer may call back into the engine.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{ApiError, ApiResult};
use crate::records::{DocKind, HistoryEntry};

/// Told when a document changes. Called on a background thread, in the order of the changes.
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

type Slot = Arc<Mutex<Option<Arc<dyn DocumentObserver>>>>;

/// The queue of events and the thread that delivers them.
pub(crate) struct Notifier {
    observer: Slot,
    events: Sender<DocumentChange>,
}

impl Notifier {
    /// Starts the delivery thread. It ends when the notifier (the engine) is dropped.
    pub(crate) fn start() -> ApiResult<Self> {
        let observer: Slot = Arc::default();
        let (events, queue) = channel();
        let slot = Arc::clone(&observer);
        std::thread::Builder::new()
            .name("tandem-observers".into())
            .spawn(move || deliver(&slot, &queue))
            .map_err(|e| ApiError::Other {
                reason: format!("could not start the observer thread: {e}"),
            })?;
        Ok(Self { observer, events })
    }

    pub(crate) fn set(&self, observer: Option<Arc<dyn DocumentObserver>>) {
        *self.observer.lock().unwrap_or_else(PoisonError::into_inner) = observer;
    }

    pub(crate) fn notify(&self, change: DocumentChange) {
        // The thread only stops when the engine is dropped, so a send cannot fail while it lives.
        let _ = self.events.send(change);
    }
}

fn deliver(slot: &Slot, queue: &Receiver<DocumentChange>) {
    for change in queue {
        // Clone the observer out and let go of the lock before foreign code runs.
        let observer = slot.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(observer) = observer {
            // An observer that throws must not stop the deliveries that follow.
            let _ = panic::catch_unwind(AssertUnwindSafe(|| observer.document_changed(change)));
        }
    }
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}
