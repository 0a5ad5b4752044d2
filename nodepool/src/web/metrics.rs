//! Counters the launcher updates, and the Prometheus text exposition that
//! `/metrics` serves (format 0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use nodepool_core::launcher::{
    Census, CounterSnapshot, KeyedCounts, Launcher, LauncherCacheQueues,
};
use nodepool_core::model::{NodeState, RequestState};
use nodepool_core::provider::wrappers::{OperationSnapshot, ProviderMetrics};
use nodepool_core::provider::{DriverMetrics, MetricSeries};
use nodepool_core::store::NodeStore;

/// Where the launcher's counters come from.
pub type CounterSource = Arc<dyn Fn() -> CounterSnapshot + Send + Sync>;

/// Where the launcher's counters per provider, az and requestor come from.
pub type KeyedSource = Arc<dyn Fn() -> KeyedCounts + Send + Sync>;

/// A census being taken.
pub type CensusFuture = Pin<Box<dyn Future<Output = nodepool_core::Result<Census>> + Send>>;

/// Where node and request counts come from: a launcher's caches
/// ([`launcher_census`]).
pub type CensusSource = Arc<dyn Fn() -> CensusFuture + Send + Sync>;

/// Counts from `launcher`'s caches: no listing of the store per report.
pub fn launcher_census(launcher: Arc<Launcher>) -> CensusSource {
    Arc::new(move || {
        let launcher = Arc::clone(&launcher);
        Box::pin(async move { launcher.census().await })
    })
}

/// The `/metrics` exposition: the launcher's counters (when this web app
/// runs beside a launcher) and gauges of nodes and requests by state.
#[derive(Default)]
pub struct Metrics {
    source: Option<CounterSource>,
    keyed: Option<KeyedSource>,
    census: Option<CensusSource>,
    tasks: Option<Arc<ProviderMetrics>>,
    queues: Option<QueueSource>,
    zk_outstanding: Option<crate::daemon::OutstandingSource>,
    driver_metrics: Option<Arc<DriverMetrics>>,
}

/// Where the launcher's cache queue lengths come from.
pub type QueueSource = Arc<dyn Fn() -> LauncherCacheQueues + Send + Sync>;

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("source", &self.source.is_some())
            .field("keyed", &self.keyed.is_some())
            .field("census", &self.census.is_some())
            .field("tasks", &self.tasks.is_some())
            .field("queues", &self.queues.is_some())
            .field("zk_outstanding", &self.zk_outstanding.is_some())
            .field("driver_metrics", &self.driver_metrics.is_some())
            .finish()
    }
}

/// A metric family of the task metrics: name, type, help, value of a row.
type TaskFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&OperationSnapshot) -> String,
);

/// Calls, errors and seconds per provider and operation (upstream's
/// `nodepool.task.<provider>.<operation>` timers).
fn render_tasks(out: &mut String, tasks: &[OperationSnapshot]) {
    if tasks.is_empty() {
        return;
    }
    let labels = |t: &OperationSnapshot| {
        format!(
            "{{provider=\"{}\",operation=\"{}\"}}",
            t.provider.replace('\\', "\\\\").replace('"', "\\\""),
            t.operation
        )
    };
    let families: [TaskFamily; 4] = [
        (
            "nodepool_task_calls_total",
            "counter",
            "Provider calls by provider and operation.",
            |t| t.stats.calls.to_string(),
        ),
        (
            "nodepool_task_errors_total",
            "counter",
            "Provider calls that failed.",
            |t| t.stats.errors.to_string(),
        ),
        (
            "nodepool_task_seconds_total",
            "counter",
            "Time spent in provider calls.",
            |t| t.stats.total.as_secs_f64().to_string(),
        ),
        (
            "nodepool_task_last_seconds",
            "gauge",
            "Time the last provider call took.",
            |t| t.stats.last.as_secs_f64().to_string(),
        ),
    ];
    for (name, kind, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for t in tasks {
            let _ = writeln!(out, "{name}{} {}", labels(t), value(t));
        }
    }
}

