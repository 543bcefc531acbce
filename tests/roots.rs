//! Execution roots with real mounts, real users and real git.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;

#[test]
fn overlay_roots_are_isolated_copy_on_write_views() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let src = env.with_base();
    let a = env.root(&["--class", "routine", "--from", "base"]);
    let b = env.root(&["--class", "preview", "--from", "base"]);
    assert_eq!(a["backend"], "overlay");
    assert_eq!(a["created"], true);
    let (ra, rb) = (cwd(&a), cwd(&b));
    assert_trees_equal_content(&src, &ra);

    // Write, delete, chmod, and rename a lower directory with rename(2) in A.
    let some_file = first_file(&ra);
    let rel = some_file.strip_prefix(&ra).unwrap().to_path_buf();
    std::fs::write(&some_file, b"changed in A").unwrap();
    let dir = first_dir(&ra);
    let dir_rel = dir.strip_prefix(&ra).unwrap().to_path_buf();
    std::fs::rename(&dir, ra.join("renamed-by-a")).expect("rename(2) of a lower directory");
    std::fs::remove_file(ra.join("run-link")).unwrap();
    std::fs::write(ra.join("new-in-a"), b"new").unwrap();

    if !rel.starts_with(&dir_rel) {
        assert_eq!(std::fs::read(ra.join(&rel)).unwrap(), b"changed in A");
    }
    assert!(ra.join("renamed-by-a").is_dir() && !ra.join(&dir_rel).exists());
    // B and the layer still see the base.
    assert_trees_equal_content(&src, &rb);
    let layer = env.store().join("layers").join(a["layers"][0].as_str().unwrap());
    assert_trees_equal_content(&src, &layer);
    assert!(!rb.join("new-in-a").exists());

    // Executables run and symlinks resolve.
    let out = std::process::Command::new(rb.join("run-link")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran\n");
    assert_eq!(std::fs::metadata(rb.join("bin/run.sh")).unwrap().permissions().mode() & 0o777, 0o755);

    let shown = env.ok(&["root", "show", a["id"].as_str().unwrap()]);
    assert_eq!(shown["state"], "ready");
    assert_eq!(shown["mounted"], true);
    assert!(shown["usage"]["inodes"].as_u64().unwrap() >= 3);
    assert_eq!(env.ok(&["root", "list"])["roots"].as_array().unwrap().len(), 2);

    for r in [&a, &b] {
        let d = env.ok(&["root", "destroy", r["id"].as_str().unwrap()]);
        assert_eq!(d["cleaned"], true, "{d}");
        assert_eq!(d["cleanedPath"], r["cwd"]);
    }
    assert!(!ra.exists() && !rb.exists());
    assert!(mounts_below(&env.store().join("roots")).is_empty());
    assert_eq!(std::fs::read_dir(env.store().join("roots")).unwrap().count(), 0);
}

/// Content, modes and symlink targets (layers normalize mtimes, so those are not compared).
fn assert_trees_equal_content(a: &Path, b: &Path) {
    let diffs: Vec<String> =
        fixture::compare_trees(a, b, false).unwrap().into_iter().filter(|d| !d.ends_with("mtime differs")).collect();
    assert!(diffs.is_empty(), "trees differ:\n{}", diffs.join("\n"));
}

fn first_file(root: &Path) -> PathBuf {
    walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .map(Result::unwrap)
        .find(|e| e.file_type().is_file() && e.depth() >= 2)
        .unwrap()
        .into_path()
}

fn first_dir(root: &Path) -> PathBuf {
    walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .min_depth(1)
        .max_depth(1)
        .into_iter()
        .map(Result::unwrap)
        .find(|e| e.file_type().is_dir() && e.file_name() != "bin")
        .unwrap()
        .into_path()
}

#[test]
fn a_root_owned_by_nobody_is_fully_writable_by_nobody() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    env.with_base();
    let r = env.root(&["--class", "routine", "--from", "base", "--owner", "nobody"]);
    let c = cwd(&r);
    let script = format!(
        "set -e; cd {c}; find . -type f -exec sh -c 'echo more >> \"$1\"' _ {{}} \\; ; \
         find . -type d -exec chmod 0700 {{}} \\; ; touch new; mv bin bin2; rm -rf ./*; echo done",
        c = c.display()
    );
    let (ok, out) = as_nobody(&script);
    assert!(ok, "nobody could not modify its root: {out}");
    assert_eq!(std::fs::read_dir(&c).unwrap().count(), 0);
    // What nobody wrote belongs to nobody; the layer is untouched.
    let upper = PathBuf::from(env.ok(&["root", "show", r["id"].as_str().unwrap()])["upper"].as_str().unwrap());
    assert_eq!(std::fs::metadata(&upper).unwrap().uid(), 65534);
    let layer = env.store().join("layers").join(r["layers"][0].as_str().unwrap());
    assert!(layer.join("bin/run.sh").exists());
    assert_eq!(env.ok(&["root", "destroy", r["id"].as_str().unwrap()])["cleaned"], true);
}

