//! A registry you do not trust: crafted artifacts of execroot's own `artifactType` pushed
//! straight into a real `docker-registry` (distribution 2.8) with the distribution API, and,
//! for what a real registry never does (wrong ranges, redirects, stalls, endless tag lists,
//! lying descriptors), a small HTTP server on 127.0.0.1 in front of it. Every pull must fail
//! closed: a clear error with its exit status (6 for damaged remote data), `verify` clean, no
//! snapshot or ref created, nothing written outside the store, memory bounded.
//!
//! In CI (`CI=true`) a missing registry fails the tests; elsewhere they skip with a message.

mod common;
#[path = "common/registry.rs"]
mod registry;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use execroot::hash::Hash;
use execroot::remote::index::Index;
use execroot::remote::wire::{self, sha256_digest};
use execroot::store::{Entry, Manifest, Node};
use registry::*;
use serde_json::{json, Value};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).build().into()
}

/// Upload `bytes` as a blob of `repo` (POST, then PUT with the digest).
fn put_blob(addr: &str, repo: &str, bytes: &[u8]) {
    let a = agent();
    let resp = a.post(format!("http://{addr}/v2/{repo}/blobs/uploads/")).send_empty().unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let loc = resp.headers().get("location").unwrap().to_str().unwrap().to_string();
    let loc = if loc.starts_with("http") { loc } else { format!("http://{addr}{loc}") };
    let sep = if loc.contains('?') { '&' } else { '?' };
    let resp = a.put(format!("{loc}{sep}digest={}", sha256_digest(bytes).replace(':', "%3A"))).send(bytes).unwrap();
    assert_eq!(resp.status().as_u16(), 201);
}

/// One layer of a crafted artifact.
struct Layer {
    media: &'static str,
    bytes: Vec<u8>,
    ann: Value,
}

fn snap_layer(raw: &[u8]) -> (Hash, Layer) {
    let id = Hash::of(raw);
    let bytes = zstd::bulk::compress(raw, 3).unwrap();
    (id, Layer { media: wire::SNAPSHOT_MEDIA_TYPE, bytes, ann: json!({ wire::ANN_SNAPSHOT: id.to_hex() }) })
}

fn layer(media: &'static str, bytes: Vec<u8>) -> Layer {
    Layer { media, bytes, ann: json!({}) }
}

/// The registry manifest of `layers` for snapshot `top` (its blobs uploaded to `repo`);
/// `size_of` may make a descriptor lie about its blob's size.
fn artifact(addr: &str, repo: &str, layers: &[Layer], top: &Hash, size_of: impl Fn(usize, u64) -> u64) -> Vec<u8> {
    put_blob(addr, repo, wire::EMPTY_CONTENT);
    let mut descs = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        put_blob(addr, repo, &l.bytes);
        let mut d = json!({ "mediaType": l.media, "digest": sha256_digest(&l.bytes), "size": size_of(i, l.bytes.len() as u64) });
        if l.ann.as_object().is_some_and(|o| !o.is_empty()) {
            d["annotations"] = l.ann.clone();
        }
        descs.push(d);
    }
    let m = json!({
        "schemaVersion": 2,
        "mediaType": wire::MANIFEST_MEDIA_TYPE,
        "artifactType": wire::ARTIFACT_TYPE,
        "config": { "mediaType": wire::EMPTY_MEDIA_TYPE, "digest": sha256_digest(wire::EMPTY_CONTENT), "size": 2 },
        "layers": descs,
        "annotations": { wire::ANN_SNAPSHOT: top.to_hex() },
    });
    serde_json::to_vec(&m).unwrap()
}

/// Put `manifest` under `repo:tag` of the real registry.
fn put_manifest(addr: &str, repo: &str, tag: &str, manifest: &[u8]) {
    let resp = agent()
        .put(format!("http://{addr}/v2/{repo}/manifests/{tag}"))
        .header("Content-Type", wire::MANIFEST_MEDIA_TYPE)
        .send(manifest)
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201, "manifest {tag} refused by the registry");
}

fn entry(path: &[u8], node: Node) -> Entry {
    let mode = if matches!(node, Node::Dir) { 0o755 } else { 0o644 };
    Entry { path: path.to_vec(), mode, mtime_sec: 0, mtime_nsec: 0, node }
}

/// A snapshot manifest with the root and `files` (path, content), in the order given (not
/// necessarily canonical: the point is to see it refused).
fn snapshot(parents: Vec<Hash>, files: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut entries = vec![entry(b"", Node::Dir)];
    for (p, data) in files {
        entries.push(entry(p, Node::File { size: data.len() as u64, hash: Hash::of(data) }));
    }
    Manifest { parents, entries }.encode()
}

