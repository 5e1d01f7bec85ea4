//! Engine behaviour as specifications, run in the in-memory [`Harness`].

#![allow(clippy::unwrap_used)]

use automerge::transaction::Transactable;
use automerge::{Automerge, AutomergeError, ROOT, ReadDoc};

use super::harness::Harness;
use super::{
    Access, AccessPolicy, ConnectionId, Effect, EngineConfig, Limits, Message, PeerInfo, Role,
    SyncEngine,
};
use crate::ids::DocumentId;

fn device(name: &str) -> EngineConfig {
    EngineConfig::new(name, Role::Device).with_storage_id(format!("{name}-storage"))
}

fn relay() -> EngineConfig {
    EngineConfig::new("relay", Role::Relay).with_storage_id("relay-storage")
}

fn put(doc: &mut Automerge, key: &str, value: &str) {
    doc.transact::<_, _, AutomergeError>(|tx| {
        tx.put(ROOT, key, value)?;
        Ok(())
    })
    .unwrap();
}

/// A root key's string value in the engine's document, as its saved form reads (a fetched
/// snapshot the engine has not loaded included).
fn get(h: &mut Harness, node: usize, doc: DocumentId, key: &str) -> Option<String> {
    let saved = h.engine(node).save_document(&doc)?;
    let d = Automerge::load(&saved).unwrap();
    let (value, _) = d.get(ROOT, key).unwrap()?;
    value.as_str().map(str::to_owned)
}

/// Sync and request frames about `doc` that `node` sent from index `from` on.
fn doc_frames(h: &Harness, node: usize, doc: DocumentId, from: usize) -> usize {
    h.nodes[node].sent[from..]
        .iter()
        .filter(|(_, m, _)| {
            matches!(m, Message::Sync { document_id, .. } | Message::Request { document_id, .. }
                if *document_id == doc)
        })
        .count()
}

fn unavailable_sent(h: &Harness, node: usize, doc: DocumentId) -> bool {
    h.nodes[node].sent.iter().any(
        |(_, m, _)| matches!(m, Message::DocUnavailable { document_id, .. } if *document_id == doc),
    )
}

fn closed(h: &Harness, node: usize, connection: ConnectionId) -> bool {
    h.nodes[node]
        .events
        .iter()
        .any(|e| matches!(e, Effect::Close { connection: c, .. } if *c == connection))
}

/// A relay and two devices, both connected; device A created `doc` with mentee "Ana".
fn relay_and_two_devices() -> (Harness, [usize; 3], DocumentId) {
    let mut h = Harness::default();
    let r = h.add(relay());
    let a = h.add(device("a"));
    let b = h.add(device("b"));
    let doc = DocumentId::random();
    h.engine(a)
        .create_document(doc, |d| put(d, "mentee", "Ana"))
        .unwrap();
    h.connect(a, r);
    h.connect(b, r);
    h.run_until_quiet();
    (h, [r, a, b], doc)
}

#[test]
fn two_devices_converge_through_the_relay() {
    let (mut h, [r, a, b], doc) = relay_and_two_devices();
    assert!(
        h.nodes[r].storage.documents.contains_key(&doc),
        "the relay stores what clients send"
    );

    // B has never seen the document: opening it requests it from the relay.
    h.engine(b).open_document(doc);
    h.run_until_quiet();
    assert_eq!(get(&mut h, b, doc, "mentee").as_deref(), Some("Ana"));

    h.engine(b)
        .local_change(doc, |d| put(d, "goals", "read more"))
        .unwrap();
    h.engine(a)
        .local_change(doc, |d| put(d, "term", "fall"))
        .unwrap();
    h.run_until_quiet();

    let heads: Vec<_> = [r, a, b].iter().map(|n| h.engine(*n).heads(&doc)).collect();
    assert!(heads.iter().all(|x| *x == heads[0]), "all three converge");
    assert_eq!(get(&mut h, a, doc, "goals").as_deref(), Some("read more"));
    assert_eq!(get(&mut h, b, doc, "term").as_deref(), Some("fall"));

    // A hears which top-level key changed, once it is durable on A.
    let changed = h.nodes[a].events.iter().find_map(|e| match e {
        Effect::DocumentChanged { document, changes } if *document == doc => Some(changes),
        _ => None,
    });
    assert!(changed.unwrap().top_level_keys.contains("goals"));
}

#[test]
fn a_device_that_was_offline_catches_up() {
    let (mut h, [r, a, b], doc) = relay_and_two_devices();
    h.engine(b).open_document(doc);
    h.run_until_quiet();
    let b_conn = h.engine(b).peers().next().unwrap().connection;
    h.drop_link(b, b_conn);
    h.run_until_quiet();

    for i in 0..5 {
        h.engine(a)
            .local_change(doc, |d| put(d, "note", &format!("edit {i}")))
            .unwrap();
    }
    h.run_until_quiet();
    assert_eq!(get(&mut h, b, doc, "note"), None, "B is offline");

    h.connect(b, r);
    h.run_until_quiet();
    assert_eq!(get(&mut h, b, doc, "note").as_deref(), Some("edit 4"));
    assert_eq!(h.engine(b).heads(&doc), h.engine(a).heads(&doc));
}

