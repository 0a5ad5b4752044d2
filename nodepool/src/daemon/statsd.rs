//! statsd reporting with upstream nodepool's metric names.
//!
//! Enabled as upstream enables it: when `STATSD_HOST` is set (and
//! optionally `STATSD_PORT`, default 8125; `STATSD_PREFIX` is not applied,
//! as upstream's own client does not). Metrics go over UDP in
//! the plain statsd line format, several lines to a datagram of at most
//! 512 bytes, as the Python client's pipelines send them.
//!
//! What is sent, like upstream's `StatsWorker` (after a change in the
//! store, at most once a second) and at least every ten seconds:
//!
//! - gauges `nodepool.nodes.<state>`, `nodepool.provider.<p>.nodes.<state>`
//!   and `nodepool.label.<l>.nodes.<state>`, zeros included for every
//!   state of every provider and label a running pool registered;
//! - gauges `nodepool.provider.<p>.pool.<pool>.addressable_requests`,
//!   `nodepool.provider.<p>.max_servers` and
//!   `nodepool.tenant_limits.<tenant>.<limit>` (`inf` for a limit not
//!   set, as upstream's `math.inf` is formatted);
//! - upstream's launch counters and timers of this launcher's launch
//!   attempts since the last report, `nodepool.launch.<result>`,
//!   `nodepool.launch.provider.<p>.<result>`,
//!   `nodepool.launch.provider.<p>.<az>.<result>` and
//!   `nodepool.launch.requestor.<r>.<result>` (`<result>`: `ready`,
//!   `error.quota`, `error.zksession`, `error.unknown`; one per failed
//!   attempt, as upstream): a counter and a `|ms` timing of the mean time
//!   since the launch started, sampled at `1/n` so a statsd server counts
//!   `n` launches;
//! - upstream's `nodepool.provider.<p>.leaked.instances` counters, and
//!   `nodepool.provider.<p>.leaked.ports` and `.leaked.floatingips` (the
//!   OpenStack driver's cleanup of leaked ports and floating IPs, counted
//!   by the launcher's leak pass);
//! - upstream's task timers `nodepool.task.<provider>.<operation>`: per
//!   provider call (`create_instance`, `get_instance`, `quota`, ...) since
//!   the last report, a counter and a `|ms` timing of the mean duration
//!   (sampled at `1/n` like `nodepool.launch.ready`), from the task
//!   metrics of core's `Timed` provider wrapper. Upstream 11's openstacksdk
//!   names the key after the REST call under the same
//!   `nodepool.task.<provider>` prefix; here the operation is the
//!   provider verb, whatever the driver;
//! - upstream's per-launcher gauges of its ZooKeeper client,
//!   `nodepool.launcher.<hostname>.zk.client.connection_queue` (the
//!   ZooKeeper store's requests not answered yet; not on the embedded
//!   store) and `.zk.node_cache.event_queue`, `.zk.node_cache.playback_queue`,
//!   `.zk.request_cache.event_queue`, `.zk.request_cache.playback_queue`
//!   (the launcher's caches' queues), at every report;
//! - counters without an upstream name under upstream's per-launcher root
//!   `nodepool.launcher.<hostname>.`: `requests.fulfilled`,
//!   `requests.failed`, `requests.declined`, `nodes.deleted`,
//!   `leaked.instances`, `min_ready.requests`.
//!
//! doc/operations.md lists every metric upstream sends and whether this
//! one does.
//!
//! Upstream elects one launcher to send the node gauges; here every
//! launcher sends them, which is harmless: gauges are absolute values and
//! every launcher reads the same store.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use nodepool_core::config::Config;
use nodepool_core::launcher::{Census, CounterSnapshot, KeyedCounts, LauncherCacheQueues};
use nodepool_core::model::{Component, NodeState};
use nodepool_core::provider::wrappers::{OperationSnapshot, ProviderMetrics};
use nodepool_core::store::NodeStore;
use tokio::net::UdpSocket;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::OutstandingSource;
use crate::web::CensusSource;

/// The largest datagram sent (the Python client's `maxudpsize`).
const MAX_DATAGRAM: usize = 512;

/// Where and how often to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StatsdSettings {
    /// `host:port` of the statsd server.
    pub(crate) target: String,
    /// Prepended to every name, with a dot.
    pub(crate) prefix: Option<String>,
    /// The longest time between two reports.
    pub(crate) interval: Duration,
    /// The shortest time between two reports (change-driven ones).
    pub(crate) min_interval: Duration,
}

