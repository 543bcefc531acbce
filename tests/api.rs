//! The library as a service would call it, without the binary: typed answers, the error variants
//! callers branch on, and the JSON names those answers serialize to (docs/cli.md,
//! docs/capture.md).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use execroot::backend::BackendKind;
use execroot::change::{Change, Diff};
use execroot::policy::Class;
use execroot::root::doctor::FindingKind;
use execroot::root::{CreateRequest, RootListEntry, State};
use execroot::store::ingest::{IngestOptions, NoProgress};
use execroot::store::snapshot::SnapshotListEntry;
use execroot::sys::Owner;
use execroot::{Error, Hash, Store};
use serde_json::{json, Value};

fn put(root: &Path, rel: &str, content: &str, mode: u32) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The source tree most tests snapshot: 9 entries, 5 files of 28 bytes, two of them with the
/// same content (so 4 objects of 27 bytes), 3 directories, 1 symlink.
fn source(env: &Env) -> PathBuf {
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o755)).unwrap();
    put(&src, "README", "hello\n", 0o644);
    put(&src, "bin/run.sh", "#!/bin/sh\necho ran\n", 0o755);
    put(&src, "lib/a.txt", "a", 0o644);
    put(&src, "lib/b.txt", "b", 0o644);
    put(&src, "lib/copy.txt", "a", 0o644);
    std::os::unix::fs::symlink("README", src.join("link")).unwrap();
    src
}

/// A one-file tree, for snapshots that must not share objects with [`source`].
fn single(env: &Env, name: &str, content: &str) -> PathBuf {
    let dir = env.path(name);
    std::fs::create_dir(&dir).unwrap();
    put(&dir, "only", content, 0o644);
    dir
}

fn ingest(store: &Store, dir: &Path, name: Option<&str>) -> Hash {
    let opts = IngestOptions { name: name.map(str::to_string), ..Default::default() };
    store.ingest_dir(dir, &opts, &NoProgress).unwrap().id
}

/// A store with [`source`] ingested as ref `base`.
fn with_base(env: &Env) -> (Store, Hash, PathBuf) {
    let store = Store::open(env.store()).unwrap();
    let src = source(env);
    let id = ingest(&store, &src, Some("base"));
    (store, id, src)
}

fn request(from: &str, backend: BackendKind) -> CreateRequest {
    CreateRequest {
        class: Some(Class::Artifact),
        from: vec![from.to_string()],
        backend: Some(backend),
        ..Default::default()
    }
}

/// The keys of a JSON object: the documented names are the contract, so tests compare them
/// exactly rather than probing a few.
fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn json_of(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap()
}

fn paths(list: &[Change]) -> Vec<String> {
    list.iter().map(|c| String::from_utf8_lossy(&c.path.0).into_owned()).collect()
}

// ---------------------------------------------------------------------------------------------
// Snapshots and refs

#[test]
fn ingest_counts_entries_and_objects_and_the_same_tree_again_adds_nothing() {
    let env = Env::new();
    let store = Store::open(env.store()).unwrap();
    let src = source(&env);
    let opts = IngestOptions { name: Some("base".into()), ..Default::default() };
    let r = store.ingest_dir(&src, &opts, &NoProgress).unwrap();
    assert_eq!((r.entries, r.files, r.dirs, r.symlinks, r.bytes), (9, 5, 3, 1, 28));
    assert_eq!((r.new_objects, r.new_bytes, r.reused_objects, r.reused_bytes), (4, 27, 1, 1));
    assert!(r.new_snapshot);
    assert_eq!(r.name.as_deref(), Some("base"));
    assert!(r.warnings.is_empty());
    assert_eq!(
        keys(&json_of(&r)),
        set(&[
            "id",
            "name",
            "entries",
            "files",
            "dirs",
            "symlinks",
            "bytes",
            "newObjects",
            "newBytes",
            "reusedObjects",
            "reusedBytes",
            "newSnapshot",
            "elapsedMs",
            "warnings"
        ])
    );

    let labels = BTreeMap::from([("run".to_string(), "2".to_string())]);
    let again = store.ingest_dir(&src, &IngestOptions { labels, ..Default::default() }, &NoProgress).unwrap();
    assert_eq!(again.id, r.id, "the id is the tree's, whoever ingests it");
    assert!(!again.new_snapshot);
    assert_eq!((again.new_objects, again.reused_objects), (0, 5));
    assert_eq!(json_of(&again)["name"], Value::Null);
    // A repeated ingest adds its labels to the existing snapshot.
    let info = store.snapshot_info(&r.id, false).unwrap();
    assert_eq!(info.labels.get("run").map(String::as_str), Some("2"));
}

