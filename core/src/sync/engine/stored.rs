//! Changes that reached the relay's storage through someone else: another relay process sharing
//! the same PostgreSQL database committed them. They are merged with
//! [`SyncEngine::apply_stored_changes`] (no second persist) when the document is in memory; this
//! is the part that matters whether it is or not.

use super::SyncEngine;
use crate::ids::DocumentId;

impl SyncEngine {
    /// Storage committed changes of `document` that this engine did not persist: memory can no
    /// longer tell the heads storage holds, so cached reconnect-digest indexes holding the
    /// document are dropped (read again from storage at the peer's next reconnect), and an index
    /// read in flight is not kept for it. The document's content is not touched.
    pub fn changed_in_storage(&mut self, document: DocumentId) {
        self.index_moved(document, None);
    }
}
