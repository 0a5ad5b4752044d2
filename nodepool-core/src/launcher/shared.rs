//! State shared by the launcher's tasks, the supervisor that starts and stops
//! pool workers, and the watch dispatcher that wakes them.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::cleanup::{self, DeleteQueue};
use super::min_ready::{self, MinReady};
use super::nodes::NodeCache;
use super::pool::{self, PoolState};
use super::registered::{self, Registrar};
use super::requests::RequestCache;
use super::stats::{Counters, LauncherStatus};
use super::LauncherSettings;
use crate::config::Config;
use crate::model::{Component, ComponentState};
use crate::provider::{Provider, Resources};
use crate::scheduler::Scheduler;
use crate::store::{Change, LockTarget, NodeStore, StoreEvent};
use crate::Result;

/// The component kind of a launcher process.
pub(crate) const LAUNCHER_KIND: &str = crate::model::LAUNCHER;

/// One configuration and the providers built for it.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) config: Arc<Config>,
    pub(crate) providers: BTreeMap<String, Arc<dyn Provider>>,
}

/// Per-provider caches and counts, kept across passes.
#[derive(Debug, Default)]
pub(crate) struct ProviderRuntime {
    /// Resources one node of (pool, label) uses.
    pub(crate) label_resources: Mutex<HashMap<(String, String), Resources>>,
    /// The cloud's limits minus unmanaged use, and when it was read.
    pub(crate) quota: Mutex<Option<(Instant, Resources)>>,
    /// Node launches in progress (all pools), for `max-concurrency`.
    pub(crate) launching: AtomicUsize,
}

impl ProviderRuntime {
    /// Forget the cached quota (after the cloud said it is exhausted).
    pub(crate) fn invalidate_quota(&self) {
        if let Ok(mut q) = self.quota.lock() {
            *q = None;
        }
    }
}

/// Everything the launcher's tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) settings: LauncherSettings,
    pub(crate) store: Arc<dyn NodeStore>,
    pub(crate) scheduler: Arc<dyn Scheduler>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Providers removed from the config, kept to delete their nodes.
    retired: Mutex<BTreeMap<String, Arc<dyn Provider>>>,
    runtimes: Mutex<BTreeMap<String, Arc<ProviderRuntime>>>,
    pub(crate) counters: Counters,
    pub(crate) pools: Mutex<BTreeMap<(String, String), Arc<PoolState>>>,
    pub(crate) config_changed: Notify,
    pub(crate) deletes: DeleteQueue,
    pub(crate) min_ready: MinReady,
    /// The store's nodes, as the launcher's decisions read them.
    pub(crate) nodes: NodeCache,
    /// The store's node requests, as pool passes and min-ready read them.
    pub(crate) requests: RequestCache,
    /// Passes of providers with pre-registered nodes to run.
    pub(crate) registrar: Registrar,
}

impl Shared {
    pub(crate) fn new(
        settings: LauncherSettings,
        store: Arc<dyn NodeStore>,
        scheduler: Arc<dyn Scheduler>,
        config: Config,
        providers: BTreeMap<String, Arc<dyn Provider>>,
    ) -> Self {
        Self {
            settings,
            store,
            scheduler,
            snapshot: RwLock::new(Arc::new(Snapshot {
                config: Arc::new(config),
                providers,
            })),
            retired: Mutex::new(BTreeMap::new()),
            runtimes: Mutex::new(BTreeMap::new()),
            counters: Counters::default(),
            pools: Mutex::new(BTreeMap::new()),
            config_changed: Notify::new(),
            deletes: DeleteQueue::default(),
            min_ready: MinReady::default(),
            nodes: NodeCache::default(),
            requests: RequestCache::default(),
            registrar: Registrar::default(),
        }
    }

