//! Capture and reclaim: diff, commit, export, gc, verify of layers, against references computed
//! by walking real trees.

mod common;

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;

type Sets = (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>);

/// added / modified / deleted between two trees, by walking both.
fn reference(base: &Path, now: &Path) -> Sets {
    let scan = |root: &Path| -> std::collections::BTreeMap<String, std::fs::Metadata> {
        walkdir::WalkDir::new(root)
            .min_depth(1)
            .into_iter()
            .map(Result::unwrap)
            .map(|e| {
                let rel =
                    String::from_utf8_lossy(e.path().strip_prefix(root).unwrap().as_os_str().as_bytes()).into_owned();
                (rel, std::fs::symlink_metadata(e.path()).unwrap())
            })
            .collect()
    };
    let (a, b) = (scan(base), scan(now));
    let mut added = BTreeSet::new();
    let mut modified = BTreeSet::new();
    let mut deleted = BTreeSet::new();
    for (p, mb) in &b {
        match a.get(p) {
            None => {
                added.insert(p.clone());
            }
            Some(ma) => {
                let kind = |m: &std::fs::Metadata| (m.is_dir(), m.is_file(), m.file_type().is_symlink());
                let changed = kind(ma) != kind(mb)
                    || (!mb.file_type().is_symlink() && ma.mode() & 0o7777 != mb.mode() & 0o7777)
                    || (mb.is_file() && std::fs::read(base.join(p)).unwrap() != std::fs::read(now.join(p)).unwrap())
                    || (mb.file_type().is_symlink()
                        && std::fs::read_link(base.join(p)).unwrap() != std::fs::read_link(now.join(p)).unwrap());
                if changed {
                    modified.insert(p.clone());
                }
            }
        }
    }
    for p in a.keys() {
        if !b.contains_key(p) {
            deleted.insert(p.clone());
        }
    }
    (added, modified, deleted)
}

fn reported(v: &serde_json::Value) -> Sets {
    let set = |k: &str| v[k].as_array().unwrap().iter().map(|c| c["path"].as_str().unwrap().to_string()).collect();
    (set("added"), set("modified"), set("deleted"))
}

/// Every kind of change a run makes, in one root.
fn mutate(root: &Path) {
    let dirs: Vec<PathBuf> = {
        let mut d: Vec<PathBuf> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir() && !p.is_symlink())
            .collect();
        d.sort();
        d
    };
    let files: Vec<PathBuf> = {
        // Files outside the directories renamed or deleted below, so each change stays visible.
        let mut f: Vec<PathBuf> = walkdir::WalkDir::new(root)
            .into_iter()
            .map(|e| e.unwrap().into_path())
            .filter(|p| p.is_file() && !p.is_symlink() && !dirs[..3].iter().any(|d| p.starts_with(d)))
            .collect();
        f.sort();
        f
    };
    std::fs::write(root.join("created.txt"), b"new").unwrap(); // create
    std::fs::write(&files[0], b"modified content").unwrap(); // modify
    std::fs::set_permissions(&files[1], std::fs::Permissions::from_mode(0o700)).unwrap(); // chmod
    std::fs::remove_file(&files[2]).unwrap(); // delete
    let same = std::fs::read(&files[3]).unwrap(); // delete then recreate, same content and mode
    let mode = std::fs::metadata(&files[3]).unwrap().mode();
    std::fs::remove_file(&files[3]).unwrap();
    std::fs::write(&files[3], &same).unwrap();
    std::fs::set_permissions(&files[3], std::fs::Permissions::from_mode(mode & 0o7777)).unwrap();
    std::fs::OpenOptions::new().append(true).open(&files[4]).unwrap(); // copy-up, no change
    std::fs::set_permissions(
        &files[5],
        std::fs::Permissions::from_mode(std::fs::metadata(&files[5]).unwrap().mode() & 0o7777),
    )
    .unwrap();
    std::fs::rename(&files[6], root.join("renamed-file")).unwrap(); // rename of a lower file
    std::fs::rename(&dirs[0], root.join("renamed-dir")).unwrap(); // rename(2) of a lower dir
    std::fs::remove_dir_all(&dirs[1]).unwrap(); // delete a lower dir
    std::fs::remove_dir_all(&dirs[2]).unwrap(); // delete then recreate a dir (opaque)
    std::fs::create_dir(&dirs[2]).unwrap();
    std::fs::write(dirs[2].join("fresh"), b"fresh").unwrap();
    std::os::unix::fs::symlink("created.txt", root.join("new-link")).unwrap();
}