#[test]
fn an_unknown_document_is_unavailable() {
    let (mut h, [r, _, b], _) = relay_and_two_devices();
    let nowhere = DocumentId::random();
    h.engine(b).open_document(nowhere);
    h.run_until_quiet();
    assert!(unavailable_sent(&h, r, nowhere));
    assert!(
        h.nodes[b]
            .events
            .iter()
            .any(|e| matches!(e, Effect::DocumentUnavailable { document } if *document == nowhere))
    );
    assert!(
        !h.nodes[r].storage.documents.contains_key(&nowhere),
        "nothing stored"
    );

    // With no peer at all (a device offline), nobody can say the document does not exist: it
    // stays wanted, to be asked for when a peer connects.
    let mut lonely = Harness::default();
    let d = lonely.add(device("d"));
    lonely.engine(d).open_document(nowhere);
    lonely.run_until_quiet();
    assert!(
        !lonely.nodes[d]
            .events
            .iter()
            .any(|e| matches!(e, Effect::DocumentUnavailable { .. })),
        "{:?}",
        lonely.nodes[d].events
    );
}

#[test]
fn a_document_requested_before_it_exists_arrives_when_it_is_created() {
    let mut h = Harness::default();
    let r = h.add(relay());
    let a = h.add(device("a"));
    let b = h.add(device("b"));
    h.connect(a, r);
    h.connect(b, r);
    h.run_until_quiet();
    let doc = DocumentId::random();
    h.engine(b).open_document(doc);
    h.run_until_quiet();
    assert!(unavailable_sent(&h, r, doc));

    h.engine(a)
        .create_document(doc, |d| put(d, "mentee", "Ana"))
        .unwrap();
    h.run_until_quiet();
    assert_eq!(get(&mut h, b, doc, "mentee").as_deref(), Some("Ana"));
}

/// The relay's policy in these tests: `mallory` may not see `secret`, `reader` may only read it.
struct Policy {
    secret: DocumentId,
}

impl AccessPolicy for Policy {
    fn access(&self, peer: &PeerInfo, document: &DocumentId) -> Access {
        match (peer.peer_id.as_str(), *document == self.secret) {
            ("mallory", true) => Access::None,
            ("reader", true) => Access::Read,
            _ => Access::ReadWrite,
        }
    }
}

fn relay_with_policy(secret: DocumentId) -> (Harness, usize, usize) {
    let mut h = Harness::default();
    let r = h.add_with_policy(relay(), Box::new(Policy { secret }));
    let a = h.add(device("a"));
    h.engine(a)
        .create_document(secret, |d| put(d, "notes", "private"))
        .unwrap();
    h.connect(a, r);
    h.run_until_quiet();
    (h, r, a)
}

#[test]
fn access_none_answers_like_an_absent_document() {
    let secret = DocumentId::random();
    let (mut h, r, _) = relay_with_policy(secret);
    let m = h.add(device("mallory"));
    let (_, m_on_r) = h.connect(m, r);
    h.run_until_quiet();

    let absent = DocumentId::random();
    h.engine(m).open_document(secret);
    h.engine(m).open_document(absent);
    h.run_until_quiet();
    assert_eq!(get(&mut h, m, secret, "notes"), None);
    // The two answers are the same message but for the document id.
    let answers: Vec<_> = h.nodes[r]
        .sent
        .iter()
        .filter(|(c, _, _)| *c == m_on_r)
        .filter_map(|(_, msg, _)| match msg {
            Message::DocUnavailable {
                sender_id,
                target_id,
                ..
            } => Some((sender_id.clone(), target_id.clone())),
            Message::Sync { document_id, .. } if *document_id == secret => {
                panic!("the relay spoke about the secret document")
            }
            _ => None,
        })
        .collect();
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[0], answers[1]);

    // Mallory writing to the secret document changes nothing on the relay.
    let before = h.nodes[r].storage.documents[&secret].clone();
    let m2 = h.add(device("mallory"));
    h.engine(m2)
        .create_document(secret, |d| put(d, "notes", "defaced"))
        .unwrap();
    h.connect(m2, r);
    h.run_until_quiet();
    assert_eq!(h.nodes[r].storage.documents[&secret], before);
    assert_eq!(get(&mut h, r, secret, "notes").as_deref(), Some("private"));
}

#[test]
fn a_reader_receives_changes_but_its_own_are_never_applied() {
    let secret = DocumentId::random();
    let (mut h, r, a) = relay_with_policy(secret);
    let reader = h.add(device("reader"));
    h.connect(reader, r);
    h.engine(reader).open_document(secret);
    h.run_until_quiet();
    assert_eq!(
        get(&mut h, reader, secret, "notes").as_deref(),
        Some("private")
    );

    let persists = h.nodes[r].storage.persists;
    h.engine(reader)
        .local_change(secret, |d| put(d, "notes", "overwritten"))
        .unwrap();
    h.run_until_quiet();
    assert_eq!(
        h.nodes[r].storage.persists, persists,
        "nothing persisted on the relay"
    );
    assert_eq!(get(&mut h, r, secret, "notes").as_deref(), Some("private"));
    assert_eq!(
        get(&mut h, a, secret, "notes").as_deref(),
        Some("private"),
        "nothing forwarded"
    );

    // The writer's changes still reach the reader.
    h.engine(a)
        .local_change(secret, |d| put(d, "mood", "good"))
        .unwrap();
    h.run_until_quiet();
    assert_eq!(get(&mut h, reader, secret, "mood").as_deref(), Some("good"));
}

#[test]
fn nothing_about_unpersisted_changes_leaves_the_relay() {
    let (mut h, [r, a, b], doc) = relay_and_two_devices();
    h.engine(b).open_document(doc);
    h.run_until_quiet();

    h.nodes[r].hold_persists = true;
    let mark = h.nodes[r].sent.len();
    h.engine(a)
        .local_change(doc, |d| put(d, "goals", "finish essay"))
        .unwrap();
    h.run_until_quiet();
    assert_eq!(
        doc_frames(&h, r, doc, mark),
        0,
        "no reply to A, no fan-out to B"
    );
    assert_eq!(get(&mut h, b, doc, "goals"), None);

    h.release_persists(r);
    h.run_until_quiet();
    assert!(doc_frames(&h, r, doc, mark) > 0);
    assert_eq!(
        get(&mut h, b, doc, "goals").as_deref(),
        Some("finish essay")
    );
    assert_eq!(h.engine(a).heads(&doc), h.engine(b).heads(&doc));
}