#[test]
fn without_root_auto_falls_back_to_copy_and_explicit_overlay_fails() {
    if !needs_root("needs root to switch to another user") {
        return;
    }
    let env = Env::new();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = env.path("nobody-store");
    std::fs::create_dir(&store).unwrap();
    nix::unistd::chown(&store, Some(65534.into()), Some(65534.into())).unwrap();
    let src = env.fixture("small", 8, "src");
    let bin = assert_cmd::cargo::cargo_bin("execroot");
    let run = |args: &str| as_nobody(&format!("{} --store {} --json {args}", bin.display(), store.display()));
    let (ok, out) = run(&format!("snapshot create {} --name base", src.display()));
    assert!(ok, "{out}");
    let (ok, out) = run("root create --class routine --from base");
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["backend"], "copy");
    assert!(v["warnings"][0].as_str().unwrap().contains("root"), "{v}");
    let c = cwd(&v);
    assert_trees_equal(&src, &c);
    assert_eq!(std::fs::metadata(&c).unwrap().uid(), 65534);
    let (ok, out) = run("root create --class routine --from base --backend overlay");
    assert!(!ok && out.contains("overlay") && out.contains("root"), "{out}");
    let (ok, out) = run(&format!("root destroy {}", v["id"].as_str().unwrap()));
    assert!(ok, "{out}");
    assert!(!c.exists());
}

#[test]
fn mount_subdir_appears_inside_and_goes_away() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    env.with_base();
    let deps = env.fixture("small", 77, "deps");
    env.ok(&["snapshot", "create", deps.to_str().unwrap(), "--name", "deps"]);
    for backend in ["overlay", "copy"] {
        let r =
            env.root(&["--class", "preview", "--from", "base", "--mount", "node_modules=deps", "--backend", backend]);
        let c = cwd(&r);
        assert_eq!(r["mounts"][0]["subdir"], "node_modules");
        assert_trees_equal_content(&deps, &c.join("node_modules"));
        std::fs::write(c.join("node_modules/written"), b"x").unwrap();
        assert!(!env
            .store()
            .join("layers")
            .join(r["mounts"][0]["snapshot"].as_str().unwrap())
            .join("written")
            .exists());
        assert_eq!(env.ok(&["root", "destroy", r["id"].as_str().unwrap()])["cleaned"], true);
        assert!(!c.exists());
        assert!(mounts_below(&env.store().join("roots")).is_empty(), "{backend}");
    }
    // A symlinked SUBDIR (run-link is a symlink in the base) and escaping paths are refused.
    for bad in ["run-link=deps", "run-link/x=deps", "../x=deps", "/abs=deps"] {
        let v = env.fails(&["root", "create", "--class", "preview", "--from", "base", "--mount", bad], 2);
        assert!(v["error"]["message"].as_str().unwrap().contains("--mount"), "{bad}: {v}");
    }
    assert_eq!(std::fs::read_dir(env.store().join("roots")).unwrap().count(), 0);
    assert!(mounts_below(&env.store().join("roots")).is_empty());
}

#[test]
fn keys_make_create_idempotent() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let src = env.with_base();
    let first = env.root(&["--class", "routine", "--from", "base", "--key", "run-1"]);
    assert_eq!(first["created"], true);
    // The ref moves; the same key still returns the same root and does nothing else.
    std::fs::write(src.join("moved"), b"x").unwrap();
    env.ok(&["snapshot", "create", src.to_str().unwrap(), "--name", "base"]);
    let again = env.root(&["--class", "routine", "--from", "base", "--key", "run-1"]);
    assert_eq!(again["created"], false);
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["layers"], first["layers"]);
    // Different parameters under the same key: an error.
    let v = env.fails(&["root", "create", "--class", "preview", "--from", "base", "--key", "run-1"], 5);
    assert!(v["error"]["message"].as_str().unwrap().contains("different parameters"));
    // Lookup by key; after destroy the key is free again.
    assert_eq!(env.ok(&["root", "show", "run-1"])["id"], first["id"]);
    env.ok(&["root", "destroy", "run-1"]);
    let third = env.root(&["--class", "routine", "--from", "base", "--key", "run-1"]);
    assert_eq!(third["created"], true);
    assert_ne!(third["id"], first["id"]);

    // Concurrent creates with one key: one creates, the others wait and get the same root.
    let children: Vec<_> = (0..6)
        .map(|_| {
            env.spawnable(&["root", "create", "--class", "artifact", "--from", "base", "--key", "shared"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<serde_json::Value> = children
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().unwrap();
            assert!(o.status.success(), "{}", describe(&o));
            parse(&o)
        })
        .collect();
    assert_eq!(outs.iter().filter(|o| o["created"] == true).count(), 1);
    assert!(outs.iter().all(|o| o["id"] == outs[0]["id"]));
}

#[test]
fn a_root_in_use_is_not_torn_down() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    env.with_base();
    let r = env.root(&["--class", "routine", "--from", "base"]);
    let mut sleeper = std::process::Command::new("sleep").arg("30").current_dir(cwd(&r)).spawn().unwrap();
    let v = env.fails(&["root", "destroy", r["id"].as_str().unwrap()], 5);
    assert_eq!(v["cleaned"], false);
    assert!(v["warnings"][0].as_str().unwrap().contains(&sleeper.id().to_string()), "{v}");
    assert!(cwd(&r).join("bin").exists(), "torn down under a running process");
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    assert_eq!(env.ok(&["root", "destroy", r["id"].as_str().unwrap()])["cleaned"], true);
}

