//! Relay: the reconnect digest's index per peer storage id (every document with a sync state
//! saved for it, and its entry hash at the heads storage has committed), kept in memory between
//! reconnects so that a device reconnecting with nothing changed is answered without reading or
//! hashing every document it holds (see `sync::digest`).
//!
//! An index enters the cache from the driver's answer to `Effect::LoadPeerIndex` and is kept up
//! to date by the engine wherever the committed heads of a document move (a commit confirmed, a
//! document loaded or reloaded, changes stored by someone else) and wherever a document is first
//! synced with the peer (its sync state saved). Where the engine cannot tell the committed heads
//! (a document reloaded, a membership change while commits are outstanding), it drops the
//! indexes concerned and the next reconnect reads storage again: a stale entry would answer
//! `match` to a device that lacks changes the relay holds, which is never acceptable, while a
//! missing one only costs a round trip.
//!
//! The cached entries cover documents regardless of access: the engine asks the access policy
//! for every entry when it answers, as it does for an index read from storage, so a change of
//! pairings or tokens needs no invalidation, and a peer never counts a document it may not read.
//!
//! Each cached index also notes which of its documents moved since the peer's last connection
//! that finished the digest exchange closed (`moved`): the relay's share of what a reconnect
//! will find different, which sizes the sketch it answers with (`sync::sketch`). An index read
//! from storage since cannot tell (`None`), and neither can one past [`MAX_MOVED`] documents;
//! the relay then answers with its bucket digests. Only a connection whose exchange finished
//! (`match`, `decoded`, or `differ` sent) settles the count when it closes: one that dropped
//! mid-exchange, or a device that held nothing when it connected (it offers nothing, and fetches
//! what it follows), leaves it as it was. A wrong count costs bytes or, when too low, a
//! sketch that does not decode and the bucket exchange after it; never a missed document.
//!
//! An index read from storage races with commits confirmed while it was read. Each read in
//! flight therefore notes the documents that moved since it was asked for (a [`Fill`]): one
//! loaded with nothing waiting for a commit is answered at its heads in memory (what storage
//! holds), any other is left out of the answer (the device then syncs it), and the index is
//! cached only if no document was left out.

use std::collections::{HashMap, HashSet};

use super::{ConnectionId, StorageId};
use crate::ids::DocumentId;

/// Most moved documents an index notes; past that a sketch would not be the cheaper answer.
pub(crate) const MAX_MOVED: usize = 4096;

/// One peer's cached index.
#[derive(Debug, Default)]
pub(crate) struct PeerIndex {
    /// Entry hash of each document synced with the peer, at the heads storage has committed.
    pub(crate) entries: HashMap<DocumentId, u128>,
    /// XOR of every entry hash.
    pub(crate) total: u128,
    /// When it was last used, for least-recently-used eviction.
    used: u64,
    /// The documents whose entry moved since the peer's last settled connection closed, if
    /// known (see the module docs).
    moved: Option<HashSet<DocumentId>>,
}

impl PeerIndex {
    fn set(&mut self, document: DocumentId, hash: u128) {
        if let Some(old) = self.entries.insert(document, hash) {
            if old == hash {
                return;
            }
            self.total ^= old;
        }
        self.total ^= hash;
        if let Some(moved) = &mut self.moved {
            moved.insert(document);
            if moved.len() > MAX_MOVED {
                self.moved = None;
            }
        }
    }

    /// How many documents moved since the peer's last settled connection, if known.
    pub(crate) fn moved(&self) -> Option<usize> {
        self.moved.as_ref().map(HashSet::len)
    }
}

/// A read of a peer's index in flight: the documents that moved since it was asked for.
#[derive(Debug)]
pub(crate) struct Fill {
    pub(crate) storage_id: StorageId,
    /// At most every document, for the few milliseconds a read takes.
    pub(crate) moved: HashSet<DocumentId>,
}

/// The bounded cache of peer indexes, least recently used out first.
#[derive(Debug)]
pub(crate) struct PeerIndexCache {
    capacity: usize,
    indexes: HashMap<StorageId, PeerIndex>,
    /// Which cached indexes hold each document, to update them when its heads move.
    holders: HashMap<DocumentId, Vec<StorageId>>,
    fills: HashMap<ConnectionId, Fill>,
    clock: u64,
}

