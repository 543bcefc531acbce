//! kill -9 at any point of create or destroy, reboots and strays: doctor --repair resolves it.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::*;

/// After repair: a second doctor finds nothing, no mount is left below roots/ that no ready
/// root owns, and every remaining root is ready.
fn assert_repaired(env: &Env) {
    let r = env.ok(&["doctor", "--repair"]);
    assert_eq!(r["ok"], true, "{r}");
    let again = env.ok(&["doctor"]);
    assert_eq!(again["findings"].as_array().unwrap().len(), 0, "doctor is not idempotent: {again}");
    let roots = env.ok(&["root", "list"])["roots"].as_array().unwrap().clone();
    assert!(roots.iter().all(|r| r["state"] == "ready"), "{roots:?}");
    let owned: Vec<PathBuf> = roots.iter().map(|r| PathBuf::from(r["cwd"].as_str().unwrap())).collect();
    for m in mounts_below(&env.store().join("roots")) {
        assert!(owned.contains(&m), "stray mount {} survived", m.display());
    }
    // Directories not named like a root id are not execroot's; doctor leaves them alone.
    let is_id = |n: &str| n.len() == 16 && n.bytes().all(|b| b.is_ascii_hexdigit());
    let dirs = std::fs::read_dir(env.store().join("roots"))
        .map(|d| d.flatten().filter(|e| e.file_name().to_str().is_some_and(is_id)).count())
        .unwrap_or(0);
    assert_eq!(dirs, roots.len(), "root directories leaked");
}

fn kill_after(env: &Env, args: &[&str], delay_ms: u64) {
    let mut child = env.spawnable(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(delay_ms));
    let _ = child.kill();
    child.wait().unwrap();
}

#[test]
fn kill_during_create_then_doctor() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    fixture::generate_named("node-modules", 0.2, 5, &src).unwrap();
    for (i, delay) in [1u64, 5, 15, 40, 100, 250].into_iter().enumerate() {
        // A fresh snapshot each round, so that the kill can land in layer materialization.
        std::fs::write(src.join("round"), i.to_string()).unwrap();
        env.ok(&["snapshot", "create", src.to_str().unwrap(), "--name", "base"]);
        for backend in ["overlay", "copy"] {
            kill_after(&env, &["root", "create", "--class", "routine", "--from", "base", "--backend", backend], delay);
            assert_repaired(&env);
        }
    }
    for r in env.ok(&["root", "list"])["roots"].as_array().unwrap() {
        env.ok(&["root", "destroy", r["id"].as_str().unwrap()]);
    }
    assert_repaired(&env);
    assert_eq!(env.ok(&["verify"])["ok"], true);
}

#[test]
fn kill_during_destroy_then_doctor() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    fixture::generate_named("node-modules", 0.2, 6, &src).unwrap();
    env.ok(&["snapshot", "create", src.to_str().unwrap(), "--name", "base"]);
    for delay in [1u64, 5, 20, 60, 150] {
        for backend in ["overlay", "copy"] {
            let r = env.root(&["--class", "routine", "--from", "base", "--backend", backend]);
            std::fs::write(PathBuf::from(r["cwd"].as_str().unwrap()).join("written"), b"x").unwrap();
            kill_after(&env, &["root", "destroy", r["id"].as_str().unwrap()], delay);
            assert_repaired(&env);
            // Whatever state it was left in, it can be destroyed (or is already gone).
            let _ = env.cmd(&["root", "destroy", r["id"].as_str().unwrap()]).output().unwrap();
            assert!(env.cmd(&["root", "show", r["id"].as_str().unwrap()]).output().unwrap().status.code() == Some(4));
        }
    }
    assert_repaired(&env);
}

#[test]
fn lost_mounts_are_remounted_or_discarded_and_strays_unmounted() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    env.with_base();
    let durable = env.root(&["--class", "routine", "--from", "base", "--durable"]);
    let volatile = env.root(&["--class", "routine", "--from", "base"]);
    let dcwd = PathBuf::from(durable["cwd"].as_str().unwrap());
    std::fs::write(dcwd.join("kept"), b"survives").unwrap();
    // As after a reboot: the mounts are gone.
    for r in [&durable, &volatile] {
        nix::mount::umount2(r["cwd"].as_str().unwrap(), nix::mount::MntFlags::empty()).unwrap();
    }
    // A mount below the store that no root owns.
    let stray = env.store().join("roots").join("stray");
    std::fs::create_dir(&stray).unwrap();
    nix::mount::mount(Some("tmpfs"), &stray, Some("tmpfs"), nix::mount::MsFlags::empty(), None::<&str>).unwrap();

    let found = env.fails(&["doctor"], 3);
    let kinds: Vec<&str> = found["findings"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"not-mounted") && kinds.contains(&"stray-mount"), "{found}");
    let fixed = env.ok(&["doctor", "--repair"]);
    let kinds: Vec<&str> = fixed["findings"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"volatile-lost"), "{fixed}");
    assert_eq!(std::fs::read(dcwd.join("kept")).unwrap(), b"survives");
    env.fails(&["root", "show", volatile["id"].as_str().unwrap()], 4);
    assert!(!mounts_below(&env.store().join("roots")).contains(&stray));
    assert!(stray.is_dir(), "doctor removed a directory that is not a root's");
    assert_repaired(&env);
}

#[test]
fn a_worktree_left_destroying_is_rechecked_before_deletion() {
    let env = Env::new();
    let repo = env.repo();
    let r = env.repo_root("worktree", repo.to_str().unwrap(), &[]);
    let wt = PathBuf::from(r["cwd"].as_str().unwrap());
    std::fs::write(wt.join("unsaved.txt"), b"work").unwrap();
    // As if destroy was killed right after recording its intent.
    let state = env.store().join("roots").join(r["id"].as_str().unwrap()).join("state.json");
    let text = std::fs::read_to_string(&state).unwrap().replace("\"ready\"", "\"destroying\"");
    std::fs::write(&state, text).unwrap();
    let v = env.fails(&["doctor", "--repair"], 3);
    assert!(v["findings"][0]["action"].as_str().unwrap().contains("unsaved.txt"), "{v}");
    assert!(wt.join("unsaved.txt").exists(), "doctor deleted uncommitted work");
    std::fs::remove_file(wt.join("unsaved.txt")).unwrap();
    env.ok(&["doctor", "--repair"]);
    assert!(!wt.exists());
}
