//! kill -9 at named points: every store- and root-changing operation is killed at each of its
//! phases (the `failpoints` feature, on for the test suite, makes the process SIGKILL itself
//! where `EXECROOT_FAILPOINT` says), then doctor and verify must leave nothing corrupt, leaked
//! or lost, and the operation must succeed when run again.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use common::*;

/// Run `args` with failpoint `point` armed; the process must die there, by SIGKILL.
fn crash_at(env: &Env, args: &[&str], point: &str) {
    let out = env.spawnable(args).env("EXECROOT_FAILPOINT", point).output().unwrap();
    assert_eq!(out.status.signal(), Some(9), "{args:?} did not reach failpoint {point}: {}", describe(&out));
}

/// After a crash: doctor repairs everything, a second doctor finds nothing, verify is clean,
/// every root left is ready and owns the only mounts under roots/, no root directory leaks.
fn assert_recovered(env: &Env) {
    let r = env.cmd(&["doctor", "--repair"]).output().unwrap();
    assert!(r.status.success(), "doctor --repair did not repair: {}", describe(&r));
    let again = env.ok(&["doctor"]);
    assert_eq!(again["findings"].as_array().unwrap().len(), 0, "doctor is not idempotent: {again}");
    let v = env.ok(&["verify"]);
    assert_eq!(v["ok"], true, "{v}");
    let roots = env.ok(&["root", "list"])["roots"].as_array().unwrap().clone();
    assert!(roots.iter().all(|r| r["state"] == "ready"), "{roots:?}");
    let mut owned: Vec<PathBuf> = Vec::new();
    for r in &roots {
        owned.push(PathBuf::from(r["cwd"].as_str().unwrap()));
        owned.extend(r["mounts"].as_array().unwrap().iter().map(|m| PathBuf::from(m["path"].as_str().unwrap())));
    }
    for m in mounts_below(&env.store().join("roots")) {
        assert!(owned.contains(&m), "mount {} survived without a root", m.display());
    }
    let dirs = std::fs::read_dir(env.store().join("roots")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(dirs, roots.len(), "root directories leaked");
    let tmp = std::fs::read_dir(env.store().join("tmp")).unwrap().count();
    assert_eq!(tmp, 0, "leases leaked");
}

fn snapshot_of(env: &Env, spec: &str) -> Option<String> {
    let out = env.cmd(&["snapshot", "show", spec]).output().unwrap();
    out.status.success().then(|| parse(&out)["id"].as_str().unwrap().to_string())
}

fn tree(env: &Env, name: &str, seed: u64) -> PathBuf {
    env.fixture("small", seed, name)
}

#[test]
fn ingest_killed_at_each_phase() {
    let env = Env::new();
    let src = tree(&env, "src", 7);
    let s = src.to_str().unwrap();
    for (i, point) in [
        "ingest.objects-stored",
        "snapshot.publish.objects-moved",
        "snapshot.publish.staged",
        "snapshot.publish.renamed",
        "ingest.published",
        "ref.set.staged",
    ]
    .into_iter()
    .enumerate()
    {
        std::fs::write(src.join("round"), format!("{i}")).unwrap();
        crash_at(&env, &["snapshot", "create", s, "--name", "base"], point);
        assert_recovered(&env);
        // Published or not, never half: if the ref exists it names a verified snapshot.
        if let Some(id) = snapshot_of(&env, "base") {
            assert_eq!(env.ok(&["snapshot", "show", &id])["id"], id.as_str());
        }
        let r = env.ok(&["snapshot", "create", s, "--name", "base"]);
        let out = env.path(&format!("out{i}"));
        env.ok(&["snapshot", "checkout", r["id"].as_str().unwrap(), out.to_str().unwrap()]);
        assert_trees_equal(&src, &out);
    }
    // A tar ingest stores as it reads: killed before publishing, it leaves only its lease.
    let tarball = env.path("t.tar");
    let st = std::process::Command::new("tar").arg("-cf").arg(&tarball).arg("-C").arg(&src).arg(".").status().unwrap();
    assert!(st.success());
    crash_at(&env, &["snapshot", "create", "--tar", tarball.to_str().unwrap(), "--name", "t"], "ingest.objects-stored");
    assert_recovered(&env);
    assert!(snapshot_of(&env, "t").is_none());
    env.ok(&["snapshot", "create", "--tar", tarball.to_str().unwrap(), "--name", "t"]);
}

#[test]
fn root_create_killed_at_each_phase() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let src = tree(&env, "src", 8);
    let deps = tree(&env, "deps", 9);
    env.ok(&["snapshot", "create", deps.to_str().unwrap(), "--name", "deps"]);
    let repo = env.repo();
    for (i, point) in ["layer.built", "root.create.recorded", "root.create.backend-made", "root.create.mounts-made"]
        .into_iter()
        .enumerate()
    {
        // A fresh snapshot each round, so that the layer is built by this create.
        std::fs::write(src.join("round"), format!("{i}")).unwrap();
        env.ok(&["snapshot", "create", src.to_str().unwrap(), "--name", "base"]);
        // Only an overlay builds the layer of a fresh snapshot (a copy writes it out).
        let backends: &[&str] = if point == "layer.built" { &["overlay"] } else { &["overlay", "copy"] };
        for backend in backends {
            let key = format!("k-{i}-{backend}");
            let args = [
                "root",
                "create",
                "--class",
                "routine",
                "--from",
                "base",
                "--backend",
                backend,
                "--key",
                &key,
                "--mount",
                "deps=deps",
            ];
            crash_at(&env, &args, point);
            assert_recovered(&env);
            // The key is free again (or names the finished root): create answers either way.
            let r = env.ok(&args);
            assert!(cwd(&r).join("round").exists());
            assert!(cwd(&r).join("deps").read_dir().unwrap().next().is_some());
            env.ok(&["root", "destroy", &key]);
        }
    }
    for point in ["root.create.recorded", "root.create.backend-made"] {
        let args = [
            "root",
            "create",
            "--class",
            "repo-edit",
            "--backend",
            "worktree",
            "--repo",
            repo.to_str().unwrap(),
            "--base-ref",
            "main",
            "--key",
            "wt",
        ];
        crash_at(&env, &args, point);
        assert_recovered(&env);
        let r = env.ok(&args);
        env.ok(&["root", "destroy", r["id"].as_str().unwrap()]);
        assert!(git(&repo, &["branch", "--list", "wt"]).trim().is_empty(), "the branch of an undone create leaked");
    }
    assert_recovered(&env);
}

