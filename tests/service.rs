//! The service (issue 10): a real `execroot serve` on a temporary store, spoken to over its unix
//! socket with hand-written HTTP/1.1. Other users are threads that switched their own
//! credentials (raw setresuid on one thread only), so that the kernel's SO_PEERCRED names them;
//! they reach the socket as the recommended setup has it, through the callers' group.

mod common;
#[path = "common/service.rs"]
mod service;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use service::*;

#[test]
fn health_errors_and_limits() {
    let env = Env::new();
    let s = Server::start(&env, &[]);
    let h = s.req("GET", "/v1/health", None).expect(200);
    assert_eq!(h["ok"], true);
    assert!(h["version"].is_string());
    assert!(h["overlay"]["available"].is_boolean());
    assert_eq!(h["overlay"]["available"] == true, h["overlay"]["reason"].is_null());

    // A second service on the same socket is refused before it touches the store.
    let second = env.cmd(&["serve"]).output().unwrap();
    assert_eq!(second.status.code(), Some(5), "{}", describe(&second));
    assert_eq!(s.req("GET", "/v1/health", None).status, 200);

    let r = s.req("GET", "/v1/nothing", None);
    assert_eq!((r.status, r.error_code().as_str()), (404, "not-found"));
    let r = s.req("PUT", "/v1/roots", None);
    assert_eq!(r.status, 405);

    // 400 names the field at fault.
    let r = s.req("POST", "/v1/roots", Some(json!({ "class": "artifact", "bogus": 1 })));
    assert_eq!((r.status, r.error_code().as_str()), (400, "bad-input"));
    assert!(r.message().contains("bogus"), "{}", r.message());
    let r = s.req("POST", "/v1/roots", Some(json!({ "key": "k" })));
    assert_eq!(r.status, 400);
    assert!(r.message().contains("class"), "{}", r.message());
    let r = s.req("POST", "/v1/roots", Some(json!({ "class": "artifact", "durable": "yes" })));
    assert_eq!(r.status, 400);
    assert!(r.message().starts_with("durable:"), "{}", r.message());
    let r = s.req("POST", "/v1/roots", Some(json!({ "class": "artifact", "mounts": [{ "path": "a", "to": "b" }] })));
    assert_eq!(r.status, 400);
    assert!(r.message().contains("mounts[0]"), "{}", r.message());
    let r = s.req("DELETE", "/v1/roots/nope?forse=true", None);
    assert_eq!(r.status, 400, "an unknown query parameter is refused");

    // 404 for what does not exist.
    let r = s.req("GET", "/v1/roots/no-such-root", None);
    assert_eq!((r.status, r.error_code().as_str()), (404, "not-found"));
    let r = s.req("POST", "/v1/roots/no-such-root/exec", Some(json!({ "command": "true" })));
    assert_eq!(r.status, 404);

    // 413 past the body limit.
    let big = json!({ "class": "artifact", "labels": { "x": "y".repeat(2 << 20) } });
    let r = s.req("POST", "/v1/roots", Some(big));
    assert_eq!((r.status, r.error_code().as_str()), (413, "too-large"));
}

