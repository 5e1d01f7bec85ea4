//! The snapshot fetch (`sync::fetch`) as specifications: a fresh device gets many documents as
//! snapshots in a few frames, denied and absent ids get the same answer, nothing uncommitted
//! leaves the relay, and later changes flow through the plain protocol.

use automerge::Automerge;

use super::super::harness::Harness;
use super::super::{FetchProgress, FetchStep};
use super::{Policy, device, get, put, relay};
use crate::ids::DocumentId;
use crate::sync::{ConnectionId, Effect, EngineConfig, Message};

fn fetch_relay() -> EngineConfig {
    relay().with_snapshot_fetch(true)
}

/// Fetch steps `node` sent on `connection`.
fn fetch_steps(h: &Harness, node: usize, connection: ConnectionId) -> Vec<FetchStep> {
    h.nodes[node]
        .sent
        .iter()
        .filter(|(c, _, _)| *c == connection)
        .filter_map(|(_, m, _)| match m {
            Message::Fetch { step, .. } => Some(step.clone()),
            _ => None,
        })
        .collect()
}

/// Sync and request frames `node` sent on `connection`.
fn plain_frames(h: &Harness, node: usize, connection: ConnectionId) -> usize {
    h.nodes[node]
        .sent
        .iter()
        .filter(|(c, m, _)| {
            *c == connection && matches!(m, Message::Sync { .. } | Message::Request { .. })
        })
        .count()
}

/// Puts `n` documents into the relay's storage; returns them with the size of their snapshots.
fn seed_relay(h: &mut Harness, relay: usize, n: usize) -> (Vec<DocumentId>, u64) {
    let mut docs = Vec::new();
    let mut bytes = 0;
    for i in 0..n {
        let id = DocumentId::random();
        let mut doc = Automerge::new();
        put(&mut doc, "title", &format!("plan {i}"));
        // About 400 bytes that do not compress away, like a small real document.
        let notes: String = (0..60)
            .map(|k| format!("{:x}", (i * 7919 + k * 104_729) % 65_521))
            .collect();
        put(&mut doc, "notes", &notes);
        let saved = doc.save();
        bytes += saved.len() as u64;
        h.nodes[relay].storage.documents.insert(id, saved);
        docs.push(id);
    }
    (docs, bytes)
}

#[test]
fn a_fresh_device_gets_many_documents_as_snapshots_in_a_few_frames() {
    let mut h = Harness::default();
    let r = h.add(fetch_relay());
    let n = 1000;
    let (docs, snapshot_bytes) = seed_relay(&mut h, r, n);
    let d = h.add(device("fresh"));
    for doc in &docs {
        h.engine(d).open_document(*doc);
    }
    let (on_d, on_r) = h.connect(d, r);
    h.run_until_quiet();

    for (i, doc) in docs.iter().enumerate() {
        let title = format!("plan {i}");
        assert_eq!(get(&mut h, d, *doc, "title").as_deref(), Some(&*title));
        assert!(h.nodes[d].storage.documents.contains_key(doc), "stored");
        assert!(h.engine(d).in_sync_with(doc, on_d));
    }
    // One `want`, no per-document request.
    let asked = fetch_steps(&h, d, on_d);
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(matches!(&asked[0], FetchStep::Want(ids) if ids.len() == 16 * n));
    assert_eq!(plain_frames(&h, d, on_d), 0);
    assert_eq!(plain_frames(&h, r, on_r), 0);
    // A manifest, batches of at most 128 KiB, and `done`.
    let answer = fetch_steps(&h, r, on_r);
    assert_eq!(
        answer[0],
        FetchStep::Manifest {
            count: n as u64,
            bytes: snapshot_bytes
        }
    );
    let batches = answer.len() - 2;
    let bound = (snapshot_bytes as usize).div_ceil(128 * 1024) + 1;
    assert!(
        batches <= bound,
        "{batches} batches for {snapshot_bytes} bytes"
    );
    assert_eq!(
        answer.last(),
        Some(&FetchStep::Done {
            unavailable: Vec::new(),
            plain: Vec::new()
        })
    );
    let received: usize = h.nodes[r]
        .sent
        .iter()
        .filter(|(c, _, _)| *c == on_r)
        .map(|(_, _, len)| len)
        .sum();
    assert!(
        (received as f64) < 1.1 * snapshot_bytes as f64,
        "{received} bytes on the wire for {snapshot_bytes} of snapshots"
    );
    assert_eq!(
        h.engine(d).fetch_progress(on_d),
        Some(FetchProgress {
            documents_done: n as u64,
            documents_total: n as u64,
            bytes_done: snapshot_bytes,
            bytes_total: snapshot_bytes,
        })
    );
    // The relay counts the device as holding them: a sync state for its storage id each.
    for doc in &docs {
        assert!(
            h.nodes[r]
                .storage
                .sync_states
                .contains_key(&(*doc, "fresh-storage".into()))
        );
    }
}

