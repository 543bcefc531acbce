//! The one lock mechanism: an flock on a file, held as a value and released when dropped.

use std::fs::File;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use crate::error::{IoContext, Result};

/// An flock held on a lock file (created if missing), released when dropped.
#[derive(Debug)]
pub struct FileLock {
    _lock: Flock<File>,
}

impl FileLock {
    /// Lock `path` shared or exclusive, waiting for it.
    pub fn acquire(path: &Path, exclusive: bool) -> Result<FileLock> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).at(path)?;
        let arg = if exclusive { FlockArg::LockExclusive } else { FlockArg::LockShared };
        let lock = Flock::lock(file, arg).map_err(|(_, e)| e).at(path)?;
        Ok(FileLock { _lock: lock })
    }
}
