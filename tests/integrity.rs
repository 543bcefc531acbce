//! verify finds damage and repair heals it; unknown formats are refused; killed and concurrent
//! ingests leave a clean store.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use common::*;

fn first_object(env: &Env) -> std::path::PathBuf {
    let mut objs: Vec<_> = walkdir::WalkDir::new(env.store().join("objects"))
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file() && e.metadata().unwrap().len() > 0)
        .map(|e| e.into_path())
        .collect();
    objs.sort();
    objs.remove(0)
}

#[test]
fn verify_catches_a_flipped_byte_and_repair_lets_ingest_heal_it() {
    let env = Env::new();
    let src = env.fixture("small", 2, "src");
    let id = env.ingest(&src);
    assert_eq!(env.ok(&["verify"])["ok"], true);

    let obj = first_object(&env);
    let mut bytes = std::fs::read(&obj).unwrap();
    bytes[0] ^= 0x01;
    std::fs::set_permissions(&obj, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&obj, &bytes).unwrap();

    let v = env.fails(&["verify"], 3);
    assert_eq!(v["ok"], false);
    let problems = v["objectProblems"].as_array().unwrap();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0]["problem"], "corrupt");
    assert_eq!(problems[0]["snapshots"][0], id.as_str());

    let v = env.fails(&["verify", "--repair"], 3);
    assert!(v["objectProblems"][0]["movedTo"].is_string());
    assert!(!obj.exists());
    // Now the object is missing; a re-ingest of the same content heals the store.
    let v = env.fails(&["verify"], 3);
    assert_eq!(v["objectProblems"][0]["problem"], "missing");
    let again = env.ok(&["snapshot", "create", src.to_str().unwrap()]);
    assert_eq!(again["newObjects"], 1);
    assert_eq!(env.ok(&["verify"])["ok"], true);
    let out = env.path("out");
    env.ok(&["snapshot", "checkout", &id, out.to_str().unwrap()]);
    assert_trees_equal(&src, &out);
}

#[test]
fn verify_catches_a_deleted_object_and_checkout_refuses() {
    let env = Env::new();
    let src = env.fixture("small", 4, "src");
    let id = env.ingest(&src);
    std::fs::remove_file(first_object(&env)).unwrap();
    let v = env.fails(&["verify"], 3);
    assert_eq!(v["objectProblems"][0]["problem"], "missing");
    assert_eq!(v["objectProblems"][0]["snapshots"][0], id.as_str());
    let out = env.path("out");
    let v = env.fails(&["snapshot", "checkout", &id, out.to_str().unwrap()], 6);
    assert!(v["error"]["message"].as_str().unwrap().contains("missing"));
    assert!(!out.exists(), "checkout wrote something before failing");
}

#[test]
fn verify_reports_damaged_manifests_and_dangling_refs() {
    let env = Env::new();
    let src = env.fixture("small", 6, "src");
    let id = env.ingest(&src);
    env.ok(&["ref", "set", "r", &id]);
    let manifest = env.store().join("snapshots").join(&id).join("manifest");
    let mut bytes = std::fs::read(&manifest).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    std::fs::write(&manifest, bytes).unwrap();
    let v = env.fails(&["verify"], 3);
    assert_eq!(v["snapshotProblems"][0]["id"], id.as_str());
    assert_eq!(v["refProblems"][0]["name"], "r");
    env.fails(&["snapshot", "checkout", "r", env.path("o").to_str().unwrap()], 6);
}

#[test]
fn unknown_format_version_is_refused() {
    let env = Env::new();
    env.ok(&["snapshot", "list"]);
    let fmt = env.store().join("format");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&fmt).unwrap()).unwrap();
    assert_eq!(v["formatVersion"], 1);
    assert_eq!(v["hash"], "blake3");
    std::fs::write(&fmt, r#"{"formatVersion": 2, "hash": "blake3", "features": []}"#).unwrap();
    let v = env.fails(&["snapshot", "list"], 6);
    assert!(v["error"]["message"].as_str().unwrap().contains("format version 2"), "{v}");
    std::fs::write(&fmt, r#"{"formatVersion": 1, "hash": "blake3", "features": ["zstd"]}"#).unwrap();
    let v = env.fails(&["snapshot", "list"], 6);
    assert!(v["error"]["message"].as_str().unwrap().contains("zstd"), "{v}");
}

#[test]
fn killed_ingest_leaves_nothing_wrong_and_its_debris_is_swept() {
    let env = Env::new();
    // Big enough that the kill lands mid-ingest.
    let src = env.path("src");
    fixture::generate_named("node-modules", 0.2, 9, &src).unwrap();
    for delay_ms in [5u64, 40, 150] {
        let mut child = env
            .spawnable(&["snapshot", "create", src.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let v = env.ok(&["verify"]);
        assert_eq!(v["ok"], true, "after kill at {delay_ms} ms: {v}");
        let leftovers = std::fs::read_dir(env.store().join("tmp")).map(|d| d.count()).unwrap_or(0);
        assert_eq!(leftovers, 0, "verify left temporary files behind");
    }
    let id = env.ingest(&src);
    let out = env.path("out");
    env.ok(&["snapshot", "checkout", &id, out.to_str().unwrap()]);
    assert_trees_equal(&src, &out);
}

#[test]
fn concurrent_ingests_of_overlapping_trees() {
    let env = Env::new();
    let base = env.fixture("small", 21, "t0");
    let mut trees = vec![base.clone()];
    for i in 1..6 {
        let t = env.fixture("small", 21, &format!("t{i}"));
        std::fs::write(t.join(format!("own-{i}")), format!("tree {i}")).unwrap();
        trees.push(t);
    }
    let children: Vec<_> = trees
        .iter()
        .map(|t| {
            env.spawnable(&["snapshot", "create", t.to_str().unwrap()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ids = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        ids.push(parse(&out)["id"].as_str().unwrap().to_string());
    }
    assert_eq!(env.ok(&["verify"])["ok"], true);
    for (t, id) in trees.iter().zip(&ids) {
        let out = env.path(&format!("out-{}", &id[..8]));
        env.ok(&["snapshot", "checkout", id, out.to_str().unwrap()]);
        assert_trees_equal(t, &out);
    }
    // Shared content once: the base's objects plus one per extra file.
    let base_objects = {
        let e2 = Env::new();
        e2.ok(&["snapshot", "create", base.to_str().unwrap()])["newObjects"].as_u64().unwrap() as usize
    };
    assert_eq!(env.object_count(), base_objects + 5);
}
