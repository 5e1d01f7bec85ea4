//! Accounts kept in the relay's database: programs, users and their roles, pairings, devices with
//! the Automerge actors they write with, and bearer tokens (stored only as SHA-256 hashes).
//!
//! The admin command line writes these tables; the relay reads them whole into an [`Accounts`]
//! snapshot, and again whenever the database's revision counter moves.

use std::collections::HashMap;
use std::fmt;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::store::sql::{Param, Sql, SqlRow};

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
fn bump(db: &mut dyn Sql) -> Result<()> {
    db.execute("UPDATE revision SET value = value + 1 WHERE id = 1", &[])?;
    Ok(())
}

pub fn revision(db: &mut dyn Sql) -> Result<i64> {
    db.query_one("SELECT value FROM revision WHERE id = 1", &[])?
        .int(0)
}

/// A stored device id: 16 bytes, or an error naming the column (never a made-up id).
fn device_id_column(row: &SqlRow, index: usize) -> Result<[u8; 16]> {
    let bytes = row.bytes(index)?;
    bytes.try_into().map_err(|bytes: Vec<u8>| {
        Error::Column(format!(
            "column {index}: a device id of {} bytes, not 16",
            bytes.len()
        ))
    })
}

/// Looks a presented token up by its hash. `None` for unknown, expired or revoked tokens.
pub fn authenticate(db: &mut dyn Sql, token: &str, now: i64) -> Result<Option<Grant>> {
    let hash = token_hash(token);
    let Some(row) = db.query_opt(
        "SELECT t.id, t.user_id, u.name, t.device, d.device_id, t.expires_at, t.revoked_at
         FROM tokens t JOIN users u ON u.id = t.user_id JOIN devices d ON d.id = t.device
         WHERE t.hash = ?1",
        &[Param::Bytes(&hash)],
    )?
    else {
        return Ok(None);
    };
    let grant = Grant {
        token: row.int(0)?,
        user: row.int(1)?,
        user_name: row.text(2)?,
        device: row.int(3)?,
        device_id: device_id_column(&row, 4)?,
        expires_at: row.int(5)?,
    };
    let revoked = row.maybe_int(6)?;
    Ok((revoked.is_none() && now < grant.expires_at).then_some(grant))
}

/// Reads every account table (in the caller's transaction, so they agree with each other).
pub fn load(db: &mut dyn Sql) -> Result<Accounts> {
    let mut accounts = Accounts {
        revision: revision(db)?,
        ..Accounts::default()
    };
    for row in db.query("SELECT id, name FROM programs", &[])? {
        accounts.programs.insert(row.int(0)?, row.text(1)?);
    }
    for row in db.query("SELECT id, name, role, program FROM users", &[])? {
        let id = row.int(0)?;
        accounts.users.insert(
            id,
            User {
                id,
                name: row.text(1)?,
                role: Role::parse(&row.text(2)?)?,
                program: row.maybe_int(3)?,
            },
        );
    }
    for row in db.query(
        "SELECT id, program, coach, mentee, starts_at, ends_at FROM pairings",
        &[],
    )? {
        accounts.pairings.push(Pairing {
            id: row.int(0)?,
            program: row.int(1)?,
            coach: row.int(2)?,
            mentee: row.int(3)?,
            starts_at: row.int(4)?,
            ends_at: row.maybe_int(5)?,
        });
    }
    for row in db.query(
        "SELECT id, device_id, user_id, name, bind_on_first_use FROM devices",
        &[],
    )? {
        let device = Device {
            id: row.int(0)?,
            device_id: device_id_column(&row, 1)?,
            user: row.int(2)?,
            name: row.text(3)?,
            bind_on_first_use: row.flag(4)?,
        };
        accounts.devices.insert(device.id, device);
    }
    for row in db.query("SELECT actor, device FROM device_actors", &[])? {
        accounts.actors.insert(row.bytes(0)?, row.int(1)?);
    }
    for row in db.query(
        "SELECT id, user_id, device, expires_at, revoked_at FROM tokens",
        &[],
    )? {
        let token = TokenState {
            id: row.int(0)?,
            user: row.int(1)?,
            device: row.int(2)?,
            expires_at: row.int(3)?,
            revoked_at: row.maybe_int(4)?,
        };
        accounts.tokens.insert(token.id, token);
    }
    Ok(accounts)
}

// ---- administration ----------------------------------------------------------------------------
//
// Each function runs inside the caller's transaction (`Database::transaction`): it commits if the
// function succeeds and rolls back if it fails.

