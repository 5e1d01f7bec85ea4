//! The reconnect digest: one hash per (document id, sorted heads), XORed into a digest per peer
//! pair, so that one exchange tells whether anything changed while a device was away.
//!
//! The exchange (message type `tandem-digest`, only between peers that both advertised
//! `tandemDigest` in `peerMetadata`):
//! 1. the device sends `offer` {count, digest} over the documents it holds, instead of offering
//!    each of them; to a relay that advertised `tandemSketch` also `changed`, how many of them it
//!    changed since it last synced them with that relay (their heads differ from the shared
//!    heads of the sync state saved for the relay's storage id);
//! 2. the relay computes the same over the documents it has synced with that device's storage id
//!    (and that the device may read, at the heads it has committed) and answers `match` (the
//!    exchange is over: one round trip), or, when both advertised `tandemSketch` and it can
//!    estimate the difference, a `sketch` (below), or else its `buckets` (one 8-byte digest per
//!    bucket of document ids);
//! 3. on buckets, the device sends `entries` (id, 8-byte hash) of its documents in the buckets
//!    that differ, and the relay answers `differ` with the listed documents whose hash it does
//!    not share. Only those documents run the automerge sync protocol, and the relay starts it:
//!    it loads them, sends its first sync message for all of them (heads and `have`, from the
//!    saved sync state) and then `differ`, so that the device's next flight answers them with the
//!    changes the relay lacks, and the relay's answer to that carries the changes the device
//!    lacks. A reconnect with some documents changed on either side therefore converges in three
//!    round trips after the handshake (offer/buckets, entries/first messages and differ, then
//!    the changes).
//!
//! The sketch makes a differing reconnect cost bytes in proportion to the documents that differ,
//! where buckets cost 8 bytes per bucket (up to 8 KiB) plus the entries of every document in a
//! differing bucket. It is an invertible Bloom lookup table of the relay's (id, 8-byte hash)
//! entries (`sync::sketch`) sized for `2 × (changed + moved)` differing pairs, `moved` being the
//! relay's count of the device's entries that moved since its last connection that finished the
//! exchange closed (`sync::peer_index`); a changed document is two pairs (old and new hash), one
//! held by one side only is one. The device subtracts the same table over its own entries and
//! peels it: that lists every differing document, either side's, and it checks the result
//! against both 128-bit totals and counts ([`reconcile`]), so a wrong decode is never taken for a
//! right one. It then sends `decoded` (the differing ids; the relay subscribes the connection to
//! every other entry) and at once offers the differing documents it holds: the relay's answers
//! carry the changes it lacks, and its next messages the relay's. Still three round trips
//! (offer/sketch, decoded and offers/changes, changes/answers), about 1.5 cells of 29 bytes per
//! differing pair plus 30 cells. A sketch that does not decode (rare: the estimate was too low,
//! or an unlucky table, see `sync::sketch`) makes the device send `undecodable`, and the relay
//! answers with its buckets: one round trip more, the bucket exchange after it. A relay that
//! cannot estimate the difference, because it read the device's index from storage since (a
//! restart, an eviction from the cache), answers with buckets rather than with a strata
//! estimator: an estimator costs kilobytes in every offer (the idle reconnect must stay under
//! 1 KB) or a round trip more, and the relay starts counting as soon as that connection closes.
//! A Tandem peer without `tandemSketch` gets the bucket exchange, as before.
//!
//! Documents found equal need no session: the relay subscribes the connection to them (it opens
//! a session as soon as one of them moves), and the device counts the relay as holding its heads.
//!
//! The device keeps its side incrementally ([`HeldIndex`]): the entry hash of every loaded
//! document, updated when the engine flushes a document whose heads moved, and their running
//! XOR, so a reconnect hashes only what moved since. The relay reads its side from storage once
//! per peer (`Effect::LoadPeerIndex`: the documents with a sync state saved for the device's
//! storage id, at their committed heads) and keeps it in memory as commits land and documents are
//! synced (`sync::peer_index`), so a reconnect with nothing changed reads and hashes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use automerge::ChangeHash;
use sha2::{Digest, Sha256};

use super::sketch::Sketch;
use crate::ids::DocumentId;

