//! The relay as a process: graceful shutdown on SIGTERM, durability across restarts and across
//! SIGKILL, and the idle timeout.

use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::block_on;
use crate::harness::{NodeProcess, RawClient, RelayProcess, node_json};

#[test]
fn sigterm_closes_connected_clients_and_exits_zero() {
    let data = TempDir::new().unwrap();
    let mut relay = RelayProcess::start(data.path(), &[]);
    block_on(async {
        let (mut client, _) = RawClient::join(&relay.url(), "stayer", "peerMetadata").await;
        let started = Instant::now();
        relay.terminate();
        let (_, close) = client.expect_close().await;
        let close = close.expect("a close frame");
        assert_eq!(close.code, CloseCode::Away, "{close:?}");
        assert!(close.reason.contains("shutting down"), "{close:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    });
    let status = relay.wait_for_exit(Duration::from_secs(5));
    assert!(status.success(), "the relay exited with {status}");
}

#[test]
fn a_document_written_by_a_js_client_survives_a_restart() {
    let data = TempDir::new().unwrap();
    let mut relay = RelayProcess::start(data.path(), &[]);
    let content = r#"{"mentee":"Ana","goals":["Pass calculus","Read weekly"],"term":"Fall 2026"}"#;
    let written = node_json("write.mjs", &[&relay.url(), content]);
    let url = written["url"].as_str().unwrap().to_owned();
    relay.terminate();
    let status = relay.wait_for_exit(Duration::from_secs(10));
    assert!(status.success(), "the relay exited with {status}");

    let relay = RelayProcess::start(data.path(), &[]);
    let read = node_json("read.mjs", &[&relay.url(), &url]);
    let expected: serde_json::Value = serde_json::from_str(content).unwrap();
    assert_eq!(read["doc"], expected, "{read}");
}

/// Client A appends 1, 2, 3, … to a document through the relay; client B, also through the relay,
/// reports the highest edit it has seen. The relay passes a change on only after committing it,
/// so everything B saw was acknowledged. Kill -9 the relay at a random point of the stream,
/// restart it on the same data, and a fresh client C must find at least every edit B saw, in
/// order, with no gaps.
#[test]
fn every_acknowledged_edit_survives_sigkill() {
    const ROUNDS: usize = 4;
    let data = TempDir::new().unwrap();
    let random = RandomState::new();
    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        // Kill after B has seen between 1 and 40 edits, while A keeps writing.
        let kill_after = 1 + random.hash_one(round) % 40;
        let mut relay = RelayProcess::start(data.path(), &[]);
        let mut writer = NodeProcess::spawn("edits.mjs", &[&relay.url()]);
        let url = writer.next_line()["url"].as_str().unwrap().to_owned();
        let mut seen = 0;
        while seen < kill_after {
            let line = writer.next_line();
            if let Some(n) = line["seen"].as_u64() {
                seen = seen.max(n);
            }
        }
        relay.kill_hard();
        // Everything B printed, even after the kill, came through the relay before it died.
        for line in writer.kill_and_drain() {
            if let Some(n) = line["seen"].as_u64() {
                seen = seen.max(n);
            }
        }
        drop(relay);

        let relay = RelayProcess::start(data.path(), &[]);
        let read = node_json("read.mjs", &[&relay.url(), &url]);
        let edits: Vec<u64> = read["doc"]["edits"]
            .as_array()
            .unwrap_or_else(|| panic!("round {round}: document lost: {read}"))
            .iter()
            .map(|e| e.as_u64().unwrap())
            .collect();
        let expected: Vec<u64> = (1..=edits.len() as u64).collect();
        assert_eq!(
            edits, expected,
            "round {round}: edits out of order or with gaps"
        );
        assert!(
            edits.len() as u64 >= seen,
            "round {round}: the relay acknowledged edit {seen} but recovered only {} edits",
            edits.len()
        );
        rounds.push(format!("acknowledged {seen}, recovered {}", edits.len()));
    }
    eprintln!("SIGKILL rounds: {rounds:?}");
}

#[test]
fn an_idle_connection_is_closed() {
    let data = TempDir::new().unwrap();
    let mut relay = RelayProcess::start(data.path(), &["--idle-timeout-secs", "1"]);
    block_on(async {
        let (mut client, _) = RawClient::join(&relay.url(), "sleeper", "peerMetadata").await;
        let started = Instant::now();
        let (_, close) = client.expect_close().await;
        let close = close.expect("a close frame");
        assert!(close.reason.contains("idle"), "{close:?}");
        assert!(started.elapsed() >= Duration::from_millis(900));
    });
    assert!(relay.is_running());
}