#[test]
fn a_local_change_is_not_sent_before_it_is_persisted() {
    let (mut h, [r, a, _], doc) = relay_and_two_devices();
    h.nodes[a].hold_persists = true;
    let mark = h.nodes[a].sent.len();
    h.engine(a)
        .local_change(doc, |d| put(d, "term", "spring"))
        .unwrap();
    h.run_until_quiet();
    assert_eq!(doc_frames(&h, a, doc, mark), 0);
    h.release_persists(a);
    h.run_until_quiet();
    assert_eq!(get(&mut h, r, doc, "term").as_deref(), Some("spring"));
}

#[test]
fn ephemeral_messages_are_forwarded_and_never_stored() {
    let (mut h, [r, a, b], doc) = relay_and_two_devices();
    h.engine(b).open_document(doc);
    h.run_until_quiet();
    let persists = h.nodes[r].storage.persists;
    h.engine(a).broadcast_ephemeral(doc, vec![1, 2, 3]);
    h.run_until_quiet();
    assert!(h.nodes[b].events.iter().any(|e| matches!(
        e,
        Effect::EphemeralReceived { data, sender, .. } if data == &[1, 2, 3] && sender.as_str() == "a"
    )));
    assert_eq!(h.nodes[r].storage.persists, persists);
}

fn established_pair() -> (Harness, usize, usize, ConnectionId, ConnectionId) {
    let mut h = Harness::default();
    let r = h.add(relay().with_limits(Limits {
        max_frame_bytes: 1024,
        ..Limits::default()
    }));
    let a = h.add(device("a"));
    let (on_a, on_r) = h.connect(a, r);
    h.run_until_quiet();
    (h, r, a, on_a, on_r)
}

fn sent_error(h: &Harness, node: usize, connection: ConnectionId) -> Option<String> {
    h.nodes[node].sent.iter().find_map(|(c, m, _)| match m {
        Message::Error { message, .. } if *c == connection => Some(message.clone()),
        _ => None,
    })
}

#[test]
fn bad_frames_get_an_error_and_a_close() {
    let oversize = vec![0u8; 2048];
    let join_again = Message::Join {
        sender_id: "a".into(),
        supported_protocol_versions: vec!["1".into()],
        metadata: None,
    }
    .encode();
    let cases: [(&[u8], &str); 3] = [
        (b"\xff\x00garbage", "not valid CBOR"),
        (&oversize, "exceeds the limit"),
        (&join_again, "handshake message after the handshake"),
    ];
    for (frame, expected) in cases {
        let (mut h, r, _, _, on_r) = established_pair();
        let other = h.add(device("other"));
        let (_, other_on_r) = h.connect(other, r);
        h.run_until_quiet();
        h.inject(r, on_r, frame);
        h.run_until_quiet();
        let error = sent_error(&h, r, on_r).unwrap();
        assert!(
            error.contains(expected),
            "{error:?} should mention {expected:?}"
        );
        assert!(closed(&h, r, on_r));
        assert!(
            !closed(&h, r, other_on_r),
            "other connections are unaffected"
        );
    }
}

#[test]
fn the_handshake_is_enforced() {
    let mut h = Harness::default();
    let r = h.add(relay());
    let a = h.add(device("a"));
    let (_, on_r) = h.connect(a, r);
    // Replace A's join with one that offers only protocol "2".
    h.nodes[r].engine.take_effects();
    let join = Message::Join {
        sender_id: "a".into(),
        supported_protocol_versions: vec!["2".into()],
        metadata: None,
    };
    h.inject(r, on_r, &join.encode());
    assert_eq!(
        sent_error_now(&mut h, r),
        Some("unsupported protocol version".into())
    );

    // A sync message before `join`.
    let (_, on_r) = h.connect(a, r);
    let early = Message::Leave {
        sender_id: "a".into(),
    };
    h.inject(r, on_r, &early.encode());
    assert_eq!(
        sent_error_now(&mut h, r),
        Some("expected `join`, got `leave`".into())
    );
}

fn sent_error_now(h: &mut Harness, node: usize) -> Option<String> {
    h.engine(node)
        .take_effects()
        .into_iter()
        .find_map(|e| match e {
            Effect::Send { frame, .. } => match Message::decode(&frame).unwrap() {
                Message::Error { message, .. } => Some(message),
                _ => None,
            },
            _ => None,
        })
}

#[test]
fn unknown_message_types_are_ignored() {
    let (mut h, r, _, _, on_r) = established_pair();
    let gossip = Message::Other {
        message_type: "remote-heads-changed".into(),
    };
    h.inject(r, on_r, &gossip.encode());
    h.run_until_quiet();
    assert!(!closed(&h, r, on_r));
    assert_eq!(sent_error(&h, r, on_r), None);
}

