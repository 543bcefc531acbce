//! `state.json` versions: a version-1 record (flat, every backend's fields) written by earlier
//! releases is read, shown with the same fields, pins its snapshots and can be destroyed; a
//! version-2 record keeps each backend's own state under `backend`.

mod common;

use common::*;

/// Rewrite a root's state.json in the version-1 layout, as an earlier release wrote it.
fn downgrade_to_v1(env: &Env, id: &str) {
    let path = env.store().join("roots").join(id).join("state.json");
    let v2: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut v1 = env.ok(&["root", "show", id]);
    let o = v1.as_object_mut().unwrap();
    for k in ["mounted", "usage", "git", "snapshots"] {
        o.remove(k);
    }
    o.insert("request".into(), v2["request"].clone());
    std::fs::write(&path, serde_json::to_vec_pretty(&v1).unwrap()).unwrap();
}

#[test]
fn version_2_records_keep_backend_state_apart() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    env.with_base();
    let r = env.root(&["--class", "routine", "--from", "base", "--backend", "overlay"]);
    let id = r["id"].as_str().unwrap();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.store().join("roots").join(id).join("state.json")).unwrap()).unwrap();
    assert_eq!(state["version"], 2);
    assert_eq!(state["backend"]["kind"], "overlay");
    assert!(state["backend"]["upper"].is_string(), "{state}");
    assert!(state.get("upper").is_none() && state.get("repo").is_none(), "flat fields in a v2 record: {state}");
    // The printed view keeps the documented flat fields, and the old name `layers`.
    let show = env.ok(&["root", "show", id]);
    assert_eq!(show["backend"], "overlay");
    assert!(show["upper"].is_string());
    assert_eq!(show["layers"], show["snapshots"]);
    env.ok(&["root", "destroy", id]);
}

#[test]
fn version_1_records_are_read_and_destroyed() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    env.with_base();
    let repo = env.repo();
    let overlay = env.root(&["--class", "routine", "--from", "base", "--backend", "overlay", "--key", "o"]);
    let copy = env.root(&["--class", "routine", "--from", "base", "--backend", "copy"]);
    let wt = env.repo_root("worktree", repo.to_str().unwrap(), &["--key", "w"]);
    std::fs::write(cwd(&overlay).join("note"), "x").unwrap();
    let before: Vec<serde_json::Value> =
        [&overlay, &copy, &wt].iter().map(|r| env.ok(&["root", "show", r["id"].as_str().unwrap()])).collect();
    for r in [&overlay, &copy, &wt] {
        downgrade_to_v1(&env, r["id"].as_str().unwrap());
    }
    // Read as before, every documented field the same.
    for (r, b) in [&overlay, &copy, &wt].iter().zip(&before) {
        let after = env.ok(&["root", "show", r["id"].as_str().unwrap()]);
        assert_eq!(&after, b, "a version-1 record reads differently");
    }
    // It pins its snapshot, and the same key finds it.
    env.ok(&["ref", "rm", "base"]);
    env.ok(&["gc", "--grace", "0"]);
    assert_eq!(env.ok(&["verify"])["ok"], true);
    let again = env.root(&["--class", "routine", "--from", "base", "--backend", "overlay", "--key", "o"]);
    assert_eq!(again["created"], false);
    assert_eq!(env.ok(&["root", "diff", "o"])["added"][0]["path"], "note");
    for r in [&overlay, &copy, &wt] {
        let d = env.ok(&["root", "destroy", r["id"].as_str().unwrap()]);
        assert_eq!(d["cleaned"], true, "{d}");
    }
    assert_eq!(env.ok(&["doctor"])["ok"], true);
}
