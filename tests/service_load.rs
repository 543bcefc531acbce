//! The service under load (issue 10, "Load, faults, speed"): many concurrent clients of two
//! users against a real `execroot serve` making real overlay roots, and the service killed with
//! SIGKILL in the middle of such a load. Each client is a thread that has become its user (see
//! tests/common/service.rs), so the kernel names it to the service and its own writes into its
//! roots are made with its own credentials.
//!
//! What "nothing leaks" means here ([`assert_nothing_left`]): no root listed, no directory in
//! `roots/`, no key in `keys/`, no mount under the store in /proc/self/mountinfo, no idmapped
//! view left, no lease in `tmp/`, doctor finds nothing, verify is clean, and the service holds
//! no more file descriptors than before the load.

mod common;
#[path = "common/service.rs"]
mod service;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use service::*;

/// The store with a small tree ingested as `base` and shared, so both users build on it (each
/// then through its own idmapped view of the one layer).
fn shared_base(env: &Env) {
    let src = env.path("base-src");
    std::fs::create_dir_all(src.join("lib")).unwrap();
    std::fs::write(src.join("README"), "the base\n").unwrap();
    for i in 0..20 {
        std::fs::write(src.join(format!("lib/m{i}.txt")), format!("module {i}\n")).unwrap();
    }
    env.ok(&["snapshot", "create", src.to_str().unwrap(), "--name", "base", "--shared"]);
}

/// A root named `name` by its key and a label (by the label alone when not `keyed`).
fn root_body(name: &str, keyed: bool) -> Value {
    let mut b = json!({ "class": "artifact", "from": "base", "labels": { "load": name } });
    if keyed {
        b["key"] = json!(name);
    }
    b
}

fn create_body(key: &str) -> Value {
    root_body(key, true)
}

/// The command every root runs: it reads what the client wrote, reads the base, writes a file
/// of its own and says who it ran as.
fn exec_body() -> Value {
    json!({ "command": "sh", "args": ["-c", "cat client.txt lib/m7.txt && id -u > ran.txt && id -u"] })
}

fn expected_exec_stdout(uid: u32, key: &str) -> String {
    format!("{key}\nmodule 7\n{uid}\n")
}

/// An answer's failure as one line, for a report of every failure rather than the first.
fn bad(what: &str, r: &Resp) -> String {
    format!("{what}: {} {}", r.status, String::from_utf8_lossy(&r.body))
}

/// The ids in a `GET /v1/roots` answer, each checked to be `uid`'s.
fn own_ids(list: &Value, uid: u32) -> Result<Vec<String>, String> {
    let mut ids = Vec::new();
    for r in list["roots"].as_array().ok_or("no roots array")? {
        if r["owner"]["uid"] != uid {
            return Err(format!("uid {uid} was listed another user's root: {r}"));
        }
        ids.push(r["id"].as_str().unwrap_or_default().to_string());
    }
    Ok(ids)
}

/// `s` without the terminal colour sequences (`ESC [ ... m`) of the service's log.
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\x1b' {
            it.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

/// The number of file descriptors `pid` holds.
fn fd_count(pid: i32) -> usize {
    open_files(pid).len()
}

/// The CPU seconds `pid` used itself and its waited-for children used (for the report).
fn cpu_seconds(pid: i32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let f: Vec<f64> = stat.rsplit_once(')').unwrap().1.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ((f[11] + f[12]) / tick, (f[13] + f[14]) / tick)
}

/// What `pid`'s file descriptors are open on.
fn open_files(pid: i32) -> Vec<String> {
    let rd = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap();
    rd.map(|e| std::fs::read_link(e.unwrap().path()).map(|l| l.display().to_string()).unwrap_or_default()).collect()
}

/// Whatever is in `dir` (nothing when it does not exist).
fn entries(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => panic!("{}: {e}", dir.display()),
    }
}

