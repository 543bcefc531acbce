//! Helpers shared by the integration tests: run the real binary against a real store.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

/// The workload generator of the `execroot` binary (not part of the library), built into the
/// tests from its source.
#[path = "../../src/fixture.rs"]
pub mod fixture;
pub mod node;
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
        fixture::generate_named(shape, 1.0, seed, &dest).unwrap();
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
    let diffs = fixture::compare_trees(a, b, true).unwrap();
    assert!(diffs.is_empty(), "trees differ:\n{}", diffs.join("\n"));
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Set a path's mtime (no symlink following).
pub fn set_mtime(p: &Path, sec: i64, nsec: i64) {
    execroot::store::set_mtime(p, sec, nsec).unwrap();
}

/// `git -C dir ARGS` as a test author would type it; panics on failure, returns stdout.
pub fn git_out(dir: &Path, args: &[&str]) -> Vec<u8> {
    let o = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@e", "-c", "safe.directory=*"])
        // git >= 2.47 runs `git maintenance run --auto --detach` after a commit: a process
        // left in the root for a moment, which a destroy right after it rightly refuses.
        .args(["-c", "maintenance.auto=false", "-c", "gc.auto=0"])
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

/// [`git_out`] as text.
pub fn git(dir: &Path, args: &[&str]) -> String {
    String::from_utf8_lossy(&git_out(dir, args)).into_owned()
}

/// Whether branch `b` exists in `repo`.
pub fn branch_exists(repo: &Path, b: &str) -> bool {
    std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["-c", "safe.directory=*", "rev-parse", "--verify", "--quiet", &format!("refs/heads/{b}")])
        .status()
        .unwrap()
        .success()
}

/// The `cwd` of a `root create` document.
pub fn cwd(v: &serde_json::Value) -> PathBuf {
    PathBuf::from(v["cwd"].as_str().unwrap())
}

/// Mount tests need root. In CI (`EXECROOT_REQUIRE_MOUNT=1`) their absence is a failure;
/// elsewhere they skip with a message. Returns false when the test should return early.
pub fn can_mount() -> bool {
    needs_root("mount tests need root")
}

/// The one rule for every test that needs root (to mount, or to act as another user): it runs
/// as root; in CI (`EXECROOT_REQUIRE_MOUNT=1`) not being root fails it loudly; elsewhere it
/// skips, saying `why`. Returns false when the test should return early.
pub fn needs_root(why: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("EXECROOT_REQUIRE_MOUNT").as_deref() == Ok("1") {
        panic!("EXECROOT_REQUIRE_MOUNT=1 but this test cannot run: {why} (not root)");
    }
    eprintln!("skipped: {why}");
    false
}

/// Run a shell snippet as `nobody` (uid 65534); returns (success, stdout+stderr).
pub fn as_nobody(script: &str) -> (bool, String) {
    as_user(65534, script)
}

/// Run a shell snippet as uid `uid` with gid `uid` and no supplementary groups (no passwd entry
/// needed); returns (success, stdout+stderr).
pub fn as_user(uid: u32, script: &str) -> (bool, String) {
    let out = std::process::Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .args(["--clear-groups", "sh", "-c", script])
        .output()
        .unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Mount points below `dir` (from /proc/self/mountinfo).
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    execroot::sys::mount::mounts_under(dir).unwrap().into_iter().map(|m| m.target).collect()
}

impl Env {
    /// A store with the `small` fixture ingested as ref `base`; returns the source tree.
    pub fn with_base(&self) -> PathBuf {
        let src = self.fixture("small", 42, "src");
        std::fs::create_dir(src.join("bin")).unwrap();
        std::fs::write(src.join("bin/run.sh"), "#!/bin/sh\necho ran\n").unwrap();
        std::fs::set_permissions(src.join("bin/run.sh"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("bin/run.sh", src.join("run-link")).unwrap();
        self.ok(&["snapshot", "create", src.to_str().unwrap(), "--name", "base"]);
        src
    }
    /// A repository (the `small` fixture, seed 3, with a .gitignore of `*.log`) on branch main
    /// with one commit.
    pub fn repo(&self) -> PathBuf {
        let r = self.fixture("small", 3, "repo");
        std::fs::write(r.join(".gitignore"), "*.log\n").unwrap();
        git(&r, &["init", "-q", "-b", "main"]);
        git(&r, &["add", "-A"]);
        git(&r, &["commit", "-qm", "base"]);
        r
    }

    /// `root create` with extra args; returns the JSON.
    pub fn root(&self, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["root", "create"];
        args.extend_from_slice(extra);
        self.ok(&args)
    }
    /// `root create --class repo-edit --backend BACKEND --repo REPO --base-ref main EXTRA...`
    pub fn repo_root(&self, backend: &str, repo: &str, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["--class", "repo-edit", "--backend", backend, "--repo", repo, "--base-ref", "main"];
        args.extend_from_slice(extra);
        self.root(&args)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Never leave mounts behind in a temporary directory, even when a test fails.
        if is_root() {
            for m in execroot::sys::mount::mounts_under(self.dir.path()).unwrap_or_default() {
                let _ = nix::mount::umount2(&m.target, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}