impl StatsdSettings {
    /// The settings upstream's environment variables give, `None` when
    /// `STATSD_HOST` is unset or empty. `STATSD_PREFIX` is not read:
    /// upstream 11.0.0 gives it to openstacksdk only and sends its own
    /// `nodepool.*` names without it, so dashboards find the same names.
    pub(crate) fn from_env() -> Option<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self::from_vars(var("STATSD_HOST"), var("STATSD_PORT"), None)
    }

    /// The settings for these variable values.
    pub(crate) fn from_vars(
        host: Option<String>,
        port: Option<String>,
        prefix: Option<String>,
    ) -> Option<Self> {
        let host = host?;
        let port = port.unwrap_or_else(|| "8125".to_owned());
        // An IPv6 literal needs brackets to be joined with a port.
        let target = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Some(Self {
            target,
            prefix,
            interval: Duration::from_secs(10),
            min_interval: Duration::from_secs(1),
        })
    }
}

/// Where the reporter reads what it reports.
pub(crate) struct StatsSources {
    /// The store whose registered pools are read.
    pub(crate) store: Arc<dyn NodeStore>,
    /// Node and request counts (the launcher's caches).
    pub(crate) census: CensusSource,
    /// The launcher's counters.
    pub(crate) counters: Arc<dyn Fn() -> CounterSnapshot + Send + Sync>,
    /// The launcher's counters per provider, az and requestor.
    pub(crate) keyed: Arc<dyn Fn() -> KeyedCounts + Send + Sync>,
    /// The current configuration (for `max_servers`).
    pub(crate) config: Arc<dyn Fn() -> Arc<Config> + Send + Sync>,
    /// This launcher's host name, for `nodepool.launcher.<hostname>`.
    pub(crate) hostname: String,
    /// The task metrics of the launcher's providers.
    pub(crate) tasks: Arc<ProviderMetrics>,
    /// The queue lengths of the launcher's node and request caches.
    pub(crate) queues: Arc<dyn Fn() -> LauncherCacheQueues + Send + Sync>,
    /// The ZooKeeper store's requests not answered yet; `None` on the
    /// embedded store.
    pub(crate) zk_outstanding: Option<OutstandingSource>,
}

/// Start reporting until `cancel`; the task ends with it.
pub(crate) fn spawn(
    settings: StatsdSettings,
    sources: StatsSources,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = run(&settings, &sources, &cancel).await {
            warn!(target = %settings.target, "statsd reporting stopped: {e}");
        }
    })
}

