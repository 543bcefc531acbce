//! Push and pull through a real OCI registry: Debian's `docker-registry` (distribution 2.8),
//! started by each test on 127.0.0.1 with a private data directory and a minimal config, and
//! stopped by its pid alone. In CI (`CI=true`) a missing registry (or `htpasswd`) fails the
//! tests; elsewhere they skip with a message.

mod common;
#[path = "common/registry.rs"]
mod registry;
#[path = "common/service.rs"]
mod service;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use registry::*;
use serde_json::Value;

/// An [`Env`] whose docker config is its own (empty unless written), so the user's never
/// applies.
fn env() -> Env {
    let e = Env::new();
    std::fs::create_dir(e.path("docker")).unwrap();
    e
}

fn run(env: &Env, args: &[&str]) -> std::process::Output {
    env.cmd(args).env("DOCKER_CONFIG", env.path("docker")).output().unwrap()
}

fn ok(env: &Env, args: &[&str]) -> Value {
    let out = run(env, args);
    assert!(out.status.success(), "execroot {args:?} failed: {}", describe(&out));
    parse(&out)
}

fn fails(env: &Env, args: &[&str], code: i32) -> Value {
    let out = run(env, args);
    assert_eq!(out.status.code(), Some(code), "execroot {args:?}: {}", describe(&out));
    parse(&out)
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"))
}

fn verify_clean(env: &Env) {
    let v = env.ok(&["verify"]);
    assert_eq!(v["ok"], true, "{v}");
}

fn checkout_equals(env: &Env, snap: &str, src: &Path) {
    let out = env.path(&format!("co-{}", &snap[..snap.len().min(12)]));
    env.ok(&["snapshot", "checkout", snap, out.to_str().unwrap()]);
    assert_trees_equal(src, &out);
}

#[test]
fn round_trip_is_byte_exact_and_a_second_push_sends_nothing() {
    let Some(reg) = Reg::start() else { return };
    let a = env();
    let src = a.with_base();
    let repo = reg.repo("team/bases");
    let target = format!("{repo}:v1");
    let p = ok(&a, &["push", "base", &target]);
    let id = p["snapshot"].as_str().unwrap().to_string();
    assert!(n(&p, "uploadedBlobs") >= 4, "{p}");
    assert_eq!(n(&p, "newObjects"), n(&p, "objects"));
    assert_eq!(n(&p, "manifestsWritten"), 1);

    // The same snapshot again: nothing uploaded, no manifest rewritten.
    let again = ok(&a, &["push", "base", &target]);
    assert_eq!((n(&again, "uploadedBlobs"), n(&again, "uploadedBytes")), (0, 0), "{again}");
    assert_eq!((n(&again, "newObjects"), n(&again, "manifestsWritten")), (0, 0), "{again}");
    assert_eq!(again["digest"], p["digest"]);

    let ls = ok(&a, &["remote", "ls", &repo]);
    assert_eq!(ls["tags"][0]["tag"], "v1");
    assert_eq!(ls["tags"][0]["snapshot"], id.as_str());
    assert_eq!(ls["tags"][0]["digest"], p["digest"]);

    let b = env();
    let got = ok(&b, &["pull", &target, "--name", "mine"]);
    assert_eq!(got["snapshot"], id.as_str());
    assert_eq!(n(&got, "fetchedObjects"), n(&p, "objects"));
    assert_eq!(b.ok(&["ref", "list"])["refs"][0]["id"], id.as_str());
    verify_clean(&b);
    checkout_equals(&b, "mine", &src);
    // Pulling what the store has fetches no object.
    let again = ok(&b, &["pull", &target]);
    assert_eq!(n(&again, "fetchedObjects"), 0);
    assert_eq!(again["snapshots"][0]["newSnapshot"], false);
    // By digest too.
    let by_digest = ok(&b, &["pull", &format!("{repo}@{}", p["digest"].as_str().unwrap())]);
    assert_eq!(by_digest["snapshot"], id.as_str());

    // Bad references and missing things have their exit statuses.
    fails(&a, &["push", "base", "no-registry"], 2);
    fails(&b, &["pull", &repo], 2);
    fails(&b, &["pull", &format!("{repo}:nope")], 4);
    fails(&b, &["pull", &reg.repo("other/repo:v1")], 4);
    fails(&a, &["push", "nosuchref", &target], 4);
}

