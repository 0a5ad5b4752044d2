//! Requesting nodes without Zuul: the requestor's side of the protocol.
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn nodepool_core::store::NodeStore>) -> nodepool_core::Result<()> {
//! use nodepool_core::client::{Client, RequestOptions};
//! use std::time::Duration;
//!
//! let client = Client::new(store, "my-ci");
//! let request = client.submit(&["ubuntu-noble"], &RequestOptions::default()).await?;
//! let nodes = client.wait_fulfilled(&request, Duration::from_secs(600)).await?;
//! for node in nodes.nodes() {
//!     println!("{} at {:?}", node.id, node.interface_ip);
//! }
//! client.release(nodes).await?;
//! # Ok(()) }
//! ```
//!
//! The steps are those a Zuul scheduler takes: write a node request, wait
//! for it to be fulfilled, lock every node and check it is allocated to the
//! request, delete the request, set the nodes `in-use`, and when done set
//! them `used` and unlock them, after which the launcher deletes them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::Notify;
use tracing::{debug, instrument};

use crate::model::{now, Node, NodeRequest, NodeState, RequestState};
use crate::store::{LockHandle, LockOptions, LockTarget, NodeStore, StoreEvent};
use crate::{Error, Result};

/// How to submit a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestOptions {
    /// Precedence: three digits, lower first ("100" is upstream's normal).
    pub priority: String,
    /// Order among requests of the same precedence (lower first).
    pub relative_priority: i64,
    /// Whether ready nodes may be reused.
    pub reuse: bool,
    /// Tenant, for tenant-resource-limits.
    pub tenant: Option<String>,
}

impl Default for RequestOptions {
    fn default() -> Self {
        Self {
            priority: "100".to_string(),
            relative_priority: 0,
            reuse: true,
            tenant: None,
        }
    }
}

/// A submitted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRequest {
    /// The request id.
    pub id: String,
}

/// Nodes locked to this client, ready to use.
#[derive(Debug)]
pub struct LockedNodes {
    request_id: String,
    nodes: Vec<(Node, LockHandle)>,
}

impl LockedNodes {
    /// The request they were allocated to.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The nodes, in the order of the request's labels.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().map(|(n, _)| n)
    }
}

/// The requestor's side: submit, wait, lock, release.
///
/// Clones share one subscription to the store's events while any of them
/// waits, routing each request's events to its waiters only, so that a
/// thousand waiters cost one event stream, not a thousand.
#[derive(Debug, Clone)]
pub struct Client {
    store: Arc<dyn NodeStore>,
    requestor: String,
    waiters: Arc<Waiters>,
}

/// One waiter's wake-ups.
#[derive(Debug, Default)]
struct Waiter {
    /// Woken when its request may have changed.
    notify: Notify,
    /// The store's event stream ended.
    closed: AtomicBool,
}

/// The waiters of a client and its clones, by request id.
#[derive(Debug, Default)]
struct Waiters {
    inner: Mutex<WaitersInner>,
}

#[derive(Debug, Default)]
struct WaitersInner {
    by_request: HashMap<String, Vec<Arc<Waiter>>>,
    /// A routing task holds a subscription.
    routing: bool,
}

impl Waiters {
    fn inner(&self) -> MutexGuard<'_, WaitersInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a waiter for `id`; subscribes (before returning, so no later
    /// change is missed) and starts routing if nobody was waiting.
    fn register(self: &Arc<Self>, store: &dyn NodeStore, id: &str) -> Registration {
        let waiter = Arc::new(Waiter::default());
        let mut inner = self.inner();
        inner
            .by_request
            .entry(id.to_owned())
            .or_default()
            .push(waiter.clone());
        if !inner.routing {
            inner.routing = true;
            tokio::spawn(route(Arc::downgrade(self), store.watch()));
        }
        Registration {
            waiters: self.clone(),
            id: id.to_owned(),
            waiter,
        }
    }

    fn wake(&self, id: &str) {
        if let Some(list) = self.inner().by_request.get(id) {
            for waiter in list {
                waiter.notify.notify_one();
            }
        }
    }

