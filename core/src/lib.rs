//! Tandem's shared core: coaching documents as Automerge CRDTs, a durable SQLite store with a query
//! projection, and a sans-IO engine speaking the automerge-repo sync protocol.
#![forbid(unsafe_code)]

pub mod error;
pub mod ids;
pub mod model;

pub use error::{Error, Result};
pub use ids::{
    ActionItemId, CheckInId, DeviceId, DirectoryId, DocumentId, GoalId, MilestoneId, NotesId,
    PlanId, SessionId, UserId,
};

#[cfg(feature = "client")]
pub mod client;
pub mod device;
pub mod doc;
pub mod repo;
pub mod store;
pub mod sync;
