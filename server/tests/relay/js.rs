//! The official JS automerge-repo 2.5.6 clients against a relay process.

use tempfile::TempDir;

use crate::harness::{RelayProcess, node_json};

#[test]
fn two_js_clients_sync_and_converge_through_the_relay() {
    let data = TempDir::new().unwrap();
    let relay = RelayProcess::start(data.path(), &[]);
    let js = node_json("two-clients.mjs", &[&relay.url()]);

    // B found A's document by URL, with A's content.
    assert_eq!(js["seenByB"]["title"], "Study plan", "{js}");
    assert_eq!(js["seenByB"]["goals"], serde_json::json!(["Pass calculus"]));
    // A saw B's edit.
    assert_eq!(
        js["seenByA"]["goals"],
        serde_json::json!(["Pass calculus", "Join a study group"])
    );
    // Concurrent edits from both, while connected: the same content and heads on both sides,
    // with both list insertions and both map keys kept.
    assert_eq!(js["finalA"], js["finalB"], "{js}");
    assert_eq!(js["headsA"], js["headsB"], "{js}");
    let goals = js["finalA"]["goals"].as_array().unwrap();
    assert_eq!(goals.len(), 4, "{js}");
    assert!(goals.contains(&"from A".into()) && goals.contains(&"from B".into()));
    assert_eq!(js["finalA"]["notes"]["a"], "written by A");
    assert_eq!(js["finalA"]["notes"]["b"], "written by B");
    let title = js["finalA"]["title"].as_str().unwrap();
    assert!(
        title == "Study plan (A)" || title == "Study plan (B)",
        "{title}"
    );
}

#[test]
fn a_js_client_asking_for_a_document_nobody_has_is_told_it_is_unavailable() {
    let data = TempDir::new().unwrap();
    let relay = RelayProcess::start(data.path(), &[]);
    let js = node_json("unavailable.mjs", &[&relay.url()]);
    assert_eq!(js["outcome"], "unavailable", "{js}");
    assert!(
        js["error"].as_str().unwrap().contains("is unavailable"),
        "{js}"
    );
}
