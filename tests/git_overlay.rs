//! The git-overlay backend: real git, real mounts. Its working tree must be what
//! `git worktree add` checks out, byte for byte and mode for mode.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;

/// A repository whose checkout depends on .gitattributes: eol conversion, export-ignore and
/// export-subst (which a checkout must not apply), a symlink and an executable.
fn attr_repo(env: &Env, name: &str, attrs: &str) -> PathBuf {
    let r = env.path(name);
    std::fs::create_dir_all(r.join("src/deep")).unwrap();
    std::fs::write(r.join(".gitattributes"), attrs).unwrap();
    std::fs::write(r.join("a.txt"), "one\ntwo\n").unwrap();
    std::fs::write(r.join("src/lib.rs"), "fn main() {}\n// $Format:%H$\n").unwrap();
    std::fs::write(r.join("src/deep/notes.md"), "x\ny\n").unwrap();
    std::fs::write(r.join("secret.cfg"), "not exported\n").unwrap();
    std::fs::write(r.join("bin.dat"), [0u8, 1, 2, b'\n', 0xff]).unwrap();
    std::fs::write(r.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(r.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("src/lib.rs", r.join("link")).unwrap();
    std::fs::write(r.join(".gitignore"), "*.log\n").unwrap();
    git(&r, &["init", "-q", "-b", "main"]);
    git(&r, &["add", "-A"]);
    git(&r, &["commit", "-qm", "base"]);
    r
}

/// Every entry below `dir` but `.git`: (path, mode bits, kind, content or link target).
fn listing(dir: &Path) -> Vec<(String, u32, String, Vec<u8>)> {
    let mut v = Vec::new();
    for e in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned();
        if rel == ".git" {
            continue;
        }
        let md = std::fs::symlink_metadata(e.path()).unwrap();
        let (kind, data) = if md.file_type().is_symlink() {
            ("link", std::fs::read_link(e.path()).unwrap().into_os_string().into_encoded_bytes())
        } else if md.is_dir() {
            ("dir", vec![])
        } else {
            ("file", std::fs::read(e.path()).unwrap())
        };
        let mode = if md.file_type().is_symlink() { 0 } else { md.permissions().mode() & 0o7777 };
        v.push((rel, mode, kind.to_string(), data));
    }
    v
}

fn create(env: &Env, repo: &Path, branch: &str) -> serde_json::Value {
    env.repo_root("git-overlay", repo.to_str().unwrap(), &["--branch", branch])
}

fn snapshot_count(env: &Env) -> usize {
    std::fs::read_dir(env.store().join("snapshots")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn checkout_equals_git_worktree_add() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    for (name, attrs, autocrlf) in [
        ("crlf-all", "* text=auto eol=crlf\nsecret.cfg export-ignore\nsrc/lib.rs export-subst\n", None),
        ("crlf-txt", "*.txt eol=crlf\n*.md text eol=crlf\nsecret.cfg export-ignore\nsrc/*.rs export-subst\n", None),
        ("autocrlf", "secret.cfg export-ignore\n", Some("true")),
    ] {
        let repo = attr_repo(&env, name, attrs);
        if let Some(v) = autocrlf {
            git(&repo, &["config", "core.autocrlf", v]);
        }
        let real = env.path(&format!("{name}-real"));
        git(&repo, &["worktree", "add", "-q", "--detach", real.to_str().unwrap(), "main"]);
        let r = create(&env, &repo, &format!("b-{name}"));
        assert_eq!(r["backend"], "git-overlay", "{r}");
        assert_eq!(r["providerType"], "git_worktree", "{r}");
        assert_eq!(env.ok(&["root", "show", r["id"].as_str().unwrap()])["providerType"], "git_worktree");
        let wt = cwd(&r);
        let got = listing(&wt);
        assert_eq!(got, listing(&real), "{name}: the overlay differs from git worktree add");
        // export-ignore and export-subst did not apply, eol conversion did.
        assert!(wt.join("secret.cfg").exists());
        assert!(std::fs::read_to_string(wt.join("src/lib.rs")).unwrap().contains("$Format:%H$"));
        if name == "crlf-all" || name == "crlf-txt" {
            assert_eq!(std::fs::read(wt.join("a.txt")).unwrap(), b"one\r\ntwo\r\n", "{name}");
        }
        assert!(std::fs::metadata(wt.join("run.sh")).unwrap().permissions().mode() & 0o111 != 0);
        // The index's stat data is exact: diff-files compares it without refreshing.
        assert_eq!(git(&wt, &["diff-files", "--name-only"]), "", "{name}: the index needs a refresh");
        // git status is clean from the start, and git knows the worktree, locked.
        assert_eq!(git(&wt, &["status", "--porcelain"]), "", "{name}");
        // The index's cache-tree (which git trusts without looking) is the commit's own tree.
        assert_eq!(git(&wt, &["write-tree"]), git(&wt, &["rev-parse", "HEAD^{tree}"]), "{name}: cache-tree");
        let list = git(&repo, &["worktree", "list", "--porcelain"]);
        let wt_s = wt.to_str().unwrap();
        let rec = list.split("\n\n").find(|r| r.contains(wt_s)).unwrap_or_else(|| panic!("{list}"));
        assert!(rec.contains("locked execroot root"), "{rec}");
        assert_eq!(git(&wt, &["rev-parse", "--abbrev-ref", "HEAD"]).trim(), format!("b-{name}"));
        git(&repo, &["worktree", "remove", "--force", real.to_str().unwrap()]);
    }
}

#[test]
fn commits_land_and_destroy_keeps_work() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let repo = attr_repo(&env, "repo", "*.txt eol=crlf\n");
    let before = snapshot_count(&env);
    let r = create(&env, &repo, "feature");
    let id = r["id"].as_str().unwrap().to_string();
    let wt = cwd(&r);
    let after_first = snapshot_count(&env);
    assert_eq!(after_first, before + 1, "the first root of a commit ingests its checkout");

    // A second root of the same commit ingests nothing.
    let r2 = create(&env, &repo, "second");
    assert_eq!(snapshot_count(&env), after_first, "the second root ingested a snapshot");
    assert_eq!(r2["snapshots"], r["snapshots"]);
    assert_eq!(git(&cwd(&r2), &["status", "--porcelain"]), "");

    // Uncommitted work blocks destroy, and is listed.
    std::fs::write(wt.join("new.txt"), "new\n").unwrap();
    std::fs::write(wt.join("src/lib.rs"), "changed\n").unwrap();
    std::fs::write(wt.join("build.log"), "ignored\n").unwrap();
    let show = env.ok(&["root", "show", &id]);
    assert_eq!(show["git"]["untrackedEntryCount"], 1, "{show}");
    assert_eq!(show["git"]["dirtyEntryCount"], 1, "{show}");
    let v = env.fails(&["root", "destroy", &id], 5);
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("new.txt") && msg.contains("src/lib.rs"), "{v}");
    // A staged deletion of an untouched file blocks it too (nothing in the upper shows it).
    git(&wt, &["add", "-A"]);
    git(&wt, &["commit", "-qm", "work"]);
    git(&wt, &["rm", "-q", "--cached", "a.txt"]);
    let v = env.fails(&["root", "destroy", &id], 5);
    assert!(v["error"]["message"].as_str().unwrap().contains("a.txt"), "{v}");
    git(&wt, &["reset", "-q"]);

    // The commit is on the branch in the main repository.
    assert_eq!(git(&repo, &["log", "-1", "--format=%s", "feature"]).trim(), "work");
    assert_eq!(git(&repo, &["show", "feature:new.txt"]), "new\n");
    let d = env.ok(&["root", "destroy", &id]);
    assert_eq!(d["cleaned"], true, "{d}");
    assert!(d["warnings"].to_string().contains("kept"), "{d}");
    assert!(branch_exists(&repo, "feature"), "a branch with unique commits was deleted");
    assert!(!wt.exists());
    assert!(!git(&repo, &["worktree", "list"]).contains(wt.to_str().unwrap()));

    // --force discards; a branch without unique commits goes with its root.
    let wt2 = cwd(&r2);
    std::fs::remove_file(wt2.join("a.txt")).unwrap();
    let id2 = r2["id"].as_str().unwrap();
    let v = env.fails(&["root", "destroy", id2], 5);
    assert!(v["error"]["message"].as_str().unwrap().contains("a.txt"), "{v}");
    let d = env.ok(&["root", "destroy", id2, "--force"]);
    assert!(d["warnings"].to_string().contains("a.txt"), "{d}");
    assert!(!branch_exists(&repo, "second"));
    assert_eq!(git(&repo, &["worktree", "list"]).lines().count(), 1);
}

