//! The [`NodeStore`] trait: where nodes, requests, images, locks and the
//! component registry live.
//!
//! Backends: [`MemoryStore`] (tests, embedding), the embedded durable store
//! (the daemon's default) and the ZooKeeper store (`nodepool-zk`), which is
//! wire-compatible with upstream nodepool.
//!
//! # Sessions
//! A store handle is one *session* (one ZooKeeper session). Locks and
//! ephemeral records (node requests, component registrations) belong to the
//! session that made them and vanish when it ends ([`NodeStore::close`], or
//! expiry). Node records, image builds and uploads are persistent.
//!
//! # Ids
//! - nodes: ten-digit sequence, `"0000000000"` for the first one;
//! - requests: `"<priority>-<ten-digit sequence>"`, e.g. `"100-0000000000"`;
//!   the sequence is shared by all priorities, so ordering by (priority,
//!   relative priority, sequence) is the upstream order;
//! - builds: a 32-character lowercase hex UUID (v4); uploads: a ten-digit
//!   sequence per (image, build, provider).
//!
//! Sequences grow with each create but need not be consecutive (a
//! ZooKeeper sequence number counts every change to the parent's children).
//!
//! # Behaviour
//! - `update_*` of a missing record fails with a not-found error; `delete_*`
//!   of a missing record succeeds.
//! - Reads of a record the store cannot decode fail with [`Error::Corrupt`];
//!   listings log and skip such records instead of failing.
//! - Every change is announced on [`NodeStore::watch`] after it is applied:
//!   a watcher that reads the record after the event sees the change.
//! - Deleting a node, request, build or upload deletes the locks under its
//!   path: their holders' handles are lost and the lock is free again.
//! - After [`NodeStore::close`] (which may be called twice) the session's
//!   other operations fail with [`Error::StoreUnavailable`].
//!
//! # Locks
//! Locks are fair and not reentrant: contenders queue in arrival order, the
//! first holds the lock, and a second attempt by the same session waits like
//! anybody else's. A non-blocking attempt on a held lock, or a blocking one
//! that times out, fails with [`Error::LockHeld`] and leaves the queue; so
//! does a blocking attempt whose future is dropped. Unlocking a lock that
//! was released, deleted or lost with its session fails with
//! [`Error::LockLost`]. Locking a node whose record is gone may fail with
//! [`Error::NodeNotFound`] (the ZooKeeper store does not make the node's
//! znode again just to lock it).

mod memory;

pub use memory::MemoryStore;

use std::collections::HashSet;
use std::fmt::{self, Debug};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::broadcast;

use crate::model::{Component, ImageBuild, ImageUpload, Node, NodeRequest};
#[allow(unused_imports)]
use crate::Error;
use crate::Result;

/// What a lock protects. Paths are those of upstream's ZooKeeper layout.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LockTarget {
    /// `/nodepool/nodes/<id>/lock`
    Node(String),
    /// `/nodepool/requests-lock/<id>`
    Request(String),
    /// `/nodepool/images/<image>/builds/lock`: building an image.
    ImageBuilds(String),
    /// `/nodepool/images/<image>/builds/<build>/lock`
    Build {
        /// Image name.
        image: String,
        /// Build id.
        build: String,
    },
    /// `/nodepool/images/<image>/builds/<build>/providers/<provider>/images/lock`:
    /// uploading a build to a provider.
    ProviderUploads {
        /// Image name.
        image: String,
        /// Build id.
        build: String,
        /// Provider name.
        provider: String,
    },
    /// `/nodepool/images/<image>/builds/<build>/providers/<provider>/images/<upload>/lock`
    Upload {
        /// Image name.
        image: String,
        /// Build id.
        build: String,
        /// Provider name.
        provider: String,
        /// Upload id.
        upload: String,
    },
    /// `/nodepool/coordination/locks/<name>`: a lock of nodepool-rs's own
    /// that launchers sharing a store coordinate with (the `min-ready`
    /// leader). Upstream reads nothing under `/nodepool/coordination`.
    Coordination(String),
}

