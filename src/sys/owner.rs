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