#[test]
fn snapshot_info_and_list_describe_snapshots_and_report_damage() {
    let env = Env::new();
    let (store, id, src) = with_base(&env);
    let info = store.snapshot_info(&id, false).unwrap();
    assert_eq!(info.id, id);
    assert!(info.parents.is_empty());
    assert_eq!(info.refs, ["base"]);
    assert_eq!(info.source, format!("dir:{}", src.display()));
    assert!(info.created.ends_with('Z'), "RFC 3339 UTC: {}", info.created);
    assert_eq!(
        (info.counts.entries, info.counts.files, info.counts.dirs, info.counts.symlinks, info.counts.whiteouts),
        (9, 5, 3, 1, 0)
    );
    assert_eq!(info.counts.bytes, 28);
    assert!(info.entry_list.is_none());
    let v = json_of(&info);
    assert_eq!(
        keys(&v),
        set(&[
            "id",
            "parents",
            "refs",
            "created",
            "source",
            "labels",
            "entries",
            "files",
            "dirs",
            "symlinks",
            "whiteouts",
            "bytes"
        ])
    );
    assert_eq!(v["id"], id.to_hex());

    let v = json_of(&store.snapshot_info(&id, true).unwrap());
    let list = v["entryList"].as_array().unwrap();
    assert_eq!(list.len(), 9);
    assert_eq!(list[0]["path"], "");
    assert_eq!(list[0]["kind"], "dir");
    let run = list.iter().find(|e| e["path"] == "bin/run.sh").unwrap();
    assert_eq!((&run["kind"], &run["mode"], &run["size"]), (&json!("file"), &json!("0755"), &json!(19)));
    let link = list.iter().find(|e| e["path"] == "link").unwrap();
    assert_eq!(link["target"], "README");

    assert_eq!(store.resolve("base").unwrap(), id);
    assert_eq!(store.resolve(&id.to_hex()[..8]).unwrap(), id);
    assert!(matches!(store.resolve("nothing-by-that-name").unwrap_err(), Error::NotFound(_)));
    assert!(matches!(store.snapshot_info(&Hash::of(b"no such manifest"), false).unwrap_err(), Error::NotFound(_)));

    let other = ingest(&store, &single(&env, "other", "other"), None);
    std::fs::write(store.snapshot_dir(&other).join("manifest"), b"garbage").unwrap();
    assert!(matches!(store.snapshot_info(&other, false).unwrap_err(), Error::Corrupt(_)));
    let listed = store.snapshot_list().unwrap();
    assert_eq!(listed.snapshots.len(), 2);
    let mut good = 0;
    for e in &listed.snapshots {
        match e {
            SnapshotListEntry::Snapshot(s) => {
                assert_eq!(s.id, id);
                good += 1;
            }
            SnapshotListEntry::Damaged { id: bad, error } => {
                assert_eq!(*bad, other);
                assert!(error.contains("manifest"), "{error}");
                assert_eq!(keys(&json_of(e)), set(&["id", "error"]));
            }
        }
    }
    assert_eq!(good, 1);
}

