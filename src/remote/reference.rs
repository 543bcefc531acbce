//! Remote references: `REGISTRY/REPO[:TAG]` or `REGISTRY/REPO@sha256:HEX`.
//!
//! The registry is always named (there is no default registry): the first `/`-separated
//! component is the host, with an optional port. The repository follows the distribution
//! spec's grammar (lowercase components of `[a-z0-9]` joined by `.`, `_`, `__` or `-`, separated
//! by `/`); a tag is 1 to 128 of `[A-Za-z0-9_.-]`, not starting with `.` or `-`.

use std::fmt;

use serde::Serialize;

use crate::error::{Error, Result};

/// The tag a push uses when the reference names none.
pub const DEFAULT_TAG: &str = "latest";

/// A parsed remote reference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reference {
    /// Registry host, with its port when given (`127.0.0.1:5000`, `ghcr.io`).
    pub registry: String,
    /// Repository path inside the registry (`team/bases`).
    pub repository: String,
    /// Tag, if one was given.
    pub tag: Option<String>,
    /// Manifest digest (`sha256:...`), if one was given instead of a tag.
    pub digest: Option<String>,
}

impl Reference {
    /// Parse what a user typed. Errors are [`Error::BadInput`] (exit 2).
    pub fn parse(s: &str) -> Result<Reference> {
        let bad = |why: &str| Err(Error::BadInput(format!("invalid remote reference {s:?}: {why}")));
        let Some((registry, rest)) = s.split_once('/') else {
            return bad("expected REGISTRY/REPOSITORY[:TAG]");
        };
        if registry.is_empty() || !registry.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)) {
            return bad("the registry must be a host name or address with an optional :PORT");
        }
        let (path, tag, digest) = if let Some((p, d)) = rest.split_once('@') {
            if !is_sha256_digest(d) {
                return bad("a digest must be sha256: and 64 lowercase hex digits");
            }
            (p, None, Some(d.to_string()))
        } else {
            let last = rest.rsplit('/').next().unwrap_or(rest);
            match last.split_once(':') {
                Some((_, t)) => (&rest[..rest.len() - t.len() - 1], Some(t.to_string()), None),
                None => (rest, None, None),
            }
        };
        if let Some(t) = &tag {
            if !valid_tag(t) {
                return bad("a tag is 1 to 128 of A-Z a-z 0-9 _ . - and does not start with . or -");
            }
        }
        if path.is_empty() || path.len() > 255 || !path.split('/').all(valid_component) {
            return bad("the repository must be lowercase components of a-z 0-9 separated by . _ __ - and /");
        }
        Ok(Reference { registry: registry.to_string(), repository: path.to_string(), tag, digest })
    }

    /// The tag or digest to fetch a manifest by (`latest` when neither was given).
    pub fn reference(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or(DEFAULT_TAG)
    }

    /// `REGISTRY/REPO`, without tag or digest.
    pub fn repo_name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// Whether plain HTTP is allowed for this registry: always for loopback, otherwise only
    /// when the host (with or without its port) is in `insecure`.
    pub fn plain_http(&self, insecure: &[String]) -> bool {
        let host = host_of(&self.registry);
        is_loopback(host) || insecure.iter().any(|i| i == &self.registry || i == host)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(d) = &self.digest {
            write!(f, "@{d}")
        } else if let Some(t) = &self.tag {
            write!(f, ":{t}")
        } else {
            Ok(())
        }
    }
}

/// The host part of `host[:port]` (brackets kept off an IPv6 address).
pub fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.split(':').next().unwrap_or(registry)
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().map(|a| a.is_loopback()).unwrap_or(false)
}

/// `sha256:` followed by 64 lowercase hex digits: the only digests registries accept.
pub fn is_sha256_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| h.len() == 64 && crate::hash::is_lower_hex(h))
}

/// A valid tag (distribution's `[\w][\w.-]{0,127}`).
pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
}

fn valid_component(c: &str) -> bool {
    // [a-z0-9]+ ((\.|_|__|-+)[a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_registry_repo_tag() {
        let r = Reference::parse("127.0.0.1:5000/team/bases:v1").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "team/bases");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.to_string(), "127.0.0.1:5000/team/bases:v1");
        let r = Reference::parse("ghcr.io/a/b").unwrap();
        assert_eq!((r.tag.clone(), r.reference()), (None, "latest"));
        assert!(!r.plain_http(&[]));
        assert!(r.plain_http(&["ghcr.io".into()]));
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("localhost:1/x@{d}")).unwrap();
        assert_eq!(r.reference(), d);
        assert!(r.plain_http(&[]));
        assert!(Reference::parse("[::1]:5000/x:y").unwrap().plain_http(&[]));
    }

    #[test]
    fn refuses_bad_references() {
        for s in ["nohost", "h/", "h/UPPER", "h/a:", "h/a:-x", "h/a@sha256:12", "h/a@md5:00", "h/a//b", "h/-a", "/a"] {
            assert!(matches!(Reference::parse(s), Err(Error::BadInput(_))), "{s}");
        }
    }
}