/// Rewrite about a tenth of the files of `src` (every 10th file in walk order).
fn change_tenth(src: &Path) -> usize {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(src)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().to_path_buf())
        .collect();
    files.sort();
    let mut changed = 0;
    for f in files.iter().step_by(10) {
        let mut data = std::fs::read(f).unwrap();
        data.extend_from_slice(b"\nchanged\n");
        std::fs::write(f, data).unwrap();
        changed += 1;
    }
    changed
}

#[test]
fn a_similar_snapshot_moves_only_what_is_new() {
    let Some(reg) = Reg::start() else { return };
    let a = env();
    let src = a.fixture("small", 7, "src");
    let v1 = a.ingest(&src);
    let repo = reg.repo("similar");
    let first = ok(&a, &["push", &v1, &format!("{repo}:v1")]);
    let b = env();
    ok(&b, &["pull", &format!("{repo}:v1")]);

    let changed = change_tenth(&src);
    let v2 = a.ingest(&src);
    let second = ok(&a, &["push", &v2, &format!("{repo}:v2")]);
    assert!(n(&second, "newObjects") <= changed as u64, "{second}");
    assert!(n(&second, "reusedObjects") > 0, "{second}");
    assert!(n(&second, "uploadedBytes") * 2 < n(&first, "uploadedBytes"), "first {first}\nsecond {second}");

    let got = ok(&b, &["pull", &format!("{repo}:v2")]);
    assert_eq!(got["snapshot"], v2.as_str());
    assert!(n(&got, "presentObjects") > 0, "{got}");
    assert!(n(&got, "fetchedObjects") <= changed as u64, "{got}");
    verify_clean(&b);
    checkout_equals(&b, &v2, &src);
}

#[test]
fn a_commit_layer_travels_with_its_base() {
    let Some(reg) = Reg::start() else { return };
    if !can_mount() {
        return;
    }
    let a = env();
    a.with_base();
    let r = a.ok(&["root", "create", "--class", "artifact", "--from", "base", "--backend", "copy"]);
    let c = cwd(&r);
    std::fs::write(c.join("added.txt"), "new file\n").unwrap();
    std::fs::remove_file(c.join("run-link")).unwrap();
    let commit = a.ok(&["root", "commit", r["id"].as_str().unwrap(), "--name", "layer"]);
    let layer = commit["id"].as_str().unwrap().to_string();
    let base = a.ok(&["snapshot", "show", "base"])["id"].as_str().unwrap().to_string();
    assert_eq!(commit["parents"][0], base.as_str());
    let view = a.path("view");
    a.ok(&["snapshot", "checkout", "layer", view.to_str().unwrap()]);
    a.ok(&["root", "destroy", r["id"].as_str().unwrap()]);

    let target = reg.repo("stack:top");
    let p = ok(&a, &["push", "layer", &target]);
    let ids: Vec<&str> = p["snapshots"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![base.as_str(), layer.as_str()]);
    assert_eq!(n(&p, "manifestsWritten"), 2);
    let ls = ok(&a, &["remote", "ls", &reg.repo("stack")]);
    assert_eq!(ls["tags"][0]["parents"][0], base.as_str());

    let b = env();
    let got = ok(&b, &["pull", &target, "--name", "layer"]);
    assert_eq!(got["snapshots"].as_array().unwrap().len(), 2);
    let show = b.ok(&["snapshot", "show", "layer"]);
    assert_eq!(show["parents"][0], base.as_str(), "the pulled layer keeps its parent");
    b.ok(&["snapshot", "show", &base]);
    verify_clean(&b);
    checkout_equals(&b, "layer", &view);

    // Pushing the base alone afterwards reuses everything.
    let again = ok(&a, &["push", "base", &reg.repo("stack:base")]);
    assert_eq!(n(&again, "uploadedBlobs"), 0, "{again}");
}

/// A tree of `count` incompressible files of `mib` MiB each (several packs).
fn random_tree(env: &Env, rel: &str, count: usize, mib: usize, seed: u8) -> PathBuf {
    use rand::{RngCore, SeedableRng};
    let dir = env.path(rel);
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::from_seed([seed; 32]);
    for i in 0..count {
        let mut data = vec![0u8; mib << 20];
        rng.fill_bytes(&mut data);
        std::fs::write(dir.join(format!("blob{i}")), data).unwrap();
    }
    dir
}

