//! Who may read and write which document: the rules of `docs/access.md`, as the relay's
//! [`AccessPolicy`].
//!
//! Every document is recorded, when its first changes reach the relay, with its kind and the
//! people it concerns (program, coach, mentee), read from its content, and with its creator. A new
//! document is accepted only if its writer may write a document of that kind for those people, so
//! nobody can plant a "plan" for someone else's mentee. Decisions are made per message from that
//! record and the current accounts; nothing is cached, so an ended pairing or a revoked token
//! counts from the next message.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard};

use automerge::{Automerge, ReadDoc};
use tandem_core::DocumentId;
use tandem_core::doc::history::parse_commit_message;
use tandem_core::sync::{Access, AccessPolicy, ConnectionId, PeerInfo};

use crate::accounts::{Accounts, Grant, Role, now_millis};
use crate::auth::Identity;

/// What a document is, as far as access goes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Kind {
    Plan,
    Session,
    Notes,
    Directory,
    /// Not a Tandem document (no known root `type`): private to its creator.
    Other,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plan => "plan",
            Self::Session => "session",
            Self::Notes => "notes",
            Self::Directory => "directory",
            Self::Other => "other",
        }
    }

    pub fn parse(text: &str) -> Self {
        match text {
            "plan" => Self::Plan,
            "session" => Self::Session,
            "notes" => Self::Notes,
            "directory" => Self::Directory,
            _ => Self::Other,
        }
    }
}

/// What the relay remembers about a document, fixed when it first arrived.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DocumentRecord {
    pub kind: Kind,
    pub program: Option<i64>,
    pub coach: Option<i64>,
    pub mentee: Option<i64>,
    /// `None` for documents written anonymously (development) or stored before accounts existed.
    pub creator: Option<i64>,
    /// The pairing a session log, notes or directory belongs to; `None` for plans, untyped
    /// documents and documents recorded before pairings were recorded.
    pub pairing: Option<i64>,
}

/// What a user may do with a recorded document at `now`: the table of `docs/access.md`.
pub fn decide(accounts: &Accounts, record: &DocumentRecord, user: i64, now: i64) -> Access {
    let Some(who) = accounts.users.get(&user) else {
        return Access::None;
    };
    let coaching = |coach: i64| match (record.program, record.mentee) {
        (Some(program), Some(mentee)) => accounts.active_pairing(program, coach, mentee, now),
        _ => false,
    };
    // The document's own pairing, active, with `user` as its coach: a later pairing of the same
    // coach and mentee does not revive the notes or directory of an ended one.
    let coaching_its_pairing = |coach: i64| match record.pairing {
        Some(pairing) => accounts.coaches_in(pairing, coach, now),
        None => coaching(coach),
    };
    let is_mentee = record.mentee == Some(user);
    let coordinates =
        who.role == Role::Coordinator && who.program.is_some() && who.program == record.program;
    let read_if_coordinator = if coordinates {
        Access::Read
    } else {
        Access::None
    };
    match record.kind {
        Kind::Other => {
            if record.creator == Some(user) {
                Access::ReadWrite
            } else {
                Access::None
            }
        }
        // The mentee's own plan and session logs; any coach in an active pairing with the mentee.
        Kind::Plan | Kind::Session => {
            if is_mentee || coaching(user) {
                Access::ReadWrite
            } else {
                read_if_coordinator
            }
        }
        // The coach's private notes: that coach while the pairing is active; coordinators read.
        Kind::Notes => {
            if record.coach == Some(user) && coaching_its_pairing(user) {
                Access::ReadWrite
            } else {
                read_if_coordinator
            }
        }
        // The pairing's directory: its mentee, and its coach while the pairing is active.
        Kind::Directory => {
            if is_mentee || (record.coach == Some(user) && coaching_its_pairing(user)) {
                Access::ReadWrite
            } else {
                read_if_coordinator
            }
        }
    }
}