#[test]
fn create_exec_diff_destroy_a_root() {
    let env = Env::new();
    let src = env.with_base();
    let s = Server::start(&env, &[]);
    let body = json!({ "class": "artifact", "backend": "copy", "from": "base", "key": "run-1" });
    let c = s.req("POST", "/v1/roots", Some(body.clone())).expect(201);
    assert_eq!(c["created"], true);
    let id = c["id"].as_str().unwrap().to_string();
    let cwd = PathBuf::from(c["cwd"].as_str().unwrap());
    assert_trees_equal(&src, &cwd);

    // Idempotent by key: the same root, not made again; other parameters are a conflict.
    let again = s.req("POST", "/v1/roots", Some(body)).expect(200);
    assert_eq!((again["id"].as_str(), again["created"].as_bool()), (Some(id.as_str()), Some(false)));
    let r = s.req("POST", "/v1/roots", Some(json!({ "class": "routine", "backend": "copy", "key": "run-1" })));
    assert_eq!((r.status, r.error_code().as_str()), (409, "conflict"));

    let list = s.req("GET", "/v1/roots", None).expect(200);
    let ids: Vec<&str> = list["roots"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [id.as_str()]);
    let shown = s.req("GET", "/v1/roots/run-1", None).expect(200);
    assert_eq!((shown["id"].as_str(), shown["mounted"].as_bool()), (Some(id.as_str()), Some(true)));

    // exec: output, status, stdin, env, cwd inside the root, timeout.
    let e = s
        .req(
            "POST",
            &format!("/v1/roots/{id}/exec"),
            Some(json!({
                "command": "sh",
                "args": ["-c", "cat > new.txt; echo \"$GREETING\" from $(pwd); echo oops >&2; exit 3"],
                "stdin": "written by the run\n",
                "env": { "GREETING": "hello" },
            })),
        )
        .expect(200);
    assert_eq!(e["exitCode"], 3);
    assert_eq!(e["signal"], Value::Null);
    assert_eq!(e["timedOut"], false);
    assert_eq!(e["stdout"], format!("hello from {}\n", cwd.display()));
    assert_eq!(e["stderr"], "oops\n");
    assert_eq!((e["stdoutTruncated"].as_bool(), e["stderrTruncated"].as_bool()), (Some(false), Some(false)));
    assert_eq!(std::fs::read_to_string(cwd.join("new.txt")).unwrap(), "written by the run\n");
    let e = s.req("POST", &format!("/v1/roots/{id}/exec"), Some(json!({ "command": "pwd", "cwd": "bin" }))).expect(200);
    assert_eq!(e["stdout"], format!("{}\n", cwd.join("bin").display()));
    let r = s.req("POST", &format!("/v1/roots/{id}/exec"), Some(json!({ "command": "pwd", "cwd": "../.." })));
    assert_eq!(r.status, 400);
    let e = s
        .req(
            "POST",
            &format!("/v1/roots/{id}/exec"),
            Some(json!({ "command": "sleep", "args": ["60"], "timeoutMs": 200 })),
        )
        .expect(200);
    assert_eq!(
        (e["timedOut"].as_bool(), e["signal"].as_str(), &e["exitCode"]),
        (Some(true), Some("SIGKILL"), &Value::Null)
    );
    let e = s
        .req(
            "POST",
            &format!("/v1/roots/{id}/exec"),
            Some(json!({ "command": "head", "args": ["-c", "3000000", "/dev/zero"] })),
        )
        .expect(200);
    assert_eq!((e["stdoutTruncated"].as_bool(), e["stdout"].as_str().unwrap().len()), (Some(true), 1 << 20));

    let d = s.req("GET", &format!("/v1/roots/{id}/diff"), None).expect(200);
    let added: Vec<&str> = d["added"].as_array().unwrap().iter().map(|c| c["path"].as_str().unwrap()).collect();
    assert_eq!(added, ["new.txt"]);
    let committed = s.req("POST", &format!("/v1/roots/{id}/commit"), Some(json!({ "name": "after" }))).expect(200);
    assert_eq!(committed["name"], "after");
    let tar = s.req("POST", &format!("/v1/roots/{id}/export"), Some(json!({ "changedOnly": true })));
    assert_eq!(tar.status, 200);
    let mut names: Vec<String> = tar::Archive::new(&tar.body[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["new.txt"]);

    let gone = s.req("DELETE", "/v1/roots/run-1", None).expect(200);
    assert_eq!((gone["cleaned"].as_bool(), gone["cleanedPath"].as_str()), (Some(true), cwd.to_str()));
    assert!(gone["warnings"].as_array().unwrap().is_empty());
    assert_eq!(s.req("GET", "/v1/roots/run-1", None).status, 404);
    assert!(!cwd.exists());
}

#[test]
fn snapshots_ingest_list_show_remove_and_reclaim() {
    let env = Env::new();
    let src = env.fixture("small", 5, "src");
    let s = Server::start(&env, &[]);
    let r = s.req("POST", "/v1/snapshots", Some(json!({ "path": src, "name": "deps" }))).expect(201);
    let id = r["id"].as_str().unwrap().to_string();
    assert_eq!(r["name"], "deps");
    let r = s.req("POST", "/v1/snapshots", Some(json!({ "path": src, "shared": true })));
    assert_eq!(r.status, 400);
    // A tar body.
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", &src).unwrap();
    let archive = b.into_inner().unwrap();
    let t = request(None, &s.socket, "POST", "/v1/snapshots?name=from-tar", "application/x-tar", Some(archive));
    let t = t.expect(201);
    assert_eq!(t["name"], "from-tar");
    let list = s.req("GET", "/v1/snapshots", None).expect(200);
    assert!(list["snapshots"].as_array().unwrap().iter().any(|e| e["id"] == id.as_str()));
    let shown = s.req("GET", "/v1/snapshots/deps", None).expect(200);
    assert_eq!(shown["id"], id.as_str());
    assert_eq!(s.req("GET", "/v1/snapshots/nope", None).status, 404);
    let r = s.req("DELETE", &format!("/v1/snapshots/{id}"), None);
    assert_eq!(r.status, 409, "a ref names it: {}", String::from_utf8_lossy(&r.body));
    let r = s.req("DELETE", &format!("/v1/snapshots/{id}?force=true"), None).expect(200);
    assert_eq!(r["refsRemoved"], json!(["deps"]));
    let g = s.req("POST", "/v1/gc", Some(json!({ "graceSeconds": 0, "dryRun": true }))).expect(200);
    assert_eq!(g["dryRun"], true);
    s.req("GET", "/v1/df", None).expect(200);
    assert_eq!(s.req("GET", "/v1/doctor", None).expect(200)["ok"], true);
    s.req("POST", "/v1/doctor/repair", None).expect(200);
}

/// Every route docs/openapi.yaml documents is served: none is an unknown route or method.
#[test]
fn every_documented_route_is_served() {
    let env = Env::new();
    let s = Server::start(&env, &[]);
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml")).unwrap();
    let mut path: Option<String> = None;
    let mut n = 0;
    for line in doc.lines() {
        if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
            path = Some(format!("/{p}"));
        } else if !line.starts_with("  ") {
            path = None;
        } else if let (Some(p), Some(m)) = (&path, line.strip_prefix("    ").and_then(|l| l.strip_suffix(':'))) {
            if !["get", "post", "put", "patch", "delete"].contains(&m) {
                continue;
            }
            let concrete = p.replace("{root}", "no-such-root").replace("{snapshot}", "no-such-snapshot");
            let r = s.req(&m.to_uppercase(), &concrete, None);
            assert_ne!(r.status, 405, "{m} {p}: {}", String::from_utf8_lossy(&r.body));
            assert!(r.status == 200 || !r.message().starts_with("no route"), "{m} {p} is not served");
            n += 1;
        }
    }
    assert_eq!(n, 20, "every documented route was tried");
}

