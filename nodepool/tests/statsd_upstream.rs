//! The statsd datagrams of a scripted run of `nodepool launcher` (embedded
//! store, fake cloud) checked against the table of doc/operations.md: every
//! launcher row marked "sent" that a fulfilled request and a deleted node can
//! produce arrives with the documented type, and every name that arrives is
//! documented.
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

/// "sent" rows a fulfilled request and a deleted node cannot produce.
const NOT_IN_THIS_RUN: &[&str] = &["nodepool.provider.<provider>.leaked.instances"];

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

fn matches(pattern: &str, name: &str) -> bool {
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
        .filter(|r| r.sent && !NOT_IN_THIS_RUN.contains(&r.pattern.as_str()))
        .collect();
    assert!(
        wanted.len() >= 10,
        "the table lists the launcher's metrics: {rows:?}"
    );

    // Collect every line sent to a UDP socket on 127.0.0.1.
    let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind");
    receiver
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let statsd_port = receiver.local_addr().expect("addr").port();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let collector = {
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

    let port = free_port();
    let yaml = format!(
        "{}tenant-resource-limits:\n  - tenant-name: tenant1\n    max-cores: 8\n",
        FakeConfig::new(port).yaml()
    );
    let env = vec![
        ("STATSD_HOST".to_owned(), "127.0.0.1".to_owned()),
        ("STATSD_PORT".to_owned(), statsd_port.to_string()),
    ];
    let mut daemon = Daemon::start_with(&yaml, port, env);
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
    let seen = |lines: &[String]| -> BTreeSet<(String, String)> {
        lines.iter().map(|l| parse(l)).collect()
    };
    let missing = |seen: &BTreeSet<(String, String)>| -> Vec<String> {
        let mut out = Vec::new();
        for row in &wanted {
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
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let got = seen(&lines.lock().expect("lock"));
        let left = missing(&got);
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not received: {left:#?}\nreceived: {got:#?}\n{}",
            daemon.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    collector.join().expect("collector");
    let got = seen(&lines.lock().expect("lock"));

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

    // Nothing undocumented: every name is a row of the table or one of the
    // per-launcher counters the text lists.
    for (name, kind) in &got {
        let documented = rows
            .iter()
            .any(|r| r.sent && r.types.contains(&kind.as_str()) && matches(&r.pattern, name))
            || (name.starts_with("nodepool.launcher.") && kind == "c");
        assert!(documented, "{name}|{kind} is not in doc/operations.md");
    }
}
