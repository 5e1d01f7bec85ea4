//! The device-facing repository: typed edits made durable in the local store.