#[test]
fn twenty_processes_create_and_destroy_at_once() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    env.with_base();
    let bin = assert_cmd::cargo::cargo_bin("execroot");
    let script = format!(
        "set -e; out=$({bin} --store {s} --json root create --class routine --from base); \
         id=$(echo \"$out\" | sed -n 's/.*\"id\": \"\\([0-9a-f]*\\)\".*/\\1/p'); \
         test -n \"$id\"; {bin} --store {s} --json root destroy $id > /dev/null",
        bin = bin.display(),
        s = env.store().display()
    );
    let children: Vec<_> = (0..20)
        .map(|_| {
            std::process::Command::new("sh")
                .args(["-c", &script])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", describe(&o));
    }
    assert_eq!(std::fs::read_dir(env.store().join("roots")).unwrap().count(), 0);
    assert!(mounts_below(&env.store().join("roots")).is_empty());
    assert_eq!(env.ok(&["doctor"])["ok"], true);
}

#[test]
fn stacks_deeper_than_the_limit_are_refused() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    env.with_base();
    let mut args = vec!["root", "create", "--class", "routine"];
    for _ in 0..33 {
        args.extend(["--from", "base"]);
    }
    let v = env.fails(&args, 2);
    assert!(v["error"]["message"].as_str().unwrap().contains("limit of 32"), "{v}");
    assert_eq!(std::fs::read_dir(env.store().join("roots")).unwrap().count(), 0);
}

#[test]
fn a_refused_destroy_leaves_volatile_mounts_usable() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    env.with_base();
    let deps = env.fixture("small", 5, "deps");
    env.ok(&["snapshot", "create", deps.to_str().unwrap(), "--name", "deps"]);
    let r = env.root(&["--class", "preview", "--from", "base", "--mount", "deps=deps"]);
    let c = cwd(&r);
    std::fs::write(c.join("deps/mine"), b"kept").unwrap();
    // A process inside the root (not the mount) makes destroy refuse after the sub-mount was
    // taken down; it must come back with what was written in it.
    let mut sleeper = std::process::Command::new("sleep").arg("30").current_dir(c.join("bin")).spawn().unwrap();
    let v = env.fails(&["root", "destroy", r["id"].as_str().unwrap()], 5);
    assert_eq!(v["cleaned"], false);
    assert_eq!(std::fs::read(c.join("deps/mine")).unwrap(), b"kept");
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    assert_eq!(env.ok(&["root", "destroy", r["id"].as_str().unwrap()])["cleaned"], true);
}

#[test]
fn hardlink_limit_falls_back_to_copies() {
    if !can_mount() {
        return;
    }
    // ext4 allows 65,000 links to one inode; 66,000 empty files share one object.
    let env = Env::new();
    let src = env.path("empties");
    std::fs::create_dir(&src).unwrap();
    for d in 0..66 {
        let dir = src.join(format!("d{d}"));
        std::fs::create_dir(&dir).unwrap();
        for f in 0..1000 {
            std::fs::File::create(dir.join(format!("f{f}"))).unwrap();
        }
    }
    env.ok(&["snapshot", "create", src.to_str().unwrap(), "--name", "empties"]);
    let r = env.root(&["--class", "routine", "--from", "empties"]);
    let c = cwd(&r);
    assert_eq!(std::fs::read_dir(c.join("d65")).unwrap().count(), 1000);
    assert_eq!(std::fs::metadata(c.join("d65/f999")).unwrap().len(), 0);
    env.ok(&["root", "destroy", r["id"].as_str().unwrap()]);
}
