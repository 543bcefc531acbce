//! Operations that delete never take "cannot read" for "absent": gc, doctor, snapshot rm and
//! destroy keep (and report) whatever they cannot read or parse.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A live overlay root of `base` with a file written in it, then `base`'s ref removed, so that
/// only the root pins the snapshot. Returns (root id, cwd, snapshot id).
fn live_root_without_ref(env: &Env) -> (String, PathBuf, String) {
    env.with_base();
    let snap = env.ok(&["snapshot", "show", "base"])["id"].as_str().unwrap().to_string();
    let r = env.root(&["--class", "routine", "--from", "base", "--backend", "overlay"]);
    let cwd = cwd(&r);
    std::fs::write(cwd.join("work.txt"), "the run's own work\n").unwrap();
    env.ok(&["ref", "rm", "base"]);
    (r["id"].as_str().unwrap().to_string(), cwd, snap)
}

fn state_path(env: &Env, id: &str) -> PathBuf {
    env.store().join("roots").join(id).join("state.json")
}

/// Everything the root relies on is still there, byte for byte.
fn assert_intact(env: &Env, cwd: &Path, snap: &str, objects: usize) {
    assert!(env.store().join("snapshots").join(snap).is_dir(), "snapshot {snap} was deleted");
    assert_eq!(env.object_count(), objects, "objects were deleted");
    assert!(mounts_below(&env.store().join("roots")).contains(&cwd.to_path_buf()), "the root was unmounted");
    assert_eq!(std::fs::read_to_string(cwd.join("work.txt")).unwrap(), "the run's own work\n");
    assert!(cwd.join("bin/run.sh").exists(), "the base vanished under the root");
}

fn unreadable_states() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("garbage", b"\x00\xffnot json at all".to_vec()),
        ("torn write", b"{\"version\": 1, \"id\": \"0123".to_vec()),
        ("newer version", b"{\"version\": 99, \"whatever\": \"a future execroot wrote this\"}\n".to_vec()),
    ]
}

#[test]
fn unreadable_state_stops_gc_and_doctor_keeps_the_root() {
    if !can_mount() {
        return;
    }
    for (what, bytes) in unreadable_states() {
        let env = Env::new();
        let (id, cwd, snap) = live_root_without_ref(&env);
        let objects = env.object_count();
        std::fs::write(state_path(&env, &id), &bytes).unwrap();

        // gc: exit 6, code corrupt, the message names the file, nothing deleted.
        let e = env.fails(&["gc", "--grace", "0"], 6);
        assert_eq!(e["error"]["code"], "corrupt", "{what}: {e}");
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&format!("roots/{id}/state.json")), "{what}: message does not name the file: {msg}");
        assert_intact(&env, &cwd, &snap, objects);

        // snapshot rm: refused the same way.
        env.fails(&["snapshot", "rm", &snap, "--force"], 6);
        assert_intact(&env, &cwd, &snap, objects);

        // doctor reports it and, even with --repair, neither unmounts nor removes it.
        let d = env.fails(&["doctor", "--repair"], 3);
        let f: Vec<_> = d["findings"].as_array().unwrap().iter().filter(|f| f["kind"] == "unreadable-state").collect();
        assert_eq!(f.len(), 1, "{what}: {d}");
        assert_eq!(f[0]["root"], id.as_str());
        assert_eq!(f[0]["repaired"], false);
        assert_intact(&env, &cwd, &snap, objects);
        assert_eq!(std::fs::read(state_path(&env, &id)).unwrap(), bytes, "{what}: state.json was rewritten");

        // root list shows it as { id, error } instead of skipping it.
        let list = env.ok(&["root", "list"]);
        let roots = list["roots"].as_array().unwrap();
        assert_eq!(roots.len(), 1, "{list}");
        assert_eq!(roots[0]["id"], id.as_str());
        assert!(roots[0]["error"].as_str().unwrap().contains("state.json"), "{list}");

        // destroy cannot act on what it cannot read.
        env.fails(&["root", "destroy", &id], 6);
        assert_intact(&env, &cwd, &snap, objects);
        assert_eq!(std::fs::read(state_path(&env, &id)).unwrap(), bytes);

        // The explicit, human decision removes it; then gc may collect.
        env.fails(&["doctor", "--discard-unreadable", "0123456789abcdef"], 4);
        let r = env.ok(&["doctor", "--discard-unreadable", &id]);
        assert_eq!(r["findings"][0]["repaired"], true, "{r}");
        assert!(!env.store().join("roots").join(&id).exists());
        assert!(mounts_below(&env.store().join("roots")).is_empty());
        let g = env.ok(&["gc", "--grace", "0"]);
        assert_eq!(g["removedSnapshots"].as_array().unwrap().len(), 1, "{g}");
        assert_eq!(env.ok(&["doctor"])["ok"], true);
    }
}

#[test]
fn discard_unreadable_refuses_a_readable_root() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let (id, cwd, snap) = live_root_without_ref(&env);
    let objects = env.object_count();
    let e = env.fails(&["doctor", "--discard-unreadable", &id], 5);
    assert!(e["error"]["message"].as_str().unwrap().contains("root destroy"), "{e}");
    assert_intact(&env, &cwd, &snap, objects);
    env.ok(&["root", "destroy", &id]);
}

#[test]
fn a_root_directory_without_state_but_with_files_is_kept() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let (id, cwd, snap) = live_root_without_ref(&env);
    let objects = env.object_count();
    std::fs::remove_file(state_path(&env, &id)).unwrap();
    let e = env.fails(&["gc", "--grace", "0"], 6);
    assert_eq!(e["error"]["code"], "corrupt");
    let d = env.fails(&["doctor", "--repair"], 3);
    assert!(d["findings"].as_array().unwrap().iter().any(|f| f["kind"] == "unreadable-state"), "{d}");
    assert_intact(&env, &cwd, &snap, objects);
    env.ok(&["doctor", "--discard-unreadable", &id]);
}