#[test]
fn root_destroy_killed_at_each_phase() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    env.with_base();
    let deps = tree(&env, "deps", 9);
    env.ok(&["snapshot", "create", deps.to_str().unwrap(), "--name", "deps"]);
    let repo = env.repo();
    for point in ["root.destroy.recorded", "root.destroy.backend-done", "root.destroy.files-removed"] {
        for backend in ["overlay", "copy"] {
            let r = env.root(&["--class", "routine", "--from", "base", "--backend", backend, "--mount", "deps=deps"]);
            std::fs::write(cwd(&r).join("written"), "x").unwrap();
            crash_at(&env, &["root", "destroy", r["id"].as_str().unwrap()], point);
            assert_recovered(&env);
            env.fails(&["root", "show", r["id"].as_str().unwrap()], 4);
        }
        // A worktree's commits survive a destroy killed anywhere: its branch is kept.
        let r = env.repo_root("worktree", repo.to_str().unwrap(), &[]);
        let wt = cwd(&r);
        std::fs::write(wt.join("committed.txt"), "work").unwrap();
        git(&wt, &["add", "committed.txt"]);
        git(&wt, &["commit", "-qm", "work"]);
        let branch = r["branchName"].as_str().unwrap().to_string();
        crash_at(&env, &["root", "destroy", r["id"].as_str().unwrap()], point);
        assert_recovered(&env);
        let log = git(&repo, &["log", "--format=%s", &branch]);
        assert!(log.starts_with("work"), "the run's commit was lost: {log}");
        git(&repo, &["branch", "-D", &branch]);
    }
}

#[test]
fn commit_killed_at_each_phase_keeps_the_run() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    env.with_base();
    let r = env.root(&["--class", "artifact", "--from", "base", "--key", "c"]);
    let cwd = cwd(&r);
    std::fs::write(cwd.join("report.txt"), "result\n").unwrap();
    for point in ["ingest.objects-stored", "snapshot.publish.staged", "snapshot.publish.renamed", "ingest.published"] {
        crash_at(&env, &["root", "commit", "c", "--name", "out"], point);
        assert_recovered(&env);
        assert_eq!(std::fs::read_to_string(cwd.join("report.txt")).unwrap(), "result\n", "the run's file was lost");
    }
    let c = env.ok(&["root", "commit", "c", "--name", "out"]);
    let out = env.path("out");
    env.ok(&["snapshot", "checkout", c["id"].as_str().unwrap(), out.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(out.join("report.txt")).unwrap(), "result\n");
    env.ok(&["root", "destroy", "c"]);
}

#[test]
fn gc_and_snapshot_rm_killed_at_each_phase() {
    let env = Env::new();
    let keep = tree(&env, "keep", 10);
    env.ok(&["snapshot", "create", keep.to_str().unwrap(), "--name", "keep"]);
    for (i, point) in ["gc.snapshots-removed", "gc.object-removed", "gc.unlocked"].into_iter().enumerate() {
        let junk = tree(&env, &format!("junk{i}"), 20 + i as u64);
        let j = env.ingest(&junk);
        crash_at(&env, &["gc", "--grace", "0"], point);
        assert_recovered(&env);
        // What a ref keeps is whole; the rest is gone or goes on the next run.
        check_out_equal(&env, "keep", &keep, &format!("k{i}"));
        env.ok(&["gc", "--grace", "0"]);
        assert!(snapshot_of(&env, &j).is_none());
    }
    let extra = tree(&env, "extra", 30);
    env.ok(&["snapshot", "create", extra.to_str().unwrap(), "--name", "extra"]);
    crash_at(&env, &["snapshot", "rm", "extra", "--force"], "snapshot.rm.refs-removed");
    assert_recovered(&env);
    check_out_equal(&env, "keep", &keep, "k-last");
}

fn check_out_equal(env: &Env, spec: &str, src: &Path, rel: &str) {
    let out = env.path(rel);
    env.ok(&["snapshot", "checkout", spec, out.to_str().unwrap()]);
    assert_trees_equal(src, &out);
}