#[test]
fn two_users_see_only_their_own_roots() {
    if !can_mount() {
        return;
    }
    let env = open_env();
    env.with_base();
    let s = Server::start(&env, &["--socket-group", CALLERS]);
    let mk = |uid: u32, key: &str| s.req_as(uid, "POST", "/v1/roots", Some(json!({ "class": "artifact", "key": key })));
    let a = mk(U1, "a").expect(201);
    let b = mk(U2, "b").expect(201);
    assert_eq!(a["cwd"].as_str().map(|c| c.contains("/roots/")), Some(true));
    let (ida, idb) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    for (uid, mine, theirs, their_key) in [(U1, ida, idb, "b"), (U2, idb, ida, "a")] {
        let list = s.req_as(uid, "GET", "/v1/roots", None).expect(200);
        let ids: Vec<&str> = list["roots"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [mine], "uid {uid} lists only its own root");
        for target in [theirs, their_key] {
            assert_eq!(s.req_as(uid, "GET", &format!("/v1/roots/{target}"), None).status, 404);
            assert_eq!(s.req_as(uid, "GET", &format!("/v1/roots/{target}/diff"), None).status, 404);
            let r = s.req_as(uid, "POST", &format!("/v1/roots/{target}/exec"), Some(json!({ "command": "true" })));
            assert_eq!(r.status, 404);
            assert_eq!(s.req_as(uid, "DELETE", &format!("/v1/roots/{target}?force=true"), None).status, 404);
        }
        // exec runs as the root's owner, inside the root, where it may write.
        let e = s
            .req_as(
                uid,
                "POST",
                &format!("/v1/roots/{mine}/exec"),
                Some(json!({ "command": "sh", "args": ["-c", "id -u; touch mine"] })),
            )
            .expect(200);
        assert_eq!((e["stdout"].as_str(), e["exitCode"].as_i64()), (Some(format!("{uid}\n").as_str()), Some(0)));
        // Another user's key is taken, and says by whom no more than that.
        let r = mk(uid, their_key);
        assert_eq!(r.status, 409);
        assert!(!r.message().contains(theirs), "{}", r.message());
    }
    // What a caller may not do: another owner, and the store-wide operations (snapshots and
    // paths: the next test).
    let r = s.req_as(U1, "POST", "/v1/roots", Some(json!({ "class": "artifact", "owner": U2.to_string() })));
    assert_eq!((r.status, r.error_code().as_str()), (403, "forbidden"));
    for (m, p) in [
        ("DELETE", "/v1/snapshots/base"),
        ("POST", "/v1/gc"),
        ("GET", "/v1/df"),
        ("GET", "/v1/doctor"),
        ("POST", "/v1/doctor/repair"),
    ] {
        assert_eq!(s.req_as(U1, m, p, None).status, 403, "{m} {p}");
    }
    // Registries are the service's own credentials: root's only (issue 13).
    for (p, body) in [
        ("/v1/push", json!({ "snapshot": "base", "target": "127.0.0.1:9/x:t" })),
        ("/v1/pull", json!({ "source": "127.0.0.1:9/x:t" })),
    ] {
        let r = s.req_as(U1, "POST", p, Some(body));
        assert_eq!((r.status, r.error_code().as_str()), (403, "forbidden"), "{p}: {}", r.message());
    }
    let r = s.req_as(U1, "GET", "/v1/remote?repo=127.0.0.1:9/x", None);
    assert_eq!((r.status, r.error_code().as_str()), (403, "forbidden"), "{}", r.message());
    // Root sees both, and each user destroys its own.
    let all = s.req("GET", "/v1/roots", None).expect(200);
    assert_eq!(all["roots"].as_array().unwrap().len(), 2);
    s.req_as(U1, "DELETE", &format!("/v1/roots/{ida}"), None).expect(200);
    s.req_as(U2, "DELETE", "/v1/roots/b", None).expect(200);
    assert!(s.req("GET", "/v1/roots", None).expect(200)["roots"].as_array().unwrap().is_empty());
}

