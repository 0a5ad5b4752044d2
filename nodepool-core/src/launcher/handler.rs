//! The request handler: takes one accepted request from `requested` to
//! `fulfilled` (or declined/failed), as upstream's `NodeRequestHandler`.
//!
//! Order of operations (upstream's): lock the request, re-read it, set it
//! `pending`; lock and allocate reused nodes; create each new node `init`,
//! lock it, set it `building`, launch; when every launch is done, unlock
//! the nodes, store the request (`fulfilled`, or declined) and unlock it.
//!
//! When the store fails midway (a lost connection), the handler abandons
//! the request without leaving anything cleanup cannot take (`abandon`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use super::launch::{self, LaunchContext, Outcome};
use super::pool::{self, PoolState};
use super::shared::{lock, Shared};
use super::stats::Counter;
use crate::model::json::JsonValue;
use crate::model::{Node, NodeRequest, NodeState, RequestState};
use crate::store::{LockHandle, LockOptions, LockTarget};
use crate::{Error, Result};

/// What the scheduler decided for one request.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) request_id: String,
    /// Label index → ready node to take.
    pub(crate) reuse: Vec<(usize, String)>,
    /// Label index → label to launch.
    pub(crate) launch: Vec<(usize, String)>,
}

/// A node held by the handler, by label index.
#[derive(Debug)]
struct Held {
    index: usize,
    node: Node,
    lock: LockHandle,
    reused: bool,
}

/// How the handling of a request ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    /// Every node is ready.
    Fulfilled,
    /// A node failed every attempt.
    Failed,
    /// A ready node was taken meanwhile: give the request back.
    Requeue,
}

struct Handler {
    shared: Arc<Shared>,
    state: Arc<PoolState>,
    ctx: LaunchContext,
    request: NodeRequest,
    request_lock: LockHandle,
    held: Vec<Held>,
    /// New nodes created but not (yet) locked by us.
    created: Vec<String>,
}

/// Handle `plan` to its end; always clears the pool's bookkeeping.
pub(crate) async fn run(
    shared: Arc<Shared>,
    state: Arc<PoolState>,
    plan: Plan,
    cancel: CancellationToken,
) {
    let span = info_span!(
        "request",
        request_id = %plan.request_id,
        provider = %state.provider,
        pool = %state.pool
    );
    let request_id = plan.request_id.clone();
    let result = handle(shared.clone(), state.clone(), plan, cancel)
        .instrument(span.clone())
        .await;
    if let Err(e) = result {
        span.in_scope(|| warn!(error = %e, "request handling failed"));
    }
    lock(&state.book).active.remove(&request_id);
    shared.wake_pools(Some(&state.provider));
}

