//! The deleter: deletes nodes at once when the store announces a node to
//! delete, plus a sweep every `delete_interval` (upstream's
//! `DeletedNodeWorker`): unlocked nodes in a cleanup state, ready nodes of
//! vanished requests, orphaned `init` nodes. It is a kube-style runner: a
//! de-duplicating queue with busy and again sets, a semaphore, and a
//! handler that answers "look again in d". It also makes room in a pool at
//! a limit ([`Deleter::make_room`]) and deletes the nodes the periodic
//! cleanup ([`super::cleanup`]) locked ([`Deleter::delete_locked`]).
//!
//! Nodes of providers with pre-registered nodes (static hosts) are handed
//! back to their provider instead: a `used` one is left to the provider's
//! next pass ([`super::registered`]), which deletes the record and registers
//! the host again; any other is deleted without touching the host, then a
//! pass registers the host's slot again.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use super::context::Context;
use super::ledger::POOL_KIND;
use super::nodes::NodeSummary;
use super::registered::{self, Registrar};
use super::stats::Counter;
use super::util::{lock, now};
use crate::model::{Node, NodeState};
use crate::provider::{for_each_instance, wait_gone, Instance, Provider};
use crate::store::{LockHandle, LockOptions, LockTarget};
use crate::tasks::{self, during, TaskExt};
use crate::Result;

/// States in which an unlocked node is deleted (upstream's cleanup states).
const CLEANUP_STATES: &[NodeState] = &[
    NodeState::Used,
    NodeState::InUse,
    NodeState::Building,
    NodeState::Failed,
    NodeState::Deleting,
    NodeState::Deleted,
    NodeState::Aborted,
    // Ours: a validation node whose launcher died (upstream never writes it).
    NodeState::Testing,
];

/// A node being deleted within this many seconds keeps the pool from
/// deleting another unused node to make room (upstream: 5 minutes).
const MAX_DELETE_AGE: f64 = 300.0;

/// A node someone else marked `deleting` is left this long before it is
/// deleted. Upstream's `nodepool delete` marks a node `deleting`, unlocks
/// it, then lists it with its lock; upstream's launcher deletes such nodes
/// on its 5-second pass, and the CLI's listing fails (kazoo `NoNodeError`,
/// exit 1) when the node vanished between its two reads. Nodes this
/// launcher marks itself are deleted at once.
const DELETING_GRACE: Duration = Duration::from_secs(1);

/// How long one deletion waits for the cloud to forget the instance
/// before it leaves the `deleting` record to the next sweep.
const INSTANCE_GONE_WAIT: Duration = Duration::from_secs(60);

/// How long a node whose launch may have run, with no instance recorded or
/// listed, keeps its record (counted against its pool's limits) after it
/// was marked `deleting`: a create call its dead launcher had sent may
/// still land. Its launcher's session ended before the node came here
/// (seconds), so this is a margin on top.
const CREATE_IN_FLIGHT_GRACE: Duration = Duration::from_secs(10);

/// How long this launcher remembers a node it marked `deleting` itself.
const OURS_MEMORY: Duration = Duration::from_secs(60);

/// The oldest unused nodes tried, in order, to make room.
const MAX_CANDIDATES: usize = 64;

fn in_cleanup_state(node: &Node) -> bool {
    node.state.is_some_and(|s| CLEANUP_STATES.contains(&s))
}

/// Node ids that may need deleting, deduplicated.
#[derive(Debug, Default)]
struct DeleteQueue {
    inner: Mutex<QueueInner>,
    notify: Notify,
    sweep: AtomicBool,
}

#[derive(Debug, Default)]
struct QueueInner {
    pending: VecDeque<String>,
    queued: HashSet<String>,
    busy: HashSet<String>,
    /// Offered while busy: looked at again when the current look ends, so a
    /// wake-up that arrives mid-look (e.g. the holder unlocking) is not lost.
    again: HashSet<String>,
    /// Nodes this launcher marked `deleting` itself, and when: they get no
    /// [`DELETING_GRACE`].
    ours: HashMap<String, Instant>,
}

