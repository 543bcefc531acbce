//! Named crash points, compiled in only with the `failpoints` feature (which the test suite
//! turns on): when `EXECROOT_FAILPOINT` names the point a process reaches, the process kills
//! itself with SIGKILL right there, exactly as `kill -9` would. Crash tests use this to prove
//! which phase of an operation they interrupted (docs/format.md, "Crash tests").

/// Die with SIGKILL here if `EXECROOT_FAILPOINT` is `name`. Without the `failpoints` feature
/// this is nothing at all.
#[inline]
pub fn hit(name: &str) {
    #[cfg(feature = "failpoints")]
    {
        static ARMED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        if ARMED.get_or_init(|| std::env::var("EXECROOT_FAILPOINT").ok()).as_deref() == Some(name) {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}
