//! The launcher engine: upstream nodepool 11's `nodepool-launcher`, written
//! against the core traits.
//!
//! A [`Launcher`] runs, until cancelled:
//! - one **pool worker** per provider pool (`pool`): it reads the open node
//!   requests, asks the [`Scheduler`] what to do with them, declines, waits
//!   (pauses at a limit) or hands accepted requests to a **request handler**
//!   (`handler`) that locks the request, allocates ready nodes, creates and
//!   launches new ones (`launch`) and fulfils or declines it;
//! - the **cleanup** tasks (`cleanup`, `leaks`): used, failed and aborted
//!   nodes are deleted as soon as the store announces them; a periodic pass
//!   handles crash leftovers (unlocked building nodes, lost requests),
//!   `max-ready-age`, held nodes and leaked instances;
//! - **min-ready** (`min_ready`): requests for labels below `min-ready`;
//! - **registration** (`registered`) for providers of pre-registered nodes
//!   (static hosts): their records are synchronised at start, after a config
//!   change, periodically and when a node is handed back; such pools never
//!   launch, hand out only ready records the provider still vouches for,
//!   and their used nodes go back to the provider instead of being deleted.
//!
//! Everything is driven by [`NodeStore::watch`] events; timers are only a
//! safety net for missed events. Request handling follows upstream's state
//! machine and lock order, so a crash at any point leaves records another
//! launcher (or the next start) can clean up: nodes are created in the store
//! and locked before the cloud is called, the instance id is written as soon
//! as the cloud returns it, and instances carrying our metadata that no node
//! knows are deleted after [`LauncherSettings::leak_grace`].

mod cache;
mod census;
mod cleanup;
mod handler;
mod input;
mod launch;
mod leaks;
mod min_ready;
mod nodes;
mod pool;
mod registered;
mod requests;
mod shared;
mod stats;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::model::Node;
use crate::provider::{Instance, Provider};
use crate::scheduler::Scheduler;
use crate::store::NodeStore;
use crate::Result;

pub use census::{Census, NodeGroup, RequestGroup};
pub use stats::{CounterSnapshot, Counters, LauncherStatus, PoolStatus};

use shared::Shared;

/// A post-boot check run on every node before it becomes `ready`
/// (upstream's host-key scan; here also any "ready script").
///
/// The engine calls it once the instance is active, within the provider's
/// `boot-timeout`. An error fails this launch attempt (the instance is
/// deleted and the launch retried, as upstream does for a failed key scan).
#[async_trait]
pub trait ReadyHook: Send + Sync + Debug + 'static {
    /// Check `node` (label `label`, booted as `instance`). Returns host keys
    /// to record on the node (may be empty).
    async fn check(&self, node: &Node, label: &str, instance: &Instance) -> Result<Vec<String>>;
}

/// How a [`Launcher`] runs. [`LauncherSettings::new`] gives upstream's
/// defaults.
#[derive(Debug, Clone)]
pub struct LauncherSettings {
    /// This host's name: the launcher component's name and the prefix of
    /// every pool worker id.
    pub hostname: String,
    /// Safety-net interval of each pool worker's pass (events drive it).
    pub pool_interval: Duration,
    /// Interval of the deletion sweep (upstream's `delete_interval`, 5 s).
    pub delete_interval: Duration,
    /// Interval of the periodic cleanup: lost requests, max-ready-age,
    /// max-hold-age, leaked instances (upstream's `cleanup_interval`, 60 s).
    pub cleanup_interval: Duration,
    /// Interval of the min-ready check (upstream: every loop, 1 s). A
    /// label whose min-ready request failed (declined at quota, launch
    /// failures) is requested again no sooner than this, as upstream's loop
    /// would; store events wake the check sooner for other labels.
    pub min_ready_interval: Duration,
    /// An instance with our metadata whose node is unknown is deleted once
    /// it has been seen leaked for this long.
    pub leak_grace: Duration,
    /// How long a provider's quota (and unmanaged usage) is cached.
    pub quota_cache_ttl: Duration,
    /// Most node deletions running at once.
    pub delete_concurrency: usize,
    /// Most requests one pool worker handles at once (upstream has no such
    /// bound; `max-concurrency` still applies below it). Accepted requests
    /// beyond it stay `requested` for a later pass, which a handler that
    /// finishes triggers. Bounds the memory of a burst, e.g. `min-ready`
    /// asking for thousands of nodes at once: a handler with its launch in
    /// flight holds ~30 KB (its task, its request and node records, its
    /// store calls queued). The default, 128, still launches 128 nodes of a
    /// pool at once (~2 a second with one-minute boots).
    pub max_handlers_per_pool: usize,
    /// Optional post-boot check.
    pub ready_hook: Option<Arc<dyn ReadyHook>>,
}