/// Reads what a new document claims to be, and decides whether `user` may create it. `None` when
/// it claims people or a program the relay does not know, or when `user` may not write it.
///
/// A session log, notes or directory belongs to the active pairing of the coach and mentee it
/// names. `listed_in` is the pairing whose directory (as the relay holds it) lists the document,
/// if one does: devices sync in any order, so the document may arrive before or after that entry,
/// but if both are known they must agree.
pub fn classify(
    accounts: &Accounts,
    doc: &Automerge,
    user: i64,
    now: i64,
    listed_in: Option<i64>,
) -> Option<DocumentRecord> {
    let text = |key: &str| root_string(doc, key);
    let kind = text("type").map_or(Kind::Other, |t| Kind::parse(&t));
    if kind == Kind::Other {
        return Some(DocumentRecord {
            kind,
            program: None,
            coach: None,
            mentee: None,
            creator: Some(user),
            pairing: None,
        });
    }
    let mentee = accounts.user_by_name(&text("mentee")?)?;
    if mentee.role != Role::Mentee {
        return None;
    }
    let program = mentee.program?;
    // A document that names its program must name the mentee's.
    if let Some(named) = text("program")
        && accounts.program_by_name(&named) != Some(program)
    {
        return None;
    }
    let (coach, pairing) = match kind {
        Kind::Plan => (None, None),
        _ => {
            let coach = accounts.user_by_name(&text("coach")?)?;
            let pairing = accounts.active_pairing_id(program, coach.id, mentee.id, now)?;
            if kind != Kind::Directory && listed_in.is_some_and(|listed| listed != pairing) {
                return None;
            }
            (Some(coach.id), Some(pairing))
        }
    };
    let record = DocumentRecord {
        kind,
        program: Some(program),
        coach,
        mentee: Some(mentee.id),
        creator: Some(user),
        pairing,
    };
    let may_write = match kind {
        Kind::Plan => decide(accounts, &record, user, now) == Access::ReadWrite,
        // Only the people of that pairing start its session logs and directory, and only the
        // coach the notes.
        Kind::Session | Kind::Directory => user == mentee.id || Some(user) == coach,
        Kind::Notes => Some(user) == coach,
        Kind::Other => true,
    };
    may_write.then_some(record)
}

/// One accepted sync message that brought changes, waiting for its commit to be audited.
#[derive(Clone, Debug)]
pub struct Written {
    pub document: DocumentId,
    pub user: Option<i64>,
    pub device: Option<i64>,
    pub hashes: Vec<automerge::ChangeHash>,
    /// The changes waited for a missing dependency when they were accepted: they stay in
    /// automerge's queue, and are audited when they are applied.
    pub waiting: bool,
}

/// How many changes one document may hold waiting for a missing dependency, counted from the
/// audit entries of accepted messages (automerge's queue has no bound of its own). A legitimate
/// peer leaves out one change at a time (a bloom-filter false positive) and sends it at once when
/// asked.
pub const MAX_WAITING_CHANGES: usize = 1024;

/// The state the policy decides from, shared by the hub and the engine's policy.
#[derive(Debug, Default)]
pub struct AccessState {
    pub accounts: Accounts,
    /// Every document the relay holds.
    pub documents: HashMap<DocumentId, DocumentRecord>,
    /// Documents whose first changes were accepted and are being committed.
    pub pending: HashMap<DocumentId, DocumentRecord>,
    pub connections: HashMap<ConnectionId, Identity>,
    /// Actors bound on first use, not yet committed.
    pub new_bindings: Vec<(Vec<u8>, i64)>,
    pub written: Vec<Written>,
    /// Which pairing's directory lists a document, by the first directory seen listing it: what
    /// a session log or notes arriving later is checked against.
    pub listed: HashMap<DocumentId, i64>,
    /// Connections that sent changes under an actor not bound to their device or with someone
    /// else's authorship trailers; the hub closes them.
    pub violations: Vec<(ConnectionId, Violation)>,
}

impl AccessState {
    fn record(&self, document: &DocumentId) -> Option<&DocumentRecord> {
        self.pending
            .get(document)
            .or_else(|| self.documents.get(document))
    }

    /// The access of a connection's peer; `None` for unknown connections.
    pub fn access(&self, connection: ConnectionId, document: &DocumentId) -> Access {
        match self.connections.get(&connection) {
            None => Access::None,
            Some(Identity::Anonymous) => Access::ReadWrite,
            Some(Identity::Device(grant)) => match self.record(document) {
                Some(record) => decide(&self.accounts, record, grant.user, now_millis()),
                // Nothing stored: the peer may offer it; `accept_changes` decides on creation.
                None => Access::ReadWrite,
            },
        }
    }

