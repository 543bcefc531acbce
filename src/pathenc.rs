//! Lossless JSON encoding of raw paths.
//!
//! A path that is valid UTF-8 is a JSON string. Any other path is an object
//! `{"base64": "<standard base64 of the raw bytes>"}`, so non-UTF-8 names survive a round trip
//! through JSON without ambiguity (a string is never base64).

use base64::Engine;
use serde::{Serialize, Serializer};

/// Raw path bytes that serialize as described in the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathJson(pub Vec<u8>);

impl Serialize for PathJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("base64", &base64::engine::general_purpose::STANDARD.encode(&self.0))?;
                m.end()
            }
        }
    }
}

impl From<&std::path::Path> for PathJson {
    fn from(p: &std::path::Path) -> Self {
        use std::os::unix::ffi::OsStrExt;
        PathJson(p.as_os_str().as_bytes().to_vec())
    }
}
