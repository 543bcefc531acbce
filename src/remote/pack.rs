//! Packs: append-only blobs of objects, one zstd frame per object.
//!
//! A pack is the concatenation of its objects' zstd frames, nothing else (so it is itself a
//! valid zstd stream); where each frame starts is recorded only in the index blob of the push
//! that added the pack ([`crate::remote::index`]). One frame per object lets a pull fetch any
//! object alone with a byte range. A pack is closed once it reaches [`TARGET`] bytes, or
//! before a frame that would take it past [`MAX`] when it already holds [`MIN`]; only the last
//! pack of a push is smaller than that, and an object whose frame alone is larger than [`MAX`]
//! gets a pack of its own. Packs are deterministic (objects in the push's order, fixed zstd
//! level), so a push that is run again after an interruption makes the same packs, finds those
//! that arrived with a HEAD, and does not send them again.

use rayon::prelude::*;

use crate::error::{Error, IoContext, Result};
use crate::hash::Hash;
use crate::store::Store;

/// A pack is closed once it holds this many bytes (16 MiB).
pub const TARGET: usize = 16 << 20;
/// Smallest pack closed early to stay under [`MAX`] (8 MiB).
pub const MIN: usize = 8 << 20;
/// Largest pack, unless one object's frame alone is larger (32 MiB).
pub const MAX: usize = 32 << 20;
/// zstd level of every frame (fixed: packs must come out the same on a rerun).
pub const LEVEL: i32 = 3;
/// Objects are read and compressed in parallel batches of about this many raw bytes.
const BATCH: u64 = 64 << 20;

/// Where one object is in its pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packed {
    /// The object's blake3.
    pub hash: Hash,
    /// Offset of its frame in the pack.
    pub offset: u64,
    /// Length of its frame.
    pub clen: u64,
    /// Length of the object.
    pub rlen: u64,
}

/// A finished pack.
pub struct Pack {
    /// The pack's bytes.
    pub bytes: Vec<u8>,
    /// Its sha256 digest.
    pub digest: String,
    /// Its objects, in pack order.
    pub objects: Vec<Packed>,
}

/// Read, check and compress the store's objects `objects` (hash, size) in that order, handing
/// each finished pack to `sink` as soon as it is closed (so at most a pack and a batch are held
/// in memory). An object whose content is not its name is refused as corrupt: a push never
/// spreads a damaged object.
pub fn build(store: &Store, objects: &[(Hash, u64)], mut sink: impl FnMut(Pack) -> Result<()>) -> Result<()> {
    let mut cur = Pack { bytes: Vec::new(), digest: String::new(), objects: Vec::new() };
    let mut i = 0;
    while i < objects.len() {
        let mut j = i;
        let mut raw = 0u64;
        while j < objects.len() && (j == i || raw + objects[j].1 <= BATCH) {
            raw += objects[j].1;
            j += 1;
        }
        let frames: Vec<(Hash, u64, Vec<u8>)> =
            objects[i..j].par_iter().map(|(h, _)| compress_object(store, h)).collect::<Result<_>>()?;
        for (hash, rlen, frame) in frames {
            let full = cur.bytes.len() >= TARGET || (cur.bytes.len() >= MIN && cur.bytes.len() + frame.len() > MAX);
            if full {
                sink(finish(std::mem::replace(
                    &mut cur,
                    Pack { bytes: Vec::new(), digest: String::new(), objects: Vec::new() },
                )))?;
            }
            cur.objects.push(Packed { hash, offset: cur.bytes.len() as u64, clen: frame.len() as u64, rlen });
            cur.bytes.extend_from_slice(&frame);
        }
        i = j;
    }
    if !cur.objects.is_empty() {
        sink(finish(cur))?;
    }
    Ok(())
}

fn finish(mut p: Pack) -> Pack {
    p.digest = crate::remote::wire::sha256_digest(&p.bytes);
    p
}

fn compress_object(store: &Store, h: &Hash) -> Result<(Hash, u64, Vec<u8>)> {
    let path = store.object_path(h);
    let data = std::fs::read(&path).at(&path)?;
    if Hash::of(&data) != *h {
        return Err(Error::Corrupt(format!(
            "{}: object does not match its name; run `execroot verify --repair` before pushing",
            path.display()
        )));
    }
    let frame = zstd::bulk::compress(&data, LEVEL).at(&path)?;
    Ok((*h, data.len() as u64, frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_are_frames_that_decode_alone_and_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s")).unwrap();
        let lease = crate::store::Lease::new(&store).unwrap();
        let mut objs = Vec::new();
        for i in 0..20u32 {
            let data = format!("object {i} ").repeat(i as usize * 100 + 1).into_bytes();
            let h = Hash::of(&data);
            store.put_bytes(&lease, &h, &data).unwrap();
            objs.push((h, data.len() as u64));
        }
        let mut packs = Vec::new();
        build(&store, &objs, |p| {
            packs.push(p);
            Ok(())
        })
        .unwrap();
        assert_eq!(packs.len(), 1);
        let p = &packs[0];
        for o in &p.objects {
            let frame = &p.bytes[o.offset as usize..(o.offset + o.clen) as usize];
            let data = zstd::bulk::decompress(frame, o.rlen as usize).unwrap();
            assert_eq!(Hash::of(&data), o.hash);
        }
        let all = zstd::stream::decode_all(&p.bytes[..]).unwrap();
        assert_eq!(all.len() as u64, objs.iter().map(|o| o.1).sum::<u64>());
    }
}
