//! The launcher engine: upstream nodepool 11's `nodepool-launcher`, written
//! against the core traits.
//!
//! A [`Launcher`] runs, until cancelled:
//! - one **pool worker** per provider pool: it reads the open node
//!   requests, asks the [`Scheduler`] what to do with them, declines, waits
//!   (pauses at a limit) or hands accepted requests to a **request handler**
//!   that locks the request, allocates ready nodes, creates and launches new
//!   ones and fulfils or declines it;
//! - the **deleter**: used, failed and aborted nodes are deleted as soon as
//!   the store announces them, plus a sweep for what events missed;
//! - the **periodic cleanup**: crash leftovers (lost requests),
//!   `max-ready-age`, held nodes and leaked instances;
//! - **min-ready**: requests for labels below `min-ready`;
//! - **registration** for providers of pre-registered nodes (static hosts):
//!   their records are synchronised at start, after a config change,
//!   periodically and when a node is handed back; such pools never launch,
//!   hand out only ready records the provider still vouches for, and their
//!   used nodes go back to the provider instead of being deleted.
//!
//! Everything is driven by [`NodeStore::watch`] events; timers are only a
//! safety net for missed events. Request handling follows upstream's state
//! machine and lock order, so a crash at any point leaves records another
//! launcher (or the next start) can clean up: nodes are created in the store
//! and locked before the cloud is called, the instance id is written as soon
//! as the cloud returns it, and instances carrying our metadata that no node
//! knows are deleted after [`LauncherSettings::leak_grace`].
//!
//! # Files, lowest layer first
//!
//! Each file imports only files above it in this list (`mod.rs` re-exports
//! the public types and wraps the supervisor in [`Launcher`]).
//!
//! | file | its one job |
//! |---|---|
//! | `util.rs` | poison-tolerant `lock`, the store's clock `now`, `wait_or_tick` |
//! | `settings.rs` | `LauncherSettings` and the `ReadyHook` trait (public) |
//! | `stats.rs` | counters and status snapshots (public) |
//! | `cache.rs` | a cache of one kind of store record kept current from watch events (kube's reflector) |
//! | `nodes.rs`, `requests.rs` | the node and request caches: compact summaries; node ↔ resources JSON |
//! | `context.rs` | `Context`: store, scheduler, settings, counters, config snapshot, provider caches, the two record caches — what every stage reads |
//! | `census.rs` | counts of nodes and requests from the caches (public `Census`) |
//! | `ledger.rs` | `Ledger`: one pool's identity, in-flight requests and launches, wake-ups, through methods; `Ledgers`: the running pools' ledgers |
//! | `registered.rs` | providers of pre-registered nodes: the registration task (`Registrar`), the liveness check and the label capacity — every call of their registration methods |
//! | `min_ready.rs` | `MinReady`: submits and settles `min-ready` requests |
//! | `deleter.rs` | `Deleter`: the deletion queue, runner and sweep; deletes locked nodes; makes room in a pool at a limit |
//! | `leaks.rs` | leaked instances: seen for `leak_grace`, then deleted |
//! | `cleanup.rs` | the periodic cleanup: lost requests, expiry, leaks, store purges |
//! | `input.rs` | the scheduler's input for one pass: labels, quota, usage, ready nodes |
//! | `launch.rs` | launching one node: create the instance, record its id, wait, check, retry (`launch-retries`) |
//! | `admission.rs` | new node records only when they fit, counted from the store itself, in one check-and-create that launchers sharing the store cannot both win |
//! | `handler.rs` | one accepted request from `requested` to `fulfilled`/declined, in upstream's lock order; declining |
//! | `spread.rs` | which of the live launchers of one pool takes a request (rendezvous hashing over their registrations) |
//! | `pool.rs` | `PoolWorker`: a pool's passes: caches → scheduler → decline / wait / start a handler |
//! | `supervisor.rs` | `Supervisor`: builds the stages, runs the tasks and one worker per pool, dispatches store events, applies config changes, drains |
//! | `tests.rs` | unit tests of the pure helpers (request order, metadata, resources JSON) |
//!
//! Stages talk through handles, never through another stage's mutex: the
//! supervisor wakes pools through `Ledgers`, offers a node to the
//! `Deleter`, wakes `MinReady` and asks the `Registrar` for passes; a pool
//! worker asks the `Deleter` to make room; a handler records its work in its
//! pool's `Ledger` and wakes its provider's pools through `Ledgers`.
//!
//! # One request
//!
//! A store watch event reaches `supervisor.rs`, which marks the request
//! cache stale (`requests.rs`) and wakes the pool workers. A pool pass
//! (`pool.rs`) syncs the caches, builds the scheduler's input (`input.rs`),
//! asks the scheduler and, for an `Accept`, enters the request in its
//! ledger and spawns a handler (`handler.rs`). The handler locks and
//! re-reads the request, creates and locks the nodes, has `launch.rs` call
//! the provider and write each node as it goes, then stores the request
//! fulfilled and tells the ledger it is done.

