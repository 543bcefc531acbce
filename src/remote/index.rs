//! Index blobs: where each object of a push's packs is.
//!
//! One index per push, covering only the packs that push added. Encoding (little-endian):
//! `MAGIC`, `u32` pack count, each pack's sha256 (32 raw bytes), `u64` entry count, then per
//! object, in strictly increasing blake3 order: blake3 (32 bytes), `u32` pack number (position in
//! the pack list), `u64` offset of its frame, `u64` frame length, `u64` object length. Decoding
//! treats the blob as hostile: every count, order and number is checked.

use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::remote::pack::Packed;

/// First bytes of an index blob; the last byte is the encoding version.
pub const MAGIC: &[u8; 8] = b"EXRIDX\x00\x01";
const ENTRY: usize = 32 + 4 + 8 + 8 + 8;

/// One object's place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The pack's digest (`sha256:...`).
    pub pack: String,
    /// Offset of the object's frame in the pack.
    pub offset: u64,
    /// Frame length.
    pub clen: u64,
    /// Object length.
    pub rlen: u64,
}

/// A decoded index: its packs and every object in them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Index {
    /// The packs' digests, in the blob's order.
    pub packs: Vec<String>,
    /// (object, pack number, offset, frame length, object length), sorted by object.
    pub entries: Vec<(Hash, u32, u64, u64, u64)>,
}

impl Index {
    /// The index of `packs` (digest, objects).
    pub fn of(packs: &[(String, Vec<Packed>)]) -> Index {
        let mut entries = Vec::new();
        for (n, (_, objs)) in packs.iter().enumerate() {
            for o in objs {
                entries.push((o.hash, n as u32, o.offset, o.clen, o.rlen));
            }
        }
        entries.sort_by_key(|e| e.0);
        // A push packs each object once; keep the first should a caller repeat one.
        entries.dedup_by(|a, b| a.0 == b.0);
        Index { packs: packs.iter().map(|p| p.0.clone()).collect(), entries }
    }

    /// Every object with its location.
    pub fn locations(&self) -> impl Iterator<Item = (Hash, Location)> + '_ {
        self.entries.iter().map(|&(h, n, offset, clen, rlen)| {
            (h, Location { pack: self.packs[n as usize].clone(), offset, clen, rlen })
        })
    }

    /// The blob's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(8 + 4 + 32 * self.packs.len() + 8 + ENTRY * self.entries.len());
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for p in &self.packs {
            b.extend_from_slice(&digest_bytes(p).expect("pack digests are sha256"));
        }
        b.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for &(h, n, o, c, r) in &self.entries {
            b.extend_from_slice(&h.0);
            b.extend_from_slice(&n.to_le_bytes());
            b.extend_from_slice(&o.to_le_bytes());
            b.extend_from_slice(&c.to_le_bytes());
            b.extend_from_slice(&r.to_le_bytes());
        }
        b
    }

    /// Decode and check an index blob (`what` names it in errors, which are [`Error::Corrupt`]).
    pub fn decode(b: &[u8], what: &str) -> Result<Index> {
        let bad = |why: &str| Error::Corrupt(format!("index {what}: {why}"));
        let mut r = Reader { b, at: 0 };
        if r.take(8).ok_or_else(|| bad("truncated"))? != MAGIC {
            return Err(bad("not an execroot index (bad magic or version)"));
        }
        let np = u32::from_le_bytes(r.array().ok_or_else(|| bad("truncated"))?) as usize;
        if np.checked_mul(32).is_none_or(|n| n > b.len()) {
            return Err(bad("pack count exceeds the blob"));
        }
        let mut packs = Vec::with_capacity(np);
        for _ in 0..np {
            let d: [u8; 32] = r.array().ok_or_else(|| bad("truncated"))?;
            packs.push(format!("sha256:{}", Hash(d).to_hex()));
        }
        let ne = u64::from_le_bytes(r.array().ok_or_else(|| bad("truncated"))?);
        if ne.checked_mul(ENTRY as u64) != Some((b.len() - r.at) as u64) {
            return Err(bad("entry count does not match the blob's length"));
        }
        let mut entries = Vec::with_capacity(ne as usize);
        for _ in 0..ne {
            let h = Hash(r.array().expect("length checked"));
            let n = u32::from_le_bytes(r.array().expect("length checked"));
            let o = u64::from_le_bytes(r.array().expect("length checked"));
            let c = u64::from_le_bytes(r.array().expect("length checked"));
            let l = u64::from_le_bytes(r.array().expect("length checked"));
            if n as usize >= np {
                return Err(bad("an entry names a pack the index does not list"));
            }
            if o.checked_add(c).is_none() || c == 0 {
                return Err(bad("an entry's range is invalid"));
            }
            if entries.last().is_some_and(|p: &(Hash, u32, u64, u64, u64)| p.0 >= h) {
                return Err(bad("entries are not in strictly increasing order"));
            }
            entries.push((h, n, o, c, l));
        }
        Ok(Index { packs, entries })
    }
}

/// The 32 raw bytes of a `sha256:HEX` digest.
pub fn digest_bytes(d: &str) -> Option<[u8; 32]> {
    let h = d.strip_prefix("sha256:")?;
    Hash::from_hex(h).ok().map(|h| h.0)
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).map(|s| s.try_into().expect("length"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_hostile_blobs() {
        let p = |i: u8| Packed { hash: Hash([i; 32]), offset: i as u64 * 10, clen: 10, rlen: 20 };
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let idx = Index::of(&[(a.clone(), vec![p(3), p(1)]), (b.clone(), vec![p(2)])]);
        let bytes = idx.encode();
        let back = Index::decode(&bytes, "t").unwrap();
        assert_eq!(back, idx);
        let locs: Vec<_> = back.locations().map(|(h, l)| (h.0[0], l.pack)).collect();
        assert_eq!(locs, vec![(1, a.clone()), (2, b), (3, a)]);
        assert!(Index::decode(&bytes[..bytes.len() - 1], "t").is_err());
        let mut bad = bytes.clone();
        bad[0] ^= 1;
        assert!(Index::decode(&bad, "t").is_err());
        // An entry naming pack 7 of 2.
        let mut bad = bytes.clone();
        let first_entry = 8 + 4 + 64 + 8;
        bad[first_entry + 32] = 7;
        assert!(matches!(Index::decode(&bad, "t"), Err(Error::Corrupt(_))));
    }
}