/// A pack holding `objects` (one zstd frame each) followed by `pad` bytes no index lists,
/// and its index; `tweak` may change each entry (hash, pack, offset, clen, rlen).
fn pack_and_index(objects: &[&[u8]], pad: usize, tweak: impl Fn(&mut IndexEntry)) -> (Layer, Layer) {
    let mut pack = Vec::new();
    let mut entries = Vec::new();
    for o in objects {
        let frame = zstd::bulk::compress(o, 3).unwrap();
        let mut e = (Hash::of(o), 0u32, pack.len() as u64, frame.len() as u64, o.len() as u64);
        tweak(&mut e);
        entries.push(e);
        pack.extend_from_slice(&frame);
    }
    pack.resize(pack.len() + pad, 0xAA);
    entries.sort_by_key(|e| e.0);
    let index = Index { packs: vec![sha256_digest(&pack)], entries }.encode();
    (layer(wire::INDEX_MEDIA_TYPE, index), layer(wire::PACK_MEDIA_TYPE, pack))
}

fn env() -> Env {
    let e = Env::new();
    std::fs::create_dir(e.path("docker")).unwrap();
    e
}

fn run(env: &Env, args: &[&str]) -> Output {
    env.cmd(args).env("DOCKER_CONFIG", env.path("docker")).output().unwrap()
}

/// `execroot ARGS` fails with `code` and a message containing `says`; returns the message.
fn fails(env: &Env, args: &[&str], code: i32, says: &str) -> String {
    let out = run(env, args);
    assert_eq!(out.status.code(), Some(code), "execroot {args:?}: {}", describe(&out));
    let v = parse(&out);
    let msg = v["error"]["message"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains(says), "execroot {args:?}: expected {says:?} in: {msg}");
    msg
}

/// The store is verify-clean and holds no snapshot and no ref.
fn untouched(env: &Env) {
    let v = env.ok(&["verify"]);
    assert_eq!(v["ok"], true, "{v}");
    let list = env.ok(&["snapshot", "list"]);
    assert_eq!(list["snapshots"].as_array().map(Vec::len), Some(0), "{list}");
    let refs = env.ok(&["ref", "list"]);
    assert_eq!(refs["refs"].as_array().map(Vec::len), Some(0), "{refs}");
}

#[test]
fn hostile_entries_in_a_pulled_snapshot_are_refused_like_local_ones() {
    let Some(reg) = Reg::start() else { return };
    let addr = reg.addr();
    let data: &[u8] = b"payload\n";
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("dotdot", snapshot(vec![], &[(b"../escape", data)])),
        ("deep-dotdot", snapshot(vec![], &[(b"a/../../escape", data)])),
        ("absolute", snapshot(vec![], &[(b"/tmp/escape", data)])),
        ("nul", snapshot(vec![], &[(b"bad\0name", data)])),
        ("duplicate", snapshot(vec![], &[(b"f", data), (b"f", data)])),
        ("unsorted", snapshot(vec![], &[(b"b", data), (b"a", data)])),
        ("not-a-manifest", b"EXRMAN junk that is no manifest".to_vec()),
    ];
    let b = env();
    for (tag, raw) in &cases {
        let (id, snap) = snap_layer(raw);
        let (index, pack) = pack_and_index(&[data], 0, |_| {});
        let m = artifact(&addr, "hostile/entries", &[snap, index, pack], &id, |_, s| s);
        put_manifest(&addr, "hostile/entries", tag, &m);
        let msg = fails(&b, &["pull", &format!("{addr}/hostile/entries:{tag}"), "--name", "got"], 6, "snapshot");
        assert!(msg.contains(&id.to_hex()), "{tag}: the message names the snapshot: {msg}");
    }
    untouched(&b);
    assert!(!b.path("escape").exists() && !Path::new("/tmp/escape").exists());
}

#[test]
fn a_decompression_bomb_is_cut_at_the_objects_size() {
    let Some(reg) = Reg::start() else { return };
    let addr = reg.addr();
    // The manifest says 1 MiB; the frame the index lists for it expands to 1 GiB of zeros.
    let data = vec![b'a'; 1 << 20];
    let raw = snapshot(vec![], &[(b"f", &data)]);
    let (id, snap) = snap_layer(&raw);
    let bomb = zstd::stream::encode_all(std::io::repeat(0).take(1 << 30), 3).unwrap();
    let index = Index {
        packs: vec![sha256_digest(&bomb)],
        entries: vec![(Hash::of(&data), 0, 0, bomb.len() as u64, data.len() as u64)],
    };
    let pack = layer(wire::PACK_MEDIA_TYPE, bomb);
    let m =
        artifact(&addr, "hostile/bomb", &[snap, layer(wire::INDEX_MEDIA_TYPE, index.encode()), pack], &id, |_, s| s);
    put_manifest(&addr, "hostile/bomb", "v1", &m);
    let b = env();
    fails(&b, &["pull", &format!("{addr}/hostile/bomb:v1")], 6, "does not match its blake3");
    untouched(&b);
    // Nothing of it stayed in the store's temporary space either.
    let tmp: u64 = walk_size(&b.store());
    assert!(tmp < 64 << 20, "the store holds {tmp} bytes after a refused bomb");
}