async fn run(
    settings: &StatsdSettings,
    sources: &StatsSources,
    cancel: &CancellationToken,
) -> std::io::Result<()> {
    let socket = connect(settings).await?;
    let mut events = sources.store.watch();
    let mut previous = Previous::default();
    loop {
        report(&socket, settings, sources, &mut previous).await;
        // Wait for a change (or the interval), then at least `min_interval`.
        let deadline = tokio::time::Instant::now() + settings.interval;
        let changed = async {
            loop {
                match events.recv().await {
                    Ok(_) | Err(RecvError::Lagged(_)) => return,
                    // No more events: only the interval drives reports.
                    Err(RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep_until(deadline) => {}
            _ = changed => {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(settings.min_interval) => {}
                }
            }
        }
        // Drop the events that arrived meanwhile: this report covers them.
        events = events.resubscribe();
    }
    // A last report, so counters since the previous one are not lost.
    report(&socket, settings, sources, &mut previous).await;
    Ok(())
}

/// What the last report saw, to send the counters' deltas.
#[derive(Debug, Default)]
struct Previous {
    counters: CounterSnapshot,
    keyed: KeyedCounts,
    tasks: Vec<OperationSnapshot>,
}

/// Read the store and counters and send one report.
async fn report(
    socket: &UdpSocket,
    settings: &StatsdSettings,
    sources: &StatsSources,
    previous: &mut Previous,
) {
    let mut lines = Vec::new();
    let pools = sources.store.list_components("pool").await;
    let census = (sources.census)().await;
    match (&pools, &census) {
        (Ok(pools), Ok(census)) => {
            lines.extend(gauge_lines(&node_gauges(census, pools)));
            lines.extend(gauge_lines(&request_gauges(census, pools)));
        }
        _ => debug!("statsd: store not readable, node gauges skipped"),
    }
    let config = (sources.config)();
    lines.extend(gauge_lines(&limit_gauges(&config)));
    lines.extend(tenant_limit_lines(&config));
    let now = (sources.counters)();
    lines.extend(counter_lines(&previous.counters, &now, &sources.hostname));
    previous.counters = now;
    let keyed = (sources.keyed)();
    lines.extend(keyed_lines(&previous.keyed, &keyed));
    previous.keyed = keyed;
    let tasks = sources.tasks.snapshot();
    lines.extend(task_lines(&previous.tasks, &tasks));
    previous.tasks = tasks;
    let outstanding = sources.zk_outstanding.as_ref().map(|f| f());
    lines.extend(zk_queue_lines(
        &sources.hostname,
        outstanding,
        &(sources.queues)(),
    ));
    send(socket, settings, &lines).await;
}

/// A UDP socket connected to the statsd server of `settings`.
pub(crate) async fn connect(settings: &StatsdSettings) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind(if settings.target.starts_with('[') {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    })
    .await?;
    socket.connect(&settings.target).await?;
    info!(target = %settings.target, "reporting to statsd");
    Ok(socket)
}

/// Send `lines` in datagrams of at most 512 bytes. statsd is fire and
/// forget: a server that is down loses data, nothing else.
pub(crate) async fn send(socket: &UdpSocket, settings: &StatsdSettings, lines: &[String]) {
    for datagram in datagrams(lines, settings.prefix.as_deref()) {
        if let Err(e) = socket.send(datagram.as_bytes()).await {
            debug!("statsd send failed: {e}");
        }
    }
}

/// Upstream's `updateNodeStats`: nodes by state, by provider and state, and
/// by label and state; zeros for every state of the providers and labels
/// the registered pools name.
pub(crate) fn node_gauges(census: &Census, pools: &[Component]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    let providers: std::collections::BTreeSet<&str> = pools
        .iter()
        .filter_map(|p| p.provider_name.as_deref())
        .collect();
    let labels: std::collections::BTreeSet<&str> = pools
        .iter()
        .flat_map(|p| p.supported_labels.iter().flatten())
        .map(String::as_str)
        .collect();
    for state in NodeState::ALL {
        let state = state.as_str();
        out.insert(format!("nodepool.nodes.{state}"), 0);
        for provider in &providers {
            out.insert(format!("nodepool.provider.{provider}.nodes.{state}"), 0);
        }
        for label in &labels {
            out.insert(format!("nodepool.label.{label}.nodes.{state}"), 0);
        }
    }
    for (group, n) in &census.nodes {
        let n = i64::try_from(*n).unwrap_or(i64::MAX);
        let state = group.state.map_or("None", NodeState::as_str);
        *out.entry(format!("nodepool.nodes.{state}")).or_default() += n;
        for label in &group.labels {
            *out.entry(format!("nodepool.label.{label}.nodes.{state}"))
                .or_default() += n;
        }
        let provider = group.provider.as_deref().unwrap_or("None");
        *out.entry(format!("nodepool.provider.{provider}.nodes.{state}"))
            .or_default() += n;
    }
    out
}

/// Upstream's `updateNodeRequestStats`: per registered pool, the open
/// requests whose every label it supports.
pub(crate) fn request_gauges(census: &Census, pools: &[Component]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for pool in pools {
        let (Some(provider), Some(name)) = (&pool.provider_name, &pool.pool_name) else {
            continue;
        };
        let supported = pool.supported_labels.as_deref().unwrap_or_default();
        let count: u64 = census
            .requests
            .iter()
            .filter(|(group, _)| group.labels.iter().all(|l| supported.contains(l)))
            .map(|(_, n)| n)
            .sum();
        out.insert(
            format!("nodepool.provider.{provider}.pool.{name}.addressable_requests"),
            i64::try_from(count).unwrap_or(i64::MAX),
        );
    }
    out
}

/// Upstream's `updateProviderLimits`: the sum of the pools' `max-servers`.
pub(crate) fn limit_gauges(config: &Config) -> BTreeMap<String, i64> {
    config
        .providers
        .iter()
        .map(|p| {
            let max: i64 = p.pools.iter().filter_map(|pool| pool.max_servers).sum();
            (format!("nodepool.provider.{}.max_servers", p.name), max)
        })
        .collect()
}

/// Upstream's `updateTenantLimits`: `cores`, `instances` and `ram` of
/// every `tenant-resource-limits` entry (`inf` when not set), and its other
/// keys (`max-volumes` as `volumes`, `max-volume-gb` as `volume-gb`, the
/// rest as written), names normalized as upstream does.
pub(crate) fn tenant_limit_lines(config: &Config) -> Vec<String> {
    let value = |v: Option<i64>| v.map_or_else(|| "inf".to_owned(), |v| v.to_string());
    let mut out = Vec::new();
    for limit in &config.tenant_resource_limits {
        let tenant = normalize(&limit.tenant_name);
        let mut gauges = vec![
            ("cores".to_owned(), value(limit.max_cores)),
            ("instances".to_owned(), value(limit.max_servers)),
            ("ram".to_owned(), value(limit.max_ram)),
        ];
        for (key, v) in &limit.other {
            let key = match key.as_str() {
                "max-volumes" => "volumes",
                "max-volume-gb" => "volume-gb",
                other => other,
            };
            gauges.push((normalize(key), v.to_string()));
        }
        for (key, v) in gauges {
            out.push(format!("nodepool.tenant_limits.{tenant}.{key}:{v}|g"));
        }
    }
    out
}

fn gauge_lines(gauges: &BTreeMap<String, i64>) -> impl Iterator<Item = String> + '_ {
    gauges.iter().map(|(k, v)| format!("{k}:{v}|g"))
}