async fn handle(
    shared: Arc<Shared>,
    state: Arc<PoolState>,
    plan: Plan,
    cancel: CancellationToken,
) -> Result<()> {
    let snapshot = shared.snapshot();
    let (Some(provider_cfg), Some(provider)) = (
        snapshot.config.provider(&state.provider),
        snapshot.providers.get(&state.provider),
    ) else {
        return Ok(());
    };
    let Some(pool_cfg) = provider_cfg.pools.iter().find(|p| p.name == state.pool) else {
        return Ok(());
    };
    let ctx = LaunchContext {
        shared: shared.clone(),
        provider: provider.clone(),
        runtime: shared.runtime(&state.provider),
        provider_cfg: provider_cfg.clone(),
        pool_cfg: pool_cfg.clone(),
        request: None,
    };

    // A read first, as upstream checks its cache before locking: the plan
    // may come from a listing older than the request's handling by another
    // pass, and a lock taken only to see that costs three writes.
    let still_requested = |r: &NodeRequest| {
        r.state == Some(RequestState::Requested) && !r.declined_by.contains(&state.launcher_id)
    };
    match shared.store.get_request(&plan.request_id).await {
        Ok(Some(r)) if still_requested(&r) => {}
        other => {
            debug!(
                found = other.is_ok(),
                "request is gone or no longer requested"
            );
            return Ok(());
        }
    }
    let target = LockTarget::Request(plan.request_id.clone());
    let Ok(request_lock) = shared.store.lock(&target, &LockOptions::try_once()).await else {
        debug!("request is locked by someone else");
        return Ok(());
    };
    let request = match shared.store.get_request(&plan.request_id).await {
        Ok(Some(r)) if still_requested(&r) => r,
        other => {
            debug!(
                found = other.is_ok(),
                "request is gone or no longer requested"
            );
            let _ = shared.store.unlock(&request_lock).await;
            return Ok(());
        }
    };
    let ctx = LaunchContext {
        request: Some(request.safe_attributes()),
        ..ctx
    };
    let mut h = Handler {
        shared,
        state,
        ctx,
        request,
        request_lock,
        held: Vec::new(),
        created: Vec::new(),
    };
    info!("accepting node request");
    h.request.state = Some(RequestState::Pending);
    h.request.state_time = Some(super::shared::now());
    if let Err(e) = h.shared.store.update_request(&h.request).await {
        let _ = h.shared.store.unlock(&h.request_lock).await;
        return Err(e);
    }

    let work = async {
        if !h.allocate_reused(&plan).await? {
            return Ok(Done::Requeue);
        }
        h.launch_all(plan.launch.clone()).await
    };
    let done = tokio::select! {
        r = work => r,
        _ = cancel.cancelled() => Err(Error::cancelled("the request handler (the launcher is stopping)")),
    };
    match done {
        Ok(Done::Fulfilled) => h.finish_fulfilled().await,
        Ok(Done::Failed) => h.finish_declined().await,
        Ok(Done::Requeue) => h.requeue().await,
        Err(e) => {
            warn!(error = %e, "abandoning request");
            h.abandon().await;
            Err(e)
        }
    }
}

impl Handler {
    /// Lock and allocate the ready nodes of the plan. `false` when one was
    /// taken meanwhile (the request then goes back to `requested`).
    async fn allocate_reused(&mut self, plan: &Plan) -> Result<bool> {
        for (index, node_id) in &plan.reuse {
            if !self.alive(node_id).await {
                return Ok(false);
            }
            let target = LockTarget::Node(node_id.clone());
            let Ok(lock) = self
                .shared
                .store
                .lock(&target, &LockOptions::try_once())
                .await
            else {
                debug!(node_id = %node_id, "ready node was locked meanwhile");
                return Ok(false);
            };
            let node = match self.shared.store.get_node(node_id).await {
                Ok(Some(n)) if n.state == Some(NodeState::Ready) && n.allocated_to.is_none() => n,
                _ => {
                    let _ = self.shared.store.unlock(&lock).await;
                    return Ok(false);
                }
            };
            let mut node = node;
            node.allocated_to = Some(self.request.id.clone());
            node.tenant_name = self.request.tenant_name.clone();
            node.requestor = self.request.requestor.clone();
            self.held.push(Held {
                index: *index,
                node: node.clone(),
                lock,
                reused: true,
            });
            self.shared.store.update_node(&node).await?;
            debug!(node_id = %node_id, "reusing ready node");
        }
        Ok(true)
    }

    /// Whether the provider still vouches for a ready node before it is
    /// handed out (pre-registered hosts are checked; a dead one's record is
    /// dropped by the provider and the request goes back to wait for
    /// another node). Other providers' nodes are not checked.
    async fn alive(&self, node_id: &str) -> bool {
        let Some(hosts) = self.ctx.provider.registered() else {
            return true;
        };
        let node = match self.shared.store.get_node(node_id).await {
            Ok(Some(n)) => n,
            _ => return false,
        };
        match hosts.node_alive(&*self.shared.store, &node).await {
            Ok(true) => true,
            Ok(false) => {
                info!(
                    node_id,
                    "ready node failed its liveness check; not handed out"
                );
                false
            }
            Err(e) => {
                warn!(node_id, error = %e, "could not check a ready node; not handed out");
                false
            }
        }
    }