#[test]
fn refs_name_snapshots_and_fail_with_typed_errors() {
    let env = Env::new();
    let store = Store::open(env.store()).unwrap();
    let one = ingest(&store, &single(&env, "one", "1"), None);
    let two = ingest(&store, &single(&env, "two", "2"), None);
    assert!(store.list_refs().unwrap().is_empty());

    store.set_ref("v", &one).unwrap();
    store.set_ref("v", &two).unwrap(); // replaces
    store.set_ref("w", &two).unwrap();
    assert_eq!(store.list_refs().unwrap(), [("v".to_string(), two), ("w".to_string(), two)]);
    assert_eq!(store.get_ref("v").unwrap(), Some(two));
    assert_eq!(store.refs_to(&two).unwrap(), ["v", "w"]);
    assert!(store.refs_to(&one).unwrap().is_empty());

    assert!(matches!(store.set_ref("a/b", &one).unwrap_err(), Error::BadInput(_)));
    assert!(matches!(store.set_ref(".hidden", &one).unwrap_err(), Error::BadInput(_)));
    assert!(matches!(store.set_ref("x", &Hash::of(b"no such snapshot")).unwrap_err(), Error::NotFound(_)));

    assert_eq!(store.remove_ref("v").unwrap(), Some(two));
    assert!(matches!(store.remove_ref("v").unwrap_err(), Error::NotFound(_)));
    assert_eq!(store.list_refs().unwrap(), [("w".to_string(), two)]);

    // A damaged ref file must never read as "no ref" (gc would collect what it named), but
    // naming it explicitly removes it.
    std::fs::write(store.refs_dir().join("broken"), "not an id\n").unwrap();
    assert!(matches!(store.list_refs().unwrap_err(), Error::Corrupt(_)));
    assert!(matches!(store.gc(Duration::ZERO, true).unwrap_err(), Error::Corrupt(_)));
    assert_eq!(store.remove_ref("broken").unwrap(), None);
    assert_eq!(store.list_refs().unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Roots with the copy backend (no root privileges needed)

#[test]
fn copy_root_is_created_shown_listed_and_destroyed() {
    let env = Env::new();
    let (store, id, src) = with_base(&env);
    let mut req = request("base", BackendKind::Copy);
    req.labels.insert("run".into(), "7".into());
    let c = store.create_root(&req).unwrap();
    assert!(c.created);
    assert_eq!(c.id.len(), 16);
    assert_eq!((c.backend, c.class), (BackendKind::Copy, Class::Artifact));
    assert_eq!(c.cwd, store.roots_dir().join(&c.id).join("tree"));
    assert_eq!(c.snapshots, [id]);
    assert_eq!(c.layers, c.snapshots);
    assert!(c.key.is_none() && c.mounts.is_empty() && c.warnings.is_empty());
    assert!(c.branch_name.is_none() && c.worktree_path.is_none() && c.base_ref.is_none());
    for phase in ["resolve", "backend", "total"] {
        assert!(c.timings_ms.contains_key(phase), "timingsMs lacks {phase}: {:?}", c.timings_ms);
    }
    assert_trees_equal(&src, &c.cwd);
    let v = json_of(&c);
    assert_eq!(
        keys(&v),
        set(&[
            "id",
            "key",
            "class",
            "backend",
            "providerType",
            "cwd",
            "snapshots",
            "layers",
            "mounts",
            "branchName",
            "worktreePath",
            "baseRef",
            "created",
            "warnings",
            "provision",
            "timingsMs"
        ])
    );
    assert_eq!(v["provision"], Value::Null, "null without --provision");
    assert_eq!((&v["backend"], &v["class"], &v["created"]), (&json!("copy"), &json!("artifact"), &json!(true)));
    assert_eq!(v["cwd"], c.cwd.to_str().unwrap());
    assert_eq!(v["snapshots"], json!([id.to_hex()]));
    assert!(v["timingsMs"]["total"].is_number());

    let view = store.show_root(&c.id).unwrap();
    assert_eq!((view.id.as_str(), view.state, view.backend), (c.id.as_str(), State::Ready, BackendKind::Copy));
    assert_eq!(view.cwd, c.cwd);
    assert_eq!(view.snapshots, [id]);
    assert_eq!(view.owner, Owner::current());
    assert_eq!(view.labels, req.labels);
    assert!(!view.durable && !view.created_branch);
    assert!(view.upper.is_none() && view.work.is_none() && view.lowers.is_empty() && view.repo.is_none());
    assert_eq!(view.mounted, Some(true));
    let usage = view.usage.unwrap();
    assert_eq!((usage.inodes, usage.bytes), (8, 28), "a copy root's usage is its whole tree");
    assert!(view.git.is_none());
    let v = json_of(&view);
    let listed_keys = set(&[
        "id",
        "key",
        "class",
        "backend",
        "providerType",
        "state",
        "cwd",
        "snapshots",
        "layers",
        "mounts",
        "owner",
        "durable",
        "upper",
        "work",
        "lowers",
        "repo",
        "branchName",
        "worktreePath",
        "baseRef",
        "createdBranch",
        "createdAt",
        "labels",
        "warnings",
        "provision",
    ]);
    let mut shown_keys = listed_keys.clone();
    shown_keys.extend(set(&["mounted", "usage"]));
    assert_eq!(keys(&v), shown_keys);
    assert_eq!((&v["state"], &v["upper"], &v["mounted"]), (&json!("ready"), &Value::Null, &json!(true)));
    assert_eq!(keys(&v["owner"]), set(&["uid", "gid"]));
    assert_eq!(v["usage"], json!({ "bytes": 28, "inodes": 8 }));

    let list = store.list_roots().unwrap();
    assert_eq!(list.roots.len(), 1);
    match &list.roots[0] {
        RootListEntry::Root(r) => {
            assert_eq!(r.id, c.id);
            assert!(r.mounted.is_none() && r.usage.is_none(), "list does not inspect the roots");
            assert_eq!(keys(&json_of(r)), listed_keys);
        }
        RootListEntry::Unreadable(u) => panic!("unreadable: {}", u.error),
    }

    let d = store.destroy_root(&c.id, false).unwrap();
    assert!(d.cleaned);
    assert_eq!(d.cleaned_path, c.cwd);
    assert!(d.warnings.is_empty());
    assert_eq!(json_of(&d), json!({ "cleanedPath": c.cwd.to_str().unwrap(), "cleaned": true, "warnings": [] }));
    assert!(!store.roots_dir().join(&c.id).exists());
    assert!(store.list_roots().unwrap().roots.is_empty());
    assert!(matches!(store.show_root(&c.id).unwrap_err(), Error::NotFound(_)));
    assert!(matches!(store.destroy_root(&c.id, false).unwrap_err(), Error::NotFound(_)));
}

/// Changes a run makes in a root created from [`source`].
fn change_source_tree(cwd: &Path) {
    put(cwd, "lib/new.txt", "new", 0o644);
    put(cwd, "README", "HELLO, WORLD\n", 0o644);
    std::fs::remove_file(cwd.join("lib/b.txt")).unwrap();
    std::fs::set_permissions(cwd.join("bin/run.sh"), std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn copy_root_diff_and_commit_stack_the_change_on_the_base() {
    let env = Env::new();
    let (store, base, _) = with_base(&env);
    let c = store.create_root(&request("base", BackendKind::Copy)).unwrap();
    change_source_tree(&c.cwd);

    let rd = store.diff_root(&c.id).unwrap();
    assert_eq!(rd.root, c.id);
    assert_eq!(paths(&rd.diff.added), ["lib/new.txt"]);
    assert_eq!(paths(&rd.diff.modified), ["README", "bin/run.sh"]);
    assert!(rd.diff.modified[0].content && !rd.diff.modified[0].mode);
    assert!(!rd.diff.modified[1].content && rd.diff.modified[1].mode);
    assert_eq!(paths(&rd.diff.deleted), ["lib/b.txt"]);
    // The diff is flattened into the document beside the root's id.
    assert_eq!(keys(&json_of(&rd)), set(&["root", "added", "modified", "deleted"]));

    let labels = BTreeMap::from([("stage".to_string(), "after".to_string())]);
    let done = store.commit_root(&c.id, Some("after".into()), labels).unwrap();
    assert_eq!(done.parents, [base]);
    assert!(!done.flattened);
    assert_eq!(done.report.name.as_deref(), Some("after"));
    let v = json_of(&done);
    assert!(v.get("id").is_some() && v.get("newObjects").is_some(), "the ingest report is flattened in: {v}");
    assert_eq!((&v["parents"], &v["flattened"]), (&json!([base.to_hex()]), &json!(false)));

    let after = done.report.id;
    let info = store.snapshot_info(&after, false).unwrap();
    assert_eq!(info.parents, [base]);
    assert_eq!(info.refs, ["after"]);
    assert_eq!(info.labels.get("stage").map(String::as_str), Some("after"));
    assert_eq!(info.counts.whiteouts, 1, "one whiteout for lib/b.txt");

    // A root of the committed snapshot starts where the first one ended, and has no change.
    let c2 = store.create_root(&request("after", BackendKind::Copy)).unwrap();
    assert_trees_equal(&c.cwd, &c2.cwd);
    let d2 = store.diff_root(&c2.id).unwrap().diff;
    assert!(d2.added.is_empty() && d2.modified.is_empty() && d2.deleted.is_empty(), "{d2:?}");
    for r in [&c.id, &c2.id] {
        assert!(store.destroy_root(r, false).unwrap().cleaned);
    }
}

#[test]
fn export_writes_the_whole_tree_or_only_the_change() {
    let env = Env::new();
    let (store, _, _) = with_base(&env);
    let c = store.create_root(&request("base", BackendKind::Copy)).unwrap();
    put(&c.cwd, "lib/new.txt", "new", 0o644);
    put(&c.cwd, "README", "HELLO, WORLD\n", 0o644);

    let all = env.path("all");
    let r = store.export_root(&c.id, Some(&all), false, &mut std::io::sink()).unwrap();
    assert_eq!((r.entries, r.files, r.bytes), (9, 6, 13 + 19 + 3 + 3));
    assert_eq!(json_of(&r), json!({ "entries": 9, "files": 6, "bytes": 38 }));
    let diffs = fixture::compare_trees(&c.cwd, &all, false).unwrap();
    assert!(diffs.is_empty(), "{diffs:?}");

    let changed = env.path("changed");
    let r = store.export_root(&c.id, Some(&changed), true, &mut std::io::sink()).unwrap();
    assert_eq!((r.entries, r.files, r.bytes), (3, 2, 16));
    let mut names: Vec<String> = walkdir::WalkDir::new(&changed)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap().path().strip_prefix(&changed).unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["README", "lib", "lib/new.txt"]);
    assert_eq!(std::fs::read(changed.join("lib/new.txt")).unwrap(), b"new");

    let mut tar = Vec::new();
    store.export_root(&c.id, None, true, &mut tar).unwrap();
    let mut archive = tar::Archive::new(tar.as_slice());
    let members: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().trim_end_matches('/').to_string())
        .collect();
    assert_eq!(members, ["README", "lib", "lib/new.txt"]);

    // Never written over: a destination with anything in it is refused.
    assert!(matches!(
        store.export_root(&c.id, Some(&all), true, &mut std::io::sink()).unwrap_err(),
        Error::Conflict(_)
    ));
    store.destroy_root(&c.id, false).unwrap();
}

#[test]
fn a_key_returns_the_same_root_and_refuses_other_parameters() {
    let env = Env::new();
    let (store, _, _) = with_base(&env);
    let mut req = request("base", BackendKind::Copy);
    req.key = Some("job 1".into());
    let first = store.create_root(&req).unwrap();
    assert!(first.created);
    assert_eq!(first.key.as_deref(), Some("job 1"));

    let again = store.create_root(&req).unwrap();
    assert!(!again.created);
    assert_eq!((&again.id, &again.cwd), (&first.id, &first.cwd));
    assert_eq!(json_of(&again)["created"], false);
    assert!(again.timings_ms.contains_key("total"));
    assert_eq!(store.show_root("job 1").unwrap().id, first.id, "a key finds its root");

    let mut other = req.clone();
    other.labels.insert("x".into(), "y".into());
    assert!(matches!(store.create_root(&other).unwrap_err(), Error::Conflict(_)));
    assert_eq!(store.list_roots().unwrap().roots.len(), 1, "a refused create makes nothing");

    assert!(store.destroy_root("job 1", false).unwrap().cleaned);
    // Once the root is gone its key is free again, for any parameters.
    let reborn = store.create_root(&other).unwrap();
    assert!(reborn.created);
    assert_ne!(reborn.id, first.id);
    store.destroy_root(&reborn.id, false).unwrap();

    for bad in ["", "tab\there"] {
        let mut r = req.clone();
        r.key = Some(bad.into());
        assert!(matches!(store.create_root(&r).unwrap_err(), Error::BadInput(_)), "key {bad:?}");
    }
}

#[test]
fn unknown_roots_and_bad_requests_are_typed_errors() {
    let env = Env::new();
    let (store, _, _) = with_base(&env);
    for who in ["0123456789abcdef", "no-such-key"] {
        let nf = |e: Error| assert!(matches!(e, Error::NotFound(_)), "{who}: {e:?}");
        nf(store.show_root(who).unwrap_err());
        nf(store.diff_root(who).unwrap_err());
        nf(store.commit_root(who, None, BTreeMap::new()).unwrap_err());
        nf(store.export_root(who, Some(&env.path("x")), false, &mut std::io::sink()).unwrap_err());
        nf(store.destroy_root(who, false).unwrap_err());
    }
    let e = store.create_root(&request("missing", BackendKind::Copy)).unwrap_err();
    assert!(matches!(e, Error::NotFound(_)));
    assert_eq!((e.code(), e.exit_code()), ("not-found", 4));

    let no_class = CreateRequest { class: None, ..request("base", BackendKind::Copy) };
    let e = store.create_root(&no_class).unwrap_err();
    assert!(matches!(e, Error::BadInput(_)));
    assert_eq!((e.code(), e.exit_code()), ("bad-input", 2));
    let worktree_without_repo = request("base", BackendKind::Worktree);
    assert!(matches!(store.create_root(&worktree_without_repo).unwrap_err(), Error::BadInput(_)));
    let copy_with_repo = CreateRequest { repo: Some(env.path("repo")), ..request("base", BackendKind::Copy) };
    assert!(matches!(store.create_root(&copy_with_repo).unwrap_err(), Error::BadInput(_)));
    assert!(store.list_roots().unwrap().roots.is_empty(), "refused creates leave nothing behind");
}

// ---------------------------------------------------------------------------------------------
// Reclaiming space, doctor

#[test]
fn gc_removes_only_what_no_ref_root_or_grace_period_keeps() {
    let env = Env::new();
    let store = Store::open(env.store()).unwrap();
    let named = ingest(&store, &single(&env, "named", "named only"), Some("named"));
    let pinned = ingest(&store, &single(&env, "pinned", "pinned only"), None);
    let loose = ingest(&store, &single(&env, "loose", "loose only"), None);
    let root = store.create_root(&request(&pinned.to_hex(), BackendKind::Copy)).unwrap();

    let young = store.gc(execroot::store::gc::DEFAULT_GRACE, false).unwrap();
    assert!(young.removed_snapshots.is_empty(), "everything is younger than the grace period");
    assert_eq!(young.kept_snapshots, 3);

    let dry = store.gc(Duration::ZERO, true).unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.removed_snapshots, [loose]);
    assert_eq!(dry.removed_objects, 1);
    assert!(store.snapshot_info(&loose, false).is_ok(), "a dry run deletes nothing");
    assert!(store.has_object(&Hash::of(b"loose only")));
    let v = json_of(&dry);
    assert_eq!(
        keys(&v),
        set(&[
            "dryRun",
            "graceSecs",
            "keptSnapshots",
            "removedSnapshots",
            "removedLayers",
            "removedObjects",
            "removedVariants",
            "freedBytes",
            "removedProvisions",
            "elapsedMs"
        ])
    );
    assert_eq!((&v["dryRun"], &v["graceSecs"], &v["removedSnapshots"]), (&json!(true), &json!(0), &json!([loose])));

    let real = store.gc(Duration::ZERO, false).unwrap();
    assert_eq!(real.removed_snapshots, [loose]);
    assert_eq!(real.kept_snapshots, 2);
    assert_eq!(real.freed_bytes, "loose only".len() as u64);
    assert!(matches!(store.snapshot_info(&loose, false).unwrap_err(), Error::NotFound(_)));
    assert!(!store.has_object(&Hash::of(b"loose only")));
    assert!(store.has_object(&Hash::of(b"pinned only")) && store.has_object(&Hash::of(b"named only")));

    // The root was the only thing keeping its snapshot.
    assert!(matches!(store.remove_snapshot(&pinned, true).unwrap_err(), Error::Conflict(_)));
    store.destroy_root(&root.id, false).unwrap();
    assert_eq!(store.gc(Duration::ZERO, false).unwrap().removed_snapshots, [pinned]);
    assert_eq!(store.list_snapshots().unwrap(), [named]);
}

#[test]
fn a_root_whose_state_is_garbage_fails_closed() {
    let env = Env::new();
    let store = Store::open(env.store()).unwrap();
    // Only the root keeps this snapshot: if gc took the root for absent, it would collect it.
    let snap = ingest(&store, &single(&env, "tree", "used by the root"), None);
    let c = store.create_root(&request(&snap.to_hex(), BackendKind::Copy)).unwrap();
    let state = store.roots_dir().join(&c.id).join("state.json");
    std::fs::write(&state, b"{ not json").unwrap();

    let corrupt = |e: Error, what: &str| {
        assert!(matches!(e, Error::Corrupt(_)), "{what}: {e:?}");
        assert_eq!((e.code(), e.exit_code()), ("corrupt", 6));
    };
    corrupt(store.gc(Duration::ZERO, false).unwrap_err(), "gc");
    corrupt(store.gc(Duration::ZERO, true).unwrap_err(), "gc --dry-run");
    corrupt(store.remove_snapshot(&snap, true).unwrap_err(), "snapshot rm --force");
    corrupt(store.show_root(&c.id).unwrap_err(), "show");
    corrupt(store.diff_root(&c.id).unwrap_err(), "diff");
    corrupt(store.destroy_root(&c.id, true).unwrap_err(), "destroy --force");
    assert!(store.snapshot_info(&snap, false).is_ok());
    assert!(store.has_object(&Hash::of(b"used by the root")));
    assert!(c.cwd.join("only").exists());

    let list = store.list_roots().unwrap();
    assert_eq!(list.roots.len(), 1);
    match &list.roots[0] {
        RootListEntry::Unreadable(u) => {
            assert_eq!(u.id, c.id);
            assert!(u.error.contains("state.json"), "{}", u.error);
        }
        RootListEntry::Root(_) => panic!("a garbage state was parsed"),
    }
    assert_eq!(keys(&json_of(&list.roots[0])), set(&["id", "error"]));

    for repair in [false, true] {
        let report = store.doctor(repair).unwrap();
        assert!(!report.ok);
        assert_eq!(report.repair, repair);
        assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
        let f = &report.findings[0];
        assert_eq!((f.kind, f.root.as_deref(), f.repaired), (FindingKind::UnreadableState, Some(c.id.as_str()), false));
        let v = json_of(&report);
        assert_eq!(keys(&v), set(&["ok", "repair", "findings"]));
        assert_eq!(keys(&v["findings"][0]), set(&["kind", "root", "path", "action", "repaired"]));
        assert_eq!(v["findings"][0]["kind"], "unreadable-state");
    }
    assert!(c.cwd.join("only").exists(), "doctor --repair never removes an unreadable root");
}

#[test]
fn df_counts_objects_once_and_each_roots_own_writes() {
    let env = Env::new();
    let (store, _, _) = with_base(&env);
    let c = store.create_root(&request("base", BackendKind::Copy)).unwrap();
    put(&c.cwd, "out.bin", &"x".repeat(1000), 0o644);

    let df = store.df().unwrap();
    assert_eq!((df.objects.files, df.objects.bytes), (4, 27));
    assert!(df.layers.is_empty(), "a copy root materializes no layer");
    assert_eq!(df.roots.len(), 1);
    let r = &df.roots[0];
    assert_eq!((r.id.as_str(), r.backend.as_str()), (c.id.as_str(), "copy"));
    assert_eq!((r.unique.files, r.unique.bytes), (9, 1028));
    assert_eq!(df.unique_bytes, 1028);
    assert_eq!(df.shared_bytes, 27);
    let v = json_of(&df);
    assert_eq!(keys(&v), set(&["objects", "variants", "layers", "roots", "sharedBytes", "uniqueBytes"]));
    assert_eq!(keys(&v["roots"][0]), set(&["id", "backend", "unique"]));
    assert_eq!(v["roots"][0]["unique"], json!({ "files": 9, "bytes": 1028 }));
    store.destroy_root(&c.id, false).unwrap();
}

#[test]
fn doctor_is_ok_on_a_healthy_store_and_removes_an_empty_root_directory() {
    let env = Env::new();
    let (store, _, _) = with_base(&env);
    let c = store.create_root(&request("base", BackendKind::Copy)).unwrap();
    let healthy = store.doctor(false).unwrap();
    assert!(healthy.ok && !healthy.repair && healthy.findings.is_empty(), "{healthy:?}");

    // What a create killed before its first state write leaves.
    let orphan = store.roots_dir().join("00000000000000aa");
    std::fs::create_dir(&orphan).unwrap();
    let seen = store.doctor(false).unwrap();
    assert!(!seen.ok);
    assert_eq!(seen.findings.len(), 1);
    assert_eq!((seen.findings[0].kind, seen.findings[0].repaired), (FindingKind::OrphanDirectory, false));
    assert_eq!(seen.findings[0].path, orphan);
    assert!(orphan.exists(), "without repair doctor only reports");

    let fixed = store.doctor(true).unwrap();
    assert_eq!((fixed.findings[0].kind, fixed.findings[0].repaired), (FindingKind::OrphanDirectory, true));
    assert!(!orphan.exists());
    assert!(store.doctor(false).unwrap().ok);
    assert!(c.cwd.exists(), "the live root is not doctor's business");
    store.destroy_root(&c.id, false).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Overlay roots (need root)

#[test]
fn overlay_root_lifecycle_through_the_library() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let (store, base, src) = with_base(&env);
    let c = store.create_root(&request("base", BackendKind::Overlay)).unwrap();
    assert_eq!(c.backend, BackendKind::Overlay);
    assert_eq!(c.cwd, store.roots_dir().join(&c.id).join("merged"));
    assert!(execroot::sys::mount::is_mounted(&c.cwd).unwrap());
    // Layer inodes all present mtime 0 (store/layer.rs): everything else must match the source.
    let differences = fixture::compare_trees(&src, &c.cwd, false).unwrap();
    assert!(differences.iter().all(|d| d.ends_with("mtime differs")), "{differences:?}");

    let view = store.show_root(&c.id).unwrap();
    assert_eq!(view.mounted, Some(true));
    let upper = view.upper.clone().unwrap();
    assert!(upper.starts_with(store.roots_dir().join(&c.id)) && upper.is_dir());
    assert!(view.work.as_ref().unwrap().is_dir());
    assert_eq!(view.lowers.len(), 1);
    assert_eq!(view.usage.unwrap().inodes, 0, "nothing written yet");
    let v = json_of(&view);
    assert_eq!((&v["backend"], &v["upper"]), (&json!("overlay"), &json!(upper.to_str().unwrap())));

    put(&c.cwd, "lib/new.txt", "new", 0o644);
    std::fs::remove_file(c.cwd.join("lib/b.txt")).unwrap();
    let d = store.diff_root(&c.id).unwrap().diff;
    assert_eq!(
        (paths(&d.added), paths(&d.modified), paths(&d.deleted)),
        (vec!["lib/new.txt".to_string()], vec![], vec!["lib/b.txt".to_string()])
    );
    assert!(store.show_root(&c.id).unwrap().usage.unwrap().bytes >= 3);

    let done = store.commit_root(&c.id, Some("after".into()), BTreeMap::new()).unwrap();
    assert_eq!(done.parents, [base]);
    let c2 = store.create_root(&request("after", BackendKind::Overlay)).unwrap();
    assert_eq!(store.show_root(&c2.id).unwrap().lowers.len(), 2, "the base layer and the change layer");
    assert_eq!(std::fs::read(c2.cwd.join("lib/new.txt")).unwrap(), b"new");
    assert!(!c2.cwd.join("lib/b.txt").exists());
    let d2 = store.diff_root(&c2.id).unwrap().diff;
    assert!(d2.added.is_empty() && d2.modified.is_empty() && d2.deleted.is_empty(), "{d2:?}");

    // Both roots share the base layer; only the second uses the change layer.
    let df = store.df().unwrap();
    let users: BTreeMap<String, u64> = df.layers.iter().map(|l| (l.id.clone(), l.roots)).collect();
    assert_eq!(users.get(&base.to_hex()), Some(&2));
    assert_eq!(users.get(&done.report.id.to_hex()), Some(&1));
    assert!(df.roots.iter().all(|r| r.backend == "overlay"));

    for r in [&c, &c2] {
        let gone = store.destroy_root(&r.id, false).unwrap();
        assert!(gone.cleaned && gone.cleaned_path == r.cwd, "{gone:?}");
        assert!(!execroot::sys::mount::is_mounted(&r.cwd).unwrap());
    }
    assert!(mounts_below(store.path()).is_empty(), "{:?}", mounts_below(store.path()));
}

#[test]
fn overlay_diff_of_an_unmounted_root_is_a_conflict_until_doctor_remounts_it() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let (store, _, _) = with_base(&env);
    // Durable: a volatile upper that lost its mount is discarded by doctor, not remounted.
    let c = store.create_root(&CreateRequest { durable: true, ..request("base", BackendKind::Overlay) }).unwrap();
    put(&c.cwd, "kept.txt", "kept", 0o644);
    nix::mount::umount2(&c.cwd, nix::mount::MntFlags::MNT_DETACH).unwrap();

    assert!(matches!(store.diff_root(&c.id).unwrap_err(), Error::Conflict(_)));
    assert_eq!(store.show_root(&c.id).unwrap().mounted, Some(false));
    let found = store.doctor(false).unwrap();
    assert_eq!(found.findings.iter().map(|f| f.kind).collect::<Vec<_>>(), [FindingKind::NotMounted]);

    assert!(store.doctor(true).unwrap().findings[0].repaired);
    assert_eq!(paths(&store.diff_root(&c.id).unwrap().diff.added), ["kept.txt"]);
    store.destroy_root(&c.id, false).unwrap();
}

