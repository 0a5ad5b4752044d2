//! Debian's kubectl (package `kubernetes-client`, v1.20; `kubectl` on PATH
//! when `NODEPOOL_TEST_KUBECTL` is unset — v1.32 passes too) against
//! kube-sim: create, get, list with selectors, watch and delete every kind
//! the drivers use. kubectl validates manifests with the server's OpenAPI
//! document, which kube-sim does not serve, so creates pass
//! `--validate=false`.
#![allow(clippy::unwrap_used)] // tests fail by panicking

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{cluster, kubectl, Kubectl};

const NAMESPACE: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: pool-0000000001
  labels:
    nodepool_provider_name: kubespray
    nodepool_node_id: "0000000001"
    tier: gold
"#;

const OBJECTS: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata:
  name: zuul-worker
---
apiVersion: v1
kind: Secret
type: kubernetes.io/service-account-token
metadata:
  name: zuul-worker
  annotations:
    kubernetes.io/service-account.name: zuul-worker
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: zuul-restricted
rules:
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list"]
- apiGroups: [""]
  resources: ["pods/exec"]
  verbs: ["create", "delete", "get", "list", "patch", "update", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: zuul-role
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: zuul-restricted
subjects:
- kind: ServiceAccount
  name: zuul-worker
  namespace: pool-0000000001
---
apiVersion: v1
kind: Pod
metadata:
  name: pod-fedora
  labels:
    nodepool_node_id: "0000000001"
    tier: gold
spec:
  containers:
  - name: pod-fedora
    image: docker.io/fedora:28
    imagePullPolicy: IfNotPresent
    command: ["/bin/sh", "-c"]
    args: ["while true; do sleep 30; done;"]
"#;

const NS: &str = "pool-0000000001";

fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kubectl_creates_gets_lists_and_deletes_every_kind() {
    let Some(bin) = kubectl() else { return };
    let c = cluster();
    let k = Kubectl::new(bin, &c);

    let out = k.ok(&["create", "--validate=false", "-f", "-"], Some(NAMESPACE));
    assert!(out.contains("namespace/pool-0000000001 created"), "{out}");
    let out = k.ok(
        &["-n", NS, "create", "--validate=false", "-f", "-"],
        Some(OBJECTS),
    );
    for created in [
        "serviceaccount/zuul-worker created",
        "secret/zuul-worker created",
        "role.rbac.authorization.k8s.io/zuul-restricted created",
        "rolebinding.rbac.authorization.k8s.io/zuul-role created",
        "pod/pod-fedora created",
    ] {
        assert!(out.contains(created), "{created} in {out}");
    }

    // get -o json, every kind, with the fields the API server fills in.
    let ns = k.json(&["get", "namespace", NS]);
    assert_eq!(ns["status"]["phase"], "Active");
    assert_eq!(ns["metadata"]["labels"]["kubernetes.io/metadata.name"], NS);
    assert!(ns["metadata"]["uid"]
        .as_str()
        .is_some_and(|u| u.len() == 36));
    let sa = k.json(&["-n", NS, "get", "serviceaccount", "zuul-worker"]);
    assert_eq!(sa["metadata"]["namespace"], NS);
    let secret = k.json(&["-n", NS, "get", "secret", "zuul-worker"]);
    assert_eq!(secret["type"], "kubernetes.io/service-account-token");
    for key in ["token", "ca.crt", "namespace"] {
        assert!(
            secret["data"][key].as_str().is_some_and(|v| !v.is_empty()),
            "secret data {key}: {secret}"
        );
    }
    let token = k.ok(
        &[
            "-n",
            NS,
            "get",
            "secret",
            "zuul-worker",
            "-o",
            "jsonpath={.data.namespace}",
        ],
        None,
    );
    assert_eq!(token, "cG9vbC0wMDAwMDAwMDAx"); // base64 of NS
    let role = k.json(&["-n", NS, "get", "role", "zuul-restricted"]);
    assert_eq!(role["rules"][1]["resources"][0], "pods/exec");
    let binding = k.json(&["-n", NS, "get", "rolebinding", "zuul-role"]);
    assert_eq!(binding["roleRef"]["name"], "zuul-restricted");
    assert_eq!(binding["subjects"][0]["namespace"], NS);

    // The pod goes Pending -> Running with the kubelet's status.
    wait_for("the pod to run", || {
        k.json(&["-n", NS, "get", "pod", "pod-fedora"])["status"]["phase"] == "Running"
    });
    let pod = k.json(&["-n", NS, "get", "pod", "pod-fedora"]);
    assert_eq!(pod["spec"]["nodeName"], "kube-sim-node");
    assert!(pod["status"]["podIP"]
        .as_str()
        .is_some_and(|ip| ip.starts_with("10.244.")));
    let conditions: Vec<&str> = pod["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "True")
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    for want in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert!(conditions.contains(&want), "{want} in {conditions:?}");
    }
    assert_eq!(pod["status"]["containerStatuses"][0]["ready"], true);
    let table = k.ok(&["-n", NS, "get", "pods"], None);
    assert!(
        table.contains("pod-fedora") && table.contains("Running") && table.contains("1/1"),
        "{table}"
    );

    // Lists with label selectors: equality, inequality, set-based.
    let names =
        |args: &[&str]| -> Vec<String> { k.ok(args, None).lines().map(str::to_string).collect() };
    assert_eq!(
        names(&[
            "get",
            "ns",
            "-l",
            "tier=gold,nodepool_provider_name!=other",
            "-o",
            "name"
        ]),
        vec!["namespace/pool-0000000001"]
    );
    assert_eq!(
        names(&[
            "get",
            "ns",
            "-l",
            "tier in (gold,silver),nodepool_node_id",
            "-o",
            "name"
        ]),
        vec!["namespace/pool-0000000001"]
    );
    assert!(
        names(&["get", "ns", "-l", "tier notin (gold)", "-o", "name"])
            .iter()
            .all(|n| n != "namespace/pool-0000000001")
    );
    assert_eq!(
        names(&["get", "pods", "-A", "-l", "tier=gold", "-o", "name"]),
        vec!["pod/pod-fedora"]
    );
    assert!(names(&["-n", NS, "get", "pods", "-l", "tier!=gold", "-o", "name"]).is_empty());
    let by_field = k.json(&[
        "get",
        "ns",
        "--field-selector",
        "metadata.name=pool-0000000001",
    ]);
    assert_eq!(by_field["items"].as_array().unwrap().len(), 1);
    let sas = k.json(&["-n", NS, "get", "serviceaccounts"]);
    let mut sa_names: Vec<&str> = sas["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap())
        .collect();
    sa_names.sort_unstable();
    assert_eq!(sa_names, ["default", "zuul-worker"]);

    // Delete each kind; then it is NotFound.
    for (kind, name) in [
        ("rolebinding", "zuul-role"),
        ("role", "zuul-restricted"),
        ("secret", "zuul-worker"),
        ("serviceaccount", "zuul-worker"),
        ("pod", "pod-fedora"),
    ] {
        let out = k.ok(&["-n", NS, "delete", kind, name], None);
        assert!(out.contains("deleted"), "{out}");
        let err = k.fails(&["-n", NS, "get", kind, name], None);
        assert!(err.contains("NotFound") && err.contains(name), "{err}");
    }
    let out = k.ok(&["delete", "namespace", NS], None);
    assert!(
        out.contains("namespace \"pool-0000000001\" deleted"),
        "{out}"
    );
    let err = k.fails(&["get", "namespace", NS], None);
    assert!(err.contains("NotFound"), "{err}");
}

#[test]
fn kubectl_watch_sees_added_modified_and_deleted() {
    let Some(bin) = kubectl() else { return };
    let c = cluster();
    let k = Kubectl::new(bin, &c);
    k.ok(&["create", "namespace", "watched"], None);

    let mut watch = k
        .command(&[
            "-n",
            "watched",
            "get",
            "pods",
            "-w",
            "-o",
            "json",
            "--output-watch-events",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<Value>();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        // kubectl pretty-prints each event; collect lines until one parses.
        let mut buf = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            buf.push_str(&line);
            buf.push('\n');
            if let Ok(v) = serde_json::from_str::<Value>(&buf) {
                buf.clear();
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    // Give the watch time to start before creating.
    std::thread::sleep(Duration::from_millis(1500));
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: w1\nspec:\n  containers:\n  - name: c\n    image: busybox:1\n";
    k.ok(
        &["-n", "watched", "create", "--validate=false", "-f", "-"],
        Some(pod),
    );
    let mut seen: Vec<(String, String, bool)> = Vec::new();
    let mut deleted = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !deleted {
        let Ok(event) = rx.recv_timeout(Duration::from_millis(500)) else {
            continue;
        };
        let kind = event["type"].as_str().unwrap_or("").to_string();
        let phase = event["object"]["status"]["phase"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let terminating = event["object"]["metadata"]["deletionTimestamp"].is_string();
        if kind == "MODIFIED" && phase == "Running" && !terminating {
            k.ok(
                &["-n", "watched", "delete", "pod", "w1", "--wait=false"],
                None,
            );
        }
        deleted = kind == "DELETED";
        seen.push((kind, phase, terminating));
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let types: Vec<&str> = seen.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(types.first(), Some(&"ADDED"), "{seen:?}");
    assert!(
        seen.iter()
            .any(|(t, p, _)| t == "MODIFIED" && p == "Running"),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|(t, _, term)| t == "MODIFIED" && *term),
        "{seen:?}"
    );
    assert_eq!(types.last(), Some(&"DELETED"), "{seen:?}");
}

#[test]
fn kubectl_reports_kubernetes_errors() {
    let Some(bin) = kubectl() else { return };
    let c = cluster();
    let k = Kubectl::new(bin, &c);
    k.ok(&["create", "namespace", "errs"], None);

    let err = k.fails(&["create", "namespace", "errs"], None);
    assert!(err.contains("AlreadyExists"), "{err}");
    let err = k.fails(&["create", "namespace", "Bad_Name"], None);
    assert!(
        err.contains("is invalid") && err.contains("RFC 1123"),
        "{err}"
    );
    let err = k.fails(&["-n", "errs", "get", "pod", "missing"], None);
    assert!(
        err.contains("NotFound") && err.contains("pods \"missing\" not found"),
        "{err}"
    );
    let err = k.fails(&["-n", "nowhere", "create", "serviceaccount", "x"], None);
    assert!(err.contains("namespaces \"nowhere\" not found"), "{err}");

    // Another token: 401.
    let bad = c.dir.path().join("bad-kubeconfig");
    let text = std::fs::read_to_string(c.sim.kubeconfig()).unwrap();
    let text = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("token:") {
                "    token: wrong".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&bad, text).unwrap();
    let out = std::process::Command::new(&k.bin)
        .arg("--kubeconfig")
        .arg(&bad)
        .args(["get", "namespaces"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Unauthorized"), "{err}");
}

#[test]
fn kubectl_namespace_delete_takes_its_contents() {
    let Some(bin) = kubectl() else { return };
    let c = cluster();
    let k = Kubectl::new(bin, &c);
    k.ok(&["create", "namespace", "doomed"], None);
    k.ok(&["-n", "doomed", "create", "serviceaccount", "sa1"], None);
    k.ok(
        &[
            "-n",
            "doomed",
            "create",
            "secret",
            "generic",
            "s1",
            "--from-literal=k=v",
        ],
        None,
    );
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: busybox:1\n";
    k.ok(
        &["-n", "doomed", "create", "--validate=false", "-f", "-"],
        Some(pod),
    );
    let secret = k.json(&["-n", "doomed", "get", "secret", "s1"]);
    assert_eq!(secret["data"]["k"], "dg==");
    let out = k.ok(&["delete", "namespace", "doomed"], None);
    assert!(out.contains("deleted"), "{out}");
    let err = k.fails(&["get", "namespace", "doomed"], None);
    assert!(err.contains("NotFound"), "{err}");
    let pods = k.json(&["get", "pods", "-A"]);
    assert!(pods["items"].as_array().unwrap().is_empty(), "{pods}");
    let sas = k.json(&["get", "serviceaccounts", "-A"]);
    assert!(sas["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["metadata"]["namespace"] != "doomed"));
}
