//! The worktree backend never loses work: real git, real repositories.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use common::*;

#[test]
fn destroy_refuses_to_lose_work_and_keeps_unique_commits() {
    let env = Env::new();
    let repo = env.repo();
    let rs = repo.to_str().unwrap();
    let r = env.repo_root("worktree", rs, &["--key", "PAP-7 fix: the bug"]);
    assert_eq!(r["backend"], "worktree");
    assert_eq!(r["branchName"], "PAP-7-fix-the-bug");
    assert_eq!(r["baseRef"], "main");
    let wt = PathBuf::from(r["worktreePath"].as_str().unwrap());
    assert_eq!(r["cwd"], r["worktreePath"]);
    assert!(wt.join(".git").exists());
    let id = r["id"].as_str().unwrap();

    // An untracked file and a modified tracked file block destroy.
    std::fs::write(wt.join("notes.txt"), b"precious").unwrap();
    let tracked = git(&wt, &["ls-files"]).lines().find(|l| *l != ".gitignore").unwrap().to_string();
    std::fs::write(wt.join(&tracked), b"edited").unwrap();
    std::fs::write(wt.join("build.log"), b"ignored").unwrap();
    let show = env.ok(&["root", "show", id]);
    assert_eq!(show["git"]["untrackedEntryCount"], 1);
    assert_eq!(show["git"]["dirtyEntryCount"], 1);
    assert_eq!(show["git"]["aheadCount"], 0);
    assert_eq!(show["git"]["isMergedIntoBase"], true);
    let v = env.fails(&["root", "destroy", id], 5);
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("notes.txt") && msg.contains(&tracked), "{v}");
    assert!(wt.join("notes.txt").exists());

    // Commit the work: the branch now holds a commit found nowhere else.
    git(&wt, &["add", "-A"]);
    git(&wt, &["commit", "-qm", "work"]);
    let show = env.ok(&["root", "show", id]);
    assert_eq!(show["git"]["aheadCount"], 1);
    assert_eq!(show["git"]["isMergedIntoBase"], false);
    let d = env.ok(&["root", "destroy", id]);
    assert_eq!(d["cleaned"], true);
    let warnings = d["warnings"].to_string();
    assert!(warnings.contains("kept") && warnings.contains("ignored"), "{d}");
    assert!(!wt.exists());
    assert!(branch_exists(&repo, "PAP-7-fix-the-bug"), "a branch with unique commits was deleted");

    // A root with nothing of its own: the branch it created goes away with it.
    let r2 = env.repo_root("worktree", rs, &["--branch", "scratch"]);
    env.ok(&["root", "destroy", r2["id"].as_str().unwrap()]);
    assert!(!branch_exists(&repo, "scratch"));
    assert!(git(&repo, &["worktree", "list"]).lines().count() == 1);

    // --force discards uncommitted work, and says so.
    let r3 = env.repo_root("worktree", rs, &["--branch", "forced"]);
    let wt3 = PathBuf::from(r3["cwd"].as_str().unwrap());
    std::fs::write(wt3.join("scratch.txt"), b"x").unwrap();
    let d = env.ok(&["root", "destroy", r3["id"].as_str().unwrap(), "--force"]);
    assert!(d["warnings"].to_string().contains("scratch.txt"), "{d}");
    assert!(!wt3.exists() && !branch_exists(&repo, "forced"));
}

#[test]
fn git_runs_as_the_repository_owner() {
    if !needs_root("needs root to own a repository as another user") {
        return;
    }
    let env = Env::new();
    std::fs::set_permissions(env.dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let repo = env.repo();
    for e in walkdir::WalkDir::new(&repo) {
        std::os::unix::fs::lchown(e.unwrap().path(), Some(65534), Some(65534)).unwrap();
    }
    let r = env.repo_root("worktree", repo.to_str().unwrap(), &["--branch", "b1"]);
    let wt = PathBuf::from(r["cwd"].as_str().unwrap());
    // Nothing root-owned lands in the user's repository or worktree.
    for e in walkdir::WalkDir::new(repo.join(".git")).into_iter().chain(walkdir::WalkDir::new(&wt)) {
        let e = e.unwrap();
        assert_eq!(e.metadata().unwrap().uid(), 65534, "{} is not the owner's", e.path().display());
    }
    let (ok, out) = as_nobody(&format!(
        "cd {} && echo x > new && git add new && git -c user.name=n -c user.email=n@e commit -qm n",
        wt.display()
    ));
    assert!(ok, "{out}");
    assert_eq!(env.ok(&["root", "destroy", r["id"].as_str().unwrap()])["cleaned"], true);
    assert!(branch_exists(&repo, "b1"));
}

#[test]
fn worktree_needs_its_arguments() {
    let env = Env::new();
    let v = env.fails(&["root", "create", "--class", "repo-edit"], 2);
    assert!(v["error"]["message"].as_str().unwrap().contains("--repo"), "{v}");
    let v = env.fails(
        &[
            "root",
            "create",
            "--class",
            "repo-edit",
            "--backend",
            "worktree",
            "--repo",
            env.dir.path().to_str().unwrap(),
            "--base-ref",
            "main",
        ],
        2,
    );
    assert!(v["error"]["message"].as_str().unwrap().contains("not a git repository"), "{v}");
    assert_eq!(std::fs::read_dir(env.store().join("roots")).unwrap().count(), 0);
}

#[test]
fn a_worktree_with_a_mounted_dependency_tree() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let repo = env.repo();
    let deps = env.fixture("small", 99, "deps");
    env.ok(&["snapshot", "create", deps.to_str().unwrap(), "--name", "deps"]);
    let r = env.repo_root("worktree", repo.to_str().unwrap(), &["--mount", "node_modules=deps"]);
    let wt = PathBuf::from(r["cwd"].as_str().unwrap());
    assert!(wt.join("node_modules").read_dir().unwrap().count() > 0);
    std::fs::write(wt.join("node_modules/installed-by-run"), b"x").unwrap();
    // The mounted tree is not the run's uncommitted work.
    let show = env.ok(&["root", "show", r["id"].as_str().unwrap()]);
    assert_eq!(show["git"]["untrackedEntryCount"], 0, "{show}");
    assert!(wt.join("node_modules/installed-by-run").exists(), "show unmounted a live mount");
    let d = env.ok(&["root", "destroy", r["id"].as_str().unwrap()]);
    assert_eq!(d["cleaned"], true, "{d}");
    assert!(!wt.exists());
    assert!(mounts_below(&env.store().join("roots")).is_empty());
}