impl DeleteQueue {
    fn offer(&self, id: &str) {
        let mut q = lock(&self.inner);
        if q.busy.contains(id) {
            q.again.insert(id.to_string());
            return;
        }
        if !q.queued.insert(id.to_string()) {
            return;
        }
        q.pending.push_back(id.to_string());
        drop(q);
        self.notify.notify_one();
    }

    /// This launcher marked node `id` `deleting` itself: delete it without
    /// the grace left to nodes others mark.
    fn marked_by_us(&self, id: &str) {
        let mut q = lock(&self.inner);
        q.ours.retain(|_, at| at.elapsed() < OURS_MEMORY);
        q.ours.insert(id.to_string(), Instant::now());
    }

    fn is_ours(&self, id: &str) -> bool {
        lock(&self.inner).ours.contains_key(id)
    }

    fn sweep_now(&self) {
        self.sweep.store(true, Ordering::Relaxed);
        self.notify.notify_one();
    }

    fn in_progress(&self) -> usize {
        lock(&self.inner).busy.len()
    }

    fn take(&self) -> Option<String> {
        let mut q = lock(&self.inner);
        let id = q.pending.pop_front()?;
        q.queued.remove(&id);
        q.busy.insert(id.clone());
        Some(id)
    }

    fn done(&self, id: &str) {
        let mut q = lock(&self.inner);
        q.busy.remove(id);
        if q.again.remove(id) && q.queued.insert(id.to_string()) {
            q.pending.push_back(id.to_string());
            drop(q);
            self.notify.notify_one();
        }
    }
}

/// The deleter: its queue and the handles it works with. Others offer it
/// nodes ([`Deleter::offer`]), ask for a sweep ([`Deleter::sweep_now`]),
/// hand it nodes they locked ([`Deleter::delete_locked`]) or ask it to make
/// room in a pool ([`Deleter::make_room`]).
#[derive(Debug)]
pub(crate) struct Deleter {
    ctx: Arc<Context>,
    /// Passes of providers of pre-registered nodes, asked for when one of
    /// their nodes is handed back.
    registrar: Arc<Registrar>,
    queue: DeleteQueue,
}

impl Deleter {
    pub(crate) fn new(ctx: Arc<Context>, registrar: Arc<Registrar>) -> Self {
        Self {
            ctx,
            registrar,
            queue: DeleteQueue::default(),
        }
    }

    /// Look at node `id` soon.
    pub(crate) fn offer(&self, id: &str) {
        self.queue.offer(id);
    }

    /// Run a full sweep soon.
    pub(crate) fn sweep_now(&self) {
        self.queue.sweep_now();
    }

    /// Deletions in progress.
    pub(crate) fn in_progress(&self) -> usize {
        self.queue.in_progress()
    }
}

