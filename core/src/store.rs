//! The device's durable SQLite store: document chunks, sync state, metadata and the query projection.
