//! The pool worker: one task per provider pool. Each pass reads the open
//! requests (from the request cache, [`super::requests`]), asks the
//! scheduler, and acts on its decisions; accepted requests are handed to
//! request handlers ([`super::handler`]) running concurrently.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use super::cleanup;
use super::handler::{self, Plan};
use super::input;
use super::requests::RequestSummary;
use super::shared::{self, lock, now, Shared};
use super::stats::{Counter, PoolStatus};
use crate::model::{Component, ComponentState, NodeRequest, RequestState};
use crate::scheduler::{Decision, Limit, RequestInfo, MIN_READY_REQUESTOR};
use crate::store::{LockOptions, LockTarget};
use crate::Result;

/// The component kind of a pool worker (upstream's `PoolComponent`).
pub(crate) const POOL_KIND: &str = crate::model::POOL;

/// A request this pool is handling.
#[derive(Debug, Clone, Default)]
pub(crate) struct Active {
    /// Labels of the nodes it launches (new nodes, all attempts).
    pub(crate) launch_labels: Vec<String>,
    /// Ready nodes it takes.
    pub(crate) reused: Vec<String>,
    /// Nodes it created in the store.
    pub(crate) created: BTreeSet<String>,
    /// Launches in progress.
    pub(crate) launching: usize,
    /// Waiting for quota after the cloud refused a launch.
    pub(crate) aborted: bool,
}

/// The pool's bookkeeping of its own work.
#[derive(Debug, Clone, Default)]
pub(crate) struct Book {
    pub(crate) active: BTreeMap<String, Active>,
    pub(crate) waiting: BTreeSet<String>,
}

/// What one pool worker shares with its handlers and the launcher.
#[derive(Debug)]
pub(crate) struct PoolState {
    pub(crate) provider: String,
    pub(crate) pool: String,
    /// The pool worker id, as written in `declined_by` and node `launcher`.
    pub(crate) launcher_id: String,
    /// Component registration name.
    component_name: String,
    /// Run a pass soon.
    pub(crate) wake: Notify,
    /// A node was deleted: quota may be free again.
    pub(crate) quota_freed: Notify,
    paused: AtomicBool,
    pub(crate) book: Mutex<Book>,
}

impl PoolState {
    pub(crate) fn new(hostname: &str, provider: &str, pool: &str) -> Self {
        let uuid = uuid::Uuid::new_v4().simple().to_string();
        Self {
            provider: provider.to_string(),
            pool: pool.to_string(),
            launcher_id: format!("{hostname}-PoolWorker.{provider}-{pool}-{uuid}"),
            component_name: format!("{hostname}-{provider}-{pool}-{uuid}"),
            wake: Notify::new(),
            quota_freed: Notify::new(),
            paused: AtomicBool::new(false),
            book: Mutex::new(Book::default()),
        }
    }

    pub(crate) fn status(&self) -> PoolStatus {
        let book = lock(&self.book);
        PoolStatus {
            provider: self.provider.clone(),
            pool: self.pool.clone(),
            launcher_id: self.launcher_id.clone(),
            paused: self.paused.load(Ordering::Relaxed),
            active_requests: book.active.keys().cloned().collect(),
            waiting_requests: book.waiting.iter().cloned().collect(),
            launching: book.active.values().map(|a| a.launching).sum(),
        }
    }

    fn component(&self, shared: &Shared, paused: bool) -> Component {
        let snapshot = shared.snapshot();
        let pool = snapshot
            .config
            .provider(&self.provider)
            .and_then(|p| p.pools.iter().find(|x| x.name == self.pool));
        let mut c = Component::new(POOL_KIND, shared.settings.hostname.clone());
        c.state = ComponentState::Running;
        c.id = Some(self.launcher_id.clone());
        c.pool_name = Some(self.pool.clone());
        c.provider_name = Some(self.provider.clone());
        c.supported_labels = Some(
            pool.map(|p| p.labels.iter().map(|l| l.name.clone()).collect())
                .unwrap_or_default(),
        );
        c.priority = Some(pool.map(|p| p.priority).unwrap_or(100));
        c.paused = Some(paused);
        c
    }

    async fn set_paused(&self, shared: &Shared, paused: bool) {
        if self.paused.swap(paused, Ordering::Relaxed) == paused {
            return;
        }
        debug!(paused, "pool pause changed");
        let component = self.component(shared, paused);
        if let Err(e) = shared
            .store
            .register_component(POOL_KIND, &self.component_name, &component)
            .await
        {
            warn!(error = %e, "could not update the pool component");
        }
    }
}

/// Request ids sort by (precedence, relative priority, sequence).
#[cfg(test)]
pub(crate) fn priority_key(request: &NodeRequest) -> (String, i64, String) {
    let (precedence, relative_priority, sequence) =
        request_order(&request.id, request.relative_priority);
    (
        precedence.to_string(),
        relative_priority,
        sequence.to_string(),
    )
}

