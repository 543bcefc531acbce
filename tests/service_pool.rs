//! The service's overlay root skeletons (docs/format.md, "Root skeletons"): made ahead in the
//! service's lease, claimed by a create with its record, and swept as a dead lease after a
//! `kill -9`, including one killed between writing its record into a skeleton and claiming it.
//! One test per process state: the failpoint is set in this process's environment, which the
//! service inherits.

mod common;
#[path = "common/service.rs"]
mod service;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use service::*;

fn entries(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => panic!("{}: {e}", dir.display()),
    }
}

/// The service's pool size (src/service/mod.rs, `POOL_SIZE`).
const POOL: usize = 16;

/// The skeletons in the service's lease, once the pool is full: its thread makes them one by
/// one, so a listing taken earlier can hold a half-made one, and a create takes the newest.
fn skeletons(env: &Env) -> Vec<PathBuf> {
    let t0 = Instant::now();
    loop {
        let found: Vec<PathBuf> = entries(&env.store().join("tmp")).iter().flat_map(|l| entries(l)).collect();
        if found.len() >= POOL && found.iter().all(|sk| sk.join("creating.json").is_file()) {
            return found;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "the service made no root skeleton");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_store_clean(env: &Env) {
    let store = env.store();
    assert_eq!(mounts_below(&store), Vec::<PathBuf>::new(), "mounts are left");
    assert_eq!(entries(&store.join("roots")), Vec::<PathBuf>::new(), "root directories are left");
    assert_eq!(entries(&store.join("tmp")), Vec::<PathBuf>::new(), "leases are left");
    let d = env.ok(&["doctor"]);
    assert_eq!(d["findings"], json!([]), "{d}");
}

#[test]
fn skeletons_are_claimed_by_creates_and_swept_after_a_crash() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    env.with_base();
    let body = json!({ "class": "routine", "from": "base", "backend": "overlay" });
    {
        let mut s = Server::start(&env, &[]);
        let before = skeletons(&env);
        for (i, sk) in before.iter().enumerate() {
            let id = sk.file_name().unwrap().to_string_lossy().to_string();
            assert!(sk.join("merged").is_dir() && sk.join(format!("upper-{id}")).is_dir(), "{}", sk.display());
            assert!(sk.join(format!("work-{id}")).is_dir() && sk.join("creating.json").is_file(), "{}", sk.display());
            assert_eq!(std::fs::metadata(sk.join("creating.json")).unwrap().len(), 0, "skeleton {i}");
        }
        let c = s.req("POST", "/v1/roots", Some(body.clone())).expect(201);
        let id = c["id"].as_str().unwrap().to_string();
        assert!(before.iter().any(|p| p.ends_with(&id)), "root {id} did not take a skeleton: {before:?}");
        assert!(!before.iter().find(|p| p.ends_with(&id)).unwrap().exists(), "the skeleton is still in the lease");
        let dir = env.store().join("roots").join(&id);
        let names: Vec<String> =
            entries(&dir).iter().map(|p| p.file_name().unwrap().to_string_lossy().into()).collect();
        let mut names = names;
        names.sort();
        assert_eq!(names, ["merged", "state.json", &format!("upper-{id}"), &format!("work-{id}")], "{}", dir.display());
        // Written into the skeleton, the record is the root's whole record, state ready.
        let shown = env.ok(&["root", "show", &id]);
        assert_eq!((shown["state"].as_str(), shown["mounted"].as_bool()), (Some("ready"), Some(true)), "{shown}");
        std::fs::write(cwd(&c).join("f"), "x").unwrap();
        s.req("DELETE", &format!("/v1/roots/{id}"), None).expect(200);
        // A crash leaves the lease with its skeletons; doctor sweeps it, as any dead lease.
        s.kill9();
        assert!(!entries(&env.store().join("tmp")).is_empty());
        let d = env.ok(&["doctor", "--repair"]);
        assert!(d["findings"].as_array().unwrap().iter().any(|f| f["kind"] == "dead-lease"), "{d}");
        assert_store_clean(&env);
    }

    // Killed after writing a create's record into a skeleton, before claiming it: only the
    // lease is left, and the root never existed.
    std::env::set_var("EXECROOT_FAILPOINT", "pool.claim.written");
    let mut s = Server::start(&env, &[]);
    std::env::remove_var("EXECROOT_FAILPOINT");
    skeletons(&env);
    assert!(try_json(&s.socket, "POST", "/v1/roots", Some(body.clone())).is_err(), "the service answered");
    s.kill9();
    env.ok(&["doctor", "--repair"]);
    assert_store_clean(&env);

    // And a service started again serves creates as before.
    let s = Server::start(&env, &[]);
    let c = s.req("POST", "/v1/roots", Some(body)).expect(201);
    s.req("DELETE", &format!("/v1/roots/{}", c["id"].as_str().unwrap()), None).expect(200);
}

/// The skeletons of the service's lease that have an overlay mounted (root::pool mounts a few
/// ahead for the snapshots of the last create), once there are `n`.
fn mounted_ahead(env: &Env, n: usize) -> Vec<PathBuf> {
    let t0 = Instant::now();
    loop {
        let found: Vec<PathBuf> = mounts_below(&env.store().join("tmp"));
        if found.len() >= n {
            return found;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "the service mounted no root ahead: {found:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An ordinary user's uid for the idmapped case (no such user needs to exist).
const USER: u32 = 40011;

#[test]
fn roots_mounted_ahead_are_exact_and_never_outlive_their_layers_or_the_service() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let src = env.with_base();
    let base = env.ok(&["snapshot", "show", "base"])["id"].as_str().unwrap().to_string();
    env.ok(&["ref", "set", "base", &base, "--shared"]);
    let body = json!({ "class": "routine", "from": "base", "backend": "overlay" });
    let mut s = Server::start(&env, &["--socket-group", CALLERS]);
    // The first create teaches the pool the shape; the next ones take a root mounted ahead.
    let first = s.req("POST", "/v1/roots", Some(body.clone())).expect(201);
    for _ in 0..3 {
        let ahead = mounted_ahead(&env, 4);
        let c = s.req("POST", "/v1/roots", Some(body.clone())).expect(201);
        let id = c["id"].as_str().unwrap().to_string();
        assert!(ahead.iter().any(|p| p.parent().unwrap().ends_with(&id)), "root {id} was not mounted ahead: {ahead:?}");
        let root = cwd(&c);
        // Exactly what a create mounts: the snapshot's tree, an empty upper, writable, its own.
        same_content(&src, &root);
        assert!(mounts_below(&env.store().join("roots").join(&id)).contains(&root), "not mounted at its cwd");
        // The very mount made ahead (its options name the lease's upper), not one made again.
        let m = execroot::sys::mount::mounts_under(&root).unwrap().into_iter().find(|m| m.target == root).unwrap();
        let lease = env.store().join("tmp");
        assert!(
            m.option("upperdir").unwrap().starts_with(lease.to_str().unwrap()),
            "mounted again by the create: {}",
            m.options
        );
        std::fs::write(root.join("new"), "x").unwrap();
        let d = s.req("GET", &format!("/v1/roots/{id}/diff"), None).expect(200);
        assert_eq!(d["added"][0]["path"], "new", "{d}");
        assert_eq!((d["added"].as_array().unwrap().len(), d["modified"].as_array().unwrap().len()), (1, 0), "{d}");
        let shown = env.ok(&["root", "show", &id]);
        assert_eq!((shown["state"].as_str(), shown["mounted"].as_bool()), (Some("ready"), Some(true)), "{shown}");
        s.req("DELETE", &format!("/v1/roots/{id}"), None).expect(200);
        assert!(!env.store().join("roots").join(&id).exists());
    }
    // The mounts ahead are the running service's: doctor lets them be, and finds nothing.
    mounted_ahead(&env, 4);
    let d = env.ok(&["doctor", "--repair"]);
    assert_eq!(d["findings"], json!([]), "{d}");
    assert!(mounts_below(&env.store().join("tmp")).len() >= 4, "doctor unmounted the service's mounts ahead");

    // Another owner is another mount (the upper's owner, idmapped lowers): its own, as made.
    let c = s.req_as(USER, "POST", "/v1/roots", Some(body.clone())).expect(201);
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(cwd(&c)).unwrap()), USER);
    s.req_as(USER, "DELETE", &format!("/v1/roots/{}", c["id"].as_str().unwrap()), None).expect(200);
    let c = s.req_as(USER, "POST", "/v1/roots", Some(body.clone())).expect(201);
    let root = cwd(&c);
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&root).unwrap()), USER);
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(root.join("bin/run.sh")).unwrap()),
        USER,
        "the lowers are not idmapped for the caller"
    );
    same_content(&src, &root);
    s.req_as(USER, "DELETE", &format!("/v1/roots/{}", c["id"].as_str().unwrap()), None).expect(200);

    // A layer removed by a gc and made again at the same path: the mounts ahead of the old one
    // show an empty tree, and must never become a root.
    s.req("POST", "/v1/roots", Some(body.clone())).expect(201);
    mounted_ahead(&env, 4);
    let roots = s.req("GET", "/v1/roots", None).expect(200);
    for r in roots["roots"].as_array().unwrap() {
        s.req("DELETE", &format!("/v1/roots/{}?force=true", r["id"].as_str().unwrap()), None).expect(200);
    }
    env.ok(&["ref", "rm", "base"]);
    let g = env.ok(&["gc", "--grace", "0"]);
    assert!(!env.store().join("layers").join(&base).exists(), "gc kept the layer: {g}");
    env.ok(&["snapshot", "create", src.to_str().unwrap(), "--name", "base"]);
    env.ok(&["ref", "set", "base", &base, "--shared"]);
    let c = s.req("POST", "/v1/roots", Some(body.clone())).expect(201);
    same_content(&src, &cwd(&c));
    s.req("DELETE", &format!("/v1/roots/{}", c["id"].as_str().unwrap()), None).expect(200);
    drop(first);

    // Stopped, the service unmounts them and removes its lease.
    s.stop();
    assert_store_clean(&env);

    // Killed, it leaves them mounted in a dead lease: doctor unmounts them (never deleting
    // through an overlay) and removes the lease.
    let mut s = Server::start(&env, &[]);
    s.req("POST", "/v1/roots", Some(body.clone())).expect(201);
    mounted_ahead(&env, 4);
    s.kill9();
    let r = s_roots(&env);
    let d = env.ok(&["doctor", "--repair"]);
    assert!(
        d["findings"].as_array().unwrap().iter().any(|f| f["kind"] == "dead-lease" || f["kind"] == "stray-mount"),
        "{d}"
    );
    assert_eq!(mounts_below(&env.store().join("tmp")), Vec::<PathBuf>::new());
    for id in r {
        env.ok(&["root", "destroy", &id, "--force"]);
    }
    assert_store_clean(&env);
    // The layers the mounts ahead used are intact: a root of the snapshot shows it whole.
    let c = env.ok(&["root", "create", "--class", "routine", "--from", "base", "--backend", "overlay"]);
    same_content(&src, &cwd(&c));
    env.ok(&["root", "destroy", c["id"].as_str().unwrap()]);
}

fn s_roots(env: &Env) -> Vec<String> {
    env.ok(&["root", "list"])["roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// Content, modes and symlink targets (layers normalize mtimes, so those are not compared).
fn same_content(a: &Path, b: &Path) {
    let diffs: Vec<String> =
        fixture::compare_trees(a, b, false).unwrap().into_iter().filter(|d| !d.ends_with("mtime differs")).collect();
    assert!(diffs.is_empty(), "trees differ:\n{}", diffs.join("\n"));
}
