//! Writing files without allocating their holes.
//!
//! A 5 GiB file holding 4 KiB of data should cost 4 KiB in the store, in a layer and in a
//! checkout. Two tools keep it so: [`SparseWriter`] writes a stream but leaves every all-zero
//! block as a hole (objects are written through it, so an object is sparse wherever its content
//! is zero, whether or not the source was), and [`copy`] copies a file's data extents only, found
//! with `SEEK_DATA`/`SEEK_HOLE`, with `copy_file_range(2)` so the bytes stay in the kernel. On a
//! filesystem without holes both simply write zeros.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

/// Granularity of hole detection: the page and block size of every filesystem that matters.
const BLOCK: usize = 4096;

/// A writer that turns all-zero blocks into holes. Call [`SparseWriter::finish`] at the end:
/// trailing holes exist only once the length is set.
pub struct SparseWriter<'a> {
    file: &'a File,
    pos: u64,
}

impl<'a> SparseWriter<'a> {
    /// Write into `file` from offset 0 (the file should be empty).
    pub fn new(file: &'a File) -> SparseWriter<'a> {
        SparseWriter { file, pos: 0 }
    }

    /// Set the file's length to what was written; returns it.
    pub fn finish(self) -> io::Result<u64> {
        self.file.set_len(self.pos)?;
        Ok(self.pos)
    }
}

impl Write for SparseWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Runs of non-zero blocks are written with one call each.
        let mut i = 0;
        while i < buf.len() {
            let mut j = i;
            while j < buf.len() {
                let end = (j + BLOCK).min(buf.len());
                if buf[j..end].iter().all(|&b| b == 0) {
                    break;
                }
                j = end;
            }
            if j > i {
                self.file.write_all_at(&buf[i..j], self.pos + i as u64)?;
            }
            // Skip the zero blocks that follow.
            while j < buf.len() {
                let end = (j + BLOCK).min(buf.len());
                if !buf[j..end].iter().all(|&b| b == 0) {
                    break;
                }
                j = end;
            }
            i = j;
        }
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Copy `len` bytes of `src` into the empty file `dst`, data extents only; holes stay holes.
/// The data moves inside the kernel (`copy_file_range`, or `sendfile` where that cannot work
/// between the two files, as from an overlay to another filesystem), never through a buffer
/// here.
pub fn copy(src: &File, dst: &File, len: u64) -> io::Result<()> {
    use rustix::fs::SeekFrom;
    let mut off = 0u64;
    let mut written = 0u64;
    while off < len {
        let data = match rustix::fs::seek(src, SeekFrom::Data(off)) {
            Ok(d) => d,
            // No data at or after `off`: the rest is a hole.
            Err(rustix::io::Errno::NXIO) => break,
            // No SEEK_DATA here: everything is data.
            Err(_) => off,
        };
        let hole = match rustix::fs::seek(src, SeekFrom::Hole(data)) {
            Ok(h) => h.min(len),
            Err(_) => len,
        };
        copy_range(src, dst, data, hole.saturating_sub(data))?;
        written = written.max(hole);
        off = hole.max(data + 1);
    }
    // A file ending in a hole gets its length from the truncate alone.
    if written < len {
        dst.set_len(len)?;
    }
    Ok(())
}

/// Copy `n` bytes at offset `at` from `src` to the same offset of `dst`.
fn copy_range(src: &File, dst: &File, at: u64, n: u64) -> io::Result<()> {
    let (mut i, mut o, mut left) = (at, at, n);
    while left > 0 {
        let chunk = left.min(1 << 30) as usize;
        match rustix::fs::copy_file_range(src, Some(&mut i), dst, Some(&mut o), chunk) {
            Ok(0) => return Err(shrank()),
            Ok(k) => left -= k as u64,
            Err(rustix::io::Errno::INTR) => {}
            // Not between these files (other filesystems on old kernels, overlayfs to
            // another filesystem, some special files).
            Err(_) => return copy_by_sending(src, dst, i, left),
        }
    }
    Ok(())
}

/// `sendfile` from offset `at` of `src` to the same offset of `dst` (which it writes at its
/// file position, so that is set first); by reading where even that cannot work.
fn copy_by_sending(src: &File, dst: &File, at: u64, mut left: u64) -> io::Result<()> {
    rustix::fs::seek(dst, rustix::fs::SeekFrom::Start(at))?;
    let mut i = at;
    while left > 0 {
        let chunk = left.min(1 << 30) as usize;
        match rustix::fs::sendfile(dst, src, Some(&mut i), chunk) {
            Ok(0) => return Err(shrank()),
            Ok(k) => left -= k as u64,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return copy_by_reading(src, dst, i, left),
        }
    }
    Ok(())
}

fn copy_by_reading(src: &File, dst: &File, mut at: u64, mut left: u64) -> io::Result<()> {
    let mut buf = vec![0u8; left.min(1 << 20) as usize];
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let k = src.read_at(&mut buf[..want], at)?;
        if k == 0 {
            return Err(shrank());
        }
        dst.write_all_at(&buf[..k], at)?;
        at += k as u64;
        left -= k as u64;
    }
    Ok(())
}

fn shrank() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being copied")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn rw(p: std::path::PathBuf) -> File {
        std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(p).unwrap()
    }

    #[test]
    fn zeros_become_holes_and_stay_holes() {
        let t = tempfile::tempdir().unwrap();
        let a = rw(t.path().join("a"));
        let mut w = SparseWriter::new(&a);
        let mut content = vec![0u8; 64 << 20];
        content[10 << 20] = 7;
        content[(64 << 20) - 1] = 9;
        for c in content.chunks(1 << 20) {
            w.write_all(c).unwrap();
        }
        assert_eq!(w.finish().unwrap(), 64 << 20);
        let md = a.metadata().unwrap();
        assert_eq!(md.len(), 64 << 20);
        // Two 4 KiB blocks of data, give or take the filesystem's own granularity.
        assert!(md.blocks() * 512 < 1 << 20, "{} bytes allocated", md.blocks() * 512);
        let b = rw(t.path().join("b"));
        copy(&a, &b, md.len()).unwrap();
        assert_eq!(std::fs::read(t.path().join("b")).unwrap(), content);
        assert!(b.metadata().unwrap().blocks() * 512 < 1 << 20);
        // A trailing hole.
        let c = rw(t.path().join("c"));
        let mut w = SparseWriter::new(&c);
        w.write_all(&[1u8; 10]).unwrap();
        w.write_all(&vec![0u8; 1 << 20]).unwrap();
        w.finish().unwrap();
        let d = rw(t.path().join("d"));
        copy(&c, &d, (1 << 20) + 10).unwrap();
        assert_eq!(std::fs::read(t.path().join("d")).unwrap(), std::fs::read(t.path().join("c")).unwrap());
    }
}