fn walk_size(p: &Path) -> u64 {
    walkdir::WalkDir::new(p).into_iter().filter_map(|e| e.ok()).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum()
}

#[test]
fn indexes_that_lie_about_places_and_frames_are_refused() {
    let Some(reg) = Reg::start() else { return };
    let addr = reg.addr();
    let data: &[u8] = b"the one object\n";
    let raw = snapshot(vec![], &[(b"f", data)]);
    let b = env();
    let lies: [(&str, Lie, &str); 4] = [
        ("past-the-end", |e| e.2 += 1 << 20, "beyond the end of pack"),
        ("huge-frame", |e| e.3 = 1 << 40, "a frame of"),
        ("wrong-length", |e| e.4 += 1, "the index gives object"),
        ("overlapping", |e| e.2 += 1, "does not"),
    ];
    for (tag, tweak, says) in &lies {
        let (id, snap) = snap_layer(&raw);
        let (index, pack) = pack_and_index(&[data], 64, *tweak);
        let m = artifact(&addr, "hostile/index", &[snap, index, pack], &id, |_, s| s);
        put_manifest(&addr, "hostile/index", tag, &m);
        fails(&b, &["pull", &format!("{addr}/hostile/index:{tag}"), "--name", "x"], 6, says);
    }
    untouched(&b);
}

#[test]
fn indexes_that_claim_too_much_are_refused_before_they_are_fetched() {
    let Some(reg) = Reg::start() else { return };
    let addr = reg.addr();
    let data: &[u8] = b"one object\n";
    let (id, snap) = snap_layer(&snapshot(vec![], &[(b"f", data)]));
    let (index, pack) = pack_and_index(&[data], 0, |_| {});
    let (index2, _) = pack_and_index(&[data, b"another"], 0, |_| {});
    // Two indexes of 600 MiB each by their descriptors (more than 1 GiB together), and one of
    // 2 GiB alone; the manifests are served by a front, as a registry would check the sizes.
    let two = artifact(&addr, "hostile/big-index", &[snap, index, index2, pack], &id, |i, s| {
        if i == 1 || i == 2 {
            600 << 20
        } else {
            s
        }
    });
    let (_, snap) = snap_layer(&snapshot(vec![], &[(b"f", data)]));
    let (index, pack) = pack_and_index(&[data], 0, |_| {});
    let one = artifact(&addr, "hostile/big-index", &[snap, index, pack], &id, |i, s| if i == 1 { 2 << 30 } else { s });
    let up = reg.addr();
    let front = Front::start(Arc::new(move |req, s| {
        let headers = [("Content-Type".to_string(), wire::MANIFEST_MEDIA_TYPE.to_string())];
        if req.path.ends_with("/manifests/two") {
            return respond(s, 200, &headers, &two);
        }
        if req.path.ends_with("/manifests/one") {
            return respond(s, 200, &headers, &one);
        }
        let (status, headers, body) = forward(&up, req);
        respond(s, status, &headers, &body);
    }));
    let b = env();
    fails(&b, &["pull", &format!("{}/hostile/big-index:two", front.addr())], 6, "indexes claim");
    fails(&b, &["pull", &format!("{}/hostile/big-index:one", front.addr())], 6, "over the");
    let blob_gets = front.requests().iter().filter(|r| r.method == "GET" && r.path.contains("/blobs/")).count();
    assert_eq!(blob_gets, 2, "only the snapshot manifests were fetched: {:?}", front.requests());
    untouched(&b);
}

#[test]
fn a_snapshot_the_top_does_not_stand_on_is_not_smuggled_in() {
    let Some(reg) = Reg::start() else { return };
    let addr = reg.addr();
    let data: &[u8] = b"shared\n";
    let (stray_id, stray) = snap_layer(&snapshot(vec![], &[(b"stray", data)]));
    let (id, top) = snap_layer(&snapshot(vec![], &[(b"top", data)]));
    let (index, pack) = pack_and_index(&[data], 0, |_| {});
    let m = artifact(&addr, "hostile/stray", &[stray, top, index, pack], &id, |_, s| s);
    put_manifest(&addr, "hostile/stray", "v1", &m);
    let b = env();
    let msg = fails(&b, &["pull", &format!("{addr}/hostile/stray:v1")], 6, "does not stand on");
    assert!(msg.contains(&stray_id.to_hex()), "{msg}");
    // The same snapshot layer twice.
    let (_, once) = snap_layer(&snapshot(vec![], &[(b"top", data)]));
    let (_, twice) = snap_layer(&snapshot(vec![], &[(b"top", data)]));
    let (index, pack) = pack_and_index(&[data], 0, |_| {});
    let m = artifact(&addr, "hostile/stray", &[once, twice, index, pack], &id, |_, s| s);
    put_manifest(&addr, "hostile/stray", "v2", &m);
    fails(&b, &["pull", &format!("{addr}/hostile/stray:v2")], 6, "twice");
    untouched(&b);
}

