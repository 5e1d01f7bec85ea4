//! The relay on PostgreSQL (the server on 127.0.0.1:5432 that `scripts/setup.sh` prepares; another
//! with `TANDEM_TEST_DATABASE_URL`): the store contract on both databases by one test body, the
//! compaction rule with two relays writing one document, and two relay processes sharing one
//! database. Each test gets a database of its own, dropped afterwards. A test that cannot reach
//! PostgreSQL fails, saying how to set it up.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use automerge::Automerge;
use tandem_core::DocumentId;
use tandem_server::access::{DocumentRecord, Kind};
use tandem_server::accounts::{self, Role};
use tandem_server::store::{Database, DatabaseLocation, NewChanges, SyncStateRecord};
use tempfile::TempDir;

use crate::block_on;
use crate::harness::{NodeProcess, RawClient, RelayProcess, doc_with, get_str, node_json, put};

/// What `scripts/setup.sh` creates.
const DEFAULT_URL: &str = "postgres://tandem:tandem@127.0.0.1:5432/tandem_test";

/// A database of one test's own on the test server, dropped when the test ends.
struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    fn create() -> Self {
        let admin_url =
            std::env::var("TANDEM_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let name = format!("tandem_t_{}", accounts::hex(&rand_bytes()));
        let mut client = connect(&admin_url);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("creating test database {name}: {e}"));
        // The same server and credentials, the new database.
        let base = admin_url.split('?').next().unwrap_or(&admin_url);
        let prefix = &base[..base.rfind('/').expect("a URL with a database path")];
        let url = format!("{prefix}/{name}");
        Self {
            admin_url,
            name,
            url,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let mut client = connect(&self.admin_url);
        let _ = client.batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

fn rand_bytes() -> [u8; 8] {
    let id = DocumentId::random();
    id.as_bytes()[..8].try_into().expect("8 bytes")
}

fn connect(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {} ({e}). The relay's PostgreSQL tests need it: run \
             scripts/setup.sh (it installs and starts PostgreSQL and creates the test role), or \
             point TANDEM_TEST_DATABASE_URL at a server where that role may create databases",
            DatabaseLocation::Postgres(url.to_owned())
        )
    })
}

// ---- the store contract, one body for both databases -------------------------------------------

fn plan_record(database: &Database) -> DocumentRecord {
    let (program, mentee) = database
        .transaction(|db| {
            let program = accounts::add_program(db, "north")?;
            let mentee = accounts::add_user(db, "ana", Role::Mentee, Some("north"))?;
            Ok((program, mentee))
        })
        .unwrap();
    DocumentRecord {
        kind: Kind::Plan,
        program: Some(program),
        coach: None,
        mentee: Some(mentee),
        creator: Some(mentee),
        pairing: None,
    }
}

