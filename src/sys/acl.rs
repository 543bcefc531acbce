//! POSIX access ACLs, written and read as the kernel stores them: the `system.posix_acl_access`
//! extended attribute in its binary form (`include/uapi/linux/posix_acl_xattr.h`).
//!
//! Only one shape is ever written: a directory its owner may use fully and a few named users
//! may only search (`user:<uid>:--x`), nobody else anything. That lets a root's owner reach its
//! working directory through a directory it can neither list nor write. Hand-written because
//! the format is twelve bytes a line and a crate for it would bring libacl.
//!
//! Setting an access ACL also sets the mode's permission bits (owner = `USER_OBJ`, group =
//! `MASK`, other = `OTHER`), so a directory carrying [`search_only`] shows mode `0710`; a later
//! `chmod` rewrites the mask, so the ACL is always written after the mode.

use std::path::Path;

use crate::error::{Error, Result};

/// The attribute holding a file's access ACL.
pub const XATTR: &str = "system.posix_acl_access";

/// The only version of the format.
const VERSION: u32 = 2;
/// Entry tags.
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
/// The id of entries that name nobody (every tag but `USER` and `GROUP`).
const UNDEFINED_ID: u32 = u32::MAX;

/// One ACL entry: a tag, permission bits (`rwx` = 4, 2, 1) and, for named entries, an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AclEntry {
    /// What the entry applies to (`USER_OBJ`, `USER`, ...).
    pub tag: u16,
    /// Permission bits.
    pub perm: u16,
    /// The uid or gid of a named entry; `u32::MAX` otherwise.
    pub id: u32,
}

/// The ACL of a directory its owner uses fully (`rwx`) and that each of `uids` may only search
/// (`--x`); the owning group and everybody else get nothing. Entries are in the kernel's order
/// (by tag, then id), duplicates removed.
pub fn search_only(uids: &[u32]) -> Vec<AclEntry> {
    let mut named: Vec<u32> = uids.to_vec();
    named.sort_unstable();
    named.dedup();
    let mut v = vec![AclEntry { tag: USER_OBJ, perm: 7, id: UNDEFINED_ID }];
    v.extend(named.into_iter().map(|uid| AclEntry { tag: USER, perm: 1, id: uid }));
    v.push(AclEntry { tag: GROUP_OBJ, perm: 0, id: UNDEFINED_ID });
    v.push(AclEntry { tag: MASK, perm: 1, id: UNDEFINED_ID });
    v.push(AclEntry { tag: OTHER, perm: 0, id: UNDEFINED_ID });
    v
}

/// The attribute value of `entries`: a little-endian version word, then per entry the tag and
/// permissions (16 bits each) and the id (32 bits).
pub fn encode(entries: &[AclEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 8 * entries.len());
    out.extend_from_slice(&VERSION.to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.tag.to_le_bytes());
        out.extend_from_slice(&e.perm.to_le_bytes());
        out.extend_from_slice(&e.id.to_le_bytes());
    }
    out
}

/// Decode an attribute value; `None` when it is not version 2 or not whole entries.
pub fn decode(bytes: &[u8]) -> Option<Vec<AclEntry>> {
    if bytes.len() < 4 || (bytes.len() - 4) % 8 != 0 || bytes[..4] != VERSION.to_le_bytes() {
        return None;
    }
    Some(
        bytes[4..]
            .chunks_exact(8)
            .map(|c| AclEntry {
                tag: u16::from_le_bytes([c[0], c[1]]),
                perm: u16::from_le_bytes([c[2], c[3]]),
                id: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect(),
    )
}

/// Whether the filesystem took an ACL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Written.
    Done,
    /// The filesystem (or its mount options) has no ACLs: nothing was written.
    Unsupported,
}

/// Set `p`'s access ACL to `entries` (not following a symlink).
pub fn set(p: &Path, entries: &[AclEntry]) -> Result<Applied> {
    match xattr::set(p, XATTR, &encode(entries)) {
        Ok(()) => Ok(Applied::Done),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(Applied::Unsupported),
        Err(e) => Err(Error::io(p, e)),
    }
}

/// `p`'s access ACL: `Ok(None)` when it has none beyond its mode bits, `Err` naming an
/// undecodable value. A filesystem without ACLs has none.
pub fn get(p: &Path) -> Result<Option<Vec<AclEntry>>> {
    match xattr::get(p, XATTR) {
        Ok(None) => Ok(None),
        Ok(Some(v)) => {
            decode(&v).map(Some).ok_or_else(|| Error::Corrupt(format!("{}: undecodable access ACL", p.display())))
        }
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(None),
        Err(e) => Err(Error::io(p, e)),
    }
}

/// Whether `p`'s filesystem has ACLs (reading the attribute is not refused as unsupported).
pub fn supported(p: &Path) -> Result<bool> {
    match xattr::get(p, XATTR) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(false),
        Err(e) => Err(Error::io(p, e)),
    }
}

/// Remove `p`'s access ACL (nothing to do when it has none). The mode keeps the ACL's mask as
/// its group bits: chmod afterwards.
pub fn remove(p: &Path) -> Result<()> {
    match xattr::remove(p, XATTR) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENODATA) | Some(libc::EOPNOTSUPP)) => Ok(()),
        Err(e) => Err(Error::io(p, e)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn encodes_the_kernel_format_and_back() {
        let acl = search_only(&[40002, 40001, 40001]);
        let bytes = encode(&acl);
        assert_eq!(bytes.len(), 4 + 6 * 8);
        assert_eq!(&bytes[..4], &[2, 0, 0, 0]);
        // USER_OBJ rwx, undefined id.
        assert_eq!(&bytes[4..12], &[1, 0, 7, 0, 0xff, 0xff, 0xff, 0xff]);
        // The first named user, --x.
        assert_eq!(&bytes[12..20], &[2, 0, 1, 0, 0x41, 0x9c, 0, 0]);
        assert_eq!(decode(&bytes).unwrap(), acl);
        assert!(decode(&bytes[..7]).is_none());
        assert!(decode(&[1, 0, 0, 0]).is_none());
    }

    #[test]
    fn the_kernel_takes_it_and_shows_the_mask_as_group_bits() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("d");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        let acl = search_only(&[40001]);
        if set(&d, &acl).unwrap() == Applied::Unsupported {
            eprintln!("skipped: this filesystem has no ACLs");
            return;
        }
        assert_eq!(get(&d).unwrap().unwrap(), acl);
        assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o7777, 0o710);
        remove(&d).unwrap();
        assert_eq!(get(&d).unwrap(), None);
        assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o7777, 0o710);
    }
}