#[test]
fn an_empty_root_directory_is_an_orphan_doctor_removes() {
    let env = Env::new();
    env.with_base();
    let dir = env.store().join("roots").join("00000000000000aa");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".state.json.tmp"), b"{\"ver").unwrap();
    // Not a root id: not execroot's, never touched.
    let foreign = env.store().join("roots").join("not-a-root");
    std::fs::create_dir_all(foreign.join("x")).unwrap();
    let d = env.fails(&["doctor"], 3);
    assert_eq!(d["findings"].as_array().unwrap().len(), 1, "{d}");
    assert_eq!(d["findings"][0]["kind"], "orphan-directory");
    env.ok(&["doctor", "--repair"]);
    assert!(!dir.exists());
    assert!(foreign.join("x").is_dir(), "doctor removed a directory that is not a root");
    assert_eq!(env.ok(&["doctor"])["findings"].as_array().unwrap().len(), 0);
}

#[test]
fn unreadable_ref_stops_gc() {
    let env = Env::new();
    env.with_base();
    let snap = env.ok(&["snapshot", "show", "base"])["id"].as_str().unwrap().to_string();
    let objects = env.object_count();
    std::fs::write(env.store().join("refs/base"), "not a snapshot id\n").unwrap();
    let e = env.fails(&["gc", "--grace", "0"], 6);
    assert_eq!(e["error"]["code"], "corrupt");
    assert!(e["error"]["message"].as_str().unwrap().contains("refs/base"), "{e}");
    assert!(env.store().join("snapshots").join(&snap).is_dir());
    assert_eq!(env.object_count(), objects);
    // Naming the damaged ref removes it (a human decision), after which gc may proceed.
    let r = env.ok(&["ref", "rm", "base"]);
    assert!(r["id"].is_null(), "{r}");
    env.ok(&["gc", "--grace", "0"]);
    assert!(!env.store().join("snapshots").join(&snap).exists());
}

#[test]
fn unreadable_manifest_of_a_kept_snapshot_stops_gc() {
    let env = Env::new();
    let src = env.with_base();
    std::fs::write(src.join("extra"), "x").unwrap();
    let r = env.ok(&["snapshot", "create", src.to_str().unwrap(), "--name", "child"]);
    let child = r["id"].as_str().unwrap().to_string();
    let base = env.ok(&["snapshot", "show", "base"])["id"].as_str().unwrap().to_string();
    let objects = env.object_count();
    // Damage the manifest of the kept snapshot: its parents can no longer be read, so gc
    // cannot know which other snapshots it needs and must delete nothing.
    std::fs::write(env.store().join("snapshots").join(&child).join("manifest"), b"garbage").unwrap();
    env.ok(&["ref", "rm", "base"]);
    let e = env.fails(&["gc", "--grace", "0"], 6);
    assert_eq!(e["error"]["code"], "corrupt", "{e}");
    assert!(env.store().join("snapshots").join(&base).is_dir(), "a possible parent was deleted");
    assert_eq!(env.object_count(), objects);
}

#[test]
fn a_worktree_without_git_but_with_files_is_not_destroyed() {
    let env = Env::new();
    let repo = env.repo();
    let r = env.repo_root("worktree", repo.to_str().unwrap(), &["--key", "wt"]);
    let wt = cwd(&r);
    std::fs::write(wt.join("precious.txt"), "unsaved\n").unwrap();
    // Something removed the worktree's .git file: git can no longer say what is unsaved.
    std::fs::remove_file(wt.join(".git")).unwrap();
    let e = env.fails(&["root", "destroy", "wt"], 5);
    assert!(e["error"]["message"].as_str().unwrap().contains("precious.txt"), "{e}");
    assert_eq!(std::fs::read_to_string(wt.join("precious.txt")).unwrap(), "unsaved\n");
    env.ok(&["root", "destroy", "wt", "--force"]);
    assert!(!wt.exists());
}

#[test]
fn doctor_keeps_a_root_it_cannot_remount_for_any_reason_but_a_lost_volatile_upper() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    env.with_base();
    let r = env.root(&["--class", "routine", "--from", "base", "--backend", "overlay", "--durable"]);
    let id = r["id"].as_str().unwrap().to_string();
    let cwd = cwd(&r);
    std::fs::write(cwd.join("work.txt"), "kept\n").unwrap();
    nix::mount::umount2(&cwd, nix::mount::MntFlags::empty()).unwrap();
    // The remount fails (its work directory is not a directory), which is not a lost
    // volatile upper: the root must stay, its upper untouched.
    let show = env.ok(&["root", "show", &id]);
    let upper = PathBuf::from(show["upper"].as_str().unwrap());
    let work = PathBuf::from(show["work"].as_str().unwrap());
    std::fs::remove_dir_all(&work).unwrap();
    std::fs::write(&work, "").unwrap();
    let d = env.fails(&["doctor", "--repair"], 3);
    let f = d["findings"].as_array().unwrap().iter().find(|f| f["root"] == id.as_str()).cloned().unwrap();
    assert_eq!(f["kind"], "not-mounted", "{d}");
    assert_eq!(f["repaired"], false, "{d}");
    assert_eq!(std::fs::read_to_string(upper.join("work.txt")).unwrap(), "kept\n", "the run's work was discarded");
    std::fs::remove_file(&work).unwrap();
    std::fs::create_dir(&work).unwrap();
    env.ok(&["doctor", "--repair"]);
    assert_eq!(std::fs::read_to_string(cwd.join("work.txt")).unwrap(), "kept\n");
    env.ok(&["root", "destroy", &id]);
}