/// Upstream's `ZooKeeper.reportStats` gauges under
/// `nodepool.launcher.<hostname>.zk.` (the host name as it is, as upstream's
/// `socket.gethostname()`): `client.connection_queue`, this store's
/// ZooKeeper requests not answered yet (left out on the embedded store,
/// which has no ZooKeeper client), and the `event_queue` and
/// `playback_queue` of the node and request caches. Upstream's
/// `image_cache` gauges have no counterpart: the launcher keeps no image
/// cache (it reads uploads from the store when it needs them).
pub(crate) fn zk_queue_lines(
    hostname: &str,
    outstanding: Option<usize>,
    queues: &LauncherCacheQueues,
) -> Vec<String> {
    let root = format!("nodepool.launcher.{hostname}.zk");
    let mut out = Vec::with_capacity(5);
    if let Some(n) = outstanding {
        out.push(format!("{root}.client.connection_queue:{n}|g"));
    }
    for (cache, q) in [
        ("node_cache", queues.nodes),
        ("request_cache", queues.requests),
    ] {
        out.push(format!("{root}.{cache}.event_queue:{}|g", q.events));
        out.push(format!("{root}.{cache}.playback_queue:{}|g", q.playback));
    }
    out
}

/// The counter lines for what happened between two snapshots. Zero deltas
/// are left out.
pub(crate) fn counter_lines(
    before: &CounterSnapshot,
    now: &CounterSnapshot,
    hostname: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    let delta = |a: u64, b: u64| b.saturating_sub(a);
    let host = hostname.replace(['.', ':'], "_");
    let counters = [
        (
            format!("nodepool.launcher.{host}.requests.fulfilled"),
            delta(before.requests_fulfilled, now.requests_fulfilled),
        ),
        (
            format!("nodepool.launcher.{host}.requests.failed"),
            delta(before.requests_failed, now.requests_failed),
        ),
        (
            format!("nodepool.launcher.{host}.requests.declined"),
            delta(before.requests_declined, now.requests_declined),
        ),
        (
            format!("nodepool.launcher.{host}.nodes.deleted"),
            delta(before.nodes_deleted, now.nodes_deleted),
        ),
        (
            format!("nodepool.launcher.{host}.leaked.instances"),
            delta(
                before.leaked_instances_deleted,
                now.leaked_instances_deleted,
            ),
        ),
        (
            format!("nodepool.launcher.{host}.min_ready.requests"),
            delta(before.min_ready_requests, now.min_ready_requests),
        ),
    ];
    for (name, n) in counters {
        if n > 0 {
            out.push(format!("{name}:{n}|c"));
        }
    }
    out
}

/// Upstream's `normalize_statsd_name`: a requestor's dots and colons
/// would be graphite levels and statsd delimiters.
fn normalize(name: &str) -> String {
    name.replace(['.', ':'], "_")
}

/// A counter and a timer of the mean of `millis` over `n` events, sampled
/// at `1/n` so a statsd server counts `n` timings.
pub(crate) fn count_and_time(out: &mut Vec<String>, key: &str, n: u64, millis: u64) {
    let mean = millis / n.max(1);
    out.push(format!("{key}:{n}|c"));
    if n == 1 {
        out.push(format!("{key}:{mean}|ms"));
    } else {
        out.push(format!("{key}:{mean}|ms|@{}", 1.0 / n as f64));
    }
}

