//! Finding Node for the tests that run the JavaScript clients and the service benchmark:
//! `$EXECROOT_NODE`, else `node` on PATH. In CI (`CI=true` or `EXECROOT_REQUIRE_NODE=1`) a
//! missing or old Node fails those tests; elsewhere they skip with a message. `.ci/run`
//! installs Node 24.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What the Paperclip plugin SDK (and so the plugin's tests and the service benchmark) needs.
pub const PLUGIN_NODE: (u32, u32) = (24, 11);

/// True when a missing or old Node must fail instead of skip.
pub fn required() -> bool {
    std::env::var("CI").as_deref() == Ok("true") || std::env::var("EXECROOT_REQUIRE_NODE").as_deref() == Ok("1")
}

/// The node binary and its version, if one runs.
pub fn node() -> Option<(PathBuf, (u32, u32))> {
    let bin = std::env::var_os("EXECROOT_NODE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("node"));
    let out = Command::new(&bin).arg("--version").output().ok()?;
    let v = String::from_utf8_lossy(&out.stdout);
    let mut parts = v.trim().trim_start_matches('v').split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    Some((bin, (parts.next()?, parts.next().unwrap_or(0))))
}

/// Node at least `min`, or None after failing (CI) or saying why it skips.
pub fn node_at_least(min: (u32, u32), what: &str) -> Option<PathBuf> {
    let why = match node() {
        Some((bin, v)) if v >= min => return Some(bin),
        Some((bin, v)) => format!("{} is Node {}.{}, {what} needs >= {}.{}", bin.display(), v.0, v.1, min.0, min.1),
        None => format!("no Node found (set EXECROOT_NODE), {what} needs >= {}.{}", min.0, min.1),
    };
    assert!(!required(), "{why}");
    eprintln!("skipped: {why}");
    None
}

/// PATH with `node`'s directory first, so that npm and the tests' children use the same Node.
pub fn path_with(node: &Path) -> std::ffi::OsString {
    let mut dirs: Vec<PathBuf> =
        node.parent().filter(|d| !d.as_os_str().is_empty()).map(|d| vec![d.to_path_buf()]).unwrap_or_default();
    dirs.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    std::env::join_paths(dirs).unwrap()
}

/// The plugin's dependencies (pinned in its package-lock.json), installed with `npm ci` when
/// `node_modules` is missing.
pub fn plugin_dependencies(node: &Path, dir: &Path) {
    if dir.join("node_modules/@paperclipai/plugin-sdk").is_dir() {
        return;
    }
    let npm = node.parent().map(|d| d.join("npm")).filter(|p| p.exists()).unwrap_or_else(|| PathBuf::from("npm"));
    let out = Command::new(npm)
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .env("PATH", path_with(node))
        .output()
        .expect("npm runs");
    assert!(out.status.success(), "npm ci in {} failed: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
}