#[test]
fn remote_metadata_never_overrides_the_stores() {
    let Some(reg) = Reg::start() else { return };
    let addr = reg.addr();
    let data: &[u8] = b"labelled\n";
    let raw = snapshot(vec![], &[(b"f", data)]);
    let with = |tag: &str, labels: Value, created: Option<&str>| {
        let (id, mut snap) = snap_layer(&raw);
        snap.ann[wire::ANN_LABELS] = Value::String(labels.to_string());
        let (index, pack) = pack_and_index(&[data], 0, |_| {});
        let mut m: Value =
            serde_json::from_slice(&artifact(&addr, "hostile/meta", &[snap, index, pack], &id, |_, s| s)).unwrap();
        if let Some(c) = created {
            m["annotations"][wire::ANN_CREATED] = Value::String(c.into());
        }
        put_manifest(&addr, "hostile/meta", tag, &serde_json::to_vec(&m).unwrap());
        id
    };
    let b = env();
    // Labels no `--label KEY=VALUE` could set, and a creation time that is not one.
    with("empty-key", json!({ "": "x" }), None);
    fails(&b, &["pull", &format!("{addr}/hostile/meta:empty-key")], 6, "label key");
    with("eq-key", json!({ "a=b": "x" }), None);
    fails(&b, &["pull", &format!("{addr}/hostile/meta:eq-key")], 6, "label key");
    with("created", json!({}), Some("2026-12-02T00:00:00Z\n\u{1b}[31mforged"));
    fails(&b, &["pull", &format!("{addr}/hostile/meta:created")], 6, "is not a time");
    untouched(&b);
    // A second pull of the same snapshot adds labels, but changes none the store has.
    let id = with("v1", json!({ "trust": "local" }), Some("2026-12-02T10:00:00Z"));
    let out = run(&b, &["pull", &format!("{addr}/hostile/meta:v1")]);
    assert!(out.status.success(), "{}", describe(&out));
    with("v2", json!({ "trust": "remote", "extra": "1" }), None);
    let out = run(&b, &["pull", &format!("{addr}/hostile/meta:v2")]);
    assert!(out.status.success(), "{}", describe(&out));
    let show = b.ok(&["snapshot", "show", &id.to_hex()]);
    assert_eq!(show["labels"], json!({ "trust": "local", "extra": "1" }), "{show}");
}

// ---- A server in front of the registry, for what a registry does not do by itself. ----

/// One request as the front server saw it.
#[derive(Clone, Debug)]
struct Req {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// An index entry: (object, pack number, offset, frame length, object length).
type IndexEntry = (Hash, u32, u64, u64, u64);

/// A change to an index entry that makes it lie.
type Lie = fn(&mut IndexEntry);

type Handler = dyn Fn(&Req, &mut TcpStream) + Send + Sync;

/// An HTTP/1.1 server on 127.0.0.1 (one connection per request); every request is logged.
struct Front {
    port: u16,
    log: Arc<Mutex<Vec<Req>>>,
}

impl Front {
    fn start(handler: Arc<Handler>) -> Front {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let (h, log) = (handler.clone(), log2.clone());
                std::thread::spawn(move || {
                    let Some(req) = read_req(&mut s) else { return };
                    log.lock().unwrap().push(req.clone());
                    h(&req, &mut s);
                });
            }
        });
        Front { port, log }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }
}

fn read_req(s: &mut TcpStream) -> Option<Req> {
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Some(Req { method, path, headers })
}

fn respond(s: &mut TcpStream, status: u16, headers: &[(String, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status} X\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
}

/// Send `req` on to the registry at `upstream`: (status, headers worth passing on, body).
fn forward(upstream: &str, req: &Req) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let url = format!("http://{upstream}{}", req.path);
    let a = agent();
    let mut b = match req.method.as_str() {
        "HEAD" => a.head(&url),
        _ => a.get(&url),
    };
    for k in ["range", "accept"] {
        if let Some(v) = req.header(k) {
            b = b.header(k, v);
        }
    }
    let mut resp = b.call().unwrap();
    let status = resp.status().as_u16();
    let keep = ["content-type", "docker-content-digest", "content-range", "link"];
    let headers = resp
        .headers()
        .iter()
        .filter(|(k, _)| keep.contains(&k.as_str()))
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
        .collect();
    let body = if req.method == "HEAD" {
        Vec::new()
    } else {
        resp.body_mut().with_config().limit(1 << 31).read_to_vec().unwrap()
    };
    (status, headers, body)
}

