//! `tandem-server admin`: programs, users, pairings and device tokens, written straight into the
//! relay's database, the SQLite file under `--data` (WAL: safe while a relay runs on it) or the
//! PostgreSQL database of `--database`. Running relays notice within a second.

use std::io::Write;
use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Subcommand};
use tandem_core::DocumentId;
use tandem_core::ids::DeviceId;

use crate::accounts::{self, Role, now_millis};
use crate::error::{Error, Result};
use crate::store::sql::Sql;
use crate::store::{Database, DatabaseLocation};

/// `tandem-server admin [--data DIR | --database URL] <what> <action>`.
#[derive(Debug, Args)]
pub struct AdminCommand {
    /// Folder of the relay's SQLite database (the relay's `--data`).
    #[arg(
        long,
        env = "TANDEM_DATA",
        default_value = "tandem-data",
        global = true
    )]
    pub data: PathBuf,

    /// The relay's PostgreSQL database (`postgres://user:password@host:port/database`), as given
    /// to `serve --database`; without it, the SQLite file under `--data`.
    #[arg(long, env = "TANDEM_DATABASE", global = true, hide_env_values = true)]
    pub database: Option<String>,

    #[command(subcommand)]
    pub what: Admin,
}

#[derive(Debug, Subcommand)]
pub enum Admin {
    /// Programs: the mentoring programs users belong to.
    #[command(subcommand)]
    Program(ProgramCommand),
    /// Users and their roles.
    #[command(subcommand)]
    User(UserCommand),
    /// Pairings of a coach and a mentee.
    #[command(subcommand)]
    Pairing(PairingCommand),
    /// Device tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Who changed which document when (oldest first).
    Audit {
        /// Only this document (`automerge:…` or its bs58 id).
        #[arg(long)]
        document: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProgramCommand {
    Add { name: String },
    List,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Adds a user; NAME is the user id written in documents (`mentee`, `coach`).
    Add {
        name: String,
        /// mentee, coach, coordinator or admin.
        #[arg(long)]
        role: String,
        /// The user's program (every role but admin has one).
        #[arg(long)]
        program: Option<String>,
    },
    List,
}

#[derive(Debug, Subcommand)]
pub enum PairingCommand {
    /// Pairs a coach (or a coordinator who coaches) with a mentee of the same program.
    Add {
        #[arg(long)]
        coach: String,
        #[arg(long)]
        mentee: String,
        /// Start (YYYY-MM-DD or RFC 3339); now by default.
        #[arg(long)]
        starts: Option<String>,
        /// End (YYYY-MM-DD or RFC 3339); open-ended by default.
        #[arg(long)]
        ends: Option<String>,
    },
    List,
    /// Ends a pairing now: the coach loses access to the mentee's documents.
    End {
        id: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issues a device token and prints it (only) on stdout. It is shown once; only its hash is
    /// kept.
    Issue {
        #[arg(long)]
        user: String,
        /// A Tandem device's id (32 hex digits), which is its Automerge actor. Without it, a web
        /// device is created whose actors are bound on first use.
        #[arg(long)]
        device: Option<String>,
        /// A name for the device, for listings.
        #[arg(long, default_value = "device")]
        name: String,
        /// Days until the token expires.
        #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
        /// Seconds until the token expires (overrides --days; for short-lived tokens).
        #[arg(long)]
        seconds: Option<u32>,
    },
    List,
    /// Revokes a token: connections using it are closed within a second.
    Revoke {
        id: i64,
    },
}

fn parse_instant(text: &str) -> Result<i64> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc).timestamp_millis());
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| Error::Config(format!("{text:?} is neither YYYY-MM-DD nor RFC 3339")))?;
    Ok(date
        .and_hms_opt(0, 0, 0)
        .map(|at| at.and_utc().timestamp_millis())
        .unwrap_or_default())
}

fn instant(millis: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(millis)
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| millis.to_string())
}

/// Runs one admin command, writing its answer to `out`.
pub fn run(command: AdminCommand, out: &mut dyn Write) -> Result<()> {
    let location = DatabaseLocation::new(command.database.as_deref(), &command.data)?;
    let database = Database::open(&location)?;
    // The answer is written only once the command's transaction has committed.
    let mut answer = Vec::new();
    database.transaction(|db| execute(command.what, db, &mut answer))?;
    out.write_all(&answer)?;
    Ok(())
}

