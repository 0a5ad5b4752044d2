//! Discovery: `/api`, `/apis`, the resource lists of `v1` and
//! `rbac.authorization.k8s.io/v1`, and `/version`.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::api::json_response;
use crate::error::ApiError;
use crate::kinds::{KINDS, RBAC};

const VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

fn resources(group: &str) -> Value {
    let group_version = if group.is_empty() {
        "v1".to_string()
    } else {
        format!("{group}/v1")
    };
    let resources: Vec<Value> = KINDS
        .iter()
        .filter(|k| k.group == group)
        .map(|k| {
            json!({
                "name": k.plural,
                "singularName": k.singular,
                "namespaced": k.namespaced,
                "kind": k.kind,
                "verbs": VERBS,
                "shortNames": k.short_names,
            })
        })
        .collect();
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    })
}

fn rbac_group() -> Value {
    let version = json!({"groupVersion": format!("{RBAC}/v1"), "version": "v1"});
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": RBAC,
        "versions": [version],
        "preferredVersion": version,
    })
}

/// `GET /api`.
pub(super) async fn api_versions() -> Response {
    let body = json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [],
    });
    json_response(StatusCode::OK, &body)
}

/// `GET /api/v1`.
pub(super) async fn core_resources() -> Response {
    json_response(StatusCode::OK, &resources(""))
}

/// `GET /apis`.
pub(super) async fn groups() -> Response {
    let body = json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [rbac_group()]});
    json_response(StatusCode::OK, &body)
}

/// `GET /apis/{group}`.
pub(super) async fn group(Path(group): Path<String>) -> Response {
    if group == RBAC {
        json_response(StatusCode::OK, &rbac_group())
    } else {
        ApiError::no_route().into_response()
    }
}

/// `GET /apis/{group}/{version}`.
pub(super) async fn group_resources(Path((group, version)): Path<(String, String)>) -> Response {
    if group == RBAC && version == "v1" {
        json_response(StatusCode::OK, &resources(RBAC))
    } else {
        ApiError::no_route().into_response()
    }
}

/// `GET /version`.
pub(super) async fn version() -> Response {
    let body = json!({
        "major": "1",
        "minor": "29",
        "gitVersion": "v1.29.0-kube-sim",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.21.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    });
    json_response(StatusCode::OK, &body)
}
