//! The real requestors against our launcher daemon on ZooKeeper (TLS,
//! chroot): upstream nodepool 11's own client code, as its
//! `tools/load-test.py` uses it, and Zuul 14's scheduler code
//! (`zuul.nodepool.Nodepool`). Each submits requests, gets them fulfilled,
//! locks the nodes, uses them and returns them as `used`; our launcher must
//! then delete them.
//!
//! Needs `NODEPOOL_TEST_ZK_*` and `NODEPOOL_TEST_UPSTREAM_PYTHON` or
//! `NODEPOOL_TEST_ZUUL_PYTHON` (see `zk_support`).

mod zk_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use nodepool_core::store::NodeStore;
use serde_json::Value;
use zk_support::{env_or_skip, wait_registered, Need, World};

/// The string values of a JSON array.
fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts the script reported no errors and every request fulfilled with
/// `nodes_each` nodes, no node twice; returns every node id.
fn check_fulfilled(report: &Value, requests: usize, nodes_each: usize) -> BTreeSet<String> {
    assert_eq!(
        report["errors"].as_array().map(Vec::len),
        Some(0),
        "the requestor reported errors: {report}"
    );
    let reqs = report["requests"].as_array().expect("a list of requests");
    assert_eq!(reqs.len(), requests, "{report}");
    let mut all = BTreeSet::new();
    for r in reqs {
        assert_eq!(r["state"], "fulfilled", "{r}");
        let nodes = strings(&r["nodes"]);
        assert_eq!(nodes.len(), nodes_each, "{r}");
        for n in nodes {
            assert!(all.insert(n.clone()), "node {n} given to two requests");
        }
    }
    all
}

/// Waits until none of `nodes` is left in ZooKeeper (read one by one, so
/// a record our model cannot decode counts as left, with its error).
async fn wait_deleted(store: &dyn NodeStore, nodes: &BTreeSet<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut left = Vec::new();
        for id in nodes {
            match store.get_node(id).await {
                Ok(None) => {}
                Ok(Some(node)) => left.push(format!("{id}: {:?}", node.state)),
                Err(e) => left.push(format!("{id}: {e}")),
            }
        }
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "our launcher did not delete the returned nodes within 60 s: {left:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_client_requests_are_fulfilled_and_returned_nodes_deleted() {
    let Some(env) = env_or_skip("upstream_client_requests", &[Need::UpstreamPython]) else {
        return;
    };
    let python = env.upstream_python.clone().expect("checked");
    let world = World::new("upstream-client", env);
    let store = world.store().await;
    let mut launcher = world.start_launcher("launcher");
    wait_registered(&world, &store, 1).await;

    let report = world
        .run_script(
            &python,
            "upstream_requestor.py",
            &[
                "-c".into(),
                world.config().display().to_string(),
                "--label".into(),
                "small".into(),
                "--requests".into(),
                "5".into(),
                "--return-nodes".into(),
                "--timeout".into(),
                "60".into(),
            ],
        )
        .await;
    let nodes = check_fulfilled(&report, 5, 1);
    for (id, node) in report["nodes"].as_object().expect("nodes by id") {
        assert_eq!(node["state"], "ready", "node {id} as the requestor saw it");
        assert_eq!(node["provider"], "fake-provider");
        assert_eq!(node["type"], serde_json::json!(["small"]));
        assert!(node["external_id"].is_string(), "{node}");
    }
    wait_deleted(&store, &nodes).await;
    launcher.assert_running();
    launcher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zuul_two_node_requests_are_fulfilled_locked_used_and_deleted() {
    let Some(env) = env_or_skip("zuul_two_node_requests", &[Need::ZuulPython]) else {
        return;
    };
    let python = env.zuul_python.clone().expect("checked");
    let world = World::new("zuul", env);
    let store = world.store().await;
    let mut launcher = world.start_launcher("launcher");
    wait_registered(&world, &store, 1).await;

    let report = world
        .run_script(
            &python,
            "zuul_requestor.py",
            &[
                world.hosts_with_chroot(),
                world.env.tls.ca.display().to_string(),
                world.env.tls.cert.display().to_string(),
                world.env.tls.key.display().to_string(),
                "--label".into(),
                "small".into(),
                "--requests".into(),
                "4".into(),
                "--nodes-per-request".into(),
                "2".into(),
                "--timeout".into(),
                "60".into(),
            ],
        )
        .await;
    let nodes = check_fulfilled(&report, 4, 2);
    for r in report["requests"].as_array().expect("requests") {
        assert_eq!(
            strings(&r["in_use"]),
            vec!["in-use".to_string(), "in-use".to_string()],
            "Zuul set the nodes in-use: {r}"
        );
    }
    // Zuul deleted its requests once it had the nodes.
    let requests = store.list_requests().await.expect("listing requests");
    assert!(requests.is_empty(), "requests left: {requests:?}");
    wait_deleted(&store, &nodes).await;
    launcher.assert_running();
    launcher.stop().await;
}