impl PeerIndexCache {
    /// A cache of at most `capacity` indexes; 0 caches nothing.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            indexes: HashMap::new(),
            holders: HashMap::new(),
            fills: HashMap::new(),
            clock: 0,
        }
    }

    /// Whether indexes are kept at all.
    pub(crate) fn is_enabled(&self) -> bool {
        self.capacity > 0
    }

    /// Whether a read of the peer's index on `connection` is in flight.
    pub(crate) fn is_filling(&self, connection: ConnectionId) -> bool {
        self.fills.contains_key(&connection)
    }

    /// Whether anything would react to a document moving.
    pub(crate) fn is_idle(&self) -> bool {
        self.indexes.is_empty() && self.fills.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.indexes.len()
    }

    /// Marks a peer's index as just used; false if it is not cached.
    pub(crate) fn touch(&mut self, storage_id: &StorageId) -> bool {
        self.clock += 1;
        let Some(index) = self.indexes.get_mut(storage_id) else {
            return false;
        };
        index.used = self.clock;
        true
    }

    /// A peer's cached index.
    pub(crate) fn get(&self, storage_id: &StorageId) -> Option<&PeerIndex> {
        self.indexes.get(storage_id)
    }

    /// A read of the peer's index was asked for on `connection`.
    pub(crate) fn start_fill(&mut self, connection: ConnectionId, storage_id: StorageId) {
        self.fills.insert(
            connection,
            Fill {
                storage_id,
                moved: HashSet::new(),
            },
        );
    }

    /// The read on `connection` arrived (or the connection closed).
    pub(crate) fn take_fill(&mut self, connection: ConnectionId) -> Option<Fill> {
        self.fills.remove(&connection)
    }

    /// Caches a peer's whole index, dropping the least recently used one if full.
    pub(crate) fn insert(&mut self, storage_id: StorageId, entries: HashMap<DocumentId, u128>) {
        if self.capacity == 0 {
            return;
        }
        self.remove(&storage_id);
        while self.indexes.len() >= self.capacity {
            let Some(oldest) = self
                .indexes
                .iter()
                .min_by_key(|(_, index)| index.used)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            self.remove(&oldest);
        }
        for document in entries.keys() {
            self.holders
                .entry(*document)
                .or_default()
                .push(storage_id.clone());
        }
        self.clock += 1;
        let index = PeerIndex {
            total: super::digest::total(entries.values()),
            entries,
            used: self.clock,
            moved: None,
        };
        self.indexes.insert(storage_id, index);
    }

    /// A connection of the peer that finished the digest exchange closed: both sides held the
    /// same entries then, as far as the relay can tell, so counting what moved starts afresh.
    pub(crate) fn settled(&mut self, storage_id: &StorageId) {
        if let Some(index) = self.indexes.get_mut(storage_id) {
            index.moved = Some(HashSet::new());
        }
    }

    /// Drops one peer's index.
    pub(crate) fn remove(&mut self, storage_id: &StorageId) {
        let Some(index) = self.indexes.remove(storage_id) else {
            return;
        };
        for document in index.entries.keys() {
            if let Some(holders) = self.holders.get_mut(document) {
                holders.retain(|s| s != storage_id);
                if holders.is_empty() {
                    self.holders.remove(document);
                }
            }
        }
    }

    /// Whether some cached index holds the document.
    pub(crate) fn is_held(&self, document: &DocumentId) -> bool {
        self.holders.contains_key(document)
    }

    /// Notes, for every read in flight, that the document moved.
    pub(crate) fn note_moved(&mut self, document: DocumentId) {
        for fill in self.fills.values_mut() {
            fill.moved.insert(document);
        }
    }

    /// The document's committed heads now hash to `hash`: every index holding it follows.
    pub(crate) fn committed(&mut self, document: DocumentId, hash: u128) {
        let Some(holders) = self.holders.get(&document) else {
            return;
        };
        for storage_id in holders {
            if let Some(index) = self.indexes.get_mut(storage_id) {
                index.set(document, hash);
            }
        }
    }

    /// The document was synced with the peer (its sync state saved) at committed heads hashing
    /// to `hash`: its cached index now holds it.
    pub(crate) fn synced(&mut self, document: DocumentId, storage_id: &StorageId, hash: u128) {
        let Some(index) = self.indexes.get_mut(storage_id) else {
            return;
        };
        if !index.entries.contains_key(&document) {
            self.holders
                .entry(document)
                .or_default()
                .push(storage_id.clone());
        }
        index.set(document, hash);
    }

    /// Drops every index holding the document (its committed heads are not known right now).
    pub(crate) fn forget_document(&mut self, document: &DocumentId) {
        let Some(holders) = self.holders.get(document).cloned() else {
            return;
        };
        for storage_id in holders {
            self.remove(&storage_id);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn doc(i: u8) -> DocumentId {
        DocumentId::from_bytes([i; 16])
    }

    #[test]
    fn totals_follow_updates_and_the_least_recently_used_index_goes_first() {
        let mut cache = PeerIndexCache::new(2);
        let (a, b, c) = (
            StorageId::new("a".to_owned()),
            StorageId::new("b".to_owned()),
            StorageId::new("c".to_owned()),
        );
        cache.insert(a.clone(), [(doc(1), 1), (doc(2), 2)].into_iter().collect());
        cache.insert(b.clone(), [(doc(2), 2)].into_iter().collect());
        cache.committed(doc(2), 7);
        cache.synced(doc(3), &b, 4);
        assert_eq!(cache.get(&a).unwrap().total, 1 ^ 7);
        assert_eq!(cache.get(&b).unwrap().total, 7 ^ 4);
        // `a` was used last: `b` goes.
        assert!(cache.touch(&a));
        cache.insert(c.clone(), HashMap::new());
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&b).is_none());
        assert!(
            !cache.is_held(&doc(3)),
            "b's documents are forgotten with it"
        );
        cache.forget_document(&doc(1));
        assert!(cache.get(&a).is_none());
        // What moved is counted only once a connection settled, each document once, and
        // nothing for an entry committed at the hash it already had.
        assert_eq!(cache.get(&c).unwrap().moved(), None);
        cache.synced(doc(5), &c, 1);
        cache.settled(&c);
        assert_eq!(cache.get(&c).unwrap().moved(), Some(0));
        cache.committed(doc(5), 1);
        assert_eq!(cache.get(&c).unwrap().moved(), Some(0));
        cache.committed(doc(5), 2);
        cache.committed(doc(5), 3);
        cache.synced(doc(6), &c, 9);
        assert_eq!(cache.get(&c).unwrap().moved(), Some(2));
        for i in 0..=MAX_MOVED as u32 {
            let mut bytes = [0u8; 16];
            bytes[..4].copy_from_slice(&i.to_be_bytes());
            cache.synced(DocumentId::from_bytes(bytes), &c, 1);
        }
        assert_eq!(
            cache.get(&c).unwrap().moved(),
            None,
            "too many to size a sketch"
        );
        assert!(cache.get(&c).is_some());
        assert!(!cache.is_held(&doc(2)));
    }
}
