//! Who may reach a root, and nobody else: the modes of `roots/<id>/` (docs/format.md, "Modes
//! and ownership").
//!
//! A root's directory belongs to the store owner, mode 0700, so its owner can never write
//! `state.json`, the work directories or sub-mount bookkeeping in it (a forged record would make
//! root mount or delete a host path). When the root's owner is someone else, a POSIX access ACL
//! grants that uid search only (`user:<uid>:--x`, mask `--x`), enough to walk to the working
//! directory (`merged/`, `tree/`, `wt/`) but not to list or change anything beside it. A worktree
//! in its default place also needs its repository's owner, who runs git there. Where the
//! filesystem has no ACLs, the directory's group becomes the owner's group with mode 0710, and
//! the root's warnings say so: every member of that group may then search it too.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::backend::BackendState;
use crate::error::{Error, IoContext, Result};
use crate::sys::acl::{self, Applied};
use crate::sys::Owner;
use crate::Store;

use super::RootRecord;

/// The users besides the store owner that must reach `cwd` (the root's owner; for a worktree
/// in the root's directory, its repository's owner too), as decided from the record. A
/// repository that cannot be read any more adds no one.
pub fn reachers(rec: &RootRecord, dir: &Path) -> Vec<Owner> {
    let mut who = vec![rec.owner];
    let wt = match &rec.backend {
        BackendState::Worktree(w) => Some(w),
        BackendState::GitOverlay(g) => Some(&g.worktree),
        _ => None,
    };
    if let Some(w) = wt {
        if w.worktree_path.starts_with(dir) {
            if let Ok(md) = std::fs::metadata(&w.repo) {
                who.push(Owner { uid: md.uid(), gid: md.gid() });
            }
        }
    }
    who
}

/// Fail as bad input unless `who` can search every existing directory from `/` down to
/// `target` (judged by mode bits, against its uid, gid and supplementary groups: an ACL on the
/// way is not read, docs/roots.md). Directories below the last existing one are execroot's to
/// make, with modes it chooses.
pub fn check_reachable(target: &Path, who: Owner) -> Result<()> {
    if who.uid == 0 {
        return Ok(());
    }
    let existing = target.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    let existing = existing.canonicalize().at(existing)?;
    let groups = who.groups();
    let mut chain: Vec<&Path> = existing.ancestors().collect();
    chain.reverse();
    for d in chain {
        let md = std::fs::metadata(d).at(d)?;
        if !who.may_search(&md, &groups) {
            return Err(Error::BadInput(format!(
                "owner uid {} cannot reach {}: {} (mode {:04o}, owner {}:{}) is not searchable by it; \
                 open it to that user or put the store elsewhere",
                who.uid,
                target.display(),
                d.display(),
                md.mode() & 0o7777,
                md.uid(),
                md.gid()
            )));
        }
    }
    Ok(())
}

/// The uids an ACL on a root's directory names: `reachers` other than the store owner.
fn named(store_owner: Owner, reachers: &[Owner]) -> Vec<u32> {
    let mut v: Vec<u32> = reachers.iter().map(|o| o.uid).filter(|&u| u != store_owner.uid).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Give root directory `dir` its modes: the store owner's, 0700, plus search for `reachers`
/// (by ACL, or by group where the filesystem has none: then a warning saying what is exposed).
pub fn secure_root_dir(store: &Store, dir: &Path, reachers: &[Owner]) -> Result<Option<String>> {
    let base = store.owner()?;
    let uids = named(base, reachers);
    let md = std::fs::symlink_metadata(dir).at(dir)?;
    if (md.uid(), md.gid()) != (base.uid, base.gid) {
        std::os::unix::fs::lchown(dir, Some(base.uid), Some(base.gid)).at(dir)?;
    }
    // The mode first: chmod rewrites an ACL's mask, and removing an ACL leaves the mode as is.
    acl::remove(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).at(dir)?;
    if uids.is_empty() {
        return Ok(None);
    }
    match acl::set(dir, &acl::search_only(&uids))? {
        Applied::Done => Ok(None),
        Applied::Unsupported => {
            let gid = reachers.iter().find(|o| o.uid != base.uid).map_or(base.gid, |o| o.gid);
            std::os::unix::fs::lchown(dir, Some(base.uid), Some(gid)).at(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o710)).at(dir)?;
            Ok(Some(format!(
                "the store's filesystem has no ACLs: {} is opened to group {gid} (mode 0710), so every member \
                 of that group can enter the root's working directory, not only its owner",
                dir.display()
            )))
        }
    }
}

/// What is wrong with the modes of root directory `dir` for `reachers`, if anything: an owner
/// other than the store owner, mode bits other than 0700 (0710 with the ACL), or an ACL other
/// than exactly the search grant (the group fallback counts only where ACLs are unsupported).
pub fn root_dir_problem(store: &Store, dir: &Path, reachers: &[Owner]) -> Result<Option<String>> {
    let base = store.owner()?;
    let uids = named(base, reachers);
    let md = std::fs::symlink_metadata(dir).at(dir)?;
    let mode = md.mode() & 0o7777;
    let found = acl::get(dir)?;
    let mut wrong = Vec::new();
    if md.uid() != base.uid {
        wrong.push(format!("owned by uid {}, not the store owner (uid {})", md.uid(), base.uid));
    }
    let describe_acl = |a: &Option<Vec<acl::AclEntry>>| match a {
        None => "none".to_string(),
        Some(v) => format!("{} entries", v.len()),
    };
    if uids.is_empty() {
        if mode != 0o700 || found.is_some() {
            wrong.push(format!("mode {mode:04o}, ACL {}: must be mode 0700 without ACL", describe_acl(&found)));
        }
    } else {
        let want = acl::search_only(&uids);
        let ok_acl = found.as_ref() == Some(&want) && mode == 0o710;
        let fallback = found.is_none()
            && mode == 0o710
            && !acl::supported(dir)?
            && reachers.iter().any(|o| o.uid != base.uid && o.gid == md.gid());
        if !ok_acl && !fallback {
            let users: Vec<String> = uids.iter().map(|u| format!("user:{u}:--x")).collect();
            wrong.push(format!(
                "mode {mode:04o}, ACL {}: must be mode 0700 plus ACL {} with mask --x (shown as mode 0710)",
                describe_acl(&found),
                users.join(",")
            ));
        }
    }
    Ok((!wrong.is_empty()).then(|| wrong.join("; ")))
}
