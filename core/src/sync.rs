//! The sans-IO automerge-repo sync engine: events in, effects out.
//!
//! [`SyncEngine`] speaks the automerge-repo network protocol, version "1" (one CBOR map per
//! websocket binary frame: `join`/`peer`/`error`, then `request`, `sync`, `doc-unavailable`,
//! `ephemeral`, `leave`), so the official JS `automerge-repo` and `samod` are peers. The device
//! (which dials) and the relay (which accepts) run this same engine; they differ only in
//! [`Role`] and in the [`AccessPolicy`] they plug in.
//!
//! The engine does no IO, reads no clock and spawns nothing. A driver calls a method for each
//! event (a connection opened, a frame arrived, a document was loaded, a persist committed, a
//! local edit) and then carries out the [`Effect`]s from [`SyncEngine::take_effects`]: send a
//! frame, close a connection, load a document, persist changes, save a sync state, tell the app
//! what changed.
//!
//! Two promises go beyond automerge-repo:
//! - **Nothing is acknowledged before it is durable.** Changes that arrive from a peer (or from a
//!   local edit) become an [`Effect::Persist`]; every outgoing message about that document, to
//!   every peer, waits until the driver calls [`SyncEngine::persisted`].
//! - **Sync state is persisted** per (document, peer storage id), so a reconnect resumes the
//!   exchange instead of starting it over.
//!
//! # Example: two peers converge in memory
//!
//! ```
//! use std::collections::HashMap;
//! use automerge::{ReadDoc, transaction::Transactable};
//! use tandem_core::DocumentId;
//! use tandem_core::sync::{Direction, Effect, EngineConfig, Role, StoredDocument, SyncEngine};
//!
//! let mut device = SyncEngine::new(EngineConfig::new("device", Role::Device));
//! let mut relay = SyncEngine::new(EngineConfig::new("relay", Role::Relay));
//! let mut relay_disk: HashMap<DocumentId, Vec<u8>> = HashMap::new();
//!
//! // The device creates a plan and edits it offline.
//! let plan = DocumentId::random();
//! device.create_document(plan, |doc| {
//!     doc.transact::<_, _, automerge::AutomergeError>(|tx| {
//!         tx.put(automerge::ROOT, "mentee", "Ana")?;
//!         Ok(())
//!     })
//! })?.map_err(|f| f.error)?;
//!
//! // Connect: the device dials, the relay accepts.
//! let on_device = device.connection_opened(Direction::Outgoing);
//! let on_relay = relay.connection_opened(Direction::Incoming);
//!
//! // Carry out effects until both sides are quiet. A real driver does this over a websocket
//! // and a database; here frames are handed across and "storage" is a map.
//! loop {
//!     let mut quiet = true;
//!     for effect in device.take_effects() {
//!         quiet = false;
//!         match effect {
//!             Effect::Send { frame, .. } => relay.frame_received(on_relay, &frame),
//!             Effect::Persist { ticket, .. } => device.persisted(ticket),
//!             _ => {}
//!         }
//!     }
//!     for effect in relay.take_effects() {
//!         quiet = false;
//!         match effect {
//!             Effect::Send { frame, .. } => device.frame_received(on_device, &frame),
//!             Effect::LoadDocument { document } => {
//!                 let bytes = relay_disk.get(&document).cloned();
//!                 relay.document_loaded(document, StoredDocument { bytes, sync_states: vec![] })?;
//!             }
//!             Effect::Persist { ticket, document, changes } => {
//!                 relay_disk.entry(document).or_default().extend(changes);
//!                 relay.persisted(ticket);
//!             }
//!             _ => {}
//!         }
//!     }
//!     if quiet {
//!         break;
//!     }
//! }
//!
//! let on_the_relay = relay.document(&plan).expect("the relay holds the plan");
//! let (mentee, _) = on_the_relay.get(automerge::ROOT, "mentee")?.expect("synced");
//! assert_eq!(mentee.as_str(), Some("Ana"));
//! assert!(relay_disk.contains_key(&plan), "and it is on the relay's disk");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod access;
mod config;
mod connection;
mod digest;
mod document;
mod effect;
mod engine;
pub(crate) mod fetch;
mod message;
mod peer;
mod peer_index;
mod sketch;

pub use access::{Access, AccessPolicy, AllowAll};
pub use config::{DEFAULT_PEER_INDEX_CACHE, EngineConfig, Limits, Role};
pub use connection::{ConnectionId, Direction};
pub use digest::DigestOutcomes;
pub use effect::{ChangedPaths, Effect, PersistTicket};
pub use engine::{StoredDocument, SyncEngine};
pub use fetch::FetchProgress;
pub use message::{
    DIGEST_MESSAGE_TYPE, DigestStep, FETCH_MESSAGE_TYPE, FetchStep, Message, PROTOCOL_VERSION,
};
pub use peer::{PeerId, PeerInfo, PeerMetadata, StorageId};

pub(crate) use connection::Connection;

#[cfg(test)]
mod harness;
#[cfg(test)]
mod tests;
