//! A tiny real run of the provisioning benchmark (benches/provision.py --quick), so that it
//! cannot rot: a real `npm ci --offline` builds the layer once (a miss), hits reuse it and the
//! project runs in a hit root, a git worktree gets the same install, the JSON has every figure
//! and nothing is left behind. No timing is asserted.
//!
//! Needs root (overlay mounts), python3, Node with npm, and an npm cache that can serve the
//! fixture's lockfile offline (the script warms its cache, ~/.cache/execroot-bench/npm-cache,
//! online once when it cannot, and skips when that fails). The skip/fail rule is that of
//! tests/node_clients.rs (tests/common/node.rs): missing Node or npm, or a cold cache without
//! network, skips with a message, and fails when `CI=true`.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::node::{node_at_least, path_with, required};

fn skip(why: &str) {
    assert!(!required(), "{why}");
    eprintln!("skipped: {why}");
}

#[test]
fn the_provision_benchmark_runs_every_phase_and_cleans_up() {
    if !common::can_mount() {
        return;
    }
    let Some(node) = node_at_least((18, 0), "the provisioning benchmark (npm)") else { return };
    if Command::new("python3").arg("--version").output().is_err() {
        return skip("no python3 for benches/provision.py");
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let out_file = tmp.path().join("provision.json");
    let out = Command::new("python3")
        .arg(repo.join("benches/provision.py"))
        .args(["--quick", "--out"])
        .arg(&out_file)
        .current_dir(&repo)
        .env("EXECROOT_BIN", assert_cmd::cargo::cargo_bin("execroot"))
        .env("PATH", path_with(&node))
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "benches/provision.py --quick failed:\n{text}");

    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert_eq!(v["quick"], true);
    if let Some(why) = v["skipped"].as_str() {
        return skip(&format!("benches/provision.py: {why}"));
    }
    let s = &v["summary"];
    let p50 = |x: &serde_json::Value| x["p50"].as_f64().unwrap_or_else(|| panic!("no p50 in {x}"));
    let rounds = v["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 1);
    let miss = &rounds[0]["miss"];
    for k in ["provision", "provisionRoot", "provisionCommand", "provisionCommit", "provisionDestroy", "backend"] {
        assert!(miss["timingsMs"][k].as_f64().unwrap() > 0.0, "miss {k}: {miss}");
    }
    // The command's time is part of the provision step, which is part of the create.
    let t = &miss["timingsMs"];
    assert!(t["provisionCommand"].as_f64() < t["provision"].as_f64() && t["provision"].as_f64() < t["total"].as_f64());
    assert!(miss["layerBytes"].as_u64().unwrap() > 1_000_000, "{miss}");
    assert!(miss["storeGrowthBytes"].as_i64().unwrap() > 1_000_000, "{miss}");
    let hits = rounds[0]["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 2);
    for h in hits {
        assert!(h["timingsMs"]["provision"].as_f64().unwrap() > 0.0, "{h}");
        assert!(h["timingsMs"].get("provisionCommand").is_none(), "a hit ran the command: {h}");
    }
    assert_eq!(hits[0]["runs"], true, "node index.js in a hit root: {}", hits[0]);
    assert_eq!(s["hit"]["allRan"], true);
    for k in ["wallMs", "totalMs", "plainWallMs", "destroyMs"] {
        assert!(p50(&s["hit"][k]) > 0.0, "hit {k}");
    }
    // A git-overlay root of the project's commit hits the same layer, and git status is clean.
    let repo_hit = &rounds[0]["repoHit"];
    assert_eq!(repo_hit["gitClean"], true, "{repo_hit}");
    assert!(repo_hit["timingsMs"].get("provisionCommand").is_none(), "a repo hit ran the command: {repo_hit}");
    for k in ["wallMs", "plainWallMs", "firstPlainWallMs"] {
        assert!(p50(&s["repoHit"][k]) > 0.0, "repoHit {k}");
    }
    for k in ["addMs", "installMs", "removeMs", "readyMs"] {
        assert!(p50(&s["worktree"][k]) > 0.0, "worktree {k}");
    }
    assert!(s["nodeModules"]["nodeModulesBytes"].as_u64().unwrap() > 1_000_000);
    assert!(s["nodeModules"]["nodeModulesEntries"].as_u64().unwrap() > 1000);
    assert_eq!(s["goals"].as_array().unwrap().len(), 4);
    // Nothing left: no mount, no directory, no problem in the cleanup.
    let l = &v["leftovers"];
    assert_eq!(l["mounts"].as_array().unwrap().len(), 0, "{l}");
    assert_eq!(l["problems"].as_array().unwrap().len(), 0, "{l}");
    assert_eq!(l["dirLeft"], false, "{l}");
    assert!(!std::path::Path::new(v["tmp"].as_str().unwrap()).exists());
    assert!(text.contains("| hit: `root create --provision`"), "{text}");
}