#[test]
fn documents_opened_in_one_turn_while_connected_go_in_one_want() {
    let mut h = Harness::default();
    let r = h.add(fetch_relay());
    let (docs, _) = seed_relay(&mut h, r, 20);
    let d = h.add(device("fresh"));
    let (on_d, _) = h.connect(d, r);
    h.run_until_quiet();
    for doc in &docs {
        h.engine(d).open_document(*doc);
    }
    h.run_until_quiet();
    assert_eq!(fetch_steps(&h, d, on_d).len(), 1);
    assert_eq!(plain_frames(&h, d, on_d), 0);
    for doc in &docs {
        assert!(get(&mut h, d, *doc, "title").is_some());
    }
}

#[test]
fn denied_and_absent_ids_get_the_same_answer() {
    let secret = DocumentId::random();
    let absent = DocumentId::random();
    let mut h = Harness::default();
    let r = h.add_with_policy(fetch_relay(), Box::new(Policy { secret }));
    let a = h.add(device("a"));
    h.engine(a)
        .create_document(secret, |d| put(d, "notes", "private"))
        .unwrap();
    h.connect(a, r);
    h.run_until_quiet();

    // Two connections of mallory's, asking for one id each.
    let mut answers = Vec::new();
    for id in [secret, absent] {
        let m = h.add(device("mallory"));
        h.engine(m).open_document(id);
        let (on_m, on_r) = h.connect(m, r);
        h.run_until_quiet();
        assert_eq!(get(&mut h, m, id, "notes"), None);
        assert!(
            h.nodes[m]
                .events
                .iter()
                .any(|e| matches!(e, Effect::DocumentUnavailable { document } if *document == id))
        );
        assert_eq!(plain_frames(&h, r, on_r), 0, "the relay spoke about it");
        assert_eq!(fetch_steps(&h, m, on_m).len(), 1);
        let steps = fetch_steps(&h, r, on_r);
        assert_eq!(
            steps,
            vec![
                FetchStep::Manifest { count: 0, bytes: 0 },
                FetchStep::Done {
                    unavailable: id.as_bytes().to_vec(),
                    plain: Vec::new()
                }
            ]
        );
        let sizes: Vec<usize> = h.nodes[r]
            .sent
            .iter()
            .filter(|(c, _, _)| *c == on_r)
            .map(|(_, _, len)| *len)
            .collect();
        answers.push(sizes);
    }
    assert_eq!(answers[0], answers[1], "same frames, byte for byte in size");
}

#[test]
fn uncommitted_changes_are_never_sent_as_a_snapshot() {
    let mut h = Harness::default();
    let r = h.add(fetch_relay());
    let a = h.add(device("a"));
    let doc = DocumentId::random();
    h.engine(a)
        .create_document(doc, |d| put(d, "note", "v1"))
        .unwrap();
    let (on_a, _) = h.connect(a, r);
    h.run_until_quiet();

    // A change reaches the relay and waits for its commit.
    h.nodes[r].hold_persists = true;
    h.engine(a)
        .local_change(doc, |d| put(d, "note", "v2"))
        .unwrap();
    h.run_until_quiet();
    assert!(!h.engine(a).in_sync_with(&doc, on_a));

    let d = h.add(device("fresh"));
    h.engine(d).open_document(doc);
    let (on_d, on_r) = h.connect(d, r);
    h.run_until_quiet();
    assert!(
        fetch_steps(&h, r, on_r).is_empty(),
        "no answer while a commit is outstanding"
    );
    assert_eq!(get(&mut h, d, doc, "note"), None);
    assert!(!h.engine(d).in_sync_with(&doc, on_d));

    h.nodes[r].hold_persists = false;
    h.release_persists(r);
    h.run_until_quiet();
    assert_eq!(get(&mut h, d, doc, "note").as_deref(), Some("v2"));
    assert!(h.engine(d).in_sync_with(&doc, on_d));
    assert_eq!(plain_frames(&h, r, on_r), 0);
}