/// Every root destroyed and nothing left of them, by every measure (the module's header), with
/// the service `s` still running; `fds` is its descriptor count before the load.
fn assert_nothing_left(env: &Env, s: &Server, fds: Option<usize>) {
    let store = env.store();
    let listed = s.req("GET", "/v1/roots", None).expect(200);
    assert_eq!(listed["roots"], json!([]), "roots are left");
    assert_eq!(mounts_below(&store), Vec::<PathBuf>::new(), "mounts are left under the store");
    assert_eq!(entries(&store.join("roots")), Vec::<PathBuf>::new(), "root directories are left");
    assert_eq!(entries(&store.join("keys")), Vec::<PathBuf>::new(), "key index entries are left");
    let views: Vec<PathBuf> =
        entries(&store.join("idmap")).iter().filter(|p| p.is_dir()).flat_map(|d| entries(d)).collect();
    assert_eq!(views, Vec::<PathBuf>::new(), "idmapped views are left");
    // The running service's one lease holds its root skeletons and nothing else (docs/format.md,
    // "Root skeletons"): directories named like root ids, with nothing mounted below.
    let own = format!("{}-", s.pid());
    let (pool, left): (Vec<PathBuf>, Vec<PathBuf>) = entries(&store.join("tmp"))
        .into_iter()
        .partition(|p| p.file_name().unwrap().to_string_lossy().starts_with(&own));
    assert_eq!(left, Vec::<PathBuf>::new(), "leases are left in tmp/");
    assert!(pool.len() <= 1, "the service holds more than its pool's lease: {pool:?}");
    for skeleton in pool.iter().flat_map(|l| entries(l)) {
        let name = skeleton.file_name().unwrap().to_string_lossy().to_string();
        assert!(name.len() == 16 && skeleton.is_dir(), "not a root skeleton: {}", skeleton.display());
    }
    let d = s.req("GET", "/v1/doctor", None).expect(200);
    assert_eq!((&d["ok"], &d["findings"]), (&json!(true), &json!([])), "doctor finds something: {d}");
    let v = env.ok(&["verify"]);
    assert_eq!(v["ok"], true, "verify: {v}");
    if let Some(before) = fds {
        // Connections the clients closed may still be closing on the service's side: wait for
        // them (this bounds nothing: a leak never converges).
        let t0 = Instant::now();
        let pid = s.pid();
        while fd_count(pid) > before && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            fd_count(pid) <= before,
            "the service holds {:?}, {before} descriptors before the load",
            open_files(pid)
        );
    }
}

/// Make a root of `uid`'s own as the load's clients do, from the main thread, and exec in it
/// (the first exec sets up what the service keeps for all: wait-timeout's SIGCHLD self-pipe, a
/// socket pair): its id.
fn sentinel(s: &Server, uid: u32) -> String {
    let key = format!("sentinel-{uid}");
    let c = s.req_as(uid, "POST", "/v1/roots", Some(create_body(&key))).expect(201);
    let id = c["id"].as_str().unwrap().to_string();
    s.req_as(uid, "POST", &format!("/v1/roots/{id}/exec"), Some(json!({ "command": "true" }))).expect(200);
    id
}

/// What one client of the load did.
#[derive(Default, Debug)]
struct Tally {
    requests: usize,
    roots: usize,
    failures: Vec<String>,
}

