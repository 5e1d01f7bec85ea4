//! Cold documents leave the relay's memory and come back from disk when a peer asks again; a
//! document with a change not yet committed, or a peer syncing it, stays.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use automerge::Automerge;
use automerge::sync::{self, SyncDoc};
use ciborium::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{
    InProcessRelay, RawClient, TIMEOUT, carrying_last_change, doc_with, field, get_str, http_get,
    metric, new_document_id, put,
};

/// The relay's documents in memory and evictions so far, from `/metrics`.
async fn memory_figures(addr: SocketAddr) -> (f64, f64) {
    let text = http_get(addr, "/metrics").await.body;
    (
        metric(&text, "tandem_relay_documents_in_memory"),
        metric(&text, "tandem_relay_evictions_total"),
    )
}

/// Waits (at most [`TIMEOUT`]) until the relay holds at most `in_memory` documents after at
/// least `evictions` evictions. The sweep runs on the relay's own timer, so this polls its
/// metrics: the event is a number changing in another process's view.
async fn until_evicted(addr: SocketAddr, in_memory: f64, evictions: f64) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (now_in_memory, now_evictions) = memory_figures(addr).await;
        if now_in_memory <= in_memory && now_evictions >= evictions {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {now_in_memory} documents in memory after {now_evictions} evictions"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Closes the websocket and waits for the relay's close.
async fn leave(mut client: RawClient) {
    client.send_raw(Message::Close(None)).await;
    client.expect_close().await;
}

/// A fresh client reads `document` from the relay.
async fn read(relay: &InProcessRelay, peer_id: &str, document: &str) -> Automerge {
    let (mut reader, _) = RawClient::join(&relay.url(), peer_id, "peerMetadata").await;
    let mut doc = Automerge::new();
    reader.sync_until_same_heads(document, &mut doc).await;
    leave(reader).await;
    doc
}

#[tokio::test]
async fn a_cold_document_is_dropped_from_memory_and_served_again_from_disk() {
    let relay = InProcessRelay::start_with(|c| c.evict_idle_secs = 0).await;
    let document = new_document_id();
    let (mut writer, _) = RawClient::join(&relay.url(), "writer", "peerMetadata").await;
    let mut written = doc_with("title", "Spring plan");
    writer.sync_until_same_heads(&document, &mut written).await;
    let (in_memory, _) = memory_figures(relay.addr).await;
    assert_eq!(in_memory, 1.0, "hot while the writer syncs it");
    leave(writer).await;
    until_evicted(relay.addr, 0.0, 1.0).await;

    // A reader: the relay loads the document again from disk and serves it.
    let (mut reader, _) = RawClient::join(&relay.url(), "reader", "peerMetadata").await;
    let mut read_back = Automerge::new();
    reader
        .sync_until_same_heads(&document, &mut read_back)
        .await;
    assert_eq!(get_str(&read_back, "title").as_deref(), Some("Spring plan"));
    assert_eq!(read_back.get_heads(), written.get_heads());

    // The writer comes back with a new change while the reader syncs the reloaded document.
    let (mut writer, _) = RawClient::join(&relay.url(), "writer", "peerMetadata").await;
    put(&mut written, "goal", "finish the essay");
    writer.sync_until_same_heads(&document, &mut written).await;
    reader
        .sync_until_same_heads(&document, &mut read_back)
        .await;
    assert_eq!(
        get_str(&read_back, "goal").as_deref(),
        Some("finish the essay")
    );
    leave(writer).await;
    leave(reader).await;

    // Dropped again, and what comes back from disk has both changes.
    until_evicted(relay.addr, 0.0, 2.0).await;
    let last = read(&relay, "late-reader", &document).await;
    assert_eq!(last.get_heads(), written.get_heads());
    assert_eq!(get_str(&last, "goal").as_deref(), Some("finish the essay"));
    relay.stop().await.unwrap();
}

#[tokio::test]
async fn a_change_sent_just_before_leaving_is_not_lost_to_eviction() {
    let relay = InProcessRelay::start_with(|c| c.evict_idle_secs = 0).await;
    let document = new_document_id();
    let (mut writer, _) = RawClient::join(&relay.url(), "writer", "peerMetadata").await;
    let mut written = doc_with("title", "Spring plan");
    writer.sync_until_same_heads(&document, &mut written).await;

    // A new change, and gone at once: the relay gets the change and the close together, and the
    // document is cold as soon as the change is committed; not before.
    leave(writer).await;
    until_evicted(relay.addr, 0.0, 1.0).await;

    // Back on a new connection: one exchange, so that automerge knows what the relay has and
    // puts the change itself in the next message.
    let (mut writer, _) = RawClient::join(&relay.url(), "writer-again", "peerMetadata").await;
    let mut state = sync::State::new();
    let hello = written
        .generate_sync_message(&mut state)
        .expect("a first message");
    let frame = writer.sync_message("sync", &document, hello.encode());
    writer.send(frame).await;
    let answer = writer.expect("sync").await;
    let data = field(&answer, "data").and_then(Value::as_bytes).unwrap();
    written
        .receive_sync_message(&mut state, sync::Message::decode(data).unwrap())
        .unwrap();
    put(&mut written, "goal", "sent while leaving");
    let message = carrying_last_change(&written, &mut state);
    assert_eq!(message.changes.len(), 1);
    let frame = writer.sync_message("sync", &document, message.encode());
    writer.send(frame).await;
    leave(writer).await;

    until_evicted(relay.addr, 0.0, 2.0).await;
    let read_back = read(&relay, "reader", &document).await;
    assert_eq!(read_back.get_heads(), written.get_heads());
    assert_eq!(
        get_str(&read_back, "goal").as_deref(),
        Some("sent while leaving")
    );
    relay.stop().await.unwrap();
}

#[tokio::test]
async fn over_the_memory_budget_cold_documents_go_at_once_and_synced_ones_stay() {
    let relay = InProcessRelay::start_with(|c| {
        c.evict_idle_secs = 3600;
        c.max_hot_documents = Some(1);
    })
    .await;
    let documents: Vec<String> = (0..3).map(|_| new_document_id()).collect();
    let (mut writer, _) = RawClient::join(&relay.url(), "writer", "peerMetadata").await;
    let mut docs = Vec::new();
    for (i, document) in documents.iter().enumerate() {
        let mut doc = doc_with("title", &format!("plan {i}"));
        writer.sync_until_same_heads(document, &mut doc).await;
        docs.push(doc);
    }
    // The writer still syncs all three: over the budget, but none of them is cold.
    let (in_memory, evictions) = memory_figures(relay.addr).await;
    assert_eq!((in_memory, evictions), (3.0, 0.0));
    leave(writer).await;
    // Cold now: two go to get down to the budget of one, long before the idle delay.
    until_evicted(relay.addr, 1.0, 2.0).await;
    for (i, document) in documents.iter().enumerate() {
        let read_back = read(&relay, &format!("reader-{i}"), document).await;
        assert_eq!(read_back.get_heads(), docs[i].get_heads());
        assert_eq!(
            get_str(&read_back, "title").as_deref(),
            Some(format!("plan {i}").as_str())
        );
    }
    relay.stop().await.unwrap();
}
