//! git-overlay (and worktree) roots against crashes and against git acting behind execroot's
//! back: every create and destroy failpoint killed with SIGKILL, then `doctor --repair`; a
//! worktree removed or pruned with git's own commands, or whose repository is gone, repaired
//! by doctor (`worktree-gone`) without losing a commit or a file; a run killed mid-way and the
//! mounts lost as in a reboot. Real git, real mounts.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use common::*;

/// The worktrees git lists in `repo`, besides the repository's own.
fn listed_worktrees(repo: &Path) -> Vec<PathBuf> {
    git(repo, &["worktree", "list", "--porcelain"])
        .lines()
        .filter_map(|l| l.strip_prefix("worktree "))
        .map(PathBuf::from)
        .filter(|p| p != repo)
        .collect()
}

/// Everything a repair must leave consistent: doctor finds nothing, verify is clean, no mount
/// below the store that no root owns, and git lists exactly the worktrees of `root list`.
fn assert_consistent(env: &Env, repo: &Path, what: &str) {
    let again = env.ok(&["doctor"]);
    assert_eq!(again["findings"].as_array().map(Vec::len), Some(0), "{what}: a second doctor finds: {again}");
    let v = env.ok(&["verify"]);
    assert_eq!(v["ok"], true, "{what}: {v}");
    let list = env.ok(&["root", "list"]);
    let roots = list["roots"].as_array().unwrap();
    let cwds: Vec<PathBuf> = roots.iter().map(cwd).collect();
    for m in mounts_below(&env.store()) {
        assert!(cwds.iter().any(|c| m.starts_with(c)), "{what}: mount {} has no root", m.display());
    }
    // Only mounts through the worktree path are below the test's directory, outside the store.
    for m in mounts_below(env.dir.path()) {
        assert!(cwds.iter().any(|c| m.starts_with(c)), "{what}: leaked mount {}", m.display());
    }
    let mut git_wts = listed_worktrees(repo);
    git_wts.sort();
    let mut ours: Vec<PathBuf> = roots.iter().filter(|r| r["repo"].as_str().is_some()).map(cwd).collect();
    ours.sort();
    assert_eq!(git_wts, ours, "{what}: git worktree list and root list differ");
}

fn create_args<'a>(backend: &'a str, repo: &'a str, branch: &'a str) -> Vec<&'a str> {
    vec![
        "root",
        "create",
        "--class",
        "repo-edit",
        "--backend",
        backend,
        "--repo",
        repo,
        "--base-ref",
        "main",
        "--branch",
        branch,
    ]
}

/// Drop every mount below the test's directory, as a reboot would.
fn reboot(env: &Env) {
    let mut ms = mounts_below(env.dir.path());
    ms.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    for m in ms {
        nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH).unwrap();
    }
}

fn actions(doc: &serde_json::Value) -> String {
    doc["findings"].as_array().unwrap().iter().map(|f| format!("{}: {}\n", f["kind"], f["action"])).collect()
}

#[test]
fn a_create_killed_at_any_point_is_undone() {
    if !can_mount() {
        return;
    }
    for point in [
        "root.create.recorded",
        "git-overlay.create.dir-made",
        "git-overlay.create.checked-out",
        "git-overlay.create.added",
        "git-overlay.create.locked",
        "git-overlay.create.mounted",
        "git-overlay.create.indexed",
        "root.create.backend-made",
        "root.create.mounts-made",
    ] {
        for lost_mounts in [false, true] {
            let what = format!("{point} (reboot: {lost_mounts})");
            let env = Env::new();
            let repo = env.repo();
            let rs = repo.to_str().unwrap();
            let out =
                env.spawnable(&create_args("git-overlay", rs, "killed")).env("EXECROOT_FAILPOINT", point).output();
            let out = out.unwrap();
            assert_eq!(out.status.signal(), Some(9), "{what}: not killed: {}", describe(&out));
            if lost_mounts {
                reboot(&env);
            }
            let fixed = env.ok(&["doctor", "--repair"]);
            assert!(actions(&fixed).contains("undid the interrupted create"), "{what}: {fixed}");
            assert_eq!(env.ok(&["root", "list"])["roots"].as_array().map(Vec::len), Some(0), "{what}");
            assert!(!branch_exists(&repo, "killed"), "{what}: the branch of the undone create is left");
            assert_consistent(&env, &repo, &what);
            // The repository is as good as before: the same root can be made.
            let r = env.ok(&create_args("git-overlay", rs, "killed"));
            assert_eq!(git(&cwd(&r), &["status", "--porcelain"]), "", "{what}");
            env.ok(&["root", "destroy", r["id"].as_str().unwrap()]);
            assert_consistent(&env, &repo, &what);
        }
    }
}

