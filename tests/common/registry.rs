//! A private Debian `docker-registry` (distribution 2.8) on 127.0.0.1 for the push and pull
//! tests: its own data directory and minimal config, started by the test and killed by its
//! pid (never by name). Included with `#[path = "common/registry.rs"] mod registry;`.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub const REGISTRY: &str = "/usr/bin/docker-registry";

/// One registry process; killed (by its pid) when dropped.
pub struct Reg {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    pub auth: bool,
}

/// Whether the tool at `path` is there; in CI its absence fails the test.
pub fn have(path: &str, what: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true but {path} is missing: install {what} (.ci/run does)");
    }
    eprintln!("skipped: {path} is missing (apt-get install {what})");
    false
}

impl Reg {
    pub fn start() -> Option<Reg> {
        Reg::start_with(false)
    }

    /// A registry that wants basic auth as `user` / `secret` (htpasswd, bcrypt).
    pub fn start_auth() -> Option<Reg> {
        if !have("/usr/bin/htpasswd", "apache2-utils") {
            return None;
        }
        Reg::start_with(true)
    }

    pub fn start_with(auth: bool) -> Option<Reg> {
        if !have(REGISTRY, "docker-registry") {
            return None;
        }
        let dir = tempfile::Builder::new().prefix("execroot-registry-").tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if auth {
            let out = Command::new("htpasswd").args(["-Bbn", "user", "secret"]).output().unwrap();
            assert!(out.status.success());
            std::fs::write(dir.path().join("htpasswd"), &out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let mut r = Reg { dir, port, child: None, auth };
        r.run();
        Some(r)
    }

    /// Start the process (again, on the same port and data), and wait until it answers.
    pub fn run(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("log")).unwrap();
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("registry did not listen on {}: {}", self.port, self.log());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL our registry process (by pid) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT/REPO`.
    pub fn repo(&self, repo: &str) -> String {
        format!("{}/{repo}", self.addr())
    }
}

impl Drop for Reg {
    fn drop(&mut self) {
        self.kill();
    }
}