/// A label value escaped for the text format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `part` with every character a metric name cannot hold as `_`.
fn metric_name_part(part: &str) -> String {
    part.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn render_keyed(out: &mut String, keyed: &KeyedCounts) {
    let labels = |k: &nodepool_core::launcher::LaunchKey| {
        format!(
            "{{provider=\"{}\",az=\"{}\",requestor=\"{}\",result=\"{}\"}}",
            escape(&k.provider),
            escape(k.az.as_deref().unwrap_or_default()),
            escape(k.requestor.as_deref().unwrap_or_default()),
            k.result
        )
    };
    let name = "nodepool_launch_results_total";
    let _ = writeln!(
        out,
        "# HELP {name} Launch attempts by provider, az, requestor and result (upstream's nodepool.launch.*)."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for (key, totals) in &keyed.launches {
        let _ = writeln!(out, "{name}{} {}", labels(key), totals.count);
    }
    let name = "nodepool_launch_results_seconds_total";
    let _ = writeln!(
        out,
        "# HELP {name} Time from launch start to each attempt's result, summed."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for (key, totals) in &keyed.launches {
        let _ = writeln!(out, "{name}{} {}", labels(key), totals.millis as f64 / 1e3);
    }
    let name = "nodepool_provider_leaked_instances_total";
    let _ = writeln!(out, "# HELP {name} Leaked instances deleted, by provider.");
    let _ = writeln!(out, "# TYPE {name} counter");
    for (provider, n) in &keyed.leaked_instances {
        let _ = writeln!(out, "{name}{{provider=\"{}\"}} {n}", escape(provider));
    }
    // Upstream's `nodepool.provider.<p>.leaked.<kind>` of the other
    // leaked resources (`ports`, `floatingips`): one family per kind, as
    // `nodepool_provider_leaked_instances_total`.
    let mut kinds: Vec<&str> = keyed.leaked_resources.iter().map(|(_, k, _)| *k).collect();
    kinds.sort_unstable();
    kinds.dedup();
    for kind in kinds {
        let name = format!("nodepool_provider_leaked_{}_total", metric_name_part(kind));
        let _ = writeln!(
            out,
            "# HELP {name} Leaked {kind} deleted by the provider's cleanup, by provider."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for (provider, _, n) in keyed.leaked_resources.iter().filter(|(_, k, _)| *k == kind) {
            let _ = writeln!(out, "{name}{{provider=\"{}\"}} {n}", escape(provider));
        }
    }
    let name = "nodepool_image_validations_total";
    let _ = writeln!(
        out,
        "# HELP {name} Image upload validations, by diskimage and result."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for (image, result, totals) in &keyed.validations {
        let _ = writeln!(
            out,
            "{name}{{image=\"{}\",result=\"{result}\"}} {}",
            escape(image),
            totals.count
        );
    }
    let name = "nodepool_image_validation_seconds_total";
    let _ = writeln!(
        out,
        "# HELP {name} Time of image upload validations (boot and hook), summed."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for (image, result, totals) in &keyed.validations {
        let _ = writeln!(
            out,
            "{name}{{image=\"{}\",result=\"{result}\"}} {}",
            escape(image),
            totals.millis as f64 / 1e3
        );
    }
}

/// A driver metric's counter sum, timings and their milliseconds.
type DriverSums = (u64, u64, u64);

/// A metric family of the drivers' metrics: name, help, value of a row.
type DriverFamily = (&'static str, &'static str, fn(&DriverSums) -> String);

/// The drivers' own metrics by statsd name (summed over targets).
fn render_driver_metrics(out: &mut String, series: &[MetricSeries]) {
    if series.is_empty() {
        return;
    }
    let mut by_name: BTreeMap<&str, DriverSums> = BTreeMap::new();
    for s in series {
        let sum = by_name.entry(&s.name).or_default();
        sum.0 = sum.0.saturating_add(s.totals.count);
        sum.1 = sum.1.saturating_add(s.totals.timings);
        sum.2 = sum.2.saturating_add(s.totals.millis);
    }
    let families: [DriverFamily; 3] = [
        (
            "nodepool_driver_metric_total",
            "Counter increments a driver reported under a statsd name of its own (openstacksdk's per-call metrics).",
            |v| v.0.to_string(),
        ),
        (
            "nodepool_driver_metric_timings_total",
            "Timings a driver reported under a statsd name of its own.",
            |v| v.1.to_string(),
        ),
        (
            "nodepool_driver_metric_seconds_total",
            "The sum of those timings.",
            |v| (v.2 as f64 / 1e3).to_string(),
        ),
    ];
    for (name, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (metric, v) in &by_name {
            if name != "nodepool_driver_metric_total" && v.1 == 0 {
                continue;
            }
            let _ = writeln!(out, "{name}{{metric=\"{}\"}} {}", escape(metric), value(v));
        }
    }
}

fn counter(out: &mut String, name: &str, help: &str, samples: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

impl Metrics {
    /// No launcher counters: only the gauges.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counters read from `source` at every scrape.
    pub fn from_source(source: CounterSource) -> Self {
        Self {
            source: Some(source),
            ..Self::default()
        }
    }

    /// Expose the counters per provider, az and requestor read from
    /// `keyed` at every scrape: upstream's `nodepool.launch.*` statsd keys
    /// as `nodepool_launch_results_total{provider, az, requestor, result}`
    /// and `nodepool_launch_results_seconds_total{...}`, and its
    /// `nodepool.provider.<p>.leaked.instances` as
    /// `nodepool_provider_leaked_instances_total{provider}`, and its
    /// `nodepool.provider.<p>.leaked.<kind>` of other leaked resources as
    /// `nodepool_provider_leaked_<kind>_total{provider}` (`ports`,
    /// `floatingips`).
    pub fn with_keyed(mut self, keyed: KeyedSource) -> Self {
        self.keyed = Some(keyed);
        self
    }

    /// Expose the providers' task metrics (core's `Timed` wrapper) as
    /// `nodepool_task_*{provider, operation}`.
    pub fn with_tasks(mut self, tasks: Arc<ProviderMetrics>) -> Self {
        self.tasks = Some(tasks);
        self
    }

    /// Expose the launcher's cache queues (upstream's
    /// `nodepool.launcher.<hostname>.zk.*_cache.*` gauges) as
    /// `nodepool_cache_event_queue{cache}` and
    /// `nodepool_cache_playback_queue{cache}` (`cache`: `node`, `request`),
    /// and with `zk_outstanding` (the ZooKeeper store) its requests not
    /// answered yet (upstream's `zk.client.connection_queue`) as
    /// `nodepool_zk_connection_queue`.
    pub fn with_queues(
        mut self,
        queues: QueueSource,
        zk_outstanding: Option<crate::daemon::OutstandingSource>,
    ) -> Self {
        self.queues = Some(queues);
        self.zk_outstanding = zk_outstanding;
        self
    }

    /// Expose what the drivers recorded under statsd names of their own
    /// (openstacksdk's per-call metrics) by name, the same figures the
    /// daemon sends: `nodepool_driver_metric_total{metric}` (counter
    /// increments), `nodepool_driver_metric_timings_total{metric}` and
    /// `nodepool_driver_metric_seconds_total{metric}` (timings and their
    /// sum).
    pub fn with_driver_metrics(mut self, metrics: Arc<DriverMetrics>) -> Self {
        self.driver_metrics = Some(metrics);
        self
    }

    /// Take node and request counts from `census` (a launcher's caches)
    /// instead of listing the web app's store at every scrape.
    pub fn with_census(mut self, census: CensusSource) -> Self {
        self.census = Some(census);
        self
    }

    /// The node and request counts: from the census source, or (a web app
    /// without a launcher) a listing of `store`.
    pub async fn census(&self, store: &dyn NodeStore) -> nodepool_core::Result<Census> {
        match &self.census {
            Some(source) => source().await,
            None => Census::read(store).await,
        }
    }

    /// The exposition: the counters plus gauges of the census's nodes and
    /// requests by state (every state is listed, zeros included).
    pub fn render(&self, census: &Census) -> String {
        let mut out = String::new();
        if let Some(tasks) = &self.tasks {
            render_tasks(&mut out, &tasks.snapshot());
        }
        if let Some(source) = &self.source {
            let c = source();
            counter(
                &mut out,
                "nodepool_launches_total",
                "Node launches by result.",
                &[
                    ("{result=\"ready\"}", c.launches_ready),
                    ("{result=\"error\"}", c.launches_failed),
                    ("{result=\"aborted\"}", c.launches_aborted),
                ],
            );
            out.push_str("# HELP nodepool_launch_duration_seconds Time from launch to ready.\n");
            out.push_str("# TYPE nodepool_launch_duration_seconds summary\n");
            let _ = writeln!(
                out,
                "nodepool_launch_duration_seconds_sum {}",
                c.launch_millis_total as f64 / 1e3
            );
            let _ = writeln!(
                out,
                "nodepool_launch_duration_seconds_count {}",
                c.launches_ready
            );
            counter(
                &mut out,
                "nodepool_requests_handled_total",
                "Node requests this launcher finished, by result.",
                &[
                    ("{result=\"fulfilled\"}", c.requests_fulfilled),
                    ("{result=\"failed\"}", c.requests_failed),
                    ("{result=\"declined\"}", c.requests_declined),
                ],
            );
            counter(
                &mut out,
                "nodepool_nodes_deleted_total",
                "Node records deleted with their instances.",
                &[("", c.nodes_deleted)],
            );
            counter(
                &mut out,
                "nodepool_leaked_instances_deleted_total",
                "Leaked instances deleted.",
                &[("", c.leaked_instances_deleted)],
            );
            counter(
                &mut out,
                "nodepool_min_ready_requests_total",
                "Requests submitted to keep min-ready.",
                &[("", c.min_ready_requests)],
            );
        }

        if let Some(keyed) = &self.keyed {
            render_keyed(&mut out, &keyed());
        }
        if let Some(queues) = &self.queues {
            let q = queues();
            for (name, help, value) in [
                (
                    "nodepool_cache_event_queue",
                    "Store events a launcher cache has not taken in yet (upstream's zk.<cache>.event_queue).",
                    [q.nodes.events, q.requests.events],
                ),
                (
                    "nodepool_cache_playback_queue",
                    "Records a launcher cache has to read again (upstream's zk.<cache>.playback_queue).",
                    [q.nodes.playback, q.requests.playback],
                ),
            ] {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} gauge");
                let _ = writeln!(out, "{name}{{cache=\"node\"}} {}", value[0]);
                let _ = writeln!(out, "{name}{{cache=\"request\"}} {}", value[1]);
            }
        }
        if let Some(metrics) = &self.driver_metrics {
            render_driver_metrics(&mut out, &metrics.snapshot());
        }
        if let Some(outstanding) = &self.zk_outstanding {
            let name = "nodepool_zk_connection_queue";
            let _ = writeln!(
                out,
                "# HELP {name} ZooKeeper requests of the store not answered yet (upstream's zk.client.connection_queue)."
            );
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {}", outstanding());
        }

        let mut by_node_state: BTreeMap<&str, u64> =
            NodeState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        for (state, n) in census.nodes_by_state() {
            if let Some(state) = state {
                *by_node_state.entry(state.as_str()).or_default() += n;
            }
        }
        out.push_str("# HELP nodepool_nodes Nodes by state.\n");
        out.push_str("# TYPE nodepool_nodes gauge\n");
        for (state, n) in by_node_state {
            let _ = writeln!(out, "nodepool_nodes{{state=\"{state}\"}} {n}");
        }

        let mut by_request_state: BTreeMap<&str, u64> =
            RequestState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        for (state, n) in census.requests_by_state() {
            if let Some(state) = state {
                *by_request_state.entry(state.as_str()).or_default() += n;
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
