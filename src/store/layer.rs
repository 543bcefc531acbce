//! Layers: snapshots materialized as directories that overlayfs can use as lower layers.
//!
//! `layers/<id>/` holds the snapshot's own entries (a base snapshot: the whole tree; a change
//! snapshot: its change, with whiteouts as overlay whiteouts and opaque directories marked with
//! `trusted.overlay.opaque`). Files are hardlinks, so a layer costs directory entries, not data:
//! an entry whose mode is the object mode links the object itself; other modes link a shared
//! per-(content, mode) copy in `variants/<mode>/`. Every inode presents mtime 0, as in OSTree and
//! Nix (a checkout and the copy backend restore real mtimes). When a hardlink count would pass
//! the filesystem's limit (EMLINK), the layer gets a private copy.
//!
//! A layer is built in a lease and renamed into place under a per-layer lock, so concurrent first
//! uses build it once and the others wait; a layer directory that exists is complete. `l/<12 hex>` is a short
//! symlink to it that keeps overlay option strings short.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::{Error, IoContext, Result};
use crate::hash::Hash;
use crate::store::object::{fchmod_and_normalize, OBJECT_MODE};
use crate::store::{rename_noreplace, Lease, Node, Store};

/// Deepest layer stack a root accepts (docs/roots.md): bounded so that the overlay option string
/// stays far below the kernel's page limit.
pub const MAX_STACK: usize = 32;

impl Store {
    /// Directory of materialized layer `id`.
    pub fn layer_dir(&self, id: &Hash) -> PathBuf {
        self.path().join("layers").join(id.to_hex())
    }

    /// Short path of layer `id`, used in overlay options.
    pub fn layer_link(&self, id: &Hash) -> PathBuf {
        self.path().join("l").join(&id.to_hex()[..12])
    }

    /// The layers a stack of snapshots presents, bottom first: each snapshot's parents' layers
    /// (recursively), then its own.
    pub fn layer_stack(&self, snapshots: &[Hash]) -> Result<Vec<Hash>> {
        let mut out = Vec::new();
        for id in snapshots {
            out.extend(self.layer_stack(&self.parents_of(id)?)?);
            out.push(*id);
        }
        if out.len() > MAX_STACK {
            return Err(Error::BadInput(format!(
                "the layer stack is {} deep, over the limit of {MAX_STACK}; flatten it first",
                out.len()
            )));
        }
        Ok(out)
    }

