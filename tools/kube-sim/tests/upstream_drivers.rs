//! Upstream nodepool 11's own kubernetes and openshiftpods provider code
//! against kube-sim: the namespace and pod nodes it makes, the connection
//! data it returns, and its cleanup.
//!
//! Upstream 11.0.0 with the kubernetes client its venv resolves to (37.x,
//! pydantic models) fails in createNamespace: the RoleBinding body carries
//! `userNames`, which 37's validation rejects. So this runs upstream with
//! kubernetes 31.0.0 put first on PYTHONPATH
//! (`$NODEPOOL_TEST_UPSTREAM_KUBE_PYTHONPATH`, from `pip install --no-deps
//! --target DIR kubernetes==31.0.0`).
#![allow(clippy::unwrap_used)] // tests fail by panicking

mod support;

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};
use support::{cluster, Api};

fn required() -> bool {
    std::env::var_os("NODEPOOL_TEST_REQUIRE_KUBE_CLIENTS").is_some_and(|v| !v.is_empty())
}

fn upstream() -> Option<(PathBuf, PathBuf)> {
    let python = std::env::var_os("NODEPOOL_TEST_UPSTREAM_PYTHON").filter(|p| !p.is_empty());
    let path = std::env::var_os("NODEPOOL_TEST_UPSTREAM_KUBE_PYTHONPATH").filter(|p| !p.is_empty());
    match (python, path) {
        (Some(python), Some(path)) => Some((python.into(), path.into())),
        _ => {
            let why = "NODEPOOL_TEST_UPSTREAM_PYTHON and NODEPOOL_TEST_UPSTREAM_KUBE_PYTHONPATH \
                       are not both set (scripts/test.sh sets them)";
            assert!(!required(), "upstream's drivers are required but {why}");
            eprintln!("SKIP: upstream drivers: {why}");
            None
        }
    }
}

#[tokio::test]
async fn upstream_kubernetes_and_openshiftpods_providers_work_against_the_sim() {
    let Some((python, kube_path)) = upstream() else {
        return;
    };
    let c = cluster();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/upstream_drivers.py"
    );
    let out = Command::new(&python)
        .arg(script)
        .arg(c.sim.kubeconfig())
        .env("PYTHONPATH", &kube_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "upstream_drivers.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    let url = c.sim.url();
    let token = Api::token_of(c.sim.kubeconfig());

    // The namespace node's connection data, as upstream's createNamespace
    // returns it (Zuul's executor reads it).
    let ns = &got["namespace"];
    assert_eq!(ns["name"], "main-0000000001");
    assert_eq!(ns["namespace"], "main-0000000001");
    assert_eq!(ns["host"], url);
    assert_eq!(ns["skiptls"], false);
    assert_eq!(ns["user"], "zuul-worker");
    assert!(ns["token"]
        .as_str()
        .unwrap()
        .starts_with("kube-sim.main-0000000001.zuul-worker."));
    // The token secret's ca.crt is the CA of the kubeconfig upstream read.
    assert_eq!(ns["ca_crt"], got["openshift_ca_crt"]);
    assert!(ns["ca_crt"]
        .as_str()
        .unwrap()
        .starts_with("LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t"));
    let pod = &got["pod"];
    assert_eq!(pod["namespace"], "main-0000000002");
    assert_eq!(pod["pod"], "pod-fedora");
    assert_eq!(got["pod_host_id"], "kube-sim-node");
    let servers = got["servers"].as_array().unwrap();
    assert_eq!(
        servers.len(),
        2 + 4,
        "two nodes and four standard namespaces: {servers:?}"
    );

    // openshiftpods: a pod in an existing project, with the kubeconfig's
    // token; listed with its node id; gone after cleanup.
    assert_eq!(got["openshift_host_id"], "kube-sim-node");
    assert_eq!(got["openshift_token"], token.as_str());
    assert_eq!(
        got["openshift_servers"],
        json!([[
            "project1-pod-fedora-0000000003",
            {"nodepool_provider_name": "openshift-pods", "nodepool_node_id": "0000000003"}
        ]])
    );
    assert_eq!(got["openshift_after_cleanup"], json!([]));

    // Upstream's cleanup left nothing of the nodes in the simulator.
    let api = Api::new(url, &token);
    let (_, objects) = api.get("/_sim/objects").await;
    let left: Vec<&Value> = objects["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| {
            let ns = o["namespace"].as_str().unwrap_or("");
            let name = o["name"].as_str().unwrap_or("");
            ns.starts_with("main-") || name.starts_with("main-") || o["kind"] == "Pod"
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
