//! Who owns what a run can touch: a uid and a gid.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A uid and gid that own what a run can touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

impl Owner {
    /// The user running this process.
    pub fn current() -> Owner {
        Owner { uid: nix::unistd::getuid().as_raw(), gid: nix::unistd::getgid().as_raw() }
    }

    /// Resolve a user name or numeric uid (group: the user's primary group).
    pub fn parse(spec: &str) -> Result<Owner> {
        let user = match spec.parse::<u32>() {
            Ok(uid) => nix::unistd::User::from_uid(uid.into()),
            Err(_) => nix::unistd::User::from_name(spec),
        }
        .map_err(|e| Error::BadInput(format!("owner {spec:?}: {e}")))?;
        match user {
            Some(u) => Ok(Owner { uid: u.uid.as_raw(), gid: u.gid.as_raw() }),
            None => match spec.parse::<u32>() {
                Ok(uid) => Ok(Owner { uid, gid: uid }),
                Err(_) => Err(Error::BadInput(format!("owner {spec:?}: no such user"))),
            },
        }
    }
}

impl Owner {
    /// The groups this owner's processes run with: its gid plus, when the uid has a passwd
    /// entry, the supplementary groups `getgrouplist(3)` gives (an owner given as a bare uid
    /// has no others).
    pub fn groups(&self) -> Vec<u32> {
        let mut gids = vec![self.gid];
        if let Ok(Some(u)) = nix::unistd::User::from_uid(self.uid.into()) {
            if let Ok(name) = std::ffi::CString::new(u.name) {
                if let Ok(list) = nix::unistd::getgrouplist(&name, self.gid.into()) {
                    gids.extend(list.into_iter().map(|g| g.as_raw()));
                }
            }
        }
        gids.sort_unstable();
        gids.dedup();
        gids
    }

    /// Whether this owner may search (enter) a directory with metadata `md`, judged by its mode
    /// bits alone as the kernel does without ACLs: the owner class if the uid matches, else the
    /// group class if one of `groups` matches, else other. uid 0 may search anything.
    pub fn may_search(&self, md: &std::fs::Metadata, groups: &[u32]) -> bool {
        use std::os::unix::fs::MetadataExt;
        let mode = md.mode();
        if self.uid == 0 {
            return true;
        }
        if md.uid() == self.uid {
            mode & 0o100 != 0
        } else if groups.contains(&md.gid()) {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        }
    }
}