fn program_id(db: &mut dyn Sql, name: &str) -> Result<i64> {
    db.query_opt(
        "SELECT id FROM programs WHERE name = ?1",
        &[Param::Text(name)],
    )?
    .ok_or_else(|| Error::Config(format!("no program named {name:?}")))?
    .int(0)
}

fn user(db: &mut dyn Sql, name: &str) -> Result<User> {
    let row = db
        .query_opt(
            "SELECT id, name, role, program FROM users WHERE name = ?1",
            &[Param::Text(name)],
        )?
        .ok_or_else(|| Error::Config(format!("no user named {name:?}")))?;
    Ok(User {
        id: row.int(0)?,
        name: row.text(1)?,
        role: Role::parse(&row.text(2)?)?,
        program: row.maybe_int(3)?,
    })
}

/// An insert that returns the new row's id, with a uniqueness conflict answered as "`what`
/// already exists".
fn insert(db: &mut dyn Sql, sql: &str, params: &[Param<'_>], what: &str) -> Result<i64> {
    match db.query_one(sql, params) {
        Ok(row) => row.int(0),
        Err(e) if e.is_constraint_violation() => {
            Err(Error::Config(format!("{what} already exists")))
        }
        Err(e) => Err(e),
    }
}

pub fn add_program(db: &mut dyn Sql, name: &str) -> Result<i64> {
    if name.trim().is_empty() {
        return Err(Error::Config("a program needs a name".into()));
    }
    let id = insert(
        db,
        "INSERT INTO programs (name, created_at) VALUES (?1, ?2) RETURNING id",
        &[Param::Text(name), Param::Int(now_millis())],
        &format!("program {name:?}"),
    )?;
    bump(db)?;
    Ok(id)
}

pub fn list_programs(db: &mut dyn Sql) -> Result<Vec<(i64, String)>> {
    db.query("SELECT id, name FROM programs ORDER BY name", &[])?
        .iter()
        .map(|row| Ok((row.int(0)?, row.text(1)?)))
        .collect()
}

pub fn add_user(db: &mut dyn Sql, name: &str, role: Role, program: Option<&str>) -> Result<i64> {
    if name.trim().is_empty() {
        return Err(Error::Config("a user needs a name".into()));
    }
    let program = match (role, program) {
        (Role::Admin, None) => None,
        (_, Some(program)) => Some(program_id(db, program)?),
        (_, None) => {
            return Err(Error::Config(format!(
                "a {role} belongs to a program (--program)"
            )));
        }
    };
    let id = insert(
        db,
        "INSERT INTO users (name, role, program, created_at) VALUES (?1, ?2, ?3, ?4) RETURNING id",
        &[
            Param::Text(name),
            Param::Text(role.as_str()),
            Param::MaybeInt(program),
            Param::Int(now_millis()),
        ],
        &format!("user {name:?}"),
    )?;
    bump(db)?;
    Ok(id)
}

/// (name, role, program name) of every user.
pub fn list_users(db: &mut dyn Sql) -> Result<Vec<(String, String, Option<String>)>> {
    db.query(
        "SELECT u.name, u.role, p.name FROM users u LEFT JOIN programs p ON p.id = u.program
         ORDER BY u.name",
        &[],
    )?
    .iter()
    .map(|row| Ok((row.text(0)?, row.text(1)?, row.maybe_text(2)?)))
    .collect()
}

/// Pairs a coach (or a coordinator acting as coach) with a mentee of the same program.
pub fn add_pairing(
    db: &mut dyn Sql,
    coach: &str,
    mentee: &str,
    starts_at: i64,
    ends_at: Option<i64>,
) -> Result<i64> {
    let coach = user(db, coach)?;
    let mentee = user(db, mentee)?;
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
    let id = db
        .query_one(
            "INSERT INTO pairings (program, coach, mentee, starts_at, ends_at)
             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
            &[
                Param::Int(program),
                Param::Int(coach.id),
                Param::Int(mentee.id),
                Param::Int(starts_at),
                Param::MaybeInt(ends_at),
            ],
        )?
        .int(0)?;
    bump(db)?;
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

pub fn list_pairings(db: &mut dyn Sql) -> Result<Vec<PairingRow>> {
    db.query(
        "SELECT pa.id, pr.name, c.name, m.name, pa.starts_at, pa.ends_at, pa.directory
         FROM pairings pa JOIN programs pr ON pr.id = pa.program
         JOIN users c ON c.id = pa.coach JOIN users m ON m.id = pa.mentee ORDER BY pa.id",
        &[],
    )?
    .iter()
    .map(|row| {
        Ok((
            row.int(0)?,
            row.text(1)?,
            row.text(2)?,
            row.text(3)?,
            row.int(4)?,
            row.maybe_int(5)?,
            row.maybe_bytes(6)?,
        ))
    })
    .collect()
}

/// Ends a pairing at `at`: the coach's access to the mentee's documents ends then.
pub fn end_pairing(db: &mut dyn Sql, pairing: i64, at: i64) -> Result<()> {
    let changed = db.execute(
        "UPDATE pairings SET ends_at = ?2 WHERE id = ?1 AND (ends_at IS NULL OR ends_at > ?2)",
        &[Param::Int(pairing), Param::Int(at)],
    )?;
    if changed == 0 {
        return Err(Error::Config(format!("no open pairing with id {pairing}")));
    }
    bump(db)
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
    db: &mut dyn Sql,
    user_name: &str,
    device_id: Option<[u8; 16]>,
    device_name: &str,
    expires_at: i64,
) -> Result<Issued> {
    let user = user(db, user_name)?;
    let now = now_millis();
    let add_device = |db: &mut dyn Sql, device_id: &[u8; 16], bind_on_first_use: bool| {
        db.query_one(
            "INSERT INTO devices (device_id, user_id, name, bind_on_first_use, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
            &[
                Param::Bytes(device_id),
                Param::Int(user.id),
                Param::Text(device_name),
                Param::Flag(bind_on_first_use),
                Param::Int(now),
            ],
        )?
        .int(0)
    };
    let (device, device_id) = match device_id {
        Some(device_id) => {
            let existing = db.query_opt(
                "SELECT id, user_id FROM devices WHERE device_id = ?1",
                &[Param::Bytes(&device_id)],
            )?;
            match existing {
                Some(row) if row.int(1)? == user.id => (row.int(0)?, device_id),
                Some(_) => {
                    return Err(Error::Config(format!(
                        "device {} belongs to another user",
                        hex(&device_id)
                    )));
                }
                None => {
                    let id = add_device(db, &device_id, false)?;
                    insert(
                        db,
                        "INSERT INTO device_actors (actor, device, bound_at) VALUES (?1, ?2, ?3)
                         RETURNING device",
                        &[Param::Bytes(&device_id), Param::Int(id), Param::Int(now)],
                        "a device with that actor",
                    )?;
                    (id, device_id)
                }
            }
        }
        None => {
            let device_id: [u8; 16] = rand::random();
            let id = add_device(db, &device_id, true)?;
            (id, device_id)
        }
    };
    let token = new_token();
    let token_id = db
        .query_one(
            "INSERT INTO tokens (hash, user_id, device, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
            &[
                Param::Bytes(&token_hash(&token)),
                Param::Int(user.id),
                Param::Int(device),
                Param::Int(now),
                Param::Int(expires_at),
            ],
        )?
        .int(0)?;
    bump(db)?;
    Ok(Issued {
        token,
        token_id,
        device_id,
        expires_at,
    })
}

/// A token as listed: id, user, device (hex), device name, created, expires, revoked.
pub type TokenRow = (i64, String, String, String, i64, i64, Option<i64>);

pub fn list_tokens(db: &mut dyn Sql) -> Result<Vec<TokenRow>> {
    db.query(
        "SELECT t.id, u.name, d.device_id, d.name, t.created_at, t.expires_at, t.revoked_at
         FROM tokens t JOIN users u ON u.id = t.user_id JOIN devices d ON d.id = t.device
         ORDER BY t.id",
        &[],
    )?
    .iter()
    .map(|row| {
        Ok((
            row.int(0)?,
            row.text(1)?,
            hex(&row.bytes(2)?),
            row.text(3)?,
            row.int(4)?,
            row.int(5)?,
            row.maybe_int(6)?,
        ))
    })
    .collect()
}

pub fn revoke_token(db: &mut dyn Sql, token: i64) -> Result<()> {
    let changed = db.execute(
        "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        &[Param::Int(token), Param::Int(now_millis())],
    )?;
    if changed == 0 {
        return Err(Error::Config(format!("no unrevoked token with id {token}")));
    }
    bump(db)
}

/// One audit row: when, document, user, device (hex), how many changes, their hashes.
pub type AuditRow = (i64, String, Option<String>, Option<String>, i64, String);

/// The audit, oldest first, optionally of one document.
pub fn list_audit(db: &mut dyn Sql, document: Option<&[u8]>) -> Result<Vec<AuditRow>> {
    let sql = "SELECT a.at, a.document, u.name, d.device_id, a.changes, a.hashes
               FROM audit a LEFT JOIN users u ON u.id = a.user_id
               LEFT JOIN devices d ON d.id = a.device";
    let rows = match document {
        Some(document) => db.query(
            &format!("{sql} WHERE a.document = ?1 ORDER BY a.seq"),
            &[Param::Bytes(document)],
        )?,
        None => db.query(&format!("{sql} ORDER BY a.seq"), &[])?,
    };
    rows.iter()
        .map(|row| {
            let document = row.bytes(1)?;
            let document = tandem_core::DocumentId::from_slice(&document)
                .map(|id| id.to_string())
                .unwrap_or_else(|_| hex(&document));
            Ok((
                row.int(0)?,
                document,
                row.maybe_text(2)?,
                row.maybe_bytes(3)?.map(|d| hex(&d)),
                row.int(4)?,
                row.text(5)?,
            ))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;
    use crate::store::sql::SqliteSql;

    #[test]
    fn a_token_authenticates_until_it_is_revoked_or_expires_and_only_its_hash_is_stored() {
        let store = SqliteStore::open_in_memory().unwrap();
        let conn = store.connection();
        let db = &mut SqliteSql(&conn);
        add_program(db, "north").unwrap();
        add_user(db, "ana", Role::Mentee, Some("north")).unwrap();
        let now = now_millis();
        let issued = issue_token(db, "ana", None, "web", now + 60_000).unwrap();
        let grant = authenticate(db, &issued.token, now).unwrap().unwrap();
        assert_eq!(grant.user_name, "ana");
        assert!(
            authenticate(db, &issued.token, now + 60_000)
                .unwrap()
                .is_none()
        );
        assert!(authenticate(db, "tandem_forged", now).unwrap().is_none());
        let stored: i64 = conn
            .query_row(
                "SELECT count(*) FROM tokens WHERE hash = ?1",
                [issued.token.as_bytes()],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(stored, 0, "the token itself is never stored");
        let before = revision(db).unwrap();
        revoke_token(db, issued.token_id).unwrap();
        assert!(revision(db).unwrap() > before);
        assert!(authenticate(db, &issued.token, now).unwrap().is_none());
    }

    #[test]
    fn a_damaged_device_id_is_an_error_not_another_device() {
        let store = SqliteStore::open_in_memory().unwrap();
        let conn = store.connection();
        let db = &mut SqliteSql(&conn);
        add_program(db, "north").unwrap();
        add_user(db, "ana", Role::Mentee, Some("north")).unwrap();
        let now = now_millis();
        let issued = issue_token(db, "ana", None, "web", now + 60_000).unwrap();
        conn.execute("UPDATE devices SET device_id = x'0102'", [])
            .unwrap();
        let error = authenticate(db, &issued.token, now).unwrap_err();
        assert!(error.to_string().contains("2 bytes, not 16"), "{error}");
        let error = load(db).unwrap_err();
        assert!(error.to_string().contains("2 bytes, not 16"), "{error}");
    }

    #[test]
    fn pairings_need_a_coach_and_a_mentee_of_one_program() {
        let store = SqliteStore::open_in_memory().unwrap();
        let conn = store.connection();
        let db = &mut SqliteSql(&conn);
        add_program(db, "north").unwrap();
        add_program(db, "south").unwrap();
        add_user(db, "ana", Role::Mentee, Some("north")).unwrap();
        add_user(db, "carl", Role::Coach, Some("north")).unwrap();
        add_user(db, "sam", Role::Coach, Some("south")).unwrap();
        assert!(add_user(db, "nobody", Role::Coach, None).is_err());
        assert!(add_pairing(db, "sam", "ana", 0, None).is_err());
        assert!(add_pairing(db, "ana", "carl", 0, None).is_err());
        let id = add_pairing(db, "carl", "ana", 0, None).unwrap();
        let accounts = load(db).unwrap();
        let (carl, ana) = (
            accounts.user_by_name("carl").unwrap().id,
            accounts.user_by_name("ana").unwrap().id,
        );
        let north = accounts.program_by_name("north").unwrap();
        assert!(accounts.active_pairing(north, carl, ana, 10));
        end_pairing(db, id, 5).unwrap();
        let accounts = load(db).unwrap();
        assert!(!accounts.active_pairing(north, carl, ana, 10));
    }
}
