//! An in-memory [`NodeStore`]: one process, no durability.
//!
//! A [`MemoryStore`] is one session of a backend; [`MemoryStore::session`]
//! opens another session on the same backend, as a second ZooKeeper client
//! would. All sessions see the same records, locks and watch events.
//!
//! Beyond the [`NodeStore`] contract: an upload of a missing build fails
//! with [`Error::NotFound`]; an image stays listed once it had a build or a
//! flag, as its ZooKeeper path would; waiters for a lock whose record is
//! deleted fail with [`Error::LockLost`]; dropping a session closes it.
//!
//! The backend is a single mutex around plain maps; it is never held across
//! an `.await`. Lock waiters sleep on a oneshot channel and are woken in
//! arrival order, so blocking locks are fair and never poll.

mod locks;
mod state;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use tokio::sync::{broadcast, oneshot};
use tracing::{debug, instrument};

use self::locks::Enqueued;
use self::state::{SessionId, State};
use crate::model::{Component, ImageBuild, ImageUpload, Node, NodeRequest};
use crate::store::{AdmissionToken, LockHandle, LockOptions, LockTarget, NodeStore, StoreEvent};
use crate::{Error, Result};

/// How many events a watcher may fall behind before it sees
/// `RecvError::Lagged`.
const DEFAULT_EVENT_CAPACITY: usize = 4096;

/// The shared part of a memory store.
#[derive(Debug)]
struct Backend {
    state: Mutex<State>,
}

impl Backend {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every change is applied under the mutex in a few non-panicking
        // steps, so a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An in-memory store session. Sessions share one backend (see
/// [`MemoryStore::session`]); dropping a session closes it.
///
/// ```
/// # use nodepool_core::store::{MemoryStore, NodeStore};
/// # use nodepool_core::model::Node;
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let launcher = MemoryStore::new();
/// let other = launcher.session();
/// let id = launcher.create_node(&Node::default()).await?;
/// assert!(other.get_node(&id).await?.is_some());
/// # Ok::<(), nodepool_core::Error>(())
/// # }).unwrap();
/// ```
pub struct MemoryStore {
    backend: Arc<Backend>,
    session: SessionId,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// A new, empty backend with one session; watchers may lag 4096 events.
    pub fn new() -> Self {
        Self::with_event_capacity(DEFAULT_EVENT_CAPACITY)
    }

    /// A new, empty backend whose watchers may lag `capacity` events
    /// before they see `RecvError::Lagged`.
    pub fn with_event_capacity(capacity: usize) -> Self {
        let mut state = State::new(capacity);
        let session = state.new_session();
        Self {
            backend: Arc::new(Backend {
                state: Mutex::new(state),
            }),
            session,
        }
    }

    /// Another session on the same backend, like another ZooKeeper client.
    pub fn session(&self) -> MemoryStore {
        let session = self.backend.state().new_session();
        MemoryStore {
            backend: Arc::clone(&self.backend),
            session,
        }
    }

    /// This session's number, unique within the backend.
    pub fn session_id(&self) -> u64 {
        self.session
    }

    /// Runs `f` on the state of an open session.
    fn with_open<T>(&self, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let mut state = self.backend.state();
        state.ensure_open(self.session)?;
        f(&mut state)
    }

