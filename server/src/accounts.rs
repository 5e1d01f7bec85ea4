//! Accounts kept in the relay's database: programs, users and their roles, pairings, devices with
//! the Automerge actors they write with, and bearer tokens (stored only as SHA-256 hashes).
//!
//! The admin command line writes these tables; the relay reads them whole into an [`Accounts`]
//! snapshot, and again whenever the database's revision counter moves.

use std::collections::HashMap;
use std::fmt;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// What a user is in their program.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Role {
    Mentee,
    Coach,
    Coordinator,
    /// Administers the relay; has no access to documents.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mentee => "mentee",
            Self::Coach => "coach",
            Self::Coordinator => "coordinator",
            Self::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "mentee" => Ok(Self::Mentee),
            "coach" => Ok(Self::Coach),
            "coordinator" => Ok(Self::Coordinator),
            "admin" => Ok(Self::Admin),
            other => Err(Error::Config(format!(
                "unknown role {other:?} (mentee, coach, coordinator or admin)"
            ))),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub program: Option<i64>,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Pairing {
    pub id: i64,
    pub program: i64,
    pub coach: i64,
    pub mentee: i64,
    pub starts_at: i64,
    pub ends_at: Option<i64>,
}

impl Pairing {
    /// Started and not yet ended at `now` (unix milliseconds).
    pub fn is_active(&self, now: i64) -> bool {
        self.starts_at <= now && self.ends_at.is_none_or(|end| now < end)
    }
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Device {
    pub id: i64,
    pub device_id: [u8; 16],
    pub user: i64,
    pub name: String,
    pub bind_on_first_use: bool,
}

/// A token's state, without its hash.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TokenState {
    pub id: i64,
    pub user: i64,
    pub device: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

impl TokenState {
    pub fn is_valid(&self, now: i64) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

/// Everything the relay decides access from, read in one transaction.
#[derive(Clone, Debug, Default)]
pub struct Accounts {
    pub revision: i64,
    pub programs: HashMap<i64, String>,
    pub users: HashMap<i64, User>,
    pub pairings: Vec<Pairing>,
    pub devices: HashMap<i64, Device>,
    /// Automerge actor bytes → the device allowed to write with it.
    pub actors: HashMap<Vec<u8>, i64>,
    pub tokens: HashMap<i64, TokenState>,
}

impl Accounts {
    pub fn user_by_name(&self, name: &str) -> Option<&User> {
        self.users.values().find(|user| user.name == name)
    }

    pub fn program_by_name(&self, name: &str) -> Option<i64> {
        self.programs
            .iter()
            .find_map(|(id, program)| (program == name).then_some(*id))
    }

    /// Whether `coach` has an active pairing with `mentee` in `program` at `now`.
    pub fn active_pairing(&self, program: i64, coach: i64, mentee: i64, now: i64) -> bool {
        self.active_pairing_id(program, coach, mentee, now)
            .is_some()
    }

    /// The active pairing of `coach` with `mentee` in `program` at `now` (the latest started, if
    /// an administrator made several).
    pub fn active_pairing_id(
        &self,
        program: i64,
        coach: i64,
        mentee: i64,
        now: i64,
    ) -> Option<i64> {
        self.pairings
            .iter()
            .filter(|p| {
                p.program == program && p.coach == coach && p.mentee == mentee && p.is_active(now)
            })
            .max_by_key(|p| (p.starts_at, p.id))
            .map(|p| p.id)
    }

    /// Whether pairing `id` is active at `now` with `coach` as its coach.
    pub fn coaches_in(&self, id: i64, coach: i64, now: i64) -> bool {
        self.pairings
            .iter()
            .any(|p| p.id == id && p.coach == coach && p.is_active(now))
    }
}

/// What a valid token grants: who connects, from which device.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Grant {
    pub token: i64,
    pub user: i64,
    pub user_name: String,
    pub device: i64,
    pub device_id: [u8; 16],
    pub expires_at: i64,
}

pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A fresh bearer token: 32 random bytes, hex, with a recognisable prefix.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("tandem_{}", hex(&bytes))
}

/// The SHA-256 of a token's text, which is all the database keeps. Tokens are 32 random bytes,
/// so a plain hash suffices (no password stretching), and lookup by hash avoids comparing secrets.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bumps the revision counter that running relays poll.
fn bump(tx: &Transaction<'_>) -> Result<()> {
    tx.execute("UPDATE revision SET value = value + 1 WHERE id = 1", [])?;
    Ok(())
}