    fn wake_all(&self, closed: bool) {
        for waiter in self.inner().by_request.values().flatten() {
            if closed {
                waiter.closed.store(true, Ordering::Relaxed);
            }
            waiter.notify.notify_one();
        }
    }

    /// Ends routing when nobody waits; `true` if it ended.
    fn stop_if_idle(&self) -> bool {
        let mut inner = self.inner();
        if inner.by_request.is_empty() {
            inner.routing = false;
        }
        !inner.routing
    }
}

/// Routes store events to the waiters of their request; a missed stretch
/// of events (resync, lag) wakes every waiter to read again.
async fn route(waiters: Weak<Waiters>, mut events: broadcast::Receiver<StoreEvent>) {
    loop {
        let event = events.recv().await;
        let Some(waiters) = waiters.upgrade() else {
            return;
        };
        match event {
            Ok(StoreEvent::Request { id, .. }) => waiters.wake(&id),
            Ok(StoreEvent::Resync) | Err(RecvError::Lagged(_)) => waiters.wake_all(false),
            Ok(_) => {}
            Err(RecvError::Closed) => {
                waiters.wake_all(true);
                waiters.inner().routing = false;
                return;
            }
        }
        if waiters.stop_if_idle() {
            return;
        }
    }
}

/// A waiter's place in [`Waiters`]; leaves it when dropped.
#[derive(Debug)]
struct Registration {
    waiters: Arc<Waiters>,
    id: String,
    waiter: Arc<Waiter>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut inner = self.waiters.inner();
        if let Some(list) = inner.by_request.get_mut(&self.id) {
            list.retain(|w| !Arc::ptr_eq(w, &self.waiter));
            if list.is_empty() {
                inner.by_request.remove(&self.id);
            }
        }
    }
}

impl Client {
    /// A client writing requests as `requestor`.
    pub fn new(store: Arc<dyn NodeStore>, requestor: impl Into<String>) -> Self {
        Self {
            store,
            requestor: requestor.into(),
            waiters: Arc::default(),
        }
    }

    /// Write a node request for one node per label.
    #[instrument(skip(self, options), fields(requestor = %self.requestor))]
    pub async fn submit(
        &self,
        labels: &[&str],
        options: &RequestOptions,
    ) -> Result<PendingRequest> {
        let request = NodeRequest {
            state: Some(RequestState::Requested),
            state_time: Some(now()),
            node_types: labels.iter().map(|l| l.to_string()).collect(),
            reuse: options.reuse,
            requestor: Some(self.requestor.clone()),
            relative_priority: options.relative_priority,
            tenant_name: options.tenant.clone(),
            created_time: Some(now()),
            ..NodeRequest::default()
        };
        let id = self
            .store
            .create_request(&request, &options.priority)
            .await?;
        debug!(request_id = %id, "node request submitted");
        Ok(PendingRequest { id })
    }

    /// The request's current state (`None` once it is gone).
    pub async fn state(&self, request: &PendingRequest) -> Result<Option<NodeRequest>> {
        self.store.get_request(&request.id).await
    }

    /// Wait until the request is fulfilled, then lock its nodes, check they
    /// are allocated to it, delete the request and mark the nodes `in-use`.
    /// A failed request returns an error naming it.
    #[instrument(skip(self), fields(request_id = %request.id))]
    pub async fn wait_fulfilled(
        &self,
        request: &PendingRequest,
        timeout: Duration,
    ) -> Result<LockedNodes> {
        let registration = self.waiters.register(&*self.store, &request.id);
        let deadline = crate::time::deadline_after(timeout);
        loop {
            let current = self.store.get_request(&request.id).await?.ok_or_else(|| {
                Error::RequestNotFound {
                    id: request.id.clone(),
                }
            })?;
            match current.state {
                Some(RequestState::Fulfilled) => {
                    drop(registration);
                    return self.accept(current).await;
                }
                Some(RequestState::Failed) => {
                    return Err(Error::RequestFailed {
                        id: request.id.clone(),
                        declined_by: current.declined_by.clone(),
                    })
                }
                _ => {}
            }
            // Wait for the next change to this request (or a resync).
            let woken =
                tokio::time::timeout_at(deadline, registration.waiter.notify.notified()).await;
            if woken.is_err() {
                return Err(Error::Timeout {
                    what: format!("node request {} to be fulfilled", request.id),
                    after: timeout,
                });
            }
            if registration.waiter.closed.load(Ordering::Relaxed) {
                return Err(Error::StoreUnavailable("watch closed".into()));
            }
        }
    }