    /// Remembers which pairing a directory's entries belong to, once its changes are accepted.
    /// The first directory listing a document wins.
    pub fn note_listing(&mut self, document: &DocumentId, directory: &Automerge) {
        let pairing = match self.record(document) {
            Some(DocumentRecord {
                kind: Kind::Directory,
                pairing: Some(pairing),
                ..
            }) => *pairing,
            _ => return,
        };
        for listed in directory_entries(directory) {
            self.listed.entry(listed).or_insert(pairing);
        }
    }

    /// Whether the document is recorded as absent for everyone: not stored, not being stored.
    pub fn is_known(&self, document: &DocumentId) -> bool {
        self.record(document).is_some()
    }

    /// Whether the document is a plan, session log or notes: its record is settled, and no change
    /// can alter what access follows from it (a directory's listing can; an untyped document can
    /// be given a type).
    fn is_typed_content(&self, document: &DocumentId) -> bool {
        self.record(document)
            .is_some_and(|record| matches!(record.kind, Kind::Plan | Kind::Session | Kind::Notes))
    }

    fn waiting_entries<'a>(
        &'a self,
        document: &'a DocumentId,
    ) -> impl Iterator<Item = &'a Written> {
        self.written
            .iter()
            .filter(move |entry| entry.waiting && entry.document == *document)
    }

    /// How many accepted changes of the document wait for a missing dependency.
    fn waiting_changes(&self, document: &DocumentId) -> usize {
        self.waiting_entries(document)
            .map(|entry| entry.hashes.len())
            .sum()
    }

    fn is_waiting(&self, document: &DocumentId, hash: &automerge::ChangeHash) -> bool {
        self.waiting_entries(document)
            .any(|entry| entry.hashes.contains(hash))
    }
}

/// The relay's [`AccessPolicy`]: the engine's view of the shared [`AccessState`].
#[derive(Clone, Debug, Default)]
pub struct RelayPolicy {
    pub state: Arc<Mutex<AccessState>>,
}

impl RelayPolicy {
    pub fn lock(&self) -> MutexGuard<'_, AccessState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The changes a sync message would add to `current`, and `current` with them applied, or `None`
/// if some cannot be applied yet (missing dependencies: what a document would be with them
/// cannot be known) or are unreadable. A fork of the whole document: only for what
/// [`read_changes`] cannot decide, or when the result must be classified.
fn applied_changes(
    current: &Automerge,
    message: &automerge::sync::Message,
) -> Option<(Automerge, Vec<automerge::Change>)> {
    catch_unwind(AssertUnwindSafe(|| {
        let mut scratch = current.fork();
        for chunk in message.changes.iter() {
            scratch.load_incremental(chunk).ok()?;
        }
        if !scratch.get_missing_deps(&[]).is_empty() {
            return None;
        }
        let changes = scratch.get_changes(&current.get_heads());
        Some((scratch, changes))
    }))
    .ok()
    .flatten()
}

/// The changes a sync message would add to `current`, read from the message alone (the relay's
/// per-message cost: forking a hot document for every message was most of it).
struct ReadChanges {
    /// The message's changes `current` does not hold, each parsed and verified by automerge.
    changes: Vec<automerge::Change>,
    /// Some of them depend on a change that is neither in `current` nor in the message: automerge
    /// will keep them in its queue and ask for what is missing (`need`) instead of applying them.
    waiting: bool,
}

/// Reads a sync message's changes when every chunk is exactly one well-formed change (automerge
/// parses and verifies it); `None` otherwise (a chunk holding a whole document, as in a v2
/// message, or several changes, or an unreadable chunk), and the caller then asks
/// [`applied_changes`], which also refuses what is truly unreadable or missing.
fn read_changes(current: &Automerge, message: &automerge::sync::Message) -> Option<ReadChanges> {
    catch_unwind(AssertUnwindSafe(|| {
        let mut changes: Vec<automerge::Change> = Vec::with_capacity(message.changes.len());
        for chunk in message.changes.iter() {
            let change = automerge::Change::try_from(chunk).ok()?;
            let hash = change.hash();
            let known = current.get_change_meta_by_hash(&hash).is_some()
                || changes.iter().any(|c| c.hash() == hash);
            if !known {
                changes.push(change);
            }
        }
        let waiting = !changes.iter().all(|change| {
            change.deps().iter().all(|dep| {
                current.get_change_meta_by_hash(dep).is_some()
                    || changes.iter().any(|c| c.hash() == *dep)
            })
        });
        Some(ReadChanges { changes, waiting })
    }))
    .ok()
    .flatten()
}

/// Whether a change writes the root key `type`, the key a document's kind is read from.
fn sets_root_type(change: &automerge::Change) -> bool {
    change.decode().operations.iter().any(|op| {
        op.obj == automerge::legacy::ObjectId::Root
            && op.key == automerge::legacy::Key::Map("type".into())
    })
}

impl AccessPolicy for RelayPolicy {
    fn access(&self, peer: &PeerInfo, document: &DocumentId) -> Access {
        self.lock().access(peer.connection, document)
    }