impl LockTarget {
    /// The upstream ZooKeeper path of this lock.
    pub fn path(&self) -> String {
        match self {
            LockTarget::Node(id) => format!("/nodepool/nodes/{id}/lock"),
            LockTarget::Request(id) => format!("/nodepool/requests-lock/{id}"),
            LockTarget::ImageBuilds(image) => format!("/nodepool/images/{image}/builds/lock"),
            LockTarget::Build { image, build } => {
                format!("/nodepool/images/{image}/builds/{build}/lock")
            }
            LockTarget::ProviderUploads {
                image,
                build,
                provider,
            } => {
                format!("/nodepool/images/{image}/builds/{build}/providers/{provider}/images/lock")
            }
            LockTarget::Upload {
                image,
                build,
                provider,
                upload,
            } => format!(
                "/nodepool/images/{image}/builds/{build}/providers/{provider}/images/{upload}/lock"
            ),
            LockTarget::Coordination(name) => format!("{COORDINATION_LOCK_ROOT}/{name}"),
        }
    }

    /// The lock whose upstream path is `path` (the inverse of
    /// [`LockTarget::path`]); `None` for any other path.
    pub fn from_path(path: &str) -> Option<Self> {
        let parts: Vec<&str> = path.strip_prefix("/nodepool/")?.split('/').collect();
        let owned = |s: &str| s.to_owned();
        match parts.as_slice() {
            ["nodes", id, "lock"] => Some(LockTarget::Node(owned(id))),
            ["requests-lock", id] => Some(LockTarget::Request(owned(id))),
            ["coordination", "locks", name] => Some(LockTarget::Coordination(owned(name))),
            ["images", image, "builds", "lock"] => Some(LockTarget::ImageBuilds(owned(image))),
            ["images", image, "builds", build, "lock"] => Some(LockTarget::Build {
                image: owned(image),
                build: owned(build),
            }),
            ["images", image, "builds", build, "providers", provider, "images", "lock"] => {
                Some(LockTarget::ProviderUploads {
                    image: owned(image),
                    build: owned(build),
                    provider: owned(provider),
                })
            }
            ["images", image, "builds", build, "providers", provider, "images", upload, "lock"] => {
                Some(LockTarget::Upload {
                    image: owned(image),
                    build: owned(build),
                    provider: owned(provider),
                    upload: owned(upload),
                })
            }
            _ => None,
        }
    }
}

impl fmt::Display for LockTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

/// Where [`LockTarget::Coordination`] locks live.
pub const COORDINATION_LOCK_ROOT: &str = "/nodepool/coordination/locks";

/// The version of an admission counter, read by
/// [`NodeStore::admission_token`] before counting what a provider (or a
/// tenant) uses, and checked by [`NodeStore::create_nodes_admitted`]: a node
/// is created only if no other admission under the same keys happened in
/// between (optimistic concurrency). This is how launchers sharing a store
/// never overrun a shared limit: see doc/architecture.md, "Several
/// launchers on one provider".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AdmissionToken {
    /// The counter's key (`provider:<name>`, `tenant:<name>`).
    pub key: String,
    /// Its version when read; `-1` when it was never bumped.
    pub version: i64,
}

/// How to take a lock.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LockOptions {
    /// Wait for the lock (up to `timeout`), or fail at once with
    /// [`Error::LockHeld`] when it is taken.
    pub blocking: bool,
    /// Longest wait when blocking; `None` waits forever.
    pub timeout: Option<Duration>,
    /// Who holds it (written as the contender's data, as kazoo does).
    pub identifier: Option<String>,
}

impl LockOptions {
    /// Fail at once if the lock is taken.
    pub fn try_once() -> Self {
        Self::default()
    }

