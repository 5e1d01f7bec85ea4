//! [`RelayStore`] over PostgreSQL: several relay processes share one database. Each commit tells
//! the others through `NOTIFY` (sent inside the commit's transaction, so PostgreSQL delivers it
//! only once the commit is durable), and each relay `LISTEN`s on a connection of its own.
//!
//! The `postgres` crate (the blocking client of rust-postgres) is used because the relay's store
//! calls are blocking by design (they run on tokio's blocking pool, as SQLite's do), and it brings
//! no TLS stack or connection pool the relay does not need; it runs its own small runtime per
//! connection, so it must never be called from an async task (the relay never does).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use automerge::ChangeHash;
use postgres::{Client, Config, NoTls};
use tandem_core::DocumentId;

use super::sql::{PostgresSql, Sql};
use super::{
    EventSink, NewChanges, RelayStore, StoreEvent, StoredChunk, SyncStateRecord, Watch,
    decode_heads, encode_heads, now_millis,
};
use crate::access::{DocumentRecord, Kind};
use crate::accounts::{self, Accounts, Grant};
use crate::error::{Error, Result};

/// Numbered migrations, applied in order; the database records how many it has.
const MIGRATIONS: &[&str] = &[include_str!("../../migrations/postgres/001_schema.sql")];

/// The channel relays announce commits on. Payload: `<origin> <document> <seq>`.
const CHANNEL: &str = "tandem_changes";

/// Key of the advisory lock held while migrating, so relays starting together take turns.
const MIGRATION_LOCK: i64 = 0x7461_6e64_656d_0001;

/// How often an idle watch looks whether it should stop.
const WATCH_TICK: Duration = Duration::from_secs(1);

/// One connection, opened again if it was lost.
struct Connection {
    config: Config,
    client: Mutex<Option<Client>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connection")
    }
}

impl Connection {
    fn new(config: Config) -> Self {
        Self {
            config,
            client: Mutex::new(None),
        }
    }

    /// The client, connected. A connection found closed (server restart, network) is opened
    /// again; the statement that found it closed has already failed and reported its error.
    fn get(&self) -> Result<ClientGuard<'_>> {
        // A panic while holding the lock leaves at worst an open transaction, which the client
        // rolls back when the `Transaction` is dropped.
        let mut guard = self
            .client
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = Some(self.config.connect(NoTls)?);
        }
        Ok(ClientGuard(guard))
    }
}

struct ClientGuard<'a>(MutexGuard<'a, Option<Client>>);

impl std::ops::Deref for ClientGuard<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        match self.0.as_ref() {
            Some(client) => client,
            None => unreachable!("connected in Connection::get"),
        }
    }
}

impl std::ops::DerefMut for ClientGuard<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        match self.0.as_mut() {
            Some(client) => client,
            None => unreachable!("connected in Connection::get"),
        }
    }
}

