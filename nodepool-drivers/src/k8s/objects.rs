//! The Kubernetes objects a node is made of, built exactly as upstream's
//! drivers build them (same names, keys and order), and the API paths
//! they live at.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use tracing::warn;

use super::config::{K8sLabel, WORKER_USER};
use crate::openstack::template::format_request;

/// The verbs the node's role grants.
const ALL_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// The Kubernetes label holding the label name of a node's objects.
pub const LABEL_KEY: &str = "nodepool_node_label";

/// `/api/v1/namespaces`.
pub fn namespaces_path() -> String {
    "/api/v1/namespaces".to_string()
}

/// `/api/v1/namespaces/NAME`.
pub fn namespace_path(name: &str) -> String {
    format!("/api/v1/namespaces/{name}")
}

/// The collection of `kind` (`pods`, `secrets`, ...) in `namespace`.
pub fn core_path(namespace: &str, kind: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/{kind}")
}

/// The collection of RBAC `kind` (`roles`, `rolebindings`) in `namespace`.
pub fn rbac_path(namespace: &str, kind: &str) -> String {
    format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/{kind}")
}

/// The labels of a node's namespace and pod: the label's `labels`, its
/// `dynamic-labels` formatted with the request (a template that does not
/// format is left out with a warning, as upstream), the launch metadata
/// that makes a valid Kubernetes label and is not set yet (the engine's
/// `groups` holds commas and is left out), then the nodepool keys.
pub fn node_labels(
    label: &K8sLabel,
    node_id: &str,
    provider: &str,
    pool: &str,
    request: Option<&Value>,
    metadata: &BTreeMap<String, String>,
) -> Map<String, Value> {
    let mut labels: Map<String, Value> = label.labels.clone().into_iter().collect();
    let empty = json!({});
    for (key, template) in &label.dynamic_labels {
        match format_request(template, request.unwrap_or(&empty)) {
            Ok(value) => {
                labels.insert(key.clone(), Value::String(value));
            }
            Err(e) => warn!(label = %key, error = %e, "cannot format a dynamic label"),
        }
    }
    for (key, value) in metadata {
        if !labels.contains_key(key) && valid_label(key, value) {
            labels.insert(key.clone(), Value::String(value.clone()));
        }
    }
    for (k, v) in [
        ("nodepool_node_id", node_id),
        ("nodepool_provider_name", provider),
        ("nodepool_pool_name", pool),
        (LABEL_KEY, label.name.as_str()),
    ] {
        labels.insert(k.to_string(), Value::String(v.to_string()));
    }
    labels
}

/// The namespace of a node.
pub fn namespace(name: &str, labels: &Map<String, Value>) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels},
    })
}

/// The `zuul-worker` service account.
pub fn service_account() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": WORKER_USER},
    })
}

/// The token Secret of the service account.
pub fn token_secret() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/service-account-token",
        "metadata": {
            "name": WORKER_USER,
            "annotations": {"kubernetes.io/service-account.name": WORKER_USER},
        },
    })
}

/// The name of the role of a node: `zuul-restricted` for pod nodes, `zuul`
/// for namespace nodes.
pub fn role_name(restricted: bool) -> &'static str {
    if restricted {
        "zuul-restricted"
    } else {
        "zuul"
    }
}

/// The role: for a namespace node most resources of the namespace, for a
/// pod node reading pods and exec, logs and port-forward.
pub fn role(restricted: bool) -> Value {
    let rules = if restricted {
        json!([
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ALL_VERBS},
            {"apiGroups": [""], "resources": ["pods/logs"], "verbs": ALL_VERBS},
            {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ALL_VERBS},
        ])
    } else {
        json!([{
            "apiGroups": [""],
            "resources": ["pods", "pods/exec", "pods/log", "pods/portforward", "services",
                          "endpoints", "crontabs", "jobs", "deployments", "replicasets",
                          "configmaps", "secrets"],
            "verbs": ALL_VERBS,
        }])
    };
    json!({
        "kind": "Role",
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "metadata": {"name": role_name(restricted)},
        "rules": rules,
    })
}

/// The binding of the role to the service account.
pub fn role_binding(namespace: &str, restricted: bool) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "zuul-role"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role_name(restricted),
        },
        "subjects": [{"kind": "ServiceAccount", "name": WORKER_USER, "namespace": namespace}],
        "userNames": [format!("system:serviceaccount:{namespace}:{WORKER_USER}")],
    })
}

