//! The automerge-repo protocol (version "1") spoken by hand in CBOR to an in-process relay.

use automerge::Automerge;
use automerge::sync::{self, SyncDoc};
use ciborium::Value;

use crate::harness::{
    InProcessRelay, RawClient, doc_with, field, get_str, new_document_id, text_field,
};

#[tokio::test]
async fn join_with_peer_metadata_is_answered_by_peer_with_version_1() {
    let relay = InProcessRelay::start().await;
    let (_client, peer) = RawClient::join(&relay.url(), "hand-client", "peerMetadata").await;
    assert_eq!(text_field(&peer, "type"), Some("peer"));
    assert_eq!(text_field(&peer, "selectedProtocolVersion"), Some("1"));
    assert_eq!(text_field(&peer, "targetId"), Some("hand-client"));
    let relay_id = text_field(&peer, "senderId").unwrap();
    assert!(!relay_id.is_empty());
    // The relay tells peers it keeps data durably, under a storage id, so they can keep sync
    // state for it.
    let metadata = field(&peer, "peerMetadata").expect("the relay sends its metadata");
    assert!(text_field(metadata, "storageId").is_some(), "{peer:?}");
    assert_eq!(field(metadata, "isEphemeral"), Some(&Value::Bool(false)));
    relay.stop().await.unwrap();
}

#[tokio::test]
async fn join_with_the_specs_metadata_key_works_too() {
    let relay = InProcessRelay::start().await;
    let (mut client, peer) = RawClient::join(&relay.url(), "spec-client", "metadata").await;
    assert_eq!(text_field(&peer, "selectedProtocolVersion"), Some("1"));
    // And the connection is usable.
    let mut doc = doc_with("title", "joined with `metadata`");
    client
        .sync_until_same_heads(&new_document_id(), &mut doc)
        .await;
    relay.stop().await.unwrap();
}

#[tokio::test]
async fn a_request_for_an_unknown_document_gets_doc_unavailable() {
    let relay = InProcessRelay::start().await;
    let (mut client, _) = RawClient::join(&relay.url(), "asker", "peerMetadata").await;
    let document = new_document_id();
    let empty = Automerge::new()
        .generate_sync_message(&mut sync::State::new())
        .expect("a first sync message");
    let request = client.sync_message("request", &document, empty.encode());
    client.send(request).await;
    let answer = client.expect("doc-unavailable").await;
    assert_eq!(text_field(&answer, "documentId"), Some(document.as_str()));
    assert_eq!(text_field(&answer, "targetId"), Some("asker"));
    relay.stop().await.unwrap();
}

#[tokio::test]
async fn a_document_written_by_one_client_is_served_to_another() {
    let relay = InProcessRelay::start().await;
    let document = new_document_id();
    let (mut writer, _) = RawClient::join(&relay.url(), "writer", "peerMetadata").await;
    let mut written = doc_with("title", "Spring plan");
    writer.sync_until_same_heads(&document, &mut written).await;

    let (mut reader, _) = RawClient::join(&relay.url(), "reader", "peerMetadata").await;
    let mut read = Automerge::new();
    reader.sync_until_same_heads(&document, &mut read).await;
    assert_eq!(get_str(&read, "title").as_deref(), Some("Spring plan"));
    assert_eq!(read.get_heads(), written.get_heads());
    relay.stop().await.unwrap();
}