impl Deleter {
    /// The deleter task: deletes offered nodes, sweeps every `delete_interval`.
    /// On cancellation it waits for the deletions in progress.
    pub(crate) async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let registry = self.ctx.settings.tasks.clone();
        self.deletions(cancel).in_task(&registry, "deleter").await
    }

    async fn deletions(self: Arc<Self>, cancel: CancellationToken) {
        let settings = &self.ctx.settings;
        let permits = Arc::new(Semaphore::new(settings.delete_concurrency.max(1)));
        let mut running = JoinSet::new();
        let mut next_sweep = tokio::time::Instant::now();
        while !cancel.is_cancelled() {
            if tokio::time::Instant::now() >= next_sweep
                || self.queue.sweep.swap(false, Ordering::Relaxed)
            {
                tasks::waiting_on("deletion sweep: listing nodes");
                if let Err(e) = self.sweep().await {
                    warn!(error = %e, "deletion sweep failed");
                }
                next_sweep = tokio::time::Instant::now() + settings.delete_interval;
            }
            while let Some(id) = self.queue.take() {
                tasks::waiting_on("a free deletion slot");
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let task = format!("deletion of node {id}");
                let deleter = self.clone();
                running.spawn(
                    async move {
                        let again = match deleter.consider(&id).await {
                            Ok(again) => again,
                            Err(e) => {
                                debug!(error = %e, "node cleanup failed");
                                None
                            }
                        };
                        deleter.queue.done(&id);
                        drop(permit);
                        if let Some(wait) = again {
                            // Detached: a stop does not wait for it.
                            tokio::spawn(async move {
                                tokio::time::sleep(wait).await;
                                deleter.queue.offer(&id);
                            });
                        }
                    }
                    .instrument(info_span!("cleanup"))
                    .in_task(&settings.tasks, task),
                );
            }
            while running.try_join_next().is_some() {}
            tasks::waiting_on("waiting for a node to delete or the sweep interval");
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = self.queue.notify.notified() => {}
                _ = tokio::time::sleep_until(next_sweep) => {}
            }
        }
        while running.join_next().await.is_some() {}
    }

    /// Delete node `id` if it is unlocked and in a cleanup state. Returns when
    /// to look at it again, for a node others marked `deleting` within the
    /// last [`DELETING_GRACE`].
    async fn consider(&self, id: &str) -> Result<Option<Duration>> {
        let ctx = &*self.ctx;
        let Some(node) = ctx.store.get_node(id).await? else {
            return Ok(None);
        };
        if !in_cleanup_state(&node) {
            return Ok(None);
        }
        let Some(provider) = node.provider.as_deref() else {
            return Ok(None);
        };
        if ctx.provider_for_cleanup(provider).is_none() {
            return Ok(None);
        }
        if node.state == Some(NodeState::Deleting) && !self.queue.is_ours(id) {
            let age = now() - node.state_time.unwrap_or(0.0);
            let left = DELETING_GRACE.as_secs_f64() - age.max(0.0);
            if left > 0.0 {
                debug!(node_id = %id, "node marked deleting moments ago; deleting it shortly");
                let wait = Duration::try_from_secs_f64(left).unwrap_or(DELETING_GRACE);
                return Ok(Some(wait.min(DELETING_GRACE)));
            }
        }
        if node.state == Some(NodeState::Used)
            && registered::is_configured_preregistered(ctx, provider)
        {
            // The host is not deleted: the provider's pass deletes the used
            // record and registers the host's slot again (unless the host left
            // the config). A record still locked is left for a later offer.
            debug!(node_id = %id, provider, "handing a used node back to its provider");
            self.registrar.request(provider, false);
            return Ok(None);
        }
        let target = LockTarget::Node(id.to_string());
        tasks::waiting_on(format!("lock {}", target.path()));
        let Ok(handle) = ctx.store.lock(&target, &LockOptions::try_once()).await else {
            return Ok(None);
        };
        match ctx.store.get_node(id).await {
            Ok(Some(node)) if in_cleanup_state(&node) => {
                self.delete_locked(node, handle).await.map(|()| None)
            }
            other => {
                let _ = ctx.store.unlock(&handle).await;
                other.map(|_| None)
            }
        }
    }

    /// Delete a locked node: mark it `deleting`, delete its instance, delete
    /// its record (which drops the lock). On a cloud error the node stays
    /// `deleting` and unlocked, for the next sweep.
    pub(crate) async fn delete_locked(&self, mut node: Node, handle: LockHandle) -> Result<()> {
        let ctx = &*self.ctx;
        let span = info_span!("delete", node_id = %node.id, provider = ?node.provider);
        async {
            // A launch was under way (or may have been) when the node came
            // here: its instance may exist though its id was never written
            // (a launcher killed between the cloud's create and the write).
            let launch_may_have_run = matches!(
                node.state,
                Some(NodeState::Building | NodeState::Testing | NodeState::Deleting)
            );
            if node.state != Some(NodeState::Deleting) {
                node.set_state(NodeState::Deleting);
                if let Err(e) = ctx.store.update_node(&node).await {
                    let _ = ctx.store.unlock(&handle).await;
                    return Err(e);
                }
            }
            let provider = node
                .provider
                .as_deref()
                .and_then(|p| ctx.provider_for_cleanup(p));
            // Pre-registered hosts are never deleted, only their records.
            let preregistered = provider.as_ref().is_some_and(|p| p.registered().is_some());
            let mut instances: Vec<String> = node.external_id.iter().cloned().collect();
            let look_up = instances.is_empty() && launch_may_have_run && !preregistered;
            if let Some(p) = provider.as_ref().filter(|_| look_up) {
                // Found through the node id our metadata carries, and
                // deleted like any instance of the node: until then the
                // record keeps counting against the pool's limits.
                match instances_of(&**p, node.provider.as_deref().unwrap_or_default(), &node.id)
                    .await
                {
                    Ok(found) if found.is_empty() && !grace_over(&node, CREATE_IN_FLIGHT_GRACE) => {
                        // A create call still in flight when its launcher
                        // died may yet make the instance: the record keeps
                        // counting a little longer, then goes.
                        debug!("no instance of the node yet; its record is kept a few seconds more");
                        let _ = ctx.store.unlock(&handle).await;
                        return Ok(());
                    }
                    Ok(found) => {
                        if let [only] = found.as_slice() {
                            // Known from now on, like any recorded instance.
                            node.external_id = Some(only.clone());
                            if let Err(e) = ctx.store.update_node(&node).await {
                                debug!(error = %e, "could not record the instance found");
                            }
                        }
                        instances = found;
                    }
                    Err(e) => {
                        warn!(error = %e, "cannot look for an instance of a node without one recorded; will retry");
                        let _ = ctx.store.unlock(&handle).await;
                        return Err(e);
                    }
                }
            }
            if let Some(provider) = provider.as_ref().filter(|_| !preregistered) {
                for external_id in instances.iter().map(String::as_str) {
                    let what = format!(
                        "provider delete_instance {} instance {external_id} node {}",
                        provider.name(),
                        node.id
                    );
                    if let Err(e) = during(what, provider.delete_instance(external_id)).await {
                        warn!(%external_id, error = %e, "could not delete instance; will retry");
                        let _ = ctx.store.unlock(&handle).await;
                        return Err(e);
                    }
                    // The record stays (`deleting`, counted against the pool's
                    // limits) until the cloud stops counting the server, as
                    // upstream waits: else a refill launches into a quota the
                    // cloud still spends on it and draws a refusal.
                    let what = format!("instance {external_id} of node {} to be gone", node.id);
                    match during(what, wait_gone(&**provider, external_id, INSTANCE_GONE_WAIT)).await {
                        Ok(true) => {}
                        Ok(false) => {
                            debug!(%external_id, "instance still deleting; the node is kept until it is gone");
                            let _ = ctx.store.unlock(&handle).await;
                            return Ok(());
                        }
                        Err(e) => {
                            warn!(%external_id, error = %e, "cannot tell whether the instance is gone; will retry");
                            let _ = ctx.store.unlock(&handle).await;
                            return Err(e);
                        }
                    }
                }
            }
            if let Err(e) = ctx.store.delete_node(&node.id).await {
                // Left `deleting` (or `deleted`) and unlocked for the next sweep.
                warn!(error = %e, "could not delete the node record; will retry");
                let _ = ctx.store.unlock(&handle).await;
                return Err(e);
            }
            // The record (and its lock) is gone; releasing may report it lost.
            let _ = ctx.store.unlock(&handle).await;
            ctx.counters.bump(Counter::NodesDeleted);
            info!(state = ?node.state, "deleted node");
            if let Some(name) = node.provider.as_deref() {
                if preregistered && registered::is_configured_preregistered(ctx, name) {
                    // Register the host's slot again.
                    self.registrar.request(name, false);
                }
            }
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// The sweep: offer every unlocked node in a cleanup state, release ready
    /// nodes whose request vanished, delete orphaned `init` nodes: those of a
    /// launcher that is gone, and those whose request is gone (a handler that
    /// lost its store connection between creating and locking one, and could
    /// not mark it itself).
    async fn sweep(&self) -> Result<()> {
        let ctx = &*self.ctx;
        ctx.nodes.sync(&*ctx.store).await?;
        // The request cache, not a listing: at 10,000 outstanding requests a
        // listing every pass costs megabytes (and 10,000 reads on ZooKeeper).
        ctx.requests.sync(&*ctx.store).await?;
        let requests: BTreeSet<String> = ctx.requests.with(|r| r.keys().cloned().collect());
        let pools: BTreeSet<String> = ctx
            .store
            .list_components(POOL_KIND)
            .await?
            .into_iter()
            .filter_map(|c| c.id)
            .collect();
        let mut orphans = Vec::new();
        let mut init = Vec::new();
        ctx.nodes.with(|nodes| {
            for (id, node) in nodes {
                let known = node
                    .provider
                    .as_deref()
                    .is_some_and(|p| ctx.provider_for_cleanup(p).is_some());
                if !known {
                    continue;
                }
                if node.state.is_some_and(|s| CLEANUP_STATES.contains(&s)) {
                    self.queue.offer(id);
                } else if node.state == Some(NodeState::Ready)
                    && node
                        .allocated_to
                        .as_deref()
                        .is_some_and(|r| !requests.contains(r))
                {
                    orphans.push(id.clone());
                } else if node.state == Some(NodeState::Init)
                    && orphaned_init(node, &pools, &requests)
                {
                    init.push(id.clone());
                }
            }
        });
        for id in orphans {
            self.deallocate_orphan(&id, &requests).await;
        }
        for id in init {
            self.delete_orphaned_init(&id, &pools).await;
        }
        Ok(())
    }

    /// Delete an orphaned `init` node if it is unlocked and still orphaned by a
    /// direct read (its request checked again).
    async fn delete_orphaned_init(&self, id: &str, pools: &BTreeSet<String>) {
        let ctx = &*self.ctx;
        let target = LockTarget::Node(id.to_string());
        let Ok(handle) = ctx.store.lock(&target, &LockOptions::try_once()).await else {
            return;
        };
        let node = match ctx.store.get_node(id).await {
            Ok(Some(n)) if n.state == Some(NodeState::Init) => n,
            _ => {
                let _ = ctx.store.unlock(&handle).await;
                return;
            }
        };
        let launcher_gone = node.launcher.as_ref().map_or(true, |l| !pools.contains(l));
        let request_gone = match node.allocated_to.as_deref() {
            None => true,
            Some(request) => matches!(ctx.store.get_request(request).await, Ok(None)),
        };
        if launcher_gone {
            info!(node_id = %id, "deleting init node of a gone launcher");
        } else if request_gone {
            info!(node_id = %id, request_id = ?node.allocated_to, "deleting init node of a gone request");
        } else {
            let _ = ctx.store.unlock(&handle).await;
            return;
        }
        let _ = self.delete_locked(node, handle).await;
    }

    async fn deallocate_orphan(&self, id: &str, requests: &BTreeSet<String>) {
        let ctx = &*self.ctx;
        let target = LockTarget::Node(id.to_string());
        let Ok(handle) = ctx.store.lock(&target, &LockOptions::try_once()).await else {
            return;
        };
        if let Ok(Some(mut node)) = ctx.store.get_node(id).await {
            let missing = node
                .allocated_to
                .as_ref()
                .is_some_and(|r| !requests.contains(r));
            if node.state == Some(NodeState::Ready) && missing {
                // Double check with a direct read: the listing may be old.
                let request = node.allocated_to.clone().unwrap_or_default();
                if matches!(ctx.store.get_request(&request).await, Ok(None)) {
                    debug!(node_id = %id, request_id = %request, "deallocating node of a missing request");
                    node.allocated_to = None;
                    let _ = ctx.store.update_node(&node).await;
                }
            }
        }
        let _ = ctx.store.unlock(&handle).await;
    }

    /// At a limit, upstream deletes the pool's oldest unused ready node to make
    /// room, unless one of its nodes is already being deleted (recently).
    pub(crate) async fn make_room(&self, provider: &str, pool: &str) -> Result<()> {
        let ctx = &*self.ctx;
        let t = now();
        let candidates = ctx.nodes.with(|nodes| {
            let mut candidates: Vec<(f64, &String)> = Vec::new();
            for (id, node) in nodes {
                if !node.provider_is(provider) || !node.pool_is(pool) {
                    continue;
                }
                match node.state {
                    Some(NodeState::Ready) if node.allocated_to.is_none() => {
                        candidates.push((node.state_time.unwrap_or(0.0), id))
                    }
                    Some(NodeState::Deleting)
                        if t - node.state_time.unwrap_or(0.0) < MAX_DELETE_AGE =>
                    {
                        return Vec::new()
                    }
                    _ => {}
                }
            }
            candidates.sort_by(|a, b| a.0.total_cmp(&b.0));
            // The first one nobody holds is taken; a later pass tries again.
            candidates
                .into_iter()
                .take(MAX_CANDIDATES)
                .map(|(_, id)| id.clone())
                .collect()
        });
        let store = &*ctx.store;
        for candidate in candidates {
            let target = LockTarget::Node(candidate.clone());
            let Ok(handle) = store.lock(&target, &LockOptions::try_once()).await else {
                continue;
            };
            match store.get_node(&candidate).await? {
                Some(mut node)
                    if node.state == Some(NodeState::Ready) && node.allocated_to.is_none() =>
                {
                    info!(node_id = %node.id, "deleting oldest unused node to make room");
                    node.set_state(NodeState::Deleting);
                    self.queue.marked_by_us(&node.id);
                    let result = store.update_node(&node).await;
                    let _ = store.unlock(&handle).await;
                    return result;
                }
                _ => {
                    let _ = store.unlock(&handle).await;
                }
            }
        }
        Ok(())
    }
}

/// Whether `node` has been in its state (`deleting`) for `grace`.
fn grace_over(node: &Node, grace: Duration) -> bool {
    let since = node.state_time.unwrap_or(0.0);
    now() - since >= grace.as_secs_f64()
}

/// The instances of node `node_id` the cloud lists (our metadata names it),
/// when the provider can list instances; none otherwise.
async fn instances_of(
    provider: &(dyn Provider + 'static),
    provider_name: &str,
    node_id: &str,
) -> Result<Vec<String>> {
    if !provider.capabilities().instance_listing {
        return Ok(Vec::new());
    }
    let mut found: Vec<String> = Vec::new();
    let (name, id) = (provider_name.to_owned(), node_id.to_owned());
    let visit = |instance: Instance| {
        if instance.node_id_of(&name) == Some(id.as_str()) {
            found.push(instance.external_id);
        }
    };
    for_each_instance(provider, visit).await?;
    if !found.is_empty() {
        info!(instances = ?found, "found the instance of a node whose id was never recorded");
    }
    Ok(found)
}

/// Whether an `init` node is nobody's work: its launcher's pool is not
/// registered, or its request is gone (`requests` was listed after the node
/// cache was synced, so a node's request, created before the node, is in it
/// unless it was deleted).
fn orphaned_init(
    node: &NodeSummary,
    pools: &BTreeSet<String>,
    requests: &BTreeSet<String>,
) -> bool {
    let launcher_gone = node
        .launcher
        .as_deref()
        .map_or(true, |l| !pools.contains(l));
    let request_gone = node
        .allocated_to
        .as_deref()
        .map_or(true, |r| !requests.contains(r));
    launcher_gone || request_gone
}