/// The bytes of a document id in the exchange.
pub(crate) const ID_BYTES: usize = 16;
/// The bytes of one bucket digest, and of one entry's hash.
pub(crate) const HASH_BYTES: usize = 8;
/// Most buckets the relay uses (8 KiB of bucket digests).
const MAX_BUCKETS: usize = 1024;
/// Most differing documents the relay loads and starts syncing itself before `differ`; past
/// that (a relay that lost its state, say) the device offers the rest, and `differ` is not held
/// back by thousands of loads.
pub(crate) const MAX_RELAY_STARTS: usize = 256;

/// The hash of one document at some heads.
pub(crate) fn entry_hash(document: &DocumentId, heads: &[ChangeHash]) -> u128 {
    let mut sorted = heads.to_vec();
    sorted.sort();
    let mut hasher = Sha256::new();
    hasher.update(b"tandem-digest-1");
    hasher.update(document.as_bytes());
    for head in &sorted {
        hasher.update(head.0);
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(bytes)
}

/// The short form of an entry's hash, used per bucket and in `entries`.
pub(crate) fn short(hash: u128) -> u64 {
    (hash >> 64) as u64
}

/// XOR of all entry hashes.
pub(crate) fn total<'a>(hashes: impl Iterator<Item = &'a u128>) -> u128 {
    hashes.fold(0, |acc, h| acc ^ h)
}

/// How many buckets the relay splits `count` documents into: about eight per bucket.
pub(crate) fn bucket_count(count: usize) -> usize {
    (count / 8).next_power_of_two().clamp(1, MAX_BUCKETS)
}

pub(crate) fn bucket_of(document: &DocumentId, buckets: usize) -> usize {
    let bytes = document.as_bytes();
    let top = u16::from_be_bytes([bytes[0], bytes[1]]) as usize;
    let bits = buckets.trailing_zeros();
    if bits == 0 { 0 } else { top >> (16 - bits) }
}

/// The bucket digests of a set of entries, `buckets` of them, encoded.
pub(crate) fn encode_buckets<'a>(
    entries: impl Iterator<Item = (&'a DocumentId, &'a u128)>,
    buckets: usize,
) -> Vec<u8> {
    let mut digests = vec![0u64; buckets];
    for (document, hash) in entries {
        digests[bucket_of(document, buckets)] ^= short(*hash);
    }
    digests.iter().flat_map(|d| d.to_be_bytes()).collect()
}

/// Decodes bucket digests; `None` unless a power of two of them, at most [`MAX_BUCKETS`].
pub(crate) fn decode_buckets(bytes: &[u8]) -> Option<Vec<u64>> {
    if !bytes.len().is_multiple_of(HASH_BYTES) {
        return None;
    }
    let count = bytes.len() / HASH_BYTES;
    if !count.is_power_of_two() || count > MAX_BUCKETS {
        return None;
    }
    Some(
        bytes
            .chunks_exact(HASH_BYTES)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default()))
            .collect(),
    )
}

/// The entries (id, short hash) of the documents whose bucket digest differs from `theirs`.
pub(crate) fn differing_entries(ours: &BTreeMap<DocumentId, Held>, theirs: &[u64]) -> Vec<u8> {
    let buckets = theirs.len();
    let mine = decode_buckets(&encode_buckets(
        ours.iter().map(|(d, held)| (d, &held.hash)),
        buckets,
    ))
    .unwrap_or_default();
    let differing: HashSet<usize> = (0..buckets).filter(|b| mine[*b] != theirs[*b]).collect();
    let mut out = Vec::new();
    for (document, held) in ours {
        if differing.contains(&bucket_of(document, buckets)) {
            out.extend_from_slice(document.as_bytes());
            out.extend_from_slice(&short(held.hash).to_be_bytes());
        }
    }
    out
}

/// Parses `entries`; `None` if malformed.
pub(crate) fn decode_entries(bytes: &[u8]) -> Option<Vec<(DocumentId, u64)>> {
    const ENTRY: usize = ID_BYTES + HASH_BYTES;
    if !bytes.len().is_multiple_of(ENTRY) {
        return None;
    }
    bytes
        .chunks_exact(ENTRY)
        .map(|c| {
            let document = DocumentId::from_slice(&c[..ID_BYTES]).ok()?;
            let hash = u64::from_be_bytes(c[ID_BYTES..].try_into().ok()?);
            Some((document, hash))
        })
        .collect()
}