    /// Waits until the contender `name` holds `target`, or gives up.
    async fn wait_for_lock(
        &self,
        target: &LockTarget,
        name: String,
        woken: oneshot::Receiver<()>,
        options: &LockOptions,
    ) -> Result<LockHandle> {
        // If this future is dropped while waiting, the guard leaves the queue.
        let mut guard = PendingLock {
            backend: &self.backend,
            target,
            name,
            settled: false,
        };
        let outcome = match options.timeout {
            Some(limit) => tokio::time::timeout(limit, woken).await.ok(),
            None => Some(woken.await),
        };
        let mut state = self.backend.state();
        guard.settled = true;
        let name = std::mem::take(&mut guard.name);
        let holds = state.is_holder(target, &name);
        match outcome {
            Some(Ok(())) | None if holds => {
                debug!(%target, contender = %name, "lock acquired after waiting");
                Ok(LockHandle {
                    target: target.clone(),
                    contender: name,
                })
            }
            None => {
                state.remove_contender(target, &name);
                Err(Error::LockHeld {
                    target: target.to_string(),
                })
            }
            Some(_) => {
                // Our place in line went away: the session ended or the
                // record carrying the lock was deleted.
                state.remove_contender(target, &name);
                state.ensure_open(self.session)?;
                Err(Error::LockLost {
                    target: target.to_string(),
                })
            }
        }
    }
}

impl Drop for MemoryStore {
    fn drop(&mut self) {
        self.backend.state().close_session(self.session);
    }
}

/// Removes a waiting contender whose `lock` future was dropped.
struct PendingLock<'a> {
    backend: &'a Backend,
    target: &'a LockTarget,
    name: String,
    settled: bool,
}

impl Drop for PendingLock<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.backend
                .state()
                .remove_contender(self.target, &self.name);
        }
    }
}

