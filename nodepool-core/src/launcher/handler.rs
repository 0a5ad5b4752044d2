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

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use super::admission;
use super::context::Context;
use super::launch::{self, LaunchContext, Outcome};
use super::ledger::{Ledger, Ledgers, POOL_KIND};
use super::registered;
use super::stats::Counter;
use super::util::now;
use crate::model::json::JsonValue;
use crate::model::{Component, Node, NodeRequest, NodeState, RequestState};
use crate::store::{LockHandle, LockOptions, LockTarget};
use crate::tasks::{self, TaskExt};
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
    ctx: Arc<Context>,
    ledger: Arc<Ledger>,
    launch: LaunchContext,
    request: NodeRequest,
    request_lock: LockHandle,
    held: Vec<Held>,
    /// New nodes created but not (yet) locked by us.
    created: Vec<String>,
}

/// Handle `plan` to its end; always clears the pool's bookkeeping.
///
/// The pool's ledger records the request from the pass's
/// [`Ledger::start`] to the [`Ledger::finish`] here; then the provider's
/// pools are woken (`ledgers`), as quota or ready nodes may have freed up.
pub(crate) async fn run(
    ctx: Arc<Context>,
    ledgers: Arc<Ledgers>,
    ledger: Arc<Ledger>,
    plan: Plan,
    cancel: CancellationToken,
) {
    let span = info_span!(
        "request",
        request_id = %plan.request_id,
        provider = %ledger.provider,
        pool = %ledger.pool
    );
    let request_id = plan.request_id.clone();
    let (registry, task) = (
        ctx.settings.tasks.clone(),
        format!("launch handler request {request_id}"),
    );
    let result = handle(ctx, ledger.clone(), plan, cancel)
        .instrument(span.clone())
        .in_task(&registry, task)
        .await;
    if let Err(e) = result {
        span.in_scope(|| warn!(error = %e, "request handling failed"));
    }
    ledger.finish(&request_id);
    ledgers.wake(Some(&ledger.provider));
}

