//! `min-ready`: keep that many ready, unallocated nodes of each label by
//! submitting node requests (upstream's `createMinReady`). Requests are for
//! one node each, precedence "900", `reuse: false`, requestor
//! [`MIN_READY_REQUESTOR`]. A fulfilled one is deleted and its nodes are
//! deallocated, so they stay `ready` for anyone; a failed one is deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use super::launch::newest_upload;
use super::shared::{lock, now, Shared};
use super::stats::Counter;
use crate::model::{NodeRequest, NodeState, RequestState};
use crate::scheduler::MIN_READY_REQUESTOR;
use crate::store::Change;
use crate::Result;

/// Shortest time between two min-ready passes woken by events.
const MIN_SPACING: Duration = Duration::from_millis(50);

/// The min-ready requests this launcher submitted.
#[derive(Debug, Default)]
pub(crate) struct MinReady {
    notify: Notify,
    /// Outstanding requests: id → label.
    submitted: Mutex<BTreeMap<String, Arc<str>>>,
    /// When a min-ready request of each label last failed: the label is
    /// not requested again for `min_ready_interval` after that. Without it a
    /// pool at quota declines a new request as fast as events wake the
    /// pass (~700 a second in the scale benchmark), each decline several
    /// store writes.
    failed: Mutex<BTreeMap<Arc<str>, Instant>>,
}

impl MinReady {
    /// Run a pass soon.
    pub(crate) fn wake(&self) {
        self.notify.notify_one();
    }

    /// A request changed: wake if it is one of ours.
    pub(crate) fn request_changed(&self, id: &str, _change: Change) {
        if lock(&self.submitted).contains_key(id) {
            self.wake();
        }
    }
}

/// The min-ready task.
pub(crate) async fn run(shared: Arc<Shared>, cancel: CancellationToken) {
    async {
        loop {
            if let Err(e) = pass(&shared).await {
                warn!(error = %e, "min-ready pass failed");
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(MIN_SPACING) => {}
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = shared.min_ready.notify.notified() => {}
                _ = tokio::time::sleep(shared.settings.min_ready_interval) => {}
            }
        }
    }
    .instrument(info_span!("min_ready"))
    .await
}

/// Delete our outstanding min-ready requests (on shutdown).
pub(crate) async fn withdraw(shared: &Shared) {
    if let Err(e) = remove_completed(shared).await {
        debug!(error = %e, "could not settle min-ready requests");
    }
    let outstanding: Vec<String> = lock(&shared.min_ready.submitted).keys().cloned().collect();
    for id in outstanding {
        if let Err(e) = shared.store.delete_request(&id).await {
            debug!(request_id = %id, error = %e, "could not withdraw min-ready request");
        }
    }
    lock(&shared.min_ready.submitted).clear();
}

/// Settle finished requests: fulfilled ones release their nodes, failed
/// ones go; both are deleted. The request cache tells which may have
/// finished; those (and any the cache does not hold yet) are read.
async fn remove_completed(shared: &Shared) -> Result<()> {
    if lock(&shared.min_ready.submitted).is_empty() {
        return Ok(());
    }
    shared.requests.sync(&*shared.store).await?;
    let check: Vec<String> = {
        let submitted = lock(&shared.min_ready.submitted);
        shared.requests.with(|requests| {
            submitted
                .keys()
                .filter(|id| {
                    requests.get(*id).map_or(true, |r| {
                        matches!(
                            r.state,
                            Some(RequestState::Fulfilled | RequestState::Failed)
                        )
                    })
                })
                .cloned()
                .collect()
        })
    };
    for id in check {
        let Some(request) = shared.store.get_request(&id).await? else {
            lock(&shared.min_ready.submitted).remove(&id);
            continue;
        };
        match request.state {
            Some(RequestState::Fulfilled) => {
                for node_id in &request.nodes {
                    if let Some(mut node) = shared.store.get_node(node_id).await? {
                        node.allocated_to = None;
                        shared.store.update_node(&node).await?;
                    }
                }
                shared.store.delete_request(&id).await?;
                lock(&shared.min_ready.submitted).remove(&id);
            }
            Some(RequestState::Failed) => {
                debug!(request_id = %id, "min-ready node request failed");
                shared.store.delete_request(&id).await?;
                if let Some(label) = lock(&shared.min_ready.submitted).remove(&id) {
                    lock(&shared.min_ready.failed).insert(label, Instant::now());
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether some configured pool can boot `label` now (its diskimage has a
/// ready upload, or it uses a cloud image).
async fn image_available(shared: &Shared, label: &str) -> bool {
    let snapshot = shared.snapshot();
    for provider in &snapshot.config.providers {
        for pool in &provider.pools {
            for pool_label in pool.labels.iter().filter(|l| l.name == label) {
                match &pool_label.diskimage {
                    None => return true,
                    Some(image) => {
                        if let Ok(Some(_)) =
                            newest_upload(&*shared.store, image, &provider.name).await
                        {
                            return true;
                        }
                    }
                }
            }
        }
    }
    false
}

async fn pass(shared: &Shared) -> Result<()> {
    remove_completed(shared).await?;
    let snapshot = shared.snapshot();
    let wanted: Vec<(String, i64)> = snapshot
        .config
        .labels
        .iter()
        .filter(|l| l.min_ready > 0)
        .map(|l| (l.name.clone(), l.min_ready))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let requested: BTreeSet<Arc<str>> = lock(&shared.min_ready.submitted)
        .values()
        .cloned()
        .collect();
    let backoff = shared.settings.min_ready_interval;
    let failed_lately: BTreeSet<Arc<str>> = {
        let mut failed = lock(&shared.min_ready.failed);
        failed.retain(|_, at| at.elapsed() < backoff);
        failed.keys().cloned().collect()
    };
    shared.nodes.sync(&*shared.store).await?;
    for (label, min_ready) in wanted {
        if requested.contains(label.as_str()) || failed_lately.contains(label.as_str()) {
            continue;
        }
        let ready = shared.nodes.with(|nodes| {
            nodes
                .values()
                .filter(|n| {
                    n.state == Some(NodeState::Ready)
                        && n.allocated_to.is_none()
                        && n.has_label(&label)
                })
                .count()
        });
        let need = usize::try_from(min_ready)
            .unwrap_or(0)
            .saturating_sub(ready);
        if need == 0 || !image_available(shared, &label).await {
            continue;
        }
        info!(label = %label, need, "creating min-ready requests");
        let shared_label: Arc<str> = Arc::from(label.as_str());
        for _ in 0..need {
            let request = NodeRequest {
                state: Some(RequestState::Requested),
                state_time: Some(now()),
                node_types: vec![label.clone()],
                reuse: false,
                requestor: Some(MIN_READY_REQUESTOR.to_string()),
                created_time: Some(now()),
                ..NodeRequest::default()
            };
            let id = shared.store.create_request(&request, "900").await?;
            shared.counters.bump(Counter::MinReadyRequests);
            lock(&shared.min_ready.submitted).insert(id, shared_label.clone());
        }
    }
    Ok(())
}