/// One client of [`fifty_clients_a_thousand_roots`], as `uid` from start to end: `roots`
/// times create a root, write into it, exec in it, check that it sees its own roots only and
/// that `theirs` (a root of the other user that lives throughout) is not found, destroy it.
fn client(socket: &Path, uid: u32, name: &str, roots: usize, theirs: &str) -> Tally {
    become_user(uid);
    let requests = std::cell::Cell::new(0);
    let call = |m: &str, p: &str, b: Option<Value>| {
        requests.set(requests.get() + 1);
        try_json(socket, m, p, b).map_err(|e| format!("{m} {p}: {e}"))
    };
    let one = |i: usize| -> Result<(), String> {
        let key = format!("{name}-{i}");
        let c = call("POST", "/v1/roots", Some(create_body(&key)))?;
        if c.status != 201 {
            return Err(bad("create", &c));
        }
        let c = c.json();
        let id = c["id"].as_str().unwrap().to_string();
        let cwd = PathBuf::from(c["cwd"].as_str().unwrap());
        std::fs::write(cwd.join("client.txt"), format!("{key}\n")).map_err(|e| format!("write in {id}: {e}"))?;
        let e = call("POST", &format!("/v1/roots/{id}/exec"), Some(exec_body()))?;
        if e.status != 200 || e.json()["stdout"] != expected_exec_stdout(uid, &key) || e.json()["exitCode"] != 0 {
            return Err(bad("exec", &e));
        }
        let l = call("GET", "/v1/roots", None)?;
        if l.status != 200 {
            return Err(bad("list", &l));
        }
        let ids = own_ids(&l.json(), uid)?;
        if !ids.contains(&id) || ids.iter().any(|i| i == theirs) {
            return Err(format!("uid {uid}'s list {ids:?} lacks {id} or has {theirs}"));
        }
        for (m, p) in [("GET", format!("/v1/roots/{theirs}")), ("POST", format!("/v1/roots/{theirs}/exec"))] {
            let r = call(m, &p, (m == "POST").then(|| json!({ "command": "true" })))?;
            if r.status != 404 {
                return Err(bad(&format!("{m} {p} of another user's root"), &r));
            }
        }
        let d = call("DELETE", &format!("/v1/roots/{id}"), None)?;
        if d.status != 200 || d.json()["cleaned"] != true || d.json()["warnings"] != json!([]) {
            return Err(bad("destroy", &d));
        }
        if cwd.exists() {
            return Err(format!("{} is left after its root was destroyed", cwd.display()));
        }
        Ok(())
    };
    let mut t = Tally::default();
    for i in 0..roots {
        match one(i) {
            Ok(()) => t.roots += 1,
            Err(e) => t.failures.push(format!("{name} root {i}: {e}")),
        }
    }
    t.requests = requests.get();
    t
}

/// 50 concurrent clients, half of each of two users, make, use and destroy 1,000 roots in all:
/// every request succeeds, neither user ever sees the other's roots, nothing is left behind.
#[test]
fn fifty_clients_a_thousand_roots() {
    if !can_mount() {
        return;
    }
    const CLIENTS: usize = 50;
    const ROOTS_EACH: usize = 20;
    let env = open_env();
    shared_base(&env);
    let s = Server::start(&env, &["--socket-group", CALLERS]);
    // A root of each user that lives through the whole load: the other user's clients must
    // never find it.
    let sentinels = [(U1, sentinel(&s, U1)), (U2, sentinel(&s, U2))];
    let fds = fd_count(s.pid());

    let cpu0 = cpu_seconds(s.pid());
    let t0 = Instant::now();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|w| {
            let socket = s.socket.clone();
            let uid = if w % 2 == 0 { U1 } else { U2 };
            let theirs = sentinels.iter().find(|(u, _)| *u != uid).unwrap().1.clone();
            std::thread::spawn(move || client(&socket, uid, &format!("c{w}"), ROOTS_EACH, &theirs))
        })
        .collect();
    let tallies: Vec<Tally> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let took = t0.elapsed();
    let cpu = cpu_seconds(s.pid());
    let requests: usize = tallies.iter().map(|t| t.requests).sum();
    let roots: usize = tallies.iter().map(|t| t.roots).sum();
    let failures: Vec<&String> = tallies.iter().flat_map(|t| &t.failures).collect();
    eprintln!(
        "load: {CLIENTS} clients, {roots} roots made, used and destroyed, {requests} requests, {} failed, in {:.1} s \
         (the service's CPU: {:.1} s, its commands': {:.1} s)",
        failures.len(),
        took.as_secs_f64(),
        cpu.0 - cpu0.0,
        cpu.1 - cpu0.1,
    );
    assert!(failures.is_empty(), "{} failures, the first: {:#?}", failures.len(), &failures[..failures.len().min(10)]);
    assert_eq!(roots, CLIENTS * ROOTS_EACH);

    // The sentinels lived throughout, and each user sees its own only.
    for (uid, id) in &sentinels {
        let ids = own_ids(&s.req_as(*uid, "GET", "/v1/roots", None).expect(200), *uid).unwrap();
        assert_eq!(ids, [id.as_str()]);
        s.req_as(*uid, "DELETE", &format!("/v1/roots/{id}"), None).expect(200);
    }
    assert_nothing_left(&env, &s, Some(fds));
}