async fn handle(
    ctx: Arc<Context>,
    ledger: Arc<Ledger>,
    plan: Plan,
    cancel: CancellationToken,
) -> Result<()> {
    let snapshot = ctx.snapshot();
    let Some((provider_cfg, pool_cfg, provider)) = snapshot.pool(&ledger.provider, &ledger.pool)
    else {
        return Ok(());
    };
    let launch = LaunchContext {
        context: ctx.clone(),
        provider: provider.clone(),
        runtime: ctx.runtime(&ledger.provider),
        provider_cfg: provider_cfg.clone(),
        pool_cfg: pool_cfg.clone(),
        request: None,
        validation: None,
    };

    // A read first, as upstream checks its cache before locking: the plan
    // may come from a listing older than the request's handling by another
    // pass, and a lock taken only to see that costs three writes.
    let still_requested = |r: &NodeRequest| {
        r.state == Some(RequestState::Requested) && !r.declined_by.contains(&ledger.launcher_id)
    };
    match ctx.store.get_request(&plan.request_id).await {
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
    tasks::waiting_on(format!("lock {}", target.path()));
    let Ok(request_lock) = ctx.store.lock(&target, &LockOptions::try_once()).await else {
        debug!("request is locked by someone else");
        return Ok(());
    };
    let request = match ctx.store.get_request(&plan.request_id).await {
        Ok(Some(r)) if still_requested(&r) => r,
        other => {
            debug!(
                found = other.is_ok(),
                "request is gone or no longer requested"
            );
            let _ = ctx.store.unlock(&request_lock).await;
            return Ok(());
        }
    };
    let launch = LaunchContext {
        request: Some(request.safe_attributes()),
        ..launch
    };
    let mut h = Handler {
        ctx,
        ledger,
        launch,
        request,
        request_lock,
        held: Vec::new(),
        created: Vec::new(),
    };
    info!("accepting node request");
    h.request.state = Some(RequestState::Pending);
    h.request.state_time = Some(now());
    if let Err(e) = h.ctx.store.update_request(&h.request).await {
        let _ = h.ctx.store.unlock(&h.request_lock).await;
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
            if !registered::alive(&self.ctx, &*self.launch.provider, node_id).await {
                return Ok(false);
            }
            let target = LockTarget::Node(node_id.clone());
            let Ok(lock) = self.ctx.store.lock(&target, &LockOptions::try_once()).await else {
                debug!(node_id = %node_id, "ready node was locked meanwhile");
                return Ok(false);
            };
            let node = match self.ctx.store.get_node(node_id).await {
                Ok(Some(n)) if n.state == Some(NodeState::Ready) && n.allocated_to.is_none() => n,
                _ => {
                    let _ = self.ctx.store.unlock(&lock).await;
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
            self.ctx.store.update_node(&node).await?;
            debug!(node_id = %node_id, "reusing ready node");
        }
        Ok(true)
    }

    /// Create, lock and launch the new nodes; relaunch aborted ones, and
    /// create those admission found no room for, when quota frees.
    async fn launch_all(&mut self, mut todo: Vec<(usize, String)>) -> Result<Done> {
        while !todo.is_empty() {
            let batch = match self.create_nodes(&todo).await? {
                Some(batch) => {
                    todo.clear();
                    batch
                }
                None => Vec::new(),
            };
            let rt = self.launch.runtime.clone();
            rt.launches_started(batch.len());
            self.ledger
                .launching(&self.request.id, batch.len() as isize);
            let launch_ctx = &self.launch;
            let ids: Vec<&str> = batch.iter().map(|(_, n)| n.id.as_str()).collect();
            tasks::waiting_on(format!("launches of nodes {}", ids.join(", ")));
            let results = join_all(batch.into_iter().map(|(index, mut node)| {
                let span = info_span!("launch", node_id = %node.id);
                async move {
                    let outcome = launch::launch(launch_ctx, &mut node).await;
                    (index, node, outcome)
                }
                .instrument(span)
            }))
            .await;
            rt.launches_ended(results.len());
            self.ledger
                .launching(&self.request.id, -(results.len() as isize));

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
                        let _ = self.ctx.store.unlock(&held.lock).await;
                        let label = node.labels.first().cloned().unwrap_or_default();
                        todo.push((index, label));
                    }
                }
            }
            if failed {
                return Ok(Done::Failed);
            }
            if !todo.is_empty() {
                self.ledger.set_aborted(&self.request.id, true);
                info!("pausing at a limit until quota frees up");
                tasks::waiting_on("quota to free up (at a limit)");
                let freed = self.ledger.quota_freed();
                let _ = tokio::time::timeout(Duration::from_secs(10), freed).await;
                self.ledger.set_aborted(&self.request.id, false);
            }
        }
        Ok(Done::Fulfilled)
    }

    /// Create the nodes of `todo` (label index, label) `init` through
    /// admission, all or none, then lock each and store it `building`
    /// (upstream's order: an unlocked `building` node is cleaned up).
    /// `None` when admission finds no room for them now.
    async fn create_nodes(
        &mut self,
        todo: &[(usize, String)],
    ) -> Result<Option<Vec<(usize, Node)>>> {
        let mut nodes = Vec::with_capacity(todo.len());
        for (_, label) in todo {
            nodes.push(self.new_node(label).await);
        }
        let batch = admission::Batch {
            key: self.request.id.clone(),
            labels: todo.iter().map(|(_, l)| l.clone()).collect(),
            tenant: self.request.tenant_name.clone(),
        };
        if !admission::admit(&self.launch, &self.ledger, &batch, &mut nodes).await? {
            return Ok(None);
        }
        for node in &nodes {
            self.ledger.node_created(&self.request.id, &node.id);
            // Known before it is locked, so that an abandon can find it.
            self.created.push(node.id.clone());
        }
        let mut created = Vec::with_capacity(nodes.len());
        for ((index, label), mut node) in todo.iter().zip(nodes) {
            let lock = self
                .ctx
                .store
                .lock(&LockTarget::Node(node.id.clone()), &LockOptions::try_once())
                .await?;
            self.created.retain(|id| *id != node.id);
            self.held.push(Held {
                index: *index,
                node: node.clone(),
                lock,
                reused: false,
            });
            launch::prepare(&self.launch, &mut node).await;
            node.set_state(NodeState::Building);
            self.ctx.store.update_node(&node).await?;
            if let Some(h) = self.held.iter_mut().find(|h| h.node.id == node.id) {
                h.node = node.clone();
            }
            debug!(node_id = %node.id, label, "created building node");
            created.push((*index, node));
        }
        Ok(Some(created))
    }

    /// A new `init` node of `label` for this request, not yet stored, with
    /// the resources it will use (so that other launchers count it from the
    /// moment it exists).
    async fn new_node(&self, label: &str) -> Node {
        let mut node = Node::new(NodeState::Init);
        node.labels = vec![label.to_string()];
        node.provider = Some(self.ledger.provider.clone());
        node.pool = Some(self.ledger.pool.clone());
        node.launcher = Some(self.ledger.launcher_id.clone());
        node.allocated_to = Some(self.request.id.clone());
        node.tenant_name = self.request.tenant_name.clone();
        node.requestor = self.request.requestor.clone();
        node.created_time = Some(now());
        node.attributes = self.launch.pool_cfg.node_attributes.as_ref().and_then(|v| {
            match JsonValue::from(v.clone()) {
                JsonValue::Object(o) => Some(o),
                _ => None,
            }
        });
        node.resources = launch::resources_of(&self.launch, label).await;
        node
    }

    /// Every node is ready: unlock them, store the request fulfilled, unlock it.
    async fn finish_fulfilled(mut self) -> Result<()> {
        let mut ordered: Vec<&Held> = self.held.iter().collect();
        ordered.sort_by_key(|h| h.index);
        self.request.nodes = ordered.iter().map(|h| h.node.id.clone()).collect();
        self.request.state = Some(RequestState::Fulfilled);
        self.request.state_time = Some(now());
        self.unlock_nodes().await;
        match self.ctx.store.update_request(&self.request).await {
            Ok(()) => {
                info!(nodes = ?self.request.nodes, "fulfilled node request");
                self.ctx.counters.bump(Counter::RequestsFulfilled);
            }
            Err(Error::RequestNotFound { .. }) => {
                info!("node request disappeared; releasing its nodes");
                self.release_allocations().await;
            }
            Err(e) => warn!(error = %e, "could not store the fulfilled request"),
        }
        let _ = self.ctx.store.unlock(&self.request_lock).await;
        Ok(())
    }

    /// A launch failed: decline the request (failing it if every pool
    /// declined), unlock everything.
    async fn finish_declined(mut self) -> Result<()> {
        self.unlock_nodes().await;
        let ledger = self.ledger.clone();
        let result = async {
            let failed = mark_declined(&self.ctx, &ledger, &mut self.request).await?;
            info!("{}", declined_line("because nodes failed", failed));
            self.ctx.store.update_request(&self.request).await
        }
        .await;
        let _ = self.ctx.store.unlock(&self.request_lock).await;
        result
    }

    /// Give the request back (`requested`), releasing reused nodes and
    /// leaving new ones unlocked for cleanup.
    async fn requeue(mut self) -> Result<()> {
        for h in &mut self.held {
            if h.reused {
                h.node.allocated_to = None;
                if let Err(e) = self.ctx.store.update_node(&h.node).await {
                    warn!(node_id = %h.node.id, error = %e, "could not release node");
                }
            }
        }
        self.unlock_nodes().await;
        self.request.state = Some(RequestState::Requested);
        self.request.nodes.clear();
        self.request.state_time = Some(now());
        let result = match self.ctx.store.update_request(&self.request).await {
            Err(Error::RequestNotFound { .. }) => Ok(()),
            other => other,
        };
        let _ = self.ctx.store.unlock(&self.request_lock).await;
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
        let store = self.ctx.store.clone();
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
        self.request.state_time = Some(now());
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
        if let Err(e) = self.ctx.nodes.sync(&*self.ctx.store).await {
            debug!(error = %e, "cannot look for init nodes of the abandoned request");
            return strays;
        }
        let request = self.request.id.as_str();
        let launcher = self.ledger.launcher_id.as_str();
        self.ctx.nodes.with(|nodes| {
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
        let store = &self.ctx.store;
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
            if let Err(e) = self.ctx.store.unlock(&h.lock).await {
                debug!(node_id = %h.node.id, error = %e, "node lock already gone");
            }
        }
    }

    /// The request vanished after fulfilment: clear `allocated_to` on its
    /// nodes so others can use them.
    async fn release_allocations(&mut self) {
        for h in &self.held {
            let target = LockTarget::Node(h.node.id.clone());
            let Ok(lock) = self.ctx.store.lock(&target, &LockOptions::try_once()).await else {
                continue;
            };
            if let Ok(Some(mut node)) = self.ctx.store.get_node(&h.node.id).await {
                if node.allocated_to.as_deref() == Some(self.request.id.as_str()) {
                    node.allocated_to = None;
                    let _ = self.ctx.store.update_node(&node).await;
                }
            }
            let _ = self.ctx.store.unlock(&lock).await;
        }
    }
}