    /// Create, lock and launch the new nodes; relaunch aborted ones when
    /// quota frees.
    async fn launch_all(&mut self, mut todo: Vec<(usize, String)>) -> Result<Done> {
        while !todo.is_empty() {
            let mut batch = Vec::new();
            for (index, label) in std::mem::take(&mut todo) {
                let node = self.create_node(index, &label).await?;
                batch.push((index, node));
            }
            let rt = self.ctx.runtime.clone();
            rt.launching.fetch_add(batch.len(), Ordering::Relaxed);
            self.set_launching(batch.len() as isize);
            let ctx = &self.ctx;
            let results = join_all(batch.into_iter().map(|(index, mut node)| {
                let span = info_span!("launch", node_id = %node.id);
                async move {
                    let outcome = launch::launch(ctx, &mut node).await;
                    (index, node, outcome)
                }
                .instrument(span)
            }))
            .await;
            rt.launching.fetch_sub(results.len(), Ordering::Relaxed);
            self.set_launching(-(results.len() as isize));

            let mut failed = false;
            for (index, node, outcome) in results {
                let Some(pos) = self.held.iter().position(|h| h.node.id == node.id) else {
                    continue;
                };
                match outcome {
                    Outcome::Ready => self.held[pos].node = node,
                    Outcome::Failed => {
                        failed = true;
                        self.held[pos].node = node;
                    }
                    Outcome::Aborted => {
                        // The aborted node is unlocked for cleanup; a new one
                        // is launched once quota frees up.
                        let held = self.held.remove(pos);
                        let _ = self.shared.store.unlock(&held.lock).await;
                        let label = node.labels.first().cloned().unwrap_or_default();
                        todo.push((index, label));
                    }
                }
            }
            if failed {
                return Ok(Done::Failed);
            }
            if !todo.is_empty() {
                self.set_aborted(true);
                info!("pausing after a quota abort until quota frees up");
                let freed = self.state.quota_freed.notified();
                let _ = tokio::time::timeout(Duration::from_secs(10), freed).await;
                self.set_aborted(false);
            }
        }
        Ok(Done::Fulfilled)
    }

    fn set_launching(&self, delta: isize) {
        if let Some(a) = lock(&self.state.book).active.get_mut(&self.request.id) {
            a.launching = a.launching.saturating_add_signed(delta);
        }
    }

    fn set_aborted(&self, aborted: bool) {
        if let Some(a) = lock(&self.state.book).active.get_mut(&self.request.id) {
            a.aborted = aborted;
        }
        self.state.wake.notify_one();
    }

    /// Create a node `init`, lock it, then store it `building` (upstream's
    /// order: an unlocked `building` node is cleaned up).
    async fn create_node(&mut self, index: usize, label: &str) -> Result<Node> {
        let mut node = Node::new(NodeState::Init);
        node.labels = vec![label.to_string()];
        node.provider = Some(self.state.provider.clone());
        node.pool = Some(self.state.pool.clone());
        node.launcher = Some(self.state.launcher_id.clone());
        node.allocated_to = Some(self.request.id.clone());
        node.tenant_name = self.request.tenant_name.clone();
        node.requestor = self.request.requestor.clone();
        node.created_time = Some(super::shared::now());
        node.attributes = self.ctx.pool_cfg.node_attributes.as_ref().and_then(|v| {
            match JsonValue::from(v.clone()) {
                JsonValue::Object(o) => Some(o),
                _ => None,
            }
        });
        node.id = self.shared.store.create_node(&node).await?;
        if let Some(a) = lock(&self.state.book).active.get_mut(&self.request.id) {
            a.created.insert(node.id.clone());
        }
        // Known before it is locked, so that an abandon can find it.
        self.created.push(node.id.clone());
        let lock = self
            .shared
            .store
            .lock(&LockTarget::Node(node.id.clone()), &LockOptions::try_once())
            .await?;
        self.created.retain(|id| *id != node.id);
        self.held.push(Held {
            index,
            node: node.clone(),
            lock,
            reused: false,
        });
        launch::prepare(&self.ctx, &mut node).await;
        node.set_state(NodeState::Building);
        self.shared.store.update_node(&node).await?;
        if let Some(h) = self.held.iter_mut().find(|h| h.node.id == node.id) {
            h.node = node.clone();
        }
        debug!(node_id = %node.id, label, "created building node");
        Ok(node)
    }

