//! The snapshot fetch: how a device gets many documents it holds nothing of (a fresh device, a
//! followed directory listing documents it never saw) as compacted snapshots instead of one
//! automerge sync exchange per document.
//!
//! The exchange (message type `tandem-fetch`, only with a peer that advertised `tandemFetch` in
//! its `peerMetadata`; automerge-repo peers keep the plain protocol):
//! 1. the device sends `want` listing the ids (16 bytes each) of the documents it opened and
//!    holds nothing of, instead of a `request` per document. Ids opened during one turn of the
//!    engine (between two `take_effects`) go in one `want`;
//! 2. the relay asks its access policy about every id and loads the readable ones. Once each is
//!    loaded with nothing waiting for a commit (so nothing uncommitted ever leaves), it answers
//!    the oldest unanswered `want` with `manifest` (how many snapshots follow and their total
//!    bytes), `snapshots` in batches of up to [`BATCH_BYTES`] (id, length, `save()` bytes), and
//!    `done` listing the ids it does not give: unavailable ones (absent and not readable alike,
//!    so a denied document's existence is never revealed) and ones left to the plain protocol
//!    (larger than [`MAX_SNAPSHOT_BYTES`]). Having sent a snapshot at heads H, the relay counts
//!    the device as holding H, exactly as after a digest match: the connection is subscribed to
//!    the document (a session opens as soon as it moves) and the sync state saved for the
//!    device's storage id says H is shared, so the next reconnect's digest covers it;
//! 3. the device persists each snapshot (its durability rule is the engine's: a document's
//!    messages wait for its commit), counts the relay as holding the snapshot's heads, and
//!    counts progress (documents and bytes done of the manifests' totals) once the persist
//!    commits. Anything the answer does not cover falls back to the plain protocol.
//!
//! A snapshot for a document that holds nothing and that no session reads is not loaded by
//! the engine: it reads the heads from the document chunk's header ([`snapshot_heads`], which
//! checks the chunk's checksum), hands the bytes to storage as they came, and keeps them with
//! their heads until something needs the content (a peer's message, a local edit, a session);
//! then it loads them (`SyncEngine::loaded`). `Automerge::load` was most of what a fetched
//! document cost the device. Its change notification says the whole document changed
//! (`ChangedPaths::whole_document`). The device's store verifies each document as it stores it
//! (it loads it to read its query projection, in the same transaction), so a snapshot whose
//! content does not load is refused there with nothing stored; a driver whose storage keeps
//! bytes unread finds out when the engine first loads them, and the document is then reloaded
//! from storage, whose load fails with `Error::Corrupt`.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use automerge::ChangeHash;

use super::ConnectionId;
use super::digest::ID_BYTES;
use crate::ids::DocumentId;

/// The most snapshot bytes the relay puts in one frame (one snapshot larger than this still
/// goes alone).
pub(crate) const BATCH_BYTES: usize = 128 * 1024;
/// Larger snapshots are left to the plain protocol, so no frame comes near a peer's frame limit.
pub(crate) const MAX_SNAPSHOT_BYTES: usize = 4 * 1024 * 1024;
/// The most ids the device lists in one `want` (64 KiB of ids).
pub(crate) const MAX_WANT_IDS: usize = 4096;

/// How far the snapshot fetch on one connection has come: the documents and bytes of every
/// manifest received on it, and how many of them are loaded and durably stored.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct FetchProgress {
    pub documents_done: u64,
    pub documents_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

impl FetchProgress {
    /// Every announced snapshot is stored.
    pub fn is_complete(&self) -> bool {
        self.documents_done >= self.documents_total && self.bytes_done >= self.bytes_total
    }
}

/// Device: the fetch with one peer.
#[derive(Debug, Default)]
pub(crate) struct Fetching {
    /// Ids to list in the next `want` (sent when the driver next takes the effects).
    pub(crate) to_want: BTreeSet<DocumentId>,
    /// The sent `want`s not yet answered with `done`, oldest first.
    pub(crate) outstanding: VecDeque<HashSet<DocumentId>>,
    /// Documents whose snapshot this peer sent and we stored, at the snapshot's heads: the peer
    /// holds them (used while there is no session).
    pub(crate) held_by_peer: HashMap<DocumentId, Vec<ChangeHash>>,
    pub(crate) progress: FetchProgress,
}