#[test]
fn a_push_cut_short_by_a_dead_registry_resumes() {
    let Some(mut reg) = Reg::start() else { return };
    let a = env();
    // 4 x 7 MiB: a pack of three (21 MiB) and one of one.
    let src = random_tree(&a, "src", 4, 7, 1);
    let id = a.ingest(&src);
    let target = reg.repo("resume:v1");
    // The registry dies right after the first pack arrived.
    let out = a
        .cmd(&["push", &id, &target])
        .env("DOCKER_CONFIG", a.path("docker"))
        .env("EXECROOT_FAILPOINT_RUN", format!("remote.push.pack-sent:kill -9 {}", reg.pid()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = parse(&out);
    assert_eq!(err["error"]["code"], "io", "{err}");
    reg.kill();
    reg.run();
    // Nothing a pull would take as complete was left.
    fails(&env(), &["pull", &target], 4);
    let p = ok(&a, &["push", &id, &target]);
    assert_eq!(n(&p, "packs"), 2, "{p}");
    assert!(n(&p, "presentBlobs") >= 1, "the pack that arrived is not sent again: {p}");
    assert!(n(&p, "uploadedBytes") < 10 << 20, "{p}");
    // A pull that loses one of the two packs (gone from the registry's storage) keeps the
    // objects it verified from the other; once the pack is back, the rerun fetches only it.
    let blobs = reg.dir.path().join("data/docker/registry/v2/blobs/sha256");
    let small = walkdir::WalkDir::new(&blobs)
        .into_iter()
        .map(|e| e.unwrap())
        .find(|e| e.file_name() == "data" && (6 << 20..8 << 20).contains(&e.metadata().unwrap().len()))
        .unwrap()
        .into_path();
    let saved = a.path("saved-pack");
    std::fs::rename(&small, &saved).unwrap();
    let b = env();
    let out = run(&b, &["pull", &target]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert_ne!(parse(&out)["error"]["code"], "corrupt", "{}", describe(&out));
    assert_eq!(b.object_count(), 3, "the verified objects of the pack that arrived are kept");
    verify_clean(&b);
    std::fs::rename(&saved, &small).unwrap();
    let got = ok(&b, &["pull", &target]);
    assert_eq!((n(&got, "presentObjects"), n(&got, "fetchedObjects"), n(&got, "wholePacks")), (3, 1, 1), "{got}");
    verify_clean(&b);
    checkout_equals(&b, &id, &src);
}

#[test]
fn a_corrupt_pack_fails_the_pull_and_leaves_the_store_clean() {
    let Some(reg) = Reg::start() else { return };
    let a = env();
    let src = a.fixture("small", 11, "src");
    let id = a.ingest(&src);
    let target = reg.repo("corrupt:v1");
    ok(&a, &["push", &id, &target]);
    let m = ok(&a, &["remote", "ls", &reg.repo("corrupt")]);
    assert_eq!(m["tags"][0]["packs"], 1);
    // Find the pack (the largest blob) and flip a byte in its middle.
    let blobs = reg.dir.path().join("data/docker/registry/v2/blobs/sha256");
    let pack = walkdir::WalkDir::new(&blobs)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() == "data")
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .into_path();
    let mut data = std::fs::read(&pack).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&pack, data).unwrap();

    let b = env();
    let err = fails(&b, &["pull", &target, "--name", "x"], 6);
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(msg.contains("damaged") || msg.contains("blake3"), "{msg}");
    verify_clean(&b);
    assert_eq!(b.ok(&["snapshot", "list"])["snapshots"], serde_json::json!([]));
    assert_eq!(b.object_count(), 0, "no object of a failed pull entered the store");
    assert_eq!(b.ok(&["ref", "list"])["refs"], serde_json::json!([]));

    // A damaged index: a push skips its tag with a warning and sends those objects again.
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut resp = agent
        .get(format!("http://{}/v2/corrupt/manifests/v1", reg.addr()))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .call()
        .unwrap();
    let m: Value = serde_json::from_slice(&resp.body_mut().read_to_vec().unwrap()).unwrap();
    let index =
        m["layers"].as_array().unwrap().iter().find(|l| l["mediaType"] == "application/vnd.execroot.index.v1").unwrap()
            ["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap()
            .to_string();
    let file = blobs.join(&index[..2]).join(&index).join("data");
    let mut data = std::fs::read(&file).unwrap();
    data[0] ^= 0xff;
    std::fs::write(&file, data).unwrap();
    let p = ok(&a, &["push", &id, &reg.repo("corrupt:v2")]);
    assert_eq!(n(&p, "reusedObjects"), 0, "{p}");
    assert!(p["warnings"][0].as_str().unwrap().starts_with("v1: "), "{p}");
}

#[test]
fn a_manifest_that_is_not_ours_is_refused() {
    let Some(reg) = Reg::start() else { return };
    // A plain OCI image manifest (empty config, no layers), put with the registry API.
    let base = format!("http://{}/v2/foreign/img", reg.addr());
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let cfg = b"{}";
    let cfg_digest = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
    let resp = agent.post(format!("{base}/blobs/uploads/")).send_empty().unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let loc = resp.headers().get("location").unwrap().to_str().unwrap().to_string();
    let loc = if loc.starts_with("http") { loc } else { format!("http://{}{loc}", reg.addr()) };
    let sep = if loc.contains('?') { '&' } else { '?' };
    let resp = agent.put(format!("{loc}{sep}digest={}", cfg_digest.replace(':', "%3A"))).send(&cfg[..]).unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cfg_digest}","size":2}},"layers":[]}}"#
    );
    let resp = agent
        .put(format!("{base}/manifests/latest"))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .send(manifest.as_bytes())
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);

    let b = env();
    let err = fails(&b, &["pull", &reg.repo("foreign/img:latest")], 2);
    assert!(err["error"]["message"].as_str().unwrap().contains("not an execroot snapshot"), "{err}");
    let ls = ok(&b, &["remote", "ls", &reg.repo("foreign/img")]);
    assert_eq!(ls["tags"][0]["snapshot"], Value::Null);
    assert!(ls["tags"][0]["error"].as_str().unwrap().contains("not an execroot snapshot"));
    // A push into that repository still works, noting the foreign tag.
    let a = env();
    a.with_base();
    let p = ok(&a, &["push", "base", &reg.repo("foreign/img:snap")]);
    assert_eq!(p["warnings"].as_array().unwrap().len(), 1, "{p}");
}