#[test]
fn the_default_socket_is_closed_to_other_users() {
    if !needs_root("connecting as another user needs root") {
        return;
    }
    let env = open_env();
    let s = Server::start(&env, &[]);
    let mode = std::fs::metadata(&s.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let socket = s.socket.clone();
    let err = std::thread::spawn(move || {
        become_user(U1);
        UnixStream::connect(&socket).map(|_| ()).unwrap_err()
    })
    .join()
    .unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    // doctor holds the socket to the store's table: nothing to repair.
    let d = env.ok(&["doctor"]);
    assert_eq!(d["ok"], true, "{d}");
    drop(s);
    assert!(!env.store().join("execroot.sock").exists(), "the socket goes with the service");

    // A socket elsewhere, for one group: its members connect, others do not.
    let socket = env.path("group.sock");
    let mut args = vec!["serve", "--socket", socket.to_str().unwrap(), "--socket-group"];
    let group = U1.to_string();
    args.push(&group);
    let mut child = env.spawnable(&args).stdout(Stdio::null()).spawn().unwrap();
    let t0 = Instant::now();
    while UnixStream::connect(&socket).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "serve exited");
        assert!(t0.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(20));
    }
    let md = std::fs::metadata(&socket).unwrap();
    assert_eq!((std::os::unix::fs::MetadataExt::gid(&md), md.permissions().mode() & 0o777), (U1, 0o660));
    let h = request(Some(U1), &socket, "GET", "/v1/health", "application/json", None);
    assert_eq!(h.status, 200);
    let sock2 = socket.clone();
    let err = std::thread::spawn(move || {
        become_user(U2);
        UnixStream::connect(&sock2).map(|_| ()).unwrap_err()
    })
    .join()
    .unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