impl Fetching {
    /// Whether the document is asked for and not yet answered.
    pub(crate) fn awaits(&self, document: &DocumentId) -> bool {
        self.to_want.contains(document) || self.outstanding.iter().any(|w| w.contains(document))
    }
}

/// Device: a stored snapshot waiting for its persist to commit.
#[derive(Debug)]
pub(crate) struct SnapshotPersist {
    pub(crate) connection: ConnectionId,
    pub(crate) document: DocumentId,
    /// The snapshot's heads, when known (the document held nothing before it).
    pub(crate) heads: Option<Vec<ChangeHash>>,
    pub(crate) bytes: u64,
}

/// Relay: one `want` being answered.
#[derive(Debug, Default)]
pub(crate) struct Serving {
    /// Wanted documents not yet loaded or with a commit outstanding.
    pub(crate) waiting: HashSet<DocumentId>,
    /// Ready snapshots: (document, heads, `save()` bytes).
    pub(crate) snapshots: Vec<(DocumentId, Vec<ChangeHash>, Vec<u8>)>,
    pub(crate) unavailable: Vec<DocumentId>,
    pub(crate) plain: Vec<DocumentId>,
}

/// The ids in `want` / `done`: a run of 16-byte ids.
pub(crate) fn encode_ids<'a>(ids: impl Iterator<Item = &'a DocumentId>) -> Vec<u8> {
    let mut bytes = Vec::new();
    for id in ids {
        bytes.extend_from_slice(id.as_bytes());
    }
    bytes
}

/// Appends one snapshot entry: id, LEB128 length, bytes.
pub(crate) fn push_snapshot(batch: &mut Vec<u8>, document: &DocumentId, snapshot: &[u8]) {
    batch.extend_from_slice(document.as_bytes());
    let mut len = snapshot.len() as u64;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            batch.push(byte);
            break;
        }
        batch.push(byte | 0x80);
    }
    batch.extend_from_slice(snapshot);
}

/// The first bytes of every automerge chunk.
const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// The chunk type of a whole document (`save()`).
const DOCUMENT_CHUNK: u8 = 0;
/// More heads than this in a snapshot of a small document is no snapshot we store unloaded.
const MAX_SNAPSHOT_HEADS: u64 = 1024;

/// The heads a snapshot's header names, sorted, if the snapshot is exactly one automerge
/// document chunk (what `save()` makes) whose checksum matches its bytes; `None` for anything
/// else (change chunks, several chunks, a bad checksum, a cut header), which the caller then
/// loads the ordinary way.
///
/// This reads the chunk header and the document's actor and head lists, not its changes: the
/// content is verified when the document is loaded (by the device's store before it commits,
/// and by the engine when something first reads it).
pub(crate) fn snapshot_heads(snapshot: &[u8]) -> Option<Vec<ChangeHash>> {
    use sha2::{Digest, Sha256};

    let rest = snapshot.strip_prefix(&CHUNK_MAGIC)?;
    let (checksum, rest) = rest.split_first_chunk::<4>()?;
    let (&chunk_type, after_type) = rest.split_first()?;
    if chunk_type != DOCUMENT_CHUNK {
        return None;
    }
    let (length, data) = read_uleb(after_type)?;
    // Exactly one chunk: nothing may follow it.
    if u64::try_from(data.len()).ok()? != length {
        return None;
    }
    // automerge's checksum: the first 4 bytes of SHA-256 over the type, length and data.
    let hash = Sha256::digest(rest);
    if hash[..4] != checksum[..] {
        return None;
    }
    let (actors, mut rest) = read_uleb(data)?;
    for _ in 0..actors {
        let (len, tail) = read_uleb(rest)?;
        rest = tail.get(usize::try_from(len).ok()?..)?;
    }
    let (count, mut rest) = read_uleb(rest)?;
    if count == 0 || count > MAX_SNAPSHOT_HEADS {
        return None;
    }
    let mut heads = Vec::with_capacity(usize::try_from(count).ok()?);
    for _ in 0..count {
        let (hash, tail) = rest.split_first_chunk::<32>()?;
        heads.push(ChangeHash(*hash));
        rest = tail;
    }
    heads.sort();
    Some(heads)
}

