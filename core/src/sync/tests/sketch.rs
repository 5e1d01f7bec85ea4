//! The reconnect digest's sketch (`sync::sketch`) as specifications: a differing reconnect costs
//! a table sized to the documents that differ, whatever the device holds; every kind of
//! difference is found and synced in at most three round trips; a table too small for the
//! difference falls back to the bucket exchange one round trip later; a Tandem peer without the
//! sketch, a relay that cannot estimate the difference, or a device holding so few documents that
//! listing them all costs less than the smallest sketch, gets the bucket exchange; bad input
//! closes the connection.

use super::super::DigestStep;
use super::super::harness::Harness;
use super::{
    Revocable, any_doc_frames, closed, device, digest_relay, digest_steps, get, put,
    unavailable_sent,
};
use crate::ids::DocumentId;
use crate::sync::{ConnectionId, EngineConfig, Message, SyncEngine};

/// A relay configured by `relay` and device `a` configured by `device` that synced `n`
/// documents, then disconnected.
fn synced_then_apart(
    relay: EngineConfig,
    device: EngineConfig,
    n: usize,
) -> (Harness, usize, usize, Vec<DocumentId>) {
    let mut h = Harness::default();
    let r = h.add(relay);
    let a = h.add(device);
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

fn both() -> (EngineConfig, EngineConfig) {
    (digest_relay(), device("a"))
}

/// Device `name` edits each of `docs` through the relay (committed there) and leaves.
fn remote_edits(h: &mut Harness, r: usize, name: &str, docs: &[DocumentId]) {
    let b = h.add(device(name));
    let (on_b, _) = h.connect(b, r);
    for doc in docs {
        h.engine(b).open_document(*doc);
    }
    h.run_until_quiet();
    for doc in docs {
        h.engine(b)
            .local_change(*doc, |d| put(d, "remote", name))
            .unwrap();
    }
    h.run_until_quiet();
    h.drop_link(b, on_b);
    h.run_until_quiet();
}

fn local_edits(h: &mut Harness, a: usize, docs: &[DocumentId]) {
    for doc in docs {
        h.engine(a)
            .local_change(*doc, |d| put(d, "offline", "a"))
            .unwrap();
    }
}

/// What one reconnect of `a` did, delivered round by round until every one of `docs` is
/// settled on `a` at the relay's heads, then until quiet.
struct Reconnect {
    on_a: ConnectionId,
    rounds: usize,
    device_steps: Vec<DigestStep>,
    relay_steps: Vec<DigestStep>,
    /// Documents that ran the sync protocol, either way.
    synced: Vec<DocumentId>,
    /// Bytes of the digest messages, both ways.
    digest_bytes: usize,
}

fn reconnect(h: &mut Harness, a: usize, r: usize, docs: &[DocumentId]) -> Reconnect {
    let (a_from, r_from) = (h.nodes[a].sent.len(), h.nodes[r].sent.len());
    let (on_a, _) = h.connect(a, r);
    // Documents the relay does not hold in memory (a restarted relay loads only what syncs)
    // count by the device's view alone.
    let converged = |h: &mut Harness| {
        docs.iter().all(|doc| {
            let relay = h.engine(r).heads(doc);
            h.engine(a).in_sync_with(doc, on_a)
                && (relay.is_none() || h.engine(a).heads(doc) == relay)
        })
    };
    let mut rounds = 0;
    while !converged(h) {
        assert!(
            h.deliver_round(),
            "the network went quiet before converging"
        );
        rounds += 1;
        assert!(rounds <= 20, "no convergence after 20 rounds");
    }
    h.run_until_quiet();
    assert!(converged(h));
    let mut synced = any_doc_frames(h, a, a_from);
    synced.extend(any_doc_frames(h, r, r_from));
    synced.sort();
    synced.dedup();
    let digest_bytes = [(a, a_from), (r, r_from)]
        .iter()
        .flat_map(|(n, from)| h.nodes[*n].sent[*from..].iter())
        .filter(|(_, m, _)| matches!(m, Message::Digest { .. }))
        .map(|(_, _, len)| *len)
        .sum();
    Reconnect {
        on_a,
        rounds,
        device_steps: digest_steps(h, a, a_from),
        relay_steps: digest_steps(h, r, r_from),
        synced,
        digest_bytes,
    }
}

fn sorted(docs: &[DocumentId]) -> Vec<DocumentId> {
    let mut docs = docs.to_vec();
    docs.sort();
    docs
}

/// The ids a `decoded` step lists.
fn decoded(steps: &[DigestStep]) -> Vec<DocumentId> {
    let Some(DigestStep::Decoded(bytes)) = steps.last() else {
        panic!("the device did not decode: {steps:?}");
    };
    let mut ids = super::super::digest::decode_ids(bytes).unwrap();
    ids.sort();
    ids
}

#[test]
fn a_differing_reconnect_costs_a_sketch_sized_to_the_difference_not_to_the_documents() {
    let mut sketch_bytes = Vec::new();
    for n in [100, 1000] {
        let (relay, dev) = both();
        let (mut h, r, a, docs) = synced_then_apart(relay, dev, n);
        local_edits(&mut h, a, &docs[..3]);
        remote_edits(&mut h, r, "b", &docs[10..13]);
        let changed: Vec<DocumentId> = docs[..3].iter().chain(&docs[10..13]).copied().collect();
        let reconnect = reconnect(&mut h, a, r, &docs);
        assert!(matches!(
            reconnect.device_steps.as_slice(),
            [
                DigestStep::Offer {
                    changed: Some(3),
                    ..
                },
                DigestStep::Decoded(_)
            ]
        ));
        let [DigestStep::Sketch { count, cells, .. }] = reconnect.relay_steps.as_slice() else {
            panic!("not one sketch: {:?}", reconnect.relay_steps);
        };
        assert_eq!(*count, n as u64);
        assert_eq!(decoded(&reconnect.device_steps), sorted(&changed));
        assert_eq!(reconnect.synced, sorted(&changed), "only they synced");
        // Handshake, then offer/sketch, decoded and the device's offers/the relay's changes, the
        // device's changes/the relay's answer: three round trips.
        assert!(reconnect.rounds <= 2 + 6, "{} rounds", reconnect.rounds);
        for doc in &docs[..3] {
            assert_eq!(get(&mut h, r, *doc, "offline").as_deref(), Some("a"));
        }
        for doc in &docs[10..13] {
            assert_eq!(get(&mut h, a, *doc, "remote").as_deref(), Some("b"));
        }
        sketch_bytes.push((cells.len(), reconnect.digest_bytes));
    }
    // Ten times the documents, the same table: 2 pairs per document each side counted.
    assert_eq!(sketch_bytes[0].0, sketch_bytes[1].0);
    assert_eq!(
        sketch_bytes[0].0,
        super::super::sketch::cells_for(2 * (3 + 3)) * super::super::sketch::CELL_BYTES
    );
    // Only the counts in the offer and sketch grow with the documents.
    assert!(
        sketch_bytes[1].1 - sketch_bytes[0].1 < 8,
        "{sketch_bytes:?}"
    );
}

#[test]
fn every_kind_of_difference_is_found_and_synced() {
    let (relay, dev) = both();
    let (mut h, r, a, docs) = synced_then_apart(relay, dev, 200);
    let check = |h: &mut Harness, expected: &[DocumentId], docs: &[DocumentId]| {
        let reconnect = reconnect(h, a, r, docs);
        assert!(
            matches!(
                reconnect.relay_steps.as_slice(),
                [DigestStep::Sketch { .. }]
            ),
            "{:?}",
            reconnect.relay_steps
        );
        assert_eq!(decoded(&reconnect.device_steps), sorted(expected));
        assert!(reconnect.rounds <= 2 + 6, "{} rounds", reconnect.rounds);
        reconnect.on_a
    };

    // Changed on the device only.
    local_edits(&mut h, a, &docs[..4]);
    let on_a = check(&mut h, &docs[..4], &docs);
    for doc in &docs[..4] {
        assert_eq!(get(&mut h, r, *doc, "offline").as_deref(), Some("a"));
    }
    h.drop_link(a, on_a);
    h.run_until_quiet();

    // Changed on the relay only.
    remote_edits(&mut h, r, "b", &docs[4..8]);
    let on_a = check(&mut h, &docs[4..8], &docs);
    for doc in &docs[4..8] {
        assert_eq!(get(&mut h, a, *doc, "remote").as_deref(), Some("b"));
    }
    h.drop_link(a, on_a);
    h.run_until_quiet();

    // Both sides, one document changed on both.
    local_edits(&mut h, a, &docs[8..11]);
    remote_edits(&mut h, r, "c", &docs[10..13]);
    let on_a = check(&mut h, &docs[8..13], &docs);
    assert_eq!(get(&mut h, r, docs[10], "offline").as_deref(), Some("a"));
    assert_eq!(get(&mut h, a, docs[10], "remote").as_deref(), Some("c"));
    h.drop_link(a, on_a);
    h.run_until_quiet();

    // A document only the device holds (created while away).
    let fresh = DocumentId::random();
    h.engine(a)
        .create_document(fresh, |d| put(d, "title", "new"))
        .unwrap();
    let mut all = docs.clone();
    all.push(fresh);
    let on_a = check(&mut h, &[fresh], &all);
    assert_eq!(get(&mut h, r, fresh, "title").as_deref(), Some("new"));
    h.drop_link(a, on_a);
    h.run_until_quiet();

    // A document only the relay holds for this device: the device lost it (a restored store
    // without it). It is listed as differing and nothing syncs it; the rest is equal.
    let mut storage = h.nodes[a].storage.clone();
    storage.documents.remove(&docs[20]);
    storage.persists = 0;
    let a2 = h.add_engine(SyncEngine::new(device("a")), storage);
    let kept: Vec<DocumentId> = all.iter().copied().filter(|d| *d != docs[20]).collect();
    for doc in &kept {
        h.engine(a2).open_document(*doc);
    }
    h.run_until_quiet();
    let reconnect = reconnect(&mut h, a2, r, &kept);
    assert!(matches!(
        reconnect.relay_steps.as_slice(),
        [DigestStep::Sketch { .. }]
    ));
    assert_eq!(decoded(&reconnect.device_steps), vec![docs[20]]);
    assert!(reconnect.synced.is_empty());
}

#[test]
fn a_sketch_too_small_for_the_difference_falls_back_to_the_buckets_one_round_trip_later() {
    let (relay, dev) = both();
    let (mut h, r, a, docs) = synced_then_apart(relay, dev, 300);
    local_edits(&mut h, a, &docs[..5]);
    remote_edits(&mut h, r, "b", &docs[10..15]);
    // Twenty differing pairs in four cells: it cannot peel.
    h.engine(r).sketch_cells = Some(4);
    let reconnect = reconnect(&mut h, a, r, &docs);
    assert!(
        matches!(
            reconnect.device_steps.as_slice(),
            [
                DigestStep::Offer { .. },
                DigestStep::Undecodable,
                DigestStep::Entries(_)
            ]
        ),
        "{:?}",
        reconnect.device_steps
    );
    assert!(
        matches!(
            reconnect.relay_steps.as_slice(),
            [
                DigestStep::Sketch { .. },
                DigestStep::Buckets(_),
                DigestStep::Differ(_)
            ]
        ),
        "{:?}",
        reconnect.relay_steps
    );
    let changed: Vec<DocumentId> = docs[..5].iter().chain(&docs[10..15]).copied().collect();
    assert_eq!(reconnect.synced, sorted(&changed));
    assert!(reconnect.rounds <= 2 + 8, "{} rounds", reconnect.rounds);
    for doc in &docs[..5] {
        assert_eq!(get(&mut h, r, *doc, "offline").as_deref(), Some("a"));
    }
    for doc in &docs[10..15] {
        assert_eq!(get(&mut h, a, *doc, "remote").as_deref(), Some("b"));
    }
}

#[test]
fn a_tandem_peer_without_the_sketch_gets_the_bucket_exchange() {
    let older_device = (digest_relay(), device("a").with_reconnect_sketch(false));
    let older_relay = (digest_relay().with_reconnect_sketch(false), device("a"));
    for (relay, dev) in [older_device, older_relay] {
        let (mut h, r, a, docs) = synced_then_apart(relay, dev, 100);
        local_edits(&mut h, a, &docs[..2]);
        remote_edits(&mut h, r, "b", &docs[50..52]);
        let reconnect = reconnect(&mut h, a, r, &docs);
        assert!(matches!(
            reconnect.device_steps.as_slice(),
            [
                DigestStep::Offer { changed: None, .. },
                DigestStep::Entries(_)
            ]
        ));
        assert!(matches!(
            reconnect.relay_steps.as_slice(),
            [DigestStep::Buckets(_), DigestStep::Differ(_)]
        ));
        let changed: Vec<DocumentId> = docs[..2].iter().chain(&docs[50..52]).copied().collect();
        assert_eq!(reconnect.synced, sorted(&changed));
    }
}

#[test]
fn a_device_holding_few_documents_gets_the_buckets_which_cost_less_than_a_sketch() {
    let (relay, dev) = both();
    let (mut h, r, a, docs) = synced_then_apart(relay, dev, 30);
    local_edits(&mut h, a, &docs[..1]);
    let reconnect = reconnect(&mut h, a, r, &docs);
    assert!(matches!(
        reconnect.relay_steps.as_slice(),
        [DigestStep::Buckets(_), DigestStep::Differ(_)]
    ));
    assert_eq!(reconnect.synced, vec![docs[0]]);
}

#[test]
fn a_relay_that_read_the_index_from_storage_answers_with_buckets_then_with_sketches() {
    let (relay, dev) = both();
    let (h, r, a, docs) = synced_then_apart(relay, dev, 100);
    // The relay restarts: its index is read from storage, and it cannot tell what moved.
    let mut h2 = Harness::default();
    let r2 = h2.add_engine(SyncEngine::new(digest_relay()), h.nodes[r].storage.clone());
    let mut storage = h.nodes[a].storage.clone();
    storage.persists = 0;
    let a2 = h2.add_engine(SyncEngine::new(device("a")), storage);
    for doc in &docs {
        h2.engine(a2).open_document(*doc);
    }
    h2.run_until_quiet();
    local_edits(&mut h2, a2, &docs[..2]);
    let first = reconnect(&mut h2, a2, r2, &docs);
    assert!(matches!(
        first.relay_steps.as_slice(),
        [DigestStep::Buckets(_), DigestStep::Differ(_)]
    ));
    assert_eq!(first.synced, sorted(&docs[..2]));
    // Once that connection settled and closed, the relay counts what moves: a sketch.
    h2.drop_link(a2, first.on_a);
    h2.run_until_quiet();
    remote_edits(&mut h2, r2, "b", &docs[5..7]);
    let second = reconnect(&mut h2, a2, r2, &docs);
    assert!(matches!(
        second.relay_steps.as_slice(),
        [DigestStep::Sketch { .. }]
    ));
    assert_eq!(second.synced, sorted(&docs[5..7]));
    // Nothing changed: one match.
    h2.drop_link(a2, second.on_a);
    h2.run_until_quiet();
    let idle = reconnect(&mut h2, a2, r2, &docs);
    assert_eq!(idle.relay_steps, vec![DigestStep::Match]);
    assert!(matches!(
        idle.device_steps.as_slice(),
        [DigestStep::Offer {
            changed: Some(0),
            ..
        }]
    ));
}

#[test]
fn a_sketch_covers_only_documents_the_peer_may_read() {
    let revoked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut h = Harness::default();
    let docs: Vec<DocumentId> = (0..60).map(|_| DocumentId::random()).collect();
    let secret = docs[3];
    let r = h.add_with_policy(
        digest_relay(),
        Box::new(Revocable {
            secret,
            revoked: revoked.clone(),
        }),
    );
    let a = h.add(device("a"));
    for doc in &docs {
        h.engine(a)
            .create_document(*doc, |d| put(d, "k", "1"))
            .unwrap();
    }
    let (on_a, _) = h.connect(a, r);
    h.run_until_quiet();
    h.drop_link(a, on_a);
    h.run_until_quiet();
    revoked.store(true, std::sync::atomic::Ordering::SeqCst);

    // Nothing changed, but `a` may no longer read `secret`: the relay's table leaves it out, so
    // it is the one differing document, and syncing it is answered as for an absent one.
    let reconnect = reconnect(&mut h, a, r, &docs);
    let [DigestStep::Sketch { count, .. }] = reconnect.relay_steps.as_slice() else {
        panic!("not one sketch: {:?}", reconnect.relay_steps);
    };
    assert_eq!(*count, 59);
    assert_eq!(decoded(&reconnect.device_steps), vec![secret]);
    assert!(unavailable_sent(&h, r, secret));
    assert_eq!(reconnect.synced, vec![secret]);
}

/// `a` reconnects with a change; the network runs until the relay has answered the offer (its
/// sketch not yet delivered). Returns both ends of the connection.
fn until_sketched(h: &mut Harness, a: usize, r: usize) -> (ConnectionId, ConnectionId) {
    let ends = h.connect(a, r);
    // `join`, `peer` (the device's offer goes with it), the offer.
    for _ in 0..3 {
        assert!(h.deliver_round());
    }
    ends
}

#[test]
fn bad_sketch_steps_close_the_connection() {
    let (relay, dev) = both();
    let (mut h, r, a, docs) = synced_then_apart(relay, dev, 100);
    local_edits(&mut h, a, &docs[..1]);
    let digest = |step: DigestStep| {
        Message::Digest {
            sender_id: "x".into(),
            target_id: "y".into(),
            step,
        }
        .encode()
    };

    // The relay: more differing ids than its sketch has cells, and ids that are not 16 bytes.
    for bad in [vec![7u8; 16 * 100_000], vec![7u8; 17]] {
        let (on_a, on_r) = until_sketched(&mut h, a, r);
        h.inject(r, on_r, &digest(DigestStep::Decoded(bad)));
        h.run_until_quiet();
        assert!(closed(&h, r, on_r));
        h.drop_link(a, on_a);
        h.run_until_quiet();
    }

    // The device: a sketch that is not whole cells, one too large, a total of the wrong size.
    let bad_sketches = [
        (vec![0u8; 30], vec![0u8; 16]),
        (
            vec![0u8; (super::super::sketch::MAX_CELLS + 4) * super::super::sketch::CELL_BYTES],
            vec![0u8; 16],
        ),
        (
            vec![0u8; 4 * super::super::sketch::CELL_BYTES],
            vec![0u8; 3],
        ),
    ];
    for (cells, total) in bad_sketches {
        let (on_a, _) = h.connect(a, r);
        // `join` and `peer`: the device has offered.
        for _ in 0..2 {
            assert!(h.deliver_round());
        }
        let step = DigestStep::Sketch {
            count: 1,
            total,
            seed: 1,
            cells,
        };
        h.inject(a, on_a, &digest(step));
        h.run_until_quiet();
        assert!(closed(&h, a, on_a));
        h.drop_link(a, on_a);
        h.run_until_quiet();
    }
}

/// A fetched snapshot the app never read stays unloaded on the device; when a later reconnect's
/// sketch finds it differing, the device still offers it (the relay starts nothing after a
/// sketch), and it converges.
#[test]
fn a_fetched_document_never_read_is_synced_when_a_sketch_finds_it_differing() {
    let mut h = Harness::default();
    let r = h.add(digest_relay().with_snapshot_fetch(true));
    let docs: Vec<DocumentId> = (0..60).map(|_| DocumentId::random()).collect();
    for (i, doc) in docs.iter().enumerate() {
        let mut seed = automerge::Automerge::new();
        put(&mut seed, "title", &format!("plan {i}"));
        h.nodes[r].storage.documents.insert(*doc, seed.save());
    }
    let a = h.add(device("a"));
    for doc in &docs {
        h.engine(a).open_document(*doc);
    }
    let (on_a, _) = h.connect(a, r);
    h.run_until_quiet();
    h.drop_link(a, on_a);
    h.run_until_quiet();
    // A reconnect with nothing changed settles the relay's count of what moved since.
    let idle = reconnect(&mut h, a, r, &docs);
    h.drop_link(a, idle.on_a);
    h.run_until_quiet();
    assert!(
        h.engine(a).document(&docs[7]).is_none(),
        "fetched and never read: still unloaded"
    );

    remote_edits(&mut h, r, "b", &docs[7..8]);
    let changed = reconnect(&mut h, a, r, &docs);
    assert_eq!(decoded(&changed.device_steps), vec![docs[7]]);
    assert_eq!(get(&mut h, a, docs[7], "remote").as_deref(), Some("b"));
}