fn execute(what: Admin, conn: &mut dyn Sql, out: &mut Vec<u8>) -> Result<()> {
    match what {
        Admin::Program(ProgramCommand::Add { name }) => {
            let id = accounts::add_program(conn, &name)?;
            writeln!(out, "program {id} {name}")?;
        }
        Admin::Program(ProgramCommand::List) => {
            for (id, name) in accounts::list_programs(conn)? {
                writeln!(out, "{id}\t{name}")?;
            }
        }
        Admin::User(UserCommand::Add {
            name,
            role,
            program,
        }) => {
            let role = Role::parse(&role)?;
            let id = accounts::add_user(conn, &name, role, program.as_deref())?;
            writeln!(out, "user {id} {name} ({role})")?;
        }
        Admin::User(UserCommand::List) => {
            for (name, role, program) in accounts::list_users(conn)? {
                writeln!(out, "{name}\t{role}\t{}", program.unwrap_or_default())?;
            }
        }
        Admin::Pairing(PairingCommand::Add {
            coach,
            mentee,
            starts,
            ends,
        }) => {
            let starts = starts.as_deref().map(parse_instant).transpose()?;
            let ends = ends.as_deref().map(parse_instant).transpose()?;
            let id =
                accounts::add_pairing(conn, &coach, &mentee, starts.unwrap_or(now_millis()), ends)?;
            writeln!(out, "pairing {id}: {coach} coaches {mentee}")?;
        }
        Admin::Pairing(PairingCommand::List) => {
            for (id, program, coach, mentee, starts, ends, directory) in
                accounts::list_pairings(conn)?
            {
                let ends = ends.map(instant).unwrap_or_else(|| "-".into());
                let starts = instant(starts);
                // The pairing's directory document, as an automerge URL, once it reached the relay.
                let directory = directory
                    .and_then(|bytes| DocumentId::from_slice(&bytes).ok())
                    .map_or_else(|| "-".to_owned(), |id| format!("automerge:{id}"));
                writeln!(
                    out,
                    "{id}\t{program}\t{coach}\t{mentee}\t{starts}\t{ends}\t{directory}"
                )?;
            }
        }
        Admin::Pairing(PairingCommand::End { id }) => {
            accounts::end_pairing(conn, id, now_millis())?;
            writeln!(out, "pairing {id} ended")?;
        }
        Admin::Token(TokenCommand::Issue {
            user,
            device,
            name,
            days,
            seconds,
        }) => {
            let device = device
                .as_deref()
                .map(|hex| {
                    DeviceId::parse_hex(hex)
                        .map(|id| *id.as_bytes())
                        .map_err(|e| Error::Config(format!("--device: {e}")))
                })
                .transpose()?;
            let lifetime = match seconds {
                Some(seconds) => i64::from(seconds) * 1000,
                None => i64::from(days) * 86_400_000,
            };
            let issued =
                accounts::issue_token(conn, &user, device, &name, now_millis() + lifetime)?;
            // The token alone on stdout, so scripts can capture it; the rest on stderr.
            writeln!(out, "{}", issued.token)?;
            eprintln!(
                "token {} for {user}, device {}, expires {}; it is shown only this once",
                issued.token_id,
                accounts::hex(&issued.device_id),
                instant(issued.expires_at)
            );
        }
        Admin::Token(TokenCommand::List) => {
            for (id, user, device, name, created, expires, revoked) in accounts::list_tokens(conn)?
            {
                let state = match revoked {
                    Some(at) => format!("revoked {}", instant(at)),
                    None if expires <= now_millis() => "expired".into(),
                    None => "valid".into(),
                };
                writeln!(
                    out,
                    "{id}\t{user}\t{device}\t{name}\tcreated {}\texpires {}\t{state}",
                    instant(created),
                    instant(expires)
                )?;
            }
        }
        Admin::Token(TokenCommand::Revoke { id }) => {
            accounts::revoke_token(conn, id)?;
            writeln!(out, "token {id} revoked")?;
        }
        Admin::Audit { document } => {
            let document = document
                .as_deref()
                .map(|text| {
                    DocumentId::parse(text.trim_start_matches("automerge:"))
                        .map_err(|e| Error::Config(format!("--document: {e}")))
                })
                .transpose()?;
            let filter = document.map(|d| d.as_bytes().to_vec());
            for (at, document, user, device, changes, hashes) in
                accounts::list_audit(conn, filter.as_deref())?
            {
                writeln!(
                    out,
                    "{}\t{document}\t{}\t{}\t{changes}\t{hashes}",
                    instant(at),
                    user.as_deref().unwrap_or("anonymous"),
                    device.as_deref().unwrap_or("-"),
                )?;
            }
        }
    }
    Ok(())
}