#[async_trait]
impl NodeStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn create_node(&self, node: &Node) -> Result<String> {
        self.with_open(|s| Ok(s.create_node(node)))
    }

    async fn get_node(&self, id: &str) -> Result<Option<Node>> {
        self.with_open(|s| Ok(s.nodes.get(id).cloned()))
    }

    async fn update_node(&self, node: &Node) -> Result<()> {
        self.with_open(|s| s.update_node(node))
    }

    async fn delete_node(&self, id: &str) -> Result<()> {
        self.with_open(|s| {
            s.delete_node(id);
            Ok(())
        })
    }

    async fn list_nodes(&self) -> Result<Vec<Node>> {
        self.with_open(|s| Ok(s.nodes.values().cloned().collect()))
    }

    async fn node_ids(&self) -> Result<Vec<String>> {
        self.with_open(|s| Ok(s.nodes.keys().cloned().collect()))
    }

    async fn admission_token(&self, key: &str) -> Result<AdmissionToken> {
        self.with_open(|s| {
            Ok(AdmissionToken {
                key: key.to_string(),
                version: s.admission_version(key),
            })
        })
    }

    async fn create_nodes_admitted(
        &self,
        nodes: &[Node],
        tokens: &[AdmissionToken],
    ) -> Result<Vec<String>> {
        self.with_open(|s| s.create_nodes_admitted(nodes, tokens))
    }

    async fn create_request(&self, request: &NodeRequest, priority: &str) -> Result<String> {
        self.with_open(|s| s.create_request(self.session, request, priority))
    }

    async fn get_request(&self, id: &str) -> Result<Option<NodeRequest>> {
        self.with_open(|s| Ok(s.requests.get(id).map(|r| r.record.clone())))
    }

    async fn update_request(&self, request: &NodeRequest) -> Result<()> {
        self.with_open(|s| s.update_request(request))
    }

    async fn delete_request(&self, id: &str) -> Result<()> {
        self.with_open(|s| {
            s.delete_request(id);
            Ok(())
        })
    }

    async fn list_requests(&self) -> Result<Vec<NodeRequest>> {
        self.with_open(|s| Ok(s.requests.values().map(|r| r.record.clone()).collect()))
    }

    async fn list_images(&self) -> Result<Vec<String>> {
        self.with_open(|s| Ok(s.images.keys().cloned().collect()))
    }

    async fn create_build(&self, image: &str, build: &ImageBuild) -> Result<String> {
        self.with_open(|s| Ok(s.create_build(image, build)))
    }

    async fn get_build(&self, image: &str, build_id: &str) -> Result<Option<ImageBuild>> {
        self.with_open(|s| Ok(s.get_build(image, build_id)))
    }

    async fn update_build(&self, image: &str, build: &ImageBuild) -> Result<()> {
        self.with_open(|s| s.update_build(image, build))
    }

    async fn delete_build(&self, image: &str, build_id: &str) -> Result<()> {
        self.with_open(|s| {
            s.delete_build(image, build_id);
            Ok(())
        })
    }

    async fn list_builds(&self, image: &str) -> Result<Vec<ImageBuild>> {
        self.with_open(|s| Ok(s.list_builds(image)))
    }

    async fn create_upload(
        &self,
        image: &str,
        build_id: &str,
        provider: &str,
        upload: &ImageUpload,
    ) -> Result<String> {
        self.with_open(|s| s.create_upload(image, build_id, provider, upload))
    }

    async fn update_upload(&self, upload: &ImageUpload) -> Result<()> {
        self.with_open(|s| s.update_upload(upload))
    }

    async fn delete_upload(
        &self,
        image: &str,
        build_id: &str,
        provider: &str,
        upload_id: &str,
    ) -> Result<()> {
        self.with_open(|s| {
            s.delete_upload(image, build_id, provider, upload_id);
            Ok(())
        })
    }

    async fn list_uploads(&self, image: &str, build_id: &str) -> Result<Vec<ImageUpload>> {
        self.with_open(|s| Ok(s.list_uploads(image, build_id)))
    }

    async fn set_image_paused(&self, image: &str, paused: bool) -> Result<()> {
        self.with_open(|s| {
            s.set_image_flag(image, paused, |i| &mut i.paused);
            Ok(())
        })
    }

    async fn image_paused(&self, image: &str) -> Result<bool> {
        self.with_open(|s| Ok(s.images.get(image).is_some_and(|i| i.paused)))
    }

    async fn set_build_requested(&self, image: &str, requested: bool) -> Result<()> {
        self.with_open(|s| {
            s.set_image_flag(image, requested, |i| &mut i.build_requested);
            Ok(())
        })
    }

    async fn build_requested(&self, image: &str) -> Result<bool> {
        self.with_open(|s| Ok(s.images.get(image).is_some_and(|i| i.build_requested)))
    }

    async fn register_component(
        &self,
        kind: &str,
        name: &str,
        component: &Component,
    ) -> Result<()> {
        self.with_open(|s| {
            s.register_component(self.session, kind, name, component);
            Ok(())
        })
    }

    async fn unregister_component(&self, kind: &str, name: &str) -> Result<()> {
        self.with_open(|s| {
            s.unregister_component(kind, name);
            Ok(())
        })
    }

    async fn list_components(&self, kind: &str) -> Result<Vec<Component>> {
        self.with_open(|s| Ok(s.list_components(kind)))
    }

    #[instrument(level = "debug", skip(self, target, options), fields(session = self.session, %target))]
    async fn lock(&self, target: &LockTarget, options: &LockOptions) -> Result<LockHandle> {
        let identifier = options.identifier.clone().unwrap_or_default();
        let enqueued =
            self.with_open(|s| Ok(s.enqueue(self.session, target, identifier, options.blocking)))?;
        match enqueued {
            Enqueued::Holder(contender) => Ok(LockHandle {
                target: target.clone(),
                contender,
            }),
            Enqueued::Refused => Err(Error::LockHeld {
                target: target.to_string(),
            }),
            Enqueued::Waiting(name, woken) => {
                self.wait_for_lock(target, name, woken, options).await
            }
        }
    }

    async fn unlock(&self, handle: &LockHandle) -> Result<()> {
        let mut state = self.backend.state();
        if state.is_holder(&handle.target, &handle.contender)
            && state.remove_contender(&handle.target, &handle.contender)
        {
            return Ok(());
        }
        Err(Error::LockLost {
            target: handle.target.to_string(),
        })
    }

    async fn lock_contenders(&self, target: &LockTarget) -> Result<Vec<String>> {
        self.with_open(|s| Ok(s.contenders(target)))
    }

    fn watch(&self) -> broadcast::Receiver<StoreEvent> {
        self.backend.state().events.subscribe()
    }

    #[instrument(level = "debug", skip(self), fields(session = self.session))]
    async fn close(&self) -> Result<()> {
        self.backend.state().close_session(self.session);
        Ok(())
    }
}
