//! The statsd datagrams of scripted runs of `nodepool launcher` checked
//! against the table of doc/operations.md: on the embedded store and the
//! fake cloud, every launcher row marked "sent" that a fulfilled request and
//! a deleted node can produce arrives with the documented type; on the
//! OpenStack simulator, the rows only OpenStack produces (leaked ports and
//! floating IPs, openstacksdk's per-call metrics) arrive too. Every name that arrives is documented. (The
//! `zk.client.connection_queue` gauge needs ZooKeeper: zk_statsd.rs.)
//!
//! Run with `cargo test -p nodepool --test statsd_upstream`.

mod support;

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nodepool_core::client::{Client, RequestOptions};
use support::{free_port, wait_for_async, Daemon, FakeConfig};

/// Generous: the daemons of parallel tests share two slow cores.
const WAIT: Duration = Duration::from_secs(40);

/// The documentation the names are checked against.
const OPERATIONS_MD: &str = include_str!("../../doc/operations.md");

/// "sent" rows a fulfilled request and a deleted node on the embedded store
/// and the fake cloud cannot produce.
const NOT_IN_THIS_RUN: &[&str] = &[
    "nodepool.provider.<provider>.leaked.instances",
    // The OpenStack driver's cleanup: the OpenStack run below.
    "nodepool.provider.<provider>.leaked.ports",
    "nodepool.provider.<provider>.leaked.floatingips",
    // The ZooKeeper store's: zk_statsd.rs.
    "nodepool.launcher.<hostname>.zk.client.connection_queue",
];

/// openstacksdk's per-call rows: the OpenStack run.
const OPENSTACK_API: &[&str] = &[
    "openstack.api.<service>.<METHOD>.<name>.<status>",
    "openstack.api.<service>.<METHOD>.<name>.attempted",
    "openstack.api.<service>.<METHOD>.<name>.failed",
    "openstack.api.<service>.<METHOD>.<name>.over_1000",
];

/// The rows the OpenStack run must produce.
const OPENSTACK_RUN: &[&str] = &[
    "nodepool.provider.<provider>.leaked.ports",
    "nodepool.provider.<provider>.leaked.floatingips",
    "openstack.api.<service>.<METHOD>.<name>.<status>",
    "openstack.api.<service>.<METHOD>.<name>.attempted",
    "openstack.api.<service>.<METHOD>.<name>.failed",
    "openstack.api.<service>.<METHOD>.<name>.over_1000",
];

/// The requestor of the test's request: dots and colons are normalized.
const REQUESTOR: &str = "zuul.example.org:1";

/// One row of the statsd table.
#[derive(Debug)]
struct Row {
    pattern: String,
    /// statsd types: `c`, `g`, `ms`.
    types: Vec<&'static str>,
    /// Sent by the launcher ("sent", not "sent by the builder").
    sent: bool,
}

/// The rows of the "statsd metrics" table of doc/operations.md.
fn documented_rows() -> Vec<Row> {
    let section = OPERATIONS_MD
        .split("### statsd metrics")
        .nth(1)
        .expect("doc/operations.md has a statsd metrics section");
    let mut rows = Vec::new();
    for line in section.lines().skip_while(|l| !l.starts_with("| metric")) {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // ["", metric, type, upstream, nodepool-rs, ""]
        if cells.len() < 6 || !cells[1].starts_with('`') {
            continue;
        }
        let pattern = cells[1].split('`').nth(1).expect("a backticked name");
        let types = match cells[2] {
            "gauge" => vec!["g"],
            "counter" => vec!["c"],
            "timer" => vec!["ms"],
            "counter and timer" => vec!["c", "ms"],
            other => panic!("unknown type {other:?} in row {line}"),
        };
        rows.push(Row {
            pattern: pattern.to_owned(),
            types,
            sent: cells[4].starts_with("sent") && !cells[4].starts_with("sent by the builder"),
        });
    }
    rows
}

/// Whether `name` fits `pattern`: a `<placeholder>` stands for one
/// segment, `<result>` for `ready` or `error.<kind>`.
fn fits(pattern: &[&str], name: &[&str]) -> bool {
    match (pattern.split_first(), name.split_first()) {
        (None, None) => true,
        (Some((&"<result>", p)), Some((&"ready", n))) => fits(p, n),
        (Some((&"<result>", p)), Some((&"error", n))) => !n.is_empty() && fits(p, &n[1..]),
        (Some((&"<result>", _)), _) => false,
        (Some((seg, p)), Some((nseg, n))) => {
            (seg == nseg || (seg.starts_with('<') && seg.ends_with('>'))) && fits(p, n)
        }
        _ => false,
    }
}

/// This host's name as the daemon reads it, for `<hostname>` (it may hold
/// dots: upstream's `zk.*` gauges carry it as it is).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string())
}

