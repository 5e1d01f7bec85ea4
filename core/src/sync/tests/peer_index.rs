//! The relay's cached peer indexes (`sync::peer_index`) as specifications: a reconnect is
//! answered from memory, yet never `match`es once the relay's committed heads moved, whether the
//! index was cached, evicted, read while commits landed, or dropped after a failed persist; and
//! access is decided at every answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::super::DigestStep;
use super::super::harness::Harness;
use super::{Revocable, device, digest_relay, digest_steps, get, put, unavailable_sent};
use crate::ids::DocumentId;
use crate::sync::{ConnectionId, EngineConfig, SyncEngine};

/// A relay that answers a differing reconnect with its bucket digests, a full image of its
/// index: the cached answer is then compared with storage's byte for byte. (A relay with the
/// sketch answers a cached peer with a sketch instead, and one read from storage with buckets;
/// see `tests/sketch.rs`.)
fn bucket_relay() -> EngineConfig {
    digest_relay().with_reconnect_sketch(false)
}

/// A relay configured by `config` and device `a` that synced `n` documents, then disconnected.
fn synced_then_apart(config: EngineConfig, n: usize) -> (Harness, usize, usize, Vec<DocumentId>) {
    let mut h = Harness::default();
    let r = h.add(config);
    let a = h.add(device("a"));
    let docs: Vec<DocumentId> = (0..n).map(|_| DocumentId::random()).collect();
    for (i, doc) in docs.iter().enumerate() {
        h.engine(a)
            .create_document(*doc, |d| put(d, "title", &format!("plan {i}")))
            .unwrap();
    }
    let (on_a, _) = h.connect(a, r);
    h.run_until_quiet();
    h.drop_link(a, on_a);
    h.run_until_quiet();
    (h, r, a, docs)
}

/// Another device opens `doc` on the relay, writes `key` there (committed) and leaves.
fn remote_edit(h: &mut Harness, r: usize, name: &str, doc: DocumentId, key: &str) {
    let b = h.add(device(name));
    let (on_b, _) = h.connect(b, r);
    h.engine(b).open_document(doc);
    h.run_until_quiet();
    h.engine(b)
        .local_change(doc, |d| put(d, key, name))
        .unwrap();
    h.run_until_quiet();
    h.drop_link(b, on_b);
    h.run_until_quiet();
}

/// `a` reconnects and everything settles: the relay's digest steps, and whether it read the
/// index from storage.
fn reconnect(h: &mut Harness, a: usize, r: usize) -> (ConnectionId, Vec<DigestStep>, bool) {
    let (r_from, loads) = (h.nodes[r].sent.len(), h.nodes[r].index_loads);
    let (on_a, _) = h.connect(a, r);
    h.run_until_quiet();
    (
        on_a,
        digest_steps(h, r, r_from),
        h.nodes[r].index_loads > loads,
    )
}

fn assert_converged(h: &mut Harness, a: usize, r: usize, docs: &[DocumentId]) {
    for doc in docs {
        assert_eq!(h.engine(a).heads(doc), h.engine(r).heads(doc));
    }
}

/// What a relay that caches nothing answers device `a`'s storage with, over copies of both
/// stores: the steps the uncached path sends.
fn uncached_answer(h: &Harness, r: usize, a: usize, docs: &[DocumentId]) -> Vec<DigestStep> {
    let mut h2 = Harness::default();
    let r2 = h2.add_engine(
        SyncEngine::new(bucket_relay().with_peer_index_cache(0)),
        h.nodes[r].storage.clone(),
    );
    let a2 = h2.add_engine(SyncEngine::new(device("a")), h.nodes[a].storage.clone());
    for doc in docs {
        h2.engine(a2).open_document(*doc);
    }
    h2.run_until_quiet();
    h2.connect(a2, r2);
    h2.run_until_quiet();
    assert_eq!(h2.nodes[r2].index_loads, 1);
    assert_eq!(h2.engine(r2).cached_peer_indexes(), 0);
    digest_steps(&h2, r2, 0)
}

