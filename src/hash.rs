//! Content hashes: blake3, 32 bytes, shown as 64 lowercase hex digits.

use std::fmt;
use std::io::Read;

use crate::error::{Error, Result};

/// A blake3 digest naming an object (file content) or a snapshot (canonical manifest).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// Hash a byte slice.
    pub fn of(bytes: &[u8]) -> Hash {
        Hash(*blake3::hash(bytes).as_bytes())
    }

    /// Lowercase hex form (64 characters).
    pub fn to_hex(&self) -> String {
        // Without a formatter per byte: paths and records render hashes on every create.
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(DIGITS[usize::from(b >> 4)] as char);
            s.push(DIGITS[usize::from(b & 15)] as char);
        }
        s
    }

    /// Parse exactly 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Hash> {
        if s.len() != 64 || !is_lower_hex(s) {
            return Err(Error::BadInput(format!("not a blake3 hash (64 lowercase hex digits): {s:?}")));
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(chunk).expect("checked ascii");
            out[i] = u8::from_str_radix(hex, 16).expect("checked hex");
        }
        Ok(Hash(out))
    }
}

/// True when `s` is non-empty and made of lowercase hex digits only.
pub fn is_lower_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", &self.to_hex()[..12])
    }
}

impl serde::Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Hash, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Hash::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// Size of the buffer used for streaming reads: large enough for blake3's SIMD paths.
pub const STREAM_BUF: usize = 256 * 1024;

/// Hash a reader to its end, streaming, and return the digest and byte count.
pub fn hash_reader(mut r: impl Read) -> std::io::Result<(Hash, u64)> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; STREAM_BUF];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((Hash(*hasher.finalize().as_bytes()), total))
}