    fn accept_changes(
        &self,
        peer: &PeerInfo,
        document: &DocumentId,
        current: &Automerge,
        message: &automerge::sync::Message,
    ) -> Access {
        let mut state = self.lock();
        let identity = state.connections.get(&peer.connection).cloned();
        // The changes are read from the message; the document with them applied (a fork) is
        // built only when it must be read: the message is not plain changes, or the document is
        // new, a directory, or untyped and being given its type.
        let mut applied = None;
        let (mut changes, waiting) = match read_changes(current, message) {
            Some(read) => (read.changes, read.waiting),
            None => match applied_changes(current, message) {
                Some((after, changes)) => {
                    applied = Some(after);
                    (changes, false)
                }
                None => {
                    tracing::warn!(connection = %peer.connection, %document, "refused changes that cannot be checked");
                    return Access::Read;
                }
            },
        };
        if waiting {
            // Changes that will wait for a dependency (the peer left it out, trusting a false
            // positive of our bloom filter) are checked now, from the changes alone, and
            // automerge asks for the missing one. A document whose kind or listing the changes
            // could alter can only be judged with them applied, so it is refused as before; and
            // what one document may hold waiting is bounded, since automerge's queue is not.
            // A change already waiting is not audited twice.
            changes.retain(|change| !state.is_waiting(document, &change.hash()));
            let held = state.waiting_changes(document);
            if held + changes.len() > MAX_WAITING_CHANGES || !state.is_typed_content(document) {
                tracing::warn!(connection = %peer.connection, %document, "refused changes that cannot be checked");
                return Access::Read;
            }
        }
        // A message may carry change chunks that hold no new change (automerge's v2 format);
        // with nothing new there is nothing to check, and nothing must be recorded (a record
        // would claim a free id for this peer).
        if changes.is_empty() {
            return Access::ReadWrite;
        }
        let build_after = |applied: &mut Option<Automerge>| -> Option<Automerge> {
            match applied.take() {
                Some(after) => Some(after),
                None => applied_changes(current, message).map(|(after, _)| after),
            }
        };
        let hashes: Vec<_> = changes.iter().map(|c| c.hash()).collect();
        let grant = match identity {
            None => return Access::None,
            Some(Identity::Anonymous) => {
                if !state.is_known(document) {
                    let Some(after) = build_after(&mut applied) else {
                        return Access::Read;
                    };
                    let record = classify_anonymous(&after);
                    state.pending.insert(*document, record);
                }
                state.written.push(Written {
                    document: *document,
                    user: None,
                    device: None,
                    hashes,
                    waiting,
                });
                return Access::ReadWrite;
            }
            Some(Identity::Device(grant)) => grant,
        };
        let Some(binding) =
            check_authorship(&mut state, peer.connection, document, &grant, &changes)
        else {
            return Access::Read;
        };
        // A document that was untyped when it arrived (the JS repo creates documents with an
        // empty first change) is classified once, when its creator first gives it a Tandem type.
        // Its kind can change only if a new change writes the root `type`, or edits the object
        // already there (a text, as the JS automerge writes strings).
        let untyped_by_writer = state
            .record(document)
            .is_some_and(|record| record.kind == Kind::Other && record.creator == Some(grant.user));
        let type_may_change = untyped_by_writer
            && (applied.is_some()
                || matches!(
                    current.get(automerge::ROOT, "type"),
                    Ok(Some((automerge::Value::Object(_), _)))
                )
                || changes.iter().any(sets_root_type));
        let is_known = state.is_known(document);
        let is_directory = state
            .record(document)
            .is_some_and(|record| record.kind == Kind::Directory);
        let after = if type_may_change || !is_known || is_directory {
            match build_after(&mut applied) {
                Some(after) => Some(after),
                None => {
                    tracing::warn!(connection = %peer.connection, %document, "refused changes that cannot be checked");
                    return Access::Read;
                }
            }
        } else {
            None
        };
        if let Some(after) = after.as_ref() {
            // What a refused classification answers: an untyped document's creator giving it a
            // type keeps reading it; a new document is refused exactly as an absent one is.
            let refused = if type_may_change && classify_anonymous(after).kind != Kind::Other {
                Some(Access::Read)
            } else if !is_known {
                Some(Access::None)
            } else {
                None
            };
            if let Some(refused) = refused {
                let listed = state.listed.get(document).copied();
                match classify(&state.accounts, after, grant.user, now_millis(), listed) {
                    Some(record) => {
                        state.pending.insert(*document, record);
                    }
                    None => return refused,
                }
            }
            state.note_listing(document, after);
        }
        for actor in binding {
            state.accounts.actors.insert(actor.clone(), grant.device);
            state.new_bindings.push((actor, grant.device));
        }
        state.written.push(Written {
            document: *document,
            user: Some(grant.user),
            device: Some(grant.device),
            hashes,
            waiting,
        });
        Access::ReadWrite
    }

