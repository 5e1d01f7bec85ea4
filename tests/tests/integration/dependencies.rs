//! The dependency tree holds one version of each heavy crate: two copies of automerge could not
//! even exchange documents in memory, and every duplicate lengthens a 2-core build.

use std::path::Path;
use std::process::Command;

/// Crates of which the workspace must never build two versions.
const HEAVY: &[&str] = &[
    "automerge",
    "axum",
    "chrono",
    "ciborium",
    "hyper",
    "libsqlite3-sys",
    "prometheus-client",
    "rusqlite",
    "sha2",
    "tokio",
    "tokio-tungstenite",
    "tungstenite",
    "uniffi",
];

#[test]
fn heavy_crates_have_a_single_version() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(root)
        .args([
            "tree",
            "--workspace",
            "--locked",
            "--offline",
            "--duplicates",
        ])
        .args(["--depth", "0", "--edges", "normal,build", "--target", "all"])
        .output()
        .expect("run cargo tree");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let duplicates = String::from_utf8_lossy(&output.stdout);
    let offending: Vec<&str> = duplicates
        .lines()
        .filter(|line| {
            let name = line.split(' ').next().unwrap_or_default();
            HEAVY.contains(&name)
        })
        .collect();
    assert!(
        offending.is_empty(),
        "heavy crates in more than one version: {offending:?}\n{duplicates}"
    );
}