#[test]
fn unreproducible_trees_fall_back_to_worktree() {
    let env = Env::new();
    // A smudge filter configured for a path of the tree (as git LFS does).
    let repo = attr_repo(&env, "lfs", "*.dat filter=fake\n");
    git(&repo, &["config", "filter.fake.smudge", "cat"]);
    git(&repo, &["config", "filter.fake.clean", "cat"]);
    let r = create(&env, &repo, "f1");
    assert_eq!(r["backend"], "worktree", "{r}");
    assert_eq!(r["providerType"], "git_worktree", "{r}");
    assert!(r["warnings"].to_string().contains("smudge filter fake"), "{r}");
    env.ok(&["root", "destroy", r["id"].as_str().unwrap()]);

    // A submodule (gitlink).
    let sub = attr_repo(&env, "sub", "");
    let repo = attr_repo(&env, "super", "");
    git(&repo, &["-c", "protocol.file.allow=always", "submodule", "add", "-q", sub.to_str().unwrap(), "vendor"]);
    git(&repo, &["commit", "-qm", "sub"]);
    let r = create(&env, &repo, "f2");
    assert_eq!(r["backend"], "worktree", "{r}");
    assert!(r["warnings"].to_string().contains("submodule at vendor"), "{r}");
    env.ok(&["root", "destroy", r["id"].as_str().unwrap(), "--force"]);

    // Attributes from another tree than the commit's (git's attr.tree).
    let repo = attr_repo(&env, "attrtree", "*.txt text eol=crlf\n");
    git(&repo, &["config", "attr.tree", "HEAD"]);
    let r = create(&env, &repo, "f3");
    assert_eq!(r["backend"], "worktree", "{r}");
    assert!(r["warnings"].to_string().contains("attr.tree is set"), "{r}");
    env.ok(&["root", "destroy", r["id"].as_str().unwrap(), "--force"]);
}

