//! The repository's cache of loaded documents, bounded, evicting the least recently used.
//!
//! An app opens the same few documents over and over (the plan on screen, today's session log)
//! while a sync or a list screen touches many others once; evicting the least recently used keeps
//! the former loaded. Eviction scans for the oldest entry: it runs only on a miss that fills the
//! cache, next to a load from SQLite that costs far more than a scan of a few hundred entries.

use std::collections::HashMap;

use crate::doc::Document;
use crate::ids::DocumentId;

#[derive(Debug)]
pub(super) struct DocumentCache {
    entries: HashMap<DocumentId, Entry>,
    limit: usize,
    /// Counts uses; an entry's `used` is the count at its last use.
    clock: u64,
}

#[derive(Debug)]
struct Entry {
    document: Document,
    used: u64,
}

impl DocumentCache {
    /// A cache holding at most `limit` documents (at least one).
    pub(super) fn new(limit: usize) -> Self {
        Self {
            entries: HashMap::new(),
            limit: limit.max(1),
            clock: 0,
        }
    }

    /// Takes a document out, for editing; it goes back with [`keep`](Self::keep).
    pub(super) fn take(&mut self, id: &DocumentId) -> Option<Document> {
        self.entries.remove(id).map(|entry| entry.document)
    }

    /// Puts a document in as the most recently used, evicting the least recently used one if the
    /// cache is full.
    pub(super) fn keep(&mut self, document: Document) -> &Document {
        let id = document.id();
        if self.entries.len() >= self.limit
            && !self.entries.contains_key(&id)
            && let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.used)
                .map(|(id, _)| *id)
        {
            self.entries.remove(&oldest);
        }
        self.clock += 1;
        let used = self.clock;
        let entry = self.entries.entry(id).or_insert(Entry { document, used });
        entry.used = used;
        &entry.document
    }

    pub(super) fn clear(&mut self) {
        self.entries.clear();
    }

    #[cfg(test)]
    fn holds(&self, id: &DocumentId) -> bool {
        self.entries.contains_key(id)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use automerge::transaction::Transactable;
    use automerge::{Automerge, ROOT};

    use super::*;

    fn document() -> Document {
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        tx.put(ROOT, "type", "notes").unwrap();
        tx.commit();
        Document::from_automerge(DocumentId::random(), doc).unwrap()
    }

    #[test]
    fn the_least_recently_used_document_is_evicted() {
        let mut cache = DocumentCache::new(2);
        let (a, b, c) = (document(), document(), document());
        let (a_id, b_id, c_id) = (a.id(), b.id(), c.id());
        cache.keep(a);
        cache.keep(b);
        // Using a makes b the oldest.
        let a = cache.take(&a_id).expect("a is cached");
        cache.keep(a);
        cache.keep(c);
        assert!(cache.holds(&a_id), "the document in use stays");
        assert!(!cache.holds(&b_id), "the least recently used goes");
        assert!(cache.holds(&c_id));
    }
}
