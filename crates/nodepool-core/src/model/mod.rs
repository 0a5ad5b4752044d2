//! The records nodepool keeps in its store, with the JSON upstream nodepool 11
//! writes to ZooKeeper.
//!
//! NOTE: skeleton; the wire-exact model (golden tests, unknown keys kept,
//! Python-compatible serialisation) lives in the submodules.

mod component;
mod image;
mod node;
mod request;

pub use component::*;
pub use image::*;
pub use node::*;
pub use request::*;