#[test]
fn doctor_remounts_after_a_reboot() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let repo = attr_repo(&env, "repo", "");
    let r = create(&env, &repo, "durable");
    let wt = cwd(&r);
    std::fs::write(wt.join("draft.txt"), "unsaved\n").unwrap();
    // A reboot: the mount is lost, the upper stays.
    nix::mount::umount2(&wt, nix::mount::MntFlags::MNT_DETACH).unwrap();
    let id = r["id"].as_str().unwrap();
    assert_eq!(env.ok(&["root", "show", id])["durable"], true, "a git-overlay root is durable");
    // Unmounted, destroy still refuses: the upper says what changed.
    let v = env.fails(&["root", "destroy", id], 5);
    assert!(v["error"]["message"].as_str().unwrap().contains("draft.txt"), "{v}");
    env.ok(&["doctor", "--repair"]);
    assert_eq!(std::fs::read_to_string(wt.join("draft.txt")).unwrap(), "unsaved\n");
    assert_eq!(git(&wt, &["status", "--porcelain"]), "?? draft.txt\n");
    env.ok(&["root", "destroy", id, "--force"]);
    assert!(!wt.exists());
}

#[test]
fn a_create_killed_midway_is_undone() {
    if !can_mount() {
        return;
    }
    for point in ["git-overlay.create.checked-out", "git-overlay.create.added", "git-overlay.create.mounted"] {
        let env = Env::new();
        let repo = attr_repo(&env, "repo", "");
        let out = env
            .cmd(&[
                "root",
                "create",
                "--class",
                "repo-edit",
                "--backend",
                "git-overlay",
                "--repo",
                repo.to_str().unwrap(),
                "--base-ref",
                "main",
                "--branch",
                "killed",
            ])
            .env("EXECROOT_FAILPOINT", point)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{point}: {}", describe(&out));
        // A reboot loses whatever was mounted.
        for m in execroot::sys::mount::mounts_under(env.dir.path()).unwrap() {
            let _ = nix::mount::umount2(&m.target, nix::mount::MntFlags::MNT_DETACH);
        }
        env.ok(&["doctor", "--repair"]);
        assert_eq!(env.ok(&["root", "list"])["roots"].as_array().map(Vec::len), Some(0), "{point}");
        assert_eq!(git(&repo, &["worktree", "list"]).lines().count(), 1, "{point}");
        assert!(!branch_exists(&repo, "killed"), "{point}");
    }
}

#[test]
fn provider_type_names_the_kind_of_workspace() {
    let env = Env::new();
    let tree = env.fixture("small", 1, "tree");
    let id = env.ingest(&tree);
    let r = env.root(&["--class", "routine", "--backend", "copy", "--from", &id]);
    assert_eq!(r["providerType"], "local_fs", "{r}");
    let list = env.ok(&["root", "list"]);
    assert_eq!(list["roots"][0]["providerType"], "local_fs", "{list}");
}

