//! The `kube-sim` binary: `READY <url>`, its kubeconfig, and a state file
//! that keeps the cluster across a kill -9 and a restart on the same port.
#![allow(clippy::unwrap_used)] // tests fail by panicking

mod support;

use std::path::Path;

use nodepool_kube_sim::{ProcessOptions, SimProcess};
use serde_json::json;
use support::{pod, Api};

#[tokio::test]
async fn state_file_keeps_the_cluster_across_kill_9_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_kube-sim"));
    let mut opts = ProcessOptions::in_dir(dir.path());
    opts.pod_ready_delay_ms = 60_000; // the pod is still Pending at the kill
    let mut first = SimProcess::spawn(bin, &opts).unwrap();
    assert!(
        first.url().starts_with("https://127.0.0.1:"),
        "{}",
        first.url()
    );
    let kubeconfig = std::fs::read_to_string(first.kubeconfig()).unwrap();
    assert!(kubeconfig.contains(&format!("server: {}", first.url())));
    assert!(kubeconfig.contains("certificate-authority-data: "));
    let token = Api::token_of(first.kubeconfig());
    let api = Api::new(first.url(), &token);
    let labels = json!({"nodepool_node_id": "0000000007"});
    let (code, _) = api
        .post(
            "/api/v1/namespaces",
            json!({"metadata": {"name": "kept", "labels": labels}}),
        )
        .await;
    assert_eq!(code, 201);
    let (code, _) = api.post("/api/v1/namespaces/kept/pods", pod("p")).await;
    assert_eq!(code, 201);
    let (_, before) = api.get("/api/v1/namespaces/kept/pods").await;
    let rv_before: u64 = before["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    let port = first.port();
    first.kill();
    opts.port = port;
    opts.pod_ready_delay_ms = 100;
    let second = SimProcess::spawn(bin, &opts).unwrap();
    assert_eq!(second.url(), first.url(), "same port, same URL");
    assert_eq!(
        Api::token_of(second.kubeconfig()),
        token,
        "the token is kept"
    );
    // A new client: the old one's pooled connections died with the process.
    let api = Api::new(second.url(), &token);

    let (code, ns) = api.get("/api/v1/namespaces/kept").await;
    assert_eq!(code, 200);
    assert_eq!(ns["metadata"]["labels"]["nodepool_node_id"], "0000000007");
    // The pod Pending at the kill runs after the restart.
    api.wait_for("/api/v1/namespaces/kept/pods/p", |_, p| {
        p["status"]["phase"] == "Running"
    })
    .await;
    let (_, after) = api.get("/api/v1/namespaces/kept/pods").await;
    let rv_after: u64 = after["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv_after > rv_before, "{rv_after} > {rv_before}");
    // Events before the kill died with the process: watches from before
    // it must re-list (410); from the saved resourceVersion on, they replay.
    let older = rv_before - 1;
    let (code, body) = api
        .get(&format!(
            "/api/v1/namespaces/kept/pods?watch=1&resourceVersion={older}"
        ))
        .await;
    assert_eq!((code, body["reason"].as_str()), (410, Some("Expired")));
}
