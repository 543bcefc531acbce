//! Helpers shared by the integration tests: run the real binary against a real store.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use serde_json::Value;

/// A scratch area with a store in it.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env { dir: tempfile::Builder::new().prefix("execroot-test-").tempdir().unwrap() }
    }
    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    /// `execroot --store STORE --json ARGS...`
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::cargo_bin("execroot").unwrap();
        c.arg("--store").arg(self.store()).arg("--json").args(args);
        c
    }
    /// The same as [`Env::cmd`] as a plain `std::process::Command`, for spawning.
    pub fn spawnable(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("execroot"));
        c.arg("--store").arg(self.store()).arg("--json").args(args);
        c
    }
    /// Run, expect success, parse stdout as the one JSON document.
    pub fn ok(&self, args: &[&str]) -> Value {
        let out = self.cmd(args).output().unwrap();
        assert!(out.status.success(), "execroot {args:?} failed: {}", describe(&out));
        parse(&out)
    }
    /// Run, expect exit status `code`; returns the JSON document.
    pub fn fails(&self, args: &[&str], code: i32) -> Value {
        let out = self.cmd(args).output().unwrap();
        assert_eq!(out.status.code(), Some(code), "execroot {args:?}: {}", describe(&out));
        parse(&out)
    }
    /// Ingest `dir`, returning the snapshot id.
    pub fn ingest(&self, dir: &Path) -> String {
        self.ok(&["snapshot", "create", dir.to_str().unwrap()])["id"].as_str().unwrap().to_string()
    }
    /// Number of content objects in the store.
    pub fn object_count(&self) -> usize {
        let mut n = 0;
        for fan in std::fs::read_dir(self.store().join("objects")).unwrap() {
            n += std::fs::read_dir(fan.unwrap().path()).unwrap().count();
        }
        n
    }
    /// Generate a built-in fixture shape into `rel`.
    pub fn fixture(&self, shape: &str, seed: u64, rel: &str) -> PathBuf {
        let dest = self.path(rel);
        execroot::fixture::generate_named(shape, 1.0, seed, &dest).unwrap();
        dest
    }
}

pub fn parse(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {}", describe(out)))
}

pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn assert_trees_equal(a: &Path, b: &Path) {
    let diffs = execroot::fixture::compare_trees(a, b, true).unwrap();
    assert!(diffs.is_empty(), "trees differ:\n{}", diffs.join("\n"));
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Set a path's mtime (no symlink following).
pub fn set_mtime(p: &Path, sec: i64, nsec: i64) {
    let t = nix::sys::time::TimeSpec::new(sec, nsec);
    nix::sys::stat::utimensat(None, p, &t, &t, nix::sys::stat::UtimensatFlags::NoFollowSymlink).unwrap();
}