/// Parses a list of document ids; `None` if malformed.
pub(crate) fn decode_ids(bytes: &[u8]) -> Option<Vec<DocumentId>> {
    if !bytes.len().is_multiple_of(ID_BYTES) {
        return None;
    }
    bytes
        .chunks_exact(ID_BYTES)
        .map(|c| DocumentId::from_slice(c).ok())
        .collect()
}

/// The seed of a relay's sketch: differs between reconnects (the totals move, and the relay
/// counts its sketches), so a difference that happens not to decode under one seed is not stuck
/// with it. The engine reads no randomness, and tests see the same tables on every run.
pub(crate) fn sketch_seed(ours: u128, theirs: &[u8], answered: u64) -> u64 {
    let mut seed = (ours as u64) ^ ((ours >> 64) as u64) ^ answered.rotate_left(32);
    for chunk in theirs.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        seed = seed.rotate_left(17) ^ u64::from_be_bytes(word);
    }
    seed
}

/// Device: the documents that differ between what we hold (`ours`, as offered) and the relay's
/// sketch of its entries (`count` of them, XOR `total`), or `None` if the sketch does not decode
/// or what it decodes to is not consistent with both totals and counts, and the bucket exchange
/// must decide. A differing document is one whose id is in a pair either side holds alone: a
/// changed one has a pair on each side, one held by a single side a pair there.
pub(crate) fn reconcile(
    ours: &BTreeMap<DocumentId, Held>,
    theirs: &Sketch,
    count: u64,
    total: u128,
) -> Option<BTreeSet<DocumentId>> {
    let mut table = Sketch::new(theirs.seed(), theirs.len());
    for (document, held) in ours {
        table.insert(document, short(held.hash));
    }
    table.subtract(theirs).ok()?;
    let difference = table.peel().ok()?;
    // Our side of the difference must be pairs we hold; theirs cannot be checked one by one,
    // but all of it together must make up the difference of the totals (their top 64 bits: the
    // pairs carry 8-byte hashes) and of the counts.
    let mut xor = 0u64;
    let mut seen = HashSet::new();
    for (document, hash) in &difference.ours {
        // Each of ours at most once (peeling cannot yield a pair twice, as a cell's XORs cancel
        // at even counts; checked all the same, as the count check below relies on it).
        if ours.get(document).map(|held| short(held.hash)) != Some(*hash) || !seen.insert(document)
        {
            return None;
        }
        xor ^= hash;
    }
    for (_, hash) in &difference.theirs {
        xor ^= hash;
    }
    let our_total = ours.values().fold(0u128, |acc, held| acc ^ held.hash);
    if xor != short(our_total ^ total) {
        return None;
    }
    let their_count = (ours.len() - difference.ours.len()) as u64;
    if their_count.checked_add(difference.theirs.len() as u64) != Some(count) {
        return None;
    }
    Some(
        difference
            .ours
            .iter()
            .chain(&difference.theirs)
            .map(|(document, _)| *document)
            .collect(),
    )
}

/// How a device's reconnect digests ended, counted over the engine's life: what a driver or a
/// test reads to tell which exchange a reconnect took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DigestOutcomes {
    /// The relay answered `match`: nothing differed.
    pub matched: u64,
    /// A sketch decoded: the differing documents were known after one round trip.
    pub decoded: u64,
    /// A sketch did not decode; the buckets followed.
    pub undecodable: u64,
    /// The relay answered with buckets (after an undecodable sketch too).
    pub bucketed: u64,
}

/// A document as the device held it when it sent its digest.
#[derive(Clone, Debug)]
pub(crate) struct Held {
    pub(crate) heads: Vec<ChangeHash>,
    pub(crate) hash: u128,
}

/// A device's running digest over the documents it holds: each document's entry hash at its
/// current heads and the XOR of all of them, kept up to date as heads move (the engine records
/// a document's heads whenever it flushes it), so a reconnect rehashes only documents whose heads
/// moved since it last looked instead of every document it holds.
#[derive(Debug, Default)]
pub(crate) struct HeldIndex {
    entries: HashMap<DocumentId, Held>,
    total: u128,
}

