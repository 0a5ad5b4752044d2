//! Counters and status snapshots the daemon exports (metrics, SIGUSR2 dumps).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