#[test]
fn overlay_root_whose_run_moved_a_mount_is_captured_without_it_and_destroyed() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let store = Store::open(env.store()).unwrap();
    let base = env.path("base");
    put(&base, "web/app.js", "app", 0o644);
    put(&base, "web/deps/old.js", "old", 0o644);
    ingest(&store, &base, Some("base"));
    ingest(&store, &single(&env, "deps", "dep"), Some("deps"));
    let req = CreateRequest { mounts: vec!["web/deps=deps".into()], ..request("base", BackendKind::Overlay) };
    let c = store.create_root(&req).unwrap();
    // rename(2) refuses only a mount point itself: the sub-mount moves along with its parent.
    std::fs::rename(c.cwd.join("web"), c.cwd.join("web2")).unwrap();
    assert!(c.cwd.join("web2/deps/only").exists());

    // The moved mount is still not part of the root's own tree: neither diff nor commit takes
    // its files (the base's web/deps is gone from the root's view, web2 is new, without deps).
    let d = store.diff_root(&c.id).unwrap();
    let all: Vec<String> = d
        .diff
        .added
        .iter()
        .chain(&d.diff.modified)
        .chain(&d.diff.deleted)
        .map(|c| String::from_utf8_lossy(&c.path.0).into_owned())
        .collect();
    assert!(!all.iter().any(|p| p.starts_with("web2/deps") || p.starts_with("web/deps")), "{all:?}");
    let commit = store.commit_root(&c.id, None, Default::default()).unwrap();
    let info = store.snapshot_info(&commit.report.id, true).unwrap();
    let paths: Vec<String> = serde_json::to_value(&info).unwrap()["entryList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    assert!(!paths.iter().any(|p| p.starts_with("web2/deps")), "a moved mount's files entered the commit: {paths:?}");

    let gone = store.destroy_root(&c.id, true).unwrap();
    assert!(gone.cleaned, "{gone:?}");
    assert!(mounts_below(store.path()).is_empty(), "{:?}", mounts_below(store.path()));
    assert!(!store.roots_dir().join(&c.id).exists());
}