pub fn revision(conn: &Connection) -> Result<i64> {
    Ok(
        conn.query_row("SELECT value FROM revision WHERE id = 1", [], |row| {
            row.get(0)
        })?,
    )
}

/// A stored device id: 16 bytes, or an error naming the column (never a made-up id).
fn device_id_column(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<[u8; 16]> {
    let bytes: Vec<u8> = row.get(index)?;
    bytes.try_into().map_err(|bytes: Vec<u8>| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Blob,
            format!("a device id of {} bytes, not 16", bytes.len()).into(),
        )
    })
}

/// Looks a presented token up by its hash. `None` for unknown, expired or revoked tokens.
pub fn authenticate(conn: &Connection, token: &str, now: i64) -> Result<Option<Grant>> {
    let hash = token_hash(token);
    let grant = conn
        .query_row(
            "SELECT t.id, t.user_id, u.name, t.device, d.device_id, t.expires_at, t.revoked_at
             FROM tokens t JOIN users u ON u.id = t.user_id JOIN devices d ON d.id = t.device
             WHERE t.hash = ?1",
            [hash],
            |row| {
                let device_id = device_id_column(row, 4)?;
                let revoked: Option<i64> = row.get(6)?;
                Ok((
                    Grant {
                        token: row.get(0)?,
                        user: row.get(1)?,
                        user_name: row.get(2)?,
                        device: row.get(3)?,
                        device_id,
                        expires_at: row.get(5)?,
                    },
                    revoked,
                ))
            },
        )
        .optional()?;
    Ok(grant.and_then(|(grant, revoked)| {
        (revoked.is_none() && now < grant.expires_at).then_some(grant)
    }))
}

/// Reads every account table in one transaction.
pub fn load(conn: &mut Connection) -> Result<Accounts> {
    let tx = conn.transaction()?;
    let mut accounts = Accounts {
        revision: revision(&tx)?,
        ..Accounts::default()
    };
    {
        let mut statement = tx.prepare("SELECT id, name FROM programs")?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        for row in rows {
            let (id, name) = row?;
            accounts.programs.insert(id, name);
        }
        let mut statement = tx.prepare("SELECT id, name, role, program FROM users")?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get::<_, String>(2)?,
                row.get(3)?,
            ))
        })?;
        for row in rows {
            let (id, name, role, program) = row?;
            let role = Role::parse(&role)?;
            accounts.users.insert(
                id,
                User {
                    id,
                    name,
                    role,
                    program,
                },
            );
        }
        let mut statement =
            tx.prepare("SELECT id, program, coach, mentee, starts_at, ends_at FROM pairings")?;
        let rows = statement.query_map([], |row| {
            Ok(Pairing {
                id: row.get(0)?,
                program: row.get(1)?,
                coach: row.get(2)?,
                mentee: row.get(3)?,
                starts_at: row.get(4)?,
                ends_at: row.get(5)?,
            })
        })?;
        accounts.pairings = rows.collect::<rusqlite::Result<_>>()?;
        let mut statement =
            tx.prepare("SELECT id, device_id, user_id, name, bind_on_first_use FROM devices")?;
        let rows = statement.query_map([], |row| {
            Ok(Device {
                id: row.get(0)?,
                device_id: device_id_column(row, 1)?,
                user: row.get(2)?,
                name: row.get(3)?,
                bind_on_first_use: row.get(4)?,
            })
        })?;
        for device in rows {
            let device = device?;
            accounts.devices.insert(device.id, device);
        }
        let mut statement = tx.prepare("SELECT actor, device FROM device_actors")?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        for row in rows {
            let (actor, device) = row?;
            accounts.actors.insert(actor, device);
        }
        let mut statement =
            tx.prepare("SELECT id, user_id, device, expires_at, revoked_at FROM tokens")?;
        let rows = statement.query_map([], |row| {
            Ok(TokenState {
                id: row.get(0)?,
                user: row.get(1)?,
                device: row.get(2)?,
                expires_at: row.get(3)?,
                revoked_at: row.get(4)?,
            })
        })?;
        for token in rows {
            let token = token?;
            accounts.tokens.insert(token.id, token);
        }
    }
    tx.commit()?;
    Ok(accounts)
}

// ---- administration ----------------------------------------------------------------------------

fn program_id(conn: &Connection, name: &str) -> Result<i64> {
    conn.query_row("SELECT id FROM programs WHERE name = ?1", [name], |row| {
        row.get(0)
    })
    .optional()?
    .ok_or_else(|| Error::Config(format!("no program named {name:?}")))
}

