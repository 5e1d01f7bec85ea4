//! Bad input against a real relay process: each connection that sends it is told why and closed,
//! or (for a broken sync message) only that document's session is reset, and the process keeps
//! serving everyone else.

use automerge::Automerge;
use ciborium::Value;
use tempfile::TempDir;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::block_on;
use crate::harness::{
    RawClient, RelayProcess, doc_with, get_str, http_get, message_type, new_document_id, node_json,
    put, text_field,
};

const MAX_FRAME: usize = 64 * 1024;

fn relay() -> (RelayProcess, TempDir) {
    let data = TempDir::new().unwrap();
    let relay = RelayProcess::start(data.path(), &["--max-frame-bytes", &MAX_FRAME.to_string()]);
    (relay, data)
}

/// The relay process is alive, answers `/healthz`, and a new client can write and read back a
/// document.
async fn assert_still_serving(relay: &RelayProcess) {
    let health = http_get(relay.addr, "/healthz").await;
    assert_eq!(health.status, 200, "{health:?}");
    let document = new_document_id();
    let (mut writer, _) = RawClient::join(&relay.url(), "late-writer", "peerMetadata").await;
    let mut written = doc_with("still", "serving");
    writer.sync_until_same_heads(&document, &mut written).await;
    let (mut reader, _) = RawClient::join(&relay.url(), "late-reader", "peerMetadata").await;
    let mut read = Automerge::new();
    reader.sync_until_same_heads(&document, &mut read).await;
    assert_eq!(get_str(&read, "still").as_deref(), Some("serving"));
}

#[test]
fn a_text_frame_closes_the_connection_with_a_reason() {
    let (mut relay, _data) = relay();
    block_on(async {
        let (mut client, _) = RawClient::join(&relay.url(), "texter", "peerMetadata").await;
        client
            .send_raw(Message::Text(r#"{"type":"join"}"#.into()))
            .await;
        let (_, close) = client.expect_close().await;
        let close = close.expect("a close frame");
        assert_eq!(close.code, CloseCode::Unsupported);
        assert!(close.reason.contains("binary"), "{close:?}");
        assert_still_serving(&relay).await;
    });
    assert!(relay.is_running());
}

#[test]
fn garbage_frames_get_an_error_message_and_a_close() {
    let (mut relay, _data) = relay();
    block_on(async {
        // Not CBOR at all, before the handshake.
        let mut client = RawClient::connect(&relay.url(), "garbage").await;
        client
            .send_raw(Message::Binary(vec![0xff, 0x00, 0x13, 0x37].into()))
            .await;
        let (before, close) = client.expect_close().await;
        assert_eq!(before.len(), 1, "{before:?}");
        assert_eq!(message_type(&before[0]), "error");
        assert!(text_field(&before[0], "message").is_some_and(|m| !m.is_empty()));
        assert!(close.is_some(), "the relay closes with a close frame");

        // Well-formed CBOR that is not a protocol message, after the handshake.
        let (mut client, _) = RawClient::join(&relay.url(), "confused", "peerMetadata").await;
        client.send(Value::Integer(42.into())).await;
        let (before, close) = client.expect_close().await;
        assert_eq!(message_type(&before[0]), "error", "{before:?}");
        assert_eq!(text_field(&before[0], "targetId"), Some("confused"));
        assert!(close.is_some());

        // A message of the wrong kind for the handshake.
        let mut client = RawClient::connect(&relay.url(), "impatient").await;
        let sync = client.sync_message("sync", &new_document_id(), vec![]);
        client.send(sync).await;
        let (before, _) = client.expect_close().await;
        assert_eq!(message_type(&before[0]), "error", "{before:?}");
        assert!(
            text_field(&before[0], "message").is_some_and(|m| m.contains("join")),
            "{before:?}"
        );

        assert_still_serving(&relay).await;
    });
    assert!(relay.is_running());
}

#[test]
fn a_frame_above_the_limit_closes_the_connection() {
    let (mut relay, _data) = relay();
    block_on(async {
        let (mut client, _) = RawClient::join(&relay.url(), "big", "peerMetadata").await;
        let huge = client.sync_message("sync", &new_document_id(), vec![0; MAX_FRAME + 1]);
        client.send(huge).await;
        // The relay says why before it closes: code 1009 (message too big) with a reason.
        let (before, close) = client.expect_close().await;
        assert!(
            before.iter().all(|m| message_type(m) == "error"),
            "{before:?}"
        );
        let close = close.expect("a close frame with a reason");
        assert_eq!(u16::from(close.code), 1009, "{close:?}");
        assert!(close.reason.contains("unreadable frame"), "{close:?}");
        assert_still_serving(&relay).await;
    });
    assert!(relay.is_running());
}

#[test]
fn a_broken_sync_message_resets_only_that_session() {
    let (mut relay, _data) = relay();
    let plan = new_document_id();
    let other = new_document_id();
    block_on(async {
        let (mut client, _) = RawClient::join(&relay.url(), "breaker", "peerMetadata").await;
        let mut plan_doc = doc_with("title", "before the garbage");
        client.sync_until_same_heads(&plan, &mut plan_doc).await;

        let garbage = client.sync_message("sync", &plan, b"not a sync message".to_vec());
        client.send(garbage).await;

        // The same connection still syncs another document…
        let mut other_doc = doc_with("title", "another document");
        client.sync_until_same_heads(&other, &mut other_doc).await;
        // …and the reset document too, from a fresh sync state, with a new edit.
        put(&mut plan_doc, "after", "the garbage");
        client.sync_until_same_heads(&plan, &mut plan_doc).await;

        // Another connection reads both.
        let (mut reader, _) = RawClient::join(&relay.url(), "reader", "peerMetadata").await;
        let mut read_plan = Automerge::new();
        reader.sync_until_same_heads(&plan, &mut read_plan).await;
        assert_eq!(get_str(&read_plan, "after").as_deref(), Some("the garbage"));
        let mut read_other = Automerge::new();
        reader.sync_until_same_heads(&other, &mut read_other).await;
        assert_eq!(
            get_str(&read_other, "title").as_deref(),
            Some("another document")
        );

        // The connection that sent garbage was never closed: it still answers a request.
        let unknown = new_document_id();
        let request = client.sync_message("request", &unknown, empty_sync_message());
        client.send(request).await;
        loop {
            let answer = client.expect_any().await;
            if message_type(&answer) == "doc-unavailable" {
                assert_eq!(text_field(&answer, "documentId"), Some(unknown.as_str()));
                break;
            }
        }
    });
    // Official JS clients sync yet another document through the same relay.
    let js = node_json("two-clients.mjs", &[&relay.url()]);
    assert_eq!(js["finalA"], js["finalB"], "{js}");
    block_on(assert_still_serving(&relay));
    assert!(relay.is_running());
}

fn empty_sync_message() -> Vec<u8> {
    use automerge::sync::SyncDoc;
    Automerge::new()
        .generate_sync_message(&mut automerge::sync::State::new())
        .expect("a first sync message")
        .encode()
}