    /// Wait up to `timeout`.
    pub fn wait(timeout: Duration) -> Self {
        Self {
            blocking: true,
            timeout: Some(timeout),
            identifier: None,
        }
    }
}

/// A held lock. Give it back with [`NodeStore::unlock`]; it also ends with
/// the session that took it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LockHandle {
    /// What it protects.
    pub target: LockTarget,
    /// The backend's name for this holder (the contender znode's name).
    pub contender: String,
}

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Change {
    /// Created or updated.
    Put,
    /// Deleted.
    Deleted,
}

/// A change announced by [`NodeStore::watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// A node record changed.
    Node {
        /// Node id.
        id: String,
        /// How.
        change: Change,
    },
    /// A node request changed.
    Request {
        /// Request id.
        id: String,
        /// How.
        change: Change,
    },
    /// A lock was taken or released.
    Lock {
        /// What it protects.
        target: LockTarget,
        /// Taken (`Put`) or released (`Deleted`).
        change: Change,
    },
    /// Something under `/nodepool/images/<image>` changed (builds, uploads,
    /// pause flag, build request).
    Image {
        /// Image name.
        image: String,
    },
    /// A component registration changed.
    Component {
        /// Kind ("launcher", "builder", "pool", ...).
        kind: String,
    },
    /// Events may have been missed (lag, reconnect): re-read everything.
    Resync,
}

