//! The relay's HTTP surface, served in process by [`tandem_server::Server`].

use crate::harness::{
    InProcessRelay, RawClient, doc_with, http_get, metric, new_document_id, text_field,
};

#[tokio::test]
async fn healthz_answers_ok() {
    let relay = InProcessRelay::start().await;
    let response = http_get(relay.addr, "/healthz").await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body.trim(), "ok");
    relay.stop().await.unwrap();
}

#[tokio::test]
async fn plain_http_on_the_sync_paths_is_told_to_upgrade() {
    let relay = InProcessRelay::start().await;
    for path in ["/", "/sync"] {
        let response = http_get(relay.addr, path).await;
        assert_eq!(response.status, 426, "{path}: {response:?}");
        assert!(
            response.body.contains("connect with a websocket"),
            "{path}: {}",
            response.body
        );
    }
    relay.stop().await.unwrap();
}

#[tokio::test]
async fn websocket_sync_works_on_the_root_and_on_sync() {
    let relay = InProcessRelay::start().await;
    for path in ["/", "/sync"] {
        let url = format!("{}{path}", relay.url());
        let (mut client, peer) = RawClient::join(&url, "path-tester", "peerMetadata").await;
        assert_eq!(text_field(&peer, "selectedProtocolVersion"), Some("1"));
        let document = new_document_id();
        let mut doc = doc_with("path", path);
        client.sync_until_same_heads(&document, &mut doc).await;
    }
    relay.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_export_connections_traffic_and_commit_latency_and_move_after_a_sync() {
    let relay = InProcessRelay::start().await;
    let before = http_get(relay.addr, "/metrics").await;
    assert_eq!(before.status, 200, "{before:?}");
    assert!(
        before
            .head
            .to_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{}",
        before.head
    );
    let before = before.body;
    for name in [
        "tandem_relay_connections",
        "tandem_relay_messages_in_total",
        "tandem_relay_messages_out_total",
        "tandem_relay_bytes_in_total",
        "tandem_relay_bytes_out_total",
        "tandem_relay_commits_total",
        "tandem_relay_commit_seconds_count",
    ] {
        metric(&before, name);
    }
    assert!(
        before.contains("tandem_relay_commit_seconds_bucket{le="),
        "{before}"
    );
    assert_eq!(metric(&before, "tandem_relay_connections"), 0.0);

    let (mut client, _) = RawClient::join(&relay.url(), "metrics-tester", "peerMetadata").await;
    let mut doc = doc_with("title", "Study plan");
    client
        .sync_until_same_heads(&new_document_id(), &mut doc)
        .await;

    let after = http_get(relay.addr, "/metrics").await.body;
    assert_eq!(metric(&after, "tandem_relay_connections"), 1.0, "{after}");
    for name in [
        "tandem_relay_messages_in_total",
        "tandem_relay_messages_out_total",
        "tandem_relay_bytes_in_total",
        "tandem_relay_bytes_out_total",
        "tandem_relay_commits_total",
        "tandem_relay_commit_seconds_count",
    ] {
        assert!(
            metric(&after, name) > metric(&before, name),
            "{name} did not grow:\n{after}"
        );
    }
    assert!(metric(&after, "tandem_relay_documents") >= 1.0, "{after}");
    assert!(
        metric(&after, "tandem_relay_documents_in_memory") >= 1.0,
        "{after}"
    );
    relay.stop().await.unwrap();
}