/// The order requests are taken in: (precedence, relative priority,
/// sequence) of request `id`.
fn request_order(id: &str, relative_priority: i64) -> (&str, i64, &str) {
    let (precedence, sequence) = id.split_once('-').unwrap_or(("", id));
    (precedence, relative_priority, sequence)
}

/// The pool worker task.
pub(crate) async fn run(shared: Arc<Shared>, state: Arc<PoolState>, cancel: CancellationToken) {
    let span = info_span!("pool", provider = %state.provider, pool = %state.pool);
    async move {
        lock(&shared.pools).insert((state.provider.clone(), state.pool.clone()), state.clone());
        let component = state.component(&shared, false);
        if let Err(e) = shared
            .store
            .register_component(POOL_KIND, &state.component_name, &component)
            .await
        {
            warn!(error = %e, "could not register the pool component");
        }
        let mut handlers = JoinSet::new();
        let interval = shared.settings.pool_interval;
        loop {
            if let Err(e) = pass(&shared, &state, &mut handlers, &cancel).await {
                warn!(error = %e, "pool pass failed");
            }
            reap(&mut handlers);
            if !shared::wait_or_tick(&state.wake, interval, &cancel).await {
                break;
            }
        }
        info!(handlers = handlers.len(), "pool worker draining");
        while let Some(done) = handlers.join_next().await {
            if let Err(e) = done {
                warn!(error = %e, "request handler ended abnormally");
            }
        }
        if let Err(e) = shared
            .store
            .unregister_component(POOL_KIND, &state.component_name)
            .await
        {
            warn!(error = %e, "could not unregister the pool component");
        }
        let key = (state.provider.clone(), state.pool.clone());
        let mut pools = lock(&shared.pools);
        if pools.get(&key).is_some_and(|s| Arc::ptr_eq(s, &state)) {
            pools.remove(&key);
        }
        info!("pool worker stopped");
    }
    .instrument(span)
    .await
}

/// One scheduling pass.
async fn pass(
    shared: &Arc<Shared>,
    state: &Arc<PoolState>,
    handlers: &mut JoinSet<()>,
    cancel: &CancellationToken,
) -> Result<()> {
    let snapshot = shared.snapshot();
    let Some(provider_cfg) = snapshot.config.provider(&state.provider) else {
        return Ok(());
    };
    let Some(pool_cfg) = provider_cfg.pools.iter().find(|p| p.name == state.pool) else {
        return Ok(());
    };
    let Some(provider) = snapshot.providers.get(&state.provider) else {
        return Ok(());
    };
    shared.requests.sync(&*shared.store).await?;
    // The book is read before the nodes, so a node created meanwhile is
    // counted (twice at worst), never missed.
    let book = lock(&state.book).clone();
    let open: Vec<RequestInfo> = shared.requests.with(|requests| {
        let mut open: Vec<(&String, &RequestSummary)> = requests
            .iter()
            .filter(|(id, r)| {
                r.state == Some(RequestState::Requested)
                    && !r.declined_by(&state.launcher_id)
                    && !book.active.contains_key(*id)
            })
            .collect();
        open.sort_by(|(a, x), (b, y)| {
            request_order(a, x.relative_priority).cmp(&request_order(b, y.relative_priority))
        });
        open.into_iter()
            .map(|(id, r)| r.info(id, book.waiting.contains(id)))
            .collect()
    });
    {
        let open_ids: HashSet<&str> = open.iter().map(|r| r.id.as_str()).collect();
        let mut live = lock(&state.book);
        live.waiting.retain(|id| open_ids.contains(id.as_str()));
    }
    let aborted = book.active.values().any(|a| a.aborted);
    if open.is_empty() {
        state.set_paused(shared, aborted).await;
        return Ok(());
    }
    shared.nodes.sync(&*shared.store).await?;
    let components = shared.store.list_components(POOL_KIND).await?;
    let rt = shared.runtime(&state.provider);
    let data = input::PassData {
        config: &snapshot.config,
        provider_cfg,
        pool_cfg,
        provider,
        runtime: &rt,
        components: &components,
        book: &book,
    };
    let scheduling = input::build(shared, state, &data, open).await;
    let decisions = shared.scheduler.schedule(&scheduling);
    let open: HashMap<&str, &RequestInfo> = scheduling
        .requests
        .iter()
        .map(|r| (r.id.as_str(), r))
        .collect();

    let concurrency_full = provider_cfg.max_concurrency == 0
        || (provider_cfg.max_concurrency > 0
            && shared::launching(&rt)
                >= usize::try_from(provider_cfg.max_concurrency).unwrap_or(0));
    let preregistered = provider.registered().is_some();
    let mut paused = aborted;
    let mut wait_for_room = false;
    for decision in decisions {
        match decision {
            Decision::Accept {
                request_id,
                reuse,
                launch,
            } => {
                reap(handlers);
                if paused
                    || concurrency_full
                    || handlers.len() >= shared.settings.max_handlers_per_pool.max(1)
                    || cancel.is_cancelled()
                {
                    continue;
                }
                let Some(request) = open.get(request_id.as_str()).copied() else {
                    continue;
                };
                if preregistered && !launch.is_empty() {
                    // No ready node for a label and this provider cannot
                    // launch one (upstream: always at quota).
                    cannot_launch(shared, state, request).await;
                    continue;
                }
                let launch: Vec<(usize, String)> = launch
                    .into_iter()
                    .filter_map(|i| request.labels.get(i).map(|l| (i, l.clone())))
                    .collect();
                let active = Active {
                    launch_labels: launch.iter().map(|(_, l)| l.clone()).collect(),
                    reused: reuse.iter().map(|(_, n)| n.clone()).collect(),
                    ..Active::default()
                };
                {
                    let mut live = lock(&state.book);
                    live.waiting.remove(&request_id);
                    live.active.insert(request_id.clone(), active);
                }
                let plan = Plan {
                    request_id,
                    reuse,
                    launch,
                };
                handlers.spawn(handler::run(
                    shared.clone(),
                    state.clone(),
                    plan,
                    cancel.clone(),
                ));
            }
            Decision::Decline { request_id, reason } => {
                lock(&state.book).waiting.remove(&request_id);
                info!(request_id = %request_id, %reason, "declining node request");
                if let Err(e) = decline(shared, state, &request_id).await {
                    warn!(request_id = %request_id, error = %e, "could not decline request");
                }
            }
            Decision::Wait {
                request_id,
                limited_by,
            } => {
                debug!(request_id = %request_id, %limited_by, "request waits");
                lock(&state.book).waiting.insert(request_id);
                if limited_by != Limit::Tenant {
                    paused = true;
                    wait_for_room = true;
                }
            }
        }
    }
    state.set_paused(shared, paused).await;
    // Deleting a pre-registered node makes no room: it is registered again.
    if wait_for_room && !preregistered {
        let shared = shared.clone();
        let (provider, pool) = (state.provider.clone(), state.pool.clone());
        tokio::spawn(async move {
            if let Err(e) = cleanup::delete_oldest_unused(&shared, &provider, &pool).await {
                debug!(error = %e, "could not free an unused node");
            }
        });
    }
    Ok(())
}

