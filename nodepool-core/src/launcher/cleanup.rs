//! Deleting nodes: at once when the store announces a node to delete, plus
//! a sweep (upstream's `DeletedNodeWorker`) and the periodic cleanup
//! (upstream's `CleanupWorker`): lost requests, `max-ready-age`, held nodes,
//! leaked instances, empty node entries, stale request locks.
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

use super::leaks::LeakTracker;
use super::nodes::NodeSummary;
use super::pool::POOL_KIND;
use super::registered;
use super::shared::{self, lock, now, Shared};
use super::stats::Counter;
use crate::config::Config;
use crate::model::{Node, NodeState, RequestState};
use crate::store::{LockHandle, LockOptions, LockTarget};
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

/// How long this launcher remembers a node it marked `deleting` itself.
const OURS_MEMORY: Duration = Duration::from_secs(60);

/// The oldest unused nodes tried, in order, to make room.
const MAX_CANDIDATES: usize = 64;

/// A request lock whose request is gone is deleted once it is this old
/// (upstream's `LOCK_CLEANUP`): well past any request still being made.
const REQUEST_LOCK_MIN_AGE: Duration = Duration::from_secs(8 * 3600);

fn in_cleanup_state(node: &Node) -> bool {
    node.state.is_some_and(|s| CLEANUP_STATES.contains(&s))
}

