//! `min-ready`: keep that many ready, unallocated nodes of each label by
//! submitting node requests (upstream's `createMinReady`). Requests are for
//! one node each, precedence "900", `reuse: false`, requestor
//! [`MIN_READY_REQUESTOR`]. A fulfilled one is deleted and its nodes are
//! deallocated, so they stay `ready` for anyone; a failed one is deleted.
//!
//! Launchers sharing a store elect one leader, the holder of the
//! coordination lock [`LEADER_LOCK`]; only it submits min-ready requests,
//! so `min-ready` is filled once, not once per launcher. It counts the
//! outstanding min-ready requests of every launcher, and nodes still
//! coming (being built for a request that is gone, so they will be ready
//! and free), as upstream counts only its own. The lock goes with the
//! leader's session; a follower is woken when it is released and takes
//! over.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use super::context::Context;
use super::stats::Counter;
use super::util::{lock, now};
use crate::builder::newest_ready_upload_in as newest_upload;
use crate::model::{NodeRequest, NodeState, RequestState};
use crate::scheduler::MIN_READY_REQUESTOR;
use crate::store::{Change, LockHandle, LockOptions, LockTarget};
use crate::tasks::{self, TaskExt};
use crate::{Error, Result};

/// Shortest time between two min-ready passes woken by events.
const MIN_SPACING: Duration = Duration::from_millis(50);

/// The name of the coordination lock whose holder submits min-ready
/// requests.
pub(crate) const LEADER_LOCK: &str = "min-ready";

/// The min-ready stage: the requests this launcher submitted. The
/// supervisor wakes it on store events ([`MinReady::wake`],
/// [`MinReady::request_changed`]).
#[derive(Debug)]
pub(crate) struct MinReady {
    ctx: Arc<Context>,
    notify: Notify,
    /// Outstanding requests: id → label.
    submitted: Mutex<BTreeMap<String, Arc<str>>>,
    /// When a min-ready request of each label last failed: the label is
    /// not requested again for `min_ready_interval` after that. Without it a
    /// pool at quota declines a new request as fast as events wake the
    /// pass (~700 a second in the scale benchmark), each decline several
    /// store writes.
    failed: Mutex<BTreeMap<Arc<str>, Instant>>,
    /// Labels whose last min-ready request failed: asking again is logged
    /// at debug, so a label that cannot fit shows one line an interval
    /// (the decline), not three.
    retrying: Mutex<BTreeSet<Arc<str>>>,
    /// The leader lock, while this launcher holds it.
    leadership: tokio::sync::Mutex<Option<LockHandle>>,
    /// Who this launcher is, as written in the leader lock.
    identifier: String,
}

impl MinReady {
    pub(crate) fn new(ctx: Arc<Context>) -> Self {
        Self {
            notify: Notify::new(),
            submitted: Mutex::default(),
            failed: Mutex::default(),
            retrying: Mutex::default(),
            leadership: tokio::sync::Mutex::new(None),
            identifier: format!(
                "{}-{}",
                ctx.settings.hostname,
                uuid::Uuid::new_v4().simple()
            ),
            ctx,
        }
    }

