//! The wire format: how snapshots are laid out in an OCI registry (docs/format.md, "Wire
//! format (OCI)").
//!
//! One OCI image manifest per snapshot, with execroot's own `artifactType` and the empty
//! config. Its layers, in this order: the compressed snapshot manifest of every snapshot of its
//! stack (bottom first, each annotated with its id), then every index blob and every pack blob
//! the stack's objects are found in. Listing everything it uses makes the registry's own
//! garbage collection keep exactly what tagged snapshots need.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::error::{Error, Result};
use crate::hash::Hash;

/// Media type of the registry manifest (an OCI image manifest).
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// `artifactType` of every execroot snapshot manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.execroot.snapshot.v1";
/// The empty config's media type, digest and content (`{}`), as the OCI spec defines them.
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// Content of the empty config blob.
pub const EMPTY_CONTENT: &[u8] = b"{}";
/// Layer: a snapshot manifest (the store's encoding, docs/format.md), one zstd frame.
pub const SNAPSHOT_MEDIA_TYPE: &str = "application/vnd.execroot.manifest.v1+zstd";
/// Layer: an index blob ([`crate::remote::index`]).
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.execroot.index.v1";
/// Layer: a pack of objects ([`crate::remote::pack`]), concatenated zstd frames.
pub const PACK_MEDIA_TYPE: &str = "application/vnd.execroot.pack.v1+zstd";
/// Annotation of a snapshot-manifest layer, and of the registry manifest: the snapshot id.
pub const ANN_SNAPSHOT: &str = "dev.execroot.snapshot";
/// Annotation of the registry manifest: its snapshot's parents, comma-separated, bottom first.
pub const ANN_PARENTS: &str = "dev.execroot.parents";
/// Annotation of the registry manifest: the registry manifests of its parents (comma-separated
/// `sha256:` digests, bottom first), each pushed by digest.
pub const ANN_PARENT_MANIFESTS: &str = "dev.execroot.parent-manifests";
/// Annotation of a snapshot-manifest layer: its `meta.json` labels, as a JSON object.
pub const ANN_LABELS: &str = "dev.execroot.labels";
/// Standard annotation: when the snapshot was created (RFC 3339).
pub const ANN_CREATED: &str = "org.opencontainers.image.created";
/// Registries refuse manifests larger than this (distribution's limit).
pub const MAX_MANIFEST: usize = 4 << 20;

/// `sha256:HEX` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&sha2::Sha256::digest(bytes)))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An OCI content descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// What the blob is.
    pub media_type: String,
    /// Its sha256 digest.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// Annotations (omitted when empty).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// A descriptor of `bytes` with media type `media_type`.
    pub fn of(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: sha256_digest(bytes),
            size: bytes.len() as u64,
            annotations: BTreeMap::new(),
        }
    }
}

/// An OCI image manifest, with the fields execroot writes and reads.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: u32,
    /// [`MANIFEST_MEDIA_TYPE`].
    #[serde(default)]
    pub media_type: Option<String>,
    /// [`ARTIFACT_TYPE`] for execroot's.
    #[serde(default)]
    pub artifact_type: Option<String>,
    /// The empty config.
    pub config: Descriptor,
    /// Snapshot manifests, indexes, packs.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// Snapshot id, parents, parent manifests, created.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The descriptor of the empty config blob.
pub fn empty_config() -> Descriptor {
    Descriptor::of(EMPTY_MEDIA_TYPE, EMPTY_CONTENT)
}

/// One snapshot-manifest layer, decoded from its descriptor.
#[derive(Clone, Debug)]
pub struct SnapshotLayer {
    /// The snapshot id it claims (checked against the blob when fetched).
    pub id: Hash,
    /// The layer's descriptor.
    pub desc: Descriptor,
}

/// What a registry manifest says, parsed and checked as untrusted input.
#[derive(Clone, Debug)]
pub struct Parsed {
    /// The snapshot this manifest is for (the last of `snapshots`).
    pub id: Hash,
    /// Parent ids (from the annotation).
    pub parents: Vec<Hash>,
    /// The stack's snapshot manifests, bottom first.
    pub snapshots: Vec<SnapshotLayer>,
    /// Index blobs.
    pub indexes: Vec<Descriptor>,
    /// Pack blobs.
    pub packs: Vec<Descriptor>,
    /// Annotations of the registry manifest.
    pub annotations: BTreeMap<String, String>,
}