/// Node ids that may need deleting, deduplicated.
#[derive(Debug, Default)]
pub(crate) struct DeleteQueue {
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
    /// Look at node `id` soon.
    pub(crate) fn offer(&self, id: &str) {
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
    pub(crate) fn marked_by_us(&self, id: &str) {
        let mut q = lock(&self.inner);
        q.ours.retain(|_, at| at.elapsed() < OURS_MEMORY);
        q.ours.insert(id.to_string(), Instant::now());
    }

    fn is_ours(&self, id: &str) -> bool {
        lock(&self.inner).ours.contains_key(id)
    }

    /// Run a full sweep soon.
    pub(crate) fn sweep_now(&self) {
        self.sweep.store(true, Ordering::Relaxed);
        self.notify.notify_one();
    }

    /// Deletions in progress.
    pub(crate) fn in_progress(&self) -> usize {
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

/// The deleter task: deletes offered nodes, sweeps every `delete_interval`.
/// On cancellation it waits for the deletions in progress.
pub(crate) async fn run_deleter(shared: Arc<Shared>, cancel: CancellationToken) {
    let permits = Arc::new(Semaphore::new(shared.settings.delete_concurrency.max(1)));
    let mut running = JoinSet::new();
    let mut next_sweep = tokio::time::Instant::now();
    while !cancel.is_cancelled() {
        if tokio::time::Instant::now() >= next_sweep
            || shared.deletes.sweep.swap(false, Ordering::Relaxed)
        {
            if let Err(e) = sweep(&shared).await {
                warn!(error = %e, "deletion sweep failed");
            }
            next_sweep = tokio::time::Instant::now() + shared.settings.delete_interval;
        }
        while let Some(id) = shared.deletes.take() {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let shared = shared.clone();
            running.spawn(
                async move {
                    let again = match consider(&shared, &id).await {
                        Ok(again) => again,
                        Err(e) => {
                            debug!(error = %e, "node cleanup failed");
                            None
                        }
                    };
                    shared.deletes.done(&id);
                    drop(permit);
                    if let Some(wait) = again {
                        // Detached: a stop does not wait for it.
                        tokio::spawn(async move {
                            tokio::time::sleep(wait).await;
                            shared.deletes.offer(&id);
                        });
                    }
                }
                .instrument(info_span!("cleanup")),
            );
        }
        while running.try_join_next().is_some() {}
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = shared.deletes.notify.notified() => {}
            _ = tokio::time::sleep_until(next_sweep) => {}
        }
    }
    while running.join_next().await.is_some() {}
}

/// Delete node `id` if it is unlocked and in a cleanup state. Returns when
/// to look at it again, for a node others marked `deleting` within the
/// last [`DELETING_GRACE`].
async fn consider(shared: &Shared, id: &str) -> Result<Option<Duration>> {
    let Some(node) = shared.store.get_node(id).await? else {
        return Ok(None);
    };
    if !in_cleanup_state(&node) {
        return Ok(None);
    }
    let Some(provider) = node.provider.as_deref() else {
        return Ok(None);
    };
    if shared.provider_for_cleanup(provider).is_none() {
        return Ok(None);
    }
    if node.state == Some(NodeState::Deleting) && !shared.deletes.is_ours(id) {
        let age = now() - node.state_time.unwrap_or(0.0);
        let left = DELETING_GRACE.as_secs_f64() - age.max(0.0);
        if left > 0.0 {
            debug!(node_id = %id, "node marked deleting moments ago; deleting it shortly");
            return Ok(Some(Duration::from_secs_f64(
                left.min(DELETING_GRACE.as_secs_f64()),
            )));
        }
    }
    if node.state == Some(NodeState::Used)
        && registered::is_configured_preregistered(shared, provider)
    {
        // The host is not deleted: the provider's pass deletes the used
        // record and registers the host's slot again (unless the host left
        // the config). A record still locked is left for a later offer.
        debug!(node_id = %id, provider, "handing a used node back to its provider");
        shared.registrar.request(provider, false);
        return Ok(None);
    }
    let target = LockTarget::Node(id.to_string());
    let Ok(handle) = shared.store.lock(&target, &LockOptions::try_once()).await else {
        return Ok(None);
    };
    match shared.store.get_node(id).await {
        Ok(Some(node)) if in_cleanup_state(&node) => {
            delete_locked(shared, node, handle).await.map(|()| None)
        }
        other => {
            let _ = shared.store.unlock(&handle).await;
            other.map(|_| None)
        }
    }
}

/// Delete a locked node: mark it `deleting`, delete its instance, delete
/// its record (which drops the lock). On a cloud error the node stays
/// `deleting` and unlocked, for the next sweep.
pub(crate) async fn delete_locked(
    shared: &Shared,
    mut node: Node,
    handle: LockHandle,
) -> Result<()> {
    let span = info_span!("delete", node_id = %node.id, provider = ?node.provider);
    async {
        if node.state != Some(NodeState::Deleting) {
            node.set_state(NodeState::Deleting);
            if let Err(e) = shared.store.update_node(&node).await {
                let _ = shared.store.unlock(&handle).await;
                return Err(e);
            }
        }
        let provider = node
            .provider
            .as_deref()
            .and_then(|p| shared.provider_for_cleanup(p));
        // Pre-registered hosts are never deleted, only their records.
        let preregistered = provider.as_ref().is_some_and(|p| p.registered().is_some());
        let instance = node.external_id.as_deref().zip(provider.as_ref());
        if let Some((external_id, provider)) = instance.filter(|_| !preregistered) {
            if let Err(e) = provider.delete_instance(external_id).await {
                warn!(%external_id, error = %e, "could not delete instance; will retry");
                let _ = shared.store.unlock(&handle).await;
                return Err(e);
            }
        }
        if let Err(e) = shared.store.delete_node(&node.id).await {
            // Left `deleting` (or `deleted`) and unlocked for the next sweep.
            warn!(error = %e, "could not delete the node record; will retry");
            let _ = shared.store.unlock(&handle).await;
            return Err(e);
        }
        // The record (and its lock) is gone; releasing may report it lost.
        let _ = shared.store.unlock(&handle).await;
        shared.counters.bump(Counter::NodesDeleted);
        info!(state = ?node.state, "deleted node");
        if let Some(name) = node.provider.as_deref() {
            if preregistered && registered::is_configured_preregistered(shared, name) {
                // Register the host's slot again.
                shared.registrar.request(name, false);
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
async fn sweep(shared: &Shared) -> Result<()> {
    shared.nodes.sync(&*shared.store).await?;
    // The request cache, not a listing: at 10,000 outstanding requests a
    // listing every pass costs megabytes (and 10,000 reads on ZooKeeper).
    shared.requests.sync(&*shared.store).await?;
    let requests: BTreeSet<String> = shared.requests.with(|r| r.keys().cloned().collect());
    let pools: BTreeSet<String> = shared
        .store
        .list_components(POOL_KIND)
        .await?
        .into_iter()
        .filter_map(|c| c.id)
        .collect();
    let mut orphans = Vec::new();
    let mut init = Vec::new();
    shared.nodes.with(|nodes| {
        for (id, node) in nodes {
            let known = node
                .provider
                .as_deref()
                .is_some_and(|p| shared.provider_for_cleanup(p).is_some());
            if !known {
                continue;
            }
            if node.state.is_some_and(|s| CLEANUP_STATES.contains(&s)) {
                shared.deletes.offer(id);
            } else if node.state == Some(NodeState::Ready)
                && node
                    .allocated_to
                    .as_deref()
                    .is_some_and(|r| !requests.contains(r))
            {
                orphans.push(id.clone());
            } else if node.state == Some(NodeState::Init) && orphaned_init(node, &pools, &requests)
            {
                init.push(id.clone());
            }
        }
    });
    for id in orphans {
        deallocate_orphan(shared, &id, &requests).await;
    }
    for id in init {
        delete_orphaned_init(shared, &id, &pools).await;
    }
    Ok(())
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

/// Delete an orphaned `init` node if it is unlocked and still orphaned by a
/// direct read (its request checked again).
async fn delete_orphaned_init(shared: &Shared, id: &str, pools: &BTreeSet<String>) {
    let target = LockTarget::Node(id.to_string());
    let Ok(handle) = shared.store.lock(&target, &LockOptions::try_once()).await else {
        return;
    };
    let node = match shared.store.get_node(id).await {
        Ok(Some(n)) if n.state == Some(NodeState::Init) => n,
        _ => {
            let _ = shared.store.unlock(&handle).await;
            return;
        }
    };
    let launcher_gone = node.launcher.as_ref().map_or(true, |l| !pools.contains(l));
    let request_gone = match node.allocated_to.as_deref() {
        None => true,
        Some(request) => matches!(shared.store.get_request(request).await, Ok(None)),
    };
    if launcher_gone {
        info!(node_id = %id, "deleting init node of a gone launcher");
    } else if request_gone {
        info!(node_id = %id, request_id = ?node.allocated_to, "deleting init node of a gone request");
    } else {
        let _ = shared.store.unlock(&handle).await;
        return;
    }
    let _ = delete_locked(shared, node, handle).await;
}

async fn deallocate_orphan(shared: &Shared, id: &str, requests: &BTreeSet<String>) {
    let target = LockTarget::Node(id.to_string());
    let Ok(handle) = shared.store.lock(&target, &LockOptions::try_once()).await else {
        return;
    };
    if let Ok(Some(mut node)) = shared.store.get_node(id).await {
        let missing = node
            .allocated_to
            .as_ref()
            .is_some_and(|r| !requests.contains(r));
        if node.state == Some(NodeState::Ready) && missing {
            // Double check with a direct read: the listing may be old.
            let request = node.allocated_to.clone().unwrap_or_default();
            if matches!(shared.store.get_request(&request).await, Ok(None)) {
                debug!(node_id = %id, request_id = %request, "deallocating node of a missing request");
                node.allocated_to = None;
                let _ = shared.store.update_node(&node).await;
            }
        }
    }
    let _ = shared.store.unlock(&handle).await;
}

/// The periodic cleanup task.
pub(crate) async fn run_periodic(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut leaks = LeakTracker::default();
    let never = Notify::new();
    loop {
        if let Err(e) = reset_lost_requests(&shared).await {
            warn!(error = %e, "lost request cleanup failed");
        }
        if let Err(e) = expire_nodes(&shared).await {
            warn!(error = %e, "max-ready-age / max-hold-age cleanup failed");
        }
        if let Err(e) = leaks.pass(&shared).await {
            warn!(error = %e, "leaked instance cleanup failed");
        }
        match shared.store.purge_empty_nodes().await {
            Ok(0) => {}
            Ok(purged) => debug!(purged, "removed empty node entries"),
            Err(e) => warn!(error = %e, "empty node cleanup failed"),
        }
        match shared
            .store
            .purge_stale_request_locks(REQUEST_LOCK_MIN_AGE)
            .await
        {
            Ok(0) => {}
            Ok(purged) => debug!(purged, "removed stale request locks"),
            Err(e) => warn!(error = %e, "request lock cleanup failed"),
        }
        if !shared::wait_or_tick(&never, shared.settings.cleanup_interval, &cancel).await {
            return;
        }
    }
}

/// Requests left `pending` and unlocked by a launcher that died go back to
/// `requested`, their nodes deallocated (`init` ones deleted).
async fn reset_lost_requests(shared: &Shared) -> Result<()> {
    shared.requests.sync(&*shared.store).await?;
    let pending: Vec<String> = shared.requests.with(|r| {
        r.iter()
            .filter(|(_, r)| r.state == Some(RequestState::Pending))
            .map(|(id, _)| id.clone())
            .collect()
    });
    for id in pending {
        let target = LockTarget::Request(id.clone());
        let Ok(handle) = shared.store.lock(&target, &LockOptions::try_once()).await else {
            continue;
        };
        // `reset_lost_request` reads the request again under the lock.
        let result = reset_lost_request(shared, &id).await;
        let _ = shared.store.unlock(&handle).await;
        if let Err(e) = result {
            warn!(request_id = %id, error = %e, "could not reset lost request");
        }
    }
    Ok(())
}

async fn reset_lost_request(shared: &Shared, id: &str) -> Result<()> {
    let Some(mut request) = shared.store.get_request(id).await? else {
        return Ok(());
    };
    if request.state != Some(RequestState::Pending) {
        return Ok(());
    }
    shared.nodes.sync(&*shared.store).await?;
    let allocated: Vec<String> = shared.nodes.with(|nodes| {
        nodes
            .iter()
            .filter(|(_, n)| n.allocated_to.as_deref() == Some(id))
            .map(|(node_id, _)| node_id.clone())
            .collect()
    });
    for node_id in allocated {
        let target = LockTarget::Node(node_id.clone());
        // Wait, as upstream does: right after a crash the deleter may hold
        // this node's lock briefly while it removes the dead launcher's work.
        // A node it deleted meanwhile (its lock went with it) has nothing
        // left to deallocate; giving up on the request for it would leave
        // the request `pending` until the next pass.
        let handle = match shared
            .store
            .lock(&target, &LockOptions::wait(Duration::from_secs(10)))
            .await
        {
            Ok(handle) => handle,
            Err(_) if matches!(shared.store.get_node(&node_id).await, Ok(None)) => continue,
            Err(e) => {
                warn!(node_id = %node_id, error = %e, "cannot lock node to deallocate it from a lost request");
                return Ok(());
            }
        };
        if let Some(mut node) = shared.store.get_node(&node_id).await? {
            if node.allocated_to.as_deref() == Some(id) {
                if node.state == Some(NodeState::Init) {
                    node.set_state(NodeState::Deleting);
                }
                node.allocated_to = None;
                shared.store.update_node(&node).await?;
            }
        }
        let _ = shared.store.unlock(&handle).await;
    }
    request.state = Some(RequestState::Requested);
    request.state_time = Some(now());
    request.nodes.clear();
    shared.store.update_request(&request).await?;
    info!(request_id = %id, "reset lost request");
    Ok(())
}

/// `max-ready-age` for ready nodes, `hold_expiration`/`max-hold-age` for held
/// ones.
async fn expire_nodes(shared: &Shared) -> Result<()> {
    let snapshot = shared.snapshot();
    let config = &snapshot.config;
    let t = now();
    shared.nodes.sync(&*shared.store).await?;
    let expired: Vec<(String, Option<NodeState>)> = shared.nodes.with(|nodes| {
        nodes
            .iter()
            .filter(|(_, node)| {
                let configured = node
                    .provider
                    .as_deref()
                    .is_some_and(|p| snapshot.providers.contains_key(p));
                configured && is_expired(node, config, t)
            })
            .map(|(id, node)| (id.clone(), node.state))
            .collect()
    });
    for (id, state) in expired {
        let target = LockTarget::Node(id.clone());
        let Ok(handle) = shared.store.lock(&target, &LockOptions::try_once()).await else {
            continue;
        };
        match shared.store.get_node(&id).await? {
            Some(n)
                if n.state == state
                    && (n.state == Some(NodeState::Hold) || n.allocated_to.is_none()) =>
            {
                let age = t - n.state_time.unwrap_or(t);
                info!(node_id = %n.id, state = ?n.state, age, "node expired");
                let _ = delete_locked(shared, n, handle).await;
            }
            _ => {
                let _ = shared.store.unlock(&handle).await;
            }
        }
    }
    Ok(())
}

/// Whether `node` is past `max-ready-age` (ready, unallocated) or its hold
/// time (held) at time `t`.
fn is_expired(node: &NodeSummary, config: &Config, t: f64) -> bool {
    let age = t - node.state_time.unwrap_or(t);
    match node.state {
        Some(NodeState::Ready) if node.allocated_to.is_none() => node
            .labels
            .iter()
            .filter_map(|l| config.label(l))
            .any(|l| l.max_ready_age > 0 && age >= l.max_ready_age as f64),
        Some(NodeState::Hold) => {
            let by_node = node.hold_expiration.filter(|e| *e > 0);
            let limit = match (by_node, config.max_hold_age.filter(|a| *a > 0)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            limit.is_some_and(|l| age >= l as f64)
        }
        _ => false,
    }
}

/// At a limit, upstream deletes the pool's oldest unused ready node to make
/// room, unless one of its nodes is already being deleted (recently).
pub(crate) async fn delete_oldest_unused(
    shared: &Shared,
    provider: &str,
    pool: &str,
) -> Result<()> {
    let t = now();
    let candidates = shared.nodes.with(|nodes| {
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
    let store = &*shared.store;
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
                shared.deletes.marked_by_us(&node.id);
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