#[test]
fn a_mounted_dependency_tree_is_not_work() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let repo = attr_repo(&env, "repo", "");
    let deps = env.fixture("small", 99, "deps");
    env.ok(&["snapshot", "create", deps.to_str().unwrap(), "--name", "deps"]);
    let r = env.repo_root("git-overlay", repo.to_str().unwrap(), &["--mount", "node_modules=deps"]);
    assert_eq!(r["backend"], "git-overlay", "{r}");
    let wt = cwd(&r);
    assert!(wt.join("node_modules").read_dir().unwrap().count() > 0);
    std::fs::write(wt.join("node_modules/installed-by-run"), b"x").unwrap();
    let show = env.ok(&["root", "show", r["id"].as_str().unwrap()]);
    assert_eq!(show["git"]["untrackedEntryCount"], 0, "{show}");
    let d = env.ok(&["root", "destroy", r["id"].as_str().unwrap()]);
    assert_eq!(d["cleaned"], true, "{d}");
    assert!(!wt.exists());
    assert!(execroot::sys::mount::mounts_under(env.dir.path()).unwrap().is_empty());
}

#[test]
fn repo_edit_uses_git_overlay_where_overlay_can_mount() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let repo = attr_repo(&env, "repo", "");
    let rs = repo.to_str().unwrap();
    let r = env.root(&["--class", "repo-edit", "--repo", rs, "--base-ref", "main"]);
    assert_eq!(r["backend"], "git-overlay", "{r}");
    assert_eq!(r["warnings"].as_array().map(Vec::len), Some(0), "{r}");
    // The plain worktree backend stays selectable.
    let w = env.repo_root("worktree", rs, &[]);
    assert_eq!(w["backend"], "worktree", "{w}");
    for v in [r, w] {
        env.ok(&["root", "destroy", v["id"].as_str().unwrap()]);
    }
}