fn matches(pattern: &str, name: &str) -> bool {
    let pattern = pattern.replace("<hostname>", &hostname());
    let p: Vec<&str> = pattern.split('.').collect();
    let n: Vec<&str> = name.split('.').collect();
    fits(&p, &n)
}

/// `name:value|type[|@rate]` as (name, type).
fn parse(line: &str) -> (String, String) {
    let (name, rest) = line
        .split_once(':')
        .unwrap_or_else(|| panic!("no ':' in statsd line {line:?}"));
    let mut parts = rest.split('|');
    let value = parts.next().unwrap_or_default();
    assert!(
        value == "inf" || value.parse::<f64>().is_ok(),
        "a numeric value in {line:?}"
    );
    let kind = parts
        .next()
        .unwrap_or_else(|| panic!("no type in statsd line {line:?}"));
    (name.to_owned(), kind.to_owned())
}

#[test]
fn the_pattern_matcher_reads_placeholders_and_results() {
    assert!(matches(
        "nodepool.launch.provider.<provider>.<az>.<result>",
        "nodepool.launch.provider.p.az1.ready"
    ));
    assert!(matches(
        "nodepool.launch.<result>",
        "nodepool.launch.error.quota"
    ));
    assert!(!matches(
        "nodepool.launch.provider.<provider>.<result>",
        "nodepool.launch.provider.p.az1.ready"
    ));
    assert!(!matches("nodepool.nodes.<state>", "nodepool.nodes"));
}

/// Every line sent to a UDP socket on 127.0.0.1, collected by a thread.
struct Collector {
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Collector {
    fn start() -> Self {
        let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind");
        receiver
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let port = receiver.local_addr().expect("addr").port();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (lines, stop) = (Arc::clone(&lines), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = receiver.recv(&mut buf) {
                        assert!(n <= 512, "datagrams stay within 512 bytes");
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        lines
                            .lock()
                            .expect("lock")
                            .extend(text.lines().map(str::to_owned));
                    }
                }
            })
        };
        Self {
            port,
            lines,
            stop,
            thread: Some(thread),
        }
    }

    /// Every (name, type) received so far.
    fn seen(&self) -> BTreeSet<(String, String)> {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .map(|l| parse(l))
            .collect()
    }

    /// Every line received so far.
    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lock").clone()
    }

    /// Wait until every row of `wanted` arrived with each of its types;
    /// panics after `limit` with what is missing and `logs()`.
    fn wait_for_rows(&self, wanted: &[&Row], limit: Duration, logs: impl Fn() -> String) {
        let missing = |seen: &BTreeSet<(String, String)>| -> Vec<String> {
            let mut out = Vec::new();
            for row in wanted {
                for kind in &row.types {
                    if !seen
                        .iter()
                        .any(|(n, k)| k == kind && matches(&row.pattern, n))
                    {
                        out.push(format!("{} |{kind}", row.pattern));
                    }
                }
            }
            out
        };
        let deadline = std::time::Instant::now() + limit;
        loop {
            let got = self.seen();
            let left = missing(&got);
            if left.is_empty() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not received: {left:#?}\nreceived: {got:#?}\n{}",
                logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop collecting; every (name, type) received.
    fn stop(mut self) -> BTreeSet<(String, String)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("collector");
        }
        self.seen()
    }
}

/// Nothing undocumented: every name is a "sent" row of the table or one of
/// the per-launcher counters the text lists.
fn assert_documented(rows: &[Row], got: &BTreeSet<(String, String)>) {
    for (name, kind) in got {
        let documented = rows
            .iter()
            .any(|r| r.sent && r.types.contains(&kind.as_str()) && matches(&r.pattern, name))
            || (name.starts_with("nodepool.launcher.") && kind == "c");
        assert!(documented, "{name}|{kind} is not in doc/operations.md");
    }
}

