//! The service's only way in: a unix socket, and the kernel's word on who is at the other end
//! of each connection (`SO_PEERCRED`), never the request's.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use axum::serve::IncomingStream;
use execroot::error::{Error, IoContext, Result};
use execroot::root::caller::Caller;
use tokio::net::UnixListener;

/// Who connected: the uid and gid of the peer process when the socket was connected, as the
/// kernel reports them; `None` when the kernel could not say (such a connection may do nothing).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub Option<Caller>);

impl axum::extract::connect_info::Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        Peer(stream.io().peer_cred().ok().map(|c| Caller { uid: c.uid(), gid: c.gid() }))
    }
}

/// Parse `--socket-mode` (octal, such as `0660` or `660`).
pub fn parse_mode(s: &str) -> Result<u32> {
    match u32::from_str_radix(s.trim_start_matches("0o"), 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(Error::BadInput(format!("--socket-mode {s:?}: an octal mode such as 0660"))),
    }
}

/// Parse `--socket-group` (a group name or a numeric gid).
pub fn parse_group(s: &str) -> Result<u32> {
    if let Ok(gid) = s.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(s) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(Error::BadInput(format!("--socket-group {s:?}: no such group"))),
        Err(e) => Err(Error::BadInput(format!("--socket-group {s:?}: {e}"))),
    }
}

/// Bind the socket at `path` with exactly `mode` (and group `group`): a socket left by a service
/// that is gone is replaced; one that answers is another service (conflict); anything else at
/// the path is kept (conflict). The socket's mode decides only who may connect; what each
/// caller may do is decided per request from its credentials.
pub fn bind(path: &Path, mode: u32, group: Option<u32>) -> Result<std::os::unix::net::UnixListener> {
    check_free(path)?;
    let l = std::os::unix::net::UnixListener::bind(path).at(path)?;
    if let Some(gid) = group {
        std::os::unix::fs::lchown(path, None, Some(gid)).at(path)?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).at(path)?;
    l.set_nonblocking(true).at(path)?;
    Ok(l)
}

/// Refuse a path where a service answers (conflict) or something other than a socket is;
/// remove a socket no service answers on. Run before anything else at startup, so that a second
/// service never repairs (doctor) a store another one is serving.
pub fn check_free(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(Error::Conflict(format!("{}: a service already answers there", path.display())));
            }
            std::fs::remove_file(path).at(path)?;
        }
        Ok(_) => return Err(Error::Conflict(format!("{}: exists and is not a socket", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(path, e)),
    }
    Ok(())
}

/// Removes the socket when the service stops (only if it is still ours: the same inode).
pub struct SocketFile {
    path: PathBuf,
    ino: Option<u64>,
}

impl SocketFile {
    /// Remember the socket at `path` as it is now.
    pub fn new(path: &Path) -> SocketFile {
        use std::os::unix::fs::MetadataExt;
        SocketFile { path: path.to_path_buf(), ino: std::fs::symlink_metadata(path).ok().map(|m| m.ino()) }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        if std::fs::symlink_metadata(&self.path).ok().map(|m| m.ino()) == self.ino {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
