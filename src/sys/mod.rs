//! System helpers: the lowest layer, knowing nothing of stores or roots. Trees reached through
//! directory handles, mounts and mountinfo, idmapped views, extended attributes and POSIX ACLs,
//! flock locks, processes using a directory, running git, writing a git index and answering git's fsmonitor, and the owner of a run's files.

pub mod acl;
pub mod beneath;
pub mod creds;
pub mod failpoint;
pub mod git;
pub mod gitfsmonitor;
pub mod gitindex;
pub mod gituntracked;
pub mod idmap;
pub mod lock;
pub mod mount;
pub mod owner;
pub mod procs;
pub mod sparse;
pub mod xattr;

pub use owner::Owner;