    /// Every node is ready: unlock them, store the request fulfilled, unlock it.
    async fn finish_fulfilled(mut self) -> Result<()> {
        let mut ordered: Vec<&Held> = self.held.iter().collect();
        ordered.sort_by_key(|h| h.index);
        self.request.nodes = ordered.iter().map(|h| h.node.id.clone()).collect();
        self.request.state = Some(RequestState::Fulfilled);
        self.request.state_time = Some(super::shared::now());
        self.unlock_nodes().await;
        match self.shared.store.update_request(&self.request).await {
            Ok(()) => {
                info!(nodes = ?self.request.nodes, "fulfilled node request");
                self.shared.counters.bump(Counter::RequestsFulfilled);
            }
            Err(Error::RequestNotFound { .. }) => {
                info!("node request disappeared; releasing its nodes");
                self.release_allocations().await;
            }
            Err(e) => warn!(error = %e, "could not store the fulfilled request"),
        }
        let _ = self.shared.store.unlock(&self.request_lock).await;
        Ok(())
    }

    /// A launch failed: decline the request (failing it if every pool
    /// declined), unlock everything.
    async fn finish_declined(mut self) -> Result<()> {
        info!("declining node request because nodes failed");
        self.unlock_nodes().await;
        let state = self.state.clone();
        let result = async {
            pool::mark_declined(&self.shared, &state, &mut self.request).await?;
            self.shared.store.update_request(&self.request).await
        }
        .await;
        let _ = self.shared.store.unlock(&self.request_lock).await;
        result
    }

    /// Give the request back (`requested`), releasing reused nodes and
    /// leaving new ones unlocked for cleanup.
    async fn requeue(mut self) -> Result<()> {
        for h in &mut self.held {
            if h.reused {
                h.node.allocated_to = None;
                if let Err(e) = self.shared.store.update_node(&h.node).await {
                    warn!(node_id = %h.node.id, error = %e, "could not release node");
                }
            }
        }
        self.unlock_nodes().await;
        self.request.state = Some(RequestState::Requested);
        self.request.nodes.clear();
        self.request.state_time = Some(super::shared::now());
        let result = match self.shared.store.update_request(&self.request).await {
            Err(Error::RequestNotFound { .. }) => Ok(()),
            other => other,
        };
        let _ = self.shared.store.unlock(&self.request_lock).await;
        result
    }

    /// The handling failed midway (the store, usually): give the request
    /// back (`requested`) and leave nothing that cleanup cannot take. Nodes
    /// we hold: reused and ready ones are deallocated, new ones still `init`
    /// are marked `deleting` (`building` ones are cleanup's once unlocked);
    /// then all are unlocked. New nodes we created but never locked, and any
    /// `init` node of ours allocated to the request (a create whose reply
    /// was lost), are locked and marked `deleting` too. Every step is best
    /// effort: what fails here is left to the cleanup (an unlocked `pending`
    /// request is reset, an unlocked `init` node of a gone request or
    /// launcher is deleted).
    async fn abandon(mut self) {
        let store = self.shared.store.clone();
        for h in &mut self.held {
            let result = if h.reused || h.node.state == Some(NodeState::Ready) {
                h.node.allocated_to = None;
                store.update_node(&h.node).await
            } else {
                // Read again: a launch cut short by a stop may have stored
                // an instance our copy does not know. An unlocked `building`
                // node is cleanup's already; an `init` one is not.
                match store.get_node(&h.node.id).await {
                    Ok(Some(mut node)) if node.state == Some(NodeState::Init) => {
                        node.set_state(NodeState::Deleting);
                        node.allocated_to = None;
                        store.update_node(&node).await
                    }
                    other => other.map(|_| ()),
                }
            };
            if let Err(e) = result {
                warn!(node_id = %h.node.id, error = %e, "could not release a node of an abandoned request");
            }
        }
        self.unlock_nodes().await;
        self.held.clear();
        for id in self.strays().await {
            self.discard_stray(&id).await;
        }
        self.request.state = Some(RequestState::Requested);
        self.request.nodes.clear();
        self.request.state_time = Some(super::shared::now());
        match store.update_request(&self.request).await {
            Ok(()) | Err(Error::RequestNotFound { .. }) => {}
            Err(e) => warn!(error = %e, "could not give back an abandoned request"),
        }
        if let Err(e) = store.unlock(&self.request_lock).await {
            debug!(error = %e, "request lock already gone");
        }
    }

