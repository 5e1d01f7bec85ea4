//! The relay as its users meet it: over real sockets, as a real process, and with the official JS
//! automerge-repo peers.
//!
//! - [`access`]: tokens, the roles × document kinds × operations matrix, revocation, ended
//!   pairings, actor binding and the audit, with raw clients and the JS client.
//! - [`http`]: `/healthz`, `/metrics`, the 426 answer to plain HTTP, both websocket paths.
//! - [`protocol`]: the automerge-repo protocol spoken by hand in CBOR.
//! - [`bad_input`]: what text frames, garbage, oversize frames and broken sync data get, and that
//!   the relay keeps serving everyone else afterwards.
//! - [`eviction`]: cold documents leave memory and are served again from disk; nothing
//!   uncommitted or still synced is dropped.
//! - [`process`]: SIGTERM, restarts, SIGKILL during a stream of edits, the idle timeout.
//! - [`js`]: two official JS clients syncing through the relay, and asking for a missing document.
//! - [`postgres`]: the store contract on SQLite and PostgreSQL, compaction with two writers, two
//!   relay processes sharing one PostgreSQL database (live changes, SIGKILL, revocation).
#![allow(clippy::unwrap_used)]

mod access;
mod bad_input;
mod eviction;
mod harness;
mod http;
mod js;
mod postgres;
mod process;
mod protocol;

/// Runs `future` on a fresh single-threaded runtime: for tests that mostly drive processes and
/// talk to them with a few async steps.
fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}