/// The one log line of a decline: `why`, and whether the request failed
/// with it (every pool declined).
pub(crate) fn declined_line(why: &str, failed: bool) -> String {
    if failed {
        format!("declining node request {why}; every pool declined it: failing it")
    } else {
        format!("declining node request {why}")
    }
}

/// Decline a request for this pool; fail it when every registered pool has
/// declined it (upstream's `_declineRequest`). `Ok(true)` when the request
/// failed with this decline.
pub(crate) async fn decline(ctx: &Context, ledger: &Ledger, request_id: &str) -> Result<bool> {
    let target = LockTarget::Request(request_id.to_string());
    let Ok(handle) = ctx.store.lock(&target, &LockOptions::try_once()).await else {
        return Ok(false);
    };
    let result = async {
        let Some(mut request) = ctx.store.get_request(request_id).await? else {
            return Ok(false);
        };
        if request.state != Some(RequestState::Requested)
            || request.declined_by.contains(&ledger.launcher_id)
        {
            return Ok(false);
        }
        let failed = mark_declined(ctx, ledger, &mut request).await?;
        ctx.store.update_request(&request).await?;
        Ok(failed)
    }
    .await;
    if let Err(e) = ctx.store.unlock(&handle).await {
        debug!(error = %e, "request lock already gone");
    }
    result
}