/// How a request of the killed load ended.
#[derive(Clone, Debug, PartialEq)]
enum Outcome<T> {
    /// A whole answer came back.
    Answered(T),
    /// The service could not be reached (it was dead): the request never reached it.
    NotSent,
    /// Sent, and the service died before answering it: it may or may not have been done.
    Lost,
}

fn outcome<T>(r: &std::io::Result<Resp>, answered: impl FnOnce(&Resp) -> T) -> Outcome<T> {
    match r {
        Ok(resp) => Outcome::Answered(answered(resp)),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused || e.kind() == std::io::ErrorKind::NotFound => {
            Outcome::NotSent
        }
        Err(_) => Outcome::Lost,
    }
}

/// One root of the killed load, as its client saw it.
#[derive(Debug)]
struct Journal {
    uid: u32,
    /// The root's key, and its label `load`.
    key: String,
    /// Whether it was created with its key (else with its label only: a create whose answer is
    /// lost cannot be asked again, and the caller looks for it in its list).
    keyed: bool,
    /// The create's answer: status, id and cwd.
    created: Outcome<(u16, String, PathBuf)>,
    /// Whether the client's own write into the root was made.
    wrote: bool,
    /// The destroy, when the client asked for one (every other root; the rest are kept).
    destroyed: Option<Outcome<u16>>,
}

/// A client of [`kill_9_mid_load`]: as `uid`, makes roots, writes and execs in each, destroys
/// every other one, until the service dies (or `stop`), and journals what it was answered.
/// Every answer before the kill must be a success: anything else is returned as a failure.
fn journaling_client(
    socket: &Path,
    uid: u32,
    name: &str,
    created: &AtomicUsize,
    stop: &AtomicBool,
) -> (Vec<Journal>, Vec<String>) {
    become_user(uid);
    let mut journal = Vec::new();
    let mut failures = Vec::new();
    for i in 0..200 {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let key = format!("{name}-{i}");
        let keyed = i % 3 != 2;
        let r = try_json(socket, "POST", "/v1/roots", Some(root_body(&key, keyed)));
        let c = outcome(&r, |resp| {
            let v: Value = serde_json::from_slice(&resp.body).unwrap_or_default();
            (
                resp.status,
                v["id"].as_str().unwrap_or_default().to_string(),
                PathBuf::from(v["cwd"].as_str().unwrap_or("")),
            )
        });
        let mut j = Journal { uid, key: key.clone(), keyed, created: c.clone(), wrote: false, destroyed: None };
        let Outcome::Answered((status, id, cwd)) = c else {
            journal.push(j);
            break;
        };
        if status != 201 {
            failures.push(bad(&format!("create {key}"), r.as_ref().unwrap()));
            journal.push(j);
            break;
        }
        created.fetch_add(1, Ordering::SeqCst);
        j.wrote = std::fs::write(cwd.join("client.txt"), format!("{key}\n")).is_ok();
        if !j.wrote {
            failures.push(format!("write in {id} failed"));
        }
        match try_json(socket, "POST", &format!("/v1/roots/{id}/exec"), Some(exec_body())) {
            Ok(e) if e.status == 200 && e.json()["stdout"] == expected_exec_stdout(uid, &key) => {}
            Ok(e) => failures.push(bad(&format!("exec in {key}"), &e)),
            Err(_) => {
                journal.push(j);
                break;
            }
        }
        if i % 2 == 1 {
            let r = try_json(socket, "DELETE", &format!("/v1/roots/{id}"), None);
            let d = outcome(&r, |resp| resp.status);
            if matches!(d, Outcome::Answered(s) if s != 200) {
                failures.push(bad(&format!("destroy {key}"), r.as_ref().unwrap()));
            }
            let answered = matches!(d, Outcome::Answered(_));
            j.destroyed = Some(d);
            journal.push(j);
            if !answered {
                break;
            }
        } else {
            journal.push(j);
        }
    }
    (journal, failures)
}