/// A one-object snapshot in `repo:v1` of the real registry whose pack is mostly padding, so
/// that a pull fetches its object with a ranged GET. Returns the registry manifest.
fn ranged_artifact(reg: &Reg, repo: &str, size_of: impl Fn(usize, u64) -> u64, put: bool) -> Vec<u8> {
    let data: &[u8] = b"fetched by range\n";
    let (id, snap) = snap_layer(&snapshot(vec![], &[(b"f", data)]));
    let (index, pack) = pack_and_index(&[data], 1 << 20, |_| {});
    let m = artifact(&reg.addr(), repo, &[snap, index, pack], &id, size_of);
    if put {
        put_manifest(&reg.addr(), repo, "v1", &m);
    }
    m
}

#[test]
fn a_range_answer_for_other_bytes_is_refused() {
    let Some(reg) = Reg::start() else { return };
    ranged_artifact(&reg, "hostile/range", |_, s| s, true);
    let up = reg.addr();
    // 206 with the right length but a Content-Range for other bytes.
    let shifted: Arc<Handler> = Arc::new(move |req, s| {
        let (status, mut headers, body) = forward(&up, req);
        if status == 206 {
            for h in headers.iter_mut().filter(|h| h.0 == "content-range") {
                let total = h.1.rsplit('/').next().unwrap().to_string();
                h.1 = format!("bytes 1-{}/{total}", body.len());
            }
        }
        respond(s, status, &headers, &body);
    });
    let front = Front::start(shifted);
    let b = env();
    fails(&b, &["pull", &format!("{}/hostile/range:v1", front.addr())], 6, "Content-Range");
    assert!(front.requests().iter().any(|r| r.header("range").is_some()), "the object was asked for by range");
    // 206 without Content-Range whose bytes are not the range: the object's blake3 catches it.
    let up = reg.addr();
    let wrong: Arc<Handler> = Arc::new(move |req, s| {
        let (status, mut headers, mut body) = forward(&up, req);
        if status == 206 {
            headers.retain(|h| h.0 != "content-range");
            body.iter_mut().for_each(|b| *b = b.wrapping_add(1));
        }
        respond(s, status, &headers, &body);
    });
    let front = Front::start(wrong);
    fails(&b, &["pull", &format!("{}/hostile/range:v1", front.addr())], 6, "");
    untouched(&b);
}

#[test]
fn a_registry_that_ignores_the_range_of_a_huge_blob_is_not_read_whole() {
    let Some(reg) = Reg::start() else { return };
    // The pack's descriptor claims 1 TiB, and the server answers every ranged GET with the
    // whole "blob": 200 and bytes without end. The pull runs with 2 GiB of address space.
    let m = ranged_artifact(&reg, "hostile/huge", |i, s| if i == 2 { 1 << 40 } else { s }, false);
    let up = reg.addr();
    let endless: Arc<Handler> = Arc::new(move |req, s| {
        if req.path.contains("/manifests/") {
            let headers = [("Content-Type".to_string(), wire::MANIFEST_MEDIA_TYPE.to_string())];
            return respond(s, 200, &headers, &m);
        }
        if req.header("range").is_some() {
            // Chunked, so no length says in advance how much is coming.
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
            let mut chunk = b"100000\r\n".to_vec();
            chunk.resize(chunk.len() + (1 << 20), 0);
            chunk.extend_from_slice(b"\r\n");
            while s.write_all(&chunk).is_ok() {}
            return;
        }
        let (status, headers, body) = forward(&up, req);
        respond(s, status, &headers, &body);
    });
    let front = Front::start(endless);
    let b = env();
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("execroot"));
    cmd.arg("--store").arg(b.store()).arg("--json").arg("pull").arg(format!("{}/hostile/huge:v1", front.addr()));
    cmd.env("DOCKER_CONFIG", b.path("docker"));
    limit_address_space(&mut cmd, 2 << 30);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "a clear I/O error, not a crash: {}", describe(&out));
    let msg = parse(&out)["error"]["message"].as_str().unwrap_or_default().to_string();
    // It stops at the range's length, not at some far larger bound.
    let took: u64 = msg
        .split_once("more than the ")
        .and_then(|(_, r)| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the message names the request and its bound: {msg}"));
    assert!(msg.contains("/blobs/sha256:") && took < 1 << 20, "{msg}");
    untouched(&b);
}