impl HeldIndex {
    /// The document's entry hash at `heads`, recording them; hashes only if they moved. A
    /// document without heads has no entry.
    pub(crate) fn record(&mut self, document: DocumentId, heads: &[ChangeHash]) -> Option<u128> {
        if heads.is_empty() {
            self.remove(&document);
            return None;
        }
        if let Some(held) = self.entries.get(&document)
            && held.heads == heads
        {
            return Some(held.hash);
        }
        let hash = entry_hash(&document, heads);
        let old = self.entries.insert(
            document,
            Held {
                heads: heads.to_vec(),
                hash,
            },
        );
        if let Some(old) = old {
            self.total ^= old.hash;
        }
        self.total ^= hash;
        Some(hash)
    }

    /// Forgets a document the engine no longer holds.
    pub(crate) fn remove(&mut self, document: &DocumentId) {
        if let Some(old) = self.entries.remove(document) {
            self.total ^= old.hash;
        }
    }

    /// The XOR of every entry hash.
    pub(crate) fn total(&self) -> u128 {
        self.total
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&DocumentId, &Held)> {
        self.entries.iter()
    }
}

/// Where one connection is in the exchange.
#[derive(Debug)]
pub(crate) enum DigestState {
    /// Device: `offer` sent; the documents it covered.
    Offered(BTreeMap<DocumentId, Held>),
    /// Device: `entries` sent.
    Narrowing(BTreeMap<DocumentId, Held>),
    /// Device: done; documents found equal, at the heads they were equal at.
    Agreed(HashMap<DocumentId, Vec<ChangeHash>>),
    /// Relay: the device's `offer`, waiting for the driver's index.
    Loading {
        count: u64,
        digest: Vec<u8>,
        /// How many of its documents the device changed since it last synced them with us, if
        /// it speaks the sketch.
        changed: Option<u64>,
    },
    /// Relay: a sketch of `cells` cells sent; its entries, to subscribe the equal ones or to
    /// answer with buckets if the device could not decode it.
    Sketched {
        ours: HashMap<DocumentId, u128>,
        cells: usize,
    },
    /// Relay: buckets sent; its entries, to compare the device's with.
    Answered(HashMap<DocumentId, u128>),
    /// Relay: the differing documents it starts syncing are loading. Once all are loaded, our
    /// first sync messages for them go out together, then `differ`, so that the device answers
    /// them all in one flight (instead of offering those documents itself).
    Starting {
        differ: Vec<u8>,
        loading: HashSet<DocumentId>,
        ready: Vec<DocumentId>,
    },
    /// Relay: the exchange is over.
    Done,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hashes_do_not_depend_on_head_order_and_buckets_round_trip() {
        let doc = DocumentId::from_bytes([0xab; 16]);
        let a = ChangeHash([1; 32]);
        let b = ChangeHash([2; 32]);
        assert_eq!(entry_hash(&doc, &[a, b]), entry_hash(&doc, &[b, a]));
        assert_ne!(entry_hash(&doc, &[a]), entry_hash(&doc, &[a, b]));
        assert_eq!(bucket_count(10_000), 1024);
        assert_eq!(bucket_count(3), 1);
        assert_eq!(bucket_of(&doc, 1), 0);
        assert_eq!(bucket_of(&doc, 256), 0xab);
        let hash = entry_hash(&doc, &[a]);
        let encoded = encode_buckets([(&doc, &hash)].into_iter(), 4);
        assert_eq!(decode_buckets(&encoded).unwrap().len(), 4);
        assert!(
            decode_buckets(&encoded[..24]).is_none(),
            "3 is no power of two"
        );
    }