#[test]
fn a_reconnect_is_answered_from_memory_and_never_matches_after_the_heads_moved() {
    let (mut h, r, a, docs) = synced_then_apart(bucket_relay(), 60);
    // Cached since `a` first offered, and kept as its documents were synced.
    assert_eq!(h.engine(r).cached_peer_indexes(), 1);
    remote_edit(&mut h, r, "b", docs[5], "remote");
    let uncached = uncached_answer(&h, r, a, &docs);
    assert!(matches!(
        uncached.as_slice(),
        [DigestStep::Buckets(_), DigestStep::Differ(_)]
    ));

    let (on_a, steps, loaded) = reconnect(&mut h, a, r);
    assert!(!loaded, "answered from memory");
    assert_eq!(
        steps, uncached,
        "the cached answer is the one storage gives"
    );
    assert_eq!(get(&mut h, a, docs[5], "remote").as_deref(), Some("b"));
    assert_converged(&mut h, a, r, &docs);

    // Nothing changed since: one match, from memory, the same as storage's.
    h.drop_link(a, on_a);
    h.run_until_quiet();
    let uncached = uncached_answer(&h, r, a, &docs);
    let (on_a, steps, loaded) = reconnect(&mut h, a, r);
    assert!(!loaded);
    assert_eq!(steps, vec![DigestStep::Match]);
    assert_eq!(steps, uncached);

    // A new document synced with `a` joins its cached index; a change to it while `a` is
    // away is found.
    let fresh = DocumentId::random();
    h.engine(a)
        .create_document(fresh, |d| put(d, "title", "new"))
        .unwrap();
    h.run_until_quiet();
    h.drop_link(a, on_a);
    h.run_until_quiet();
    remote_edit(&mut h, r, "c", fresh, "remote");
    let (_, steps, loaded) = reconnect(&mut h, a, r);
    assert!(!loaded);
    assert_ne!(steps.first(), Some(&DigestStep::Match));
    assert_eq!(get(&mut h, a, fresh, "remote").as_deref(), Some("c"));
}

#[test]
fn the_cache_is_bounded_and_an_evicted_index_is_read_again() {
    let (mut h, r, a, docs) = synced_then_apart(bucket_relay().with_peer_index_cache(1), 20);
    // Device `c` syncs a document of its own: its index takes the only place.
    let c = h.add(device("c"));
    let own = DocumentId::random();
    h.engine(c)
        .create_document(own, |d| put(d, "k", "v"))
        .unwrap();
    let (on_c, _) = h.connect(c, r);
    h.run_until_quiet();
    h.drop_link(c, on_c);
    h.run_until_quiet();
    let (_, steps, loaded) = reconnect(&mut h, c, r);
    assert!(!loaded && steps == vec![DigestStep::Match]);
    assert_eq!(h.engine(r).cached_peer_indexes(), 1);

    remote_edit(&mut h, r, "b", docs[3], "remote");
    let (on_a, steps, loaded) = reconnect(&mut h, a, r);
    assert!(loaded, "evicted: read from storage");
    assert_ne!(steps.first(), Some(&DigestStep::Match));
    assert_eq!(get(&mut h, a, docs[3], "remote").as_deref(), Some("b"));
    assert_converged(&mut h, a, r, &docs);
    assert_eq!(h.engine(r).cached_peer_indexes(), 1);
    h.drop_link(a, on_a);
    h.run_until_quiet();
    let (_, steps, loaded) = reconnect(&mut h, a, r);
    assert!(!loaded && steps == vec![DigestStep::Match]);
}

#[test]
fn commits_landing_while_an_index_is_read_are_never_counted_at_their_old_heads() {
    let (mut h, r, a, docs) = synced_then_apart(bucket_relay().with_peer_index_cache(1), 20);
    // Evict `a`'s index: the next reconnect reads storage.
    let c = h.add(device("c"));
    h.engine(c)
        .create_document(DocumentId::random(), |d| put(d, "k", "v"))
        .unwrap();
    h.connect(c, r);
    h.run_until_quiet();

    // The read is taken, then `b` commits to a document that is dropped from memory before
    // the read's answer arrives: the relay cannot tell its heads, so it must not count it.
    h.nodes[r].hold_peer_indexes = true;
    let (on_a, _) = h.connect(a, r);
    h.run_until_quiet();
    remote_edit(&mut h, r, "b", docs[6], "evicted");
    assert!(h.engine(r).evict(docs[6]));
    // And to one that stays in memory: counted at its new heads.
    let b2 = h.add(device("b2"));
    h.connect(b2, r);
    h.engine(b2).open_document(docs[7]);
    h.run_until_quiet();
    h.engine(b2)
        .local_change(docs[7], |d| put(d, "hot", "b2"))
        .unwrap();
    h.run_until_quiet();
    h.nodes[r].hold_peer_indexes = false;
    h.release_peer_indexes(r);
    h.run_until_quiet();
    assert_eq!(get(&mut h, a, docs[6], "evicted").as_deref(), Some("b"));
    assert_eq!(get(&mut h, a, docs[7], "hot").as_deref(), Some("b2"));
    assert_converged(&mut h, a, r, &docs);

    // Not kept (a document was left out): the next reconnect reads storage again, and then
    // keeps it.
    h.drop_link(a, on_a);
    h.run_until_quiet();
    let (on_a, steps, loaded) = reconnect(&mut h, a, r);
    assert!(loaded && steps == vec![DigestStep::Match]);
    h.drop_link(a, on_a);
    h.run_until_quiet();
    let (_, steps, loaded) = reconnect(&mut h, a, r);
    assert!(!loaded && steps == vec![DigestStep::Match]);
}

