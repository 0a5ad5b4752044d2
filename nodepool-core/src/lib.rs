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
//!
//! The entry points: a [`Launcher`](launcher::Launcher) answers node requests
//! from the providers it is given; a [`Builder`](builder::Builder) builds and
//! uploads images; a [`Client`](client::Client) is the requestor's side.
//! A request through the client, on the in-memory store, with a launcher
//! (not shown) fulfilling it elsewhere:
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use nodepool_core::client::{Client, RequestOptions};
//! use nodepool_core::store::{MemoryStore, NodeStore};
//!
//! # async fn demo() -> nodepool_core::Result<()> {
//! let store: Arc<dyn NodeStore> = Arc::new(MemoryStore::new());
//! let client = Client::new(store, "my-ci");
//! let request = client
//!     .submit(&["ubuntu-noble"], &RequestOptions::default())
//!     .await?;
//! let nodes = client
//!     .wait_fulfilled(&request, Duration::from_secs(600))
//!     .await?;
//! for node in nodes.nodes() {
//!     println!("{} is at {:?}", node.id, node.interface_ip);
//! }
//! client.release(nodes).await?;
//! # Ok(())
//! # }
//! ```
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
pub mod retry;
pub mod scheduler;
pub mod secret;
pub mod status;
pub mod store;
pub mod tasks;
pub mod time;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::{Error, ErrorKind, Result};
pub use secret::Secret;
