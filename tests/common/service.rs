//! A client of a real `execroot serve` for the service tests (tests/service.rs,
//! tests/service_load.rs): the service started on an [`Env`]'s store, spoken to over its unix
//! socket with hand-written HTTP/1.1. Other users are threads that switched their own
//! credentials (raw setresuid on one thread only), so that the kernel's SO_PEERCRED names them;
//! they reach the socket as the recommended setup has it, through the callers' group.
//!
//! Included with `#[path = "common/service.rs"] mod service;` next to `mod common;`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::Env;

pub const U1: u32 = 40011;
pub const U2: u32 = 40012;
/// The group of the service's callers (the recommended setup, docs/api.md): U1 and U2 are in it.
pub const CALLERS: &str = "40010";

/// A running `execroot serve`.
pub struct Server {
    pub child: Option<Child>,
    pub socket: PathBuf,
}

impl Server {
    /// Start one on `env`'s store with `extra` flags and wait until its socket answers; its
    /// stderr is the test's.
    pub fn start(env: &Env, extra: &[&str]) -> Server {
        Server::start_with(env, extra, Stdio::inherit())
    }

    /// [`Server::start`] with the service's stderr (its log: doctor's findings at startup) sent
    /// to `stderr`.
    pub fn start_with(env: &Env, extra: &[&str], stderr: impl Into<Stdio>) -> Server {
        std::fs::create_dir_all(env.store()).unwrap();
        let socket = env.store().join("execroot.sock");
        let mut args = vec!["serve"];
        args.extend_from_slice(extra);
        let child = env.spawnable(&args).stdout(Stdio::null()).stderr(stderr).spawn().unwrap();
        let mut s = Server { child: Some(child), socket };
        s.wait_ready();
        s
    }

    fn wait_ready(&mut self) {
        let t0 = Instant::now();
        loop {
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("execroot serve exited before answering: {st}");
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "execroot serve did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// SIGTERM, and the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait().unwrap()
    }

    /// SIGKILL, and wait until it is gone (its socket stays, as a crash leaves it).
    pub fn kill9(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }

    pub fn req(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        request(None, &self.socket, method, path, "application/json", body.map(|b| b.to_string().into_bytes()))
    }

    pub fn req_as(&self, uid: u32, method: &str, path: &str, body: Option<Value>) -> Resp {
        request(Some(uid), &self.socket, method, path, "application/json", body.map(|b| b.to_string().into_bytes()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

/// An answer: status and body (parsed as JSON when it is JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "answer: {}", String::from_utf8_lossy(&self.body));
        self.json()
    }
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_string()
    }
    pub fn message(&self) -> String {
        self.json()["error"]["message"].as_str().unwrap_or_default().to_string()
    }
}

/// One HTTP/1.1 request on a new connection, made by this thread or (with `uid`) by a thread
/// that has become that user (uid, gid and no groups) before connecting.
pub fn request(uid: Option<u32>, socket: &Path, method: &str, path: &str, ctype: &str, body: Option<Vec<u8>>) -> Resp {
    let socket = socket.to_path_buf();
    let (method, path, ctype) = (method.to_string(), path.to_string(), ctype.to_string());
    let run = move || -> std::io::Result<Resp> {
        if let Some(uid) = uid {
            become_user(uid);
        }
        try_request(&socket, &method, &path, &ctype, body)
    };
    match uid {
        None => run().unwrap(),
        Some(_) => std::thread::spawn(run).join().unwrap().unwrap(),
    }
}

/// One HTTP/1.1 request on a new connection made by this thread, as whoever it is: an error
/// when the service cannot be reached or does not answer completely (it died).
pub fn try_request(
    socket: &Path,
    method: &str,
    path: &str,
    ctype: &str,
    body: Option<Vec<u8>>,
) -> std::io::Result<Resp> {
    let mut s = UnixStream::connect(socket)?;
    let body = body.unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: execroot\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    // A server that refuses early (413) may close before reading it all.
    let _ = s.write_all(&body);
    // A server that answered before reading the whole body and closed leaves the error
    // ECONNRESET after its answer (the kernel reports it once the answer has been read).
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !raw.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    parse_response(&raw)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no complete answer (the service died?)"))
}

/// [`try_request`] with a JSON body, for a thread that is already its user.
pub fn try_json(socket: &Path, method: &str, path: &str, body: Option<Value>) -> std::io::Result<Resp> {
    try_request(socket, method, path, "application/json", body.map(|b| b.to_string().into_bytes()))
}

/// Switch this thread alone (raw system calls: glibc's wrappers would switch every thread) to
/// `uid`, gid `uid`, in the callers' group only.
pub fn become_user(uid: u32) {
    let groups: [libc::gid_t; 1] = [CALLERS.parse().unwrap()];
    unsafe {
        assert_eq!(libc::syscall(libc::SYS_setgroups, 1, groups.as_ptr()), 0);
        assert_eq!(libc::syscall(libc::SYS_setresgid, uid, uid, uid), 0);
        assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, uid), 0);
    }
}

/// A whole answer (head, and a body as long as its length says), or `None` when `raw` is cut
/// short.
fn parse_response(raw: &[u8]) -> Option<Resp> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut body = raw[end + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n")?;
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).ok()?.trim(), 16).ok()?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(rest.get(nl + 2..nl + 2 + n)?);
            rest = rest.get(nl + 2 + n + 2..)?;
        }
        body = out;
    } else if let Some(len) = head.lines().find_map(|l| l.strip_prefix("content-length:")) {
        if body.len() != len.trim().parse::<usize>().ok()? {
            return None;
        }
    }
    Some(Resp { status, body })
}

/// An environment other users may search (not list), as tests/multiuser.rs has it.
pub fn open_env() -> Env {
    let env = Env::new();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    env
}