/// An unsigned LEB128 number and the bytes after it; `None` if cut short or over 64 bits.
fn read_uleb(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value: u64 = 0;
    let mut shift = 0;
    let mut rest = bytes;
    loop {
        let (&byte, tail) = rest.split_first()?;
        rest = tail;
        if shift > 63 {
            return None;
        }
        value |= u64::from(byte & 0x7f).checked_shl(shift)?;
        shift += 7;
        if byte & 0x80 == 0 {
            return Some((value, rest));
        }
    }
}

/// The entries of a `snapshots` batch, or `None` if it is malformed.
pub(crate) fn decode_snapshots(mut bytes: &[u8]) -> Option<Vec<(DocumentId, &[u8])>> {
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < ID_BYTES {
            return None;
        }
        let (id, rest) = bytes.split_at(ID_BYTES);
        let document = DocumentId::from_slice(id).ok()?;
        let mut len: u64 = 0;
        let mut shift = 0;
        let mut rest = rest;
        loop {
            let (&byte, tail) = rest.split_first()?;
            rest = tail;
            if shift > 56 {
                return None;
            }
            len |= u64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let len = usize::try_from(len).ok()?;
        if rest.len() < len {
            return None;
        }
        let (snapshot, tail) = rest.split_at(len);
        entries.push((document, snapshot));
        bytes = tail;
    }
    Some(entries)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_batches_round_trip_and_bad_ones_are_refused() {
        let a = DocumentId::from_bytes([1; 16]);
        let b = DocumentId::from_bytes([2; 16]);
        let long = vec![5u8; 300];
        let mut batch = Vec::new();
        push_snapshot(&mut batch, &a, b"tiny");
        push_snapshot(&mut batch, &b, &long);
        let entries = decode_snapshots(&batch).unwrap();
        assert_eq!(entries, vec![(a, &b"tiny"[..]), (b, &long[..])]);
        // 16 id bytes + 2 length bytes of overhead for a 300-byte snapshot.
        assert_eq!(batch.len(), 16 + 1 + 4 + 16 + 2 + 300);

        assert_eq!(decode_snapshots(&[]).unwrap(), vec![]);
        assert!(
            decode_snapshots(&batch[..batch.len() - 1]).is_none(),
            "cut short"
        );
        assert!(decode_snapshots(&batch[..10]).is_none(), "cut inside an id");
        let mut endless = a.as_bytes().to_vec();
        endless.extend([0xff; 12]);
        assert!(decode_snapshots(&endless).is_none(), "length never ends");
    }

    #[test]
    fn a_snapshot_header_names_its_heads_and_anything_else_is_refused() {
        use automerge::transaction::Transactable;
        use automerge::{Automerge, AutomergeError, ROOT};

        let mut doc = Automerge::new();
        for value in ["one", "two"] {
            doc.transact::<_, _, AutomergeError>(|tx| tx.put(ROOT, "k", value).map(|_| ()))
                .unwrap();
        }
        let mut other = doc.fork();
        other
            .transact::<_, _, AutomergeError>(|tx| tx.put(ROOT, "k", "three").map(|_| ()))
            .unwrap();
        doc.transact::<_, _, AutomergeError>(|tx| tx.put(ROOT, "k", "four").map(|_| ()))
            .unwrap();
        doc.merge(&mut other).unwrap();
        let saved = doc.save();
        let heads = snapshot_heads(&saved).unwrap();
        assert_eq!(heads.len(), 2, "two concurrent heads");
        assert_eq!(heads, doc.get_heads());

        // Change chunks, two chunks, one flipped byte, a cut one: not read as a snapshot.
        assert!(
            snapshot_heads(&doc.save_after(&[])).is_none(),
            "change chunks"
        );
        let mut twice = saved.clone();
        twice.extend_from_slice(&saved);
        assert!(snapshot_heads(&twice).is_none(), "two chunks");
        let mut flipped = saved.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(snapshot_heads(&flipped).is_none(), "checksum");
        assert!(snapshot_heads(&saved[..saved.len() - 1]).is_none(), "cut");
        assert!(snapshot_heads(&saved[..20]).is_none(), "cut in the header");
        assert!(snapshot_heads(&Automerge::new().save()).is_none(), "empty");
        assert!(snapshot_heads(&[]).is_none());
    }
}
