//! Tandem's relay: devices sync through it over the automerge-repo protocol. It authenticates
//! devices, persists changes before acknowledging them and fans them out to the other peers.
#![forbid(unsafe_code)]

pub mod error;
pub mod metrics;
pub mod store;

pub use error::{Error, Result};