impl LauncherSettings {
    /// Defaults for `hostname`.
    pub fn new(hostname: impl Into<String>) -> Self {
        Self {
            hostname: hostname.into(),
            pool_interval: Duration::from_secs(10),
            delete_interval: Duration::from_secs(5),
            cleanup_interval: Duration::from_secs(60),
            min_ready_interval: Duration::from_secs(1),
            leak_grace: Duration::from_secs(60),
            quota_cache_ttl: Duration::from_secs(300),
            delete_concurrency: 32,
            max_handlers_per_pool: 128,
            ready_hook: None,
        }
    }
}

/// The launcher engine. Build it with [`Launcher::new`], start it with
/// [`Launcher::run`]; [`Launcher::update_config`] applies a new config
/// while it runs.
///
/// ```no_run
/// # async fn demo(
/// #     store: std::sync::Arc<dyn nodepool_core::store::NodeStore>,
/// #     config: nodepool_core::config::Config,
/// #     providers: std::collections::BTreeMap<String, std::sync::Arc<dyn nodepool_core::provider::Provider>>,
/// # ) -> nodepool_core::Result<()> {
/// use std::sync::Arc;
/// use nodepool_core::launcher::{Launcher, LauncherSettings};
/// use nodepool_core::scheduler::DefaultScheduler;
/// use tokio_util::sync::CancellationToken;
///
/// let launcher = Launcher::new(
///     LauncherSettings::new("launcher-1"),
///     store,
///     Arc::new(DefaultScheduler::default()),
///     config,
///     providers,
/// );
/// let cancel = CancellationToken::new();
/// launcher.run(cancel.clone()).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Launcher {
    shared: Arc<Shared>,
}

impl Launcher {
    /// A launcher over `store`, deciding with `scheduler`, for `config` and
    /// its built `providers` (provider name → provider).
    pub fn new(
        settings: LauncherSettings,
        store: Arc<dyn NodeStore>,
        scheduler: Arc<dyn Scheduler>,
        config: Config,
        providers: BTreeMap<String, Arc<dyn Provider>>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared::new(settings, store, scheduler, config, providers)),
        }
    }

    /// Run until `cancel` fires, then drain: stop taking requests, abandon
    /// in-flight launches safely (their requests go back to `requested`, their
    /// nodes are left unlocked for cleanup), unregister and release locks.
    pub async fn run(&self, cancel: CancellationToken) -> Result<()> {
        shared::run(self.shared.clone(), cancel).await
    }

    /// Apply a new configuration without restarting. Pools that disappear
    /// stop launching; nodes of removed providers are still cleaned up with
    /// the provider objects last given.
    pub fn update_config(&self, config: Config, providers: BTreeMap<String, Arc<dyn Provider>>) {
        self.shared.update_config(config, providers);
    }

    /// What the launcher is doing now.
    pub fn status(&self) -> LauncherStatus {
        self.shared.status()
    }

    /// The counters (for metrics).
    pub fn counters(&self) -> CounterSnapshot {
        self.shared.counters.snapshot()
    }

    /// Nodes and requests counted by state, provider and labels, from the
    /// launcher's caches (for metrics: no listing of the store). Works
    /// before [`Launcher::run`] too: the first call lists the store once.
    pub async fn census(&self) -> Result<Census> {
        census::take(&self.shared).await
    }
}
