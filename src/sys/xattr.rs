//! Extended attributes of a path itself (never of a symlink's target), through the `xattr`
//! crate, which sizes its buffer to the value so long values are never cut short.

use std::path::Path;

use crate::error::{Error, Result};

/// Set attribute `name` on `p` (not following a symlink).
pub fn set(p: &Path, name: &str, value: &[u8]) -> Result<()> {
    xattr::set(p, name, value).map_err(|e| Error::io(p, e))
}

/// Attribute `name` of `p` (not following a symlink): `None` when absent; any other failure
/// (including a filesystem without extended attributes) is an error, never "absent".
pub fn get(p: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    xattr::get(p, name).map_err(|e| Error::io(p, e))
}

/// True when `p` carries `name` with exactly `value`.
pub fn is(p: &Path, name: &str, value: &[u8]) -> Result<bool> {
    Ok(get(p, name)?.as_deref() == Some(value))
}