    /// The parents of snapshot `id`, read from the manifest's header alone: creating a root
    /// must not cost a full manifest decode. (A layer is built from a fully validated
    /// manifest; the header of a damaged manifest fails here or there.)
    pub fn parents_of(&self, id: &Hash) -> Result<Vec<Hash>> {
        use std::io::Read;
        let path = self.snapshot_dir(id).join("manifest");
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!("snapshot {id} does not exist")))
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        let short = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => Error::Corrupt(format!("{}: truncated manifest", path.display())),
            _ => Error::io(&path, e),
        };
        let mut head = [0u8; 12];
        f.read_exact(&mut head).map_err(short)?;
        if &head[..8] != crate::store::manifest::MAGIC {
            return Err(Error::Corrupt(format!("{}: not an execroot manifest", path.display())));
        }
        let n = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")) as usize;
        if n > MAX_STACK {
            return Err(Error::Corrupt(format!("{}: {n} parents", path.display())));
        }
        let mut ids = vec![0u8; 32 * n];
        f.read_exact(&mut ids).map_err(short)?;
        Ok(ids.chunks(32).map(|c| Hash(c.try_into().expect("32 bytes"))).collect())
    }

    /// Materialize layer `id` if needed; returns its short path.
    pub fn materialize(&self, id: &Hash) -> Result<PathBuf> {
        let dir = self.layer_dir(id);
        let link = self.layer_link(id);
        if !dir.exists() {
            // Concurrent first uses wait for one builder instead of all building the same layer.
            let _lock = self.named_lock(&format!("layer-{}", &id.to_hex()[..32]))?;
            if dir.exists() {
                return self.materialize(id);
            }
            let m = self.load_manifest(id)?;
            let lease = Lease::new(self)?;
            let staging = lease.temp_path();
            self.build_layer(&m.entries, &staging)?;
            self.top_dir("layers")?;
            crate::sys::failpoint::hit("layer.built");
            rename_noreplace(&staging, &dir)?;
        }
        match std::fs::read_link(&link) {
            Ok(t) if t == dir => {}
            Ok(t) => {
                return Err(Error::Corrupt(format!("{} points at {}, not at layer {id}", link.display(), t.display())))
            }
            Err(_) => {
                let parent = self.top_dir("l")?;
                // Unique per call, not per process: the service's threads share one pid, and
                // one thread's cleanup of a shared name removed another's link before its
                // rename (a create failed with ENOENT on l/<id> under load).
                let tmp = parent.join(format!(
                    ".{}-{}-{:016x}",
                    &id.to_hex()[..12],
                    std::process::id(),
                    rand::random::<u64>()
                ));
                std::os::unix::fs::symlink(&dir, &tmp).at(&tmp)?;
                if !rename_noreplace(&tmp, &link)? {
                    let _ = std::fs::remove_file(&tmp);
                }
            }
        }
        Ok(link)
    }

    /// The shared inode presenting `hash` with permission bits `mode`.
    fn variant(&self, hash: &Hash, mode: u32) -> Result<PathBuf> {
        if mode == OBJECT_MODE {
            return Ok(self.object_path(hash));
        }
        let dir = self.top_dir("variants")?.join(format!("{mode:04o}"));
        let path = dir.join(hash.to_hex());
        if path.exists() {
            return Ok(path);
        }
        std::fs::create_dir_all(&dir).at(&dir)?;
        let src_path = self.object_path(hash);
        let mut src = std::fs::File::open(&src_path).at(&src_path)?;
        let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), rand::random::<u64>()));
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).at(&tmp)?;
        std::io::copy(&mut src, &mut f).at(&tmp)?;
        fchmod_and_normalize(&f, &tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode)).at(&tmp)?;
        drop(f);
        if !rename_noreplace(&tmp, &path)? {
            let _ = std::fs::remove_file(&tmp);
        }
        Ok(path)
    }

    fn build_layer(&self, entries: &[crate::store::Entry], staging: &Path) -> Result<()> {
        let abs = |p: &[u8]| if p.is_empty() { staging.to_path_buf() } else { staging.join(OsStr::from_bytes(p)) };
        for e in entries.iter().filter(|e| e.node.is_dir()) {
            let p = abs(&e.path);
            std::fs::DirBuilder::new().mode(0o700).create(&p).at(&p)?;
            if e.node == Node::OpaqueDir {
                crate::sys::xattr::set(&p, "trusted.overlay.opaque", b"y")?;
            }
        }
        entries.par_iter().filter(|e| !e.node.is_dir()).try_for_each(|e| -> Result<()> {
            let p = abs(&e.path);
            match &e.node {
                Node::File { hash, .. } => {
                    let v = self.variant(hash, e.mode)?;
                    match std::fs::hard_link(&v, &p) {
                        Ok(()) => Ok(()),
                        Err(err) if err.raw_os_error() == Some(libc::EMLINK) => {
                            let mut src = std::fs::File::open(&v).at(&v)?;
                            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&p).at(&p)?;
                            std::io::copy(&mut src, &mut f).at(&p)?;
                            f.set_permissions(std::fs::Permissions::from_mode(e.mode)).at(&p)?;
                            drop(f);
                            crate::store::set_mtime(&p, 0, 0)
                        }
                        Err(err) => Err(Error::io(&p, err)),
                    }
                }
                Node::Symlink { target } => {
                    std::os::unix::fs::symlink(OsStr::from_bytes(target), &p).at(&p)?;
                    crate::store::set_mtime(&p, 0, 0)
                }
                Node::Whiteout => nix::sys::stat::mknod(
                    &p,
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::empty(),
                    nix::sys::stat::makedev(0, 0),
                )
                .at(&p),
                _ => Ok(()),
            }
        })?;
        for e in entries.iter().rev().filter(|e| e.node.is_dir()) {
            let p = abs(&e.path);
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(e.mode)).at(&p)?;
            crate::store::set_mtime(&p, 0, 0)?;
        }
        Ok(())
    }
}