    /// Whether this launcher leads min-ready: it holds the leader lock (it
    /// is still first among the contenders), or it takes it now.
    async fn lead(&self) -> Result<bool> {
        let store = &*self.ctx.store;
        let target = LockTarget::Coordination(LEADER_LOCK.to_string());
        let mut held = self.leadership.lock().await;
        // A read first: a follower tries the lock (two writes) only when
        // nobody holds it.
        let contenders = store.lock_contenders(&target).await?;
        if held.is_some() {
            if contenders.first() == Some(&self.identifier) {
                return Ok(true);
            }
            warn!("lost the min-ready leadership (the store session ended?)");
            *held = None;
        }
        if !contenders.is_empty() {
            return Ok(false);
        }
        let options = LockOptions {
            identifier: Some(self.identifier.clone()),
            ..LockOptions::try_once()
        };
        match store.lock(&target, &options).await {
            Ok(handle) => {
                info!("leading min-ready for the launchers sharing this store");
                *held = Some(handle);
                Ok(true)
            }
            Err(Error::LockHeld { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Give the leadership up (on shutdown).
    async fn resign(&self) {
        if let Some(handle) = self.leadership.lock().await.take() {
            if let Err(e) = self.ctx.store.unlock(&handle).await {
                debug!(error = %e, "min-ready leader lock already gone");
            }
        }
    }

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

    /// The min-ready task.
    pub(crate) async fn run(self: Arc<Self>, cancel: CancellationToken) {
        async {
            loop {
                if let Err(e) = self.pass().await {
                    warn!(error = %e, "min-ready pass failed");
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(MIN_SPACING) => {}
                }
                tasks::waiting_on("waiting for a request change or the min-ready interval");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = self.notify.notified() => {}
                    _ = tokio::time::sleep(self.ctx.settings.min_ready_interval) => {}
                }
            }
        }
        .instrument(info_span!("min_ready"))
        .in_task(&self.ctx.settings.tasks, "min-ready")
        .await
    }

    /// Delete our outstanding min-ready requests (on shutdown).
    pub(crate) async fn withdraw(&self) {
        let ctx = &*self.ctx;
        if let Err(e) = self.remove_completed().await {
            debug!(error = %e, "could not settle min-ready requests");
        }
        let outstanding: Vec<String> = lock(&self.submitted).keys().cloned().collect();
        for id in outstanding {
            if let Err(e) = ctx.store.delete_request(&id).await {
                debug!(request_id = %id, error = %e, "could not withdraw min-ready request");
            }
        }
        lock(&self.submitted).clear();
        self.resign().await;
    }

    /// Settle finished requests: fulfilled ones release their nodes, failed
    /// ones go; both are deleted. The request cache tells which may have
    /// finished; those (and any the cache does not hold yet) are read.
    async fn remove_completed(&self) -> Result<()> {
        let ctx = &*self.ctx;
        if lock(&self.submitted).is_empty() {
            return Ok(());
        }
        ctx.requests.sync(&*ctx.store).await?;
        let check: Vec<String> = {
            let submitted = lock(&self.submitted);
            ctx.requests.with(|requests| {
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
            let Some(request) = ctx.store.get_request(&id).await? else {
                lock(&self.submitted).remove(&id);
                continue;
            };
            match request.state {
                Some(RequestState::Fulfilled) => {
                    for node_id in &request.nodes {
                        if let Some(mut node) = ctx.store.get_node(node_id).await? {
                            node.allocated_to = None;
                            ctx.store.update_node(&node).await?;
                        }
                    }
                    ctx.store.delete_request(&id).await?;
                    if let Some(label) = lock(&self.submitted).remove(&id) {
                        lock(&self.retrying).remove(&label);
                    }
                }
                Some(RequestState::Failed) => {
                    debug!(request_id = %id, "min-ready node request failed");
                    ctx.store.delete_request(&id).await?;
                    if let Some(label) = lock(&self.submitted).remove(&id) {
                        lock(&self.retrying).insert(label.clone());
                        lock(&self.failed).insert(label, Instant::now());
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether some configured pool can boot `label` now (its diskimage has a
    /// ready upload, or it uses a cloud image).
    async fn image_available(&self, label: &str) -> bool {
        let ctx = &*self.ctx;
        let snapshot = ctx.snapshot();
        for provider in &snapshot.config.providers {
            for pool in &provider.pools {
                for pool_label in pool.labels.iter().filter(|l| l.name == label) {
                    match &pool_label.diskimage {
                        None => return true,
                        Some(image) => {
                            if let Ok(Some(_)) =
                                newest_upload(&*ctx.store, image, &provider.name).await
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

    async fn pass(&self) -> Result<()> {
        let ctx = &*self.ctx;
        self.remove_completed().await?;
        let snapshot = ctx.snapshot();
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
        if !self.lead().await? {
            return Ok(());
        }
        let backoff = ctx.settings.min_ready_interval;
        let failed_lately: BTreeSet<Arc<str>> = {
            let mut failed = lock(&self.failed);
            failed.retain(|_, at| at.elapsed() < backoff);
            failed.keys().cloned().collect()
        };
        ctx.requests.sync(&*ctx.store).await?;
        ctx.nodes.sync(&*ctx.store).await?;
        // Labels with a min-ready request outstanding, of any launcher (a
        // leader before this one), and ids of the requests that exist.
        let mut requested: BTreeSet<Arc<str>> = lock(&self.submitted).values().cloned().collect();
        let open_requests: BTreeSet<String> = ctx.requests.with(|requests| {
            for r in requests.values() {
                if r.requestor.as_deref() == Some(MIN_READY_REQUESTOR)
                    && matches!(
                        r.state,
                        Some(RequestState::Requested | RequestState::Pending)
                    )
                {
                    requested.extend(r.node_types.iter().cloned());
                }
            }
            requests.keys().cloned().collect()
        });
        for (label, min_ready) in wanted {
            if requested.contains(label.as_str()) || failed_lately.contains(label.as_str()) {
                continue;
            }
            // Ready and free, or ready or being built for a request that
            // is gone (a dead leader's, say): those end ready and free.
            let ready = ctx.nodes.with(|nodes| {
                nodes
                    .values()
                    .filter(|n| n.has_label(&label))
                    .filter(|n| {
                        let orphan = || {
                            n.allocated_to
                                .as_deref()
                                .is_some_and(|r| !open_requests.contains(r))
                        };
                        match n.state {
                            Some(NodeState::Ready) => n.allocated_to.is_none() || orphan(),
                            Some(NodeState::Init | NodeState::Building) => orphan(),
                            _ => false,
                        }
                    })
                    .count()
            });
            let need = usize::try_from(min_ready)
                .unwrap_or(0)
                .saturating_sub(ready);
            if need == 0 || !self.image_available(&label).await {
                continue;
            }
            if lock(&self.retrying).contains(label.as_str()) {
                debug!(label = %label, need, "creating min-ready requests again");
            } else {
                info!(label = %label, need, "creating min-ready requests");
            }
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
                let id = ctx.store.create_request(&request, "900").await?;
                ctx.counters.bump(Counter::MinReadyRequests);
                lock(&self.submitted).insert(id, shared_label.clone());
            }
        }
        Ok(())
    }
}
