//! execroot: disposable copy-on-write execution roots for agent runs.
//!
//! The library is the product; the `execroot` binary is a thin shell over it (its CLI and bench
//! are not part of this API). Vocabulary, used the same way everywhere: a *snapshot* is
//! committed and immutable, a *layer* is a snapshot materialized for mounting, a *root* is
//! active and disposable, a *ref* names a snapshot.
//!
//! Layers of the code, each using only those below it (docs/design.md):
//!
//! 1. [`sys`]: system helpers (mounts, idmapped views, extended attributes, locks, processes,
//!    running git), with [`error`], [`hash`] and [`pathenc`] beside them;
//! 2. [`store`]: the content-addressed snapshot store (objects, manifests, refs, ingest,
//!    layers, checkout, verify, gc given its pins);
//! 3. [`change`]: what a tree changed against its snapshots (diff);
//! 4. [`backend`] and [`policy`]: the ways a root's working directory is made, and which
//!    serves which workload class;
//! 5. [`root`]: roots' records and lifecycle, doctor, commit, export, and the store's deleting
//!    operations with every root pinned;
//! 6. [`remote`]: pushing and pulling snapshots through an OCI registry (above the store).
//!
//! Every operation returns typed values that derive `Serialize`: the CLI prints them as they
//! are with `--json`, and a service can serve them unchanged.

#![warn(missing_docs)]

pub mod backend;
pub mod change;
pub mod error;
pub mod hash;
pub mod pathenc;
pub mod policy;
pub mod remote;
pub mod root;
pub mod store;
pub mod sys;

pub use error::{Error, Result};
pub use hash::Hash;
pub use store::Store;