fn store_contract(location: &DatabaseLocation) {
    let database = Database::open(location).unwrap();
    let record = plan_record(&database);
    // Accounts: made through the admin functions, read by the relay's store.
    let duplicate = database
        .transaction(|db| accounts::add_program(db, "north"))
        .unwrap_err();
    assert!(
        duplicate.to_string().contains("already exists"),
        "{duplicate}"
    );
    let issued = database
        .transaction(|db| {
            accounts::issue_token(db, "ana", None, "web", accounts::now_millis() + 60_000)
        })
        .unwrap();
    let listed = database.transaction(accounts::list_tokens).unwrap();
    assert_eq!(listed.len(), 1);
    let store = Database::open(location).unwrap().into_relay_store();
    let now = accounts::now_millis();
    let grant = store.authenticate(&issued.token, now).unwrap().unwrap();
    assert_eq!(grant.user_name, "ana");
    assert!(store.authenticate("tandem_forged", now).unwrap().is_none());
    let accounts_before = store.load_accounts().unwrap();
    assert!(accounts_before.user_by_name("ana").is_some());
    assert_eq!(accounts_before.devices.len(), 1);
    assert!(
        accounts_before
            .devices
            .values()
            .all(|d| d.bind_on_first_use)
    );
    let revision = store.revision().unwrap();
    database
        .transaction(|db| accounts::revoke_token(db, issued.token_id))
        .unwrap();
    assert!(store.revision().unwrap() > revision);
    assert!(store.authenticate(&issued.token, now).unwrap().is_none());

    // Documents: unknown, appended with their record, loaded in order, one chunk at a time.
    let (a, b) = (DocumentId::random(), DocumentId::random());
    assert!(store.load_document(a).unwrap().is_none());
    assert!(store.document_record(a).unwrap().is_none());
    let mut doc = doc_with("title", "one");
    let first = doc.save();
    let heads_one = doc.get_heads();
    let before = doc.get_heads();
    put(&mut doc, "title", "two");
    let second = doc.save_after(&before);
    let mut creating = NewChanges::new(a, first.clone());
    creating.record = Some(record.clone());
    creating.heads = Some(heads_one);
    let mut other = NewChanges::new(b, doc_with("x", "y").save());
    other.record = Some(record.clone());
    let mut next = NewChanges::new(a, second.clone());
    next.heads = Some(doc.get_heads());
    store.append_changes(&[creating, other, next]).unwrap();
    let chunks = store.load_document(a).unwrap().unwrap();
    let bytes: Vec<_> = chunks.iter().map(|chunk| chunk.bytes.clone()).collect();
    assert_eq!(bytes, vec![first.clone(), second.clone()]);
    assert!(chunks.iter().all(|chunk| !chunk.is_snapshot));
    assert_eq!(
        store.load_chunk(a, chunks[1].seq).unwrap(),
        Some(second.clone())
    );
    assert_eq!(store.load_chunk(a, chunks[1].seq + 1000).unwrap(), None);
    assert_eq!(store.document_record(a).unwrap(), Some(record.clone()));
    assert_eq!(store.document_records().unwrap().len(), 2);
    assert_eq!(store.document_count().unwrap(), 2);

    // Sync states: upserted per (document, peer); the peer index holds the committed heads.
    let state = |state: &[u8]| SyncStateRecord {
        document: a,
        peer_storage_id: "phone".into(),
        state: state.to_vec(),
    };
    store.save_sync_states(&[state(b"first")]).unwrap();
    store.save_sync_states(&[state(b"second")]).unwrap();
    assert_eq!(
        store.load_sync_states(a).unwrap(),
        vec![("phone".to_owned(), b"second".to_vec())]
    );
    assert_eq!(
        store.peer_index("phone").unwrap(),
        vec![(a, doc.get_heads())]
    );
    assert!(store.peer_index("tablet").unwrap().is_empty());

    // Compaction: exactly the chunks given, into one snapshot that loads as the document.
    let seqs: Vec<i64> = chunks.iter().map(|chunk| chunk.seq).collect();
    assert!(store.compact(a, &doc.save(), &seqs).unwrap());
    let compacted = store.load_document(a).unwrap().unwrap();
    assert_eq!(compacted.len(), 1);
    assert!(compacted[0].is_snapshot);
    let loaded = Automerge::load(&compacted[0].bytes).unwrap();
    assert_eq!(get_str(&loaded, "title").as_deref(), Some("two"));
    assert_eq!(
        store.peer_index("phone").unwrap(),
        vec![(a, doc.get_heads())]
    );

    // The storage id is the database's, the same through every handle.
    assert_eq!(
        store.storage_id().unwrap(),
        Database::open(location)
            .unwrap()
            .into_relay_store()
            .storage_id()
            .unwrap()
    );
}

#[test]
fn the_store_contract_holds_on_sqlite() {
    let dir = TempDir::new().unwrap();
    store_contract(&DatabaseLocation::Sqlite(dir.path().join("relay.sqlite")));
}

#[test]
fn the_store_contract_holds_on_postgres() {
    let database = TestDatabase::create();
    store_contract(&DatabaseLocation::Postgres(database.url.clone()));
}

// ---- the schema ------------------------------------------------------------------------------

