//! The periodic cleanup (upstream's `CleanupWorker`), every
//! `cleanup_interval`: lost requests (left `pending` by a launcher that
//! died), `max-ready-age` and held nodes (handed to the deleter),
//! leaked instances ([`super::leaks`]), empty node entries and stale
//! request locks.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::context::Context;
use super::deleter::Deleter;
use super::leaks::LeakTracker;
use super::nodes::NodeSummary;
use super::util::{now, wait_or_tick};
use crate::config::Config;
use crate::model::{NodeState, RequestState};
use crate::store::{LockOptions, LockTarget};
use crate::tasks::{self, TaskExt};
use crate::Result;

/// A request lock whose request is gone is deleted once it is this old
/// (upstream's `LOCK_CLEANUP`): well past any request still being made.
const REQUEST_LOCK_MIN_AGE: Duration = Duration::from_secs(8 * 3600);

/// The periodic cleanup task.
pub(crate) async fn run(ctx: Arc<Context>, deleter: Arc<Deleter>, cancel: CancellationToken) {
    let registry = ctx.settings.tasks.clone();
    passes(ctx, deleter, cancel)
        .in_task(&registry, "cleanup")
        .await
}

async fn passes(ctx: Arc<Context>, deleter: Arc<Deleter>, cancel: CancellationToken) {
    let mut leaks = LeakTracker::default();
    let never = Notify::new();
    loop {
        tasks::waiting_on("cleanup pass: lost requests");
        if let Err(e) = reset_lost_requests(&ctx).await {
            warn!(error = %e, "lost request cleanup failed");
        }
        tasks::waiting_on("cleanup pass: max-ready-age and max-hold-age");
        if let Err(e) = expire_nodes(&ctx, &deleter).await {
            warn!(error = %e, "max-ready-age / max-hold-age cleanup failed");
        }
        tasks::waiting_on("cleanup pass: leaked instances");
        if let Err(e) = leaks.pass(&ctx).await {
            warn!(error = %e, "leaked instance cleanup failed");
        }
        match ctx.store.purge_empty_nodes().await {
            Ok(0) => {}
            Ok(purged) => debug!(purged, "removed empty node entries"),
            Err(e) => warn!(error = %e, "empty node cleanup failed"),
        }
        match ctx
            .store
            .purge_stale_request_locks(REQUEST_LOCK_MIN_AGE)
            .await
        {
            Ok(0) => {}
            Ok(purged) => debug!(purged, "removed stale request locks"),
            Err(e) => warn!(error = %e, "request lock cleanup failed"),
        }
        tasks::waiting_on("waiting for the cleanup interval");
        if !wait_or_tick(&never, ctx.settings.cleanup_interval, &cancel).await {
            return;
        }
    }
}

/// Requests left `pending` and unlocked by a launcher that died go back to
/// `requested`, their nodes deallocated (`init` ones deleted).
async fn reset_lost_requests(ctx: &Context) -> Result<()> {
    ctx.requests.sync(&*ctx.store).await?;
    let pending: Vec<String> = ctx.requests.with(|r| {
        r.iter()
            .filter(|(_, r)| r.state == Some(RequestState::Pending))
            .map(|(id, _)| id.clone())
            .collect()
    });
    for id in pending {
        let target = LockTarget::Request(id.clone());
        let Ok(handle) = ctx.store.lock(&target, &LockOptions::try_once()).await else {
            continue;
        };
        // `reset_lost_request` reads the request again under the lock.
        let result = reset_lost_request(ctx, &id).await;
        let _ = ctx.store.unlock(&handle).await;
        if let Err(e) = result {
            warn!(request_id = %id, error = %e, "could not reset lost request");
        }
    }
    Ok(())
}

/// Reset request `id` if it is lost: `pending` with its lock free (its
/// lock was just released). Read first, so that the release that ends
/// every request's handling costs no write.
pub(crate) async fn reset_if_lost(ctx: &Context, id: &str) {
    // A reset can give up (a node it must deallocate was being deleted):
    // look again a few times rather than leave it to the periodic pass.
    for attempt in 0..5 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // The cache first (no read): a request it holds as anything but
        // `pending`, with no change announced since, is not lost.
        let cached_pending = ctx.requests.with(|r| {
            r.get(id)
                .is_some_and(|r| r.state == Some(RequestState::Pending))
        });
        if !cached_pending && !ctx.requests.maybe_changed(id) {
            return;
        }
        // One read of the request itself: most were just fulfilled.
        match ctx.store.get_request(id).await {
            Ok(Some(r)) if r.state == Some(RequestState::Pending) => {}
            Ok(_) => return,
            Err(e) => {
                debug!(request_id = %id, error = %e, "cannot read a request to see whether it is lost");
                return;
            }
        }
        let target = LockTarget::Request(id.to_string());
        // Held: its handler (or another launcher resetting it) has it.
        let Ok(handle) = ctx.store.lock(&target, &LockOptions::try_once()).await else {
            return;
        };
        if let Err(e) = reset_lost_request(ctx, id).await {
            warn!(request_id = %id, error = %e, "could not reset lost request");
        }
        let _ = ctx.store.unlock(&handle).await;
    }
}

async fn reset_lost_request(ctx: &Context, id: &str) -> Result<()> {
    let Some(mut request) = ctx.store.get_request(id).await? else {
        return Ok(());
    };
    if request.state != Some(RequestState::Pending) {
        return Ok(());
    }
    ctx.nodes.sync(&*ctx.store).await?;
    let allocated: Vec<String> = ctx.nodes.with(|nodes| {
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
        let handle = match ctx
            .store
            .lock(&target, &LockOptions::wait(Duration::from_secs(10)))
            .await
        {
            Ok(handle) => handle,
            Err(_) if matches!(ctx.store.get_node(&node_id).await, Ok(None)) => continue,
            Err(e) => {
                warn!(node_id = %node_id, error = %e, "cannot lock node to deallocate it from a lost request");
                return Ok(());
            }
        };
        if let Some(mut node) = ctx.store.get_node(&node_id).await? {
            if node.allocated_to.as_deref() == Some(id) {
                if node.state == Some(NodeState::Init) {
                    node.set_state(NodeState::Deleting);
                }
                node.allocated_to = None;
                ctx.store.update_node(&node).await?;
            }
        }
        let _ = ctx.store.unlock(&handle).await;
    }
    request.state = Some(RequestState::Requested);
    request.state_time = Some(now());
    request.nodes.clear();
    ctx.store.update_request(&request).await?;
    info!(request_id = %id, "reset lost request");
    Ok(())
}

/// `max-ready-age` for ready nodes, `hold_expiration`/`max-hold-age` for held
/// ones.
async fn expire_nodes(ctx: &Context, deleter: &Deleter) -> Result<()> {
    let snapshot = ctx.snapshot();
    let config = &snapshot.config;
    let t = now();
    ctx.nodes.sync(&*ctx.store).await?;
    let expired: Vec<(String, Option<NodeState>)> = ctx.nodes.with(|nodes| {
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
        let Ok(handle) = ctx.store.lock(&target, &LockOptions::try_once()).await else {
            continue;
        };
        match ctx.store.get_node(&id).await? {
            Some(n)
                if n.state == state
                    && (n.state == Some(NodeState::Hold) || n.allocated_to.is_none()) =>
            {
                let age = t - n.state_time.unwrap_or(t);
                info!(node_id = %n.id, state = ?n.state, age, "node expired");
                let _ = deleter.delete_locked(n, handle).await;
            }
            _ => {
                let _ = ctx.store.unlock(&handle).await;
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