/// What became of the roots of a killed load after the restart, by the client's view of them.
#[derive(Default, Debug)]
struct Census {
    /// Answered created, no destroy asked (or none that reached the service): exists, usable.
    kept: usize,
    /// Answered destroyed: gone.
    destroyed: usize,
    /// Destroy lost in the kill: found gone (the destroy was done, or finished by doctor).
    lost_destroy_done: usize,
    /// Destroy lost in the kill: found as it was, and usable.
    lost_destroy_undone: usize,
    /// Create lost in the kill, found made: by its retry with the same key (200), or, made
    /// without a key, in the caller's list by its label.
    lost_create_done: usize,
    /// Create lost in the kill, found not made (never made, or undone by doctor): its retry
    /// made it (201), or, without a key, it is not in the list.
    lost_create_undone: usize,
    /// Create never sent: not made (its retry made it, or it is not listed).
    unsent_create: usize,
}

impl Census {
    fn add(&mut self, o: &Census) {
        self.kept += o.kept;
        self.destroyed += o.destroyed;
        self.lost_destroy_done += o.lost_destroy_done;
        self.lost_destroy_undone += o.lost_destroy_undone;
        self.lost_create_done += o.lost_create_done;
        self.lost_create_undone += o.lost_create_undone;
        self.unsent_create += o.unsent_create;
    }
}

