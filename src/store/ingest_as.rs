//! Ingest of a directory with another user's permissions (the service's `POST /v1/snapshots`
//! for a caller other than root): a thread that has become the user writes the tree as a tar
//! stream, which is ingested as any archive is. So the caller ingests nothing it could not read
//! itself, and what it wrote is checked as hostile input, as an archive it sent would be.
//!
//! What differs from [`Store::ingest_dir`]: modification times are whole seconds (the tar
//! headers'), hard links are stored as separate files (content is shared all the same), and
//! sockets are refused.

use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::store::ingest::{IngestOptions, IngestReport, NoProgress};
use crate::store::Store;
use crate::sys::Owner;

/// The stream's reading end, which fails instead of ending when the writer failed: a tree cut
/// short must never be ingested as if it were whole.
struct Checked {
    pipe: std::os::unix::net::UnixStream,
    failed: Arc<Mutex<Option<String>>>,
    done: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Read for Checked {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.pipe.read(buf)?;
        if n == 0 {
            if let Some(h) = self.done.take() {
                let r = h.join().unwrap_or_else(|_| Err(std::io::Error::other("the reading thread panicked")));
                if let Err(e) = r {
                    self.failed.lock().expect("not poisoned").get_or_insert(e.to_string());
                }
            }
            if let Some(why) = self.failed.lock().expect("not poisoned").clone() {
                return Err(std::io::Error::other(why));
            }
        }
        Ok(n)
    }
}

/// Append the tree at `src` (not following symlinks), each error naming its path.
fn append_tree(b: &mut tar::Builder<impl std::io::Write>, src: &Path) -> std::io::Result<()> {
    for ent in walkdir::WalkDir::new(src).follow_links(false).sort_by_file_name() {
        let ent = ent.map_err(|e| {
            let at = e.path().map(|p| p.display().to_string()).unwrap_or_default();
            let kind = e.io_error().map_or(std::io::ErrorKind::Other, |io| io.kind());
            std::io::Error::new(kind, format!("{at}: {e}"))
        })?;
        let rel = ent.path().strip_prefix(src).unwrap_or(ent.path());
        let name = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
        b.append_path_with_name(ent.path(), name)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", ent.path().display())))?;
    }
    Ok(())
}

impl Store {
    /// Ingest directory `dir` as `who` (with `groups`) would read it. An entry the user may not
    /// read refuses the whole ingest ([`Error::Forbidden`]), publishing nothing.
    pub fn ingest_dir_as(
        &self,
        who: Owner,
        groups: Vec<u32>,
        dir: &Path,
        opts: &IngestOptions,
    ) -> Result<IngestReport> {
        let (reader, writer) = std::os::unix::net::UnixStream::pair().map_err(|e| Error::io(dir, e))?;
        let failed = Arc::new(Mutex::new(None));
        let src = dir.to_path_buf();
        let slot = failed.clone();
        let uid = who.uid;
        let done = crate::sys::creds::run_as(who, groups, move || {
            let mut b = tar::Builder::new(writer);
            b.follow_symlinks(false);
            b.mode(tar::HeaderMode::Complete);
            let r = match std::fs::symlink_metadata(&src) {
                Ok(md) if md.is_dir() => append_tree(&mut b, &src).and_then(|()| b.finish()),
                Ok(_) => Err(std::io::Error::other(format!("{}: not a directory", src.display()))),
                Err(e) => Err(std::io::Error::new(e.kind(), format!("{}: {e}", src.display()))),
            };
            if let Err(e) = &r {
                let why = if e.kind() == std::io::ErrorKind::PermissionDenied {
                    format!("{e} (read as uid {uid})")
                } else {
                    e.to_string()
                };
                slot.lock().expect("not poisoned").get_or_insert(why);
            }
        })
        .map_err(|e| Error::io(dir, e))?;
        // The thread's own failure to become the user comes back through `done`.
        let input = Checked { pipe: reader, failed: failed.clone(), done: Some(done) };
        let source = format!("{} (as uid {uid})", dir.display());
        let r = self.ingest_tar(std::io::BufReader::new(input), &source, opts, &NoProgress);
        if let Some(why) = failed.lock().expect("not poisoned").clone() {
            return Err(if why.contains("ermission denied") {
                Error::Forbidden(format!("ingest of {}: {why}", dir.display()))
            } else {
                Error::BadInput(format!("ingest of {}: {why}", dir.display()))
            });
        }
        r
    }
}
