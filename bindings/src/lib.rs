//! Tandem's mobile bindings: uniffi wrappers over `tandem-core` for Kotlin, Swift and Python.
//!
//! No logic lives here. [`Engine`] wraps the core's `Device` (its `SyncClient` while syncing); each method converts its
//! arguments, calls the core and converts the answer; [`ApiError`] is the one error the apps see.
//!
//! Typical workflow, as an app does it (shown in Rust; Kotlin and Swift read the same):
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use tandem_bindings::{Durability, Engine, EngineConfig, NewPlan, NewSession, SessionMode};
//!
//! # let dir = tempfile::tempdir().map_err(|e| tandem_bindings::ApiError::Other { reason: e.to_string() })?;
//! let engine = Engine::open(
//!     dir.path().join("tandem.db").display().to_string(),
//!     EngineConfig { user_id: "carla".into(), device_name: "Carla's phone".into(), durability: Durability::Full,
//!                   relay_url: None, token: None, encryption_key: None },
//! )?;
//! let plan = engine.create_plan(NewPlan {
//!     mentee: "ana".into(),
//!     coaches: vec!["carla".into()],
//!     program: "First-year success".into(),
//!     term: "Spring 2025".into(),
//!     strengths: vec![],
//!     challenges: vec![],
//!     learning_style: String::new(),
//! })?;
//! let session = engine.log_session(NewSession {
//!     plan: plan.clone(),
//!     coach: "carla".into(),
//!     mentee: "ana".into(),
//!     start: SystemTime::UNIX_EPOCH + Duration::from_secs(1_741_010_400), // 2025-03-03 14:00 UTC
//!     duration_minutes: 45,
//!     mode: SessionMode::InPerson,
//!     topics: vec!["time management".into()],
//!     notes: "Talked about the exam schedule.".into(),
//!     mood: Some(4),
//!     action_items: vec![],
//!     goals_discussed: vec![],
//!     follow_up: Some("2025-03-14".into()),
//! })?;
//! assert_eq!(engine.session(session)?.duration_minutes, 45);
//! # Ok::<(), tandem_bindings::ApiError>(())
//! ```

uniffi::setup_scaffolding!("tandem");

mod engine;
mod error;
mod observer;
mod records;
mod sync;

pub use engine::{Engine, EngineConfig};
pub use error::ApiError;
pub use observer::{ChangeOrigin, DocumentChange, DocumentObserver, SyncObserver};
pub use records::*;
pub use sync::{ConnectionState, FetchProgress, RemoteChange, SyncStatus};
