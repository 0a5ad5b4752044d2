//! Counters the launcher updates, and the Prometheus text exposition that
//! `/metrics` serves (format 0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nodepool_core::model::{Node, NodeRequest, NodeState, RequestState};

/// Launch counters, shared with the launcher (`Arc<Metrics>`).
#[derive(Debug, Default)]
pub struct Metrics {
    launches_ready: AtomicU64,
    launches_failed: AtomicU64,
    launch_micros: AtomicU64,
    launch_timed: AtomicU64,
}

impl Metrics {
    /// New counters, all zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// A launch ended with a ready node after `elapsed`.
    pub fn launch_succeeded(&self, elapsed: Duration) {
        self.launches_ready.fetch_add(1, Ordering::Relaxed);
        self.observe_launch(elapsed);
    }

    /// A launch failed after `elapsed`.
    pub fn launch_failed(&self, elapsed: Duration) {
        self.launches_failed.fetch_add(1, Ordering::Relaxed);
        self.observe_launch(elapsed);
    }

    fn observe_launch(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.launch_micros.fetch_add(micros, Ordering::Relaxed);
        self.launch_timed.fetch_add(1, Ordering::Relaxed);
    }

    /// Launches that ended ready, and failed.
    pub fn launches(&self) -> (u64, u64) {
        (
            self.launches_ready.load(Ordering::Relaxed),
            self.launches_failed.load(Ordering::Relaxed),
        )
    }

    /// The exposition: the counters plus gauges of `nodes` and `requests`
    /// by state (every state is listed, zeros included).
    pub fn render(&self, nodes: &[Node], requests: &[NodeRequest]) -> String {
        let mut out = String::new();
        let (ready, failed) = self.launches();
        out.push_str("# HELP nodepool_launches_total Node launches by result.\n");
        out.push_str("# TYPE nodepool_launches_total counter\n");
        let _ = writeln!(out, "nodepool_launches_total{{result=\"ready\"}} {ready}");
        let _ = writeln!(out, "nodepool_launches_total{{result=\"error\"}} {failed}");

        let micros = self.launch_micros.load(Ordering::Relaxed);
        let count = self.launch_timed.load(Ordering::Relaxed);
        out.push_str(
            "# HELP nodepool_launch_duration_seconds Time from launch to ready or failure.\n",
        );
        out.push_str("# TYPE nodepool_launch_duration_seconds summary\n");
        let _ = writeln!(
            out,
            "nodepool_launch_duration_seconds_sum {}",
            micros as f64 / 1e6
        );
        let _ = writeln!(out, "nodepool_launch_duration_seconds_count {count}");

        let mut by_node_state: BTreeMap<&str, u64> =
            NodeState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        for node in nodes {
            if let Some(state) = node.state {
                *by_node_state.entry(state.as_str()).or_default() += 1;
            }
        }
        out.push_str("# HELP nodepool_nodes Nodes by state.\n");
        out.push_str("# TYPE nodepool_nodes gauge\n");
        for (state, n) in by_node_state {
            let _ = writeln!(out, "nodepool_nodes{{state=\"{state}\"}} {n}");
        }

        let mut by_request_state: BTreeMap<&str, u64> =
            RequestState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        for request in requests {
            if let Some(state) = request.state {
                *by_request_state.entry(state.as_str()).or_default() += 1;
            }
        }
        out.push_str("# HELP nodepool_requests Node requests by state.\n");
        out.push_str("# TYPE nodepool_requests gauge\n");
        for (state, n) in by_request_state {
            let _ = writeln!(out, "nodepool_requests{{state=\"{state}\"}} {n}");
        }
        out
    }
}