    /// What `accept_changes` would answer for these changes under a free id, recording nothing
    /// (no record, no binding, no audit); a writer violation still closes the connection, as it
    /// would for an absent id.
    fn judge_creation(
        &self,
        peer: &PeerInfo,
        document: &DocumentId,
        message: &automerge::sync::Message,
    ) -> Access {
        let mut state = self.lock();
        let identity = state.connections.get(&peer.connection).cloned();
        let Some((after, changes)) = applied_changes(&Automerge::new(), message) else {
            tracing::warn!(connection = %peer.connection, %document, "refused changes that cannot be checked");
            return Access::Read;
        };
        let grant = match identity {
            None => return Access::None,
            Some(Identity::Anonymous) => return Access::ReadWrite,
            Some(Identity::Device(grant)) => grant,
        };
        if check_authorship(&mut state, peer.connection, document, &grant, &changes).is_none() {
            return Access::Read;
        }
        match classify(
            &state.accounts,
            &after,
            grant.user,
            now_millis(),
            state.listed.get(document).copied(),
        ) {
            Some(_) => Access::ReadWrite,
            None => Access::None,
        }
    }
}

/// Checks that `grant`'s connection may have written every change: each under an actor bound to
/// its device (an unbound actor is bound to a web device on first use: returned, to be bound if
/// the changes are accepted), and none whose `Tandem-User` / `Tandem-Device` trailers name
/// someone else. `None` (and the connection recorded as a violator, to be closed) otherwise.
fn check_authorship(
    state: &mut AccessState,
    connection: ConnectionId,
    document: &DocumentId,
    grant: &Grant,
    changes: &[automerge::Change],
) -> Option<Vec<Vec<u8>>> {
    let bind_on_first_use = state
        .accounts
        .devices
        .get(&grant.device)
        .is_some_and(|d| d.bind_on_first_use);
    let mut binding = Vec::new();
    for change in changes {
        let actor = change.actor_id().to_bytes().to_vec();
        let actor_ok = match state.accounts.actors.get(&actor) {
            Some(device) => *device == grant.device,
            None if binding.contains(&actor) => true,
            None if bind_on_first_use => {
                binding.push(actor);
                true
            }
            None => false,
        };
        if !actor_ok {
            tracing::warn!(
                %connection, %document, user = %grant.user_name, actor = %change.actor_id(),
                "refused changes under an actor not bound to the device"
            );
            state.violations.push((connection, Violation::Actor));
            return None;
        }
        // History shows these trailers as the change's author: they must name the writer. A web
        // device's id is the relay's own, unknown to its client, which may instead name the
        // actor it writes under (a Tandem device's id is its actor), since that actor is bound to
        // it. Changes without trailers (JS clients) carry no claim.
        let Some(message) = change.message() else {
            continue;
        };
        let claim = parse_commit_message(message);
        let wrong_user = claim
            .user
            .as_ref()
            .is_some_and(|user| user.as_str() != grant.user_name);
        let wrong_device = claim.device.is_some_and(|device| {
            let named = device.as_bytes();
            *named != grant.device_id
                && !(bind_on_first_use && named[..] == *change.actor_id().to_bytes())
        });
        if wrong_user || wrong_device {
            tracing::warn!(
                %connection, %document, user = %grant.user_name, change = %change.hash(),
                "refused changes whose authorship trailers name another user or device"
            );
            state.violations.push((connection, Violation::Trailers));
            return None;
        }
    }
    Some(binding)
}

/// Drops the audit entries of accepted messages whose changes their document, as `document`
/// returns it, does not hold, unless they were accepted waiting for a dependency and something
/// still waits in the document's queue. Entries of documents it does not return (not in memory)
/// are kept.
pub fn forget_unapplied<'a>(
    written: &mut Vec<Written>,
    document: impl Fn(&DocumentId) -> Option<&'a Automerge>,
) {
    written.retain(|entry| match document(&entry.document) {
        Some(doc) => {
            let taken = entry
                .hashes
                .iter()
                .all(|hash| doc.get_change_meta_by_hash(hash).is_some())
                || (entry.waiting && !doc.get_missing_deps(&[]).is_empty());
            if !taken {
                tracing::debug!(document = %entry.document, "accepted changes were not applied");
            }
            taken
        }
        None => true,
    });
}