mod admission;
mod cache;
mod census;
mod cleanup;
mod context;
mod deleter;
mod handler;
mod input;
mod launch;
mod leaks;
mod ledger;
mod min_ready;
mod nodes;
mod pool;
mod registered;
mod requests;
mod settings;
mod spread;
mod stats;
mod supervisor;
#[cfg(test)]
mod tests;
mod util;
mod validate;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::provider::wrappers::ProviderMetrics;
use crate::provider::{stack_all, Provider};
use crate::scheduler::Scheduler;
use crate::store::NodeStore;
use crate::Result;

pub use cache::CacheQueues;
pub use census::{Census, NodeGroup, RequestGroup};
pub use settings::{LauncherSettings, ReadyHook};
pub use stats::{
    CounterSnapshot, Counters, KeyedCounts, LaunchKey, LaunchTotals, LauncherCacheQueues,
    LauncherStatus, PoolStatus, MAX_LAUNCH_KEYS,
};
pub use validate::VALIDATION_REQUESTOR;

use supervisor::Supervisor;

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
    supervisor: Arc<Supervisor>,
    tasks: Arc<ProviderMetrics>,
}

impl Launcher {
    /// A launcher over `store`, deciding with `scheduler`, for `config` and
    /// its built `providers` (provider name → the driver's provider). Each
    /// provider is put inside core's wrapper stack from its config
    /// ([`stack_all`]: capability check, `max-concurrency`, `rate`, task
    /// metrics); pass the drivers' providers unwrapped.
    pub fn new(
        settings: LauncherSettings,
        store: Arc<dyn NodeStore>,
        scheduler: Arc<dyn Scheduler>,
        config: Config,
        providers: BTreeMap<String, Arc<dyn Provider>>,
    ) -> Self {
        let tasks = Arc::new(ProviderMetrics::new());
        let providers = stack_all(&config, providers, &tasks);
        Self {
            supervisor: Arc::new(Supervisor::new(
                settings, store, scheduler, config, providers,
            )),
            tasks,
        }
    }

    /// Calls, errors and time of every provider operation so far (upstream's
    /// `nodepool.task.<provider>.<operation>` timers), across config reloads.
    pub fn task_metrics(&self) -> Arc<ProviderMetrics> {
        Arc::clone(&self.tasks)
    }

    /// Run until `cancel` fires, then drain: stop taking requests, abandon
    /// in-flight launches safely (their requests go back to `requested`, their
    /// nodes are left unlocked for cleanup), unregister and release locks.
    pub async fn run(&self, cancel: CancellationToken) -> Result<()> {
        self.supervisor.run(cancel).await
    }

    /// Apply a new configuration without restarting. Pools that disappear
    /// stop launching; nodes of removed providers are still cleaned up with
    /// the provider objects last given.
    pub fn update_config(&self, config: Config, providers: BTreeMap<String, Arc<dyn Provider>>) {
        let providers = stack_all(&config, providers, &self.tasks);
        self.supervisor.update_config(config, providers);
    }

    /// What the launcher is doing now.
    pub fn status(&self) -> LauncherStatus {
        self.supervisor.status()
    }

    /// The counters (for metrics).
    pub fn counters(&self) -> CounterSnapshot {
        self.supervisor.counters()
    }

    /// Launch results by provider, az, requestor and result (upstream's
    /// `nodepool.launch.*` metrics) and leaked instances by provider.
    pub fn keyed_counts(&self) -> KeyedCounts {
        self.supervisor.keyed_counts()
    }

    /// The queue lengths of the node and request caches (upstream's
    /// `zk.node_cache.*` and `zk.request_cache.*` gauges): store events
    /// not taken in yet and records whose re-read is pending.
    pub fn cache_queues(&self) -> LauncherCacheQueues {
        self.supervisor.cache_queues()
    }

    /// Nodes and requests counted by state, provider and labels, from the
    /// launcher's caches (for metrics: no listing of the store). Works
    /// before [`Launcher::run`] too: the first call lists the store once.
    pub async fn census(&self) -> Result<Census> {
        self.supervisor.census().await
    }
}
