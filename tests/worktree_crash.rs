//! A worktree root's create or destroy killed at any instruction, inside git too (issue 9,
//! section 5): `doctor --repair` undoes or finishes it, and never deletes a file git did not
//! write. Real git, real repositories; git itself is killed mid-checkout by a smudge filter.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use common::*;

/// The worktrees git lists in `repo`, besides the repository's own.
fn listed_worktrees(repo: &Path) -> Vec<String> {
    git(repo, &["worktree", "list", "--porcelain"])
        .lines()
        .filter_map(|l| l.strip_prefix("worktree "))
        .filter(|p| Path::new(p) != repo)
        .map(str::to_string)
        .collect()
}

/// A repository whose checkout runs a smudge filter on `m-boom`, between the `a*` files and the
/// `z*` files (git checks out in path order). While `armed` exists the filter fires once:
/// `kill_git` kills -9 every process from execroot down to the checkout, top first (as a crash
/// would, and so that no git cleans up after its child); otherwise it kills execroot alone
/// and lets git go on, slowly, as an orphan. Returns (repo, armed).
fn trapped_repo(env: &Env, kill_git: bool) -> (PathBuf, PathBuf) {
    let repo = env.path("repo");
    std::fs::create_dir(&repo).unwrap();
    for i in 0..10 {
        std::fs::write(repo.join(format!("a{i}")), format!("a {i}\n")).unwrap();
        std::fs::write(repo.join(format!("z{i}")), format!("z {i}\n")).unwrap();
    }
    std::fs::write(repo.join("m-boom"), "boom\n").unwrap();
    std::fs::write(repo.join(".gitattributes"), "m-boom filter=boom\n").unwrap();
    let armed = env.path("armed");
    let filter = env.path("boom.sh");
    let (kill, after) = if kill_git { ("kill -9 $chain $$", "exit 1") } else { ("kill -9 $top", "sleep 1") };
    let script = format!(
        r#"#!/bin/sh
if [ -e {armed} ]; then
  rm -f {armed}
  chain=""; top=""; p=$PPID
  while [ "$p" -gt 1 ]; do
    chain="$p $chain"
    if [ "$(cat /proc/$p/comm)" = execroot ]; then top=$p; break; fi
    p=$(cut -d' ' -f4 /proc/$p/stat)
  done
  # Never anything but a chain that starts at execroot.
  if [ -n "$top" ]; then {kill}; fi
  {after}
fi
exec cat
"#,
        armed = armed.display()
    );
    std::fs::write(&filter, script).unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&filter).status().unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["config", "filter.boom.smudge", filter.to_str().unwrap()]);
    git(&repo, &["config", "filter.boom.clean", "cat"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "base"]);
    (repo, armed)
}