#[test]
fn startup_repairs_what_a_reboot_left() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    env.with_base();
    let r = env.root(&["--class", "artifact", "--from", "base", "--key", "durable", "--durable"]);
    std::fs::write(cwd(&r).join("kept.txt"), "kept\n").unwrap();
    // A reboot takes the mounts away and leaves the records; a dead service leaves its socket.
    for m in mounts_below(&env.store().join("roots")).into_iter().rev() {
        assert!(std::process::Command::new("umount").arg(&m).status().unwrap().success());
    }
    let stale = std::os::unix::net::UnixListener::bind(env.store().join("execroot.sock")).unwrap();
    drop(stale);
    let s = Server::start(&env, &[]);
    let shown = s.req("GET", "/v1/roots/durable", None).expect(200);
    assert_eq!(shown["mounted"], true, "{shown}");
    assert_eq!(std::fs::read_to_string(cwd(&r).join("kept.txt")).unwrap(), "kept\n");
    s.req("DELETE", "/v1/roots/durable", None).expect(200);
}

#[test]
fn sigterm_finishes_the_request_in_flight_and_leaves_roots() {
    let env = Env::new();
    let mut s = Server::start(&env, &[]);
    let c = s.req("POST", "/v1/roots", Some(json!({ "class": "artifact", "backend": "copy", "key": "k" }))).expect(201);
    let cwd = PathBuf::from(c["cwd"].as_str().unwrap());
    let socket = s.socket.clone();
    let in_flight = std::thread::spawn(move || {
        let body = json!({ "command": "sh", "args": ["-c", "touch started; while [ ! -e go ]; do sleep 0.05; done; echo finished"] });
        request(None, &socket, "POST", "/v1/roots/k/exec", "application/json", Some(body.to_string().into_bytes()))
    });
    let t0 = Instant::now();
    while !cwd.join("started").exists() {
        assert!(t0.elapsed() < Duration::from_secs(60), "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(s.pid(), libc::SIGTERM) };
    // It stops accepting...
    let t0 = Instant::now();
    while UnixStream::connect(&s.socket).is_ok() {
        assert!(t0.elapsed() < Duration::from_secs(60), "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...and answers the request in flight once it ends.
    std::fs::write(cwd.join("go"), "").unwrap();
    let r = in_flight.join().unwrap().expect(200);
    assert_eq!(r["stdout"], "finished\n");
    assert!(s.stop().success());
    // The root is as it was.
    let shown = env.ok(&["root", "show", "k"]);
    assert_eq!((shown["state"].as_str(), shown["mounted"].as_bool()), (Some("ready"), Some(true)));
    let s = Server::start(&env, &[]);
    assert_eq!(s.req("GET", "/v1/roots/k", None).expect(200)["state"], "ready");
}

#[test]
fn cli_exec_runs_in_the_root() {
    let env = Env::new();
    env.with_base();
    let c = env.root(&["--class", "artifact", "--backend", "copy", "--from", "base", "--key", "x"]);
    let out = env.cmd(&["exec", "x", "--", "sh", "-c", "ls run-link; echo err >&2; exit 3"]).output().unwrap();
    // Without --json (the env's --json flag is the global one: use a bare command).
    let bare = std::process::Command::new(assert_cmd::cargo::cargo_bin("execroot"))
        .arg("--store")
        .arg(env.store())
        .args(["exec", "x", "--", "sh", "-c", "pwd; exit 3"])
        .output()
        .unwrap();
    assert_eq!(bare.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&bare.stdout), format!("{}\n", cwd(&c).display()));
    assert!(out.status.success(), "{}", describe(&out));
    let doc = parse(&out);
    assert_eq!(
        (doc["exitCode"].as_i64(), doc["stdout"].as_str(), doc["stderr"].as_str()),
        (Some(3), Some("run-link\n"), Some("err\n"))
    );
    let t = env.ok(&["exec", "x", "--timeout", "200ms", "--", "sleep", "60"]);
    assert_eq!((t["timedOut"].as_bool(), t["signal"].as_str()), (Some(true), Some("SIGKILL")));
    env.fails(&["exec", "nope", "--", "true"], 4);
}

/// A directory owned by `uid` (mode 0700) at `rel` in `env`.
fn users_dir(env: &Env, rel: &str, uid: u32) -> PathBuf {
    let d = env.path(rel);
    std::fs::create_dir_all(&d).unwrap();
    std::os::unix::fs::chown(&d, Some(uid), Some(uid)).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    d
}

#[test]
fn snapshots_refs_and_paths_follow_the_callers_rights() {
    if !can_mount() {
        return;
    }
    let env = open_env();
    env.with_base();
    let s = Server::start(&env, &["--socket-group", CALLERS]);
    let create =
        |uid: u32, from: &str| s.req_as(uid, "POST", "/v1/roots", Some(json!({ "class": "artifact", "from": from })));

    // Root's unshared ref is root's alone; shared, every caller may use it.
    assert_eq!(create(U1, "base").status, 404);
    assert!(s.req_as(U1, "GET", "/v1/snapshots", None).expect(200)["snapshots"].as_array().unwrap().is_empty());
    assert_eq!(s.req_as(U1, "GET", "/v1/snapshots/base", None).status, 404);
    let base = env.ok(&["ref", "list"])["refs"][0]["id"].as_str().unwrap().to_string();
    env.ok(&["ref", "set", "base", &base, "--shared"]);
    let r = create(U1, "base").expect(201);
    assert_eq!(r["snapshots"], json!([base]));
    assert_eq!(s.req_as(U2, "GET", "/v1/snapshots/base", None).expect(200)["id"], base.as_str());

    // A caller ingests what it can read, as itself, and names it with a ref of its own.
    let mine = users_dir(&env, "u1-tree", U1);
    std::fs::write(mine.join("a.txt"), "mine\n").unwrap();
    std::os::unix::fs::chown(mine.join("a.txt"), Some(U1), Some(U1)).unwrap();
    let ing = s.req_as(U1, "POST", "/v1/snapshots", Some(json!({ "path": mine, "name": "u1-base" }))).expect(201);
    assert_eq!(ing["name"], "u1-base");
    let r = create(U1, "u1-base").expect(201);
    let cwd = PathBuf::from(r["cwd"].as_str().unwrap());
    let e = s
        .req_as(
            U1,
            "POST",
            &format!("/v1/roots/{}/exec", r["id"].as_str().unwrap()),
            Some(json!({ "command": "cat", "args": ["a.txt"] })),
        )
        .expect(200);
    assert_eq!(e["stdout"], "mine\n");
    // Another user neither sees nor uses it, nor takes its name, nor shares.
    assert_eq!(create(U2, "u1-base").status, 404);
    assert_eq!(create(U2, &ing["id"].as_str().unwrap()[..12]).status, 404);
    let listed = s.req_as(U2, "GET", "/v1/snapshots", None).expect(200);
    assert!(listed["snapshots"].as_array().unwrap().iter().all(|e| e["id"] != ing["id"]));
    let theirs = users_dir(&env, "u2-tree", U2);
    let r = s.req_as(U2, "POST", "/v1/snapshots", Some(json!({ "path": theirs, "name": "u1-base" })));
    assert_eq!(r.status, 409);
    assert_eq!(env.ok(&["snapshot", "show", "u1-base"])["id"], ing["id"]);
    let r = s.req_as(U2, "POST", "/v1/snapshots", Some(json!({ "path": theirs, "name": "u2-shared", "shared": true })));
    assert_eq!(r.status, 403);

    // Nothing the caller could not read itself: a root-only file, another user's directory.
    let secret = users_dir(&env, "u1-secret", U1);
    std::fs::write(secret.join("secret.txt"), "root's\n").unwrap();
    std::fs::set_permissions(secret.join("secret.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = s.req_as(U1, "POST", "/v1/snapshots", Some(json!({ "path": secret, "name": "stolen" })));
    assert_eq!((r.status, r.error_code().as_str()), (403, "forbidden"), "{}", r.message());
    let r = s.req_as(U1, "POST", "/v1/snapshots", Some(json!({ "path": theirs, "name": "stolen" })));
    assert_eq!(r.status, 403, "{}", r.message());
    assert_eq!(env.fails(&["snapshot", "show", "stolen"], 4)["error"]["code"], "not-found");

    // Exports are written as the caller: into its own directory, not into root's.
    std::fs::write(cwd.join("out.txt"), "result\n").unwrap();
    let root_id = s.req_as(U1, "GET", "/v1/roots", None).expect(200)["roots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cwd"] == cwd.to_str().unwrap())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dest = users_dir(&env, "u1-out", U1).join("export");
    let x = s.req_as(U1, "POST", &format!("/v1/roots/{root_id}/export"), Some(json!({ "dest": dest }))).expect(200);
    assert_eq!(x["files"], 2);
    assert_eq!(std::fs::read_to_string(dest.join("out.txt")).unwrap(), "result\n");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(dest.join("out.txt")).unwrap()), U1);
    let closed = env.path("root-only");
    std::fs::create_dir(&closed).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = s.req_as(U1, "POST", &format!("/v1/roots/{root_id}/export"), Some(json!({ "dest": closed.join("x") })));
    assert_eq!((r.status, r.error_code().as_str()), (403, "forbidden"), "{}", r.message());
    assert!(!closed.join("x").exists());

    // A commit names a ref of the caller's own.
    let c =
        s.req_as(U1, "POST", &format!("/v1/roots/{root_id}/commit"), Some(json!({ "name": "u1-after" }))).expect(200);
    assert_eq!(c["name"], "u1-after");
    create(U1, "u1-after").expect(201);
    assert_eq!(create(U2, "u1-after").status, 404);
    assert_eq!(s.req_as(U2, "POST", &format!("/v1/roots/{root_id}/commit"), Some(json!({}))).status, 404);

    // git runs as the repository's owner: a repository the caller does not own is refused.
    let repo = env.repo();
    let r = s.req_as(
        U1,
        "POST",
        "/v1/roots",
        Some(json!({ "class": "repo-edit", "repo": repo, "baseRef": "main", "key": "wt" })),
    );
    assert_eq!(r.status, 403, "{}", r.message());
    // Its own repository: the worktree is made by git as the caller.
    let own = env.path("u1-repo");
    std::fs::rename(&repo, &own).unwrap();
    let chown = std::process::Command::new("chown").arg("-R").arg(format!("{U1}:{U1}")).arg(&own).status().unwrap();
    assert!(chown.success());
    let w = s.req_as(
        U1,
        "POST",
        "/v1/roots",
        Some(json!({ "class": "repo-edit", "repo": own, "baseRef": "main", "key": "wt" })),
    );
    let w = w.expect(201);
    // repo-edit's policy: git-overlay where overlay can mount, else the plain worktree.
    assert!(matches!(w["backend"].as_str(), Some("git-overlay" | "worktree")), "{w}");
    assert_eq!((w["providerType"].as_str(), w["branchName"].as_str()), (Some("git_worktree"), Some("wt")));
    let wt = PathBuf::from(w["cwd"].as_str().unwrap());
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(wt.join(".gitignore")).unwrap()), U1);
    let shown = s.req_as(U1, "GET", "/v1/roots/wt", None).expect(200);
    assert_eq!(shown["git"]["dirtyEntryCount"], 0, "{shown}");
    assert_eq!(s.req_as(U2, "GET", "/v1/roots/wt", None).status, 404);
    // Cleanup refuses to lose work, with the cleanup document; force discards it.
    let untracked = wt.join("notes.txt");
    std::fs::write(&untracked, "unsaved\n").unwrap();
    let r = s.req_as(U1, "DELETE", "/v1/roots/wt", None);
    let refused = r.expect(409);
    assert_eq!((refused["cleaned"].as_bool(), refused["cleanedPath"].as_str()), (Some(false), wt.to_str()));
    assert!(!refused["warnings"].as_array().unwrap().is_empty(), "{refused}");
    assert!(untracked.exists());
    s.req_as(U1, "DELETE", "/v1/roots/wt?force=true", None).expect(200);
    assert!(!wt.exists());

    for uid in [U1, U2] {
        for r in s.req_as(uid, "GET", "/v1/roots", None).expect(200)["roots"].as_array().unwrap() {
            s.req_as(uid, "DELETE", &format!("/v1/roots/{}", r["id"].as_str().unwrap()), None).expect(200);
        }
    }
}