/// Upstream's `recordLaunchStats` keys for the launch attempts, and its
/// `nodepool.provider.<p>.leaked.instances` and
/// `nodepool.provider.<p>.leaked.<kind>` (`ports`, `floatingips`)
/// counters, between two snapshots; keys without new events are left out.
pub(crate) fn keyed_lines(before: &KeyedCounts, now: &KeyedCounts) -> Vec<String> {
    let mut sums: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (key, totals) in &now.launches {
        let old = before
            .launches
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, t)| *t)
            .unwrap_or_default();
        let n = totals.count.saturating_sub(old.count);
        if n == 0 {
            continue;
        }
        let millis = totals.millis.saturating_sub(old.millis);
        let result = key.result;
        let mut names = vec![
            format!("nodepool.launch.provider.{}.{result}", key.provider),
            format!("nodepool.launch.{result}"),
        ];
        if let Some(az) = &key.az {
            names.push(format!(
                "nodepool.launch.provider.{}.{az}.{result}",
                key.provider
            ));
        }
        if let Some(requestor) = &key.requestor {
            names.push(format!(
                "nodepool.launch.requestor.{}.{result}",
                normalize(requestor)
            ));
        }
        for name in names {
            let sum = sums.entry(name).or_default();
            sum.0 += n;
            sum.1 += millis;
        }
    }
    let mut out = Vec::new();
    for (name, (n, millis)) in sums {
        count_and_time(&mut out, &name, n, millis);
    }
    for (provider, n) in &now.leaked_instances {
        let old = before
            .leaked_instances
            .iter()
            .find(|(p, _)| p == provider)
            .map_or(0, |(_, n)| *n);
        let n = n.saturating_sub(old);
        if n > 0 {
            out.push(format!(
                "nodepool.provider.{provider}.leaked.instances:{n}|c"
            ));
        }
    }
    for (provider, kind, n) in &now.leaked_resources {
        let old = before
            .leaked_resources
            .iter()
            .find(|(p, k, _)| p == provider && k == kind)
            .map_or(0, |(_, _, n)| *n);
        let n = n.saturating_sub(old);
        if n > 0 {
            out.push(format!(
                "nodepool.provider.{provider}.leaked.{}:{n}|c",
                normalize(kind)
            ));
        }
    }
    // Ours: image validations, counted and timed by image and result.
    for (image, result, totals) in &now.validations {
        let old = before
            .validations
            .iter()
            .find(|(i, r, _)| i == image && r == result)
            .map_or((0, 0), |(_, _, t)| (t.count, t.millis));
        let n = totals.count.saturating_sub(old.0);
        if n > 0 {
            let millis = totals.millis.saturating_sub(old.1);
            count_and_time(
                &mut out,
                &format!("nodepool.image_validation.{image}.{result}"),
                n,
                millis,
            );
        }
    }
    out
}

/// Upstream's `nodepool.task.<provider>.<operation>` counter and timer for
/// the provider calls between two snapshots; operations without new calls
/// are left out.
pub(crate) fn task_lines(before: &[OperationSnapshot], now: &[OperationSnapshot]) -> Vec<String> {
    let mut out = Vec::new();
    for op in now {
        let old = before
            .iter()
            .find(|b| b.provider == op.provider && b.operation == op.operation)
            .map(|b| b.stats)
            .unwrap_or_default();
        let calls = op.stats.calls.saturating_sub(old.calls);
        if calls == 0 {
            continue;
        }
        let millis = op.stats.total.saturating_sub(old.total).as_millis() as u64;
        let key = format!("nodepool.task.{}.{}", op.provider, op.operation);
        count_and_time(&mut out, &key, calls, millis);
    }
    out
}

