//! `execroot remote ls REGISTRY/REPO`: the repository's tags and the snapshots they name.

use std::sync::atomic::Ordering;

use serde::Serialize;

use crate::error::Result;
use crate::hash::Hash;
use crate::remote::reference::Reference;
use crate::remote::registry::{ClientOptions, Registry};
use crate::remote::wire;

/// One tag of a repository.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteTag {
    /// The tag.
    pub tag: String,
    /// Its registry manifest's digest (null when it vanished while listing).
    pub digest: Option<String>,
    /// The snapshot it names (null for a manifest that is not an execroot snapshot).
    pub snapshot: Option<Hash>,
    /// The snapshot's parents, bottom first.
    pub parents: Vec<Hash>,
    /// When the snapshot was created (from the manifest), if recorded.
    pub created: Option<String>,
    /// Packs its stack uses.
    pub packs: u64,
    /// Their total size in bytes.
    pub pack_bytes: u64,
    /// Why the tag is not a readable execroot snapshot, if it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `remote ls`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteList {
    /// `REGISTRY/REPO`.
    pub repository: String,
    /// Every tag, by name.
    pub tags: Vec<RemoteTag>,
    /// HTTP requests sent.
    pub requests: u64,
}

/// List the tags of `repo` (a tag or digest in it is ignored) with their snapshots.
pub fn list(repo: &Reference, opts: &ClientOptions) -> Result<RemoteList> {
    let reg = Registry::connect(repo, opts)?;
    let mut tags = Vec::new();
    for tag in reg.tags()? {
        let mut t = RemoteTag {
            tag: tag.clone(),
            digest: None,
            snapshot: None,
            parents: vec![],
            created: None,
            packs: 0,
            pack_bytes: 0,
            error: None,
        };
        match reg.get_manifest(&tag)? {
            None => t.error = Some("the tag vanished while listing".into()),
            Some((bytes, digest)) => {
                t.digest = Some(digest);
                match wire::parse(&bytes, &format!("{}:{tag}", reg.name())) {
                    Ok(p) => {
                        t.snapshot = Some(p.id);
                        t.parents = p.parents;
                        t.created = p.annotations.get(wire::ANN_CREATED).filter(|c| wire::is_time(c)).cloned();
                        t.packs = p.packs.len() as u64;
                        // Sizes as the registry claims them: never trusted to add up.
                        t.pack_bytes = p.packs.iter().fold(0u64, |t, d| t.saturating_add(d.size));
                    }
                    Err(e) => t.error = Some(e.to_string()),
                }
            }
        }
        tags.push(t);
    }
    Ok(RemoteList { repository: reg.name().to_string(), tags, requests: reg.counters.requests.load(Ordering::Relaxed) })
}
