//! Which backend serves which workload class: the one table, and the overlay availability probe.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::backend::BackendKind;
use crate::error::{Error, Result};

/// Workload classes of the plan's Phase 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// Routine runs: read configuration, write a small result.
    Routine,
    /// Ephemeral preview/test environments: read sources and dependencies.
    Preview,
    /// Document/artifact generation: write outputs.
    Artifact,
    /// Repository editing: needs branch semantics.
    RepoEdit,
}

impl Class {
    /// Every class, in the order the documentation lists them.
    pub const ALL: [Class; 4] = [Class::Routine, Class::Preview, Class::Artifact, Class::RepoEdit];

    /// The name used in JSON, on the command line and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Routine => "routine",
            Class::Preview => "preview",
            Class::Artifact => "artifact",
            Class::RepoEdit => "repo-edit",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The policy table: the preferred backend of each class and the fallback when it cannot run.
/// docs/roots.md shows the same table.
pub fn preferred(class: Class) -> (BackendKind, Option<BackendKind>) {
    match class {
        Class::Routine | Class::Preview | Class::Artifact => (BackendKind::Overlay, Some(BackendKind::Copy)),
        Class::RepoEdit => (BackendKind::GitOverlay, Some(BackendKind::Worktree)),
    }
}

/// Whether a backend can run here, and why not (the service's `GET /v1/health`).
#[derive(Clone, Debug, Serialize)]
pub struct Availability {
    /// It can.
    pub available: bool,
    /// Why not (null when it can).
    pub reason: Option<String>,
}

/// [`unavailable`] as an [`Availability`].
pub fn availability(kind: BackendKind, store_root: &Path) -> Availability {
    let reason = unavailable(kind, store_root);
    Availability { available: reason.is_none(), reason }
}

/// Why a backend cannot run here, or `None` when it can.
pub fn unavailable(kind: BackendKind, store_root: &Path) -> Option<String> {
    match kind {
        BackendKind::Overlay | BackendKind::GitOverlay => overlay_unavailable(store_root),
        BackendKind::Copy | BackendKind::Worktree => None,
    }
}

/// Pick the backend for `class`: `requested` (an explicit choice that cannot work is an error)
/// or the policy table with its fallback (and a warning saying why).
pub fn choose(class: Class, requested: Option<BackendKind>, store_root: &Path) -> Result<(BackendKind, Vec<String>)> {
    if let Some(kind) = requested {
        if let Some(why) = unavailable(kind, store_root) {
            return Err(Error::BadInput(format!("backend {kind} cannot be used here: {why}")));
        }
        return Ok((kind, vec![]));
    }
    let (want, fallback) = preferred(class);
    match (unavailable(want, store_root), fallback) {
        (None, _) => Ok((want, vec![])),
        (Some(why), Some(fb)) => Ok((fb, vec![format!("using the {fb} backend: {want} is unavailable ({why})")])),
        (Some(why), None) => Err(Error::BadInput(format!("backend {want} cannot be used here: {why}"))),
    }
}

fn overlay_unavailable(store_root: &Path) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("mounting overlayfs needs root (CAP_SYS_ADMIN)".into());
    }
    // Every create asks, and the probe below (statfs, a readdir of the store, /proc/filesystems,
    // an xattr read) cost more than a tenth of an overlay create: a store found able once stays
    // so for the life of the process. A "no" is probed again, so that a fix is seen.
    static ABLE: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());
    let able = |root: &Path| ABLE.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().any(|p| p == root);
    if able(store_root) {
        return None;
    }
    let why = probe_overlay(store_root);
    if why.is_none() && !able(store_root) {
        ABLE.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(store_root.to_path_buf());
    }
    why
}

fn probe_overlay(store_root: &Path) -> Option<String> {
    match nix::sys::statfs::statfs(store_root) {
        Ok(s) if s.filesystem_type() == nix::sys::statfs::OVERLAYFS_SUPER_MAGIC => {
            return Some(format!("the store {} is itself on overlayfs (nested overlay)", store_root.display()))
        }
        Ok(_) => {}
        Err(e) => return Some(format!("cannot statfs {}: {e}", store_root.display())),
    }
    if !has_filesystem("overlay") {
        return Some("the kernel has no overlay filesystem".into());
    }
    if !has_d_type(store_root) {
        return Some(format!(
            "the filesystem of {} does not report d_type, which overlayfs needs",
            store_root.display()
        ));
    }
    let probe = store_root.join("roots");
    let _ = std::fs::create_dir_all(&probe);
    // Probe once per store: the attribute stays, and reading it costs no journal write.
    if let Ok(Some(_)) = crate::sys::xattr::get(&probe, "trusted.execroot.probe") {
        return None;
    }
    if let Err(e) = crate::sys::xattr::set(&probe, "trusted.execroot.probe", b"1") {
        return Some(format!("the store's filesystem lacks trusted xattrs for an upper directory: {e}"));
    }
    None
}

/// True when readdir on `dir` reports entry types (`d_type`), as overlayfs requires of an upper.
fn has_d_type(dir: &Path) -> bool {
    use nix::dir::Dir;
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;
    let Ok(mut d) = Dir::open(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()) else { return true };
    let all_typed = d.iter().flatten().all(|e| e.file_type().is_some());
    all_typed
}

fn has_filesystem(name: &str) -> bool {
    // A module that is not loaded yet is loaded by the first mount; only a missing one counts.
    std::fs::read_to_string("/proc/filesystems").map(|t| t.lines().any(|l| l.ends_with(name))).unwrap_or(true)
        || Path::new("/sys/module/overlay").exists()
}
