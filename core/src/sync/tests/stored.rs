//! Changes another relay process committed to the storage this relay shares with it (several
//! relays on one PostgreSQL database): a peer reconnecting with a digest is never told "nothing
//! changed" from an index cached before them, whether the document was in memory or not.

use automerge::Automerge;

use super::super::DigestStep;
use super::super::harness::Harness;
use super::{device, digest_relay, digest_steps, get, put};
use crate::ids::DocumentId;

/// What another relay appends to the shared storage: one change to `doc` setting `key`.
fn stored_elsewhere(h: &mut Harness, r: usize, doc: DocumentId, key: &str) -> Vec<u8> {
    let stored = h.nodes[r].storage.documents.get_mut(&doc).unwrap();
    let mut other = Automerge::load(stored).unwrap();
    let before = other.get_heads();
    put(&mut other, key, "another relay");
    let change = other.save_after(&before);
    stored.extend_from_slice(&change);
    change
}

/// A relay and device `a` that synced three documents, then disconnected; the relay caches `a`'s
/// index.
fn synced_then_apart() -> (Harness, usize, usize, Vec<DocumentId>) {
    let mut h = Harness::default();
    let r = h.add(digest_relay());
    let a = h.add(device("a"));
    let docs: Vec<DocumentId> = (0..3).map(|_| DocumentId::random()).collect();
    for doc in &docs {
        h.engine(a)
            .create_document(*doc, |d| put(d, "title", "plan"))
            .unwrap();
    }
    let (on_a, _) = h.connect(a, r);
    h.run_until_quiet();
    h.drop_link(a, on_a);
    h.run_until_quiet();
    assert_eq!(h.engine(r).cached_peer_indexes(), 1);
    (h, r, a, docs)
}

/// `a` reconnects: the relay must not answer "nothing changed", and `a` gets `key`.
fn reconnect_finds(h: &mut Harness, r: usize, a: usize, doc: DocumentId, key: &str) {
    let from = h.nodes[r].sent.len();
    h.connect(a, r);
    h.run_until_quiet();
    assert_ne!(
        digest_steps(h, r, from).first(),
        Some(&DigestStep::Match),
        "storage moved: no match"
    );
    assert_eq!(get(h, a, doc, key).as_deref(), Some("another relay"));
}

#[test]
fn a_change_stored_by_another_relay_to_a_document_not_in_memory_is_found_at_reconnect() {
    let (mut h, r, a, docs) = synced_then_apart();
    assert!(h.engine(r).evict(docs[0]));
    stored_elsewhere(&mut h, r, docs[0], "cold");
    h.engine(r).changed_in_storage(docs[0]);
    assert_eq!(
        h.engine(r).cached_peer_indexes(),
        0,
        "the index held the document at heads storage no longer has"
    );
    reconnect_finds(&mut h, r, a, docs[0], "cold");
}

#[test]
fn a_change_stored_by_another_relay_to_a_document_in_memory_is_merged_not_stored_again() {
    let (mut h, r, a, docs) = synced_then_apart();
    let persists = h.nodes[r].storage.persists;
    let change = stored_elsewhere(&mut h, r, docs[1], "hot");
    h.engine(r).apply_stored_changes(docs[1], &change).unwrap();
    h.engine(r).changed_in_storage(docs[1]);
    h.run_until_quiet();
    assert_eq!(
        h.nodes[r].storage.persists, persists,
        "nothing stored twice"
    );
    assert_eq!(
        get(&mut h, r, docs[1], "hot").as_deref(),
        Some("another relay")
    );
    reconnect_finds(&mut h, r, a, docs[1], "hot");
}