/// The pod of a pod node, named `pod_name`: the label's `spec` as written,
/// else one container running `image` with the label's resources.
/// `pull_secrets` adds `imagePullSecrets` (openshiftpods always does).
pub fn pod(
    pod_name: &str,
    label: &K8sLabel,
    labels: &Map<String, Value>,
    pull_secrets: bool,
) -> Value {
    let annotations: Map<String, Value> = label.annotations.clone().into_iter().collect();
    let spec = match &label.spec {
        Some(spec) => spec.clone(),
        None => container_spec(label, pull_secrets),
    };
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod_name, "labels": labels, "annotations": annotations},
        "spec": spec,
        "restartPolicy": "Never",
    })
}

fn container_spec(label: &K8sLabel, pull_secrets: bool) -> Value {
    let env: Vec<Value> = label
        .env
        .iter()
        .map(|e| json!({"name": e.name, "value": e.value}))
        .collect();
    let mut c = Map::new();
    c.insert("name".into(), json!(label.name));
    c.insert("image".into(), json!(label.image));
    c.insert("imagePullPolicy".into(), json!(label.image_pull));
    c.insert("command".into(), json!(["/bin/sh", "-c"]));
    c.insert("args".into(), json!(["while true; do sleep 30; done;"]));
    c.insert("env".into(), Value::Array(env));
    let mut requests = Map::new();
    let mut limits = Map::new();
    // Upstream skips a value that is unset or 0.
    let put =
        |m: &mut Map<String, Value>, key: &str, value: Option<i64>, f: &dyn Fn(i64) -> Value| {
            if let Some(v) = value.filter(|v| *v != 0) {
                m.insert(key.to_string(), f(v));
            }
        };
    let cpu = |v: i64| json!(v);
    let mib = |v: i64| json!(format!("{v}Mi"));
    let mb = |v: i64| json!(format!("{v}M"));
    put(&mut requests, "cpu", label.cpu, &cpu);
    put(&mut requests, "memory", label.memory, &mib);
    put(&mut requests, "ephemeral-storage", label.storage, &mb);
    put(&mut limits, "cpu", label.cpu_limit, &cpu);
    put(&mut limits, "memory", label.memory_limit, &mib);
    put(&mut limits, "ephemeral-storage", label.storage_limit, &mb);
    if let (Some(resource), Some(gpu)) = (&label.gpu_resource, label.gpu.filter(|g| *g != 0.0)) {
        requests.insert(resource.clone(), json!(format!("{gpu:.2}")));
        limits.insert(resource.clone(), json!(format!("{gpu:.2}")));
    }
    let mut resources = Map::new();
    if !requests.is_empty() {
        resources.insert("requests".into(), Value::Object(requests));
    }
    if !limits.is_empty() {
        resources.insert("limits".into(), Value::Object(limits));
    }
    if !resources.is_empty() {
        c.insert("resources".into(), Value::Object(resources));
    }
    if let Some(mounts) = label.volume_mounts.as_ref().filter(|v| non_empty(v)) {
        c.insert("volumeMounts".into(), mounts.clone());
    }
    if let Some(privileged) = label.privileged {
        c.insert("securityContext".into(), json!({"privileged": privileged}));
    }
    let mut spec = Map::new();
    spec.insert("containers".into(), json!([c]));
    if pull_secrets {
        spec.insert(
            "imagePullSecrets".into(),
            Value::Array(label.image_pull_secrets.clone()),
        );
    }
    if let Some(sel) = label.node_selector.as_ref().filter(|v| non_empty(v)) {
        spec.insert("nodeSelector".into(), sel.clone());
    }
    if let Some(name) = label.scheduler_name.as_ref().filter(|s| !s.is_empty()) {
        spec.insert("schedulerName".into(), json!(name));
    }
    if let Some(volumes) = label.volumes.as_ref().filter(|v| non_empty(v)) {
        spec.insert("volumes".into(), volumes.clone());
    }
    Value::Object(spec)
}

/// Whether `key: value` is a valid Kubernetes label (names and values of
/// at most 63 alphanumerics, `-`, `_` and `.`, starting and ending
/// alphanumeric; a key may have a DNS prefix and `/`).
fn valid_label(key: &str, value: &str) -> bool {
    let segment = |s: &str, empty_ok: bool| {
        if s.is_empty() {
            return empty_ok;
        }
        let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        s.len() <= 63
            && ends(s.chars().next())
            && ends(s.chars().last())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) if !prefix.is_empty() && prefix.len() <= 253 => {
            if !segment(prefix, false) {
                return false;
            }
            name
        }
        Some(_) => return false,
        None => key,
    };
    segment(name, false) && segment(value, true)
}

/// Python's truth of a list or mapping.
fn non_empty(v: &Value) -> bool {
    match v {
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Null => false,
        _ => true,
    }
}

/// The labels of an object as a string map (for instance metadata).
pub fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}
