//! The Python `kubernetes` client from PyPI (the one upstream nodepool
//! uses) against kube-sim: create, read, list with selectors, watch and
//! delete namespaces, pods, serviceaccounts, secrets, roles and
//! rolebindings, with the token secret filled in and Status errors.
#![allow(clippy::unwrap_used)] // tests fail by panicking

mod support;

use std::process::Command;

use serde_json::Value;
use support::{cluster, kube_python};

#[test]
fn python_client_drives_every_kind_the_drivers_use() {
    let Some(python) = kube_python() else { return };
    let c = cluster();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_check.py");
    let out = Command::new(&python)
        .arg(script)
        .arg(c.sim.kubeconfig())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client_check.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    assert_eq!(summary["host"], c.sim.url());
    for check in [
        "namespace",
        "token_secret",
        "token_usable",
        "rbac",
        "errors",
    ] {
        assert_eq!(summary[check], true, "{check}: {summary}");
    }
    assert_eq!(summary["pod_events"][0], "ADDED", "{summary}");
    assert_eq!(
        summary["pod_events"].as_array().unwrap().last().unwrap(),
        "MODIFIED"
    );
    let pod_delete = summary["pod_delete_events"].as_array().unwrap();
    assert_eq!(pod_delete.first().unwrap(), "MODIFIED", "{summary}");
    assert_eq!(pod_delete.last().unwrap(), "DELETED", "{summary}");
    let ns = summary["namespace_events"].as_array().unwrap();
    assert_eq!(ns.last().unwrap(), "DELETED", "{summary}");
}