    /// The current configuration and providers.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn update_config(
        &self,
        config: Config,
        providers: BTreeMap<String, Arc<dyn Provider>>,
    ) {
        let old = self.snapshot();
        {
            let mut retired = lock(&self.retired);
            for (name, provider) in &old.providers {
                if !providers.contains_key(name) {
                    retired.insert(name.clone(), provider.clone());
                }
            }
            for name in providers.keys() {
                retired.remove(name);
            }
        }
        // A rebuilt provider of pre-registered nodes starts with a full pass.
        let rebuilt: Vec<String> = providers
            .iter()
            .filter(|(name, provider)| {
                provider.registered().is_some()
                    && old
                        .providers
                        .get(*name)
                        .map_or(true, |p| !Arc::ptr_eq(p, provider))
            })
            .map(|(name, _)| name.clone())
            .collect();
        {
            // A provider object that changed gets fresh caches.
            let mut runtimes = lock(&self.runtimes);
            runtimes.retain(
                |name, _| match (old.providers.get(name), providers.get(name)) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    _ => false,
                },
            );
        }
        let next = Arc::new(Snapshot {
            config: Arc::new(config),
            providers,
        });
        match self.snapshot.write() {
            Ok(mut s) => *s = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        for name in &rebuilt {
            self.registrar.request(name, true);
        }
        self.config_changed.notify_one();
        self.wake_pools(None);
    }

    /// A provider by name: configured, or retired (for cleanup only).
    pub(crate) fn provider_for_cleanup(&self, name: &str) -> Option<Arc<dyn Provider>> {
        if let Some(p) = self.snapshot().providers.get(name) {
            return Some(p.clone());
        }
        lock(&self.retired).get(name).cloned()
    }

    /// Every provider that may own nodes: configured and retired.
    pub(crate) fn all_providers(&self) -> BTreeMap<String, Arc<dyn Provider>> {
        let mut all = lock(&self.retired).clone();
        all.extend(
            self.snapshot()
                .providers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        all
    }

    pub(crate) fn runtime(&self, provider: &str) -> Arc<ProviderRuntime> {
        lock(&self.runtimes)
            .entry(provider.to_string())
            .or_default()
            .clone()
    }

    /// Wake the pool workers (of one provider, or all).
    pub(crate) fn wake_pools(&self, provider: Option<&str>) {
        for ((p, _), state) in lock(&self.pools).iter() {
            if provider.map_or(true, |want| want == p) {
                state.wake.notify_one();
            }
        }
    }

    /// Tell pools that quota may have freed up.
    fn quota_freed(&self) {
        for state in lock(&self.pools).values() {
            state.quota_freed.notify_waiters();
            state.wake.notify_one();
        }
    }

    pub(crate) fn status(&self) -> LauncherStatus {
        let pools = lock(&self.pools).values().map(|p| p.status()).collect();
        LauncherStatus {
            hostname: self.settings.hostname.clone(),
            pools,
            deleting: self.deletes.in_progress(),
            counters: self.counters.snapshot(),
        }
    }
}

/// Lock a std mutex, recovering from poisoning (the data are caches and
/// bookkeeping that stay consistent per operation).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Seconds since the epoch, as upstream writes `state_time`.
pub(crate) fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

struct Worker {
    cancel: CancellationToken,
    handle: JoinHandle<()>,
}

/// The launcher's main loop; see [`Launcher::run`](super::Launcher::run).
pub(crate) async fn run(shared: Arc<Shared>, cancel: CancellationToken) -> Result<()> {
    let hostname = shared.settings.hostname.clone();
    let mut component = Component::new(LAUNCHER_KIND, hostname.clone());
    component.state = ComponentState::Running;
    shared
        .store
        .register_component(LAUNCHER_KIND, &hostname, &component)
        .await?;
    info!(hostname = %hostname, "launcher starting");

    let background = CancellationToken::new();
    let tasks = vec![
        tokio::spawn(dispatch_events(shared.clone(), background.clone())),
        tokio::spawn(cleanup::run_deleter(shared.clone(), background.clone())),
        tokio::spawn(cleanup::run_periodic(shared.clone(), background.clone())),
        tokio::spawn(min_ready::run(shared.clone(), background.clone())),
        tokio::spawn(registered::run(shared.clone(), background.clone())),
    ];

    let mut workers: BTreeMap<(String, String), Worker> = BTreeMap::new();
    loop {
        reconcile_workers(&shared, &cancel, &mut workers);
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = shared.config_changed.notified() => {}
        }
    }

    info!("launcher draining");
    for (key, worker) in std::mem::take(&mut workers) {
        worker.cancel.cancel();
        if let Err(e) = worker.handle.await {
            warn!(provider = %key.0, pool = %key.1, error = %e, "pool worker ended abnormally");
        }
    }
    background.cancel();
    for task in tasks {
        let _ = task.await;
    }
    min_ready::withdraw(&shared).await;
    if let Err(e) = shared
        .store
        .unregister_component(LAUNCHER_KIND, &hostname)
        .await
    {
        warn!(error = %e, "could not unregister the launcher component");
    }
    info!("launcher stopped");
    Ok(())
}

