//! Lossless JSON encoding of raw paths, and their escaped form for messages ([`show`]).
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

/// Longest raw path or target [`show`] prints in full; longer ones are cut in the middle.
const SHOW_MAX: usize = 160;

/// Printable form of raw bytes (a path, a target, a name from an archive) for messages: quoted,
/// with control characters, quotes, backslashes and invalid UTF-8 escaped (`\n`, `\u{1b}`,
/// `\xff`), so that no message echoes raw bytes to a terminal. More than 160 bytes are shown as
/// their start and end with the length between.
pub fn show(path: &[u8]) -> String {
    if path.len() > SHOW_MAX {
        let (head, tail) = (&path[..SHOW_MAX / 2], &path[path.len() - SHOW_MAX / 4..]);
        return format!("{}...({} bytes)...{}", escape(head, true), path.len(), escape(tail, true));
    }
    escape(path, true)
}

/// Escape everything a terminal could act on: control characters (C0, DEL, C1), Unicode format
/// characters such as bidirectional overrides, and invalid UTF-8 (as `\xNN`). With `quote`,
/// the result is in double quotes and `"` and `\` are escaped too; without it, newlines and
/// tabs are kept (for multi-line text such as a tool's stderr).
pub fn escape(bytes: &[u8], quote: bool) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    if quote {
        out.push('"');
    }
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' | '\t' if !quote => out.push(c),
                '"' | '\\' if quote => {
                    out.push('\\');
                    out.push(c);
                }
                c if needs_escape(c) => out.extend(c.escape_default()),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    if quote {
        out.push('"');
    }
    out
}

/// Control characters, and the format characters that reorder or hide text (U+200B..U+200F,
/// U+202A..U+202E, U+2060..U+2069, U+FEFF).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_escapes_what_a_terminal_acts_on() {
        assert_eq!(show(b"plain/name"), "\"plain/name\"");
        assert_eq!(show(b"a\x1b[2J\n\"\\\xff"), "\"a\\u{1b}[2J\\n\\\"\\\\\\xff\"");
        assert_eq!(show("x\u{202e}y".as_bytes()), "\"x\\u{202e}y\"");
        assert_eq!(escape(b"two\nlines\t\x07", false), "two\nlines\t\\u{7}");
        let long = show(&[b'd'; 5000]);
        assert!(long.len() < 200 && long.contains("(5000 bytes)"), "{long}");
    }
}