/// Why a connection is closed for what it wrote.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Violation {
    /// A change under an actor not bound to the connection's device.
    Actor,
    /// A change whose `Tandem-User` / `Tandem-Device` trailers name someone else.
    Trailers,
}

impl Violation {
    /// The close frame's reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Actor => "changes under an actor not bound to this device",
            Self::Trailers => "changes whose authorship trailers name another user or device",
        }
    }
}

/// An anonymously written document (development relays only) has no creator; its kind is kept
/// for the record.
fn classify_anonymous(doc: &Automerge) -> DocumentRecord {
    let kind = root_string(doc, "type").map_or(Kind::Other, |t| Kind::parse(&t));
    DocumentRecord {
        kind,
        program: None,
        coach: None,
        mentee: None,
        creator: None,
        pairing: None,
    }
}

/// The documents a directory lists: the keys of its `entries` map that are document ids.
pub fn directory_entries(doc: &Automerge) -> Vec<DocumentId> {
    let Ok(Some((automerge::Value::Object(automerge::ObjType::Map), entries))) =
        doc.get(automerge::ROOT, "entries")
    else {
        return Vec::new();
    };
    doc.keys(&entries)
        .filter_map(|key| DocumentId::parse(&key).ok())
        .collect()
}

/// A string at the root: a scalar string as Tandem writes it, or a text object as the JS
/// automerge writes plain strings.
fn root_string(doc: &Automerge, key: &str) -> Option<String> {
    match doc.get(automerge::ROOT, key).ok()?? {
        (automerge::Value::Object(automerge::ObjType::Text), text) => doc.text(&text).ok(),
        (value, _) => value.into_string().ok(),
    }
}

#[cfg(test)]
mod tests {
    use automerge::sync::{ChunkList, Message, MessageVersion};
    use automerge::transaction::Transactable;
    use automerge::{Automerge, AutomergeError, ChangeHash, ROOT};

    use super::{applied_changes, read_changes, sets_root_type};

    fn edit(doc: &mut Automerge, key: &str) {
        doc.transact::<_, _, AutomergeError>(|tx| tx.put(ROOT, key, "x").map(|_| ()))
            .expect("transaction");
    }

    fn message(chunks: Vec<Vec<u8>>) -> Message {
        Message {
            heads: Vec::new(),
            need: Vec::new(),
            have: Vec::new(),
            changes: ChunkList::from(chunks),
            flags: None,
            version: MessageVersion::V1,
        }
    }

    fn sorted(changes: &[automerge::Change]) -> Vec<ChangeHash> {
        let mut hashes: Vec<_> = changes.iter().map(automerge::Change::hash).collect();
        hashes.sort();
        hashes
    }