/// Where nodepool keeps its shared state. See the module docs for the
/// contract; `nodepool_core::testing::store_suite` checks it.
#[async_trait]
pub trait NodeStore: Send + Sync + Debug + 'static {
    /// Backend name ("memory", "embedded", "zookeeper").
    fn backend(&self) -> &'static str;

    // --- nodes ---

    /// Store a new node and return its sequence id. Sets nothing else.
    async fn create_node(&self, node: &Node) -> Result<String>;
    /// One node.
    async fn get_node(&self, id: &str) -> Result<Option<Node>>;
    /// Replace an existing node's record ([`Error::NodeNotFound`] if missing).
    async fn update_node(&self, node: &Node) -> Result<()>;
    /// Delete a node record (and its lock path).
    async fn delete_node(&self, id: &str) -> Result<()>;
    /// Every node, in id order; undecodable records are skipped.
    async fn list_nodes(&self) -> Result<Vec<Node>>;
    /// The ids of every node entry now, read from the store itself (no
    /// cache): on ZooKeeper one listing of names, no records. An id may
    /// name an entry that holds no record (see `purge_empty_nodes`).
    async fn node_ids(&self) -> Result<Vec<String>>;
    /// The current version of admission counter `key` (made on first use).
    /// Read it *before* counting usage; see [`AdmissionToken`].
    async fn admission_token(&self, key: &str) -> Result<AdmissionToken>;
    /// Create `nodes` (each as [`NodeStore::create_node`]; ids in the same
    /// order) and bump every counter of `tokens`, all in one atomic step,
    /// only if none of the counters moved since it was read; otherwise
    /// create nothing and fail with [`Error::VersionConflict`] naming the
    /// counter that moved.
    async fn create_nodes_admitted(
        &self,
        nodes: &[Node],
        tokens: &[AdmissionToken],
    ) -> Result<Vec<String>>;
    /// Delete node entries that hold no record (upstream's
    /// `_cleanupEmptyNodes`): a ZooKeeper node znode left empty by a lock
    /// taken on a deleted node (kazoo makes the path). Returns how many were
    /// deleted. Stores that cannot hold such entries keep this default,
    /// which does nothing.
    async fn purge_empty_nodes(&self) -> Result<usize> {
        Ok(0)
    }
    /// Delete request lock entries whose request is gone (upstream's
    /// `_cleanupNodeRequestLocks`): on ZooKeeper a `/nodepool/requests-lock/<id>`
    /// znode outlives its request when the requestor deletes only the
    /// request (Zuul does) or the request vanishes with its session. Only
    /// entries older than `min_age` and held by nobody are deleted. Returns
    /// how many were. Stores whose locks go with their last contender keep
    /// this default, which does nothing.
    async fn purge_stale_request_locks(&self, min_age: Duration) -> Result<usize> {
        let _ = min_age;
        Ok(0)
    }

    // --- node requests ---

    /// Store a new request, ephemeral to this session, under `priority`
    /// (three digits, "100" by default); returns its id.
    async fn create_request(&self, request: &NodeRequest, priority: &str) -> Result<String>;
    /// One request.
    async fn get_request(&self, id: &str) -> Result<Option<NodeRequest>>;
    /// Replace an existing request ([`Error::RequestNotFound`] if missing).
    async fn update_request(&self, request: &NodeRequest) -> Result<()>;
    /// Delete a request (and its lock).
    async fn delete_request(&self, id: &str) -> Result<()>;
    /// Every request, in id order; undecodable records are skipped.
    async fn list_requests(&self) -> Result<Vec<NodeRequest>>;

    // --- images ---

    /// Names of the images that have any record.
    async fn list_images(&self) -> Result<Vec<String>>;
    /// Store a new build of `image`; returns its id. Builds read back
    /// carry their `id` and `image_name`.
    async fn create_build(&self, image: &str, build: &ImageBuild) -> Result<String>;
    /// One build.
    async fn get_build(&self, image: &str, build_id: &str) -> Result<Option<ImageBuild>>;
    /// Replace an existing build record.
    async fn update_build(&self, image: &str, build: &ImageBuild) -> Result<()>;
    /// Delete a build record and everything under it (uploads, locks).
    async fn delete_build(&self, image: &str, build_id: &str) -> Result<()>;
    /// Builds of `image`.
    async fn list_builds(&self, image: &str) -> Result<Vec<ImageBuild>>;
    /// Store a new upload of a build to `provider`; returns its id. The
    /// stored record carries its image, build and provider names.
    async fn create_upload(
        &self,
        image: &str,
        build_id: &str,
        provider: &str,
        upload: &ImageUpload,
    ) -> Result<String>;
    /// Replace an existing upload record (located by its image, build,
    /// provider and id fields).
    async fn update_upload(&self, upload: &ImageUpload) -> Result<()>;
    /// Delete an upload record.
    async fn delete_upload(
        &self,
        image: &str,
        build_id: &str,
        provider: &str,
        upload_id: &str,
    ) -> Result<()>;
    /// Uploads of a build, for every provider.
    async fn list_uploads(&self, image: &str, build_id: &str) -> Result<Vec<ImageUpload>>;
    /// Set or clear the pause flag of an image.
    async fn set_image_paused(&self, image: &str, paused: bool) -> Result<()>;
    /// Whether the image is paused.
    async fn image_paused(&self, image: &str) -> Result<bool>;
    /// Ask for a build of `image` (`request-build`), or withdraw the request.
    async fn set_build_requested(&self, image: &str, requested: bool) -> Result<()>;
    /// Whether a build of `image` is requested.
    async fn build_requested(&self, image: &str) -> Result<bool>;

    // --- component registry ---

    /// Register (or update) a component, ephemeral to this session, under
    /// `/nodepool/components/<kind>/`. The ZooKeeper backend writes it as
    /// upstream does, an ephemeral sequential `<name><ten-digit seq>`, and
    /// lists it under `name`. Updating an existing registration replaces its
    /// data; it stays with the session that made it.
    async fn register_component(&self, kind: &str, name: &str, component: &Component)
        -> Result<()>;
    /// Remove a registration.
    async fn unregister_component(&self, kind: &str, name: &str) -> Result<()>;
    /// Registered components of `kind`, with their `kind` and `name` set.
    async fn list_components(&self, kind: &str) -> Result<Vec<Component>>;

    // --- locks ---

    /// Take a lock. Locks exclude each other across sessions and within one;
    /// see the module docs for waiting and failures.
    async fn lock(&self, target: &LockTarget, options: &LockOptions) -> Result<LockHandle>;
    /// Release a lock; releasing one that was lost fails with [`Error::LockLost`].
    async fn unlock(&self, handle: &LockHandle) -> Result<()>;
    /// The identifiers of the current holder and waiters, holder first.
    async fn lock_contenders(&self, target: &LockTarget) -> Result<Vec<String>>;

    // --- watches and session ---

    /// Changes, as they are applied. A receiver that lags gets
    /// [`StoreEvent::Resync`] semantics (`RecvError::Lagged`).
    fn watch(&self) -> broadcast::Receiver<StoreEvent>;
    /// End this session: release its locks, drop its ephemeral records.
    async fn close(&self) -> Result<()>;
}