/// The relay's PostgreSQL database: one connection for commits, one for reads (so a load never
/// waits behind a group commit), and one per watch.
#[derive(Debug)]
pub struct PostgresStore {
    writer: Connection,
    reader: Connection,
    /// This process's mark on its notifications, so its own watch skips them.
    origin: String,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`, or the key=value form)
    /// and brings the schema up to date. Blocking: never call it from an async task.
    pub fn open(url: &str) -> Result<Self> {
        let mut config: Config = url
            .parse()
            .map_err(|e| Error::Config(format!("database URL: {e}")))?;
        if config.get_application_name().is_none() {
            config.application_name("tandem-relay");
        }
        config.connect_timeout(Duration::from_secs(10));
        let store = Self {
            writer: Connection::new(config.clone()),
            reader: Connection::new(config),
            origin: DocumentId::random().to_string(),
        };
        migrate(&mut *store.writer.get()?)?;
        Ok(store)
    }

    /// Runs `f` in one transaction: committed if it succeeds, rolled back if it fails. How the
    /// account functions of [`crate::accounts`] reach this database.
    pub fn transaction<T>(&self, f: impl FnOnce(&mut dyn Sql) -> Result<T>) -> Result<T> {
        let mut client = self.writer.get()?;
        let mut tx = client.transaction()?;
        let value = f(&mut PostgresSql(&mut tx))?;
        tx.commit()?;
        Ok(value)
    }

    fn read<T>(&self, f: impl FnOnce(&mut dyn Sql) -> Result<T>) -> Result<T> {
        let mut client = self.reader.get()?;
        let mut tx = client.transaction()?;
        let value = f(&mut PostgresSql(&mut tx))?;
        tx.commit()?;
        Ok(value)
    }
}

/// Applies the migrations this database lacks, all in one transaction, under an advisory lock:
/// relays starting at once take turns, and the later ones find nothing left to do.
fn migrate(client: &mut Client) -> Result<()> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")?;
    let found: i64 = match tx.query_opt("SELECT version FROM schema_version", &[])? {
        Some(row) => row.try_get(0)?,
        None => {
            tx.execute("INSERT INTO schema_version (version) VALUES (0)", &[])?;
            0
        }
    };
    let supported = MIGRATIONS.len() as i64;
    if found > supported {
        return Err(Error::SchemaTooNew { found, supported });
    }
    for sql in MIGRATIONS.iter().skip(found as usize) {
        tx.batch_execute(sql)?;
    }
    tx.execute("UPDATE schema_version SET version = $1", &[&supported])?;
    tx.commit()?;
    Ok(())
}

impl RelayStore for PostgresStore {
    fn load_document(&self, document: DocumentId) -> Result<Option<Vec<StoredChunk>>> {
        let mut client = self.reader.get()?;
        let id = &document.as_bytes()[..];
        let mut tx = client.transaction()?;
        if tx
            .query_opt("SELECT 1 FROM documents WHERE id = $1", &[&id])?
            .is_none()
        {
            return Ok(None);
        }
        let chunks = tx
            .query(
                "SELECT seq, is_snapshot, bytes FROM chunks WHERE document = $1 ORDER BY seq",
                &[&id],
            )?
            .into_iter()
            .map(|row| {
                Ok(StoredChunk {
                    seq: row.try_get(0)?,
                    is_snapshot: row.try_get(1)?,
                    bytes: row.try_get(2)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        tx.commit()?;
        Ok(Some(chunks))
    }

    fn load_chunk(&self, document: DocumentId, seq: i64) -> Result<Option<Vec<u8>>> {
        let row = self.reader.get()?.query_opt(
            "SELECT bytes FROM chunks WHERE document = $1 AND seq = $2",
            &[&&document.as_bytes()[..], &seq],
        )?;
        Ok(row.map(|row| row.try_get(0)).transpose()?)
    }

    fn append_changes(&self, batch: &[NewChanges]) -> Result<()> {
        let mut client = self.writer.get()?;
        let mut tx = client.transaction()?;
        let now = now_millis();
        // Every document of the batch exists and is locked, in id order (two relays committing
        // the same documents never deadlock), before any chunk takes its `seq`: a compaction
        // holding the lock sees every chunk of the document that has a `seq`, committed.
        let ids: BTreeSet<&[u8]> = batch.iter().map(|c| &c.document.as_bytes()[..]).collect();
        let add_document = tx.prepare(
            "INSERT INTO documents (id, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )?;
        for id in &ids {
            tx.execute(&add_document, &[id, &now])?;
        }
        let ids: Vec<&[u8]> = ids.into_iter().collect();
        tx.execute(
            "SELECT 1 FROM documents WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            &[&ids],
        )?;
        let set_record = tx.prepare(
            "UPDATE documents SET kind = $2, program = $3, coach = $4, mentee = $5, creator = $6,
             pairing = $7 WHERE id = $1",
        )?;
        let set_directory =
            tx.prepare("UPDATE pairings SET directory = $2 WHERE id = $1 AND directory IS NULL")?;
        let add_chunk = tx.prepare(
            "INSERT INTO chunks (document, is_snapshot, bytes, created_at)
             VALUES ($1, false, $2, $3) RETURNING seq",
        )?;
        // Heads are cleared, not set: see the `heads` column in the migration.
        let moved =
            tx.prepare("UPDATE documents SET heads = NULL, version = version + 1 WHERE id = $1")?;
        let add_audit = tx.prepare(
            "INSERT INTO audit (document, user_id, device, changes, hashes, at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )?;
        let bind = tx.prepare(
            "INSERT INTO device_actors (actor, device, bound_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )?;
        let mut notices = Vec::with_capacity(batch.len());
        let mut bound = 0;
        for changes in batch {
            let id = &changes.document.as_bytes()[..];
            if let Some(record) = &changes.record {
                tx.execute(
                    &set_record,
                    &[
                        &id,
                        &record.kind.as_str(),
                        &record.program,
                        &record.coach,
                        &record.mentee,
                        &record.creator,
                        &record.pairing,
                    ],
                )?;
                if let (Kind::Directory, Some(pairing)) = (record.kind, record.pairing) {
                    tx.execute(&set_directory, &[&pairing, &id])?;
                }
            }
            let seq: i64 = tx
                .query_one(&add_chunk, &[&id, &changes.bytes, &now])?
                .try_get(0)?;
            tx.execute(&moved, &[&id])?;
            for written in &changes.audit {
                let hashes: Vec<String> = written.hashes.iter().map(|h| h.to_string()).collect();
                tx.execute(
                    &add_audit,
                    &[
                        &id,
                        &written.user,
                        &written.device,
                        &(written.hashes.len() as i64),
                        &hashes.join(" "),
                        &now,
                    ],
                )?;
            }
            for (actor, device) in &changes.bindings {
                bound += tx.execute(&bind, &[actor, device, &now])?;
            }
            notices.push(format!("{} {} {seq}", self.origin, changes.document));
        }
        if bound > 0 {
            // Every relay must learn the binding: they re-read the accounts when this moves.
            tx.execute("UPDATE revision SET value = value + 1 WHERE id = 1", &[])?;
        }
        // Delivered by PostgreSQL only when (and if) this transaction commits.
        tx.execute(
            "SELECT pg_notify($1, notice) FROM unnest($2::text[]) AS notice",
            &[&CHANNEL, &notices],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn compact(&self, document: DocumentId, snapshot: &[u8], folded: &[i64]) -> Result<bool> {
        let Some(&at) = folded.iter().max() else {
            return Ok(false);
        };
        let mut client = self.writer.get()?;
        let mut tx = client.transaction()?;
        let id = &document.as_bytes()[..];
        // The lock every append takes before its chunk gets a `seq` (see `append_changes`).
        if tx
            .query_opt("SELECT 1 FROM documents WHERE id = $1 FOR UPDATE", &[&id])?
            .is_none()
        {
            return Ok(false);
        }
        let stored: BTreeSet<i64> = tx
            .query(
                "SELECT seq FROM chunks WHERE document = $1 AND seq <= $2",
                &[&id, &at],
            )?
            .into_iter()
            .map(|row| row.try_get(0))
            .collect::<std::result::Result<_, _>>()?;
        if stored != folded.iter().copied().collect() {
            return Ok(false);
        }
        tx.execute(
            "DELETE FROM chunks WHERE document = $1 AND seq = ANY($2)",
            &[&id, &folded],
        )?;
        tx.execute(
            "INSERT INTO chunks (seq, document, is_snapshot, bytes, created_at)
             VALUES ($1, $2, true, $3, $4)",
            &[&at, &id, &snapshot, &now_millis()],
        )?;
        tx.commit()?;
        Ok(true)
    }

    fn load_sync_states(&self, document: DocumentId) -> Result<Vec<(String, Vec<u8>)>> {
        self.reader
            .get()?
            .query(
                "SELECT peer_storage_id, state FROM sync_states WHERE document = $1",
                &[&&document.as_bytes()[..]],
            )?
            .into_iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    fn save_sync_states(&self, batch: &[SyncStateRecord]) -> Result<()> {
        let mut client = self.writer.get()?;
        let mut tx = client.transaction()?;
        let upsert = tx.prepare(
            "INSERT INTO sync_states (document, peer_storage_id, state) VALUES ($1, $2, $3)
             ON CONFLICT (document, peer_storage_id) DO UPDATE SET state = excluded.state",
        )?;
        for record in batch {
            tx.execute(
                &upsert,
                &[
                    &&record.document.as_bytes()[..],
                    &record.peer_storage_id,
                    &record.state,
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn peer_index(&self, peer_storage_id: &str) -> Result<Vec<(DocumentId, Vec<ChangeHash>)>> {
        let rows = self.reader.get()?.query(
            "SELECT d.id, d.heads FROM sync_states s JOIN documents d ON d.id = s.document
             WHERE s.peer_storage_id = $1",
            &[&peer_storage_id],
        )?;
        let mut index = Vec::with_capacity(rows.len());
        for row in rows {
            let id: Vec<u8> = row.try_get(0)?;
            let heads: Option<Vec<u8>> = row.try_get(1)?;
            let Ok(document) = DocumentId::from_slice(&id) else {
                continue;
            };
            let heads = match heads.as_deref().and_then(decode_heads) {
                Some(heads) => heads,
                None => match self.computed_heads(document)? {
                    Some(heads) => heads,
                    None => continue,
                },
            };
            index.push((document, heads));
        }
        Ok(index)
    }

    fn storage_id(&self) -> Result<String> {
        let mut client = self.writer.get()?;
        let fresh = DocumentId::random().to_string();
        client.execute(
            "INSERT INTO meta (key, value) VALUES ('storage_id', $1) ON CONFLICT DO NOTHING",
            &[&fresh],
        )?;
        Ok(client
            .query_one("SELECT value FROM meta WHERE key = 'storage_id'", &[])?
            .try_get(0)?)
    }

    fn document_count(&self) -> Result<u64> {
        let count: i64 = self
            .reader
            .get()?
            .query_one("SELECT count(*) FROM documents", &[])?
            .try_get(0)?;
        Ok(count as u64)
    }

    fn authenticate(&self, token: &str, now: i64) -> Result<Option<Grant>> {
        self.read(|db| accounts::authenticate(db, token, now))
    }

    fn revision(&self) -> Result<i64> {
        self.read(accounts::revision)
    }

    fn load_accounts(&self) -> Result<Accounts> {
        self.read(accounts::load)
    }

    fn document_records(&self) -> Result<Vec<(DocumentId, DocumentRecord)>> {
        let rows = self.reader.get()?.query(
            "SELECT id, kind, program, coach, mentee, creator, pairing FROM documents",
            &[],
        )?;
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            let id: Vec<u8> = row.try_get(0)?;
            if let Ok(id) = DocumentId::from_slice(&id) {
                records.push((id, record(&row)?));
            }
        }
        Ok(records)
    }

    fn document_record(&self, document: DocumentId) -> Result<Option<DocumentRecord>> {
        self.reader
            .get()?
            .query_opt(
                "SELECT id, kind, program, coach, mentee, creator, pairing FROM documents
                 WHERE id = $1",
                &[&&document.as_bytes()[..]],
            )?
            .map(|row| record(&row))
            .transpose()
    }

    fn watch(&self, sink: EventSink) -> Result<Option<Watch>> {
        let mut config = self.writer.config.clone();
        config.application_name("tandem-relay-watch");
        config.keepalives_idle(Duration::from_secs(30));
        let stop = Arc::new(AtomicBool::new(false));
        let origin = self.origin.clone();
        let stopping = stop.clone();
        std::thread::Builder::new()
            .name("tandem-watch".into())
            .spawn(move || run_watch(&config, &origin, &stopping, &sink))?;
        Ok(Some(Watch::new(stop)))
    }
}

impl PostgresStore {
    /// The heads of everything stored for `document`, computed from its chunks, and kept in
    /// `documents.heads` unless another commit moved the document meanwhile.
    fn computed_heads(&self, document: DocumentId) -> Result<Option<Vec<ChangeHash>>> {
        let id = &document.as_bytes()[..];
        let (version, bytes) = {
            let mut client = self.reader.get()?;
            // One snapshot for the version and the chunks, so they agree.
            let mut tx = client
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let Some(row) = tx.query_opt("SELECT version FROM documents WHERE id = $1", &[&id])?
            else {
                return Ok(None);
            };
            let version: i64 = row.try_get(0)?;
            let mut bytes = Vec::new();
            for row in tx.query(
                "SELECT bytes FROM chunks WHERE document = $1 ORDER BY seq",
                &[&id],
            )? {
                bytes.extend_from_slice(row.try_get::<_, &[u8]>(0)?);
            }
            tx.commit()?;
            (version, bytes)
        };
        let Ok(Ok(doc)) = std::panic::catch_unwind(|| automerge::Automerge::load(&bytes)) else {
            return Ok(None);
        };
        let heads = doc.get_heads();
        self.writer.get()?.execute(
            "UPDATE documents SET heads = $2 WHERE id = $1 AND heads IS NULL AND version = $3",
            &[&id, &encode_heads(&heads), &version],
        )?;
        Ok(Some(heads))
    }
}

fn record(row: &postgres::Row) -> Result<DocumentRecord> {
    let kind: String = row.try_get(1)?;
    Ok(DocumentRecord {
        kind: Kind::parse(&kind),
        program: row.try_get(2)?,
        coach: row.try_get(3)?,
        mentee: row.try_get(4)?,
        creator: row.try_get(5)?,
        pairing: row.try_get(6)?,
    })
}

/// The watch's thread: connect, `LISTEN`, forward notifications of other relays; on a lost
/// connection, connect again (and say so: notifications sent meanwhile are lost).
fn run_watch(config: &Config, origin: &str, stop: &AtomicBool, sink: &EventSink) {
    let mut failures = 0u32;
    while !stop.load(Ordering::Acquire) {
        let mut client = match config.connect(NoTls).and_then(|mut client| {
            client
                .batch_execute(&format!("LISTEN {CHANNEL}"))
                .map(|()| client)
        }) {
            Ok(client) => client,
            Err(e) => {
                failures += 1;
                tracing::warn!("watching the database for other relays' changes: {e}");
                // Back off up to 5 s; the stop flag is checked every tick.
                let wait = WATCH_TICK * failures.min(5);
                std::thread::sleep(wait);
                continue;
            }
        };
        failures = 0;
        tracing::info!("watching the database for other relays' changes");
        if !sink(StoreEvent::Listening) {
            return;
        }
        loop {
            if stop.load(Ordering::Acquire) {
                return;
            }
            use postgres::fallible_iterator::FallibleIterator;
            let next = client.notifications().timeout_iter(WATCH_TICK).next();
            match next {
                Ok(Some(notification)) => {
                    let Some(event) = parse_notice(notification.payload(), origin) else {
                        continue;
                    };
                    if !sink(event) {
                        return;
                    }
                }
                Ok(None) => {
                    if client.is_closed() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!("the database watch lost its connection: {e}");
                    break;
                }
            }
        }
    }
}

/// `<origin> <document> <seq>` of another relay, as an event; `None` for this relay's own
/// notices and for anything unreadable.
fn parse_notice(payload: &str, own_origin: &str) -> Option<StoreEvent> {
    let mut parts = payload.split(' ');
    let origin = parts.next()?;
    let document = DocumentId::parse(parts.next()?).ok()?;
    let seq = parts.next()?.parse().ok()?;
    (origin != own_origin).then_some(StoreEvent::Committed { document, seq })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_of_other_relays_are_events_and_our_own_are_not() {
        let document = DocumentId::random();
        assert_eq!(
            parse_notice(&format!("them {document} 42"), "us"),
            Some(StoreEvent::Committed { document, seq: 42 })
        );
        assert_eq!(parse_notice(&format!("us {document} 42"), "us"), None);
        assert_eq!(parse_notice("them garbage 1", "us"), None);
        assert_eq!(parse_notice("", "us"), None);
    }
}
