//! The one lock mechanism: an flock on a file, held as a value and released when dropped.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, IoContext, Result};

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

    /// Lock `path` exclusively if nobody holds it; `None` when somebody does.
    pub fn try_acquire(path: &Path) -> Result<Option<FileLock>> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).at(path)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(FileLock { _lock: lock })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(Error::io(path, e.into())),
        }
    }

    /// Lock the directory `dir` itself, exclusively, waiting at most `timeout` (then
    /// [`Error::Busy`] naming it); `None` when `dir` does not exist. No file is made, so the
    /// directory's contents are unchanged.
    pub fn on_dir_within(dir: &Path, timeout: Duration) -> Result<Option<FileLock>> {
        let mut file = match File::open(dir) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(dir, e)),
        };
        let deadline = Instant::now() + timeout;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(Some(FileLock { _lock: lock })),
                Err((f, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                    file = f;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Err(Error::Busy { path: dir.to_path_buf() }),
                Err((_, e)) => return Err(Error::io(dir, e.into())),
            }
        }
    }
}

impl AsFd for FileLock {
    /// The locked file, to hand to a child that should hold the lock too.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self._lock.as_fd()
    }
}