#[test]
fn changes_after_the_snapshot_flow_both_ways() {
    let mut h = Harness::default();
    let r = h.add(fetch_relay());
    let a = h.add(device("a"));
    let doc = DocumentId::random();
    h.engine(a)
        .create_document(doc, |d| put(d, "note", "v1"))
        .unwrap();
    let (on_a, _) = h.connect(a, r);
    h.run_until_quiet();
    let d = h.add(device("fresh"));
    h.engine(d).open_document(doc);
    let (on_d, _) = h.connect(d, r);
    h.run_until_quiet();
    assert_eq!(get(&mut h, d, doc, "note").as_deref(), Some("v1"));

    // The relay's document moves: the fetched device gets the change.
    h.engine(a)
        .local_change(doc, |d| put(d, "note", "from a"))
        .unwrap();
    h.run_until_quiet();
    assert_eq!(get(&mut h, d, doc, "note").as_deref(), Some("from a"));
    assert!(h.engine(d).in_sync_with(&doc, on_d));

    // The fetched device edits: the change reaches the other device.
    h.engine(d)
        .local_change(doc, |d| put(d, "note", "from fresh"))
        .unwrap();
    h.run_until_quiet();
    assert_eq!(get(&mut h, a, doc, "note").as_deref(), Some("from fresh"));
    assert!(h.engine(a).in_sync_with(&doc, on_a));
    assert!(h.engine(d).in_sync_with(&doc, on_d));
}

#[test]
fn a_relay_without_the_fetch_flag_gets_plain_requests() {
    let mut h = Harness::default();
    let r = h.add(relay());
    let a = h.add(device("a"));
    let doc = DocumentId::random();
    h.engine(a)
        .create_document(doc, |d| put(d, "note", "v1"))
        .unwrap();
    h.connect(a, r);
    h.run_until_quiet();
    let d = h.add(device("fresh"));
    h.engine(d).open_document(doc);
    let (on_d, _) = h.connect(d, r);
    h.run_until_quiet();
    assert!(fetch_steps(&h, d, on_d).is_empty());
    assert!(plain_frames(&h, d, on_d) > 0);
    assert_eq!(get(&mut h, d, doc, "note").as_deref(), Some("v1"));
}

#[test]
fn a_malformed_snapshot_batch_closes_the_connection() {
    let mut h = Harness::default();
    let r = h.add(fetch_relay());
    let d = h.add(device("fresh"));
    let doc = DocumentId::random();
    h.engine(d).open_document(doc);
    let (on_d, _) = h.connect(d, r);
    // Only the handshake: the relay has not answered the want yet.
    h.deliver_round();
    h.deliver_round();
    let bad = Message::Fetch {
        sender_id: "relay".into(),
        target_id: "fresh".into(),
        step: FetchStep::Snapshots(vec![1, 2, 3]),
    };
    h.inject(d, on_d, &bad.encode());
    h.run_until_quiet();
    assert!(
        h.nodes[d]
            .events
            .iter()
            .any(|e| matches!(e, Effect::Close { connection, reason } if *connection == on_d && reason.contains("malformed snapshot batch")))
    );
}

#[test]
fn wants_past_the_connection_limit_close_the_connection() {
    let mut h = Harness::default();
    let limits = crate::sync::Limits {
        max_documents_per_connection: 10,
        ..crate::sync::Limits::default()
    };
    let r = h.add(fetch_relay().with_limits(limits));
    let d = h.add(device("greedy"));
    let (_, on_r) = h.connect(d, r);
    h.run_until_quiet();
    let ids: Vec<DocumentId> = (0..11).map(|_| DocumentId::random()).collect();
    let want = Message::Fetch {
        sender_id: "greedy".into(),
        target_id: "relay".into(),
        step: FetchStep::Want(crate::sync::fetch::encode_ids(ids.iter())),
    };
    h.inject(r, on_r, &want.encode());
    h.run_until_quiet();
    assert!(h.nodes[r].events.iter().any(|e| matches!(
        e,
        Effect::Close { connection, reason } if *connection == on_r && reason.contains("too many documents")
    )));
    // A malformed want (not a whole number of ids) is refused too.
    let (_, on_r) = h.connect(d, r);
    h.run_until_quiet();
    let bad = Message::Fetch {
        sender_id: "greedy".into(),
        target_id: "relay".into(),
        step: FetchStep::Want(vec![1; 17]),
    };
    h.inject(r, on_r, &bad.encode());
    h.run_until_quiet();
    assert!(h.nodes[r].events.iter().any(|e| matches!(
        e,
        Effect::Close { connection, reason } if *connection == on_r && reason.contains("malformed fetch want")
    )));
}

