//! The Node client (clients/node) and the Paperclip plugin (clients/paperclip-plugin), each
//! with `node --test`, against a real `execroot serve` of this build, so that `cargo test` is
//! still the one test command.
//!
//! Node and the skip/fail rule: tests/common/node.rs (the plugin's SDK needs Node >= 24.11).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::node::{node_at_least, path_with, plugin_dependencies, PLUGIN_NODE};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `node --test` in `dir`, with the serve of this build; panics with the output on failure.
fn node_test(node: &Path, dir: &Path) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("test"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".test.js"))
        .collect();
    files.sort();
    let out = Command::new(node)
        .arg("--test")
        .arg("--test-concurrency=1")
        .args(&files)
        .current_dir(dir)
        .env("EXECROOT_BIN", assert_cmd::cargo::cargo_bin("execroot"))
        .env("PATH", path_with(node))
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "node --test in {} failed:\n{text}", dir.display());
    // As root nothing may skip (the mount rule of every other test).
    assert!(!common::is_root() || text.contains("skipped 0"), "tests skipped as root:\n{text}");
}

#[test]
fn node_client_against_a_real_service() {
    if !common::can_mount() {
        return;
    }
    let Some(node) = node_at_least((20, 0), "the Node client") else { return };
    node_test(&node, &repo().join("clients/node"));
}

#[test]
fn paperclip_plugin_through_the_sdk_harness() {
    if !common::can_mount() {
        return;
    }
    let Some(node) = node_at_least(PLUGIN_NODE, "the Paperclip plugin SDK") else { return };
    let dir = repo().join("clients/paperclip-plugin");
    plugin_dependencies(&node, &dir);
    node_test(&node, &dir);
}
