//! Admin routes for tests, outside the Kubernetes API: `GET /_sim/objects`,
//! `PUT /_sim/pod-outcome`, `POST /_sim/namespaces/{ns}/pods/{name}/phase`,
//! `GET|POST|DELETE /_sim/faults`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::json_response;
use crate::{Fault, Shared};

/// Every object as `{kind, namespace, name, phase, labels, deleting}`,
/// with counts per kind and the resourceVersion.
pub(super) async fn objects(State(shared): State<Arc<Shared>>) -> Response {
    let store = shared.lock();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let objects: Vec<Value> = store
        .all()
        .map(|((plural, ns, name), o)| {
            *counts.entry(plural).or_default() += 1;
            json!({
                "kind": o["kind"],
                "namespace": ns,
                "name": name,
                "phase": o["status"]["phase"],
                "labels": o["metadata"].get("labels").cloned().unwrap_or_else(|| json!({})),
                "deleting": o["metadata"].get("deletionTimestamp").is_some(),
            })
        })
        .collect();
    let body = json!({
        "resourceVersion": store.resource_version().to_string(),
        "counts": counts,
        "objects": objects,
    });
    json_response(StatusCode::OK, &body)
}

/// A phase to set.
#[derive(Debug, Deserialize)]
pub(super) struct Phase {
    phase: String,
}

fn checked(phase: &str) -> Result<(), Box<Response>> {
    match phase {
        "Pending" | "Running" | "Failed" | "Succeeded" => Ok(()),
        other => Err(Box::new(
            (
                StatusCode::BAD_REQUEST,
                format!("phase {other:?} is not Pending, Running, Failed or Succeeded"),
            )
                .into_response(),
        )),
    }
}

/// The phase pods created later reach after the ready delay (`Pending`:
/// they never leave it).
pub(super) async fn pod_outcome(
    State(shared): State<Arc<Shared>>,
    Json(body): Json<Phase>,
) -> Response {
    if let Err(resp) = checked(&body.phase) {
        return *resp;
    }
    shared.lock().set_pod_outcome(&body.phase);
    StatusCode::NO_CONTENT.into_response()
}

/// Move one pod to a phase now.
pub(super) async fn pod_phase(
    State(shared): State<Arc<Shared>>,
    Path((ns, name)): Path<(String, String)>,
    Json(body): Json<Phase>,
) -> Response {
    if let Err(resp) = checked(&body.phase) {
        return *resp;
    }
    let result = shared.lock().set_pod_phase(&ns, &name, &body.phase);
    match result {
        Ok(pod) => json_response(StatusCode::OK, &pod),
        Err(e) => e.into_response(),
    }
}

/// The injected faults.
pub(super) async fn faults(State(shared): State<Arc<Shared>>) -> Response {
    let list = shared.faults().clone();
    json_response(StatusCode::OK, &json!({"faults": list}))
}

/// Add a fault (a [`Fault`] as JSON).
pub(super) async fn add_fault(
    State(shared): State<Arc<Shared>>,
    Json(fault): Json<Fault>,
) -> Response {
    shared.faults().push(fault);
    StatusCode::NO_CONTENT.into_response()
}

/// Remove every fault.
pub(super) async fn clear_faults(State(shared): State<Arc<Shared>>) -> Response {
    shared.faults().clear();
    StatusCode::NO_CONTENT.into_response()
}