    /// A document with two changes, and a copy two changes ahead of it (the second depending on
    /// the first).
    fn ahead() -> (Automerge, Automerge, [automerge::Change; 2]) {
        let mut relay = Automerge::new();
        edit(&mut relay, "a");
        edit(&mut relay, "b");
        let mut device = relay.fork();
        edit(&mut device, "c");
        let first = device.get_last_local_change().expect("change");
        edit(&mut device, "d");
        let second = device.get_last_local_change().expect("change");
        (relay, device, [first, second])
    }

    #[test]
    fn reading_a_message_finds_what_applying_it_finds() {
        let (relay, _, [first, second]) = ahead();
        let known = relay.get_changes(&[]).remove(0).raw_bytes().to_vec();
        // Out of order, with a change the relay holds and a duplicate.
        let sent = message(vec![
            second.raw_bytes().to_vec(),
            known,
            first.raw_bytes().to_vec(),
            second.raw_bytes().to_vec(),
        ]);
        let read = read_changes(&relay, &sent).expect("plain changes are read");
        assert!(!read.waiting);
        let (_, applied) = applied_changes(&relay, &sent).expect("they apply");
        assert_eq!(sorted(&read.changes), sorted(&applied));
        assert_eq!(sorted(&read.changes), sorted(&[first, second]));
    }

    #[test]
    fn a_change_missing_its_dependency_is_read_as_waiting_and_cannot_be_applied() {
        let (relay, _, [_, second]) = ahead();
        let sent = message(vec![second.raw_bytes().to_vec()]);
        let read = read_changes(&relay, &sent).expect("one plain change is read");
        assert!(read.waiting);
        assert_eq!(sorted(&read.changes), sorted(std::slice::from_ref(&second)));
        assert!(applied_changes(&relay, &sent).is_none());
    }

    #[test]
    fn a_whole_document_or_garbage_is_not_read_as_changes() {
        let (relay, device, [first, second]) = ahead();
        let whole = message(vec![device.save()]);
        assert!(read_changes(&relay, &whole).is_none());
        let (_, applied) = applied_changes(&relay, &whole).expect("a whole document applies");
        assert_eq!(sorted(&applied), sorted(&[first.clone(), second]));
        let mut joined = first.raw_bytes().to_vec();
        joined.extend_from_slice(&[0x85, 0x6f, 0x4a]);
        assert!(read_changes(&relay, &message(vec![joined])).is_none());
    }

    #[test]
    fn a_change_writing_the_root_type_is_recognised() {
        let mut doc = Automerge::new();
        edit(&mut doc, "title");
        assert!(!sets_root_type(
            &doc.get_last_local_change().expect("change")
        ));
        edit(&mut doc, "type");
        assert!(sets_root_type(
            &doc.get_last_local_change().expect("change")
        ));
    }

    #[test]
    fn audit_entries_of_changes_automerge_refused_are_forgotten() {
        // Two changes under one actor with the same sequence number: the policy reads both, but
        // automerge applies only the first it sees.
        let mut relay = Automerge::new().with_actor(automerge::ActorId::from(vec![1u8; 16]));
        edit(&mut relay, "a");
        let mut other = relay.clone();
        edit(&mut relay, "b");
        edit(&mut other, "c");
        let taken = relay.get_last_local_change().expect("change");
        let refused = other.get_last_local_change().expect("change");
        assert!(relay.clone().load_incremental(refused.raw_bytes()).is_err());
        let held = tandem_core::DocumentId::random();
        let elsewhere = tandem_core::DocumentId::random();
        let entry = |document, hash| super::Written {
            document,
            user: Some(1),
            device: Some(1),
            hashes: vec![hash],
            waiting: false,
        };
        let mut written = vec![
            entry(held, taken.hash()),
            entry(held, refused.hash()),
            entry(elsewhere, refused.hash()),
        ];
        super::forget_unapplied(&mut written, |document| {
            (*document == held).then_some(&relay)
        });
        let kept: Vec<_> = written.iter().map(|w| (w.document, w.hashes[0])).collect();
        assert_eq!(
            kept,
            vec![(held, taken.hash()), (elsewhere, refused.hash())]
        );
    }
}