/// The statsd variables of a daemon reporting to `port`.
fn statsd_env(port: u16) -> Vec<(String, String)> {
    vec![
        ("STATSD_HOST".to_owned(), "127.0.0.1".to_owned()),
        ("STATSD_PORT".to_owned(), port.to_string()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statsd_datagrams_of_a_run_match_the_documented_upstream_names_and_types() {
    let rows = documented_rows();
    for exempt in NOT_IN_THIS_RUN {
        assert!(
            rows.iter().any(|r| r.sent && r.pattern == *exempt),
            "{exempt} is a sent row of the table"
        );
    }
    let wanted: Vec<&Row> = rows
        .iter()
        .filter(|r| {
            r.sent
                && !NOT_IN_THIS_RUN.contains(&r.pattern.as_str())
                && !OPENSTACK_API.contains(&r.pattern.as_str())
        })
        .collect();
    assert!(
        wanted.len() >= 10,
        "the table lists the launcher's metrics: {rows:?}"
    );

    let collector = Collector::start();
    let port = free_port();
    let yaml = format!(
        "{}tenant-resource-limits:\n  - tenant-name: tenant1\n    max-cores: 8\n",
        FakeConfig::new(port).yaml()
    );
    let mut daemon = Daemon::start_with(&yaml, port, statsd_env(collector.port));
    daemon.wait_ready();

    // A request fulfilled, its node used, released and deleted.
    let client = Client::new(daemon.store(), REQUESTOR);
    let request = client
        .submit(&["small"], &RequestOptions::default())
        .await
        .expect("submit a node request");
    let nodes = client
        .wait_fulfilled(&request, WAIT)
        .await
        .unwrap_or_else(|e| panic!("not fulfilled: {e}\n{}", daemon.logs()));
    let node_id = nodes.nodes().next().expect("one node").id.clone();
    client.release(nodes).await.expect("release");
    let store = daemon.store();
    wait_for_async("the used node to be deleted", WAIT, || {
        let store = Arc::clone(&store);
        let node_id = node_id.clone();
        async move {
            store
                .get_node(&node_id)
                .await
                .ok()
                .flatten()
                .is_none()
                .then_some(())
        }
    })
    .await;

    // Every wanted row arrives with each of its types.
    collector.wait_for_rows(&wanted, WAIT, || daemon.logs());
    let got = collector.stop();

    // The names upstream's dashboards read, with this run's values.
    for (name, kind) in [
        ("nodepool.launch.ready", "c"),
        ("nodepool.launch.provider.fake-provider.ready", "ms"),
        ("nodepool.launch.requestor.zuul_example_org_1.ready", "c"),
        ("nodepool.tenant_limits.tenant1.cores", "g"),
        ("nodepool.tenant_limits.tenant1.ram", "g"),
        ("nodepool.provider.fake-provider.max_servers", "g"),
    ] {
        assert!(
            got.contains(&(name.to_owned(), kind.to_owned())),
            "{name}|{kind} not received: {got:#?}"
        );
    }
    assert!(
        got.iter().any(|(n, _)| {
            n.starts_with("nodepool.launch.provider.fake-provider.az") && n.ends_with(".ready")
        }),
        "a per-az launch key: {got:#?}"
    );
    // The embedded store has no ZooKeeper client to measure.
    assert!(
        !got.iter()
            .any(|(n, _)| n.ends_with(".zk.client.connection_queue")),
        "{got:#?}"
    );
    assert_documented(&rows, &got);
}

/// The OpenStack simulator's `clouds.yaml` entry `sim`.
fn sim_clouds_yaml(base: &str) -> String {
    format!(
        "clouds:\n  sim:\n    region_name: RegionOne\n    auth:\n      auth_url: \
         {base}/identity/v3\n      username: demo\n      password: demo-password\n      \
         project_name: demo\n      user_domain_name: Default\n      \
         project_domain_name: Default\n"
    )
}

/// A launcher with provider `sim` on the OpenStack simulator, cleaning
/// leaked ports (`port-cleanup-interval: 1`) and floating IPs.
fn sim_config(port: u16) -> String {
    format!(
        "webapp:
  port: {port}
  listen_address: 127.0.0.1
labels:
  - name: small
    min-ready: 1
providers:
  - name: sim
    driver: openstack
    cloud: sim
    rate: 0
    boot-timeout: 10
    port-cleanup-interval: 1
    clean-floating-ips: true
    cloud-images:
      - name: cirros
    pools:
      - name: main
        max-servers: 10
        labels:
          - name: small
            cloud-image: cirros
            flavor-name: m1.tiny
"
    )
}

/// The launcher's leak pass (every 60 s, the first at start) has the
/// OpenStack driver delete an unattached floating IP (first pass) and a
/// compute port left DOWN (seen DOWN in the first pass, deleted in the
/// second): upstream's `nodepool.provider.sim.leaked.floatingips` and
/// `.leaked.ports` counters arrive, with the count. The driver's REST
/// calls (a `min-ready` node, quota reads, the cleanup) arrive as
/// openstacksdk's per-call counters and timers, with `STATSD_HOST` and
/// `STATSD_PORT` as their server and the default prefix; a connection the
/// cloud drops counts as `.failed`, an answer after 1.1 s as `.over_1000`.
/// `/metrics` shows the same figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statsd_datagrams_of_an_openstack_run_carry_its_leak_counters_and_call_metrics() {
    use nodepool_openstack_sim::state::{FloatingIp, Port};
    use nodepool_openstack_sim::{FaultRule, Faults, SimConfig, SimState};

    let rows = documented_rows();
    let wanted: Vec<&Row> = rows
        .iter()
        .filter(|r| OPENSTACK_RUN.contains(&r.pattern.as_str()))
        .collect();
    for row in &wanted {
        assert!(row.sent, "{} is a sent row of the table", row.pattern);
    }
    assert_eq!(wanted.len(), OPENSTACK_RUN.len(), "rows of the table");

    let sim = SimState::new(SimConfig {
        boot_delay_secs: 0.1,
        ..SimConfig::default()
    });
    sim.update(|c| {
        let leaked = Port {
            id: "leaked-port".to_string(),
            network_id: "net-private".to_string(),
            device_id: String::new(),
            device_owner: String::new(),
            status: "DOWN".to_string(),
            ip: "10.0.0.200".to_string(),
            mac: "fa:16:3e:00:00:01".to_string(),
        };
        c.ports.insert(leaked.id.clone(), leaked);
        let fip = FloatingIp {
            id: "leaked-fip".to_string(),
            address: "203.0.113.77".to_string(),
            network_id: "net-public".to_string(),
            port_id: None,
            status: "DOWN".to_string(),
        };
        c.floating_ips.insert(fip.id.clone(), fip);
    });
    sim.set_faults(Faults {
        rules: vec![
            FaultRule {
                method: Some("GET".into()),
                path: Some("/compute/v2.1/limits".into()),
                drop_connection: true,
                times: Some(1),
                ..FaultRule::default()
            },
            FaultRule {
                method: Some("GET".into()),
                path: Some("/compute/v2.1/flavors/detail".into()),
                delay_ms: Some(1100),
                times: Some(1),
                ..FaultRule::default()
            },
        ],
        ..Faults::default()
    });
    let (base, _serving) = nodepool_openstack_sim::start(sim.clone())
        .await
        .expect("start the simulator");

    let collector = Collector::start();
    let port = free_port();
    let mut daemon = support::Daemon::prepare(&sim_config(port), port);
    let clouds = daemon.state_dir().join("clouds.yaml");
    std::fs::write(&clouds, sim_clouds_yaml(&base)).expect("clouds.yaml");
    let mut env = statsd_env(collector.port);
    env.push((
        "OS_CLIENT_CONFIG_FILE".to_string(),
        clouds.display().to_string(),
    ));
    daemon.env = env;
    daemon.spawn();
    daemon.wait_ready();

    // The port goes in the second pass, 60 s after the first.
    collector.wait_for_rows(&wanted, Duration::from_secs(120), || daemon.logs());
    let lines = collector.lines();
    for line in [
        "nodepool.provider.sim.leaked.floatingips:1|c",
        "nodepool.provider.sim.leaked.ports:1|c",
    ] {
        assert!(
            lines.iter().any(|l| l == line),
            "{line} not received: {lines:#?}"
        );
    }
    let (port_left, fip_left) = sim.read(|c| {
        (
            c.ports.contains_key("leaked-port"),
            c.floating_ips.contains_key("leaked-fip"),
        )
    });
    assert!(!port_left && !fip_left, "both deleted in the cloud");

    // openstacksdk's names for the calls this run made.
    let got = collector.seen();
    for (name, kind) in [
        ("openstack.api.compute.POST.compute_servers.202", "c"),
        ("openstack.api.compute.POST.compute_servers.202", "ms"),
        ("openstack.api.compute.POST.compute_servers.attempted", "c"),
        ("openstack.api.compute.GET.limits.failed", "c"),
        ("openstack.api.compute.GET.flavors_detail.over_1000", "c"),
        ("openstack.api.network.DELETE.network_port.204", "c"),
    ] {
        assert!(
            got.contains(&(name.to_owned(), kind.to_owned())),
            "{name}|{kind} not received: {got:#?}"
        );
    }
    assert!(
        !got.iter()
            .any(|(n, _)| n.contains("identity") || n.contains("tokens")),
        "Keystone's token requests are not reported: {got:#?}"
    );
    let (status, metrics) = daemon.get("/metrics").expect("/metrics answers");
    assert_eq!(status, 200);
    for line in [
        "nodepool_provider_leaked_floatingips_total{provider=\"sim\"} 1\n",
        "nodepool_provider_leaked_ports_total{provider=\"sim\"} 1\n",
        "nodepool_driver_metric_total{metric=\"openstack.api.compute.GET.limits.failed\"} 1\n",
        "nodepool_driver_metric_total{metric=\"openstack.api.compute.GET.flavors_detail.over_1000\"} 1\n",
    ] {
        assert!(metrics.contains(line), "{line} in /metrics:\n{metrics}");
    }
    let got = collector.stop();
    assert_documented(&rows, &got);
}