#[test]
fn diff_matches_a_reference_walk_and_commit_reproduces_the_view() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let src = env.with_base();
    let base = env.path("base-checkout");
    env.ok(&["snapshot", "checkout", "base", base.to_str().unwrap()]);
    for backend in ["overlay", "copy"] {
        let r = env.root(&["--class", "artifact", "--from", "base", "--backend", backend]);
        let c = cwd(&r);
        mutate(&c);
        let id = r["id"].as_str().unwrap();
        let d = env.ok(&["root", "diff", id]);
        assert_eq!(reported(&d), reference(&base, &c), "{backend} diff differs from the reference");
        assert!(d["modified"].as_array().unwrap().iter().any(|m| m["mode"] == true));

        let name = format!("after-{backend}");
        let commit = env.ok(&["root", "commit", id, "--name", &name]);
        assert_eq!(commit["parents"][0], r["layers"][0]);
        assert_eq!(commit["flattened"], false);
        // The change layer holds the change, not the tree.
        assert!(commit["entries"].as_u64().unwrap() < 200, "{commit}");
        let r2 = env.root(&["--class", "routine", "--from", &name]);
        let diffs: Vec<String> = fixture::compare_trees(&c, &cwd(&r2), false)
            .unwrap()
            .into_iter()
            .filter(|d| !d.ends_with("mtime differs"))
            .collect();
        assert!(diffs.is_empty(), "{backend}: a root of the commit differs: {diffs:?}");
        // A checkout of the commit (flattened) is the same view too.
        let out = env.path(&format!("co-{backend}"));
        env.ok(&["snapshot", "checkout", &name, out.to_str().unwrap()]);
        assert_eq!(reference(&c, &out), Default::default());
        env.ok(&["root", "destroy", id]);
        env.ok(&["root", "destroy", r2["id"].as_str().unwrap()]);
    }
    let _ = src;
    assert_eq!(env.ok(&["verify"])["ok"], true);
}

#[test]
fn commit_of_a_two_layer_root_and_chains_past_the_limit() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    env.with_base();
    let extra = env.fixture("small", 1234, "extra");
    env.ok(&["snapshot", "create", extra.to_str().unwrap(), "--name", "extra"]);
    let r = env.root(&["--class", "routine", "--from", "base", "--from", "extra"]);
    mutate(&cwd(&r));
    let c = env.ok(&["root", "commit", r["id"].as_str().unwrap(), "--name", "two"]);
    assert_eq!(c["parents"].as_array().unwrap().len(), 2);
    let r2 = env.root(&["--class", "routine", "--from", "two"]);
    assert_eq!(reference(&cwd(&r), &cwd(&r2)), Default::default());
    env.ok(&["root", "destroy", r["id"].as_str().unwrap()]);
    env.ok(&["root", "destroy", r2["id"].as_str().unwrap()]);

    // Each routine builds on yesterday's result; the chain flattens before the stack limit.
    let mut prev = "base".to_string();
    let mut flattened = 0;
    for i in 0..40 {
        let r = env.root(&["--class", "routine", "--from", &prev]);
        std::fs::write(cwd(&r).join(format!("day-{i}")), i.to_string()).unwrap();
        let c = env.ok(&["root", "commit", r["id"].as_str().unwrap()]);
        flattened += c["flattened"].as_bool().unwrap() as u32;
        prev = c["id"].as_str().unwrap().to_string();
        env.ok(&["root", "destroy", r["id"].as_str().unwrap()]);
    }
    assert!(flattened >= 1, "a chain of 40 never flattened");
    let last = env.root(&["--class", "routine", "--from", &prev]);
    for i in 0..40 {
        assert_eq!(std::fs::read_to_string(cwd(&last).join(format!("day-{i}"))).unwrap(), i.to_string());
    }
    assert!(cwd(&last).join("bin/run.sh").exists());
}