#[test]
fn a_huge_claimed_object_is_streamed_not_held() {
    let Some(reg) = Reg::start() else { return };
    // The snapshot claims a 1 TiB file whose frame is the whole of a 2 TiB pack's first TiB;
    // the server answers the range with a 206 and bytes without end. Holding the frame would
    // exhaust the 2 GiB of address space the pull runs with; streaming it meets garbage at once.
    let addr = reg.addr();
    let claimed = Hash::of(b"never sent");
    let mut entries = vec![entry(b"", Node::Dir)];
    entries.push(entry(b"big", Node::File { size: 1 << 40, hash: claimed }));
    let (id, snap) = snap_layer(&Manifest { parents: vec![], entries }.encode());
    let pack = layer(wire::PACK_MEDIA_TYPE, b"a small real blob".to_vec());
    let index = Index { packs: vec![sha256_digest(&pack.bytes)], entries: vec![(claimed, 0, 0, 1 << 40, 1 << 40)] };
    let index = layer(wire::INDEX_MEDIA_TYPE, index.encode());
    let m = artifact(&addr, "hostile/stream", &[snap, index, pack], &id, |i, s| if i == 2 { 2 << 40 } else { s });
    let up = reg.addr();
    let endless: Arc<Handler> = Arc::new(move |req, s| {
        if req.path.contains("/manifests/") {
            let headers = [("Content-Type".to_string(), wire::MANIFEST_MEDIA_TYPE.to_string())];
            return respond(s, 200, &headers, &m);
        }
        if req.method == "GET" && req.header("range").is_some() {
            let head = format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-{}/{}\r\nTransfer-Encoding: chunked\r\n\r\n",
                (1u64 << 40) - 1,
                2u64 << 40
            );
            let _ = s.write_all(head.as_bytes());
            let mut chunk = b"100000\r\n".to_vec();
            chunk.resize(chunk.len() + (1 << 20), 0xAA);
            chunk.extend_from_slice(b"\r\n");
            while s.write_all(&chunk).is_ok() {}
            return;
        }
        let (status, headers, body) = forward(&up, req);
        respond(s, status, &headers, &body);
    });
    let front = Front::start(endless);
    let b = env();
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("execroot"));
    cmd.arg("--store").arg(b.store()).arg("--json").arg("pull").arg(format!("{}/hostile/stream:v1", front.addr()));
    cmd.env("DOCKER_CONFIG", b.path("docker"));
    limit_address_space(&mut cmd, 2 << 30);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", describe(&out));
    let msg = parse(&out)["error"]["message"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("does not decompress") && msg.contains(&claimed.to_hex()), "{msg}");
    untouched(&b);
}

#[test]
fn a_connection_dropped_inside_a_streamed_frame_is_not_called_damage() {
    let Some(reg) = Reg::start() else { return };
    // As above, but the 206 carries the start of a real zstd frame and then the connection
    // closes: that is a broken exchange (exit 1, a rerun may succeed), not damaged data.
    let addr = reg.addr();
    let claimed = Hash::of(b"never sent either");
    let mut entries = vec![entry(b"", Node::Dir)];
    entries.push(entry(b"big", Node::File { size: 1 << 30, hash: claimed }));
    let (id, snap) = snap_layer(&Manifest { parents: vec![], entries }.encode());
    let pack = layer(wire::PACK_MEDIA_TYPE, b"another small real blob".to_vec());
    let index = Index { packs: vec![sha256_digest(&pack.bytes)], entries: vec![(claimed, 0, 0, 1 << 30, 1 << 30)] };
    let index = layer(wire::INDEX_MEDIA_TYPE, index.encode());
    let m = artifact(&addr, "hostile/drop", &[snap, index, pack], &id, |i, s| if i == 2 { 2 << 30 } else { s });
    let start = zstd::stream::encode_all(std::io::repeat(7).take(1 << 20), 3).unwrap();
    let up = reg.addr();
    let front = Front::start(Arc::new(move |req, s| {
        if req.path.contains("/manifests/") {
            let headers = [("Content-Type".to_string(), wire::MANIFEST_MEDIA_TYPE.to_string())];
            return respond(s, 200, &headers, &m);
        }
        if req.method == "GET" && req.header("range").is_some() {
            let head = format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-{}/{}\r\nContent-Length: {}\r\n\r\n",
                (1u64 << 30) - 1,
                2u64 << 30,
                1u64 << 30
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&start[..start.len() - 8]);
            let _ = s.shutdown(std::net::Shutdown::Both);
            return;
        }
        let (status, headers, body) = forward(&up, req);
        respond(s, status, &headers, &body);
    }));
    let b = env();
    let out = run(&b, &["pull", &format!("{}/hostile/drop:v1", front.addr())]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let msg = parse(&out)["error"]["message"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("GET sha256:"), "{msg}");
    untouched(&b);
}