/// Every kind of change a run makes that keeps each path's kind (kind changes are
/// `change::overlay_kind_change_alone_never_sets_mode`'s).
fn change_everything(cwd: &Path) {
    put(cwd, "lib/new.txt", "new", 0o644);
    put(cwd, "README", "HELLO\n", 0o644); // same size
    put(cwd, "lib/a.txt", "longer now", 0o644);
    std::fs::set_permissions(cwd.join("lib"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::remove_file(cwd.join("lib/b.txt")).unwrap();
    std::fs::rename(cwd.join("bin"), cwd.join("tools")).unwrap();
    std::fs::remove_file(cwd.join("link")).unwrap();
    std::os::unix::fs::symlink("lib/a.txt", cwd.join("link")).unwrap();
    std::fs::set_permissions(cwd.join("lib/copy.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir(cwd.join("fresh")).unwrap();
    put(cwd, "fresh/f", "f", 0o644);
}

#[test]
fn overlay_and_copy_roots_report_the_same_diff_for_the_same_run() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let (store, _, _) = with_base(&env);
    let mut diffs: Vec<Diff> = Vec::new();
    for backend in [BackendKind::Overlay, BackendKind::Copy] {
        let c = store.create_root(&request("base", backend)).unwrap();
        change_everything(&c.cwd);
        diffs.push(store.diff_root(&c.id).unwrap().diff);
        store.destroy_root(&c.id, false).unwrap();
    }
    let (overlay, copy) = (json_of(&diffs[0]), json_of(&diffs[1]));
    assert_eq!(overlay, copy);
    assert_eq!(
        overlay,
        json!({
            "added": [
                { "path": "fresh", "kind": "dir" },
                { "path": "fresh/f", "kind": "file", "size": 1 },
                { "path": "lib/new.txt", "kind": "file", "size": 3 },
                { "path": "tools", "kind": "dir" },
                { "path": "tools/run.sh", "kind": "file", "size": 19, },
            ],
            "modified": [
                { "path": "README", "kind": "file", "size": 6, "content": true },
                { "path": "lib", "kind": "dir", "mode": true },
                { "path": "lib/a.txt", "kind": "file", "size": 10, "content": true },
                { "path": "lib/copy.txt", "kind": "file", "size": 1, "mode": true },
                { "path": "link", "kind": "symlink", "content": true },
            ],
            "deleted": [
                { "path": "bin", "kind": "dir" },
                { "path": "bin/run.sh", "kind": "file", "size": 19 },
                { "path": "lib/b.txt", "kind": "file", "size": 1 },
            ],
        })
    );
}

/// Threads of one process (the service's) materializing the same new layer at once all get
/// it: the short link's temporary name is unique per call, not per process.
#[test]
fn threads_of_one_process_materialize_one_layer_at_once() {
    for round in 0..20 {
        let env = Env::new();
        let store = std::sync::Arc::new(Store::open(env.store()).unwrap());
        let id = ingest(&store, &single(&env, &format!("src{round}"), "x"), None);
        let go = std::sync::Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (store, go) = (store.clone(), go.clone());
                std::thread::spawn(move || {
                    go.wait();
                    store.materialize(&id)
                })
            })
            .collect();
        for t in threads {
            let link = t.join().unwrap().unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert!(link.join("only").exists(), "{}", link.display());
        }
    }
}