#[test]
fn a_sync_message_automerge_rejects_resets_only_that_session() {
    let (mut h, [r, a, _], doc) = relay_and_two_devices();
    let other = DocumentId::random();
    h.engine(a)
        .create_document(other, |d| put(d, "x", "1"))
        .unwrap();
    h.run_until_quiet();
    let on_r = h
        .engine(r)
        .peers()
        .find(|p| p.peer_id.as_str() == "a")
        .unwrap()
        .connection;
    let persists = h.nodes[r].storage.persists;

    // A "sync message" that is not one, and one whose change chunk is garbage.
    let mut bad_change = automerge::sync::Message::decode(&[0x42, 0, 0, 0, 0]).unwrap();
    bad_change.changes = vec![vec![0x85, 0x6f, 0x4a, 0x83, 1, 2, 3]].into();
    for data in [vec![1, 2, 3], bad_change.encode()] {
        let frame = Message::Sync {
            sender_id: "a".into(),
            target_id: "relay".into(),
            document_id: doc,
            data,
        };
        h.inject(r, on_r, &frame.encode());
        h.run_until_quiet();
    }
    assert_eq!(h.nodes[r].storage.persists, persists, "nothing persisted");
    assert!(!closed(&h, r, on_r), "the connection stays up");

    // Both documents still sync.
    h.engine(a)
        .local_change(doc, |d| put(d, "after", "yes"))
        .unwrap();
    h.engine(a)
        .local_change(other, |d| put(d, "x", "2"))
        .unwrap();
    h.run_until_quiet();
    assert_eq!(get(&mut h, r, doc, "after").as_deref(), Some("yes"));
    assert_eq!(get(&mut h, r, other, "x").as_deref(), Some("2"));
}

#[test]
fn leave_closes_the_connection_and_the_peer_is_gone() {
    let (mut h, r, a, on_a, on_r) = established_pair();
    h.engine(a).disconnect(on_a);
    h.run_until_quiet();
    assert!(h.nodes[r].events.iter().any(|e| matches!(
        e, Effect::PeerLeft(p) if p.connection == on_r
    )));
    assert_eq!(h.engine(r).peers().count(), 0);
    assert_eq!(h.engine(a).peers().count(), 0);
}

/// Bytes the device and the relay send each other while reconnecting with an unchanged document.
fn reconnect_bytes(keep_sync_states: bool) -> usize {
    let mut h = Harness::default();
    let r = h.add(relay());
    let a = h.add(device("a"));
    let doc = DocumentId::random();
    h.engine(a).create_document(doc, |_| ()).unwrap();
    for i in 0..300 {
        h.engine(a)
            .local_change(doc, |d| put(d, &format!("k{}", i % 20), &format!("v{i}")))
            .unwrap();
    }
    h.connect(a, r);
    h.run_until_quiet();
    assert_eq!(h.engine(a).heads(&doc), h.engine(r).heads(&doc));

    // Both restart over their storage.
    let mut relay_storage = h.nodes[r].storage.clone();
    let mut device_storage = h.nodes[a].storage.clone();
    if !keep_sync_states {
        relay_storage.sync_states.clear();
        device_storage.sync_states.clear();
    }
    let mut h = Harness::default();
    let r = h.add_engine(SyncEngine::new(relay()), relay_storage);
    let a = h.add_engine(SyncEngine::new(device("a")), device_storage);
    h.engine(a).open_document(doc);
    h.connect(a, r);
    h.run_until_quiet();
    assert_eq!(h.engine(a).heads(&doc), h.engine(r).heads(&doc));
    [r, a]
        .iter()
        .flat_map(|n| h.nodes[*n].sent.iter())
        .filter(|(_, m, _)| matches!(m, Message::Sync { .. } | Message::Request { .. }))
        .map(|(_, _, len)| *len)
        .sum()
}

#[test]
fn a_resumed_reconnect_sends_fewer_bytes_than_a_fresh_one() {
    let fresh = reconnect_bytes(false);
    let resumed = reconnect_bytes(true);
    assert!(
        resumed < fresh,
        "resumed {resumed} bytes, fresh {fresh} bytes"
    );
}

#[test]
fn a_failed_persist_reloads_from_storage_and_resyncs() {
    let (mut h, [r, a, _], doc) = relay_and_two_devices();
    h.nodes[r].hold_persists = true;
    h.engine(a)
        .local_change(doc, |d| put(d, "lost", "once"))
        .unwrap();
    h.run_until_quiet();
    // The disk was full: the relay drops the change and reloads; the device resends it.
    h.nodes[r].hold_persists = false;
    h.fail_held_persists(r);
    h.run_until_quiet();
    assert_eq!(get(&mut h, r, doc, "lost").as_deref(), Some("once"));
    let stored = Automerge::load(&h.nodes[r].storage.documents[&doc]).unwrap();
    assert_eq!(
        stored.get_heads(),
        h.engine(a).heads(&doc).unwrap(),
        "and it is durable"
    );
}

#[test]
fn an_automerge_panic_reloads_the_document_and_resets_only_that_session() {
    let (mut h, [r, a, b], doc) = relay_and_two_devices();
    h.engine(b).open_document(doc);
    let other = DocumentId::random();
    h.engine(b)
        .create_document(other, |d| put(d, "x", "1"))
        .unwrap();
    h.run_until_quiet();

    h.engine(r).panic_on_next_receive = true;
    h.engine(a)
        .local_change(doc, |d| put(d, "after", "panic"))
        .unwrap();
    h.engine(b)
        .local_change(other, |d| put(d, "x", "2"))
        .unwrap();
    h.run_until_quiet();

    assert!(
        h.nodes[r]
            .events
            .iter()
            .all(|e| !matches!(e, Effect::Close { .. }))
    );
    assert_eq!(
        get(&mut h, r, doc, "after").as_deref(),
        Some("panic"),
        "A resent it"
    );
    assert_eq!(get(&mut h, b, doc, "after").as_deref(), Some("panic"));
    assert_eq!(get(&mut h, r, other, "x").as_deref(), Some("2"));
    let stored = Automerge::load(&h.nodes[r].storage.documents[&doc]).unwrap();
    assert_eq!(stored.get_heads(), h.engine(a).heads(&doc).unwrap());
}