#[test]
fn a_reconnect_after_a_fetch_is_one_digest_match() {
    let mut h = Harness::default();
    let r = h.add(fetch_relay().with_reconnect_digest(true));
    let (docs, _) = seed_relay(&mut h, r, 50);
    let d = h.add(device("fresh"));
    for doc in &docs {
        h.engine(d).open_document(*doc);
    }
    let (on_d, _) = h.connect(d, r);
    h.run_until_quiet();
    h.drop_link(d, on_d);
    h.run_until_quiet();

    let (on_d, on_r) = h.connect(d, r);
    h.run_until_quiet();
    let steps: Vec<_> = h.nodes[r]
        .sent
        .iter()
        .filter(|(c, _, _)| *c == on_r)
        .filter_map(|(_, m, _)| match m {
            Message::Digest { step, .. } => Some(step.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(steps, vec![crate::sync::DigestStep::Match]);
    assert_eq!(plain_frames(&h, d, on_d), 0);
    assert_eq!(plain_frames(&h, r, on_r), 0);
    assert!(fetch_steps(&h, d, on_d).is_empty());
    for doc in &docs {
        assert!(h.engine(d).in_sync_with(doc, on_d));
    }
}

#[test]
fn a_fetched_snapshot_is_stored_unloaded_until_something_reads_it() {
    let mut h = Harness::default();
    let r = h.add(fetch_relay());
    let (docs, _) = seed_relay(&mut h, r, 3);
    let d = h.add(device("fresh"));
    for doc in &docs {
        h.engine(d).open_document(*doc);
    }
    let (on_d, _) = h.connect(d, r);
    h.run_until_quiet();
    for doc in &docs {
        // Stored as it came, not loaded: the heads come from its header.
        assert!(h.engine(d).document(doc).is_none());
        let stored = h.nodes[d].storage.documents[doc].clone();
        assert_eq!(stored, h.nodes[r].storage.documents[doc]);
        let relay_heads = h.engine(r).heads(doc).unwrap();
        assert_eq!(h.engine(d).heads(doc).unwrap(), relay_heads);
        assert!(h.engine(d).in_sync_with(doc, on_d));
        // The change notification says the whole document arrived, at those heads.
        let changed = h.nodes[d].events.iter().find_map(|e| match e {
            Effect::DocumentChanged { document, changes } if document == doc => Some(changes),
            _ => None,
        });
        let changed = changed.unwrap();
        assert!(changed.whole_document);
        assert_eq!(changed.heads, relay_heads);
    }
    // A change from the relay's side loads it and applies.
    let a = h.add(device("a"));
    h.engine(a).open_document(docs[0]);
    let _ = h.connect(a, r);
    h.run_until_quiet();
    h.engine(a)
        .local_change(docs[0], |doc| put(doc, "title", "renamed"))
        .unwrap();
    h.run_until_quiet();
    assert!(
        h.engine(d).document(&docs[0]).is_some(),
        "loaded to apply the change"
    );
    assert_eq!(get(&mut h, d, docs[0], "title").as_deref(), Some("renamed"));
    assert!(h.engine(d).in_sync_with(&docs[0], on_d));
    // A local edit loads another.
    h.engine(d)
        .local_change(docs[1], |doc| put(doc, "title", "mine"))
        .unwrap();
    h.run_until_quiet();
    assert_eq!(get(&mut h, r, docs[1], "title").as_deref(), Some("mine"));
    assert!(
        h.engine(d).document(&docs[2]).is_none(),
        "the third is still unread"
    );
}

#[test]
fn a_stored_snapshot_that_does_not_load_is_reloaded_from_storage_and_reported() {
    use sha2::{Digest, Sha256};

    let mut h = Harness::default();
    let r = h.add(fetch_relay());
    let (docs, _) = seed_relay(&mut h, r, 1);
    let doc = docs[0];
    let d = h.add(device("fresh"));
    h.engine(d).open_document(doc);
    let (on_d, _) = h.connect(d, r);
    // Only the handshake and the want: the answer is made here.
    h.deliver_round();
    h.deliver_round();
    let mut bad = h.nodes[r].storage.documents[&doc].clone();
    let at = bad.windows(4).position(|w| w == b"plan").unwrap();
    bad[at] = b'P';
    let checksum = Sha256::digest(&bad[8..]);
    bad[4..8].copy_from_slice(&checksum[..4]);
    let mut batch = Vec::new();
    crate::sync::fetch::push_snapshot(&mut batch, &doc, &bad);
    let frame = |step| {
        Message::Fetch {
            sender_id: "relay".into(),
            target_id: "fresh".into(),
            step,
        }
        .encode()
    };
    h.inject(d, on_d, &frame(FetchStep::Snapshots(batch)));
    // This storage keeps whatever it is given (the device's store would refuse it): the
    // engine finds out when something reads the document.
    assert!(h.engine(d).document(&doc).is_none());
    assert!(h.engine(d).local_change(doc, |d| put(d, "x", "y")).is_err());
    let events = h.engine(d).take_effects();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Effect::LoadDocument { document } if *document == doc)),
        "reloaded from storage: {events:?}"
    );
    let refused = h.engine(d).document_loaded(
        doc,
        crate::sync::StoredDocument {
            bytes: Some(bad),
            sync_states: Vec::new(),
        },
    );
    assert!(
        matches!(refused, Err(crate::Error::Corrupt { .. })),
        "{refused:?}"
    );
}