#[test]
fn git_and_files_belong_to_the_repository_owner() {
    if !can_mount() {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let repo = attr_repo(&env, "repo", "*.txt eol=crlf\n");
    for e in walkdir::WalkDir::new(&repo) {
        std::os::unix::fs::lchown(e.unwrap().path(), Some(65534), Some(65534)).unwrap();
    }
    let theirs = env.path("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::lchown(&theirs, Some(65534), Some(65534)).unwrap();
    let real = theirs.join("real");
    let (ok, out) = as_nobody(&format!(
        "git -c safe.directory='*' -C {} worktree add -q --detach {} main",
        repo.display(),
        real.display()
    ));
    assert!(ok, "{out}");
    let r = create(&env, &repo, "b1");
    assert_eq!(r["backend"], "git-overlay", "{r}");
    let wt = cwd(&r);
    assert_eq!(listing(&wt), listing(&real));
    // Nothing root-owned lands in the repository or shows in the worktree.
    for e in walkdir::WalkDir::new(repo.join(".git")).into_iter().chain(walkdir::WalkDir::new(&wt)) {
        let e = e.unwrap();
        assert_eq!(e.path().symlink_metadata().unwrap().uid(), 65534, "{} is not the owner's", e.path().display());
    }
    let (ok, out) = as_nobody(&format!(
        "cd {} && test -z \"$(git status --porcelain)\" && echo x > new && git add new && git -c user.name=n -c user.email=n@e commit -qm n",
        wt.display()
    ));
    assert!(ok, "{out}");
    assert_eq!(env.ok(&["root", "destroy", r["id"].as_str().unwrap()])["cleaned"], true);
    assert!(branch_exists(&repo, "b1"));
}

#[test]
fn a_new_commit_is_ingested_as_a_change_on_its_parents_checkout() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let repo = attr_repo(&env, "repo", "*.txt eol=crlf\n*.id ident\n");
    std::fs::create_dir_all(repo.join("gone/deeper")).unwrap();
    std::fs::write(repo.join("gone/deeper/x"), "x\n").unwrap();
    // Attributes below the top too: the change's checkout reads every `.gitattributes`.
    std::fs::write(repo.join("src/.gitattributes"), "*.rs eol=crlf\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "more"]);
    let first = create(&env, &repo, "at-parent");
    let parent_snap = first["snapshots"][0].as_str().unwrap().to_string();
    // A commit that modifies, adds (in a new directory), deletes a file and a whole
    // directory, makes a file executable and re-points a symlink.
    std::fs::write(repo.join("a.txt"), "changed\n").unwrap();
    std::fs::write(repo.join("src/lib.rs"), "fn changed() {}\n").unwrap();
    std::fs::create_dir_all(repo.join("new/dir")).unwrap();
    std::fs::write(repo.join("new/dir/b.txt"), "b\n").unwrap();
    std::fs::remove_file(repo.join("secret.cfg")).unwrap();
    std::fs::remove_dir_all(repo.join("gone")).unwrap();
    std::fs::set_permissions(repo.join("bin.dat"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_file(repo.join("link")).unwrap();
    std::os::unix::fs::symlink("a.txt", repo.join("link")).unwrap();
    // A new symlink, a name that is not UTF-8 and an `ident` expansion, in new directories.
    std::os::unix::fs::symlink("b.txt", repo.join("new/dir/to-b")).unwrap();
    std::fs::create_dir_all(repo.join("new/raw")).unwrap();
    std::fs::write(repo.join("new/raw").join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt")), "latin-1\n").unwrap();
    std::fs::write(repo.join("new/v.id"), "$Id$\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "change"]);
    let before = snapshot_count(&env);
    let r = create(&env, &repo, "at-child");
    assert_eq!(snapshot_count(&env), before + 1);
    let snap = r["snapshots"][0].as_str().unwrap();
    let info = env.ok(&["snapshot", "show", snap]);
    assert_eq!(info["parents"][0].as_str(), Some(parent_snap.as_str()), "not stacked on the parent's checkout: {info}");
    let real = env.path("real");
    git(&repo, &["worktree", "add", "-q", "--detach", real.to_str().unwrap(), "main"]);
    let wt = cwd(&r);
    assert_eq!(listing(&wt), listing(&real));
    let id = std::fs::read_to_string(wt.join("new/v.id")).unwrap();
    assert!(id.starts_with("$Id: ") && id.len() > 45, "ident not expanded: {id:?}");
    assert_eq!(std::fs::read(wt.join("src/lib.rs")).unwrap(), b"fn changed() {}\r\n", "src/.gitattributes");
    assert!(!wt.join("gone").exists());
    assert_eq!(git(&wt, &["diff-files", "--name-only"]), "");
    assert_eq!(git(&wt, &["status", "--porcelain"]), "");
    assert_eq!(git(&wt, &["write-tree"]), git(&wt, &["rev-parse", "HEAD^{tree}"]), "cache-tree");
}

#[test]
fn a_destroy_right_after_a_commit_waits_out_gits_detached_maintenance() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let repo = attr_repo(&env, "repo", "");
    for i in 0..3 {
        let r = create(&env, &repo, &format!("m{i}"));
        let wt = cwd(&r);
        std::fs::write(wt.join("new.txt"), "x\n").unwrap();
        git(&wt, &["add", "new.txt"]);
        // git's own defaults (no maintenance.auto=false): git >= 2.47 leaves a detached
        // `git maintenance run --auto` in the worktree for a moment after the commit.
        let o = std::process::Command::new("git")
            .args(["-C", wt.to_str().unwrap(), "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "m"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let d = env.ok(&["root", "destroy", r["id"].as_str().unwrap()]);
        assert_eq!(d["cleaned"], true, "{d}");
    }
}

/// A git still running in the root when the destroy first judges it is waited out, and what it
/// wrote meanwhile is judged too: the destroy is refused, the work kept. (A program named `git`
/// stands in for, say, a `git stash pop` that writes a moment later.)
#[test]
fn work_written_by_a_git_still_running_at_destroy_is_kept() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let repo = attr_repo(&env, "repo", "");
    let r = create(&env, &repo, "late");
    let wt = cwd(&r);
    // Both the shell and the sleep it starts are named `git`.
    let (bin, sleeper) = (env.path("fakegit"), env.path("fakegit-sleep"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&sleeper).unwrap();
    std::fs::copy("/bin/sh", bin.join("git")).unwrap();
    std::fs::copy("/bin/sleep", sleeper.join("git")).unwrap();
    let script = format!("{} 1; echo work > late-work.txt", sleeper.join("git").display());
    let mut late = std::process::Command::new(bin.join("git")).args(["-c", &script]).current_dir(&wt).spawn().unwrap();
    // The stand-in is inside the root before the destroy looks.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let d = env.fails(&["root", "destroy", r["id"].as_str().unwrap()], 5);
    assert!(d.to_string().contains("late-work.txt"), "{d}");
    assert!(late.wait().unwrap().success());
    assert_eq!(std::fs::read_to_string(wt.join("late-work.txt")).unwrap(), "work\n");
    let d = env.ok(&["root", "destroy", "--force", r["id"].as_str().unwrap()]);
    assert_eq!(d["cleaned"], true, "{d}");
}

/// `git status --porcelain ARGS` in `wt`, with git's untracked cache in use or turned off.
fn status(wt: &Path, cache: bool, args: &[&str]) -> String {
    let mut c = std::process::Command::new("git");
    c.arg("-C").arg(wt).args(["-c", "safe.directory=*", "status", "--porcelain"]).args(args);
    if !cache {
        c.env("GIT_DISABLE_UNTRACKED_CACHE", "1");
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "{o:?}");
    // git warns when it finds a cache it cannot use here ("disabled on this system or location").
    assert!(o.stderr.is_empty(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// Whether the index of the worktree at `wt` carries an untracked cache (`UNTR`).
/// How many directories a `git status` in `wt` opened (git's trace2 `read_directory/opendir`).
fn dirs_opened(wt: &Path) -> usize {
    let text = status_trace(wt);
    text.lines().filter_map(|l| l.split("opendir:").nth(1)).map(|n| n.trim().parse::<usize>().unwrap()).sum()
}

/// git's trace2 (perf format) of a `git status` in `wt`.
fn status_trace(wt: &Path) -> String {
    let trace = wt.parent().unwrap().join("trace2.txt");
    let o = std::process::Command::new("git")
        .arg("-C")
        .arg(wt)
        .args(["-c", "safe.directory=*", "status", "--porcelain"])
        .env("GIT_TRACE2_PERF", &trace)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let text = std::fs::read_to_string(&trace).unwrap();
    std::fs::remove_file(&trace).unwrap();
    text
}

fn has_untracked_cache(wt: &Path) -> bool {
    has_extension(wt, b"UNTR")
}

/// Whether the index of the worktree at `wt` carries the extension `sig`.
fn has_extension(wt: &Path, sig: &[u8; 4]) -> bool {
    let index = git(wt, &["rev-parse", "--path-format=absolute", "--git-path", "index"]);
    let bytes = std::fs::read(index.trim()).unwrap();
    bytes.windows(4).any(|w| w == sig)
}

/// `git status --porcelain ARGS` in `wt` with neither fsmonitor nor untracked cache, and
/// without rewriting the index (which would drop the fsmonitor's extension): the truth.
fn plain_status(wt: &Path, args: &[&str]) -> String {
    let o = std::process::Command::new("git")
        .arg("-C")
        .arg(wt)
        .args(["-c", "safe.directory=*", "-c", "core.fsmonitor=false", "status", "--porcelain"])
        .args(args)
        .env("GIT_DISABLE_UNTRACKED_CACHE", "1")
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    String::from_utf8(o.stdout).unwrap()
}

/// With `extensions.worktreeConfig` on, a root gets execroot's fsmonitor (its index valid as
/// of the create, its own config naming the hook), its first `git status` reads no file and
/// no directory but the top, and the hook never hides a change: after each of these steps,
/// `git status` (default, `-uall`, `--ignored`) says what it says with neither fsmonitor nor
/// untracked cache. A repository whose `core.fsmonitor` is set keeps its own; one whose main
/// worktree has its own `config.worktree` (which git copies) gets it all the same.
#[test]
fn the_fsmonitor_never_hides_a_change() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let repo = attr_repo(&env, "repo", "");
    git(&repo, &["config", "extensions.worktreeConfig", "true"]);
    let r = create(&env, &repo, "f");
    let wt = cwd(&r);
    assert!(has_extension(&wt, b"FSMN"), "no fsmonitor extension written");
    assert!(git(&wt, &["config", "core.fsmonitor"]).contains("git-fsmonitor"));
    let first = status_trace(&wt);
    assert!(first.contains("fsm_hook"), "the hook was not asked: {first}");
    assert!(!first.contains("trivial-response:1"), "the first answer was \"everything\"");
    let same = |what: &str| {
        for args in [&[][..], &["-uall"], &["--ignored"]] {
            assert_eq!(status(&wt, true, args), plain_status(&wt, args), "after {what}, status {args:?}");
        }
    };
    same("nothing");
    let sh = |wt: &Path, script: &str| {
        let o = std::process::Command::new("sh").arg("-ec").arg(script).current_dir(wt).output().unwrap();
        assert!(o.status.success(), "{script}: {o:?}");
    };
    type Step = (&'static str, &'static str);
    let steps: [Step; 17] = [
        ("a tracked file changed deep down", "echo more >> src/deep/notes.md"),
        ("a new file deep down", "echo n > src/deep/new"),
        ("another in the same directory", "echo n > src/deep/new2"),
        ("a tracked file removed", "rm src/lib.rs"),
        ("restored by git", "git checkout -- src/lib.rs"),
        ("a file added to the index, then removed", "echo a > src/added && git add src/added && rm src/added"),
        ("a new directory", "mkdir -p src/fresh/sub && echo f > src/fresh/sub/f"),
        ("a tree git has seen", "mkdir -p src/tree/inner && echo u > src/tree/inner/u1"),
        (
            "a tree moved in whole over it",
            "rm -rf src/tree && mkdir -p staging/inner && echo u > staging/inner/u2 && mv staging src/tree",
        ),
        ("a .gitignore added", "echo 'u2' > src/tree/inner/.gitignore"),
        ("an ignored file", "echo l > src/deep/x.log"),
        ("a directory of the commit renamed", "mv src/deep src/moved"),
        ("an executable bit set", "chmod +x a.txt"),
        ("a file replaced by a symlink", "rm bin.dat && ln -s a.txt bin.dat"),
        ("a file at the top", "echo t > top-new"),
        ("removed again", "rm top-new"),
        ("a change with its mtime set back", "echo x >> run.sh && touch -d 2001-01-01 run.sh"),
    ];
    for (what, script) in steps {
        sh(&wt, script);
        same(what);
    }
    let now = status(&wt, true, &["-uall"]);
    for line in [" M run.sh", " M a.txt", "?? src/tree/inner/.gitignore", "?? src/moved/new"] {
        assert!(now.lines().any(|l| l == line), "{line:?} missing from {now:?}");
    }
    // Quiet again: the answer names nothing, and nothing is read.
    status(&wt, true, &[]);
    assert!(!status_trace(&wt).contains("trivial-response:1"), "a quiet worktree answered \"everything\"");

    // git copies the main worktree's own config.worktree into the new worktree's: execroot
    // adds to it.
    let copied = attr_repo(&env, "copied", "");
    git(&copied, &["config", "extensions.worktreeConfig", "true"]);
    git(&copied, &["config", "--worktree", "color.ui", "auto"]);
    let r = create(&env, &copied, "f");
    assert!(has_extension(&cwd(&r), b"FSMN"));
    assert_eq!(git(&cwd(&r), &["config", "color.ui"]).trim(), "auto");
    assert_eq!(status(&cwd(&r), true, &[]), "");
    let own = attr_repo(&env, "own", "");
    git(&own, &["config", "extensions.worktreeConfig", "true"]);
    git(&own, &["config", "core.fsmonitor", "false"]);
    let r = create(&env, &own, "f");
    assert!(!has_extension(&cwd(&r), b"FSMN"), "written although the repository set core.fsmonitor");
    let plain = attr_repo(&env, "plain", "");
    let r = create(&env, &plain, "f");
    assert!(!has_extension(&cwd(&r), b"FSMN"), "written without extensions.worktreeConfig");
}

/// The untracked cache a root's index starts with makes the first `git status` skip reading
/// directories, and never hides anything: after each change (a new file deep down, a new
/// directory, an empty one, an ignored file, a `.gitignore` added, a tracked file removed, an
/// untracked one renamed, a directory removed), `git status` says what it says with the cache
/// turned off, in the default mode, with `-uall` and with `--ignored`. A repository that turns
/// the cache off (`core.untrackedCache=false`) gets none, nor does one with an fsmonitor; a
/// file written in the second the root was made is found after git rewrote the index.
#[test]
fn the_untracked_cache_never_hides_a_file() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let repo = attr_repo(&env, "repo", "");
    // Made at the start of a second, so that a file written right after falls in the second
    // the root's directories were stat-ed in (below).
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    std::thread::sleep(std::time::Duration::from_nanos(1_000_000_000 - u64::from(now.subsec_nanos())));
    let r = create(&env, &repo, "u");
    let wt = cwd(&r);
    std::fs::write(wt.join("same-second"), "s").unwrap();
    assert!(has_untracked_cache(&wt), "no untracked cache written");
    // git uses it: of the root's directories it opens only the top, written unscanned.
    assert_eq!(dirs_opened(&wt), 1, "the untracked cache was not used");
    let same = |what: &str| {
        for args in [&[][..], &["-uall"], &["--ignored"]] {
            assert_eq!(status(&wt, true, args), status(&wt, false, args), "after {what}, status {args:?}");
        }
    };
    // A file written in the second the root was made (git compares whole seconds), then the
    // index rewritten by git a second later, which ends its racy-ness: the top directory was
    // written unscanned, so git still reads it.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(wt.join("src/lib.rs"), "changed\n").unwrap();
    git(&wt, &["add", "src/lib.rs"]);
    same("a file written in the create's second");
    assert!(status(&wt, true, &[]).lines().any(|l| l == "?? same-second"));
    git(&wt, &["reset", "-q", "--hard"]);
    std::fs::remove_file(wt.join("same-second")).unwrap();
    assert_eq!(status(&wt, true, &[]), "");
    type Step = (&'static str, fn(&Path));
    let steps: [Step; 9] = [
        ("a new file deep down", |wt| std::fs::write(wt.join("src/deep/new"), "n").unwrap()),
        ("a new directory", |wt| {
            std::fs::create_dir_all(wt.join("src/fresh/sub")).unwrap();
            std::fs::write(wt.join("src/fresh/sub/f"), "f").unwrap();
        }),
        ("an empty directory", |wt| std::fs::create_dir(wt.join("src/deep/empty")).unwrap()),
        ("an ignored file", |wt| std::fs::write(wt.join("src/x.log"), "log").unwrap()),
        ("a .gitignore added", |wt| std::fs::write(wt.join("src/deep/.gitignore"), "new\n").unwrap()),
        ("a tracked file removed", |wt| std::fs::remove_file(wt.join("src/lib.rs")).unwrap()),
        ("an untracked file renamed", |wt| {
            std::fs::rename(wt.join("src/fresh/sub/f"), wt.join("src/fresh/g")).unwrap()
        }),
        ("a directory removed", |wt| std::fs::remove_dir_all(wt.join("src/fresh")).unwrap()),
        ("a file at the top", |wt| std::fs::write(wt.join("top-new"), "t").unwrap()),
    ];
    for (what, step) in steps {
        step(&wt);
        same(what);
    }
    let now = status(&wt, true, &[]);
    for line in [" D src/lib.rs", "?? src/deep/.gitignore", "?? top-new"] {
        assert!(now.lines().any(|l| l == line), "{line:?} missing from {now:?}");
    }
    assert!(!now.contains("src/deep/new"), "ignored by the .gitignore added: {now:?}");

    let off = attr_repo(&env, "off", "");
    git(&off, &["config", "core.untrackedCache", "false"]);
    let r = create(&env, &off, "u");
    assert!(!has_untracked_cache(&cwd(&r)), "written although the repository turns it off");
    assert_eq!(status(&cwd(&r), true, &[]), "");
    // An fsmonitor would make git trust the cache without its stat data from its first
    // question on ("nothing changed since now"): none is written.
    let watched = attr_repo(&env, "watched", "");
    git(&watched, &["config", "core.fsmonitor", "/bin/false"]);
    let r = create(&env, &watched, "u");
    assert!(!has_untracked_cache(&cwd(&r)), "written although the repository has an fsmonitor");
}

/// The `.git` link of a root is its owner's to change: execroot's own git runs (status for
/// `root show` and destroy) name the worktree's git directory and never follow the link, so
/// a link to a repository of the owner's making runs none of its config (here an fsmonitor
/// command that would leave a file behind) and decides nothing (its excludes would hide the
/// run's new file from the destroy's check).
#[test]
fn a_roots_git_link_is_never_followed() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    for (backend, repo) in [("git-overlay", attr_repo(&env, "r1", "")), ("worktree", attr_repo(&env, "r2", ""))] {
        let r = env.repo_root(backend, repo.to_str().unwrap(), &["--branch", "b"]);
        let wt = cwd(&r);
        let evil = env.path(&format!("evil-{backend}"));
        git(&env.path("."), &["init", "-q", evil.to_str().unwrap()]);
        let pwned = env.path(&format!("pwned-{backend}"));
        git(&evil, &["config", "core.fsmonitor", &format!("touch {}; false", pwned.display())]);
        // Read through the link, the run's new file would be ignored.
        std::fs::write(evil.join(".git/info/exclude"), "untracked-file\n").unwrap();
        std::fs::write(wt.join("untracked-file"), "u").unwrap();
        std::fs::write(wt.join(".git"), format!("gitdir: {}\n", evil.join(".git").display())).unwrap();
        let id = r["id"].as_str().unwrap();
        let shown = env.ok(&["root", "show", id]);
        assert!(!pwned.exists(), "{backend}: git followed the root's .git link");
        // The worktree as it is: one new file, nothing ignored, every tracked file there.
        assert_eq!(shown["git"]["untrackedEntryCount"], 1, "{backend}: {shown}");
        assert_eq!(shown["git"]["ignoredEntryCount"], 0, "{backend}: {shown}");
        env.ok(&["root", "destroy", "--force", id]);
        assert!(!pwned.exists(), "{backend}: the destroy followed the root's .git link");
    }
}