/// A device learns the relay's heads after every commit, even when its last message carried no
/// changes and arrived while the relay was still committing what it had sent before. Without
/// this the device never hears that its last change is stored ("saved to server" stalls).
#[test]
fn the_relay_tells_a_device_its_heads_after_a_commit_it_held_back() {
    let (mut h, [r, a, _b], doc) = relay_and_two_devices();
    let on_device = h.engine(a).peers().next().unwrap().connection;
    h.nodes[r].hold_persists = true;
    h.engine(a)
        .local_change(doc, |d| put(d, "term", "one"))
        .unwrap();
    h.run_until_quiet();
    // The relay commits the first change and answers; meanwhile the device sends a second one,
    // and answers the relay's (now stale) reply with "my heads, no changes".
    h.engine(a)
        .local_change(doc, |d| put(d, "term", "two"))
        .unwrap();
    h.release_persists(r);
    h.run_until_quiet();
    h.release_persists(r);
    h.run_until_quiet();
    let ours = h.engine(a).heads(&doc).unwrap();
    assert_eq!(h.engine(r).heads(&doc).unwrap(), ours);
    assert_eq!(
        h.engine(a).peer_heads(&doc, on_device),
        Some(ours.clone()),
        "the device knows the relay has its last change"
    );
    assert!(h.engine(a).in_sync_with(&doc, on_device));
}

// ---- the reconnect digest ---------------------------------------------------------------------

fn digest_relay() -> EngineConfig {
    relay().with_reconnect_digest(true)
}

/// Digest messages `node` sent from index `from` on.
fn digest_steps(h: &Harness, node: usize, from: usize) -> Vec<super::DigestStep> {
    h.nodes[node].sent[from..]
        .iter()
        .filter_map(|(_, m, _)| match m {
            Message::Digest { step, .. } => Some(step.clone()),
            _ => None,
        })
        .collect()
}

/// Sync and request frames `node` sent from `from` on, about any document.
fn any_doc_frames(h: &Harness, node: usize, from: usize) -> Vec<DocumentId> {
    h.nodes[node].sent[from..]
        .iter()
        .filter_map(|(_, m, _)| match m {
            Message::Sync { document_id, .. } | Message::Request { document_id, .. } => {
                Some(*document_id)
            }
            _ => None,
        })
        .collect()
}

/// A relay and device `a` that synced `n` documents, then disconnected.
fn synced_then_apart(n: usize) -> (Harness, usize, usize, Vec<DocumentId>) {
    synced_then_apart_with(digest_relay(), n)
}

/// The same with a relay configured by `config`.
fn synced_then_apart_with(
    config: EngineConfig,
    n: usize,
) -> (Harness, usize, usize, Vec<DocumentId>) {
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
    for doc in &docs {
        assert_eq!(h.engine(a).heads(doc), h.engine(r).heads(doc));
    }
    h.drop_link(a, on_a);
    h.run_until_quiet();
    (h, r, a, docs)
}

#[test]
fn an_unchanged_reconnect_is_one_digest_exchange_and_no_document_syncs() {
    let (mut h, r, a, docs) = synced_then_apart(300);
    let (a_from, r_from) = (h.nodes[a].sent.len(), h.nodes[r].sent.len());
    let (on_a, _) = h.connect(a, r);
    h.run_until_quiet();
    assert!(any_doc_frames(&h, a, a_from).is_empty());
    assert!(any_doc_frames(&h, r, r_from).is_empty());
    assert!(matches!(
        digest_steps(&h, a, a_from).as_slice(),
        [super::DigestStep::Offer {
            count: 300,
            changed: Some(0),
            ..
        }]
    ));
    assert_eq!(digest_steps(&h, r, r_from), vec![super::DigestStep::Match]);
    let bytes: usize = [(a, a_from), (r, r_from)]
        .iter()
        .flat_map(|(n, from)| h.nodes[*n].sent[*from..].iter())
        .map(|(_, _, len)| *len)
        .sum();
    assert!(bytes < 1024, "the whole reconnect took {bytes} bytes");
    // The device counts every document as held by the relay, and later edits still sync.
    for doc in &docs {
        assert!(h.engine(a).in_sync_with(doc, on_a));
        assert_eq!(h.engine(a).peer_heads(doc, on_a), h.engine(a).heads(doc));
    }
    h.engine(a)
        .local_change(docs[7], |d| put(d, "title", "renamed"))
        .unwrap();
    h.run_until_quiet();
    assert_eq!(get(&mut h, r, docs[7], "title").as_deref(), Some("renamed"));
}

#[test]
fn a_digest_mismatch_syncs_exactly_the_differing_documents() {
    let (mut h, r, a, docs) = synced_then_apart(300);
    // While `a` is away: it edits three documents, and another device edits two others.
    for doc in &docs[..3] {
        h.engine(a)
            .local_change(*doc, |d| put(d, "offline", "a"))
            .unwrap();
    }
    let b = h.add(device("b"));
    let (on_b, _) = h.connect(b, r);
    for doc in &docs[10..12] {
        h.engine(b).open_document(*doc);
    }
    h.run_until_quiet();
    for doc in &docs[10..12] {
        h.engine(b)
            .local_change(*doc, |d| put(d, "remote", "b"))
            .unwrap();
    }
    h.run_until_quiet();
    h.drop_link(b, on_b);
    h.run_until_quiet();

    let (a_from, r_from) = (h.nodes[a].sent.len(), h.nodes[r].sent.len());
    h.connect(a, r);
    h.run_until_quiet();
    let changed: Vec<DocumentId> = docs[..3].iter().chain(&docs[10..12]).copied().collect();
    let mut synced = any_doc_frames(&h, a, a_from);
    synced.extend(any_doc_frames(&h, r, r_from));
    synced.sort();
    synced.dedup();
    let mut expected = changed.clone();
    expected.sort();
    assert_eq!(
        synced, expected,
        "only the changed documents ran the sync protocol"
    );
    for doc in &docs {
        assert_eq!(h.engine(a).heads(doc), h.engine(r).heads(doc));
    }
    for doc in &docs[..3] {
        assert_eq!(get(&mut h, r, *doc, "offline").as_deref(), Some("a"));
    }
    for doc in &docs[10..12] {
        assert_eq!(get(&mut h, a, *doc, "remote").as_deref(), Some("b"));
    }
}