    #[test]
    fn a_decoded_sketch_is_checked_against_both_totals_and_counts() {
        let held = |i: u8, version: u8| {
            let doc = DocumentId::from_bytes([i; 16]);
            let heads = vec![ChangeHash([version; 32])];
            let hash = entry_hash(&doc, &heads);
            (doc, Held { heads, hash })
        };
        // We hold 0..40 with 3 changed; the relay holds 1..41 (41 only it holds).
        let ours: BTreeMap<DocumentId, Held> = (0..40)
            .map(|i| held(i, if i < 3 { 9 } else { 1 }))
            .collect();
        let theirs: BTreeMap<DocumentId, Held> = (1..41).map(|i| held(i, 1)).collect();
        let their_total = total(theirs.values().map(|h| &h.hash));
        let sketch = |cells| {
            let mut table = Sketch::new(11, cells);
            for (doc, h) in &theirs {
                table.insert(doc, short(h.hash));
            }
            table
        };
        let table = sketch(crate::sync::sketch::cells_for(8));
        let expected: BTreeSet<DocumentId> = [0u8, 1, 2, 40]
            .iter()
            .map(|i| DocumentId::from_bytes([*i; 16]))
            .collect();
        assert_eq!(
            reconcile(&ours, &table, 40, their_total),
            Some(expected),
            "differing: changed on our side, and held by one side only"
        );
        // A total or count that does not add up is never taken for a decode.
        assert_eq!(reconcile(&ours, &table, 40, their_total ^ (1 << 100)), None);
        assert_eq!(reconcile(&ours, &table, 41, their_total), None);
        // Nor is a table too small to peel.
        assert_eq!(reconcile(&ours, &sketch(4), 40, their_total), None);
    }

    proptest::proptest! {
        /// Whatever differs, and whatever the table's size, the device either learns exactly the
        /// documents that differ or learns that it must fall back: never a wrong set.
        #[test]
        fn a_sketch_yields_exactly_the_differing_documents_or_nothing(
            shared in 0u8..120,
            changed in proptest::collection::btree_set(0u8..120, 0..40),
            ours_only in proptest::collection::btree_set(120u8..180, 0..20),
            theirs_only in proptest::collection::btree_set(180u8..240, 0..20),
            cells in 4usize..200,
            seed: u64,
        ) {
            let held = |i: u8, version: u8| {
                let doc = DocumentId::from_bytes([i; 16]);
                let heads = vec![ChangeHash([version; 32])];
                let hash = entry_hash(&doc, &heads);
                (doc, Held { heads, hash })
            };
            let changed: BTreeSet<u8> = changed.into_iter().filter(|i| *i < shared).collect();
            let ours: BTreeMap<DocumentId, Held> = (0..shared)
                .map(|i| held(i, if changed.contains(&i) { 2 } else { 1 }))
                .chain(ours_only.iter().map(|i| held(*i, 1)))
                .collect();
            let theirs: BTreeMap<DocumentId, Held> = (0..shared)
                .map(|i| held(i, 1))
                .chain(theirs_only.iter().map(|i| held(*i, 1)))
                .collect();
            let mut table = Sketch::new(seed, cells);
            for (doc, h) in &theirs {
                table.insert(doc, short(h.hash));
            }
            let their_total = total(theirs.values().map(|h| &h.hash));
            let expected: BTreeSet<DocumentId> = changed
                .iter()
                .chain(&ours_only)
                .chain(&theirs_only)
                .map(|i| DocumentId::from_bytes([*i; 16]))
                .collect();
            let table = Sketch::decode(seed, &table.encode()).unwrap();
            if let Some(found) = reconcile(&ours, &table, theirs.len() as u64, their_total) {
                proptest::prop_assert_eq!(found, expected);
            }
        }
    }

    #[test]
    fn the_held_index_keeps_its_total_equal_to_a_full_recomputation() {
        let docs: Vec<DocumentId> = (0..50u8).map(|i| DocumentId::from_bytes([i; 16])).collect();
        let mut index = HeldIndex::default();
        let full = |index: &HeldIndex| total(index.iter().map(|(_, held)| &held.hash));
        for (i, doc) in docs.iter().enumerate() {
            index.record(*doc, &[ChangeHash([i as u8; 32])]);
        }
        assert_eq!(index.total(), full(&index));
        // Heads move on some, others go away or lose their heads: the total follows.
        index.record(docs[3], &[ChangeHash([200; 32]), ChangeHash([201; 32])]);
        index.remove(&docs[4]);
        index.record(docs[5], &[]);
        assert_eq!(index.iter().count(), 48);
        assert_eq!(index.total(), full(&index));
        assert_eq!(
            index.record(docs[3], &[ChangeHash([200; 32]), ChangeHash([201; 32])]),
            Some(entry_hash(
                &docs[3],
                &[ChangeHash([201; 32]), ChangeHash([200; 32])]
            ))
        );
        for doc in &docs {
            index.remove(doc);
        }
        assert_eq!(index.total(), 0);
    }
}