/// Fail request `id` if it is still `requested` and every registered pool
/// has declined it (a pool that had not may have gone since the last
/// decline). Under the request's lock.
pub(crate) async fn fail_if_declined_by_all(ctx: &Context, id: &str) -> Result<()> {
    let target = LockTarget::Request(id.to_string());
    let Ok(handle) = ctx.store.lock(&target, &LockOptions::try_once()).await else {
        return Ok(());
    };
    let result = async {
        let Some(mut request) = ctx.store.get_request(id).await? else {
            return Ok(());
        };
        if request.state != Some(RequestState::Requested) {
            return Ok(());
        }
        let pools = ctx.store.list_components(POOL_KIND).await?;
        if !declined_by_every_pool(&pools, &request.declined_by) {
            return Ok(());
        }
        request.state = Some(RequestState::Failed);
        request.state_time = Some(now());
        ctx.store.update_request(&request).await?;
        ctx.counters.bump(Counter::RequestsFailed);
        info!(request_id = %id, "every live pool has declined the node request: failing it");
        Ok(())
    }
    .await;
    if let Err(e) = ctx.store.unlock(&handle).await {
        debug!(error = %e, "request lock already gone");
    }
    result
}

/// Whether every pool registered in `pools` is among `declined_by`: then
/// no live pool is left to take the request.
pub(crate) fn declined_by_every_pool(pools: &[Component], declined_by: &[String]) -> bool {
    pools
        .iter()
        .all(|c| c.id.as_ref().is_some_and(|id| declined_by.contains(id)))
}

/// Add this pool to `declined_by`; the request fails if every registered
/// pool declined it (`Ok(true)`), else goes back to `requested`.
pub(crate) async fn mark_declined(
    ctx: &Context,
    ledger: &Ledger,
    request: &mut NodeRequest,
) -> Result<bool> {
    if !request.declined_by.contains(&ledger.launcher_id) {
        request.declined_by.push(ledger.launcher_id.clone());
    }
    ctx.counters.bump(Counter::RequestsDeclined);
    let pools = ctx.store.list_components(POOL_KIND).await?;
    let all_declined = declined_by_every_pool(&pools, &request.declined_by);
    request.state = Some(if all_declined {
        ctx.counters.bump(Counter::RequestsFailed);
        RequestState::Failed
    } else {
        RequestState::Requested
    });
    request.state_time = Some(now());
    Ok(all_declined)
}