    /// New nodes of this handler that it does not hold: those it created
    /// but could not lock, and `init` ones of its launcher allocated to the
    /// request (only this handler, holding the request lock, makes them).
    async fn strays(&mut self) -> Vec<String> {
        let mut strays = std::mem::take(&mut self.created);
        if let Err(e) = self.shared.nodes.sync(&*self.shared.store).await {
            debug!(error = %e, "cannot look for init nodes of the abandoned request");
            return strays;
        }
        let request = self.request.id.as_str();
        let launcher = self.state.launcher_id.as_str();
        self.shared.nodes.with(|nodes| {
            for (id, n) in nodes {
                if n.state == Some(NodeState::Init)
                    && n.allocated_to.as_deref() == Some(request)
                    && n.launcher.as_deref() == Some(launcher)
                    && !strays.contains(id)
                {
                    strays.push(id.clone());
                }
            }
        });
        strays
    }

    /// Lock a new node we do not hold and, if it is still an `init` node of
    /// this request, mark it `deleting` (upstream's lost-request reset does
    /// the same to such nodes).
    async fn discard_stray(&self, id: &str) {
        let store = &self.shared.store;
        let target = LockTarget::Node(id.to_string());
        let handle = match store.lock(&target, &LockOptions::try_once()).await {
            Ok(handle) => handle,
            Err(e) => {
                debug!(node_id = %id, error = %e, "cannot lock a node of the abandoned request");
                return;
            }
        };
        match store.get_node(id).await {
            Ok(Some(mut node))
                if node.state == Some(NodeState::Init)
                    && node.allocated_to.as_deref() == Some(self.request.id.as_str()) =>
            {
                node.set_state(NodeState::Deleting);
                node.allocated_to = None;
                match store.update_node(&node).await {
                    Ok(()) => {
                        info!(node_id = %id, "marked an init node of the abandoned request for deletion")
                    }
                    Err(e) => {
                        warn!(node_id = %id, error = %e, "could not mark an init node for deletion")
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                debug!(node_id = %id, error = %e, "cannot read a node of the abandoned request")
            }
        }
        let _ = store.unlock(&handle).await;
    }

    async fn unlock_nodes(&mut self) {
        for h in &self.held {
            if let Err(e) = self.shared.store.unlock(&h.lock).await {
                debug!(node_id = %h.node.id, error = %e, "node lock already gone");
            }
        }
    }

    /// The request vanished after fulfilment: clear `allocated_to` on its
    /// nodes so others can use them.
    async fn release_allocations(&mut self) {
        for h in &self.held {
            let target = LockTarget::Node(h.node.id.clone());
            let Ok(lock) = self
                .shared
                .store
                .lock(&target, &LockOptions::try_once())
                .await
            else {
                continue;
            };
            if let Ok(Some(mut node)) = self.shared.store.get_node(&h.node.id).await {
                if node.allocated_to.as_deref() == Some(self.request.id.as_str()) {
                    node.allocated_to = None;
                    let _ = self.shared.store.update_node(&node).await;
                }
            }
            let _ = self.shared.store.unlock(&lock).await;
        }
    }
}