/// Every point a git-overlay destroy passes, in order.
const DESTROY_POINTS: &[&str] = &[
    "root.destroy.recorded",
    "git-overlay.destroy.unmounted",
    "git-overlay.destroy.unlocked",
    "worktree.destroy.git-removed",
    "worktree.destroy.pruned",
    "root.destroy.backend-done",
    "root.destroy.files-removed",
];

/// A git-overlay root with a commit of its own on branch `b`.
fn root_with_commit(env: &Env, repo: &Path, b: &str) -> (String, PathBuf) {
    let r = env.ok(&create_args("git-overlay", repo.to_str().unwrap(), b));
    let wt = cwd(&r);
    std::fs::write(wt.join("committed.txt"), "work\n").unwrap();
    git(&wt, &["add", "committed.txt"]);
    git(&wt, &["commit", "-qm", "work"]);
    (r["id"].as_str().unwrap().to_string(), wt)
}

#[test]
fn a_destroy_killed_at_any_point_is_finished_and_keeps_the_branch() {
    if !can_mount() {
        return;
    }
    for point in DESTROY_POINTS {
        for lost_mounts in [false, true] {
            let what = format!("{point} (reboot: {lost_mounts})");
            let env = Env::new();
            let repo = env.repo();
            let (id, wt) = root_with_commit(&env, &repo, "kept");
            let out = env.spawnable(&["root", "destroy", &id]).env("EXECROOT_FAILPOINT", point).output().unwrap();
            assert_eq!(out.status.signal(), Some(9), "{what}: not killed: {}", describe(&out));
            if lost_mounts {
                reboot(&env);
            }
            let fixed = env.ok(&["doctor", "--repair"]);
            assert!(fixed["ok"] == true, "{what}: {fixed}");
            env.fails(&["root", "show", &id], 4);
            assert!(!wt.exists(), "{what}: the worktree is left");
            assert_eq!(git(&repo, &["log", "-1", "--format=%s", "kept"]).trim(), "work", "{what}: the commit is lost");
            assert_consistent(&env, &repo, &what);
        }
    }
}

#[test]
fn a_refused_destroy_never_reaches_a_failpoint_and_a_forced_one_is_finished_or_kept() {
    if !can_mount() {
        return;
    }
    for point in DESTROY_POINTS {
        let env = Env::new();
        let repo = env.repo();
        let (id, wt) = root_with_commit(&env, &repo, "dirty");
        std::fs::write(wt.join("draft.txt"), "unsaved\n").unwrap();
        // Refused before anything is touched: no failpoint is reached, nothing is lost.
        let out = env.spawnable(&["root", "destroy", &id]).env("EXECROOT_FAILPOINT", point).output().unwrap();
        assert_eq!(out.status.code(), Some(5), "{point}: {}", describe(&out));
        assert_eq!(std::fs::read_to_string(wt.join("draft.txt")).unwrap(), "unsaved\n");
        assert_eq!(env.ok(&["root", "show", &id])["state"], "ready");

        let out =
            env.spawnable(&["root", "destroy", &id, "--force"]).env("EXECROOT_FAILPOINT", point).output().unwrap();
        assert_eq!(out.status.signal(), Some(9), "{point}: not killed: {}", describe(&out));
        let fixed = env.cmd(&["doctor", "--repair"]).output().unwrap();
        if fixed.status.success() {
            // Finished: what --force discards is gone, the commit is not.
            env.fails(&["root", "show", &id], 4);
            assert!(!wt.exists(), "{point}");
        } else {
            // Killed before it unmounted: the root is whole and its work is judged again,
            // kept and named (no record says the destroy was forced); a second --force ends it.
            assert_eq!(fixed.status.code(), Some(3), "{point}: {}", describe(&fixed));
            assert!(String::from_utf8_lossy(&fixed.stdout).contains("draft.txt"), "{point}: {}", describe(&fixed));
            assert_eq!(std::fs::read_to_string(wt.join("draft.txt")).unwrap(), "unsaved\n", "{point}");
            env.ok(&["root", "destroy", &id, "--force"]);
        }
        assert_eq!(git(&repo, &["log", "-1", "--format=%s", "dirty"]).trim(), "work", "{point}");
        assert_consistent(&env, &repo, point);
    }
}

