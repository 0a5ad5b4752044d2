//! The context every stage reads: the store, the scheduler, the settings,
//! the counters, the current configuration with its providers, the
//! per-provider caches and the node and request caches.
//!
//! It holds no stage's work. The configuration changes only through
//! [`Context::set_config`] (called by the supervisor); the caches keep
//! themselves current from store events.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::nodes::NodeCache;
use super::requests::RequestCache;
use super::settings::LauncherSettings;
use super::stats::Counters;
use super::util::lock;
use crate::config::{Config, PoolConfig, ProviderConfig};
use crate::provider::{Provider, Resources};
use crate::scheduler::Scheduler;
use crate::store::NodeStore;

/// One configuration and the providers built for it.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) config: Arc<Config>,
    pub(crate) providers: BTreeMap<String, Arc<dyn Provider>>,
}

impl Snapshot {
    /// Pool `pool` of provider `provider`: its provider's config, its own
    /// and the provider object, if all three are there.
    pub(crate) fn pool(
        &self,
        provider: &str,
        pool: &str,
    ) -> Option<(&ProviderConfig, &PoolConfig, &Arc<dyn Provider>)> {
        let provider_cfg = self.config.provider(provider)?;
        let pool_cfg = provider_cfg.pools.iter().find(|p| p.name == pool)?;
        let object = self.providers.get(provider)?;
        Some((provider_cfg, pool_cfg, object))
    }
}

/// Per-provider caches and counts, kept across passes.
#[derive(Debug, Default)]
pub(crate) struct ProviderRuntime {
    /// Resources one node of (pool, label) uses.
    label_resources: Mutex<HashMap<(String, String), Resources>>,
    /// The cloud's limits minus unmanaged use, and when it was read.
    quota: Mutex<Option<(Instant, Resources)>>,
    /// Node launches in progress (all pools), for `max-concurrency`.
    launching: AtomicUsize,
}

impl ProviderRuntime {
    /// The cached resources of one node of `label` in `pool`.
    pub(crate) fn label_resources(&self, pool: &str, label: &str) -> Option<Resources> {
        lock(&self.label_resources)
            .get(&(pool.to_string(), label.to_string()))
            .cloned()
    }

    /// Remember the resources of one node of `label` in `pool`.
    pub(crate) fn set_label_resources(&self, pool: &str, label: &str, r: Resources) {
        lock(&self.label_resources).insert((pool.to_string(), label.to_string()), r);
    }

    /// The cached quota, if read less than `ttl` ago.
    pub(crate) fn quota(&self, ttl: Duration) -> Option<Resources> {
        match &*lock(&self.quota) {
            Some((at, q)) if at.elapsed() < ttl => Some(q.clone()),
            _ => None,
        }
    }

    /// Remember the quota just read.
    pub(crate) fn set_quota(&self, quota: Resources) {
        *lock(&self.quota) = Some((Instant::now(), quota));
    }

    /// Forget the cached quota (after the cloud said it is exhausted).
    pub(crate) fn invalidate_quota(&self) {
        *lock(&self.quota) = None;
    }

    /// How many launches are in flight (for `max-concurrency`).
    pub(crate) fn launching(&self) -> usize {
        self.launching.load(Ordering::Relaxed)
    }

    /// `n` launches start.
    pub(crate) fn launches_started(&self, n: usize) {
        self.launching.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` launches ended.
    pub(crate) fn launches_ended(&self, n: usize) {
        self.launching.fetch_sub(n, Ordering::Relaxed);
    }
}

/// What every stage reads; see the module doc.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) settings: LauncherSettings,
    pub(crate) store: Arc<dyn NodeStore>,
    pub(crate) scheduler: Arc<dyn Scheduler>,
    pub(crate) counters: Counters,
    /// The store's nodes, as the launcher's decisions read them.
    pub(crate) nodes: NodeCache,
    /// The store's node requests, as pool passes and min-ready read them.
    pub(crate) requests: RequestCache,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Providers removed from the config, kept to delete their nodes.
    retired: Mutex<BTreeMap<String, Arc<dyn Provider>>>,
    runtimes: Mutex<BTreeMap<String, Arc<ProviderRuntime>>>,
    /// Per provider: this launcher's admissions, one at a time, and what
    /// the last one knew (see `admission.rs`).
    admissions: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<AdmissionState>>>>,
}

/// What this launcher's last admission under a provider knew.
#[derive(Debug, Default)]
pub(crate) struct AdmissionState {
    /// Each counter's version right after that admission: while a counter
    /// still reads so, no other launcher has admitted under it since.
    pub(crate) versions: BTreeMap<String, i64>,
    /// Nodes this launcher admitted since the node cache was last checked
    /// against the store: read again unless the cache has them.
    pub(crate) admitted: Vec<String>,
    /// The batches checked and waiting to be created together with the
    /// one whose admission opened the group (see `admission.rs`).
    pub(crate) group: super::admission::GroupSlot,
    /// Until when another launcher is taken to admit under the same
    /// counters (its admissions made one of ours fail lately).
    pub(crate) contended_until: Option<std::time::Instant>,
}

impl Context {
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
            counters: Counters::default(),
            nodes: NodeCache::default(),
            requests: RequestCache::default(),
            snapshot: RwLock::new(Arc::new(Snapshot {
                config: Arc::new(config),
                providers,
            })),
            retired: Mutex::new(BTreeMap::new()),
            runtimes: Mutex::new(BTreeMap::new()),
            admissions: Mutex::new(BTreeMap::new()),
        }
    }

    /// The admission state of `provider`; hold its lock for a whole
    /// admission, so that this launcher's admissions never race each other.
    pub(crate) fn admission_state(
        &self,
        provider: &str,
    ) -> Arc<tokio::sync::Mutex<AdmissionState>> {
        let mut slots = match self.admissions.lock() {
            Ok(slots) => slots,
            Err(poisoned) => poisoned.into_inner(),
        };
        slots.entry(provider.to_string()).or_default().clone()
    }

    /// The current configuration and providers.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Switch to `config` and `providers`. Providers that left the config
    /// are retired (kept for cleanup); a provider object that changed gets
    /// fresh caches. Returns the providers of pre-registered nodes that
    /// are new or rebuilt (they need a full registration pass).
    pub(crate) fn set_config(
        &self,
        config: Config,
        providers: BTreeMap<String, Arc<dyn Provider>>,
    ) -> Vec<String> {
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
        rebuilt
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

    /// The caches and counts of provider `provider`.
    pub(crate) fn runtime(&self, provider: &str) -> Arc<ProviderRuntime> {
        lock(&self.runtimes)
            .entry(provider.to_string())
            .or_default()
            .clone()
    }
}
