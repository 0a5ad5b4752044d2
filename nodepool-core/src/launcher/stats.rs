//! Counters and status snapshots the daemon exports (metrics, SIGUSR2 dumps).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The most distinct (provider, az, requestor, result) keys counted; a
/// launch with a new key beyond it is counted without its requestor, so
/// the map stays bounded whatever requestors send.
pub const MAX_LAUNCH_KEYS: usize = 1024;

/// Monotonic counters of one [`Launcher`](super::Launcher), shared by its
/// tasks. Read them with [`Counters::snapshot`].
#[derive(Debug, Default)]
pub struct Counters {
    requests_fulfilled: AtomicU64,
    requests_failed: AtomicU64,
    requests_declined: AtomicU64,
    launches_ready: AtomicU64,
    launches_failed: AtomicU64,
    launches_aborted: AtomicU64,
    launch_millis_total: AtomicU64,
    nodes_deleted: AtomicU64,
    leaked_instances_deleted: AtomicU64,
    min_ready_requests: AtomicU64,
    launches: Mutex<BTreeMap<LaunchKey, LaunchTotals>>,
    leaked_by_provider: Mutex<BTreeMap<String, u64>>,
    leaked_by_kind: Mutex<BTreeMap<(String, &'static str), u64>>,
    validations: Mutex<BTreeMap<(String, &'static str), LaunchTotals>>,
}

/// One counter to bump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counter {
    RequestsFulfilled,
    RequestsFailed,
    RequestsDeclined,
    LaunchesFailed,
    LaunchesAborted,
    NodesDeleted,
    LeakedInstancesDeleted,
    MinReadyRequests,
}

impl Counters {
    pub(crate) fn bump(&self, counter: Counter) {
        let c = match counter {
            Counter::RequestsFulfilled => &self.requests_fulfilled,
            Counter::RequestsFailed => &self.requests_failed,
            Counter::RequestsDeclined => &self.requests_declined,
            Counter::LaunchesFailed => &self.launches_failed,
            Counter::LaunchesAborted => &self.launches_aborted,
            Counter::NodesDeleted => &self.nodes_deleted,
            Counter::LeakedInstancesDeleted => &self.leaked_instances_deleted,
            Counter::MinReadyRequests => &self.min_ready_requests,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Record a successful launch and how long it took.
    pub(crate) fn launch_ready(&self, took: Duration) {
        self.launches_ready.fetch_add(1, Ordering::Relaxed);
        let millis = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        self.launch_millis_total
            .fetch_add(millis, Ordering::Relaxed);
    }

    /// Record one launch attempt's result (upstream's `recordLaunchStats`:
    /// `ready`, or the `error.*` key of the attempt that failed) and the
    /// time since the launch started.
    pub(crate) fn launch_result(&self, key: LaunchKey, took: Duration) {
        let millis = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        let Ok(mut map) = self.launches.lock() else {
            return;
        };
        let key = if map.len() >= MAX_LAUNCH_KEYS && !map.contains_key(&key) {
            LaunchKey {
                requestor: None,
                ..key
            }
        } else {
            key
        };
        let totals = map.entry(key).or_default();
        totals.count = totals.count.saturating_add(1);
        totals.millis = totals.millis.saturating_add(millis);
    }

    /// Record a leaked instance of `provider` deleted.
    pub(crate) fn leaked_instance_deleted(&self, provider: &str) {
        self.bump(Counter::LeakedInstancesDeleted);
        if let Ok(mut map) = self.leaked_by_provider.lock() {
            match map.get_mut(provider) {
                Some(n) => *n = n.saturating_add(1),
                None => {
                    map.insert(provider.to_string(), 1);
                }
            }
        }
    }

    /// Record `count` leaked resources of `kind` (other than instances:
    /// `ports`, `floatingips`) that `provider`'s
    /// [`cleanup_leaked_resources`](crate::provider::Provider::cleanup_leaked_resources)
    /// deleted. The keys are bounded by the providers and the kinds their
    /// drivers name.
    pub(crate) fn leaked_resources_deleted(&self, provider: &str, kind: &'static str, count: u64) {
        if count == 0 {
            return;
        }
        if let Ok(mut map) = self.leaked_by_kind.lock() {
            match map.get_mut(&(provider.to_string(), kind)) {
                Some(n) => *n = n.saturating_add(count),
                None => {
                    map.insert((provider.to_string(), kind), count);
                }
            }
        }
    }

    /// Record an image validation of `image` that `passed` or not, and
    /// how long it took (boot and hook).
    pub(crate) fn validation_result(&self, image: &str, passed: bool, took: Duration) {
        let result = if passed { "passed" } else { "failed" };
        let millis = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        if let Ok(mut map) = self.validations.lock() {
            let totals = map.entry((image.to_string(), result)).or_default();
            totals.count = totals.count.saturating_add(1);
            totals.millis = totals.millis.saturating_add(millis);
        }
    }

    /// The keyed counts so far: launch results by provider, az, requestor
    /// and result, leaked instances deleted by provider and other leaked
    /// resources by provider and kind (in key order).
    pub fn keyed(&self) -> KeyedCounts {
        KeyedCounts {
            launches: self
                .launches
                .lock()
                .map(|map| map.iter().map(|(k, v)| (k.clone(), *v)).collect())
                .unwrap_or_default(),
            leaked_instances: self
                .leaked_by_provider
                .lock()
                .map(|map| map.iter().map(|(k, v)| (k.clone(), *v)).collect())
                .unwrap_or_default(),
            leaked_resources: self
                .leaked_by_kind
                .lock()
                .map(|map| {
                    map.iter()
                        .map(|((provider, kind), n)| (provider.clone(), *kind, *n))
                        .collect()
                })
                .unwrap_or_default(),
            validations: self
                .validations
                .lock()
                .map(|map| {
                    map.iter()
                        .map(|((image, result), v)| (image.clone(), *result, *v))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The current values.
    pub fn snapshot(&self) -> CounterSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            requests_fulfilled: get(&self.requests_fulfilled),
            requests_failed: get(&self.requests_failed),
            requests_declined: get(&self.requests_declined),
            launches_ready: get(&self.launches_ready),
            launches_failed: get(&self.launches_failed),
            launches_aborted: get(&self.launches_aborted),
            launch_millis_total: get(&self.launch_millis_total),
            nodes_deleted: get(&self.nodes_deleted),
            leaked_instances_deleted: get(&self.leaked_instances_deleted),
            min_ready_requests: get(&self.min_ready_requests),
        }
    }
}

/// The counters' values at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CounterSnapshot {
    /// Requests this launcher fulfilled.
    pub requests_fulfilled: u64,
    /// Requests this launcher set to failed (declined by every pool, or
    /// launches failed with no other pool left).
    pub requests_failed: u64,
    /// Declines written by this launcher's pools.
    pub requests_declined: u64,
    /// Nodes that became ready.
    pub launches_ready: u64,
    /// Nodes that failed after every launch attempt.
    pub launches_failed: u64,
    /// Nodes aborted because the cloud was out of quota.
    pub launches_aborted: u64,
    /// Sum of the launch times of ready nodes, in milliseconds.
    pub launch_millis_total: u64,
    /// Node records deleted (with their instances).
    pub nodes_deleted: u64,
    /// Leaked instances deleted.
    pub leaked_instances_deleted: u64,
    /// Requests submitted for `min-ready`.
    pub min_ready_requests: u64,
}

/// What upstream's launch metrics are keyed by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LaunchKey {
    /// The provider that launched.
    pub provider: String,
    /// The node's availability zone, when it has one.
    pub az: Option<String>,
    /// The requestor of the request the node was launched for.
    pub requestor: Option<String>,
    /// Upstream's statsd result key: `ready`, `error.quota`,
    /// `error.unknown`, ...
    pub result: &'static str,
}

/// How many launch attempts ended with one key, and their summed time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LaunchTotals {
    /// Attempts counted.
    pub count: u64,
    /// Their times since the launch started, summed, in milliseconds.
    pub millis: u64,
}

/// Counters kept per provider, az or requestor: few keys, bounded (see
/// [`MAX_LAUNCH_KEYS`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyedCounts {
    /// Launch attempts by provider, az, requestor and result.
    pub launches: Vec<(LaunchKey, LaunchTotals)>,
    /// Leaked instances deleted, by provider.
    pub leaked_instances: Vec<(String, u64)>,
    /// Other leaked resources a provider's cleanup deleted, by provider and
    /// kind (`ports`, `floatingips`): upstream's
    /// `nodepool.provider.<provider>.leaked.<kind>`.
    pub leaked_resources: Vec<(String, &'static str, u64)>,
    /// Image validations by diskimage and result (`passed`, `failed`),
    /// with their summed time (boot and hook).
    pub validations: Vec<(String, &'static str, LaunchTotals)>,
}

/// The queue lengths of a launcher's caches (see
/// [`Launcher::cache_queues`](super::Launcher::cache_queues)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LauncherCacheQueues {
    /// The node cache's.
    pub nodes: super::CacheQueues,
    /// The request cache's.
    pub requests: super::CacheQueues,
}

/// What one pool worker is doing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PoolStatus {
    /// Provider name.
    pub provider: String,
    /// Pool name.
    pub pool: String,
    /// The pool worker's id (as in `declined_by` and node `launcher`).
    pub launcher_id: String,
    /// Paused at a limit.
    pub paused: bool,
    /// Requests being handled (locked, nodes launching).
    pub active_requests: Vec<String>,
    /// Requests the pool is waiting on (at a limit).
    pub waiting_requests: Vec<String>,
    /// Node launches in progress.
    pub launching: usize,
}

/// A snapshot of a launcher's tasks, for status dumps.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LauncherStatus {
    /// The launcher component's name (hostname).
    pub hostname: String,
    /// One entry per running pool worker.
    pub pools: Vec<PoolStatus>,
    /// Node deletions in progress.
    pub deleting: usize,
    /// Counters.
    pub counters: CounterSnapshot,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(requestor: &str, result: &'static str) -> LaunchKey {
        LaunchKey {
            provider: "p".to_string(),
            az: None,
            requestor: Some(requestor.to_string()),
            result,
        }
    }