/// After the restart, as the journals' user (docs/api.md, "After a crash"):
/// - a root whose create was answered and that was not destroyed exists, is `ready`, listed and
///   usable (its client's write is there, exec works);
/// - a root whose destroy was answered is gone (404, no directory);
/// - a root whose destroy got no answer is either gone (404, and a new destroy is 404) or as it
///   was, and usable;
/// - a create that got no answer either made its root, `ready` and usable, or made nothing: a
///   retry with the same key says which (200 or 201); a root made without a key is found in
///   the caller's list by its labels, or is not there;
/// - the caller's list is exactly its roots that exist by the above: nothing half made or
///   half destroyed, nothing of another user.
///
/// Returns the ids of the roots that now exist, to destroy.
fn check_after_restart(socket: &Path, js: &[Journal], census: &mut Census) -> Result<Vec<String>, String> {
    let Some(uid) = js.first().map(|j| j.uid) else { return Ok(vec![]) };
    become_user(uid);
    let call = |m: &str, p: &str, b: Option<Value>| try_json(socket, m, p, b).map_err(|e| format!("{m} {p}: {e}"));
    let usable = |id: &str, key: &str, wrote: bool| -> Result<(), String> {
        let shown = call("GET", &format!("/v1/roots/{id}"), None)?;
        if shown.status != 200 || shown.json()["state"] != "ready" || shown.json()["mounted"] != true {
            return Err(bad(&format!("show {key}"), &shown));
        }
        let cwd = PathBuf::from(shown.json()["cwd"].as_str().unwrap());
        if !wrote {
            std::fs::write(cwd.join("client.txt"), format!("{key}\n")).map_err(|e| format!("write in {key}: {e}"))?;
        }
        let e = call("POST", &format!("/v1/roots/{id}/exec"), Some(exec_body()))?;
        if e.status != 200 || e.json()["stdout"] != expected_exec_stdout(uid, key) {
            return Err(bad(&format!("exec in {key} after the restart"), &e));
        }
        Ok(())
    };
    // The list as the restart left it, before this check changes anything.
    let first = call("GET", "/v1/roots", None)?.json();
    own_ids(&first, uid)?;
    let listed_as = |key: &str| -> Vec<String> {
        first["roots"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["labels"]["load"] == key)
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    let mut live = Vec::new();
    for j in js {
        match (&j.created, &j.destroyed) {
            (Outcome::Answered((_, id, _)), None | Some(Outcome::NotSent)) => {
                usable(id, &j.key, j.wrote)?;
                live.push(id.clone());
                census.kept += 1;
            }
            (Outcome::Answered((_, id, cwd)), Some(Outcome::Answered(_))) => {
                let r = call("GET", &format!("/v1/roots/{id}"), None)?;
                if r.status != 404 || cwd.exists() {
                    return Err(bad(&format!("{} destroyed before the kill", j.key), &r));
                }
                census.destroyed += 1;
            }
            (Outcome::Answered((_, id, _)), Some(Outcome::Lost)) => {
                let r = call("GET", &format!("/v1/roots/{id}"), None)?;
                if r.status == 404 {
                    // Asked again, the destroy finds nothing to do.
                    let again = call("DELETE", &format!("/v1/roots/{id}"), None)?;
                    if again.status != 404 {
                        return Err(bad(&format!("destroy {} again after the restart", j.key), &again));
                    }
                    census.lost_destroy_done += 1;
                } else {
                    usable(id, &j.key, j.wrote)?;
                    live.push(id.clone());
                    census.lost_destroy_undone += 1;
                }
            }
            (created, _) if j.keyed => {
                let r = call("POST", "/v1/roots", Some(create_body(&j.key)))?;
                let id = r.json()["id"].as_str().unwrap_or_default().to_string();
                match (created, r.status) {
                    (Outcome::Lost, 200) => census.lost_create_done += 1,
                    (Outcome::Lost, 201) => census.lost_create_undone += 1,
                    (Outcome::NotSent, 201) => census.unsent_create += 1,
                    _ => return Err(bad(&format!("create {} again after the restart", j.key), &r)),
                }
                usable(&id, &j.key, false)?;
                live.push(id);
            }
            (created, _) => match (created, &listed_as(&j.key)[..]) {
                (Outcome::Lost, [id]) => {
                    usable(id, &j.key, false)?;
                    live.push(id.clone());
                    census.lost_create_done += 1;
                }
                (Outcome::Lost, []) => census.lost_create_undone += 1,
                (Outcome::NotSent, []) => census.unsent_create += 1,
                (_, ids) => return Err(format!("the create of {} (not answered) left roots {ids:?}", j.key)),
            },
        }
    }
    // The list is the caller's own, and exactly the roots it should be.
    let ids = own_ids(&call("GET", "/v1/roots", None)?.json(), uid)?;
    let (mut listed, mut expected) = (ids.clone(), live.clone());
    listed.sort();
    expected.sort();
    if listed != expected {
        return Err(format!("uid {uid} lists {listed:?} after the restart, not {expected:?}"));
    }
    Ok(live)
}

/// The service killed with SIGKILL under the load of 20 clients of two users, then restarted:
/// doctor at startup leaves the store clean, and no answered request is lost.
#[test]
fn kill_9_mid_load() {
    if !can_mount() {
        return;
    }
    const CLIENTS: usize = 20;
    /// Kill once this many creates were answered (a third of what the clients would make).
    const KILL_AFTER: usize = 120;
    let env = open_env();
    shared_base(&env);
    let mut s = Server::start(&env, &["--socket-group", CALLERS]);
    let created = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|w| {
            let (socket, created, stop) = (s.socket.clone(), created.clone(), stop.clone());
            let uid = if w % 2 == 0 { U1 } else { U2 };
            std::thread::spawn(move || journaling_client(&socket, uid, &format!("k{w}"), &created, &stop))
        })
        .collect();
    let t0 = Instant::now();
    while created.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(workers.iter().any(|w| !w.is_finished()), "every client stopped before the kill");
        std::thread::sleep(Duration::from_millis(5));
    }
    s.kill9();
    stop.store(true, Ordering::SeqCst);
    let killed_after = t0.elapsed();
    let mut journals: BTreeMap<u32, Vec<Journal>> = BTreeMap::new();
    let mut failures = Vec::new();
    for w in workers {
        let (js, f) = w.join().unwrap();
        failures.extend(f);
        for j in js {
            journals.entry(j.uid).or_default().push(j);
        }
    }
    assert!(failures.is_empty(), "requests failed before the kill: {failures:#?}");
    let all: Vec<&Journal> = journals.values().flatten().collect();
    let count = |f: &dyn Fn(&Journal) -> bool| all.iter().filter(|j| f(j)).count();
    eprintln!(
        "kill -9 after {:.1} s: {} creates answered, {} lost in the kill, {} destroys answered, {} lost",
        killed_after.as_secs_f64(),
        count(&|j| matches!(j.created, Outcome::Answered(_))),
        count(&|j| j.created == Outcome::Lost),
        count(&|j| matches!(j.destroyed, Some(Outcome::Answered(_)))),
        count(&|j| j.destroyed == Some(Outcome::Lost)),
    );

    // The restart: doctor at startup repairs what the kill left (its findings are the log's).
    let log = env.path("serve.log");
    let s = Server::start_with(&env, &["--socket-group", CALLERS], std::fs::File::create(&log).unwrap());
    let startup = strip_ansi(&std::fs::read_to_string(&log).unwrap());
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for line in startup.lines().filter(|l| l.contains("doctor at startup")) {
        let kind = line.split("kind=").nth(1).and_then(|k| k.split_whitespace().next()).unwrap_or("?");
        *kinds.entry(kind.trim_matches('"').to_string()).or_default() += 1;
    }
    eprintln!("doctor at startup: {kinds:?}");
    let d = s.req("GET", "/v1/doctor", None).expect(200);
    assert_eq!((&d["ok"], &d["findings"]), (&json!(true), &json!([])), "doctor after the restart: {d}");
    assert_eq!(env.ok(&["verify"])["ok"], true);

    let checks: Vec<_> = journals
        .into_values()
        .map(|js| {
            let socket = s.socket.clone();
            std::thread::spawn(move || {
                let mut census = Census::default();
                let live = check_after_restart(&socket, &js, &mut census);
                (js[0].uid, live, census)
            })
        })
        .collect();
    let mut total = Census::default();
    let mut live_roots = Vec::new();
    for c in checks {
        let (uid, live, census) = c.join().unwrap();
        let live = live.unwrap_or_else(|e| panic!("after the restart, uid {uid}: {e}"));
        live_roots.extend(live.into_iter().map(|id| (uid, id)));
        total.add(&census);
    }
    eprintln!("after the restart: {total:?}");
    assert!(total.kept > 0 && total.destroyed > 0, "the load made and destroyed roots before the kill: {total:?}");

    for (uid, id) in live_roots {
        s.req_as(uid, "DELETE", &format!("/v1/roots/{id}"), None).expect(200);
    }
    assert_nothing_left(&env, &s, None);
}

