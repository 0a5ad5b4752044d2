//! # nodepool-zk
//!
//! The ZooKeeper [`NodeStore`](nodepool_core::store::NodeStore) of
//! nodepool-rs, wire-compatible with upstream nodepool 11: the same znodes,
//! the same JSON, and locks taken the way kazoo's `Lock` recipe takes them,
//! so that our launcher and builder, upstream's daemons and CLI, and a Zuul
//! scheduler can share one ZooKeeper cluster.
//!
//! Changes are watched with persistent recursive watches (ZooKeeper 3.6 or
//! later), not by polling. An expired session is replaced by a new one and
//! announced as [`StoreEvent::Resync`](nodepool_core::store::StoreEvent::Resync).
//!
//! ```no_run
//! use nodepool_core::store::NodeStore;
//! use nodepool_zk::{ZkConfig, ZkStore, ZkTls};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ZkConfig::new(["zk1.example.org:2281"]).with_tls(ZkTls {
//!     ca: "/etc/nodepool/zk-ca.pem".into(),
//!     cert: "/etc/nodepool/zk-client.pem".into(),
//!     key: "/etc/nodepool/zk-client.key".into(),
//! });
//! let store = ZkStore::connect(config).await?;
//! for node in store.list_nodes().await? {
//!     println!("{} {:?}", node.id, node.state);
//! }
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![warn(unreachable_pub, missing_debug_implementations)]
#![forbid(unsafe_code)]

mod config;
mod error;
mod lock;
mod ops;
mod paths;
mod session;
mod store;
mod tracked;

pub use config::{ZkConfig, ZkTls, DEFAULT_SESSION_TIMEOUT};
pub use error::{Error, Result};
pub use store::ZkStore;

/// The backend name [`ZkStore`] reports.
pub const ZOOKEEPER: &str = "zookeeper";