fn create_args(repo: &Path) -> Vec<String> {
    [
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
        "k",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Run a create that the armed filter kills; returns its root's worktree path.
fn create_killed_in_checkout(env: &Env, repo: &Path, armed: &Path) -> PathBuf {
    std::fs::write(armed, "").unwrap();
    let args = create_args(repo);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.spawnable(&argv).output().unwrap();
    assert_eq!(out.status.signal(), Some(9), "the create was not killed: {}", describe(&out));
    let list = env.ok(&["root", "list"]);
    let r = &list["roots"][0];
    assert_eq!(r["state"], "creating", "{list}");
    cwd(r)
}

fn finding_actions(doc: &serde_json::Value) -> String {
    doc["findings"].as_array().unwrap().iter().map(|f| f["action"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_create_killed_inside_git_worktree_add_is_undone() {
    let env = Env::new();
    let (repo, armed) = trapped_repo(&env, true);
    let wt = create_killed_in_checkout(&env, &repo, &armed);
    // Really inside the checkout: some files written, the rest not, git's lock still on.
    assert!(wt.join("a9").is_file() && !wt.join("z0").exists(), "not a half checkout");
    assert!(wt.join(".git").is_file());
    assert!(git(&repo, &["worktree", "list", "--porcelain"]).contains("locked initializing"));
    assert!(branch_exists(&repo, "k"));

    let fixed = env.ok(&["doctor", "--repair"]);
    assert!(finding_actions(&fixed).contains("undid the interrupted create"), "{fixed}");
    assert_eq!(env.ok(&["doctor"])["findings"].as_array().unwrap().len(), 0);
    env.fails(&["root", "show", "k"], 4);
    assert!(!wt.exists(), "the half-made worktree is left");
    assert!(listed_worktrees(&repo).is_empty(), "git still lists the worktree");
    assert!(!branch_exists(&repo, "k"), "the branch of the undone create is left");
    // The key is free again, and the repository as good as before.
    let r = env.ok(&create_args(&repo).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(std::fs::read_to_string(cwd(&r).join("z9")).unwrap(), "z 9\n");
    env.ok(&["root", "destroy", "k"]);
}

#[test]
fn a_file_in_a_killed_create_that_git_did_not_write_is_kept() {
    let env = Env::new();
    let (repo, armed) = trapped_repo(&env, true);
    let wt = create_killed_in_checkout(&env, &repo, &armed);
    std::fs::write(wt.join("notes.txt"), "mine").unwrap();
    std::fs::write(wt.join("a3"), "edited").unwrap();

    let refused = env.fails(&["doctor", "--repair"], 3);
    let actions = finding_actions(&refused);
    // Word by word: a root id (random hex) may hold "a3" or "a4".
    let named = |f: &str| actions.split([' ', ',', ':']).any(|w| w == f);
    assert!(named("notes.txt") && named("a3"), "{refused}");
    assert!(!named("a4"), "a file git wrote is reported: {refused}");
    assert_eq!(std::fs::read_to_string(wt.join("notes.txt")).unwrap(), "mine");
    assert_eq!(std::fs::read_to_string(wt.join("a3")).unwrap(), "edited");
    assert_eq!(env.ok(&["root", "show", "k"])["state"], "creating");

    // Told to, destroy takes it all, git's half-made record of the worktree included.
    let d = env.ok(&["root", "destroy", "k", "--force"]);
    assert!(d["warnings"].to_string().contains("notes.txt"), "{d}");
    assert!(!wt.exists());
    assert!(listed_worktrees(&repo).is_empty(), "git still lists the worktree");
    assert!(!branch_exists(&repo, "k"));
    assert_eq!(env.ok(&["doctor"])["findings"].as_array().unwrap().len(), 0);
}

#[test]
fn doctor_waits_for_the_git_a_killed_create_left_running() {
    let env = Env::new();
    let (repo, armed) = trapped_repo(&env, false);
    // execroot dies; its `git worktree add` goes on for a second more as an orphan.
    create_killed_in_checkout(&env, &repo, &armed);
    let fixed = env.ok(&["doctor", "--repair"]);
    assert!(finding_actions(&fixed).contains("undid the interrupted create"), "{fixed}");
    env.fails(&["root", "show", "k"], 4);
    assert!(listed_worktrees(&repo).is_empty(), "git still lists the worktree");
    assert!(!branch_exists(&repo, "k"));
    assert_eq!(env.ok(&["doctor"])["findings"].as_array().unwrap().len(), 0);
}

/// A worktree root with a commit of the run's, whose destroy was killed right after it
/// recorded `destroying` (its check passed). Returns (repo, root id, worktree, branch).
fn destroy_killed(env: &Env) -> (PathBuf, String, PathBuf, String) {
    let repo = env.repo();
    let r = env.repo_root("worktree", repo.to_str().unwrap(), &[]);
    let wt = cwd(&r);
    std::fs::write(wt.join("committed.txt"), "work").unwrap();
    git(&wt, &["add", "committed.txt"]);
    git(&wt, &["commit", "-qm", "work"]);
    let id = r["id"].as_str().unwrap().to_string();
    let out =
        env.spawnable(&["root", "destroy", &id]).env("EXECROOT_FAILPOINT", "root.destroy.recorded").output().unwrap();
    assert_eq!(out.status.signal(), Some(9), "{}", describe(&out));
    assert_eq!(env.ok(&["root", "show", &id])["state"], "destroying");
    (repo, id, wt, r["branchName"].as_str().unwrap().to_string())
}

/// What a `git worktree remove` killed part way leaves: every other tracked file gone and,
/// with `link`, the `.git` link too (git removes in directory order).
fn remove_part(wt: &Path, link: bool) {
    let files = git_out(wt, &["ls-files", "-z"]);
    for f in files.split(|&b| b == 0).filter(|f| !f.is_empty()).step_by(2) {
        std::fs::remove_file(wt.join(std::ffi::OsStr::from_bytes(f))).unwrap();
    }
    if link {
        std::fs::remove_file(wt.join(".git")).unwrap();
    }
}

#[test]
fn a_destroy_killed_mid_removal_is_finished() {
    let env = Env::new();
    for link in [false, true] {
        let (repo, id, wt, branch) = destroy_killed(&env);
        remove_part(&wt, link);
        // An ignored file is disposable, as for any destroy, even once its .gitignore is gone.
        std::fs::write(wt.join("build.log"), "ignored").unwrap();
        let _ = std::fs::remove_file(wt.join(".gitignore"));
        let fixed = env.ok(&["doctor", "--repair"]);
        assert!(finding_actions(&fixed).contains("finished the interrupted destroy"), "{fixed}");
        env.fails(&["root", "show", &id], 4);
        assert!(!wt.exists());
        assert!(listed_worktrees(&repo).is_empty(), "git still lists the worktree");
        // The run's commit survives: its branch is kept.
        assert!(git(&repo, &["log", "--format=%s", &branch]).starts_with("work"));
        git(&repo, &["branch", "-D", &branch]);
        assert_eq!(env.ok(&["doctor"])["findings"].as_array().unwrap().len(), 0);
        std::fs::remove_dir_all(&repo).unwrap();
    }
}

#[test]
fn an_interrupted_destroy_keeps_and_reports_a_file_the_user_wrote() {
    let env = Env::new();
    let (repo, id, wt, branch) = destroy_killed(&env);
    remove_part(&wt, false);
    // Written after the destroy's check passed, before doctor came.
    std::fs::write(wt.join("unsaved.txt"), "work").unwrap();
    for link in [false, true] {
        if link {
            std::fs::remove_file(wt.join(".git")).unwrap();
        }
        let refused = env.fails(&["doctor", "--repair"], 3);
        let actions = finding_actions(&refused);
        assert!(actions.contains("unsaved.txt"), "{refused}");
        assert!(!actions.contains("committed.txt"), "{refused}");
        assert_eq!(std::fs::read_to_string(wt.join("unsaved.txt")).unwrap(), "work", "doctor lost the user's file");
        assert_eq!(env.ok(&["root", "show", &id])["state"], "destroying");
    }
    // Once the user has taken it away, doctor finishes.
    std::fs::remove_file(wt.join("unsaved.txt")).unwrap();
    env.ok(&["doctor", "--repair"]);
    env.fails(&["root", "show", &id], 4);
    assert!(!wt.exists());
    assert!(listed_worktrees(&repo).is_empty());
    assert!(git(&repo, &["log", "--format=%s", &branch]).starts_with("work"));
}