/// Whether process `pid` is gone (or only a zombie waiting for whoever adopted it).
fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// A command running through `exec` when the service is killed dies with it (its parent-death
/// signal), rather than running on past its timeout in a root that, while it runs, cannot be
/// destroyed.
#[test]
fn a_command_in_flight_dies_with_the_killed_service() {
    let env = Env::new();
    let mut s = Server::start(&env, &[]);
    let c = s.req("POST", "/v1/roots", Some(json!({ "class": "artifact", "backend": "copy", "key": "k" }))).expect(201);
    let cwd = PathBuf::from(c["cwd"].as_str().unwrap());
    let socket = s.socket.clone();
    let in_flight = std::thread::spawn(move || {
        let body = json!({ "command": "sh", "args": ["-c", "echo $$ > pid.tmp && mv pid.tmp pid && exec sleep 600"] });
        try_json(&socket, "POST", "/v1/roots/k/exec", Some(body))
    });
    let t0 = Instant::now();
    while !cwd.join("pid").exists() {
        assert!(t0.elapsed() < Duration::from_secs(60), "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid: i32 = std::fs::read_to_string(cwd.join("pid")).unwrap().trim().parse().unwrap();
    s.kill9();
    assert!(in_flight.join().unwrap().is_err(), "the exec was not answered");
    let t0 = Instant::now();
    while !process_gone(pid) {
        assert!(t0.elapsed() < Duration::from_secs(30), "the command (pid {pid}) outlived the killed service");
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = Server::start(&env, &[]);
    let d = s.req("DELETE", "/v1/roots/k", None).expect(200);
    assert_eq!(d["cleaned"], true, "{d}");
}