/// Start workers for new pools, stop those whose pool is gone.
fn reconcile_workers(
    shared: &Arc<Shared>,
    cancel: &CancellationToken,
    workers: &mut BTreeMap<(String, String), Worker>,
) {
    let snapshot = shared.snapshot();
    let mut wanted = Vec::new();
    for provider in &snapshot.config.providers {
        if !snapshot.providers.contains_key(&provider.name) {
            warn!(provider = %provider.name, "no provider object for configured provider");
            continue;
        }
        for pool in &provider.pools {
            wanted.push((provider.name.clone(), pool.name.clone()));
        }
    }
    let gone: Vec<_> = workers
        .keys()
        .filter(|k| !wanted.contains(k) || workers[*k].handle.is_finished())
        .cloned()
        .collect();
    for key in gone {
        if let Some(worker) = workers.remove(&key) {
            info!(provider = %key.0, pool = %key.1, "stopping pool worker");
            worker.cancel.cancel();
            // It drains on its own; nothing waits for it here.
            drop(worker.handle);
        }
    }
    for key in wanted {
        if workers.contains_key(&key) {
            continue;
        }
        info!(provider = %key.0, pool = %key.1, "starting pool worker");
        let token = cancel.child_token();
        let state = Arc::new(PoolState::new(&shared.settings.hostname, &key.0, &key.1));
        let handle = tokio::spawn(pool::run(shared.clone(), state, token.clone()));
        workers.insert(
            key,
            Worker {
                cancel: token,
                handle,
            },
        );
    }
}

/// Turn store events into wake-ups.
async fn dispatch_events(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut events = shared.store.watch();
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            e = events.recv() => e,
        };
        match event {
            Ok(StoreEvent::Node { .. }) => shared.nodes.drain(),
            Ok(StoreEvent::Request { .. }) => shared.requests.drain(),
            Ok(StoreEvent::Resync) | Err(RecvError::Lagged(_)) => {
                shared.nodes.drain();
                shared.requests.drain();
            }
            _ => {}
        }
        match event {
            Ok(StoreEvent::Request { id, change }) => {
                shared.wake_pools(None);
                shared.min_ready.request_changed(&id, change);
            }
            Ok(StoreEvent::Node { id, change }) => match change {
                Change::Put => {
                    shared.deletes.offer(&id);
                    shared.min_ready.wake();
                }
                Change::Deleted => {
                    shared.quota_freed();
                    shared.min_ready.wake();
                }
            },
            Ok(StoreEvent::Lock {
                target: LockTarget::Node(id),
                change: Change::Deleted,
            }) => shared.deletes.offer(&id),
            Ok(StoreEvent::Component { .. }) | Ok(StoreEvent::Image { .. }) => {
                shared.wake_pools(None)
            }
            Ok(StoreEvent::Lock { .. }) => {}
            Ok(StoreEvent::Resync) | Err(RecvError::Lagged(_)) => {
                debug!("store events missed: waking every task");
                shared.quota_freed();
                shared.deletes.sweep_now();
                shared.min_ready.wake();
            }
            Err(RecvError::Closed) => {
                warn!("store watch closed");
                return;
            }
        }
    }
}

/// Wait for `notify` or `interval`, whichever comes first, or cancellation.
/// Returns false when cancelled.
pub(crate) async fn wait_or_tick(
    notify: &Notify,
    interval: Duration,
    cancel: &CancellationToken,
) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = notify.notified() => true,
        _ = tokio::time::sleep(interval) => true,
    }
}

/// How many launches are in flight for `provider` (for `max-concurrency`).
pub(crate) fn launching(rt: &ProviderRuntime) -> usize {
    rt.launching.load(Ordering::Relaxed)
}