/// Collect the handlers that finished.
fn reap(handlers: &mut JoinSet<()>) {
    while let Some(done) = handlers.try_join_next() {
        if let Err(e) = done {
            warn!(error = %e, "request handler ended abnormally");
        }
    }
}

/// A pool of pre-registered nodes has no ready node for a request (or the
/// request does not reuse nodes): as upstream at quota, a min-ready request
/// is declined, any other left for a later pass or another pool.
async fn cannot_launch(shared: &Shared, state: &PoolState, request: &RequestInfo) {
    if request.requestor.as_deref() == Some(MIN_READY_REQUESTOR) {
        debug!(request_id = %request.id, "declining min-ready request: no node to hand out");
        if let Err(e) = decline(shared, state, &request.id).await {
            warn!(request_id = %request.id, error = %e, "could not decline request");
        }
    } else {
        debug!(request_id = %request.id, "no ready node to hand out; request left for later");
    }
}

/// Decline a request for this pool; fail it when every registered pool has
/// declined it (upstream's `_declineRequest`).
pub(crate) async fn decline(shared: &Shared, state: &PoolState, request_id: &str) -> Result<()> {
    let target = LockTarget::Request(request_id.to_string());
    let Ok(handle) = shared.store.lock(&target, &LockOptions::try_once()).await else {
        return Ok(());
    };
    let result = async {
        let Some(mut request) = shared.store.get_request(request_id).await? else {
            return Ok(());
        };
        if request.state != Some(RequestState::Requested)
            || request.declined_by.contains(&state.launcher_id)
        {
            return Ok(());
        }
        mark_declined(shared, state, &mut request).await?;
        shared.store.update_request(&request).await
    }
    .await;
    if let Err(e) = shared.store.unlock(&handle).await {
        debug!(error = %e, "request lock already gone");
    }
    result
}

/// Add this pool to `declined_by`; the request fails if every registered
/// pool declined it, else goes back to `requested`.
pub(crate) async fn mark_declined(
    shared: &Shared,
    state: &PoolState,
    request: &mut NodeRequest,
) -> Result<()> {
    if !request.declined_by.contains(&state.launcher_id) {
        request.declined_by.push(state.launcher_id.clone());
    }
    shared.counters.bump(Counter::RequestsDeclined);
    let pools = shared.store.list_components(POOL_KIND).await?;
    let all_declined = pools.iter().all(|c| {
        c.id.as_ref()
            .is_some_and(|id| request.declined_by.contains(id))
    });
    request.state = Some(if all_declined {
        info!(request_id = %request.id, "every pool declined: failing request");
        shared.counters.bump(Counter::RequestsFailed);
        RequestState::Failed
    } else {
        RequestState::Requested
    });
    request.state_time = Some(now());
    Ok(())
}