    #[test]
    fn launch_results_sum_per_key_and_stay_bounded() {
        let counters = Counters::default();
        counters.launch_result(key("zuul", "ready"), Duration::from_millis(10));
        counters.launch_result(key("zuul", "ready"), Duration::from_millis(30));
        counters.launch_result(key("zuul", "error.unknown"), Duration::from_millis(5));
        let keyed = counters.keyed();
        assert_eq!(
            keyed.launches,
            [
                (
                    key("zuul", "error.unknown"),
                    LaunchTotals {
                        count: 1,
                        millis: 5
                    }
                ),
                (
                    key("zuul", "ready"),
                    LaunchTotals {
                        count: 2,
                        millis: 40
                    }
                ),
            ]
        );
        // Past the bound, new requestors are counted without their name.
        for i in 0..MAX_LAUNCH_KEYS + 10 {
            counters.launch_result(key(&format!("r{i}"), "ready"), Duration::ZERO);
        }
        let launches = counters.keyed().launches;
        assert!(launches.len() <= MAX_LAUNCH_KEYS + 1);
        let total: u64 = launches.iter().map(|(_, t)| t.count).sum();
        assert_eq!(total, 3 + MAX_LAUNCH_KEYS as u64 + 10);
        assert!(launches.iter().any(|(k, _)| k.requestor.is_none()));
    }

    #[test]
    fn leaked_instances_count_per_provider_and_in_total() {
        let counters = Counters::default();
        counters.leaked_instance_deleted("a");
        counters.leaked_instance_deleted("a");
        counters.leaked_instance_deleted("b");
        assert_eq!(counters.snapshot().leaked_instances_deleted, 3);
        assert_eq!(
            counters.keyed().leaked_instances,
            [("a".to_string(), 2), ("b".to_string(), 1)]
        );
    }

    #[test]
    fn leaked_resources_count_per_provider_and_kind() {
        let counters = Counters::default();
        counters.leaked_resources_deleted("a", "ports", 2);
        counters.leaked_resources_deleted("a", "floatingips", 1);
        counters.leaked_resources_deleted("a", "ports", 3);
        counters.leaked_resources_deleted("b", "ports", 0);
        assert_eq!(
            counters.keyed().leaked_resources,
            [
                ("a".to_string(), "floatingips", 1),
                ("a".to_string(), "ports", 5)
            ]
        );
        // Not added to the instances.
        assert_eq!(counters.snapshot().leaked_instances_deleted, 0);
    }
}