fn limit_address_space(cmd: &mut Command, bytes: u64) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let l = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
            if libc::setrlimit(libc::RLIMIT_AS, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn redirects_never_carry_the_registry_credentials() {
    let Some(reg) = Reg::start() else { return };
    ranged_artifact(&reg, "hostile/redirect", |_, s| s, true);
    // "Storage" on another port: serves blobs, records whether credentials came along.
    let up = reg.addr();
    let storage = Front::start(Arc::new(move |req, s| {
        let (status, headers, body) = forward(&up, req);
        respond(s, status, &headers, &body);
    }));
    let storage_addr = storage.addr();
    let up = reg.addr();
    // The registry wants basic auth and sends every blob GET to the storage.
    let front = Front::start(Arc::new(move |req, s| {
        if req.header("authorization") != Some("Basic dXNlcjpzZWNyZXQ=") {
            let h = [("WWW-Authenticate".to_string(), "Basic realm=\"test\"".to_string())];
            return respond(s, 401, &h, b"");
        }
        if req.method == "GET" && req.path.contains("/blobs/") {
            let h = [("Location".to_string(), format!("http://{storage_addr}{}", req.path))];
            return respond(s, 307, &h, b"");
        }
        let (status, headers, body) = forward(&up, req);
        respond(s, status, &headers, &body);
    }));
    let b = env();
    let cfg = json!({ "auths": { front.addr(): { "auth": "dXNlcjpzZWNyZXQ=" } } });
    std::fs::write(b.path("docker/config.json"), cfg.to_string()).unwrap();
    let out = run(&b, &["pull", &format!("{}/hostile/redirect:v1", front.addr()), "--name", "r"]);
    assert!(out.status.success(), "{}", describe(&out));
    let got = storage.requests();
    assert!(got.len() >= 3, "blobs came from the storage: {got:?}");
    for r in &got {
        assert_eq!(r.header("authorization"), None, "credentials went to another host: {r:?}");
    }
    assert!(front.requests().iter().any(|r| r.header("authorization").is_some()));
    assert_eq!(b.ok(&["verify"])["ok"], true);
}

#[test]
fn a_registry_that_stalls_is_given_up_on() {
    let Some(reg) = Reg::start() else { return };
    ranged_artifact(&reg, "hostile/stall", |_, s| s, true);
    let up = reg.addr();
    // Blob answers start, then the server falls silent (for longer than the test runs);
    // with `silent_head`, it never even sends the status line.
    for silent_head in [false, true] {
        let up = up.clone();
        let front = Front::start(Arc::new(move |req, s| {
            if req.path.contains("/blobs/") {
                if !silent_head {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nsome");
                }
                std::thread::sleep(Duration::from_secs(600));
                return;
            }
            let (status, headers, body) = forward(&up, req);
            respond(s, status, &headers, &body);
        }));
        let b = env();
        let out = b
            .cmd(&["pull", &format!("{}/hostile/stall:v1", front.addr())])
            .env("DOCKER_CONFIG", b.path("docker"))
            .env("EXECROOT_REMOTE_TIMEOUT", "2")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let msg = parse(&out)["error"]["message"].as_str().unwrap_or_default().to_string();
        assert!(msg.contains("/blobs/sha256:") && msg.to_lowercase().contains("timed out"), "{msg}");
        untouched(&b);
    }
}

#[test]
fn a_tag_list_without_end_is_refused() {
    // No registry needed: the server is the whole registry here.
    for looping in [true, false] {
        let front = Front::start(Arc::new(move |req, s| {
            let n: u64 = req.path.rsplit("last=").next().and_then(|v| v.parse().ok()).unwrap_or(0);
            let next = if looping {
                "/v2/r/tags/list?n=1000".to_string()
            } else {
                format!("/v2/r/tags/list?n=1000&last={}", n + 1)
            };
            let body = json!({ "name": "r", "tags": [format!("t{n}")] }).to_string();
            let h = [
                ("Content-Type".to_string(), "application/json".to_string()),
                ("Link".to_string(), format!("<{next}>; rel=\"next\"")),
            ];
            respond(s, 200, &h, body.as_bytes());
        }));
        let b = env();
        fails(&b, &["remote", "ls", &format!("{}/r", front.addr())], 6, "tag list");
        let pages = front.requests().len();
        assert!(pages <= 1001, "{pages} pages followed");
    }
    // A tag that would aim `manifests/TAG` at another repository is refused before any use.
    let front = Front::start(Arc::new(|_, s| {
        let body = json!({ "name": "r", "tags": ["../../other/manifests/x"] }).to_string();
        respond(s, 200, &[("Content-Type".to_string(), "application/json".to_string())], body.as_bytes());
    }));
    let b = env();
    fails(&b, &["remote", "ls", &format!("{}/r", front.addr())], 6, "invalid tag");
    assert_eq!(front.requests().len(), 1);
}

#[test]
fn an_upload_sent_to_another_host_gets_no_credentials() {
    // The registry (basic auth) starts uploads at a Location on another host; that host must
    // see the PUT without the registry's credentials, and the push fails without a tag.
    let elsewhere = Front::start(Arc::new(|_, s| respond(s, 401, &[], b"")));
    let other = elsewhere.addr();
    let front = Front::start(Arc::new(move |req, s| {
        if req.header("authorization") != Some("Basic dXNlcjpzZWNyZXQ=") {
            let h = [("WWW-Authenticate".to_string(), "Basic realm=\"test\"".to_string())];
            return respond(s, 401, &h, b"");
        }
        match req.method.as_str() {
            "POST" => {
                let h = [("Location".to_string(), format!("http://{other}/v2/r/blobs/uploads/u1"))];
                respond(s, 202, &h, b"")
            }
            _ => respond(s, 404, &[], b""),
        }
    }));
    let a = env();
    a.with_base();
    let cfg = json!({ "auths": { front.addr(): { "auth": "dXNlcjpzZWNyZXQ=" } } });
    std::fs::write(a.path("docker/config.json"), cfg.to_string()).unwrap();
    let out = run(&a, &["push", "base", &format!("{}/r:v1", front.addr())]);
    assert!(!out.status.success(), "{}", describe(&out));
    let got = elsewhere.requests();
    assert!(!got.is_empty(), "the upload went to the Location given");
    for r in &got {
        assert_eq!(r.header("authorization"), None, "credentials went to another host: {r:?}");
    }
    assert!(front.requests().iter().all(|r| !r.path.contains("/manifests/") || r.method != "PUT"));
}

#[test]
fn what_a_registry_says_reaches_no_terminal_raw() {
    // Escape sequences and bidi overrides in a registry's error body and its artifactType are
    // escaped in execroot's messages (ureq itself refuses control characters in headers).
    let front = Front::start(Arc::new(|req, s| {
        let json = [("Content-Type".to_string(), "application/json".to_string())];
        if req.path.ends_with("/manifests/err") {
            let body = json!({ "errors": [{ "code": "X\u{1b}[2J", "message": "\u{1b}]0;owned\u{7}\u{202e}txt" }] });
            return respond(s, 500, &json, body.to_string().as_bytes());
        }
        let m = json!({ "schemaVersion": 2, "artifactType": "a\u{1b}[31mb", "config": { "mediaType": "x", "digest": "sha256:00", "size": 0 } });
        respond(s, 200, &json, m.to_string().as_bytes())
    }));
    let b = env();
    for (tag, code, says) in [("err", 1, "HTTP 500"), ("type", 2, "artifactType")] {
        let msg = fails(&b, &["pull", &format!("{}/r:{tag}", front.addr())], code, says);
        assert!(!msg.contains('\u{1b}') && !msg.contains('\u{7}') && !msg.contains('\u{202e}'), "{tag}: {msg:?}");
    }
    untouched(&b);
}

#[test]
fn remote_ls_survives_lying_sizes_and_times() {
    let id = Hash::of(b"x").to_hex();
    let front = Front::start(Arc::new(move |req, s| {
        let json = [("Content-Type".to_string(), "application/json".to_string())];
        if req.path.contains("/tags/list") {
            return respond(s, 200, &json, br#"{"name":"r","tags":["v1"]}"#);
        }
        let pack = |n: u8| json!({ "mediaType": wire::PACK_MEDIA_TYPE, "digest": format!("sha256:{}", format!("{n:02x}").repeat(32)), "size": u64::MAX });
        let snap = json!({ "mediaType": wire::SNAPSHOT_MEDIA_TYPE, "digest": format!("sha256:{}", "ab".repeat(32)), "size": 1, "annotations": { wire::ANN_SNAPSHOT: id } });
        let m = json!({
            "schemaVersion": 2, "mediaType": wire::MANIFEST_MEDIA_TYPE, "artifactType": wire::ARTIFACT_TYPE,
            "config": { "mediaType": wire::EMPTY_MEDIA_TYPE, "digest": sha256_digest(wire::EMPTY_CONTENT), "size": 2 },
            "layers": [snap, pack(1), pack(2)],
            "annotations": { wire::ANN_SNAPSHOT: id, wire::ANN_CREATED: "2026\u{1b}[2J" },
        });
        respond(s, 200, &json, m.to_string().as_bytes())
    }));
    let b = env();
    let out = run(&b, &["remote", "ls", &format!("{}/r", front.addr())]);
    assert!(out.status.success(), "{}", describe(&out));
    let v = parse(&out);
    assert_eq!(v["tags"][0]["packBytes"], u64::MAX, "{v}");
    assert_eq!(v["tags"][0]["created"], Value::Null, "{v}");
}