#[test]
fn a_change_on_the_relay_after_an_agreed_reconnect_still_reaches_the_device() {
    let (mut h, r, a, docs) = synced_then_apart(40);
    h.connect(a, r);
    h.run_until_quiet();
    let b = h.add(device("b"));
    h.connect(b, r);
    h.engine(b).open_document(docs[5]);
    h.run_until_quiet();
    h.engine(b)
        .local_change(docs[5], |d| put(d, "live", "yes"))
        .unwrap();
    h.run_until_quiet();
    assert_eq!(get(&mut h, a, docs[5], "live").as_deref(), Some("yes"));
}

#[test]
fn a_peer_without_the_digest_flag_syncs_every_document_as_before() {
    let (h, r, _, docs) = synced_then_apart(20);
    let mut storage = h.nodes[1].storage.clone();
    storage.persists = 0;
    let mut h2 = Harness::default();
    let r2 = h2.add_engine(SyncEngine::new(digest_relay()), h.nodes[r].storage.clone());
    let plain = h2.add_engine(
        SyncEngine::new(device("a").with_reconnect_digest(false)),
        storage,
    );
    for doc in &docs {
        h2.engine(plain).open_document(*doc);
    }
    h2.run_until_quiet();
    h2.connect(plain, r2);
    h2.run_until_quiet();
    assert!(digest_steps(&h2, plain, 0).is_empty());
    assert!(digest_steps(&h2, r2, 0).is_empty());
    assert_eq!(
        any_doc_frames(&h2, plain, 0).len(),
        20,
        "one offer per document"
    );
    h2.engine(plain)
        .local_change(docs[0], |d| put(d, "k", "v"))
        .unwrap();
    h2.run_until_quiet();
    assert_eq!(get(&mut h2, r2, docs[0], "k").as_deref(), Some("v"));
}