impl ImageManifest {
    /// Encode as the registry stores it; refuses one over [`MAX_MANIFEST`].
    pub fn encode(&self) -> Result<Vec<u8>> {
        let bytes = serde_json::to_vec(self).expect("serializable");
        if bytes.len() > MAX_MANIFEST {
            return Err(Error::BadInput(format!(
                "the registry manifest would be {} bytes, over the registries' 4 MiB limit ({} layers)",
                bytes.len(),
                self.layers.len()
            )));
        }
        Ok(bytes)
    }
}

/// Parse a registry manifest fetched as `what` (for errors): refuses one that is not an
/// execroot snapshot ([`Error::BadInput`], naming its type) and one whose layers do not make
/// sense ([`Error::Corrupt`]).
pub fn parse(bytes: &[u8], what: &str) -> Result<Parsed> {
    let not_ours = |t: &str| {
        Error::BadInput(format!(
            "{what} is not an execroot snapshot ({t}; execroot pushes artifactType {ARTIFACT_TYPE})"
        ))
    };
    let corrupt = |why: String| Error::Corrupt(format!("{what}: {why}"));
    let m: ImageManifest = serde_json::from_slice(bytes).map_err(|_| not_ours("not an OCI image manifest"))?;
    if m.artifact_type.as_deref() != Some(ARTIFACT_TYPE) {
        return Err(not_ours(&match &m.artifact_type {
            Some(t) => format!("artifactType {}", crate::pathenc::show(t.as_bytes())),
            None => format!("no artifactType, config {}", crate::pathenc::show(m.config.media_type.as_bytes())),
        }));
    }
    if m.media_type.as_deref().is_some_and(|t| t != MANIFEST_MEDIA_TYPE) {
        let t = m.media_type.as_deref().unwrap_or_default();
        return Err(corrupt(format!("mediaType {} is not {MANIFEST_MEDIA_TYPE}", crate::pathenc::show(t.as_bytes()))));
    }
    let mut snapshots = Vec::new();
    let mut indexes = Vec::new();
    let mut packs = Vec::new();
    for d in &m.layers {
        if !crate::remote::reference::is_sha256_digest(&d.digest) {
            return Err(corrupt(format!("layer digest {:?} is not a sha256 digest", d.digest)));
        }
        match d.media_type.as_str() {
            SNAPSHOT_MEDIA_TYPE => {
                let id = d
                    .annotations
                    .get(ANN_SNAPSHOT)
                    .and_then(|s| Hash::from_hex(s).ok())
                    .ok_or_else(|| corrupt(format!("snapshot layer {} has no valid {ANN_SNAPSHOT}", d.digest)))?;
                snapshots.push(SnapshotLayer { id, desc: d.clone() });
            }
            INDEX_MEDIA_TYPE => indexes.push(d.clone()),
            PACK_MEDIA_TYPE => packs.push(d.clone()),
            other => {
                return Err(corrupt(format!("unknown layer media type {}", crate::pathenc::show(other.as_bytes()))))
            }
        }
    }
    let id = m
        .annotations
        .get(ANN_SNAPSHOT)
        .and_then(|s| Hash::from_hex(s).ok())
        .ok_or_else(|| corrupt(format!("no valid {ANN_SNAPSHOT} annotation")))?;
    if snapshots.last().map(|s| s.id) != Some(id) {
        return Err(corrupt(format!("its last snapshot layer is not snapshot {id}")));
    }
    let parents = split_list(m.annotations.get(ANN_PARENTS))
        .map(|s| Hash::from_hex(s).map_err(|_| corrupt(format!("bad parent id {s:?}"))))
        .collect::<Result<Vec<_>>>()?;
    Ok(Parsed { id, parents, snapshots, indexes, packs, annotations: m.annotations })
}

/// Whether `s` can be the creation-time annotation: RFC 3339 characters, 64 at most (a
/// registry's value is shown and stored; anything else is refused or dropped).
pub fn is_time(s: &str) -> bool {
    s.len() <= 64 && s.chars().all(|x| x.is_ascii_alphanumeric() || "-:.+".contains(x))
}

/// The items of a comma-separated annotation.
pub fn split_list(v: Option<&String>) -> impl Iterator<Item = &str> {
    v.map(|s| s.as_str()).unwrap_or("").split(',').filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_the_specs() {
        assert_eq!(empty_config().digest, "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
    }

    #[test]
    fn foreign_manifests_are_refused_as_bad_input() {
        let image = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:00","size":1},"layers":[]}"#;
        let e = parse(image, "r/x:y").unwrap_err();
        assert!(matches!(&e, Error::BadInput(m) if m.contains("not an execroot snapshot")), "{e}");
        assert!(matches!(parse(b"junk", "r/x:y"), Err(Error::BadInput(_))));
    }
}
