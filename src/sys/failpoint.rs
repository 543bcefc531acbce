//! Named fault points, compiled in only with the `failpoints` feature (which the test suite
//! turns on). Crash tests use them to prove which phase of an operation they interrupted, race
//! tests to change a tree at the worst moment (docs/format.md, "Crash tests"; docs/security.md).
//!
//! - `EXECROOT_FAILPOINT=NAME`: the process kills itself with SIGKILL at `NAME`, exactly as
//!   `kill -9` would.
//! - `EXECROOT_FAILPOINT_RUN=NAME:COMMAND`: the first time the process reaches `NAME` it runs
//!   `/bin/sh -c COMMAND` and waits for it, then goes on (a deterministic race).

/// Act at the fault point `name` as the environment says. Without the `failpoints` feature
/// it only marks the step at trace level: with `-vvv` the fault points are a timeline of
/// each operation (where a create's milliseconds go), in every build.
#[inline]
pub fn hit(name: &str) {
    tracing::trace!(step = name, "reached");
    #[cfg(feature = "failpoints")]
    {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::OnceLock;
        static KILL: OnceLock<Option<String>> = OnceLock::new();
        static RUN: OnceLock<Option<(String, String)>> = OnceLock::new();
        static RAN: AtomicBool = AtomicBool::new(false);
        if KILL.get_or_init(|| std::env::var("EXECROOT_FAILPOINT").ok()).as_deref() == Some(name) {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
        let run = RUN.get_or_init(|| {
            let v = std::env::var("EXECROOT_FAILPOINT_RUN").ok()?;
            let (n, cmd) = v.split_once(':')?;
            Some((n.to_string(), cmd.to_string()))
        });
        if let Some((n, cmd)) = run {
            if n == name && !RAN.swap(true, Ordering::SeqCst) {
                let _ = std::process::Command::new("/bin/sh").arg("-c").arg(cmd).status();
            }
        }
    }
}