/// Denies `secret` to everyone once `revoked` is set.
struct Revocable {
    secret: DocumentId,
    revoked: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl AccessPolicy for Revocable {
    fn access(&self, _peer: &PeerInfo, document: &DocumentId) -> Access {
        if *document == self.secret && self.revoked.load(std::sync::atomic::Ordering::SeqCst) {
            Access::None
        } else {
            Access::ReadWrite
        }
    }
}

#[test]
fn the_digest_covers_only_documents_the_peer_may_read() {
    let revoked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let secret = DocumentId::random();
    let open = DocumentId::random();
    let mut h = Harness::default();
    let r = h.add_with_policy(
        digest_relay(),
        Box::new(Revocable {
            secret,
            revoked: revoked.clone(),
        }),
    );
    let a = h.add(device("a"));
    h.engine(a)
        .create_document(secret, |d| put(d, "k", "1"))
        .unwrap();
    h.engine(a)
        .create_document(open, |d| put(d, "k", "1"))
        .unwrap();
    let (on_a, _) = h.connect(a, r);
    h.run_until_quiet();
    h.drop_link(a, on_a);
    h.run_until_quiet();
    revoked.store(true, std::sync::atomic::Ordering::SeqCst);

    // The relay has synced both with `a`, but `a` may no longer read `secret`. A device holding
    // only `open` gets a match: `secret` is not part of the relay's digest.
    let mut only_open = h.nodes[a].storage.clone();
    only_open.documents.remove(&secret);
    let mut h2 = Harness::default();
    let r2 = h2.add_engine(
        SyncEngine::with_policy(
            digest_relay(),
            Box::new(Revocable {
                secret,
                revoked: revoked.clone(),
            }),
        ),
        h.nodes[r].storage.clone(),
    );
    let a2 = h2.add_engine(SyncEngine::new(device("a")), only_open);
    h2.engine(a2).open_document(open);
    h2.run_until_quiet();
    h2.connect(a2, r2);
    h2.run_until_quiet();
    assert_eq!(digest_steps(&h2, r2, 0), vec![super::DigestStep::Match]);
    assert!(any_doc_frames(&h2, r2, 0).is_empty());

    // A device holding both learns nothing new about `secret`: it differs, and syncing it is
    // answered as for an absent document (an empty document's sync messages, then refused).
    h.engine(r).local_change(secret, |_| ()).ok();
    let a_from = h.nodes[a].sent.len();
    let r_from = h.nodes[r].sent.len();
    h.connect(a, r);
    h.run_until_quiet();
    // Two documents: listing both costs less than the smallest sketch, so buckets.
    assert!(matches!(
        digest_steps(&h, r, r_from).as_slice(),
        [super::DigestStep::Buckets(_), super::DigestStep::Differ(_)]
    ));
    for (_, message, _) in &h.nodes[r].sent[r_from..] {
        if let Message::Sync {
            document_id, data, ..
        }
        | Message::Request {
            document_id, data, ..
        } = message
            && *document_id == secret
        {
            let message = automerge::sync::Message::decode(data).unwrap();
            assert!(message.heads.is_empty() && message.changes.is_empty());
        }
    }
    assert!(unavailable_sent(&h, r, secret));
    // The device offered `secret` (and, invited as for an absent document, its changes): the
    // only document that differed.
    let offered = any_doc_frames(&h, a, a_from);
    assert!(!offered.is_empty() && offered.iter().all(|d| *d == secret));
}

/// Lets nobody see anything that exists: every message a peer sends is answered by a phantom.
struct DenyAll;

impl AccessPolicy for DenyAll {
    fn access(&self, _peer: &PeerInfo, _document: &DocumentId) -> Access {
        Access::None
    }
}

#[test]
fn phantoms_are_bounded_per_connection_and_dropped_on_close() {
    let limits = Limits {
        max_documents_per_connection: 3,
        ..Limits::default()
    };
    let mut h = Harness::default();
    let r = h.add_with_policy(relay().with_limits(limits), Box::new(DenyAll));
    let a = h.add(device("a"));
    let (_, on_r) = h.connect(a, r);
    h.run_until_quiet();
    // A peer holding a document offers it (automerge's first message carries no changes).
    let mut held = Automerge::new();
    put(&mut held, "k", "v");
    let offer =
        automerge::sync::SyncDoc::generate_sync_message(&held, &mut automerge::sync::State::new())
            .unwrap()
            .encode();
    let send_offer = |h: &mut Harness| {
        let frame = Message::Sync {
            sender_id: "a".into(),
            target_id: "relay".into(),
            document_id: DocumentId::random(),
            data: offer.clone(),
        };
        h.inject(r, on_r, &frame.encode());
        h.run_until_quiet();
    };
    for _ in 0..3 {
        send_offer(&mut h);
    }
    // Each got its phantom; nothing was stored or made hot on the relay.
    assert_eq!(h.engine(r).phantom_total(), 3);
    assert_eq!(h.engine(r).hot_document_count(), 0);
    assert!(!closed(&h, r, on_r));
    // One more than the limit closes the connection, as sessions of absent documents do, and
    // its phantoms go with it.
    send_offer(&mut h);
    assert!(closed(&h, r, on_r));
    assert_eq!(h.engine(r).phantom_total(), 0);

    // A connection that closes normally drops its phantoms too (a fresh device: `a` now holds
    // the documents it was told of, and would offer them all).
    let b = h.add(device("b"));
    let (on_b, on_r) = h.connect(b, r);
    h.run_until_quiet();
    let frame = Message::Sync {
        sender_id: "b".into(),
        target_id: "relay".into(),
        document_id: DocumentId::random(),
        data: offer,
    };
    h.inject(r, on_r, &frame.encode());
    h.run_until_quiet();
    assert_eq!(h.engine(r).phantom_total(), 1);
    h.drop_link(b, on_b);
    assert_eq!(h.engine(r).phantom_total(), 0);
}

#[test]
fn a_reconnect_with_changes_on_both_sides_converges_in_three_round_trips() {
    reconnect_with_changes_on_both_sides(false);
}

#[test]
fn a_reconnect_to_a_relay_holding_nothing_in_memory_converges_in_three_round_trips() {
    reconnect_with_changes_on_both_sides(true);
}

/// Five documents changed on the device and five on the relay while apart; with `cold`, the
/// relay has evicted every document before the device reconnects.
fn reconnect_with_changes_on_both_sides(cold: bool) {
    let (mut h, r, a, docs) = synced_then_apart(300);
    // While `a` is away: it edits five documents, and another device edits five others.
    for doc in &docs[..5] {
        h.engine(a)
            .local_change(*doc, |d| put(d, "offline", "a"))
            .unwrap();
    }
    let b = h.add(device("b"));
    let (on_b, _) = h.connect(b, r);
    for doc in &docs[10..15] {
        h.engine(b).open_document(*doc);
    }
    h.run_until_quiet();
    for doc in &docs[10..15] {
        h.engine(b)
            .local_change(*doc, |d| put(d, "remote", "b"))
            .unwrap();
    }
    h.run_until_quiet();
    h.drop_link(b, on_b);
    h.run_until_quiet();
    if cold {
        for doc in &docs {
            assert!(h.engine(r).evict(*doc));
        }
    }

    let (on_a, _) = h.connect(a, r);
    // Every document settled on the device; the changed ones (the only ones a cold relay loads)
    // at the same heads on both sides.
    let changed: Vec<DocumentId> = docs[..5].iter().chain(&docs[10..15]).copied().collect();
    let converged = |h: &mut Harness| {
        docs.iter().all(|doc| h.engine(a).in_sync_with(doc, on_a))
            && changed
                .iter()
                .all(|doc| h.engine(a).heads(doc) == h.engine(r).heads(doc))
    };
    let mut rounds = 0;
    while !converged(&mut h) {
        assert!(
            h.deliver_round(),
            "the network went quiet before converging"
        );
        rounds += 1;
        assert!(rounds <= 20, "no convergence after 20 rounds");
    }
    // Two rounds of handshake (`join`, `peer`), then offer/buckets, entries/differ with the
    // relay's first sync messages, and the device's changes and answers with the relay's.
    assert!(
        rounds <= 2 + 6,
        "converged after {rounds} rounds: more than 3 round trips after the handshake"
    );
    for doc in &docs[..5] {
        assert_eq!(get(&mut h, r, *doc, "offline").as_deref(), Some("a"));
    }
    for doc in &docs[10..15] {
        assert_eq!(get(&mut h, a, *doc, "remote").as_deref(), Some("b"));
    }
    h.run_until_quiet();
    assert!(converged(&mut h));
}

#[test]
fn past_the_relay_start_limit_the_device_offers_the_remaining_differing_documents() {
    // The bucket exchange: with the sketch, the device knows what differs and offers it all.
    let (mut h, r, a, docs) = synced_then_apart_with(
        digest_relay().with_reconnect_sketch(false),
        super::digest::MAX_RELAY_STARTS + 40,
    );
    for doc in &docs {
        h.engine(a)
            .local_change(*doc, |d| put(d, "offline", "a"))
            .unwrap();
    }
    for doc in &docs {
        assert!(h.engine(r).evict(*doc));
    }
    let r_from = h.nodes[r].sent.len();
    let (on_a, _) = h.connect(a, r);
    h.run_until_quiet();
    assert!(
        digest_steps(&h, r, r_from)
            .iter()
            .any(|step| matches!(step, super::DigestStep::Differ(_)))
    );
    for doc in &docs {
        assert!(h.engine(a).in_sync_with(doc, on_a));
        assert_eq!(get(&mut h, r, *doc, "offline").as_deref(), Some("a"));
    }
}

#[test]
fn a_document_is_cold_only_once_no_peer_syncs_it_and_nothing_waits_for_a_commit() {
    let (mut h, [r, a, b], doc) = relay_and_two_devices();
    let a_side = only_peer(&mut h, a);
    assert!(
        h.engine(r).cold_documents().next().is_none(),
        "A syncs it: not cold"
    );
    assert!(!h.engine(r).evict(doc));

    // A writes, and leaves before the relay committed it: the change lives in a pending persist.
    h.nodes[r].hold_persists = true;
    h.engine(a)
        .local_change(doc, |d| put(d, "goals", "finish essay"))
        .unwrap();
    h.run_until_quiet();
    h.drop_link(a, a_side);
    h.run_until_quiet();
    assert!(h.engine(r).document(&doc).is_some());
    assert!(
        h.engine(r).cold_documents().next().is_none(),
        "no peer, but a persist is outstanding"
    );
    assert!(!h.engine(r).evict(doc), "nothing unpersisted is evicted");

    h.release_persists(r);
    h.run_until_quiet();
    assert_eq!(h.engine(r).cold_documents().collect::<Vec<_>>(), vec![doc]);
    assert!(h.engine(r).evict(doc));
    assert_eq!(h.engine(r).hot_document_count(), 0);

    // B asks for it: the relay loads it back from storage, with A's last change.
    h.engine(b).open_document(doc);
    h.run_until_quiet();
    assert_eq!(
        get(&mut h, b, doc, "goals").as_deref(),
        Some("finish essay")
    );
    assert_eq!(get(&mut h, r, doc, "mentee").as_deref(), Some("Ana"));
}

#[test]
fn an_evicted_document_moves_again_for_a_returning_peer() {
    let (mut h, [r, a, b], doc) = relay_and_two_devices();
    h.engine(b).open_document(doc);
    h.run_until_quiet();
    for node in [a, b] {
        let connection = only_peer(&mut h, node);
        h.drop_link(node, connection);
    }
    h.run_until_quiet();
    assert!(h.engine(r).evict(doc));

    // Both come back; A writes; B hears it through the reloaded document.
    h.connect(a, r);
    h.connect(b, r);
    h.run_until_quiet();
    h.engine(a)
        .local_change(doc, |d| put(d, "goals", "after eviction"))
        .unwrap();
    h.run_until_quiet();
    assert_eq!(
        get(&mut h, b, doc, "goals").as_deref(),
        Some("after eviction")
    );
    assert_eq!(h.engine(a).heads(&doc), h.engine(r).heads(&doc));
    assert_eq!(h.engine(b).heads(&doc), h.engine(r).heads(&doc));
}

/// The connection of a device's one peer.
fn only_peer(h: &mut Harness, node: usize) -> ConnectionId {
    h.engine(node).peers().next().unwrap().connection
}

#[test]
fn a_change_that_waited_for_its_dependency_is_stored_with_it() {
    use super::Direction;
    use automerge::sync::{Message as SyncMessage, MessageVersion};

    let mut h = Harness::default();
    let r = h.add(relay());
    let on_r = h.engine(r).connection_opened(Direction::Incoming);
    let join = Message::Join {
        sender_id: "w".into(),
        supported_protocol_versions: vec!["1".into()],
        metadata: None,
    };
    h.inject(r, on_r, &join.encode());
    let document = DocumentId::random();
    let mut doc = Automerge::new();
    put(&mut doc, "base", "0");
    put(&mut doc, "first", "1");
    put(&mut doc, "second", "2");
    let changes = doc.get_changes(&[]);
    let carrying = |indices: &[usize], heads| {
        let message = SyncMessage {
            heads,
            need: Vec::new(),
            have: Vec::new(),
            changes: indices
                .iter()
                .map(|i| changes[*i].raw_bytes().to_vec())
                .collect::<Vec<_>>()
                .into(),
            flags: None,
            version: MessageVersion::V1,
        };
        Message::Sync {
            sender_id: "w".into(),
            target_id: "relay".into(),
            document_id: document,
            data: message.encode(),
        }
        .encode()
    };
    let base = vec![changes[0].hash()];
    h.inject(r, on_r, &carrying(&[0], base));
    h.run_until_quiet();
    // The last change first: automerge keeps it until its dependency arrives, in the next one.
    h.inject(r, on_r, &carrying(&[2], doc.get_heads()));
    h.run_until_quiet();
    h.inject(r, on_r, &carrying(&[1], doc.get_heads()));
    h.run_until_quiet();

    assert_eq!(h.engine(r).heads(&document), Some(doc.get_heads()));
    let stored = Automerge::load(&h.nodes[r].storage.documents[&document]).unwrap();
    assert_eq!(
        stored.get_heads(),
        doc.get_heads(),
        "both changes are stored"
    );
    assert!(stored.get(ROOT, "second").unwrap().is_some());
}

// ---- the snapshot fetch ----------------------------------------------------------------------

mod fetch;

// ---- the relay's cached peer indexes ----------------------------------------------------------

mod peer_index;

// ---- changes other relay processes stored -----------------------------------------------------

mod stored;

// ---- the reconnect digest's sketch ------------------------------------------------------------

mod sketch;
