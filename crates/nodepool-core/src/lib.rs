//! # nodepool-core
//!
//! The model, configuration and traits of nodepool-rs, and the launcher and
//! builder engines written against them. This crate knows no backend: cloud
//! drivers live in `nodepool-drivers`, the ZooKeeper store in `nodepool-zk`,
//! the diskimage-builder image builder in `nodepool-dib`.
//!
//! The four traits:
//! - [`Provider`](provider::Provider): a cloud driver (launch, delete, list,
//!   quota, images).
//! - [`ImageBuilder`](image_builder::ImageBuilder): builds one disk image.
//! - [`NodeStore`](store::NodeStore): where nodes, requests, images, locks and
//!   the component registry live (memory, embedded, ZooKeeper).
//! - [`Scheduler`](scheduler::Scheduler): pure decisions on node requests.
#![deny(missing_docs)]
#![warn(unreachable_pub, missing_debug_implementations)]

pub mod builder;
pub mod client;
pub mod config;
pub mod error;
pub mod image_builder;
pub mod launcher;
pub mod model;
pub mod provider;
pub mod scheduler;
pub mod status;
pub mod store;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::{Error, Result};