/// Relays starting together on an empty database take turns migrating it (an advisory lock); a
/// database from a newer release is refused and left as it is.
#[test]
fn relays_starting_at_once_migrate_once_and_a_newer_schema_is_refused() {
    let database = TestDatabase::create();
    let location = DatabaseLocation::Postgres(database.url.clone());
    let opened: Vec<_> = (0..6)
        .map(|_| {
            let location = location.clone();
            std::thread::spawn(move || Database::open(&location).map(|_| ()))
        })
        .collect();
    for opening in opened {
        opening.join().unwrap().unwrap();
    }
    let mut client = connect(&database.url);
    let version: i64 = client
        .query_one("SELECT version FROM schema_version", &[])
        .unwrap()
        .get(0);
    let rows: i64 = client
        .query_one("SELECT count(*) FROM schema_version", &[])
        .unwrap()
        .get(0);
    assert_eq!((version, rows), (1, 1));
    client
        .batch_execute("UPDATE schema_version SET version = 99")
        .unwrap();
    let error = Database::open(&location).unwrap_err();
    assert!(
        matches!(error, tandem_server::Error::SchemaTooNew { found: 99, .. }),
        "{error}"
    );
    let version: i64 = client
        .query_one("SELECT version FROM schema_version", &[])
        .unwrap()
        .get(0);
    assert_eq!(version, 99);
}

// ---- compaction with two relays writing one document -------------------------------------------

/// Relay A appends a change, relay B appends a concurrent one A never merged, A appends another.
/// A's snapshot holds only its own two: folding "everything up to my last chunk" would delete
/// B's change. The store refuses, loses nothing, and compacts once A has merged B's change.
fn compaction_never_folds_a_change_the_snapshot_lacks(location: &DatabaseLocation) {
    let relay_a = Database::open(location).unwrap().into_relay_store();
    let relay_b = Database::open(location).unwrap().into_relay_store();
    let id = DocumentId::random();
    let mut a = doc_with("title", "plan");
    let first = a.save();
    relay_a
        .append_changes(&[NewChanges::new(id, first)])
        .unwrap();
    let mut b = a.fork();
    put(&mut b, "coach", "from B");
    let from_b = b.save_after(&a.get_heads());
    relay_b
        .append_changes(&[NewChanges::new(id, from_b.clone())])
        .unwrap();
    let before = a.get_heads();
    put(&mut a, "goal", "from A");
    relay_a
        .append_changes(&[NewChanges::new(id, a.save_after(&before))])
        .unwrap();
    let seqs: Vec<i64> = relay_a
        .load_document(id)
        .unwrap()
        .unwrap()
        .iter()
        .map(|chunk| chunk.seq)
        .collect();
    assert_eq!(seqs.len(), 3);
    // A holds the first and the third.
    let merged_by_a = [seqs[0], seqs[2]];
    assert!(!relay_a.compact(id, &a.save(), &merged_by_a).unwrap());
    let stored = relay_a.load_document(id).unwrap().unwrap();
    assert_eq!(stored.len(), 3, "nothing changed");
    let bytes: Vec<u8> = stored.iter().flat_map(|c| c.bytes.clone()).collect();
    let loaded = Automerge::load(&bytes).unwrap();
    assert_eq!(get_str(&loaded, "coach").as_deref(), Some("from B"));

    // Once A merged B's change, its snapshot folds all three.
    a.load_incremental(&from_b).unwrap();
    assert!(relay_a.compact(id, &a.save(), &seqs).unwrap());
    let stored = relay_b.load_document(id).unwrap().unwrap();
    assert_eq!(stored.len(), 1);
    let loaded = Automerge::load(&stored[0].bytes).unwrap();
    assert_eq!(get_str(&loaded, "coach").as_deref(), Some("from B"));
    assert_eq!(get_str(&loaded, "goal").as_deref(), Some("from A"));
    // B's view is stale now (its chunks were folded): refused, not applied.
    assert!(!relay_b.compact(id, &b.save(), &[seqs[0], seqs[1]]).unwrap());
    assert_eq!(relay_b.load_document(id).unwrap().unwrap().len(), 1);
}

#[test]
fn compaction_never_folds_another_relays_change_on_sqlite() {
    let dir = TempDir::new().unwrap();
    compaction_never_folds_a_change_the_snapshot_lacks(&DatabaseLocation::Sqlite(
        dir.path().join("relay.sqlite"),
    ));
}

#[test]
fn compaction_never_folds_another_relays_change_on_postgres() {
    let database = TestDatabase::create();
    compaction_never_folds_a_change_the_snapshot_lacks(&DatabaseLocation::Postgres(
        database.url.clone(),
    ));
}

// ---- relay processes sharing one database -------------------------------------------------------