#[test]
fn a_run_killed_mid_way_then_a_reboot_keeps_committed_and_uncommitted_work() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let repo = env.repo();
    let r = env.ok(&create_args("git-overlay", repo.to_str().unwrap(), "durable"));
    let id = r["id"].as_str().unwrap().to_string();
    let wt = cwd(&r);
    let started = env.path("started");
    // A run that commits, leaves work uncommitted, syncs it, and is still running when the
    // machine goes down.
    let script = format!(
        "echo one > committed.txt && git -c safe.directory='*' add committed.txt && \
         git -c user.name=t -c user.email=t@e -c safe.directory='*' commit -qm run && \
         echo two > uncommitted.txt && echo changed > .gitignore && sync && touch {} && sleep 600",
        started.display()
    );
    let mut child =
        env.spawnable(&["exec", &id, "--", "sh", "-c", &script]).stdout(std::process::Stdio::null()).spawn().unwrap();
    let t0 = std::time::Instant::now();
    while !started.exists() {
        assert!(t0.elapsed().as_secs() < 60, "the run did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The crash: execroot and its run die, then the mounts go as in a reboot.
    let pid = child.id() as i32;
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    child.wait().unwrap();
    execroot::sys::procs::kill_users_of(&wt, 10);
    let t0 = std::time::Instant::now();
    while !execroot::sys::procs::users_of(&wt).is_empty() {
        assert!(t0.elapsed().as_secs() < 30, "the run is still alive: {:?}", execroot::sys::procs::users_of(&wt));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    reboot(&env);
    assert!(!wt.join("committed.txt").exists(), "still mounted");
    let fixed = env.ok(&["doctor", "--repair"]);
    assert!(actions(&fixed).contains("remounted"), "{fixed}");
    assert_eq!(std::fs::read_to_string(wt.join("committed.txt")).unwrap(), "one\n");
    assert_eq!(std::fs::read_to_string(wt.join("uncommitted.txt")).unwrap(), "two\n");
    assert_eq!(git(&repo, &["log", "-1", "--format=%s", "durable"]).trim(), "run");
    let status = git(&wt, &["status", "--porcelain"]);
    assert_eq!(status, " M .gitignore\n?? uncommitted.txt\n", "{status}");
    assert_consistent(&env, &repo, "after the reboot");
    env.fails(&["root", "destroy", &id], 5);
    env.ok(&["root", "destroy", &id, "--force"]);
    assert!(branch_exists(&repo, "durable"), "the branch with the run's commit was deleted");
    assert_consistent(&env, &repo, "after destroy");
}

/// How a worktree is taken away behind execroot's back.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Gone {
    /// `git worktree unlock` and `git worktree remove --force` while the root is mounted.
    RemovedMounted,
    /// The same after a reboot lost the mount (the directory is empty).
    RemovedUnmounted,
    /// After a reboot, the directory deleted, unlocked and `git worktree prune`.
    Pruned,
    /// The main repository moved away.
    RepoMoved,
}

/// A root of `backend` with a commit on branch `b` and an uncommitted `draft.txt`, taken away
/// `how`. Returns (root id, worktree, the repository as it is now).
fn gone_root(env: &Env, backend: &str, how: Gone) -> (String, PathBuf, PathBuf) {
    let repo = env.repo();
    let r = env.ok(&create_args(backend, repo.to_str().unwrap(), "b"));
    assert_eq!(r["backend"], backend, "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    let wt = cwd(&r);
    std::fs::write(wt.join("committed.txt"), "work\n").unwrap();
    git(&wt, &["add", "committed.txt"]);
    git(&wt, &["commit", "-qm", "work"]);
    std::fs::write(wt.join("draft.txt"), "unsaved\n").unwrap();
    let wt_s = wt.to_str().unwrap();
    let unlock = |repo: &Path| {
        if backend == "git-overlay" {
            git(repo, &["worktree", "unlock", wt_s]);
        }
    };
    let mut now = repo.clone();
    match how {
        Gone::RemovedMounted => {
            unlock(&repo);
            // git removes the files through the mount and its record; the mount point stays.
            let _ = std::process::Command::new("git")
                .args(["-C", repo.to_str().unwrap(), "worktree", "remove", "--force", wt_s])
                .output()
                .unwrap();
        }
        Gone::RemovedUnmounted => {
            reboot(env);
            unlock(&repo);
            git(&repo, &["worktree", "remove", "--force", wt_s]);
        }
        Gone::Pruned => {
            reboot(env);
            std::fs::remove_dir_all(&wt).unwrap();
            unlock(&repo);
            git(&repo, &["worktree", "prune"]);
        }
        Gone::RepoMoved => {
            now = env.path("repo-moved");
            std::fs::rename(&repo, &now).unwrap();
        }
    }
    if how != Gone::RepoMoved {
        assert!(listed_worktrees(&repo).is_empty(), "{how:?}: git still lists the worktree");
    }
    (id, wt, now)
}

/// What the user of a moved repository does about a worktree execroot could not tell: unlock
/// (a git-overlay root's lock) and prune.
fn forget_worktree(repo: &Path, wt: &Path, backend: &str) {
    if backend == "git-overlay" {
        git(repo, &["worktree", "unlock", wt.to_str().unwrap()]);
    }
    git(repo, &["worktree", "prune"]);
}

/// Whether `draft.txt` is expected to survive `how` (git's own remove deletes it).
fn draft_survives(backend: &str, how: Gone) -> bool {
    match how {
        Gone::RemovedMounted => false,
        Gone::RemovedUnmounted | Gone::Pruned => backend == "git-overlay",
        Gone::RepoMoved => true,
    }
}

#[test]
fn doctor_repairs_a_worktree_git_removed_behind_execroots_back() {
    if !can_mount() {
        return;
    }
    for backend in ["git-overlay", "worktree"] {
        for how in [Gone::RemovedMounted, Gone::RemovedUnmounted, Gone::Pruned, Gone::RepoMoved] {
            if backend == "worktree" && how == Gone::RemovedUnmounted {
                continue;
            }
            let what = format!("{backend} {how:?}");
            let env = Env::new();
            let (id, wt, repo) = gone_root(&env, backend, how);
            // Reported, not repaired, without --repair; the root is still there.
            let found = env.fails(&["doctor"], 3);
            let f = found["findings"].as_array().unwrap();
            assert!(
                f.iter().any(|f| f["kind"] == "worktree-gone" && f["root"] == id.as_str() && f["repaired"] == false),
                "{what}: {found}"
            );
            assert!(f.iter().all(|f| f["kind"] == "worktree-gone"), "{what}: {found}");
            env.ok(&["root", "show", &id]);
            let survives = draft_survives(backend, how);
            if survives {
                // A destroy without --force refuses: the draft is found nowhere else.
                let v = env.fails(&["root", "destroy", &id], 5);
                assert!(v["error"]["message"].as_str().unwrap().contains("draft.txt"), "{what}: {v}");
            }

            if how == Gone::RepoMoved {
                // Fail closed: a missing repository may be on a filesystem not mounted yet,
                // so the root is kept and reported, never removed by doctor.
                let kept = env.fails(&["doctor", "--repair"], 3);
                let acts = actions(&kept);
                assert!(acts.contains("worktree-gone") && acts.contains("kept"), "{what}: {kept}");
                assert_eq!(std::fs::read_to_string(wt.join("draft.txt")).unwrap(), "unsaved\n", "{what}");
                // Its files can still be exported, then a forced destroy removes it.
                let out = env.path("exported");
                env.ok(&["root", "export", &id, out.to_str().unwrap()]);
                assert_eq!(std::fs::read_to_string(out.join("draft.txt")).unwrap(), "unsaved\n", "{what}");
                env.ok(&["root", "destroy", &id, "--force"]);
                env.fails(&["root", "show", &id], 4);
                assert!(!wt.exists(), "{what}: the worktree directory is left");
                assert_eq!(git(&repo, &["log", "-1", "--format=%s", "b"]).trim(), "work", "{what}");
                assert_eq!(listed_worktrees(&repo).len(), 1, "{what}");
                forget_worktree(&repo, &wt, backend);
                assert_consistent(&env, &repo, &what);
                continue;
            }
            let fixed = env.ok(&["doctor", "--repair"]);
            let acts = actions(&fixed);
            assert!(acts.contains("worktree-gone") && acts.contains("removed the root"), "{what}: {fixed}");
            env.fails(&["root", "show", &id], 4);
            assert!(!wt.exists(), "{what}: the worktree directory is left");
            // The commit is the branch's, wherever the repository is: never deleted.
            assert_eq!(git(&repo, &["log", "-1", "--format=%s", "b"]).trim(), "work", "{what}");
            let rescued = format!("rescued-{id}");
            if survives {
                assert!(acts.contains(&rescued) && acts.contains("draft.txt"), "{what}: {fixed}");
                // Kept as a snapshot: a root made from it holds the draft as it was.
                let r = env.root(&["--class", "routine", "--backend", "copy", "--from", &rescued]);
                assert_eq!(std::fs::read_to_string(cwd(&r).join("draft.txt")).unwrap(), "unsaved\n", "{what}");
                if how != Gone::RepoMoved {
                    // What the branch holds as committed is not copied again.
                    assert!(!cwd(&r).join("committed.txt").exists(), "{what}");
                }
                env.ok(&["root", "destroy", r["id"].as_str().unwrap(), "--force"]);
            } else {
                assert!(!acts.contains(&rescued), "{what}: {fixed}");
            }
            if how == Gone::RepoMoved {
                // execroot could not reach the moved repository: its stale record is git's to prune.
                assert_eq!(listed_worktrees(&repo).len(), 1, "{what}");
                forget_worktree(&repo, &wt, backend);
            }
            assert_consistent(&env, &repo, &what);
        }
    }
}

#[test]
fn a_gone_worktree_can_be_destroyed() {
    if !can_mount() {
        return;
    }
    for (backend, how) in [
        ("git-overlay", Gone::RemovedMounted),
        ("git-overlay", Gone::RemovedUnmounted),
        ("git-overlay", Gone::Pruned),
        ("git-overlay", Gone::RepoMoved),
        ("worktree", Gone::RemovedMounted),
        ("worktree", Gone::RepoMoved),
    ] {
        let what = format!("{backend} {how:?}");
        let env = Env::new();
        let (id, wt, repo) = gone_root(&env, backend, how);
        if draft_survives(backend, how) {
            let v = env.fails(&["root", "destroy", &id], 5);
            assert!(v["error"]["message"].as_str().unwrap().contains("draft.txt"), "{what}: {v}");
            let d = env.ok(&["root", "destroy", &id, "--force"]);
            assert!(d["warnings"].to_string().contains("draft.txt"), "{what}: {d}");
        } else {
            let d = env.ok(&["root", "destroy", &id]);
            // (A plain worktree git removed leaves nothing to judge, nor to warn about.)
            assert!(backend == "worktree" || d["warnings"].to_string().contains("gone"), "{what}: {d}");
        }
        assert!(!wt.exists(), "{what}");
        assert_eq!(git(&repo, &["log", "-1", "--format=%s", "b"]).trim(), "work", "{what}");
        if how == Gone::RepoMoved {
            forget_worktree(&repo, &wt, backend);
        }
        assert_consistent(&env, &repo, &what);
    }
}

/// Write an executable hook script at `path`.
fn hook(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn the_post_checkout_hook_runs_as_git_worktree_add_runs_it() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let repo = env.repo();
    let rs = repo.to_str().unwrap();
    hook(&repo.join(".git/hooks/post-checkout"), r#"echo "$1 $2 $3 $(pwd) ${GIT_DIR:-unset}" > hook-ran"#);
    let real = env.path("real");
    git(&repo, &["worktree", "add", "-q", "--detach", real.to_str().unwrap(), "main"]);
    let expected = std::fs::read_to_string(real.join("hook-ran")).unwrap();
    let r = env.ok(&create_args("git-overlay", rs, "h1"));
    assert_eq!(r["backend"], "git-overlay", "{r}");
    assert_eq!(r["warnings"].as_array().map(Vec::len), Some(0), "{r}");
    let wt = cwd(&r);
    let got = std::fs::read_to_string(wt.join("hook-ran")).unwrap();
    // The same arguments (null id, the commit, 1) and environment; in the root's worktree.
    assert_eq!(
        got.replace(wt.to_str().unwrap(), "WT"),
        expected.replace(real.canonicalize().unwrap().to_str().unwrap(), "WT"),
        "{got} / {expected}"
    );
    let head = git(&wt, &["rev-parse", "HEAD"]);
    assert!(got.starts_with(&format!("{} {} 1 ", "0".repeat(40), head.trim())), "{got}");
    // What the hook wrote is the run's: untracked, in the worktree.
    assert_eq!(git(&wt, &["status", "--porcelain"]), "?? hook-ran\n");

    // core.hooksPath is followed.
    let hooks = env.path("hooks");
    hook(&hooks.join("post-checkout"), "echo from-hooks-path > hook-ran");
    git(&repo, &["config", "core.hooksPath", hooks.to_str().unwrap()]);
    let r = env.ok(&create_args("git-overlay", rs, "h2"));
    assert_eq!(std::fs::read_to_string(cwd(&r).join("hook-ran")).unwrap(), "from-hooks-path\n");

    // A failing hook: the root is made, ready, and the failure is a warning.
    hook(&hooks.join("post-checkout"), "echo hook says no >&2; exit 3");
    let r = env.ok(&create_args("git-overlay", rs, "h3"));
    let w = r["warnings"].to_string();
    assert!(w.contains("post-checkout") && w.contains("exit status 3") && w.contains("hook says no"), "{r}");
    assert_eq!(env.ok(&["root", "show", r["id"].as_str().unwrap()])["state"], "ready");

    // Not executable: not run, as git does not.
    hook(&hooks.join("post-checkout"), "echo ran > hook-ran");
    std::fs::set_permissions(hooks.join("post-checkout"), std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let r = env.ok(&create_args("git-overlay", rs, "h4"));
    assert!(!cwd(&r).join("hook-ran").exists());
    assert_eq!(r["warnings"].as_array().map(Vec::len), Some(0), "{r}");
    git(&repo, &["worktree", "remove", "--force", real.to_str().unwrap()]);
    for id in env.ok(&["root", "list"])["roots"].as_array().unwrap() {
        env.ok(&["root", "destroy", id["id"].as_str().unwrap(), "--force"]);
    }
    assert_consistent(&env, &repo, "hooks");
}

#[test]
fn a_root_in_use_is_not_destroyed_and_stays_mounted() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let repo = env.repo();
    let r = env.ok(&create_args("git-overlay", repo.to_str().unwrap(), "busy"));
    let (id, wt) = (r["id"].as_str().unwrap().to_string(), cwd(&r));
    let mut inside = std::process::Command::new("sleep").arg("600").current_dir(&wt).spawn().unwrap();
    // The unmount is not waited for (mount::unmount_no_wait), but a busy one is still refused.
    let out = env.cmd(&["root", "destroy", &id]).output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", describe(&out));
    assert_eq!(parse(&out)["cleaned"], false);
    assert!(mounts_below(&env.store()).contains(&wt), "the root was unmounted");
    assert_eq!(env.ok(&["root", "show", &id])["state"], "ready");
    assert_eq!(git(&wt, &["status", "--porcelain"]), "");
    inside.kill().unwrap();
    inside.wait().unwrap();
    assert_eq!(env.ok(&["root", "destroy", &id])["cleaned"], true);
    assert_consistent(&env, &repo, "after destroy");
}
