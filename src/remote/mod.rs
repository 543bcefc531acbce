//! Snapshots beyond one machine: push and pull them through an OCI registry.
//!
//! Roots stay local; snapshots travel. A pushed snapshot is one OCI image manifest of
//! execroot's own `artifactType` whose layers are its stack's snapshot manifests, the index
//! blobs and the packs its objects are in ([`wire`]; docs/format.md, "Wire format (OCI)").
//! A push sends only the objects the repository lacks (learned from the indexes of the tags
//! already there), HEADs each pack before sending it and writes the manifest last; a pull
//! fetches only the objects the store lacks, whole packs or byte ranges, checks every object's
//! blake3 before it enters the store and publishes with the store's own rules.
//!
//! This layer sits above `store` and below the front ends: the CLI's `push`, `pull` and
//! `remote ls` print the typed reports returned here.

pub mod auth;
pub mod index;
pub mod list;
pub mod pack;
pub mod pull;
pub mod push;
pub mod reference;
pub mod registry;
pub mod wire;

pub use list::{RemoteList, RemoteTag};
pub use pull::{PullOptions, PullReport};
pub use push::{PushReport, PushedSnapshot};
pub use reference::Reference;
pub use registry::ClientOptions;

use std::collections::{BTreeMap, HashMap};

use crate::error::{Error, Result};
use crate::hash::Hash;
use index::{Index, Location};
use registry::Registry;
use wire::Descriptor;

/// Largest index blob accepted (1 GiB: some 18 million objects).
pub const MAX_INDEX: u64 = 1 << 30;

/// Fetch and decode the index blob `d` describes; one that claims more than [`MAX_INDEX`]
/// bytes is refused before anything is fetched.
pub(crate) fn fetch_index(reg: &Registry, d: &Descriptor) -> Result<Index> {
    if d.size > MAX_INDEX {
        return Err(Error::Corrupt(format!(
            "index {} of {} claims {} bytes, over the {MAX_INDEX} accepted",
            d.digest,
            reg.name(),
            d.size
        )));
    }
    Index::decode(&reg.get_blob(&d.digest, Some(d.size))?, &d.digest)
}

/// What a repository already holds, learned from the registry manifests of its tags: where
/// each object is (index digest, location) and the descriptors of the blobs that say so.
#[derive(Default)]
pub(crate) struct Known {
    /// Object -> (index that lists it, where it is).
    pub objects: HashMap<Hash, (String, Location)>,
    /// Index and pack descriptors by digest.
    pub blobs: BTreeMap<String, Descriptor>,
    /// Tags whose manifest is not an execroot snapshot, or whose index is damaged: (tag, why).
    pub skipped: Vec<(String, String)>,
}

impl Known {
    /// Learn from every tag of `reg`'s repository. An index is fetched once however many tags
    /// list it; an object counts only in a pack that the same registry manifest lists.
    pub fn learn(reg: &Registry) -> Result<Known> {
        let mut k = Known::default();
        let mut loaded: HashMap<String, Index> = HashMap::new();
        let mut budget = MAX_INDEX;
        for tag in reg.tags()? {
            let Some((bytes, _)) = reg.get_manifest(&tag)? else { continue };
            let p = match wire::parse(&bytes, &format!("{}:{tag}", reg.name())) {
                Ok(p) => p,
                Err(e) => {
                    k.skipped.push((tag, e.to_string()));
                    continue;
                }
            };
            let packs: BTreeMap<&str, &Descriptor> = p.packs.iter().map(|d| (d.digest.as_str(), d)).collect();
            // A damaged index costs re-sending what it lists, not every push to the repository:
            // its tag is skipped (and reported), as a foreign manifest is.
            let mut damaged = None;
            for d in &p.indexes {
                if loaded.contains_key(&d.digest) {
                    continue;
                }
                // What a push learns is held at once: past one index budget, later tags are
                // not learned from (their objects may be sent again; nothing is wrong).
                if d.size > budget {
                    damaged = Some(format!("not read: the indexes of the tags before it use up {MAX_INDEX} bytes"));
                    break;
                }
                budget -= d.size;
                match fetch_index(reg, d) {
                    Ok(idx) => {
                        loaded.insert(d.digest.clone(), idx);
                    }
                    Err(e @ Error::Corrupt(_)) => {
                        damaged = Some(e.to_string());
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if let Some(why) = damaged {
                k.skipped.push((tag, why));
                continue;
            }
            for d in &p.indexes {
                k.blobs.entry(d.digest.clone()).or_insert_with(|| d.clone());
                for (h, loc) in loaded[&d.digest].locations() {
                    if let Some(pd) = packs.get(loc.pack.as_str()) {
                        k.blobs.entry(pd.digest.clone()).or_insert_with(|| (*pd).clone());
                        k.objects.entry(h).or_insert((d.digest.clone(), loc));
                    }
                }
            }
        }
        Ok(k)
    }
}