/// `tandem-server admin --database URL args…`, its stdout.
fn admin(url: &str, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_tandem-server"))
        .args(["admin", "--database", url])
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

fn relay_on(database: &TestDatabase, folder: &Path, secure: bool) -> RelayProcess {
    let args = ["--database", database.url.as_str()];
    if secure {
        RelayProcess::start_secure(folder, &args)
    } else {
        RelayProcess::start(folder, &args)
    }
}

/// A device on relay A writes a stream of edits; a device on relay B, sharing A's database, sees
/// them live (through PostgreSQL's notifications, nothing else connects the relays). Then A is
/// killed with SIGKILL: every edit B saw was acknowledged by A and is still there, read through B.
#[test]
fn two_relays_on_one_database_share_changes_live_and_keep_them_through_sigkill() {
    let database = TestDatabase::create();
    let folders = TempDir::new().unwrap();
    let mut relay_a = relay_on(&database, &folders.path().join("a"), false);
    let relay_b = relay_on(&database, &folders.path().join("b"), false);
    let mut writer = NodeProcess::spawn("edits.mjs", &[&relay_a.url(), &relay_b.url()]);
    let url = writer.next_line()["url"].as_str().unwrap().to_owned();
    let mut seen = 0;
    while seen < 30 {
        if let Some(n) = writer.next_line()["seen"].as_u64() {
            seen = seen.max(n);
        }
    }
    relay_a.kill_hard();
    for line in writer.kill_and_drain() {
        if let Some(n) = line["seen"].as_u64() {
            seen = seen.max(n);
        }
    }
    let read = node_json("read.mjs", &[&relay_b.url(), &url]);
    let edits: Vec<u64> = read["doc"]["edits"]
        .as_array()
        .unwrap_or_else(|| panic!("the document is not readable through B: {read}"))
        .iter()
        .map(|e| e.as_u64().unwrap())
        .collect();
    assert_eq!(edits, (1..=edits.len() as u64).collect::<Vec<_>>());
    assert!(
        edits.len() as u64 >= seen,
        "B saw edit {seen} but after A's SIGKILL only {} are stored",
        edits.len()
    );
    assert!(
        !relay_b.log_text().contains(":tandem@"),
        "the database password reached the log"
    );
}

/// A token revoked with `admin --database` closes its connections on every relay sharing the
/// database.
#[test]
fn a_token_revoked_through_the_database_closes_connections_on_every_relay() {
    let database = TestDatabase::create();
    admin(&database.url, &["program", "add", "north"]);
    admin(
        &database.url,
        &[
            "user",
            "add",
            "ana",
            "--role",
            "mentee",
            "--program",
            "north",
        ],
    );
    let token = admin(&database.url, &["token", "issue", "--user", "ana"]);
    let folders = TempDir::new().unwrap();
    let relay_a = relay_on(&database, &folders.path().join("a"), true);
    let relay_b = relay_on(&database, &folders.path().join("b"), true);
    block_on(async {
        let (mut on_a, _) = RawClient::join_with(&relay_a.url(), "ana-a", &token)
            .await
            .unwrap();
        let (mut on_b, _) = RawClient::join_with(&relay_b.url(), "ana-b", &token)
            .await
            .unwrap();
        let listed = admin(&database.url, &["token", "list"]);
        let id = listed.split('\t').next().unwrap().to_owned();
        let started = Instant::now();
        admin(&database.url, &["token", "revoke", &id]);
        for client in [&mut on_a, &mut on_b] {
            let (_, close) = client.expect_close().await;
            let close = close.expect("a close frame");
            assert!(close.reason.contains("revoked"), "{close:?}");
        }
        assert!(started.elapsed() < Duration::from_secs(3));
        for relay in [&relay_a, &relay_b] {
            let again = RawClient::connect_with(&relay.url(), "ana", Some(&token)).await;
            assert_eq!(again.err(), Some(401));
        }
    });
}

/// Access across relays: a pairing's directory and notes written through relay A are decided on
/// relay B from what A recorded (its pairing, its listing), after the pairing ended and a new one
/// of the same people began.
#[test]
fn documents_written_through_one_relay_are_decided_on_another_by_their_pairing() {
    use crate::access::{connect, create, directory_listing, fetch, normalized, typed};
    use crate::harness::{message_type, new_document_id};
    let database = TestDatabase::create();
    let url = database.url.as_str();
    admin(url, &["program", "add", "north"]);
    for (name, role) in [("ana", "mentee"), ("carl", "coach")] {
        admin(
            url,
            &["user", "add", name, "--role", role, "--program", "north"],
        );
    }
    admin(
        url,
        &["pairing", "add", "--coach", "carl", "--mentee", "ana"],
    );
    let carl = admin(url, &["token", "issue", "--user", "carl"]);
    let ana = admin(url, &["token", "issue", "--user", "ana"]);
    let folders = TempDir::new().unwrap();
    let relay_a = relay_on(&database, &folders.path().join("a"), true);
    let relay_b = relay_on(&database, &folders.path().join("b"), true);
    let listed_session = new_document_id();
    let (directory, notes) = block_on(async {
        let mut carl_a = connect(&relay_a, &carl, "carl-a").await;
        let directory = new_document_id();
        let mut doc = directory_listing(&[(&listed_session, "session")]);
        create(&mut carl_a, &directory, &mut doc).await.unwrap();
        let notes = new_document_id();
        let mut doc = typed("notes", &[("coach", "carl"), ("mentee", "ana")]);
        create(&mut carl_a, &notes, &mut doc).await.unwrap();
        // Through B, while the pairing lasts: carl reads his notes.
        let mut carl_b = connect(&relay_b, &carl, "carl-b").await;
        fetch(&mut carl_b, &notes).await.unwrap();
        (directory, notes)
    });
    admin(url, &["pairing", "end", "1"]);
    admin(
        url,
        &["pairing", "add", "--coach", "carl", "--mentee", "ana"],
    );
    block_on(async {
        // Ana (the mentee) reads the directory through B, which loads it and its listing.
        let mut ana_b = connect(&relay_b, &ana, "ana-b").await;
        fetch(&mut ana_b, &directory).await.unwrap();
        let mut carl_b = connect(&relay_b, &carl, "carl-b2").await;
        let absent = fetch(&mut carl_b, &new_document_id()).await.unwrap_err();
        // Revocation of the old pairing reaches B within a second or so: ask until it does.
        let started = Instant::now();
        let denied = loop {
            if let Err(reply) = fetch(&mut carl_b, &notes).await {
                break reply;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "notes still readable"
            );
        };
        assert_eq!(normalized(&denied, "X"), normalized(&absent, "X"));
        // The old pairing's directory lists `listed_session`: refused under the new pairing, on B
        // as on A; an unlisted one is accepted.
        let mut doc = typed("session", &[("coach", "carl"), ("mentee", "ana")]);
        let refused = create(&mut carl_b, &listed_session, &mut doc).await;
        assert_eq!(message_type(&refused.unwrap_err()), "doc-unavailable");
        create(&mut carl_b, &new_document_id(), &mut doc)
            .await
            .unwrap();
    });
}

/// The relay's watch reconnects after losing its connection, and then reads again what it may
/// have missed: a change committed through A while B's watch was down still reaches B's device.
#[test]
fn a_relay_whose_watch_connection_drops_catches_up() {
    let database = TestDatabase::create();
    let folders = TempDir::new().unwrap();
    let relay_a = relay_on(&database, &folders.path().join("a"), false);
    let relay_b = relay_on(&database, &folders.path().join("b"), false);
    let mut writer = NodeProcess::spawn("edits.mjs", &[&relay_a.url(), &relay_b.url()]);
    writer.next_line();
    let mut seen = 0;
    while seen < 5 {
        if let Some(n) = writer.next_line()["seen"].as_u64() {
            seen = seen.max(n);
        }
    }
    // Cut every watch connection of the test database (both relays'), over and over while
    // edits flow: the stream only goes on if B catches up after each reconnect.
    let mut admin_client = connect(&database.admin_url);
    let mut cuts = 0;
    while seen < 60 {
        cuts += admin_client
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = $1 AND application_name = 'tandem-relay-watch'",
                &[&database.name],
            )
            .unwrap()
            .len();
        for _ in 0..10 {
            if let Some(n) = writer.next_line()["seen"].as_u64() {
                seen = seen.max(n);
            }
        }
    }
    assert!(cuts > 0, "no watch connection was found to cut");
    writer.kill_and_drain();
    drop(relay_a);
    drop(relay_b);
}