    /// Lock every node of a fulfilled request, check each is allocated to
    /// it, delete the request and mark the nodes `in-use`. On any failure
    /// the nodes locked so far are unlocked again, so that a later attempt
    /// (or the launcher's cleanup) can have them; the store's unlock keeps
    /// trying across a lost connection.
    async fn accept(&self, request: NodeRequest) -> Result<LockedNodes> {
        let mut locked: Vec<(Node, LockHandle)> = Vec::with_capacity(request.nodes.len());
        let result = self.lock_allocated(&request, &mut locked).await;
        let result = match result {
            Ok(()) => self.take_locked(&request, &mut locked).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            debug!(request_id = %request.id, error = %e, "cannot accept the fulfilled request; unlocking its nodes");
            for (_, lock) in &locked {
                let _ = self.store.unlock(lock).await;
            }
            return Err(e);
        }
        Ok(LockedNodes {
            request_id: request.id,
            nodes: locked,
        })
    }

    /// Lock the request's nodes one by one into `locked`, checking each is
    /// allocated to the request.
    async fn lock_allocated(
        &self,
        request: &NodeRequest,
        locked: &mut Vec<(Node, LockHandle)>,
    ) -> Result<()> {
        let options = LockOptions {
            identifier: Some(self.requestor.clone()),
            ..LockOptions::wait(Duration::from_secs(10))
        };
        for id in &request.nodes {
            let lock = self
                .store
                .lock(&LockTarget::Node(id.clone()), &options)
                .await?;
            let node = match self.store.get_node(id).await {
                Ok(Some(node)) if node.allocated_to.as_deref() == Some(request.id.as_str()) => node,
                other => {
                    let _ = self.store.unlock(&lock).await;
                    other?;
                    return Err(Error::NotAllocated {
                        node: id.clone(),
                        request: request.id.clone(),
                    });
                }
            };
            locked.push((node, lock));
        }
        Ok(())
    }

    /// With every node locked: delete the request, mark the nodes `in-use`.
    async fn take_locked(
        &self,
        request: &NodeRequest,
        locked: &mut [(Node, LockHandle)],
    ) -> Result<()> {
        self.store.delete_request(&request.id).await?;
        for (node, _) in locked.iter_mut() {
            node.set_state(NodeState::InUse);
            self.store.update_node(node).await?;
        }
        Ok(())
    }

    /// Return the nodes: mark them `used` and unlock them; the launcher
    /// deletes them.
    pub async fn release(&self, nodes: LockedNodes) -> Result<()> {
        let mut first_error = None;
        for (mut node, lock) in nodes.nodes {
            node.set_state(NodeState::Used);
            if let Err(e) = self.store.update_node(&node).await {
                first_error.get_or_insert(e);
            }
            if let Err(e) = self.store.unlock(&lock).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Lock again the nodes `node_ids` given to request `request_id`, after
    /// the process that held them restarted (its locks died with its
    /// session). Each must still be allocated to the request; on any
    /// failure the nodes locked so far are unlocked again.
    pub async fn reclaim(&self, request_id: &str, node_ids: &[String]) -> Result<LockedNodes> {
        let request = NodeRequest {
            id: request_id.to_string(),
            nodes: node_ids.to_vec(),
            ..NodeRequest::default()
        };
        let mut locked: Vec<(Node, LockHandle)> = Vec::with_capacity(node_ids.len());
        if let Err(e) = self.lock_allocated(&request, &mut locked).await {
            for (_, lock) in &locked {
                let _ = self.store.unlock(lock).await;
            }
            return Err(e);
        }
        Ok(LockedNodes {
            request_id: request.id,
            nodes: locked,
        })
    }

    /// Withdraw a request that is no longer wanted.
    pub async fn cancel(&self, request: &PendingRequest) -> Result<()> {
        self.store.delete_request(&request.id).await
    }
}
