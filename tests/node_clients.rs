//! The Node client (clients/node) and the Paperclip plugin (clients/paperclip-plugin), each
//! with `node --test`, against a real `execroot serve` of this build, so that `cargo test` is
//! still the one test command.
//!
//! Node: `$EXECROOT_NODE`, else `node` on PATH; the plugin's SDK needs Node >= 24.11. The
//! plugin's dependencies (pinned in its package-lock.json) are installed with `npm ci` when
//! `node_modules` is missing. In CI (`CI=true` or `EXECROOT_REQUIRE_NODE=1`) a missing or old
//! Node fails these tests; elsewhere they skip with a message. `.ci/run` installs Node 24.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const PLUGIN_NODE: (u32, u32) = (24, 11);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn required() -> bool {
    std::env::var("CI").as_deref() == Ok("true") || std::env::var("EXECROOT_REQUIRE_NODE").as_deref() == Ok("1")
}

/// The node binary and its version, if one runs.
fn node() -> Option<(PathBuf, (u32, u32))> {
    let bin = std::env::var_os("EXECROOT_NODE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("node"));
    let out = Command::new(&bin).arg("--version").output().ok()?;
    let v = String::from_utf8_lossy(&out.stdout);
    let mut parts = v.trim().trim_start_matches('v').split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    Some((bin, (parts.next()?, parts.next().unwrap_or(0))))
}

/// Node at least `min`, or None after failing (CI) or saying why it skips.
fn node_at_least(min: (u32, u32), what: &str) -> Option<PathBuf> {
    let why = match node() {
        Some((bin, v)) if v >= min => return Some(bin),
        Some((bin, v)) => format!("{} is Node {}.{}, {what} needs >= {}.{}", bin.display(), v.0, v.1, min.0, min.1),
        None => format!("no Node found (set EXECROOT_NODE), {what} needs >= {}.{}", min.0, min.1),
    };
    assert!(!required(), "{why}");
    eprintln!("skipped: {why}");
    None
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

/// PATH with `node`'s directory first, so that npm and the tests' children use the same Node.
fn path_with(node: &Path) -> std::ffi::OsString {
    let mut dirs: Vec<PathBuf> =
        node.parent().filter(|d| !d.as_os_str().is_empty()).map(|d| vec![d.to_path_buf()]).unwrap_or_default();
    dirs.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    std::env::join_paths(dirs).unwrap()
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
    if !dir.join("node_modules/@paperclipai/plugin-sdk").is_dir() {
        let npm = node.parent().map(|d| d.join("npm")).filter(|p| p.exists()).unwrap_or_else(|| PathBuf::from("npm"));
        let out = Command::new(npm)
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .env("PATH", path_with(&node))
            .output()
            .expect("npm runs");
        assert!(out.status.success(), "npm ci in {} failed: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    }
    node_test(&node, &dir);
}