/// Pack lines (with the prefix) into newline-separated datagrams of at
/// most [`MAX_DATAGRAM`] bytes; a longer line goes alone.
pub(crate) fn datagrams(lines: &[String], prefix: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in lines {
        let mut full = String::new();
        if let Some(prefix) = prefix {
            let _ = write!(full, "{prefix}.");
        }
        full.push_str(line);
        if !current.is_empty() && current.len() + 1 + full.len() > MAX_DATAGRAM {
            out.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(&full);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodepool_core::launcher::{CacheQueues, LaunchKey, LaunchTotals};
    use nodepool_core::model::{Node, NodeRequest};
    use nodepool_core::store::MemoryStore;

    fn pool(provider: &str, name: &str, labels: &[&str]) -> Component {
        let mut c = Component::new("pool", "host");
        c.provider_name = Some(provider.to_owned());
        c.pool_name = Some(name.to_owned());
        c.supported_labels = Some(labels.iter().map(|l| l.to_string()).collect());
        c
    }

    fn node(provider: &str, label: &str, state: NodeState) -> Node {
        let mut n = Node {
            provider: Some(provider.to_owned()),
            labels: vec![label.to_owned()],
            ..Node::default()
        };
        n.set_state(state);
        n
    }

    const CONFIG: &str = "labels:\n  - name: small\nproviders:\n  - name: fake-a\n    cloud: fake\n    driver: fake\n    cloud-images:\n      - name: img\n        image-name: Fake Precise\n    pools:\n      - name: p1\n        max-servers: 3\n        labels:\n          - name: small\n            cloud-image: img\n            min-ram: 8192\n      - name: p2\n        max-servers: 4\n        labels:\n          - name: small\n            cloud-image: img\n            min-ram: 8192\n";

    fn config() -> Config {
        nodepool_core::config::load_str("nodepool.yaml", CONFIG, &crate::daemon::registry())
            .unwrap_or_else(|e| panic!("test config: {e}"))
    }

    #[test]
    fn node_gauges_count_by_state_provider_and_label_with_zeros() {
        let pools = [pool("fake-a", "p1", &["small", "big"])];
        let nodes = [
            node("fake-a", "small", NodeState::Ready),
            node("fake-a", "small", NodeState::Ready),
            node("fake-b", "big", NodeState::InUse),
        ];
        let g = node_gauges(&Census::from_records(&nodes, &[]), &pools);
        assert_eq!(g["nodepool.nodes.ready"], 2);
        assert_eq!(g["nodepool.nodes.in-use"], 1);
        assert_eq!(g["nodepool.nodes.building"], 0);
        assert_eq!(g["nodepool.provider.fake-a.nodes.ready"], 2);
        assert_eq!(g["nodepool.provider.fake-a.nodes.in-use"], 0);
        // A provider no pool registered still counts its nodes.
        assert_eq!(g["nodepool.provider.fake-b.nodes.in-use"], 1);
        assert_eq!(g["nodepool.label.small.nodes.ready"], 2);
        assert_eq!(g["nodepool.label.big.nodes.in-use"], 1);
        assert_eq!(g["nodepool.label.big.nodes.deleting"], 0);
    }

    #[test]
    fn addressable_requests_count_requests_whose_every_label_a_pool_serves() {
        let pools = [
            pool("fake-a", "p1", &["small", "big"]),
            pool("fake-a", "p2", &["small"]),
        ];
        let request = |labels: &[&str]| NodeRequest {
            node_types: labels.iter().map(|l| l.to_string()).collect(),
            ..NodeRequest::default()
        };
        let requests = [request(&["small"]), request(&["small", "big"])];
        let g = request_gauges(&Census::from_records(&[], &requests), &pools);
        assert_eq!(
            g["nodepool.provider.fake-a.pool.p1.addressable_requests"],
            2
        );
        assert_eq!(
            g["nodepool.provider.fake-a.pool.p2.addressable_requests"],
            1
        );
    }

    #[test]
    fn tenant_limits_are_gauges_with_inf_for_unset_limits() {
        let yaml = format!(
            "{CONFIG}tenant-resource-limits:\n  - tenant-name: t.1\n    max-cores: 8\n    max-volumes: 2\n"
        );
        let config =
            nodepool_core::config::load_str("nodepool.yaml", &yaml, &crate::daemon::registry())
                .unwrap_or_else(|e| panic!("test config: {e}"));
        assert_eq!(
            tenant_limit_lines(&config),
            [
                "nodepool.tenant_limits.t_1.cores:8|g",
                "nodepool.tenant_limits.t_1.instances:inf|g",
                "nodepool.tenant_limits.t_1.ram:inf|g",
                "nodepool.tenant_limits.t_1.volumes:2|g",
            ]
        );
    }

    #[test]
    fn max_servers_gauge_sums_the_pools() {
        let g = limit_gauges(&config());
        assert_eq!(g["nodepool.provider.fake-a.max_servers"], 7);
    }

    #[test]
    fn task_metrics_send_upstream_task_timers_of_new_calls() {
        let tasks = ProviderMetrics::new();
        tasks.record("p1", "get_instance", Duration::from_millis(100), false);
        let before = tasks.snapshot();
        tasks.record("p1", "get_instance", Duration::from_millis(300), false);
        tasks.record("p1", "get_instance", Duration::from_millis(100), true);
        tasks.record("p1", "create_instance", Duration::from_millis(50), false);
        assert_eq!(
            task_lines(&before, &tasks.snapshot()),
            [
                "nodepool.task.p1.create_instance:1|c",
                "nodepool.task.p1.create_instance:50|ms",
                "nodepool.task.p1.get_instance:2|c",
                "nodepool.task.p1.get_instance:200|ms|@0.5",
            ]
        );
        assert!(task_lines(&tasks.snapshot(), &tasks.snapshot()).is_empty());
    }

    #[test]
    fn counters_send_deltas_under_upstream_names_and_skip_zeros() {
        let before = CounterSnapshot {
            launches_ready: 1,
            launch_millis_total: 100,
            ..CounterSnapshot::default()
        };
        let now = CounterSnapshot {
            launches_ready: 5,
            launch_millis_total: 900,
            launches_failed: 2,
            requests_fulfilled: 3,
            ..CounterSnapshot::default()
        };
        let lines = counter_lines(&before, &now, "node1.example.org");
        assert_eq!(
            lines,
            ["nodepool.launcher.node1_example_org.requests.fulfilled:3|c"]
        );
        assert!(counter_lines(&now, &now, "h").is_empty());
    }

    fn launch(
        provider: &str,
        az: Option<&str>,
        requestor: Option<&str>,
        result: &'static str,
        count: u64,
        millis: u64,
    ) -> (LaunchKey, LaunchTotals) {
        (
            LaunchKey {
                provider: provider.to_owned(),
                az: az.map(str::to_owned),
                requestor: requestor.map(str::to_owned),
                result,
            },
            LaunchTotals { count, millis },
        )
    }

    #[test]
    fn launch_results_send_upstreams_keys_per_provider_az_and_requestor() {
        let before = KeyedCounts {
            launches: vec![launch(
                "p1",
                Some("az1"),
                Some("zuul.example.org"),
                "ready",
                1,
                100,
            )],
            leaked_instances: vec![("p1".to_owned(), 1)],
            leaked_resources: vec![("p1".to_owned(), "ports", 2)],
            validations: vec![(
                "img".to_owned(),
                "failed",
                LaunchTotals {
                    count: 1,
                    millis: 1000,
                },
            )],
        };
        let now = KeyedCounts {
            launches: vec![
                launch("p1", Some("az1"), Some("zuul.example.org"), "ready", 3, 500),
                launch("p1", None, Some("NodePool:min-ready"), "ready", 2, 200),
                launch("p2", None, None, "error.unknown", 1, 50),
            ],
            leaked_instances: vec![("p1".to_owned(), 3)],
            leaked_resources: vec![
                ("p1".to_owned(), "floatingips", 1),
                ("p1".to_owned(), "ports", 2),
            ],
            validations: vec![
                (
                    "img".to_owned(),
                    "failed",
                    LaunchTotals {
                        count: 2,
                        millis: 3000,
                    },
                ),
                (
                    "img".to_owned(),
                    "passed",
                    LaunchTotals {
                        count: 1,
                        millis: 500,
                    },
                ),
            ],
        };
        assert_eq!(
            keyed_lines(&before, &now),
            [
                "nodepool.launch.error.unknown:1|c",
                "nodepool.launch.error.unknown:50|ms",
                "nodepool.launch.provider.p1.az1.ready:2|c",
                "nodepool.launch.provider.p1.az1.ready:200|ms|@0.5",
                "nodepool.launch.provider.p1.ready:4|c",
                "nodepool.launch.provider.p1.ready:150|ms|@0.25",
                "nodepool.launch.provider.p2.error.unknown:1|c",
                "nodepool.launch.provider.p2.error.unknown:50|ms",
                "nodepool.launch.ready:4|c",
                "nodepool.launch.ready:150|ms|@0.25",
                "nodepool.launch.requestor.NodePool_min-ready.ready:2|c",
                "nodepool.launch.requestor.NodePool_min-ready.ready:100|ms|@0.5",
                "nodepool.launch.requestor.zuul_example_org.ready:2|c",
                "nodepool.launch.requestor.zuul_example_org.ready:200|ms|@0.5",
                "nodepool.provider.p1.leaked.instances:2|c",
                "nodepool.provider.p1.leaked.floatingips:1|c",
                "nodepool.image_validation.img.failed:1|c",
                "nodepool.image_validation.img.failed:2000|ms",
                "nodepool.image_validation.img.passed:1|c",
                "nodepool.image_validation.img.passed:500|ms",
            ]
        );
        assert!(keyed_lines(&now, &now).is_empty());
    }

    #[test]
    fn zk_gauges_use_upstreams_names_and_the_host_name_as_it_is() {
        let queues = LauncherCacheQueues {
            nodes: CacheQueues {
                events: 4,
                playback: 1,
            },
            requests: CacheQueues {
                events: 0,
                playback: 7,
            },
        };
        assert_eq!(
            zk_queue_lines("node1.example.org", Some(2), &queues),
            [
                "nodepool.launcher.node1.example.org.zk.client.connection_queue:2|g",
                "nodepool.launcher.node1.example.org.zk.node_cache.event_queue:4|g",
                "nodepool.launcher.node1.example.org.zk.node_cache.playback_queue:1|g",
                "nodepool.launcher.node1.example.org.zk.request_cache.event_queue:0|g",
                "nodepool.launcher.node1.example.org.zk.request_cache.playback_queue:7|g",
            ]
        );
        // The embedded store has no ZooKeeper client to measure.
        let embedded = zk_queue_lines("h", None, &queues);
        assert_eq!(embedded.len(), 4);
        assert!(embedded.iter().all(|l| !l.contains("connection_queue")));
    }

    #[test]
    fn datagrams_hold_at_most_512_bytes_and_carry_the_prefix() {
        let lines: Vec<String> = (0..100)
            .map(|i| format!("nodepool.label.l{i}.nodes.ready:0|g"))
            .collect();
        let packets = datagrams(&lines, Some("ci"));
        assert!(packets.len() > 1);
        assert!(packets.iter().all(|p| p.len() <= MAX_DATAGRAM));
        let back: Vec<&str> = packets.iter().flat_map(|p| p.split('\n')).collect();
        assert_eq!(back.len(), 100);
        assert!(back.iter().all(|l| l.starts_with("ci.nodepool.label.")));
    }

    #[test]
    fn settings_come_from_upstreams_variables() {
        assert_eq!(
            StatsdSettings::from_vars(None, Some("1".into()), None),
            None
        );
        let s = StatsdSettings::from_vars(Some("localhost".into()), None, None);
        assert_eq!(s.map(|s| s.target), Some("localhost:8125".to_owned()));
        let s = StatsdSettings::from_vars(Some("::1".into()), Some("9".into()), None);
        assert_eq!(s.map(|s| s.target), Some("[::1]:9".to_owned()));
    }

    /// Lines received and not looked at yet.
    struct Received<'a> {
        socket: &'a UdpSocket,
        pending: std::collections::VecDeque<String>,
    }

    impl Received<'_> {
        /// The next line (in the order sent) that satisfies `want`; the
        /// lines before it are dropped, those after it kept. Panics after
        /// ten seconds.
        async fn wait_for_line(&mut self, want: impl Fn(&str) -> bool) -> String {
            let mut buf = vec![0u8; 65536];
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                while let Some(line) = self.pending.pop_front() {
                    if want(&line) {
                        return line;
                    }
                }
                let n = tokio::time::timeout_at(deadline, self.socket.recv(&mut buf))
                    .await
                    .expect("statsd line before the deadline")
                    .expect("recv");
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.pending.extend(text.lines().map(str::to_owned));
            }
        }
    }

    #[tokio::test]
    async fn reporter_sends_gauges_over_udp_and_again_after_a_store_change() {
        let receiver = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let port = receiver.local_addr().expect("addr").port();
        let store: Arc<dyn NodeStore> = Arc::new(MemoryStore::new());
        store
            .register_component("pool", "p1", &pool("fake-a", "p1", &["small"]))
            .await
            .expect("register");
        let keyed = Arc::new(std::sync::Mutex::new(KeyedCounts::default()));
        let read = Arc::clone(&keyed);
        let config = Arc::new(config());
        let mut settings =
            StatsdSettings::from_vars(Some("127.0.0.1".into()), Some(port.to_string()), None)
                .expect("settings");
        settings.interval = Duration::from_secs(60);
        settings.min_interval = Duration::from_millis(10);
        let cancel = CancellationToken::new();
        let task = spawn(
            settings,
            StatsSources {
                store: Arc::clone(&store),
                census: {
                    let store = Arc::clone(&store);
                    Arc::new(move || {
                        let store = Arc::clone(&store);
                        Box::pin(async move { Census::read(&*store).await })
                    })
                },
                counters: Arc::new(CounterSnapshot::default),
                keyed: Arc::new(move || read.lock().expect("lock").clone()),
                config: Arc::new(move || Arc::clone(&config)),
                hostname: "h".to_owned(),
                tasks: Arc::new(ProviderMetrics::new()),
                queues: Arc::new(|| LauncherCacheQueues {
                    nodes: CacheQueues {
                        events: 1,
                        playback: 2,
                    },
                    requests: CacheQueues::default(),
                }),
                zk_outstanding: Some(Arc::new(|| 3)),
            },
            cancel.clone(),
        );
        let mut received = Received {
            socket: &receiver,
            pending: Default::default(),
        };
        let line = received
            .wait_for_line(|l| l.starts_with("nodepool.nodes.ready:"))
            .await;
        assert_eq!(line, "nodepool.nodes.ready:0|g");
        let line = received.wait_for_line(|l| l.contains("max_servers")).await;
        assert_eq!(line, "nodepool.provider.fake-a.max_servers:7|g");
        let line = received
            .wait_for_line(|l| l.contains("connection_queue"))
            .await;
        assert_eq!(line, "nodepool.launcher.h.zk.client.connection_queue:3|g");
        let line = received
            .wait_for_line(|l| l.contains("node_cache.playback"))
            .await;
        assert_eq!(line, "nodepool.launcher.h.zk.node_cache.playback_queue:2|g");

        // A change in the store is reported without waiting for the interval.
        keyed.lock().expect("lock").launches = vec![launch("fake-a", None, None, "ready", 1, 5)];
        store
            .create_node(&node("fake-a", "small", NodeState::Ready))
            .await
            .expect("create");
        let line = received
            .wait_for_line(|l| l.starts_with("nodepool.label.small.nodes.ready:1"))
            .await;
        assert_eq!(line, "nodepool.label.small.nodes.ready:1|g");
        let line = received
            .wait_for_line(|l| l.starts_with("nodepool.launch.ready:"))
            .await;
        assert_eq!(line, "nodepool.launch.ready:1|c");
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("reporter stops when cancelled")
            .expect("join");
    }
}