/// A shared store.
pub type DynNodeStore = dyn NodeStore;

/// A store shared between tasks.
pub type SharedStore = Arc<dyn NodeStore>;

/// How many lock reads [`locked_nodes`] keeps in flight.
const LOCK_READS_IN_FLIGHT: usize = 32;

/// The ids among `ids` whose node lock has contenders: the "locked" column
/// of `nodepool list` and `/node-list`. The locks are read
/// 32 at a time (one after the other, 10,000 nodes
/// took seconds on ZooKeeper); a lock that cannot be read (its node just
/// went) counts as free.
pub async fn locked_nodes(store: &dyn NodeStore, ids: Vec<String>) -> HashSet<String> {
    futures::stream::iter(ids)
        .map(|id| async move {
            let target = LockTarget::Node(id);
            let held = store
                .lock_contenders(&target)
                .await
                .is_ok_and(|c| !c.is_empty());
            (target, held)
        })
        .buffer_unordered(LOCK_READS_IN_FLIGHT)
        .filter_map(|(target, held)| async move {
            match (target, held) {
                (LockTarget::Node(id), true) => Some(id),
                _ => None,
            }
        })
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_paths_parse_back_to_their_targets() {
        let targets = [
            LockTarget::Node("0000000001".into()),
            LockTarget::Request("100-0000000002".into()),
            LockTarget::ImageBuilds("ubuntu".into()),
            LockTarget::Build {
                image: "ubuntu".into(),
                build: "abc".into(),
            },
            LockTarget::ProviderUploads {
                image: "ubuntu".into(),
                build: "abc".into(),
                provider: "cloud".into(),
            },
            LockTarget::Upload {
                image: "ubuntu".into(),
                build: "abc".into(),
                provider: "cloud".into(),
                upload: "0000000003".into(),
            },
            LockTarget::Coordination("min-ready".into()),
        ];
        for target in targets {
            assert_eq!(LockTarget::from_path(&target.path()), Some(target));
        }
        assert_eq!(LockTarget::from_path("/nodepool/other/x"), None);
        assert_eq!(LockTarget::from_path("/nodepool/nodes/0000000001"), None);
    }

    #[tokio::test]
    async fn locked_nodes_names_the_nodes_whose_lock_is_held() {
        let store = MemoryStore::new();
        let mut ids = Vec::new();
        for _ in 0..40 {
            let id = store
                .create_node(&Node::new(crate::model::NodeState::Ready))
                .await
                .expect("node");
            ids.push(id);
        }
        let holder = store.session();
        let lock = holder
            .lock(&LockTarget::Node(ids[33].clone()), &LockOptions::try_once())
            .await
            .expect("lock");
        let mut asked = ids.clone();
        asked.push("9999999999".to_string());
        let locked = locked_nodes(&store, asked).await;
        assert_eq!(locked, HashSet::from([ids[33].clone()]));
        holder.unlock(&lock).await.expect("unlock");
        assert!(locked_nodes(&store, ids).await.is_empty());
    }
}