fn user(conn: &Connection, name: &str) -> Result<User> {
    conn.query_row(
        "SELECT id, name, role, program FROM users WHERE name = ?1",
        [name],
        |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get::<_, String>(2)?,
                row.get(3)?,
            ))
        },
    )
    .optional()?
    .ok_or_else(|| Error::Config(format!("no user named {name:?}")))
    .and_then(|(id, name, role, program)| {
        Ok(User {
            id,
            name,
            role: Role::parse(&role)?,
            program,
        })
    })
}

fn refuse_duplicate(e: rusqlite::Error, what: String) -> Error {
    match e {
        rusqlite::Error::SqliteFailure(code, _)
            if code.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Error::Config(format!("{what} already exists"))
        }
        other => other.into(),
    }
}

pub fn add_program(conn: &mut Connection, name: &str) -> Result<i64> {
    if name.trim().is_empty() {
        return Err(Error::Config("a program needs a name".into()));
    }
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO programs (name, created_at) VALUES (?1, ?2)",
        params![name, now_millis()],
    )
    .map_err(|e| refuse_duplicate(e, format!("program {name:?}")))?;
    let id = tx.last_insert_rowid();
    bump(&tx)?;
    tx.commit()?;
    Ok(id)
}

pub fn list_programs(conn: &Connection) -> Result<Vec<(i64, String)>> {
    let mut statement = conn.prepare("SELECT id, name FROM programs ORDER BY name")?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn add_user(
    conn: &mut Connection,
    name: &str,
    role: Role,
    program: Option<&str>,
) -> Result<i64> {
    if name.trim().is_empty() {
        return Err(Error::Config("a user needs a name".into()));
    }
    let tx = conn.transaction()?;
    let program = match (role, program) {
        (Role::Admin, None) => None,
        (_, Some(program)) => Some(program_id(&tx, program)?),
        (_, None) => {
            return Err(Error::Config(format!(
                "a {role} belongs to a program (--program)"
            )));
        }
    };
    tx.execute(
        "INSERT INTO users (name, role, program, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![name, role.as_str(), program, now_millis()],
    )
    .map_err(|e| refuse_duplicate(e, format!("user {name:?}")))?;
    let id = tx.last_insert_rowid();
    bump(&tx)?;
    tx.commit()?;
    Ok(id)
}

/// (name, role, program name) of every user.
pub fn list_users(conn: &Connection) -> Result<Vec<(String, String, Option<String>)>> {
    let mut statement = conn.prepare(
        "SELECT u.name, u.role, p.name FROM users u LEFT JOIN programs p ON p.id = u.program
         ORDER BY u.name",
    )?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Pairs a coach (or a coordinator acting as coach) with a mentee of the same program.
pub fn add_pairing(
    conn: &mut Connection,
    coach: &str,
    mentee: &str,
    starts_at: i64,
    ends_at: Option<i64>,
) -> Result<i64> {
    let tx = conn.transaction()?;
    let coach = user(&tx, coach)?;
    let mentee = user(&tx, mentee)?;
    if !matches!(coach.role, Role::Coach | Role::Coordinator) {
        return Err(Error::Config(format!(
            "{} is a {}, not a coach",
            coach.name, coach.role
        )));
    }
    if mentee.role != Role::Mentee {
        return Err(Error::Config(format!(
            "{} is a {}, not a mentee",
            mentee.name, mentee.role
        )));
    }
    let program = match (coach.program, mentee.program) {
        (Some(a), Some(b)) if a == b => a,
        _ => {
            return Err(Error::Config(format!(
                "{} and {} are not in the same program",
                coach.name, mentee.name
            )));
        }
    };
    tx.execute(
        "INSERT INTO pairings (program, coach, mentee, starts_at, ends_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![program, coach.id, mentee.id, starts_at, ends_at],
    )?;
    let id = tx.last_insert_rowid();
    bump(&tx)?;
    tx.commit()?;
    Ok(id)
}

/// A pairing as listed: id, program, coach, mentee, start, end, directory document id.
pub type PairingRow = (
    i64,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<Vec<u8>>,
);

pub fn list_pairings(conn: &Connection) -> Result<Vec<PairingRow>> {
    let mut statement = conn.prepare(
        "SELECT pa.id, pr.name, c.name, m.name, pa.starts_at, pa.ends_at, pa.directory
         FROM pairings pa JOIN programs pr ON pr.id = pa.program
         JOIN users c ON c.id = pa.coach JOIN users m ON m.id = pa.mentee ORDER BY pa.id",
    )?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
            row.get(5)?,
            row.get(6)?,
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Ends a pairing at `at`: the coach's access to the mentee's documents ends then.
pub fn end_pairing(conn: &mut Connection, pairing: i64, at: i64) -> Result<()> {
    let tx = conn.transaction()?;
    let changed = tx.execute(
        "UPDATE pairings SET ends_at = ?2 WHERE id = ?1 AND (ends_at IS NULL OR ends_at > ?2)",
        params![pairing, at],
    )?;
    if changed == 0 {
        return Err(Error::Config(format!("no open pairing with id {pairing}")));
    }
    bump(&tx)?;
    tx.commit()?;
    Ok(())
}

/// What `issue_token` made.
#[derive(Clone, Debug)]
pub struct Issued {
    pub token: String,
    pub token_id: i64,
    pub device_id: [u8; 16],
    pub expires_at: i64,
}

/// Issues a token for `user_name`. With `device_id` (a Tandem device, whose Automerge actor is its
/// id) the device is registered (or reused if it is already the user's) and may write only with
/// that actor. Without it a new web device is made, whose actors are bound on first use.
pub fn issue_token(
    conn: &mut Connection,
    user_name: &str,
    device_id: Option<[u8; 16]>,
    device_name: &str,
    expires_at: i64,
) -> Result<Issued> {
    let tx = conn.transaction()?;
    let user = user(&tx, user_name)?;
    let now = now_millis();
    let (device, device_id) = match device_id {
        Some(device_id) => {
            let existing: Option<(i64, i64)> = tx
                .query_row(
                    "SELECT id, user_id FROM devices WHERE device_id = ?1",
                    [&device_id[..]],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            match existing {
                Some((id, owner)) if owner == user.id => (id, device_id),
                Some(_) => {
                    return Err(Error::Config(format!(
                        "device {} belongs to another user",
                        hex(&device_id)
                    )));
                }
                None => {
                    tx.execute(
                        "INSERT INTO devices (device_id, user_id, name, bind_on_first_use,
                         created_at) VALUES (?1, ?2, ?3, 0, ?4)",
                        params![&device_id[..], user.id, device_name, now],
                    )?;
                    let id = tx.last_insert_rowid();
                    tx.execute(
                        "INSERT INTO device_actors (actor, device, bound_at) VALUES (?1, ?2, ?3)",
                        params![&device_id[..], id, now],
                    )
                    .map_err(|e| refuse_duplicate(e, "a device with that actor".to_owned()))?;
                    (id, device_id)
                }
            }
        }
        None => {
            let device_id: [u8; 16] = rand::random();
            tx.execute(
                "INSERT INTO devices (device_id, user_id, name, bind_on_first_use, created_at)
                 VALUES (?1, ?2, ?3, 1, ?4)",
                params![&device_id[..], user.id, device_name, now],
            )?;
            (tx.last_insert_rowid(), device_id)
        }
    };
    let token = new_token();
    tx.execute(
        "INSERT INTO tokens (hash, user_id, device, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![token_hash(&token), user.id, device, now, expires_at],
    )?;
    let token_id = tx.last_insert_rowid();
    bump(&tx)?;
    tx.commit()?;
    Ok(Issued {
        token,
        token_id,
        device_id,
        expires_at,
    })
}

/// A token as listed: id, user, device (hex), device name, created, expires, revoked.
pub type TokenRow = (i64, String, String, String, i64, i64, Option<i64>);

pub fn list_tokens(conn: &Connection) -> Result<Vec<TokenRow>> {
    let mut statement = conn.prepare(
        "SELECT t.id, u.name, d.device_id, d.name, t.created_at, t.expires_at, t.revoked_at
         FROM tokens t JOIN users u ON u.id = t.user_id JOIN devices d ON d.id = t.device
         ORDER BY t.id",
    )?;
    let rows = statement.query_map([], |row| {
        let device: Vec<u8> = row.get(2)?;
        Ok((
            row.get(0)?,
            row.get(1)?,
            hex(&device),
            row.get(3)?,
            row.get(4)?,
            row.get(5)?,
            row.get(6)?,
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn revoke_token(conn: &mut Connection, token: i64) -> Result<()> {
    let tx = conn.transaction()?;
    let changed = tx.execute(
        "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        params![token, now_millis()],
    )?;
    if changed == 0 {
        return Err(Error::Config(format!("no unrevoked token with id {token}")));
    }
    bump(&tx)?;
    tx.commit()?;
    Ok(())
}

/// One audit row: when, document, user, device (hex), how many changes, their hashes.
pub type AuditRow = (i64, String, Option<String>, Option<String>, i64, String);

/// The audit, oldest first, optionally of one document.
pub fn list_audit(conn: &Connection, document: Option<&[u8]>) -> Result<Vec<AuditRow>> {
    let mut statement = conn.prepare(
        "SELECT a.at, a.document, u.name, d.device_id, a.changes, a.hashes
         FROM audit a LEFT JOIN users u ON u.id = a.user_id LEFT JOIN devices d ON d.id = a.device
         WHERE ?1 IS NULL OR a.document = ?1 ORDER BY a.seq",
    )?;
    let rows = statement.query_map([document], |row| {
        let document: Vec<u8> = row.get(1)?;
        let document = tandem_core::DocumentId::from_slice(&document)
            .map(|id| id.to_string())
            .unwrap_or_else(|_| hex(&document));
        let device: Option<Vec<u8>> = row.get(3)?;
        Ok((
            row.get(0)?,
            document,
            row.get(2)?,
            device.map(|d| hex(&d)),
            row.get(4)?,
            row.get(5)?,
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    #[test]
    fn a_token_authenticates_until_it_is_revoked_or_expires_and_only_its_hash_is_stored() {
        let store = SqliteStore::open_in_memory().unwrap();
        let mut conn = store.connection();
        add_program(&mut conn, "north").unwrap();
        add_user(&mut conn, "ana", Role::Mentee, Some("north")).unwrap();
        let now = now_millis();
        let issued = issue_token(&mut conn, "ana", None, "web", now + 60_000).unwrap();
        let grant = authenticate(&conn, &issued.token, now).unwrap().unwrap();
        assert_eq!(grant.user_name, "ana");
        assert!(
            authenticate(&conn, &issued.token, now + 60_000)
                .unwrap()
                .is_none()
        );
        assert!(authenticate(&conn, "tandem_forged", now).unwrap().is_none());
        let stored: i64 = conn
            .query_row(
                "SELECT count(*) FROM tokens WHERE hash = ?1",
                [issued.token.as_bytes()],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(stored, 0, "the token itself is never stored");
        let before = revision(&conn).unwrap();
        revoke_token(&mut conn, issued.token_id).unwrap();
        assert!(revision(&conn).unwrap() > before);
        assert!(authenticate(&conn, &issued.token, now).unwrap().is_none());
    }

    #[test]
    fn a_damaged_device_id_is_an_error_not_another_device() {
        let store = SqliteStore::open_in_memory().unwrap();
        let mut conn = store.connection();
        add_program(&mut conn, "north").unwrap();
        add_user(&mut conn, "ana", Role::Mentee, Some("north")).unwrap();
        let now = now_millis();
        let issued = issue_token(&mut conn, "ana", None, "web", now + 60_000).unwrap();
        conn.execute("UPDATE devices SET device_id = x'0102'", [])
            .unwrap();
        let error = authenticate(&conn, &issued.token, now).unwrap_err();
        assert!(error.to_string().contains("2 bytes, not 16"), "{error}");
        let error = load(&mut conn).unwrap_err();
        assert!(error.to_string().contains("2 bytes, not 16"), "{error}");
    }

    #[test]
    fn pairings_need_a_coach_and_a_mentee_of_one_program() {
        let store = SqliteStore::open_in_memory().unwrap();
        let mut conn = store.connection();
        add_program(&mut conn, "north").unwrap();
        add_program(&mut conn, "south").unwrap();
        add_user(&mut conn, "ana", Role::Mentee, Some("north")).unwrap();
        add_user(&mut conn, "carl", Role::Coach, Some("north")).unwrap();
        add_user(&mut conn, "sam", Role::Coach, Some("south")).unwrap();
        assert!(add_user(&mut conn, "nobody", Role::Coach, None).is_err());
        assert!(add_pairing(&mut conn, "sam", "ana", 0, None).is_err());
        assert!(add_pairing(&mut conn, "ana", "carl", 0, None).is_err());
        let id = add_pairing(&mut conn, "carl", "ana", 0, None).unwrap();
        let accounts = load(&mut conn).unwrap();
        let (carl, ana) = (
            accounts.user_by_name("carl").unwrap().id,
            accounts.user_by_name("ana").unwrap().id,
        );
        let north = accounts.program_by_name("north").unwrap();
        assert!(accounts.active_pairing(north, carl, ana, 10));
        end_pairing(&mut conn, id, 5).unwrap();
        let accounts = load(&mut conn).unwrap();
        assert!(!accounts.active_pairing(north, carl, ana, 10));
    }
}