/// Concurrent clients of two users creating, using (a write and an exec) and destroying roots:
/// every request succeeds, no user ever sees the other's roots, nothing is left behind.
#[test]
fn concurrent_clients_leave_nothing_behind() {
    if !can_mount() {
        return;
    }
    let env = open_env();
    let s = Server::start(&env, &["--socket-group", CALLERS]);
    let socket = s.socket.clone();
    let workers: Vec<_> = (0..10u32)
        .map(|w| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let uid = if w % 2 == 0 { U1 } else { U2 };
                let other = if uid == U1 { U2 } else { U1 };
                let call = |m: &str, p: &str, b: Option<Value>| {
                    request(Some(uid), &socket, m, p, "application/json", b.map(|b| b.to_string().into_bytes()))
                };
                for i in 0..10 {
                    let key = format!("w{w}-{i}");
                    let c = call("POST", "/v1/roots", Some(json!({ "class": "artifact", "key": key }))).expect(201);
                    let id = c["id"].as_str().unwrap().to_string();
                    let body = json!({ "command": "sh", "args": ["-c", "echo x > out.txt && id -u"] });
                    let e = call("POST", &format!("/v1/roots/{id}/exec"), Some(body)).expect(200);
                    assert_eq!(e["stdout"], format!("{uid}\n"));
                    let list = call("GET", "/v1/roots", None).expect(200);
                    for r in list["roots"].as_array().unwrap() {
                        assert_eq!(r["owner"]["uid"], uid, "uid {uid} saw uid {other}'s root");
                    }
                    call("DELETE", &format!("/v1/roots/{id}"), None).expect(200);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert!(s.req("GET", "/v1/roots", None).expect(200)["roots"].as_array().unwrap().is_empty());
    assert!(mounts_below(&env.store()).is_empty(), "{:?}", mounts_below(&env.store()));
    assert_eq!(std::fs::read_dir(env.store().join("roots")).unwrap().count(), 0);
    assert_eq!(s.req("GET", "/v1/doctor", None).expect(200)["findings"], json!([]));
}

/// `provision` in POST /v1/roots: built on the first create, a hit on the next, `provision`
/// in the answer; a failing command is a 400 carrying the log's last lines.
#[test]
fn roots_are_provisioned_through_the_service() {
    let env = Env::new();
    env.with_base();
    let s = Server::start(&env, &[]);
    let runs = env.path("runs");
    let command = format!("echo built >> {}; mkdir -p deps && cp bin/run.sh deps/copy", runs.display());
    let body = json!({ "class": "preview", "backend": "copy", "from": "base",
                       "provision": { "command": command, "inputs": ["bin/run.sh"] } });
    let first = s.req("POST", "/v1/roots", Some(body.clone())).expect(201);
    assert_eq!(first["provision"]["hit"], false, "{first}");
    assert!(PathBuf::from(first["cwd"].as_str().unwrap()).join("deps/copy").is_file());
    let second = s.req("POST", "/v1/roots", Some(body)).expect(201);
    assert_eq!(second["provision"]["hit"], true, "{second}");
    assert_eq!(second["provision"]["key"], first["provision"]["key"]);
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "built\n", "built once");

    let failing = json!({ "class": "preview", "backend": "copy", "from": "base",
                          "provision": { "command": "echo broken-install >&2; exit 3", "inputs": ["bin/run.sh"] } });
    let r = s.req("POST", "/v1/roots", Some(failing));
    assert_eq!(r.status, 400, "{}", r.message());
    assert!(r.message().contains("broken-install"), "{}", r.message());
    let unknown = json!({ "class": "preview", "from": "base", "provision": { "command": "true", "inputs": ["nope"] } });
    assert_eq!(s.req("POST", "/v1/roots", Some(unknown)).status, 400);
    for r in [first, second] {
        s.req("DELETE", &format!("/v1/roots/{}", r["id"].as_str().unwrap()), None).expect(200);
    }
}