#[test]
fn export_everything_or_only_what_changed() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let src = env.with_base();
    let r = env.root(&["--class", "artifact", "--from", "base"]);
    let c = cwd(&r);
    std::fs::create_dir_all(c.join("out/report")).unwrap();
    std::fs::write(c.join("out/report/summary.md"), b"# done").unwrap();
    std::fs::write(c.join("bin/run.sh"), b"#!/bin/sh\necho changed\n").unwrap();
    let id = r["id"].as_str().unwrap();

    let changed = env.path("changed");
    let v = env.ok(&["root", "export", id, changed.to_str().unwrap(), "--changed-only"]);
    assert_eq!(v["files"], 2);
    let got: BTreeSet<String> = walkdir::WalkDir::new(&changed)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap().path().strip_prefix(&changed).unwrap().to_string_lossy().into_owned())
        .collect();
    let want: BTreeSet<String> =
        ["bin", "bin/run.sh", "out", "out/report", "out/report/summary.md"].iter().map(|s| s.to_string()).collect();
    assert_eq!(got, want);
    assert_eq!(std::fs::metadata(changed.join("bin/run.sh")).unwrap().mode() & 0o777, 0o755);

    let all = env.path("all");
    env.ok(&["root", "export", id, all.to_str().unwrap()]);
    assert_eq!(reference(&c, &all), Default::default());
    let _ = src;

    // As a tar stream on stdout.
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("execroot"))
        .arg("--store")
        .arg(env.store())
        .args(["root", "export", id, "--tar", "-", "--changed-only"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let mut names: Vec<String> = tar::Archive::new(&out.stdout[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().trim_end_matches('/').to_string())
        .collect();
    names.sort();
    assert_eq!(names.into_iter().collect::<BTreeSet<_>>(), want);
}

#[test]
fn gc_frees_what_nothing_keeps_and_nothing_else() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let mk = |name: &str, seed: u64| {
        let t = env.fixture("small", seed, name);
        std::fs::write(t.join("unique"), name).unwrap();
        env.ok(&["snapshot", "create", t.to_str().unwrap()])["id"].as_str().unwrap().to_string()
    };
    let named = mk("named", 1);
    let used = mk("used", 2);
    let doomed = mk("doomed", 3);
    env.ok(&["ref", "set", "keep", &named]);
    let r = env.root(&["--class", "routine", "--from", &used]);
    // A root of the doomed snapshot that is gone again: its layer goes too.
    let gone = env.root(&["--class", "routine", "--from", &doomed]);
    env.ok(&["root", "destroy", gone["id"].as_str().unwrap()]);

    // Young snapshots are kept by the default grace; a dry run removes nothing.
    assert_eq!(env.ok(&["gc"])["removedSnapshots"].as_array().unwrap().len(), 0);
    let before = env.object_count();
    let dry = env.ok(&["gc", "--grace", "0", "--dry-run"]);
    assert_eq!(dry["removedSnapshots"][0], doomed.as_str());
    assert_eq!(env.object_count(), before);

    let v = env.ok(&["gc", "--grace", "0"]);
    assert_eq!(v["removedSnapshots"].as_array().unwrap().len(), 1);
    assert_eq!(v["removedSnapshots"][0], doomed.as_str());
    assert_eq!(v["removedLayers"], 1);
    assert!(v["removedObjects"].as_u64().unwrap() >= 1 && v["freedBytes"].as_u64().unwrap() > 0);
    env.fails(&["snapshot", "show", &doomed], 4);
    for keep in [&named, &used] {
        let out = env.path(&format!("co-{}", &keep[..8]));
        env.ok(&["snapshot", "checkout", keep, out.to_str().unwrap()]);
    }
    assert_eq!(env.ok(&["verify"])["ok"], true);
    assert!(cwd(&r).join("unique").exists());
    // Nothing more to collect.
    assert_eq!(env.ok(&["gc", "--grace", "0"])["removedObjects"], 0);

    // A snapshot a root uses cannot be removed, even with --force; the root is named.
    let v = env.fails(&["snapshot", "rm", &used, "--force"], 5);
    assert!(v["error"]["message"].as_str().unwrap().contains(r["id"].as_str().unwrap()), "{v}");
    let df = env.ok(&["df"]);
    assert!(df["objects"]["files"].as_u64().unwrap() > 0);
    assert_eq!(df["roots"][0]["id"], r["id"]);
}

#[test]
fn verify_rebuilds_a_damaged_layer() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    env.with_base();
    let r = env.root(&["--class", "routine", "--from", "base"]);
    env.ok(&["root", "destroy", r["id"].as_str().unwrap()]);
    let layer = env.store().join("layers").join(r["layers"][0].as_str().unwrap());
    std::fs::remove_file(layer.join("bin/run.sh")).unwrap();
    let v = env.fails(&["verify"], 3);
    assert_eq!(v["layerProblems"][0]["id"], r["layers"][0]);
    let v = env.fails(&["verify", "--repair"], 3);
    assert_eq!(v["layerProblems"][0]["rebuilt"], true);
    assert!(layer.join("bin/run.sh").exists());
    assert_eq!(env.ok(&["verify"])["ok"], true);
}

