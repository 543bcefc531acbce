//! gc holds the store's exclusive lock only while it decides and takes away, not while it
//! deletes (docs/capture.md, "gc"): writers that start once it has released the lock run while
//! it is still deleting, and a gc killed between the two leaves a dead lease that doctor removes.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use common::*;

/// Entries inside the leases under `tmp/` (what a gc has taken and not yet deleted).
fn taken_count(store: &Path) -> usize {
    std::fs::read_dir(store.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| std::fs::read_dir(p).unwrap().count())
        .sum()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A store with `base` (named, kept) and an unnamed snapshot of `junk` whose layer exists (a
/// root was made from it and destroyed), so that gc takes a snapshot, a layer and objects.
fn store_with_junk(env: &Env, mounts: bool) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let src = env.with_base();
    let junk = env.fixture("small", 7, "junk");
    let j = env.ingest(&junk);
    if mounts {
        let r = env.root(&["--class", "routine", "--from", &j, "--backend", "overlay"]);
        env.ok(&["root", "destroy", r["id"].as_str().unwrap()]);
    }
    (src, junk, j)
}

#[test]
fn a_root_create_and_an_ingest_finish_while_gc_is_still_deleting() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let (src, junk, j) = store_with_junk(&env, true);
    let objects_before = env.object_count();

    // At gc.unlocked gc has taken everything away and released the lock, and waits for this
    // command before it deletes. Were the lock still held, both writers would wait for it
    // forever: `timeout` turns that into a failure instead of a hung test.
    let during = env.path("during");
    std::fs::create_dir(&during).unwrap();
    let bin = assert_cmd::cargo::cargo_bin("execroot");
    let store = env.store();
    let script = format!(
        r#"S='{s}'; B='{b}'; D='{d}'
        unset EXECROOT_FAILPOINT_RUN
        find "$S/tmp" -mindepth 2 -maxdepth 2 | wc -l > "$D/taken-before"
        timeout 120 "$B" --store "$S" --json root create --class routine --from base --backend overlay --key during > "$D/root.json" 2> "$D/root.err"
        echo $? > "$D/root.rc"
        timeout 120 "$B" --store "$S" --json snapshot create '{junk}' --name again > "$D/ingest.json" 2> "$D/ingest.err"
        echo $? > "$D/ingest.rc"
        find "$S/tmp" -mindepth 2 -maxdepth 2 | wc -l > "$D/taken-after"
        "#,
        s = store.display(),
        b = bin.display(),
        d = during.display(),
        junk = junk.display(),
    );
    let gc = env
        .cmd(&["gc", "--grace", "0"])
        .env("EXECROOT_FAILPOINT_RUN", format!("gc.unlocked:{script}"))
        .output()
        .unwrap();
    assert!(gc.status.success(), "gc: {}", describe(&gc));
    let gc = parse(&gc);
    assert!(gc["removedSnapshots"].as_array().unwrap().iter().any(|s| s == j.as_str()), "{gc}");
    assert_eq!(gc["removedLayers"], 1, "{gc}");
    assert!(gc["removedObjects"].as_u64().unwrap() > 0, "{gc}");

    assert_eq!(read(&during.join("root.rc")).trim(), "0", "root create: {}", read(&during.join("root.err")));
    assert_eq!(read(&during.join("ingest.rc")).trim(), "0", "ingest: {}", read(&during.join("ingest.err")));
    // gc's lease still held everything it took when both writers had finished, and the
    // ingest's sweep of dead leases left it alone (it is locked while gc lives).
    let before: usize = read(&during.join("taken-before")).trim().parse().unwrap();
    let after: usize = read(&during.join("taken-after")).trim().parse().unwrap();
    assert!(before > 0, "gc took nothing into its lease");
    assert_eq!(before, after, "a writer's sweep touched gc's lease");
    // Now gc has finished: nothing is left under tmp/.
    assert_eq!(taken_count(&store), 0);
    assert_eq!(std::fs::read_dir(store.join("tmp")).unwrap().count(), 0, "gc left its lease");

    // The ingest of the content gc was deleting found none of its objects and wrote them
    // again: the same snapshot, whole.
    let again: serde_json::Value = serde_json::from_str(&read(&during.join("ingest.json"))).unwrap();
    assert_eq!(again["id"], j.as_str());
    assert_eq!(env.object_count(), objects_before, "the re-ingest did not restore every object");
    assert_eq!(env.ok(&["verify"])["ok"], true);
    let out = env.path("again-out");
    env.ok(&["snapshot", "checkout", "again", out.to_str().unwrap()]);
    assert_trees_equal(&junk, &out);

    // The root made during the deletion is whole and usable.
    let root: serde_json::Value = serde_json::from_str(&read(&during.join("root.json"))).unwrap();
    let diffs: Vec<String> = fixture::compare_trees(&src, &cwd(&root), false)
        .unwrap()
        .into_iter()
        .filter(|d| !d.ends_with("mtime differs")) // layers normalize mtimes (docs/roots.md)
        .collect();
    assert!(
        diffs.is_empty(),
        "the root differs from base:
{}",
        diffs.join("\n")
    );
    std::fs::write(cwd(&root).join("written.txt"), "ok\n").unwrap();
    env.ok(&["root", "destroy", "during"]);
    let d = env.ok(&["doctor"]);
    assert_eq!(d["findings"].as_array().unwrap().len(), 0, "{d}");
}