#[test]
fn a_failed_persist_drops_the_indexes_holding_the_document() {
    let (mut h, r, a, docs) = synced_then_apart(bucket_relay(), 10);
    let b = h.add(device("b"));
    let (on_b, _) = h.connect(b, r);
    h.engine(b).open_document(docs[2]);
    h.run_until_quiet();
    h.nodes[r].hold_persists = true;
    h.engine(b)
        .local_change(docs[2], |d| put(d, "k", "lost once"))
        .unwrap();
    h.run_until_quiet();
    h.fail_held_persists(r);
    assert_eq!(h.engine(r).cached_peer_indexes(), 0);
    h.run_until_quiet();
    h.nodes[r].hold_persists = false;
    h.release_persists(r);
    h.run_until_quiet();
    h.drop_link(b, on_b);
    h.run_until_quiet();
    let (_, steps, loaded) = reconnect(&mut h, a, r);
    assert!(loaded);
    assert_ne!(steps.first(), Some(&DigestStep::Match));
    assert_eq!(get(&mut h, a, docs[2], "k").as_deref(), Some("lost once"));
    assert_converged(&mut h, a, r, &docs);
}

#[test]
fn access_is_decided_at_every_answer_from_memory() {
    let revoked = Arc::new(AtomicBool::new(false));
    let secret = DocumentId::random();
    let open = DocumentId::random();
    let mut h = Harness::default();
    let r = h.add_with_policy(
        bucket_relay(),
        Box::new(Revocable {
            secret,
            revoked: revoked.clone(),
        }),
    );
    let a = h.add(device("a"));
    for doc in [secret, open] {
        h.engine(a)
            .create_document(doc, |d| put(d, "k", "1"))
            .unwrap();
    }
    let (on_a, _) = h.connect(a, r);
    h.run_until_quiet();
    h.drop_link(a, on_a);
    h.run_until_quiet();
    assert_eq!(h.engine(r).cached_peer_indexes(), 1);
    revoked.store(true, Ordering::SeqCst);

    // `a` holds both at the relay's heads, but may no longer read `secret`: no match.
    let (on_a, steps, loaded) = reconnect(&mut h, a, r);
    assert!(!loaded);
    assert!(matches!(
        steps.as_slice(),
        [DigestStep::Buckets(_), DigestStep::Differ(_)]
    ));
    assert!(unavailable_sent(&h, r, secret));
    h.drop_link(a, on_a);
    h.run_until_quiet();

    // The same storage id holding only `open` matches, from memory.
    let mut only_open = h.nodes[a].storage.clone();
    only_open.documents.remove(&secret);
    let a2 = h.add_engine(SyncEngine::new(device("a")), only_open);
    h.engine(a2).open_document(open);
    h.run_until_quiet();
    let (_, steps, loaded) = reconnect(&mut h, a2, r);
    assert!(!loaded);
    assert_eq!(steps, vec![DigestStep::Match]);
}

#[test]
fn a_device_that_connected_holding_nothing_is_answered_from_memory_next_time() {
    let mut h = Harness::default();
    let r = h.add(bucket_relay());
    let a = h.add(device("a"));
    let (on_a, _) = h.connect(a, r);
    h.run_until_quiet();
    assert_eq!(h.nodes[r].index_loads, 1, "read at the handshake");
    let docs: Vec<DocumentId> = (0..30).map(|_| DocumentId::random()).collect();
    for doc in &docs {
        h.engine(a)
            .create_document(*doc, |d| put(d, "k", "v"))
            .unwrap();
    }
    h.run_until_quiet();
    h.drop_link(a, on_a);
    h.run_until_quiet();
    let uncached = uncached_answer(&h, r, a, &docs);
    let (on_a, steps, loaded) = reconnect(&mut h, a, r);
    assert!(!loaded);
    assert_eq!(steps, vec![DigestStep::Match]);
    assert_eq!(steps, uncached);
    h.drop_link(a, on_a);
    h.run_until_quiet();
    remote_edit(&mut h, r, "b", docs[9], "remote");
    let (_, steps, loaded) = reconnect(&mut h, a, r);
    assert!(!loaded);
    assert_ne!(steps.first(), Some(&DigestStep::Match));
    assert_eq!(get(&mut h, a, docs[9], "remote").as_deref(), Some("b"));
}

#[test]
fn a_failed_read_is_answered_as_nothing_in_common_and_not_kept() {
    let (mut h, r, a, docs) = synced_then_apart(bucket_relay().with_peer_index_cache(1), 10);
    // `c` takes the only place.
    let c = h.add(device("c"));
    h.connect(c, r);
    h.run_until_quiet();
    h.nodes[r].hold_peer_indexes = true;
    let (on_a, _) = h.connect(a, r);
    h.run_until_quiet();
    h.fail_peer_indexes(r);
    h.nodes[r].hold_peer_indexes = false;
    h.run_until_quiet();
    assert_converged(&mut h, a, r, &docs);
    assert!(!digest_steps(&h, r, 0).is_empty());
    h.drop_link(a, on_a);
    h.run_until_quiet();
    let (_, steps, loaded) = reconnect(&mut h, a, r);
    assert!(loaded, "the failed read was not kept");
    assert_eq!(steps, vec![DigestStep::Match]);
}