#[test]
fn ingest_create_commit_destroy_and_gc_in_parallel() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let sources: Vec<PathBuf> = (0..3).map(|i| env.fixture("small", 500 + i, &format!("src{i}"))).collect();
    let bin = assert_cmd::cargo::cargo_bin("execroot");
    let s = env.store();
    let worker = |script: String| {
        std::process::Command::new("bash")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let e = format!("{} --store {} --json", bin.display(), s.display());
    let mut kids = Vec::new();
    for (i, src) in sources.iter().enumerate() {
        kids.push(worker(format!(
            "set -e; for n in $(seq 8); do {e} snapshot create {} --name src{i} >/dev/null; done",
            src.display()
        )));
    }
    for _ in 0..2 {
        kids.push(worker(format!(
            "set -e; until {e} snapshot show src0 >/dev/null 2>&1; do sleep 0.05; done; for n in $(seq 6); do \
               out=$({e} root create --class routine --from src0); \
               id=$(echo \"$out\" | sed -n 's/.*\"id\": \"\\([0-9a-f]*\\)\".*/\\1/p'); \
               cwd=$(echo \"$out\" | sed -n 's/.*\"cwd\": \"\\(.*\\)\".*/\\1/p'); \
               echo $n > \"$cwd/run-$n\"; {e} root commit $id >/dev/null; {e} root destroy $id >/dev/null; done"
        )));
    }
    kids.push(worker(format!("set -e; for n in $(seq 10); do {e} gc --grace 0 >/dev/null; sleep 0.1; done")));
    for k in kids {
        let o = k.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(env.ok(&["verify"])["ok"], true);
    for (i, src) in sources.iter().enumerate() {
        let out = env.path(&format!("out{i}"));
        env.ok(&["snapshot", "checkout", &format!("src{i}"), out.to_str().unwrap()]);
        assert_trees_equal(src, &out);
    }
    for id in env.ok(&["snapshot", "list"])["snapshots"].as_array().unwrap() {
        let id = id["id"].as_str().unwrap();
        let out = env.path(&format!("all-{id}"));
        env.ok(&["snapshot", "checkout", id, out.to_str().unwrap()]);
    }
}
