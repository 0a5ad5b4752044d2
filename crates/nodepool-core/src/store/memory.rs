//! An in-memory [`NodeStore`](super::NodeStore).

/// An in-memory store: one process, no durability. Sessions share one
/// backend (see [`MemoryStore::session`]).
#[derive(Debug, Default)]
pub struct MemoryStore {}
