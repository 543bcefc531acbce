//! execroot: disposable copy-on-write execution roots for agent runs.
//!
//! The library is the product; the `execroot` binary is a thin CLI over it. Vocabulary, used
//! the same way everywhere: a *snapshot* is committed and immutable, a *layer* is a snapshot
//! materialized for mounting, a *root* is active and disposable, a *ref* names a snapshot.
//!
//! - [`store`]: the content-addressed snapshot store (objects, manifests, refs, ingest,
//!   checkout, verify).
//! - [`fixture`]: declarative workload shapes and their deterministic generator.

#![warn(missing_docs)]

pub mod backend;
pub mod bench;
pub mod change;
pub mod cli;
pub mod error;
pub mod fixture;
pub mod hash;
pub mod pathenc;
pub mod policy;
pub mod root;
pub mod store;
pub mod sys;

pub use error::{Error, Result};
pub use hash::Hash;
pub use store::Store;