#[test]
fn gc_killed_after_releasing_the_lock_is_repaired_by_doctor() {
    let mounts = is_root();
    let env = Env::new();
    let (src, junk, j) = store_with_junk(&env, mounts);
    let out = env.spawnable(&["gc", "--grace", "0"]).env("EXECROOT_FAILPOINT", "gc.unlocked").output().unwrap();
    assert_eq!(out.status.signal(), Some(9), "gc did not reach gc.unlocked: {}", describe(&out));
    // What it took is out of the store's namespaces, in its (now dead) lease.
    assert!(taken_count(&env.store()) > 0);
    env.fails(&["snapshot", "show", &j], 4);

    let d = env.ok(&["doctor", "--repair"]);
    let kinds: Vec<&str> = d["findings"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"dead-lease"), "{d}");
    let again = env.ok(&["doctor"]);
    assert_eq!(again["findings"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(env.ok(&["verify"])["ok"], true);
    assert_eq!(std::fs::read_dir(env.store().join("tmp")).unwrap().count(), 0, "leases left");

    // Nothing is left for a second gc, the kept snapshot is whole, and the collected content
    // can be ingested again.
    let gc = env.ok(&["gc", "--grace", "0"]);
    assert_eq!(gc["removedSnapshots"].as_array().unwrap().len(), 0, "{gc}");
    assert_eq!(gc["removedObjects"], 0, "{gc}");
    let out = env.path("base-out");
    env.ok(&["snapshot", "checkout", "base", out.to_str().unwrap()]);
    assert_trees_equal(&src, &out);
    assert_eq!(env.ingest(&junk), j);
    assert_eq!(env.ok(&["verify"])["ok"], true);
}

#[test]
fn dry_run_reports_what_gc_then_removes() {
    let env = Env::new();
    let _ = store_with_junk(&env, is_root());
    let dry = env.ok(&["gc", "--grace", "0", "--dry-run"]);
    let real = env.ok(&["gc", "--grace", "0"]);
    assert_eq!(dry["dryRun"], true);
    assert_eq!(real["dryRun"], false);
    for f in ["keptSnapshots", "removedSnapshots", "removedLayers", "removedObjects", "removedVariants", "freedBytes"] {
        assert_eq!(dry[f], real[f], "{f}: dry run {dry}, run {real}");
    }
    assert!(real["freedBytes"].as_u64().unwrap() > 0, "{real}");
}
