//! # nodepool-embedded
//!
//! The embedded durable store of nodepool-rs: a
//! [`NodeStore`](nodepool_core::store::NodeStore) kept in one SQLite file,
//! the default when the configuration names no `zookeeper-servers`. One
//! machine, no server to run. Several processes open the same file at once
//! (the launcher, the builder, the `nodepool` CLI, a client submitting
//! requests) and see each other's writes, locks and sessions.
//!
//! ```no_run
//! use nodepool_core::model::Node;
//! use nodepool_core::store::NodeStore;
//! use nodepool_embedded::EmbeddedStore;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = EmbeddedStore::open("/var/lib/nodepool/nodepool.db")?;
//! let id = store.create_node(&Node::default()).await?;
//! assert!(store.get_node(&id).await?.is_some());
//! store.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Durability
//! The file is in WAL mode with `synchronous=NORMAL`: a write has returned
//! only after its transaction is in the write-ahead log, so a `kill -9` of
//! any process at any moment loses nothing acknowledged, and a restart
//! resumes every request and node. Only an OS crash or power loss can lose
//! the last commits; [`Durability::PowerLoss`] (`synchronous=FULL`) closes
//! that gap at the cost of an fsync per write.
//!
//! # Sessions
//! Each [`EmbeddedStore`] is a session: a row with the process's host, pid
//! and a heartbeat refreshed every second by the process's worker thread.
//! Locks, node requests and component registrations belong to a session.
//! A session ends with `close`, when its last handle is dropped, or when
//! any process finds it dead: its process is gone from this host (checked
//! by pid and process start time) or its heartbeat is older than
//! [`EmbeddedOptions::session_timeout`]. A session of a live process that
//! was expired (the process stalled too long) is renewed on its next use,
//! as a ZooKeeper client gets a new session; its old locks are lost.
//!
//! # Watches
//! Every write appends rows to a `changes` log in its own transaction.
//! Each process tails the log: at once after its own writes, and when
//! `PRAGMA data_version` says another process committed (polled every
//! [`EmbeddedOptions::poll_interval`]). Rows older than
//! [`EmbeddedOptions::change_retention`] are pruned; a process that fell
//! behind the pruning gets [`StoreEvent::Resync`](nodepool_core::store::StoreEvent::Resync).
//!
//! # Threads
//! SQLite calls block, so each process runs them on one worker thread with
//! one connection; the async methods send it a job and await the answer.
//! Several sessions of one process ([`EmbeddedStore::session`]) share the
//! worker.
#![deny(missing_docs)]
#![warn(unreachable_pub, missing_debug_implementations)]
#![forbid(unsafe_code)]

mod changes;
mod codec;
mod error;
mod handle;
mod locks;
mod node_store;
mod records;
mod schema;
mod session;
mod worker;

pub use error::{Error, Result};
pub use handle::{EmbeddedOptions, EmbeddedStore};
pub use schema::Durability;
