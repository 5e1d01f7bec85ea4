//! Identity and access against a real relay process started as it runs by default (tokens
//! required), with accounts made by `tandem-server admin`: the matrix of roles × document kinds ×
//! operations from `docs/access.md`, revocation and ended pairings on live connections, forged,
//! expired and foreign tokens, actor binding, the audit, and the official JS client with
//! `?token=`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge};
use ciborium::Value;
use tempfile::TempDir;

use crate::block_on;
use crate::harness::{
    RawClient, RelayProcess, carrying_last_change, cbor_map, field, get_str, message_type,
    new_document_id, node_json, put, text, text_field,
};

/// Runs `tandem-server admin --data DIR args…` and returns its stdout.
fn admin(data: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_tandem-server"))
        .arg("admin")
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .expect("run tandem-server admin");
    assert!(
        output.status.success(),
        "admin {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// Two programs; in `north` mentee ana paired with coach carl, an unpaired coach olga and
/// coordinator cora; in `south` coach sam; an admin. One web-device token each.
struct World {
    data: TempDir,
    tokens: BTreeMap<&'static str, String>,
}

const PEOPLE: [(&str, &str, Option<&str>); 6] = [
    ("ana", "mentee", Some("north")),
    ("carl", "coach", Some("north")),
    ("olga", "coach", Some("north")),
    ("cora", "coordinator", Some("north")),
    ("sam", "coach", Some("south")),
    ("root", "admin", None),
];

impl World {
    fn new() -> Self {
        let data = TempDir::new().unwrap();
        let dir = data.path();
        admin(dir, &["program", "add", "north"]);
        admin(dir, &["program", "add", "south"]);
        let mut tokens = BTreeMap::new();
        for (name, role, program) in PEOPLE {
            let mut args = vec!["user", "add", name, "--role", role];
            if let Some(program) = program {
                args.extend(["--program", program]);
            }
            admin(dir, &args);
            tokens.insert(name, admin(dir, &["token", "issue", "--user", name]));
        }
        let pairing = admin(
            dir,
            &["pairing", "add", "--coach", "carl", "--mentee", "ana"],
        );
        assert!(pairing.starts_with("pairing 1"), "{pairing}");
        Self { data, tokens }
    }

    fn admin(&self, args: &[&str]) -> String {
        admin(self.data.path(), args)
    }

    fn token(&self, who: &str) -> &str {
        &self.tokens[who]
    }
}

pub(crate) async fn connect(relay: &RelayProcess, token: &str, peer: &str) -> RawClient {
    RawClient::join_with(&relay.url(), peer, token)
        .await
        .unwrap_or_else(|status| panic!("{peer} refused with {status}"))
        .0
}

/// A Tandem-shaped document: `type` and the given root strings, in one change.
pub(crate) fn typed(kind: &str, fields: &[(&str, &str)]) -> Automerge {
    let mut doc = Automerge::new();
    doc.transact::<_, _, automerge::AutomergeError>(|tx| {
        tx.put(automerge::ROOT, "type", kind)?;
        for (key, value) in fields {
            tx.put(automerge::ROOT, *key, *value)?;
        }
        Ok(())
    })
    .unwrap();
    doc
}

/// Asks for a document and syncs until holding what the relay has; the `doc-unavailable` frame
/// if the relay says it has nothing.
pub(crate) async fn fetch(
    client: &mut RawClient,
    document: &str,
) -> Result<(Automerge, sync::State), Value> {
    let mut doc = Automerge::new();
    let mut state = sync::State::new();
    let first = doc.generate_sync_message(&mut state).unwrap();
    let request = client.sync_message("request", document, first.encode());
    client.send(request).await;
    loop {
        let reply = client.expect_any().await;
        if text_field(&reply, "documentId") != Some(document) {
            continue;
        }
        match message_type(&reply) {
            "doc-unavailable" => return Err(reply),
            "sync" | "request" => {
                let data = field(&reply, "data").and_then(Value::as_bytes).unwrap();
                let message = sync::Message::decode(data).unwrap();
                let mut theirs = message.heads.clone();
                doc.receive_sync_message(&mut state, message).unwrap();
                if let Some(next) = doc.generate_sync_message(&mut state) {
                    let next = client.sync_message("sync", document, next.encode());
                    client.send(next).await;
                }
                let mut ours = doc.get_heads();
                theirs.sort();
                ours.sort();
                if !ours.is_empty() && theirs == ours {
                    return Ok((doc, state));
                }
            }
            _ => {}
        }
    }
}

/// Waits until the relay has handled everything this client sent before: it answers a request
/// for a document nobody has, in order.
async fn barrier(client: &mut RawClient) {
    let nobody = new_document_id();
    let first = Automerge::new()
        .generate_sync_message(&mut sync::State::new())
        .unwrap();
    let request = client.sync_message("request", &nobody, first.encode());
    client.send(request).await;
    loop {
        let reply = client.expect_any().await;
        if message_type(&reply) == "doc-unavailable"
            && text_field(&reply, "documentId") == Some(nobody.as_str())
        {
            return;
        }
    }
}

/// A new plan document for `mentee`, its first change written under `actor`.
fn plan_of(mentee: &str, actor: ActorId) -> Automerge {
    let mut doc = Automerge::new().with_actor(actor);
    doc.transact::<_, _, automerge::AutomergeError>(|tx| {
        tx.put(automerge::ROOT, "type", "plan")?;
        tx.put(automerge::ROOT, "mentee", mentee)?;
        Ok(())
    })
    .unwrap();
    doc
}

/// Offers a document with changes by `sync`: `Ok` once the relay holds them, the
/// `doc-unavailable` frame if it refuses.
pub(crate) async fn create(
    client: &mut RawClient,
    document: &str,
    doc: &mut Automerge,
) -> Result<(), Value> {
    let mut state = sync::State::new();
    loop {
        if let Some(message) = doc.generate_sync_message(&mut state) {
            let frame = client.sync_message("sync", document, message.encode());
            client.send(frame).await;
        }
        let reply = loop {
            let reply = client.expect_any().await;
            if text_field(&reply, "documentId") == Some(document) {
                break reply;
            }
        };
        if message_type(&reply) == "doc-unavailable" {
            return Err(reply);
        }
        let data = field(&reply, "data").and_then(Value::as_bytes).unwrap();
        let message = sync::Message::decode(data).unwrap();
        let mut theirs = message.heads.clone();
        doc.receive_sync_message(&mut state, message).unwrap();
        let mut ours = doc.get_heads();
        theirs.sort();
        ours.sort();
        if theirs == ours {
            return Ok(());
        }
    }
}

/// The reply to a request for a document, with its id replaced by `as_id`, so a denial can be
/// compared byte for byte with the answer about an absent document.
pub(crate) fn normalized(reply: &Value, as_id: &str) -> Vec<u8> {
    let Value::Map(entries) = reply else {
        panic!("not a map: {reply:?}")
    };
    let entries: Vec<_> = entries
        .iter()
        .map(|(k, v)| match k.as_text() {
            Some("documentId") => (k.clone(), Value::Text(as_id.to_owned())),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    let mut bytes = Vec::new();
    ciborium::into_writer(&Value::Map(entries), &mut bytes).unwrap();
    bytes
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum May {
    No,
    Read,
    Write,
}

/// The relay's documents of the pairing carl–ana, and ana's own untyped document.
struct Documents {
    ids: BTreeMap<&'static str, String>,
}

async fn make_documents(relay: &RelayProcess, world: &World) -> Documents {
    let mut ana = connect(relay, world.token("ana"), "ana-setup").await;
    let mut carl = connect(relay, world.token("carl"), "carl-setup").await;
    let mut ids = BTreeMap::new();
    let plan = new_document_id();
    let mut doc = typed("plan", &[("mentee", "ana"), ("program", "north")]);
    create(&mut ana, &plan, &mut doc).await.unwrap();
    let plan_url = format!("automerge:{plan}");
    for (kind, fields, by_ana) in [
        (
            "session",
            vec![
                ("coach", "carl"),
                ("mentee", "ana"),
                ("plan", plan_url.as_str()),
            ],
            false,
        ),
        ("notes", vec![("coach", "carl"), ("mentee", "ana")], false),
        (
            "directory",
            vec![("program", "north"), ("coach", "carl"), ("mentee", "ana")],
            true,
        ),
    ] {
        let id = new_document_id();
        let by = if by_ana { &mut ana } else { &mut carl };
        create(by, &id, &mut typed(kind, &fields)).await.unwrap();
        ids.insert(kind, id);
    }
    let other = new_document_id();
    create(
        &mut ana,
        &other,
        &mut crate::harness::doc_with("title", "ana's own"),
    )
    .await
    .unwrap();
    ids.insert("plan", plan);
    ids.insert("other", other);
    Documents { ids }
}

/// The rules of docs/access.md for the fixture's people.
fn expected(who: &str, kind: &str) -> May {
    match (who, kind) {
        ("ana", "plan" | "session" | "directory" | "other") => May::Write,
        ("carl", "plan" | "session" | "notes" | "directory") => May::Write,
        ("cora", "plan" | "session" | "notes" | "directory") => May::Read,
        _ => May::No,
    }
}

/// Every role × every kind: find, read, write (and write while read-only), each through its own
/// websocket; a denial answers exactly what an absent document answers.
#[test]
fn roles_by_kinds_by_operations_follow_the_rules() {
    let world = World::new();
    let relay = RelayProcess::start_secure(world.data.path(), &[]);
    block_on(async {
        let documents = make_documents(&relay, &world).await;
        let mut owner = connect(&relay, world.token("ana"), "ana-owner").await;
        let mut coach = connect(&relay, world.token("carl"), "carl-owner").await;
        let mut table = Vec::new();
        for (who, _, _) in PEOPLE {
            let mut client = connect(&relay, world.token(who), &format!("{who}-matrix")).await;
            let absent = new_document_id();
            let absent_reply = fetch(&mut client, &absent).await.unwrap_err();
            for (kind, id) in &documents.ids {
                let expect = expected(who, kind);
                let found = fetch(&mut client, id).await;
                let seen = match found {
                    Err(reply) => {
                        assert_eq!(
                            normalized(&reply, &absent),
                            normalized(&absent_reply, &absent),
                            "{who}/{kind}: a denial must read exactly as an absent document"
                        );
                        May::No
                    }
                    Ok((mut doc, mut state)) => {
                        let key = format!("written by {who}");
                        put(&mut doc, &key, "yes");
                        let message = carrying_last_change(&doc, &mut state);
                        let frame = client.sync_message("sync", id, message.encode());
                        client.send(frame).await;
                        barrier(&mut client).await;
                        // Whoever may write the document checks, on a fresh request, what the
                        // relay kept.
                        let checker = if *kind == "notes" {
                            &mut coach
                        } else {
                            &mut owner
                        };
                        let (kept, _) = fetch(checker, id).await.unwrap();
                        if get_str(&kept, &key).is_some() {
                            May::Write
                        } else {
                            May::Read
                        }
                    }
                };
                table.push(format!("{who}/{kind}: {seen:?}"));
                assert_eq!(seen, expect, "{who} on the {kind}; so far: {table:#?}");
            }
        }
        eprintln!("access matrix: {table:#?}");
    });
}

#[test]
fn creating_a_document_for_someone_else_is_refused_as_if_it_were_absent() {
    let world = World::new();
    let relay = RelayProcess::start_secure(world.data.path(), &[]);
    block_on(async {
        // olga is a coach, but not ana's: she may not start ana's plan, a session or notes of
        // carl's pairing; sam, of another program, neither; cora coordinates but does not coach.
        for (who, kind, fields) in [
            ("olga", "plan", vec![("mentee", "ana")]),
            (
                "olga",
                "session",
                vec![("coach", "carl"), ("mentee", "ana")],
            ),
            ("olga", "notes", vec![("coach", "olga"), ("mentee", "ana")]),
            ("sam", "plan", vec![("mentee", "ana")]),
            ("cora", "plan", vec![("mentee", "ana")]),
            ("ana", "notes", vec![("coach", "carl"), ("mentee", "ana")]),
            ("ana", "plan", vec![("mentee", "ana"), ("program", "south")]),
        ] {
            let mut client = connect(&relay, world.token(who), who).await;
            let id = new_document_id();
            let refused = create(&mut client, &id, &mut typed(kind, &fields)).await;
            let reply = refused.expect_err(&format!("{who} must not create {kind} {fields:?}"));
            assert_eq!(message_type(&reply), "doc-unavailable");
            // And the document does not exist for its would-be owner either.
            let mut ana = connect(&relay, world.token("ana"), "ana-check").await;
            assert!(
                fetch(&mut ana, &id).await.is_err(),
                "{who}/{kind} was stored"
            );
        }
    });
}

#[test]
fn missing_malformed_forged_expired_and_revoked_tokens_get_401() {
    let world = World::new();
    let relay = RelayProcess::start_secure(world.data.path(), &[]);
    let expired = world.admin(&["token", "issue", "--user", "ana", "--seconds", "0"]);
    block_on(async {
        let url = relay.url();
        assert_eq!(
            RawClient::connect_with(&url, "none", None).await.err(),
            Some(401)
        );
        let forged = format!("tandem_{}", "0".repeat(64));
        for token in [forged.as_str(), "not a token", expired.as_str()] {
            let refused = RawClient::connect_with(&url, "bad", Some(token))
                .await
                .err();
            assert_eq!(refused, Some(401), "{token:?}");
        }
        // As a query parameter too, for browsers.
        let query = format!("{url}/?token={forged}");
        assert_eq!(
            RawClient::connect_with(&query, "q", None).await.err(),
            Some(401)
        );
        let good = format!("{url}/?token={}", world.token("ana"));
        assert!(RawClient::connect_with(&good, "q", None).await.is_ok());
    });
    assert!(
        !relay.log_text().contains(world.token("ana")),
        "a token reached the log"
    );
}

/// Revoking a token closes its live connections; ending a pairing makes the coach's next
/// messages answer as for absent documents; both within a second of the admin command.
#[test]
fn revocation_and_an_ended_pairing_reach_live_connections() {
    let world = World::new();
    let relay = RelayProcess::start_secure(world.data.path(), &[]);
    block_on(async {
        let documents = make_documents(&relay, &world).await;
        let plan = &documents.ids["plan"];
        let mut carl = connect(&relay, world.token("carl"), "carl-live").await;
        fetch(&mut carl, plan).await.unwrap();
        world.admin(&["pairing", "end", "1"]);
        // Within a second the relay re-reads the accounts; until then carl may still see the
        // plan, so ask until the answer changes, bounded by the test's timeout.
        let started = std::time::Instant::now();
        let reply = loop {
            if let Err(reply) = fetch(&mut carl, plan).await {
                break reply;
            }
        };
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(message_type(&reply), "doc-unavailable");
        for kind in ["session", "notes", "directory"] {
            assert!(
                fetch(&mut carl, &documents.ids[kind]).await.is_err(),
                "{kind}"
            );
        }
        // The mentee keeps hers.
        let mut ana = connect(&relay, world.token("ana"), "ana-live").await;
        fetch(&mut ana, plan).await.unwrap();
        fetch(&mut ana, &documents.ids["session"]).await.unwrap();

        let tokens = world.admin(&["token", "list"]);
        let ana_token = tokens
            .lines()
            .find(|line| line.split('\t').nth(1) == Some("ana"))
            .and_then(|line| line.split('\t').next())
            .unwrap()
            .to_owned();
        let started = std::time::Instant::now();
        world.admin(&["token", "revoke", &ana_token]);
        let (_, close) = ana.expect_close().await;
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        let close = close.expect("a close frame");
        assert!(close.reason.contains("revoked"), "{close:?}");
        let again = RawClient::connect_with(&relay.url(), "ana", Some(world.token("ana"))).await;
        assert_eq!(again.err(), Some(401));
    });
}

#[test]
fn a_token_expiring_while_connected_closes_the_connection() {
    let world = World::new();
    let relay = RelayProcess::start_secure(world.data.path(), &[]);
    let short = world.admin(&["token", "issue", "--user", "ana", "--seconds", "2"]);
    block_on(async {
        let mut ana = connect(&relay, &short, "short").await;
        let (_, close) = ana.expect_close().await;
        assert!(close.expect("a close frame").reason.contains("expired"));
    });
}

/// A Tandem device writes under its own id as actor; nobody else may write under it, and the
/// device may not write under another actor. The audit names who wrote what.
#[test]
fn changes_must_come_from_an_actor_bound_to_the_device_and_are_audited() {
    let world = World::new();
    let device = "00112233445566778899aabbccddeeff";
    let phone = world.admin(&["token", "issue", "--user", "ana", "--device", device]);
    let relay = RelayProcess::start_secure(world.data.path(), &[]);
    block_on(async {
        let actor = ActorId::from(hex_bytes(device));
        let mut ana = connect(&relay, &phone, "ana-phone").await;
        let plan = new_document_id();
        let mut doc = plan_of("ana", actor.clone());
        create(&mut ana, &plan, &mut doc).await.unwrap();

        // carl may write the plan, but not under ana's phone's actor.
        let mut carl = connect(&relay, world.token("carl"), "carl-forger").await;
        let (mut copy, mut state) = fetch(&mut carl, &plan).await.unwrap();
        copy.set_actor(actor.clone());
        put(&mut copy, "forged", "by carl as ana");
        let message = carrying_last_change(&copy, &mut state);
        let frame = carl.sync_message("sync", &plan, message.encode());
        carl.send(frame).await;
        let (_, close) = carl.expect_close().await;
        assert!(close.expect("a close frame").reason.contains("actor"));

        // The phone may not write under a random actor.
        let (mut copy, mut state) = fetch(&mut ana, &plan).await.unwrap();
        copy.set_actor(ActorId::random());
        put(&mut copy, "other actor", "yes");
        let message = carrying_last_change(&copy, &mut state);
        let frame = ana.sync_message("sync", &plan, message.encode());
        ana.send(frame).await;
        let (_, close) = ana.expect_close().await;
        assert!(close.expect("a close frame").reason.contains("actor"));

        // carl's honest edit goes through.
        let mut carl = connect(&relay, world.token("carl"), "carl-honest").await;
        let (mut copy, _) = fetch(&mut carl, &plan).await.unwrap();
        put(&mut copy, "from carl", "yes");
        create(&mut carl, &plan, &mut copy).await.unwrap();

        let mut check = connect(&relay, world.token("ana"), "ana-check").await;
        let (kept, _) = fetch(&mut check, &plan).await.unwrap();
        assert_eq!(get_str(&kept, "forged"), None);
        assert_eq!(get_str(&kept, "other actor"), None);
        assert_eq!(get_str(&kept, "from carl").as_deref(), Some("yes"));
        let audit = world.admin(&["audit", "--document", &plan]);
        let lines: Vec<&str> = audit.lines().collect();
        assert_eq!(lines.len(), 2, "{audit}");
        assert!(
            lines[0].contains("\tana\t") && lines[0].contains(device),
            "{audit}"
        );
        assert!(lines[1].contains("\tcarl\t"), "{audit}");
    });
}

/// Sends `message` about `document` by `sync`; the relay's next sync message about it.
async fn exchange(client: &mut RawClient, document: &str, message: sync::Message) -> sync::Message {
    let frame = client.sync_message("sync", document, message.encode());
    client.send(frame).await;
    loop {
        let reply = client.expect("sync").await;
        if text_field(&reply, "documentId") == Some(document) {
            let data = field(&reply, "data").and_then(Value::as_bytes).unwrap();
            return sync::Message::decode(data).unwrap();
        }
    }
}

/// A change that arrives before the change it depends on (the device left that one out because
/// the relay's bloom filter falsely claimed it) waits in the relay's queue: the relay asks for the
/// missing change in `need` instead of refusing the message, stores both once the missing one
/// arrives, and audits both. A waiting change from an unbound actor is still refused.
#[test]
fn a_change_whose_dependency_is_missing_waits_for_it() {
    let world = World::new();
    let relay = RelayProcess::start_secure(world.data.path(), &[]);
    block_on(async {
        let mut ana = connect(&relay, world.token("ana"), "ana-laptop").await;
        let plan = new_document_id();
        let mut doc = plan_of("ana", ActorId::random());
        create(&mut ana, &plan, &mut doc).await.unwrap();

        // Two edits; the message carries only the second.
        put(&mut doc, "first", "a");
        let first = doc.get_last_local_change().unwrap().clone();
        put(&mut doc, "second", "b");
        let mut state = sync::State::new();
        let mut message = carrying_last_change(&doc, &mut state);
        message.heads = doc.get_heads();
        let asked = exchange(&mut ana, &plan, message).await;
        assert_eq!(
            asked.need,
            vec![first.hash()],
            "the relay asks for the missing change"
        );

        // The device answers the way automerge does and both are kept.
        doc.receive_sync_message(&mut state, asked).unwrap();
        create(&mut ana, &plan, &mut doc).await.unwrap();
        let mut check = connect(&relay, world.token("carl"), "carl-check").await;
        let (kept, _) = fetch(&mut check, &plan).await.unwrap();
        assert_eq!(get_str(&kept, "first").as_deref(), Some("a"));
        assert_eq!(get_str(&kept, "second").as_deref(), Some("b"));
        let audit = world.admin(&["audit", "--document", &plan]);
        assert_eq!(audit.lines().count(), 3, "{audit}");

        // A waiting change is checked when it arrives, not when it is released.
        let (mut copy, _) = fetch(&mut check, &plan).await.unwrap();
        copy.set_actor(doc.get_actor().clone());
        put(&mut copy, "skipped", "x");
        put(&mut copy, "forged", "by carl as ana's laptop");
        let mut state = sync::State::new();
        let mut message = carrying_last_change(&copy, &mut state);
        message.heads = copy.get_heads();
        let frame = check.sync_message("sync", &plan, message.encode());
        check.send(frame).await;
        let (_, close) = check.expect_close().await;
        assert!(close.expect("a close frame").reason.contains("actor"));
    });
}

/// What one document may hold waiting for a missing dependency is bounded: a message with more
/// waiting changes than that is refused (read-only), and nothing of it is kept.
#[test]
fn waiting_changes_are_bounded() {
    let world = World::new();
    let relay = RelayProcess::start_secure(world.data.path(), &[]);
    block_on(async {
        let mut ana = connect(&relay, world.token("ana"), "ana-laptop").await;
        let plan = new_document_id();
        let mut doc = plan_of("ana", ActorId::random());
        create(&mut ana, &plan, &mut doc).await.unwrap();
        let before = doc.get_heads();
        put(&mut doc, "missing", "yes");
        let missing = doc.get_last_local_change().unwrap().hash();
        for i in 0..=tandem_server::access::MAX_WAITING_CHANGES {
            put(&mut doc, "count", &i.to_string());
        }
        let mut message = carrying_last_change(&doc, &mut sync::State::new());
        message.heads = doc.get_heads();
        message.changes = doc
            .get_changes(&before)
            .into_iter()
            .filter(|change| change.hash() != missing)
            .map(|change| change.raw_bytes().to_vec())
            .collect::<Vec<_>>()
            .into();
        let answer = exchange(&mut ana, &plan, message).await;
        assert!(answer.need.is_empty(), "nothing was queued: {answer:?}");
        assert_eq!(answer.heads, before, "nothing was applied");
        let mut check = connect(&relay, world.token("ana"), "ana-check").await;
        let (kept, _) = fetch(&mut check, &plan).await.unwrap();
        assert_eq!(kept.get_heads(), before);
    });
}

fn hex_bytes(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// The official JS client authenticates with `?token=`: the mentee writes her plan and reads it
/// back; her coach reads it; a coach of another program is told it is unavailable, as for a
/// document nobody has.
#[test]
fn the_js_client_passes_its_token_in_the_url() {
    let world = World::new();
    let relay = RelayProcess::start_secure(world.data.path(), &[]);
    let url = |who: &str| format!("{}/?token={}", relay.url(), world.token(who));
    let plan = r#"{"type":"plan","mentee":"ana","program":"north","goals":["Pass calculus"]}"#;
    let written = node_json("write.mjs", &[&url("ana"), plan]);
    let doc_url = written["url"].as_str().unwrap().to_owned();
    let by_carl = node_json("read.mjs", &[&url("carl"), &doc_url]);
    assert_eq!(by_carl["doc"]["mentee"], "ana", "{by_carl}");
    let by_sam = node_json("read.mjs", &[&url("sam"), &doc_url]);
    assert!(
        by_sam["unavailable"]
            .as_str()
            .unwrap_or_default()
            .contains("unavailable"),
        "{by_sam}"
    );
    let js_private = node_json("write.mjs", &[&url("olga"), r#"{"title":"olga's"}"#]);
    let private_url = js_private["url"].as_str().unwrap().to_owned();
    let by_ana = node_json("read.mjs", &[&url("ana"), &private_url]);
    assert!(by_ana.get("unavailable").is_some(), "{by_ana}");
}

/// Tokens must not cross a network in clear text: a non-loopback address is refused unless TLS
/// terminates in front of the relay.
#[test]
fn a_non_loopback_address_needs_a_tls_proxy() {
    let data = TempDir::new().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tandem-server"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(data.path())
        .output()
        .expect("run tandem-server");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--behind-tls-proxy"), "{stderr}");
}

/// Every frame the relay sends about `document` in answer to one conversation: two requests, a
/// `sync` without changes, a `sync` with the changes of `content`, that `sync` again, and an
/// ephemeral message. Each reply is normalized to `as_id`, so conversations about different ids
/// compare byte for byte.
async fn conversation(
    client: &mut RawClient,
    document: &str,
    content: &Automerge,
    as_id: &str,
) -> Vec<Vec<u8>> {
    async fn reply_about(client: &mut RawClient, document: &str) -> Value {
        loop {
            let reply = client.expect_any().await;
            if text_field(&reply, "documentId") == Some(document) {
                return reply;
            }
        }
    }
    let mut replies = Vec::new();
    let empty = Automerge::new()
        .generate_sync_message(&mut sync::State::new())
        .unwrap();
    for _ in 0..2 {
        let request = client.sync_message("request", document, empty.clone().encode());
        client.send(request).await;
        replies.push(normalized(&reply_about(client, document).await, as_id));
    }
    let mut doc = content.clone();
    let mut state = sync::State::new();
    let first = doc.generate_sync_message(&mut state).unwrap();
    assert!(first.changes.is_empty(), "automerge opens without changes");
    let frame = client.sync_message("sync", document, first.clone().encode());
    client.send(frame).await;
    let reply = reply_about(client, document).await;
    replies.push(normalized(&reply, as_id));
    assert_eq!(message_type(&reply), "sync", "an invitation to send");
    let data = field(&reply, "data").and_then(Value::as_bytes).unwrap();
    doc.receive_sync_message(&mut state, sync::Message::decode(data).unwrap())
        .unwrap();
    let with_changes = doc.generate_sync_message(&mut state).unwrap();
    assert!(!with_changes.changes.is_empty(), "the changes are offered");
    let frame = client.sync_message("sync", document, with_changes.encode());
    client.send(frame).await;
    replies.push(normalized(&reply_about(client, document).await, as_id));
    let again = client.sync_message("sync", document, first.encode());
    client.send(again).await;
    replies.push(normalized(&reply_about(client, document).await, as_id));
    let ephemeral = cbor_map(vec![
        ("type", text("ephemeral")),
        ("senderId", text(client.peer_id.as_str())),
        ("targetId", text(client.relay_id.as_str())),
        ("documentId", text(document)),
        ("count", Value::Integer(1.into())),
        ("sessionId", text(format!("session-{document}"))),
        ("data", Value::Bytes(vec![1, 2, 3])),
    ]);
    client.send(ephemeral).await;
    // Whatever arrives about the document before the relay answered a later message.
    let nobody = new_document_id();
    let request = client.sync_message("request", &nobody, empty.encode());
    client.send(request).await;
    loop {
        let reply = client.expect_any().await;
        match text_field(&reply, "documentId") {
            Some(id) if id == nobody => break,
            Some(id) if id == document => replies.push(normalized(&reply, as_id)),
            _ => {}
        }
    }
    replies
}

/// Content a peer may not create: the fields of a document of `kind` (as the fixture's), or,
/// for an untyped document (which anyone may create), a plan for someone unknown.
fn refused_content(kind: &str) -> Automerge {
    let fields: Vec<(&str, &str)> = match kind {
        "plan" => vec![("mentee", "ana"), ("program", "north")],
        "session" | "notes" => vec![("coach", "carl"), ("mentee", "ana")],
        "directory" => vec![("program", "north"), ("coach", "carl"), ("mentee", "ana")],
        _ => return typed("plan", &[("mentee", "nobody")]),
    };
    typed(kind, &fields)
}

/// For every denied (role, kind): whatever the peer sends about the document (request, repeated
/// request, sync without changes, sync with changes, sync again, ephemeral), the relay's frames
/// are byte for byte those it sends about an id nobody has, but the id. The document is not
/// changed by any of it.
#[test]
fn a_denied_document_answers_every_message_as_an_absent_one() {
    let world = World::new();
    let relay = RelayProcess::start_secure(world.data.path(), &[]);
    block_on(async {
        let documents = make_documents(&relay, &world).await;
        let mut owner = connect(&relay, world.token("ana"), "ana-owner").await;
        let mut compared = 0;
        for (who, _, _) in PEOPLE {
            for (kind, id) in &documents.ids {
                if expected(who, kind) != May::No {
                    continue;
                }
                let mut client = connect(&relay, world.token(who), &format!("{who}-{kind}")).await;
                let content = refused_content(kind);
                let absent = new_document_id();
                let about_absent = conversation(&mut client, &absent, &content, "X").await;
                let about_denied = conversation(&mut client, id, &content, "X").await;
                assert_eq!(
                    about_absent.len(),
                    5,
                    "{who}/{kind}: one answer per message"
                );
                assert_eq!(
                    about_denied, about_absent,
                    "{who}/{kind}: a denied document must read exactly as an absent one"
                );
                compared += 1;
            }
        }
        assert_eq!(compared, 18, "every denied case was compared");
        // A coach whose pairing ended, on a connection that was syncing the documents.
        let mut carl = connect(&relay, world.token("carl"), "carl-ending").await;
        fetch(&mut carl, &documents.ids["plan"]).await.unwrap();
        world.admin(&["pairing", "end", "1"]);
        while fetch(&mut carl, &documents.ids["plan"]).await.is_ok() {}
        for kind in ["plan", "session", "notes", "directory"] {
            let content = refused_content(kind);
            let absent = new_document_id();
            let about_absent = conversation(&mut carl, &absent, &content, "X").await;
            let about_denied = conversation(&mut carl, &documents.ids[kind], &content, "X").await;
            assert_eq!(
                about_denied, about_absent,
                "carl after the pairing ended, {kind}"
            );
        }
        // Nothing sent into the denied documents reached them (the coordinator reads all but
        // ana's own).
        let mut coordinator = connect(&relay, world.token("cora"), "cora-check").await;
        for (kind, id) in &documents.ids {
            let checker = if *kind == "other" {
                &mut owner
            } else {
                &mut coordinator
            };
            let (kept, _) = fetch(checker, id).await.unwrap();
            assert_eq!(
                get_str(&kept, "type").as_deref(),
                if *kind == "other" { None } else { Some(*kind) }
            );
            assert_eq!(kept.get_changes(&[]).len(), 1, "{kind} was changed");
        }
    });
}

/// The one difference left (docs/access.md): changes that would create a document the writer may
/// create are accepted under a free id but refused under a taken one. The taken document stays as
/// it was.
#[test]
fn creating_under_a_taken_id_is_refused_and_changes_nothing() {
    let world = World::new();
    let relay = RelayProcess::start_secure(world.data.path(), &[]);
    block_on(async {
        let documents = make_documents(&relay, &world).await;
        let mut carl = connect(&relay, world.token("carl"), "carl-taker").await;
        let mut mine = crate::harness::doc_with("title", "carl's");
        let free = new_document_id();
        create(&mut carl, &free, &mut mine.clone()).await.unwrap();
        let refused = create(&mut carl, &documents.ids["other"], &mut mine).await;
        assert_eq!(message_type(&refused.unwrap_err()), "doc-unavailable");
        let mut ana = connect(&relay, world.token("ana"), "ana-check").await;
        let (kept, _) = fetch(&mut ana, &documents.ids["other"]).await.unwrap();
        assert_eq!(get_str(&kept, "title").as_deref(), Some("ana's own"));
    });
}

/// A change with a commit message, as Tandem writes them (`Tandem-User` / `Tandem-Device`
/// trailers), under `actor`.
fn signed_change(doc: &mut Automerge, key: &str, message: &str) {
    let options = automerge::transaction::CommitOptions::default().with_message(message);
    doc.transact_with::<_, _, automerge::AutomergeError, _>(
        |_| options,
        |tx| {
            tx.put(automerge::ROOT, key, "yes")?;
            Ok(())
        },
    )
    .unwrap();
}

/// History shows a change's `Tandem-User` / `Tandem-Device` trailers as its author: a change
/// naming another user, or (from a registered device) another device, is refused and its
/// connection closed; honest trailers, and none at all (JS clients), are accepted.
#[test]
fn authorship_trailers_must_name_the_writer() {
    let world = World::new();
    let device = "00112233445566778899aabbccddeeff";
    let phone = world.admin(&["token", "issue", "--user", "ana", "--device", device]);
    let relay = RelayProcess::start_secure(world.data.path(), &[]);
    let trailers = |user: &str, device: &str| {
        format!(
            "edited\n\nTandem-User: {user}\nTandem-Device: {device}\nTandem-At: 2026-01-01T00:00:00.000Z"
        )
    };
    block_on(async {
        let actor = ActorId::from(hex_bytes(device));
        let mut ana = connect(&relay, &phone, "ana-phone").await;
        let plan = new_document_id();
        let mut doc = plan_of("ana", actor.clone());
        signed_change(&mut doc, "honest", &trailers("ana", device));
        create(&mut ana, &plan, &mut doc).await.unwrap();

        for (what, message) in [
            ("another user", trailers("carl", device)),
            (
                "another device",
                trailers("ana", "ffeeddccbbaa99887766554433221100"),
            ),
        ] {
            let mut ana = connect(&relay, &phone, "ana-forger").await;
            let (mut copy, mut state) = fetch(&mut ana, &plan).await.unwrap();
            copy.set_actor(actor.clone());
            signed_change(&mut copy, "forged", &message);
            let sync = carrying_last_change(&copy, &mut state);
            let frame = ana.sync_message("sync", &plan, sync.encode());
            ana.send(frame).await;
            let (_, close) = ana.expect_close().await;
            let close = close.unwrap_or_else(|| panic!("{what}: a close frame"));
            assert!(close.reason.contains("trailers"), "{what}: {close:?}");
        }

        // A web client (carl, actors bound on first use) may not name ana's phone either.
        let mut carl = connect(&relay, world.token("carl"), "carl-web").await;
        let (mut copy, mut state) = fetch(&mut carl, &plan).await.unwrap();
        signed_change(&mut copy, "forged", &trailers("carl", device));
        let sync = carrying_last_change(&copy, &mut state);
        let frame = carl.sync_message("sync", &plan, sync.encode());
        carl.send(frame).await;
        let (_, close) = carl.expect_close().await;
        assert!(close.expect("a close frame").reason.contains("trailers"));
        // With no trailers, and with his own (a web device names the actor it writes under).
        let mut carl = connect(&relay, world.token("carl"), "carl-web").await;
        let (mut copy, _) = fetch(&mut carl, &plan).await.unwrap();
        put(&mut copy, "plain", "yes");
        let own = copy.get_actor().to_hex_string();
        signed_change(&mut copy, "signed", &trailers("carl", &own));
        create(&mut carl, &plan, &mut copy).await.unwrap();

        let mut check = connect(&relay, world.token("cora"), "cora-check").await;
        let (kept, _) = fetch(&mut check, &plan).await.unwrap();
        assert_eq!(get_str(&kept, "honest").as_deref(), Some("yes"));
        assert_eq!(get_str(&kept, "forged"), None);
        assert_eq!(get_str(&kept, "plain").as_deref(), Some("yes"));
        assert_eq!(get_str(&kept, "signed").as_deref(), Some("yes"));
    });
    assert!(relay.log_text().contains("authorship trailers"));
}

/// A user may hold a limited number of connections at once; one more is refused at the upgrade
/// with 429 and no detail, other users are not affected, and a closed connection frees its slot.
#[test]
fn connections_per_user_are_limited() {
    let world = World::new();
    let relay = RelayProcess::start_secure(world.data.path(), &["--max-connections-per-user", "2"]);
    block_on(async {
        let url = relay.url();
        let first = connect(&relay, world.token("ana"), "ana-1").await;
        let _second = connect(&relay, world.token("ana"), "ana-2").await;
        let refused = RawClient::connect_with(&url, "ana-3", Some(world.token("ana"))).await;
        assert_eq!(refused.err(), Some(429));
        let by_query = format!("{url}/?token={}", world.token("ana"));
        assert_eq!(
            RawClient::connect_with(&by_query, "ana-q", None)
                .await
                .err(),
            Some(429)
        );
        let _carl = connect(&relay, world.token("carl"), "carl").await;
        drop(first);
        // The relay notices the closed socket on its own time: retry until the slot is free
        // (bounded by the harness's timeouts).
        loop {
            match RawClient::join_with(&url, "ana-again", world.token("ana")).await {
                Ok(_) => break,
                Err(status) => assert_eq!(status, 429),
            }
            tokio::task::yield_now().await;
        }
    });
}

/// Beyond its message rate a connection is read more slowly: every message is still answered.
#[test]
fn a_fast_sender_is_slowed_down_not_cut_off() {
    let world = World::new();
    let relay = RelayProcess::start_secure(
        world.data.path(),
        &["--max-messages-per-second", "50", "--message-burst", "5"],
    );
    block_on(async {
        let mut ana = connect(&relay, world.token("ana"), "ana-fast").await;
        let empty = Automerge::new()
            .generate_sync_message(&mut sync::State::new())
            .unwrap();
        let ids: Vec<String> = (0..40).map(|_| new_document_id()).collect();
        for id in &ids {
            let request = ana.sync_message("request", id, empty.clone().encode());
            ana.send(request).await;
        }
        // Absent documents are looked up in storage, so their answers may come in any order.
        let mut unanswered: std::collections::BTreeSet<&str> =
            ids.iter().map(String::as_str).collect();
        while !unanswered.is_empty() {
            let reply = ana.expect("doc-unavailable").await;
            let id = text_field(&reply, "documentId").unwrap();
            assert!(unanswered.remove(id), "an answer per request: {id}");
        }
    });
    assert!(
        relay.log_text().contains("message rate limit reached"),
        "the relay slowed the connection down"
    );
}

/// A directory of the pairing carl–ana listing `listed` (document id, kind).
pub(crate) fn directory_listing(listed: &[(&str, &str)]) -> Automerge {
    let mut doc = typed(
        "directory",
        &[("program", "north"), ("coach", "carl"), ("mentee", "ana")],
    );
    doc.transact::<_, _, automerge::AutomergeError>(|tx| {
        let entries = tx.put_object(automerge::ROOT, "entries", automerge::ObjType::Map)?;
        for (id, kind) in listed {
            let entry = tx.put_object(&entries, *id, automerge::ObjType::Map)?;
            tx.put(&entry, "kind", *kind)?;
            tx.put(&entry, "title", "")?;
        }
        Ok(())
    })
    .unwrap();
    doc
}

/// Session logs, notes and directories belong to the pairing they reached the relay in: a new
/// pairing of the same coach and mentee does not revive the notes or directory of an ended one
/// (session logs stay readable by whoever coaches the mentee now, as the rules say); a document
/// a pairing's directory lists must belong to that pairing, also after a restart; `admin pairing
/// list` shows each pairing's directory.
#[test]
fn documents_belong_to_the_pairing_whose_directory_lists_them() {
    let world = World::new();
    let mut relay = RelayProcess::start_secure(world.data.path(), &[]);
    let listed_session = new_document_id();
    let (directory, notes, session) = block_on(async {
        let mut carl = connect(&relay, world.token("carl"), "carl-1").await;
        let directory = new_document_id();
        let mut doc = directory_listing(&[(&listed_session, "session")]);
        create(&mut carl, &directory, &mut doc).await.unwrap();
        let notes = new_document_id();
        let mut doc = typed("notes", &[("coach", "carl"), ("mentee", "ana")]);
        create(&mut carl, &notes, &mut doc).await.unwrap();
        let session = new_document_id();
        let mut doc = typed("session", &[("coach", "carl"), ("mentee", "ana")]);
        create(&mut carl, &session, &mut doc).await.unwrap();
        (directory, notes, session)
    });
    let pairings = world.admin(&["pairing", "list"]);
    assert!(
        pairings
            .lines()
            .next()
            .unwrap()
            .ends_with(&format!("\tautomerge:{directory}")),
        "{pairings}"
    );
    world.admin(&["pairing", "end", "1"]);
    world.admin(&["pairing", "add", "--coach", "carl", "--mentee", "ana"]);
    // A restart: the relay reads the pairings of documents and the directories' listings back.
    relay.terminate();
    relay.wait_for_exit(std::time::Duration::from_secs(10));
    let relay = RelayProcess::start_secure(world.data.path(), &[]);
    block_on(async {
        let mut carl = connect(&relay, world.token("carl"), "carl-2").await;
        let absent = fetch(&mut carl, &new_document_id()).await.unwrap_err();
        for (what, id) in [("notes", &notes), ("directory", &directory)] {
            let denied = fetch(&mut carl, id).await.unwrap_err();
            assert_eq!(
                normalized(&denied, "X"),
                normalized(&absent, "X"),
                "the {what} of the ended pairing"
            );
        }
        fetch(&mut carl, &session).await.unwrap();
        let mut ana = connect(&relay, world.token("ana"), "ana-2").await;
        fetch(&mut ana, &directory).await.unwrap();
        // The old pairing's directory lists `listed_session`: under the new pairing it is refused,
        // as an absent document's creation would be; an unlisted one is accepted.
        let mut doc = typed("session", &[("coach", "carl"), ("mentee", "ana")]);
        let refused = create(&mut carl, &listed_session, &mut doc).await;
        assert_eq!(message_type(&refused.unwrap_err()), "doc-unavailable");
        let fresh = new_document_id();
        create(&mut carl, &fresh, &mut doc).await.unwrap();
    });
}

/// The matrix again with the official JS client (its token as `?token=`): every role finds what
/// it may read, writes (and has stored) what it may write, and is told a forbidden document is
/// unavailable in exactly the words used for a document nobody has.
#[test]
fn the_js_client_sees_the_same_matrix() {
    let world = World::new();
    let relay = RelayProcess::start_secure(world.data.path(), &[]);
    let documents = block_on(make_documents(&relay, &world));
    for (who, _, _) in PEOPLE {
        let url = format!("{}/?token={}", relay.url(), world.token(who));
        let absent = format!("automerge:{}", new_document_id());
        let mut args = vec![format!("find:{absent}")];
        for (kind, id) in &documents.ids {
            let mode = if expected(who, kind) == May::Write {
                "write"
            } else {
                "find"
            };
            args.push(format!("{mode}:automerge:{id}"));
        }
        let args: Vec<&str> = std::iter::once(url.as_str())
            .chain(args.iter().map(String::as_str))
            .collect();
        let results = node_json("access.mjs", &args);
        let absent_words = results[&absent]["unavailable"]
            .as_str()
            .unwrap_or_else(|| panic!("{who}: an absent document is unavailable: {results}"))
            .replace(&absent, "URL");
        for (kind, id) in &documents.ids {
            let result = &results[&format!("automerge:{id}")];
            match expected(who, kind) {
                May::No => {
                    let words = result["unavailable"].as_str().unwrap_or_default();
                    assert_eq!(
                        words.replace(&format!("automerge:{id}"), "URL"),
                        absent_words,
                        "{who}/{kind}: {result}"
                    );
                }
                May::Read => assert!(result["doc"].is_object(), "{who}/{kind}: {result}"),
                May::Write => assert!(result["written"].is_array(), "{who}/{kind}: {result}"),
            }
        }
    }
}
