//! One error type for the library, with a stable machine-readable code and an exit status per
//! kind so that the CLI and (later) the service report failures the same way.

use std::path::{Path, PathBuf};

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, with a variant for each case a caller branches on. Several
/// variants share a code and exit status (docs/cli.md): `Tool` is `bad-input` (2), `Busy`,
/// `VolatileLost` and `Timeout` are `conflict` (5); callers match the variant, never the message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O failure on a named path.
    #[error("{path}: {source}")]
    Io {
        /// The path the operation was working on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The input (a directory, an archive, an argument) is unacceptable.
    #[error("{0}")]
    BadInput(String),
    /// Something asked for does not exist (snapshot, ref, object).
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this (the service's authorization rules, docs/api.md): another
    /// user's root is [`Error::NotFound`] instead, so that its existence is not revealed.
    #[error("{0}")]
    Forbidden(String),
    /// The request conflicts with the store's state (ref points at a snapshot, DEST not empty).
    #[error("{0}")]
    Conflict(String),
    /// Stored data is damaged or hostile (bad manifest, unknown format version).
    #[error("{0}")]
    Corrupt(String),
    /// An external tool (git) ran and failed.
    #[error("{what} failed (exit status {}): {stderr}", status.map(|c| c.to_string()).unwrap_or_else(|| "none: killed by a signal".into()))]
    Tool {
        /// The command, as run (`git worktree add ...` in DIR).
        what: String,
        /// Its exit status (`None` when killed by a signal).
        status: Option<i32>,
        /// What it wrote on stderr, trimmed.
        stderr: String,
    },
    /// An external tool did not finish in time and was killed.
    #[error("{what} timed out after {secs}s")]
    Timeout {
        /// The command, as run.
        what: String,
        /// The limit it passed, in seconds.
        secs: u64,
    },
    /// A mount or directory is in use by a process, so it cannot be taken away now.
    #[error("{} is busy", path.display())]
    Busy {
        /// What is in use.
        path: PathBuf,
    },
    /// A volatile overlay's upper directory did not survive a crash: the kernel refuses to
    /// mount it again, so the root cannot be revived.
    #[error("{0}")]
    VolatileLost(String),
}

impl Error {
    /// Wrap an I/O error with the path it concerns. `ENAMETOOLONG` is not an I/O failure but a
    /// path the kernel cannot take in one call (over 4095 bytes, or a name over 255): the input
    /// that holds it is refused as bad input, the path shown shortened.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        use std::os::unix::ffi::OsStrExt;
        let path = path.as_ref();
        if source.raw_os_error() == Some(libc::ENAMETOOLONG) {
            return Error::BadInput(format!(
                "{}: too long for the kernel (below the top of a tree a path is at most 4095 bytes, a name at \
                 most 255)",
                crate::pathenc::show(path.as_os_str().as_bytes())
            ));
        }
        Error::Io { path: path.to_path_buf(), source }
    }

    /// Stable identifier for JSON output (`error.code`).
    pub fn code(&self) -> &'static str {
        match self {
            Error::Io { .. } => "io",
            Error::BadInput(_) | Error::Tool { .. } => "bad-input",
            Error::NotFound(_) => "not-found",
            Error::Forbidden(_) => "forbidden",
            Error::Conflict(_) | Error::VolatileLost(_) | Error::Busy { .. } | Error::Timeout { .. } => "conflict",
            Error::Corrupt(_) => "corrupt",
        }
    }

    /// Process exit status for this kind of error (documented in docs/cli.md).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Io { .. } => 1,
            Error::BadInput(_) | Error::Tool { .. } => 2,
            Error::NotFound(_) => 4,
            Error::Forbidden(_) => 7,
            Error::Conflict(_) | Error::VolatileLost(_) | Error::Busy { .. } | Error::Timeout { .. } => 5,
            Error::Corrupt(_) => 6,
        }
    }
}

/// Attach a path to `std::io::Result`s.
pub trait IoContext<T> {
    /// Convert an I/O error into [`Error::Io`] naming `path`.
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(path, std::io::Error::from(e)))
    }
}