fn write_docker_config(env: &Env, addr: &str, user: &str, pass: &str) {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let cfg = serde_json::json!({ "auths": { addr: { "auth": auth } } });
    std::fs::write(env.path("docker/config.json"), cfg.to_string()).unwrap();
}

#[test]
fn basic_auth_with_htpasswd_and_wrong_credentials() {
    let Some(reg) = Reg::start_auth() else { return };
    assert!(reg.auth);
    let a = env();
    a.with_base();
    let target = reg.repo("private:v1");
    // No credentials, then wrong ones: refused (forbidden, exit 7), nothing written.
    let err = fails(&a, &["push", "base", &target], 7);
    assert!(err["error"]["message"].as_str().unwrap().contains("none are configured"), "{err}");
    write_docker_config(&a, &reg.addr(), "user", "wrong");
    let err = fails(&a, &["push", "base", &target], 7);
    assert!(err["error"]["message"].as_str().unwrap().contains("refused"), "{err}");
    write_docker_config(&a, &reg.addr(), "user", "secret");
    ok(&a, &["push", "base", &target]);

    let b = env();
    fails(&b, &["pull", &target], 7);
    // A credential helper (credHelpers) supplies them the way docker's do.
    let bin = b.path("bin");
    std::fs::create_dir(&bin).unwrap();
    let helper = bin.join("docker-credential-test");
    std::fs::write(
        &helper,
        "#!/bin/sh\nread host\necho \"{\\\"Username\\\":\\\"user\\\",\\\"Secret\\\":\\\"secret\\\"}\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cfg = serde_json::json!({ "credHelpers": { reg.addr(): "test" } });
    std::fs::write(b.path("docker/config.json"), cfg.to_string()).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = b
        .cmd(&["pull", &target, "--name", "got"])
        .env("DOCKER_CONFIG", b.path("docker"))
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    verify_clean(&b);
}

#[test]
fn concurrent_pushes_of_overlapping_snapshots_both_succeed() {
    let Some(reg) = Reg::start() else { return };
    let a = env();
    let src = a.fixture("small", 21, "src");
    let one = a.ingest(&src);
    change_tenth(&src);
    let two = a.ingest(&src);
    let repo = reg.repo("together");
    let spawn = |id: &str, tag: &str| {
        a.spawnable(&["push", id, &format!("{repo}:{tag}")])
            .env("DOCKER_CONFIG", a.path("docker"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (p1, p2) = (spawn(&one, "one"), spawn(&two, "two"));
    for p in [p1.wait_with_output().unwrap(), p2.wait_with_output().unwrap()] {
        assert!(p.status.success(), "{}", describe(&p));
    }
    let b = env();
    for (tag, id) in [("one", &one), ("two", &two)] {
        let got = ok(&b, &["pull", &format!("{repo}:{tag}")]);
        assert_eq!(got["snapshot"], id.as_str());
    }
    verify_clean(&b);
    checkout_equals(&b, &two, &src);
}

#[test]
fn push_pull_and_remote_ls_through_the_service() {
    let Some(reg) = Reg::start() else { return };
    if !needs_root("the service's registry routes are privileged; the test serves its own store") {
        return;
    }
    let a = env();
    let src = a.with_base();
    let s = service::Server::start(&a, &[]);
    let target = reg.repo("svc:v1");
    let p = s.req("POST", "/v1/push", Some(serde_json::json!({ "snapshot": "base", "target": target }))).expect(200);
    assert!(n(&p, "uploadedBlobs") > 0, "{p}");
    let ls = s.req("GET", &format!("/v1/remote?repo={}", reg.repo("svc")), None).expect(200);
    assert_eq!(ls["tags"][0]["snapshot"], p["snapshot"]);
    let bad = s.req("POST", "/v1/pull", Some(serde_json::json!({ "source": "no-registry" })));
    assert_eq!(bad.status, 400);
    drop(s);

    let b = env();
    let s = service::Server::start(&b, &[]);
    let got = s.req("POST", "/v1/pull", Some(serde_json::json!({ "source": target, "name": "base" }))).expect(200);
    assert_eq!(got["snapshot"], p["snapshot"]);
    drop(s);
    verify_clean(&b);
    checkout_equals(&b, "base", &src);
}

#[test]
fn a_few_objects_of_a_large_pack_come_by_range_and_are_checked() {
    let Some(reg) = Reg::start() else { return };
    let a = env();
    // X: small text files first (canonical order), then a 20 MiB incompressible file, in one
    // pack; Y: the small files alone, all already in X's pack.
    let x = random_tree(&a, "x/zzz", 1, 20, 3);
    let x = x.parent().unwrap().to_path_buf();
    let y = a.path("y");
    for dir in [x.join("aaa"), y.join("aaa")] {
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..50 {
            std::fs::write(dir.join(format!("f{i:02}")), format!("small file {i}\n").repeat(40)).unwrap();
        }
    }
    let (xid, yid) = (a.ingest(&x), a.ingest(&y));
    ok(&a, &["push", &xid, &reg.repo("ranges:x")]);
    let py = ok(&a, &["push", &yid, &reg.repo("ranges:y")]);
    assert_eq!((n(&py, "newObjects"), n(&py, "packs")), (0, 0), "{py}");

    let b = env();
    let got = ok(&b, &["pull", &reg.repo("ranges:y")]);
    assert_eq!((n(&got, "wholePacks"), n(&got, "rangeRequests")), (0, 1), "{got}");
    assert!(n(&got, "bytesReceived") < 1 << 20, "{got}");
    verify_clean(&b);
    checkout_equals(&b, &yid, &y);

    // Damage the pack's first frame: a ranged pull notices it by decompressing or hashing.
    let ls = ok(&a, &["remote", "ls", &reg.repo("ranges")]);
    assert_eq!(ls["tags"][1]["packs"], 1);
    let blobs = reg.dir.path().join("data/docker/registry/v2/blobs/sha256");
    let pack = walkdir::WalkDir::new(&blobs)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() == "data")
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .into_path();
    let mut data = std::fs::read(&pack).unwrap();
    data[20] ^= 0xff;
    std::fs::write(&pack, data).unwrap();
    let c = env();
    let err = fails(&c, &["pull", &reg.repo("ranges:y")], 6);
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(msg.contains("does not decompress") || msg.contains("blake3"), "{msg}");
    verify_clean(&c);
    assert_eq!(c.object_count(), 0);
}

/// A token service for the registry's `token` auth (the flow Docker Hub, GHCR and Harbor use):
/// it answers `GET /token` with one JWT (RS256, signed with `openssl`, its certificate in the
/// `x5c` header and in the registry's `rootcertbundle`) when the basic credentials are
/// `user:secret`, and 401 otherwise. Serves at most `limit` connections.
struct TokenService {
    port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn b64url(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl TokenService {
    fn start(dir: &Path, repo: &str, limit: usize) -> TokenService {
        let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
        let st = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=token"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        let der = Command::new("openssl").args(["x509", "-outform", "DER", "-in"]).arg(&cert).output().unwrap().stdout;
        use base64::Engine as _;
        let header = serde_json::json!({ "typ": "JWT", "alg": "RS256",
            "x5c": [base64::engine::general_purpose::STANDARD.encode(&der)] });
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let claims = serde_json::json!({ "iss": "test-issuer", "sub": "user", "aud": "test-registry",
            "exp": now + 3600, "nbf": now - 60, "iat": now - 60, "jti": "1",
            "access": [ { "type": "repository", "name": repo, "actions": ["pull", "push"] } ] });
        let signing = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
        let input = dir.join("signing");
        std::fs::write(&input, &signing).unwrap();
        let sig = Command::new("openssl").args(["dgst", "-sha256", "-sign"]).arg(&key).arg(&input).output().unwrap();
        assert!(sig.status.success());
        let token = format!("{signing}.{}", b64url(&sig.stdout));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            use std::io::{BufRead, Write};
            let good = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("user:secret"));
            for conn in listener.incoming().take(limit) {
                let Ok(mut conn) = conn else { continue };
                let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
                let (mut first, mut authz) = (String::new(), String::new());
                reader.read_line(&mut first).unwrap();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") {
                            authz = v.trim().to_string();
                        }
                    }
                }
                log.lock().unwrap().push(first.trim().to_string());
                let (status, body) = if authz == good {
                    ("200 OK", serde_json::json!({ "token": token }).to_string())
                } else {
                    ("401 Unauthorized", "{}".to_string())
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TokenService { port, seen }
    }
}

#[test]
fn bearer_tokens_from_the_registrys_token_service() {
    if !have(REGISTRY, "docker-registry") || !have("/usr/bin/openssl", "openssl") {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let tokens = TokenService::start(scratch.path(), "tok", 50);
    let Some(mut reg) = Reg::start() else { return };
    // Restart the same registry with token auth.
    reg.kill();
    let cfg = std::fs::read_to_string(reg.dir.path().join("config.yml")).unwrap();
    let cfg = format!(
        "{cfg}auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: test-registry\n    issuer: test-issuer\n    rootcertbundle: {}\n",
        tokens.port,
        scratch.path().join("cert.pem").display()
    );
    std::fs::write(reg.dir.path().join("config.yml"), cfg).unwrap();
    reg.run();

    let a = env();
    let src = a.with_base();
    let target = reg.repo("tok:v1");
    let err = fails(&a, &["push", "base", &target], 7);
    assert!(err["error"]["message"].as_str().unwrap().contains("refused"), "{err}");
    write_docker_config(&a, &reg.addr(), "user", "secret");
    let p = ok(&a, &["push", "base", &target]);
    assert!(n(&p, "uploadedBlobs") > 0);
    let seen = tokens.seen.lock().unwrap().clone();
    assert!(seen.iter().any(|l| l.starts_with("GET /token?scope=repository%3Atok%3A")), "{seen:?}");
    assert!(seen.iter().any(|l| l.contains("service=test-registry")), "{seen:?}");

    let b = env();
    write_docker_config(&b, &reg.addr(), "user", "secret");
    ok(&b, &["pull", &target, "--name", "base"]);
    verify_clean(&b);
    checkout_equals(&b, "base", &src);
}
