//! The write API: request nodes without Zuul.
//!
//! - `POST /api/v1/requests` with `{"labels": [...], "priority": "100",
//!   "relative_priority": 0, "requestor": "..."}` writes a node request and
//!   answers 201 `{"id": ...}`. A background task waits for it to be
//!   fulfilled and then locks its nodes on the requester's behalf (the
//!   steps a Zuul scheduler takes, [`nodepool_core::client::Client`]).
//! - `GET /api/v1/requests/{id}`: its state, and once fulfilled its nodes
//!   with their connection details.
//! - `POST /api/v1/nodes/{id}/release`: marks the node `used` and unlocks
//!   it, so the launcher deletes it.
//!
//! Requests survive a restart of the daemon (kill -9 included): each is
//! recorded in the state directory ([`super::journal`]). At start a request
//! still waiting is followed again, and written again under a new store id
//! if its record died with the old session (the API id stays the same);
//! the nodes of a fulfilled one are locked again before the launcher runs.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use nodepool_core::client::{Client, LockedNodes, PendingRequest, RequestOptions};
use nodepool_core::model::{Node, NodeState, RequestState};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::{info, warn};

use super::journal::Entry;
use super::WebState;

/// Requestor name when the body gives none.
const DEFAULT_REQUESTOR: &str = "nodepool-api";

/// A request submitted through the API, as this process knows it.
#[derive(Debug)]
pub(super) struct Tracked {
    labels: Vec<String>,
    requestor: String,
    priority: String,
    relative_priority: i64,
    /// The store's node request serving it now.
    request_id: String,
    phase: Phase,
    /// When the phase last changed.
    changed: f64,
}

impl Tracked {
    fn options(&self) -> RequestOptions {
        RequestOptions {
            priority: self.priority.clone(),
            relative_priority: self.relative_priority,
            ..RequestOptions::default()
        }
    }

    fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
        self.changed = nodepool_core::model::now();
    }

    /// What the journal keeps of it.
    fn entry(&self) -> Entry {
        let (phase, nodes, error) = match &self.phase {
            Phase::Waiting => ("waiting", Vec::new(), None),
            Phase::Fulfilled { nodes, .. } => ("fulfilled", node_ids(nodes), None),
            Phase::Failed(e) => ("failed", Vec::new(), Some(e.clone())),
            Phase::Released { nodes } => ("released", node_ids(nodes), None),
        };
        Entry {
            labels: self.labels.clone(),
            requestor: self.requestor.clone(),
            priority: self.priority.clone(),
            relative_priority: self.relative_priority,
            request_id: self.request_id.clone(),
            phase: phase.to_owned(),
            nodes,
            error,
            changed: self.changed,
        }
    }
}

/// The journal's view of every tracked request.
pub(super) fn journal_entries(
    requests: &std::collections::HashMap<String, Tracked>,
) -> std::collections::BTreeMap<String, Entry> {
    requests
        .iter()
        .map(|(id, t)| (id.clone(), t.entry()))
        .collect()
}

fn node_ids(nodes: &[Node]) -> Vec<String> {
    nodes.iter().map(|n| n.id.clone()).collect()
}

#[derive(Debug)]
enum Phase {
    /// Waiting for a launcher.
    Waiting,
    /// Nodes locked for the requester; `nodes` is what they were then.
    Fulfilled {
        nodes: Vec<Node>,
        locked: Option<LockedNodes>,
    },
    /// Failed, timed out or withdrawn.
    Failed(String),
    /// The nodes were given back.
    Released { nodes: Vec<Node> },
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Constant-time comparison, so the token cannot be guessed by timing.
fn same_token(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Lets a call through only with the configured bearer token; 403 when
/// no token is configured (the write API is then disabled), 401 without
/// the right token.
pub(super) async fn require_token(
    State(state): State<Arc<WebState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = state.api_token.as_deref() else {
        return error(
            StatusCode::FORBIDDEN,
            "the node request API is disabled: no API token is configured",
        );
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(token) if same_token(token.trim().as_bytes(), expected.as_bytes()) => {
            next.run(request).await
        }
        _ => {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API token (Authorization: Bearer <token>)",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            response
        }
    }
}

/// The body of `POST /api/v1/requests`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Submit {
    labels: Vec<String>,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    relative_priority: i64,
    #[serde(default)]
    requestor: Option<String>,
}

/// `POST /api/v1/requests`.
pub(super) async fn submit(
    State(state): State<Arc<WebState>>,
    body: Result<Json<Submit>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(body) => body,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    if body.labels.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "\"labels\" must name at least one label",
        );
    }
    let config = state.config();
    if let Some(unknown) = body.labels.iter().find(|l| config.label(l).is_none()) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("label {unknown:?} is not in the configuration"),
        );
    }
    let priority = body.priority.unwrap_or_else(|| "100".to_owned());
    if priority.len() != 3 || !priority.bytes().all(|b| b.is_ascii_digit()) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("priority {priority:?} must be three digits, e.g. \"100\""),
        );
    }
    let requestor = body
        .requestor
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| DEFAULT_REQUESTOR.to_owned());
    let client = Client::new(Arc::clone(&state.store), requestor.clone());
    let options = RequestOptions {
        priority,
        relative_priority: body.relative_priority,
        ..RequestOptions::default()
    };
    let labels: Vec<&str> = body.labels.iter().map(String::as_str).collect();
    let pending = match client.submit(&labels, &options).await {
        Ok(pending) => pending,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    info!(request_id = %pending.id, %requestor, "node request submitted through the API");
    state.requests().insert(
        pending.id.clone(),
        Tracked {
            labels: body.labels,
            requestor,
            priority: options.priority,
            relative_priority: options.relative_priority,
            request_id: pending.id.clone(),
            phase: Phase::Waiting,
            changed: nodepool_core::model::now(),
        },
    );
    state.persist_requests();
    tokio::spawn(follow(Arc::clone(&state), client, pending.id.clone()));
    let location = format!("/api/v1/requests/{}", pending.id);
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(json!({ "id": pending.id })),
    )
        .into_response()
}

/// Follows API request `api_id` until it is fulfilled (its nodes locked
/// for the requester) or fails; records the outcome. A store record that
/// vanished (it died with the session of a daemon that was killed) is
/// written again with the same labels and priority.
async fn follow(state: Arc<WebState>, client: Client, api_id: String) {
    let started = tokio::time::Instant::now();
    let phase = loop {
        let Some((request_id, labels, options)) = state
            .requests()
            .get(&api_id)
            .map(|t| (t.request_id.clone(), t.labels.clone(), t.options()))
        else {
            return;
        };
        let pending = PendingRequest { id: request_id };
        let left = state.request_timeout.saturating_sub(started.elapsed());
        match client.wait_fulfilled(&pending, left).await {
            Ok(locked) => {
                break Phase::Fulfilled {
                    nodes: locked.nodes().cloned().collect(),
                    locked: Some(locked),
                }
            }
            Err(nodepool_core::Error::RequestNotFound { .. }) if !left.is_zero() => {
                let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
                match client.submit(&labels, &options).await {
                    Ok(again) => {
                        info!(
                            api_request = %api_id,
                            old = %pending.id,
                            new = %again.id,
                            "node request of the API gone with an old session; written again"
                        );
                        if let Some(tracked) = state.requests().get_mut(&api_id) {
                            tracked.request_id = again.id;
                        }
                        state.persist_requests();
                    }
                    Err(e) => {
                        warn!(api_request = %api_id, error = %e, "cannot write the node request again; retrying");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            }
            Err(e) => {
                warn!(api_request = %api_id, request_id = %pending.id, error = %e, "API node request not fulfilled");
                if let Err(e) = client.cancel(&pending).await {
                    warn!(request_id = %pending.id, error = %e, "cannot withdraw node request");
                }
                break Phase::Failed(e.to_string());
            }
        }
    };
    if let Some(tracked) = state.requests().get_mut(&api_id) {
        tracked.set_phase(phase);
    }
    state.persist_requests();
}

/// Take up the requests recorded before a restart (see the module docs).
pub(super) async fn resume(state: Arc<WebState>) {
    let Some(journal) = state.journal() else {
        return;
    };
    let entries = journal.load();
    if entries.is_empty() {
        return;
    }
    info!(
        requests = entries.len(),
        "taking up the node requests of the API recorded before the restart"
    );
    for (api_id, entry) in entries {
        let client = Client::new(Arc::clone(&state.store), entry.requestor.clone());
        let phase = match entry.phase.as_str() {
            "waiting" => Phase::Waiting,
            "fulfilled" => match client.reclaim(&entry.request_id, &entry.nodes).await {
                Ok(locked) => Phase::Fulfilled {
                    nodes: locked.nodes().cloned().collect(),
                    locked: Some(locked),
                },
                Err(e) => {
                    warn!(api_request = %api_id, error = %e, "cannot lock the nodes of a fulfilled API request again");
                    Phase::Failed(format!(
                        "the daemon restarted and the request's nodes could not be locked again: {e}"
                    ))
                }
            },
            "released" => Phase::Released { nodes: Vec::new() },
            _ => Phase::Failed(entry.error.clone().unwrap_or_else(|| "failed".to_owned())),
        };
        let waiting = matches!(phase, Phase::Waiting);
        state.requests().insert(
            api_id.clone(),
            Tracked {
                labels: entry.labels,
                requestor: entry.requestor,
                priority: entry.priority,
                relative_priority: entry.relative_priority,
                request_id: entry.request_id,
                phase,
                changed: entry.changed,
            },
        );
        if waiting {
            tokio::spawn(follow(Arc::clone(&state), client, api_id));
        }
    }
    state.persist_requests();
}

/// A node as the requestor who holds it sees it: for a Kubernetes node
/// `connection_port` is upstream's mapping of connection details (its
/// token included; the requestor owns the node), else the port number.
fn node_json(node: &Node) -> Value {
    let connection_port = match &node.connection_details {
        Some(details) => Value::Object(details.to_serde()),
        None => json!(node.connection_port),
    };
    json!({
        "id": node.id,
        "labels": node.labels,
        "state": node.state.map(|s| s.as_str()),
        "provider": node.provider,
        "pool": node.pool,
        "region": node.region,
        "az": node.az,
        "hostname": node.hostname,
        "external_id": node.external_id,
        "interface_ip": node.interface_ip,
        "public_ipv4": node.public_ipv4,
        "private_ipv4": node.private_ipv4,
        "public_ipv6": node.public_ipv6,
        "connection_type": node.connection_type,
        "connection_port": connection_port,
        "username": node.username,
        "host_keys": node.host_keys,
        "python_path": node.python_path,
        "shell_type": node.shell_type,
    })
}

/// `GET /api/v1/requests/{id}`.
pub(super) async fn show(State(state): State<Arc<WebState>>, Path(id): Path<String>) -> Response {
    let snapshot = state.requests().get(&id).map(|t| {
        let request_id = t.request_id.clone();
        let (phase, nodes, error): (&str, Vec<Value>, Option<String>) = match &t.phase {
            Phase::Waiting => ("waiting", Vec::new(), None),
            Phase::Fulfilled { nodes, .. } => {
                ("fulfilled", nodes.iter().map(node_json).collect(), None)
            }
            Phase::Failed(e) => ("failed", Vec::new(), Some(e.clone())),
            Phase::Released { nodes } => ("released", nodes.iter().map(node_json).collect(), None),
        };
        (
            phase,
            nodes,
            error,
            t.labels.clone(),
            t.requestor.clone(),
            request_id,
        )
    });
    let Some((phase, nodes, failure, labels, requestor, request_id)) = snapshot else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no node request {id} was made through this API"),
        );
    };
    // While waiting, the store says how far the launcher got. The request
    // reads `fulfilled` only once its nodes are locked for the requester:
    // until then (and after the record is deleted on acceptance) `pending`.
    let state_name = if phase == "waiting" {
        match state.store.get_request(&request_id).await {
            Ok(Some(request)) => match request.state {
                None | Some(RequestState::Requested) => "requested",
                Some(RequestState::Failed) => "failed",
                Some(RequestState::Pending | RequestState::Fulfilled) => "pending",
            }
            .to_owned(),
            Ok(None) => "pending".to_owned(),
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    } else {
        phase.to_owned()
    };
    let mut body = json!({
        "id": id,
        "state": state_name,
        "labels": labels,
        "requestor": requestor,
        "nodes": nodes,
    });
    if let (Some(failure), Some(object)) = (failure, body.as_object_mut()) {
        object.insert("error".to_owned(), Value::String(failure));
    }
    Json(body).into_response()
}

/// `POST /api/v1/nodes/{id}/release`. The client returns the nodes of a
/// request together, so releasing one node releases every node locked for
/// the same request; the answer lists them.
pub(super) async fn release(
    State(state): State<Arc<WebState>>,
    Path(id): Path<String>,
) -> Response {
    let taken = {
        let mut requests = state.requests();
        requests
            .iter_mut()
            .find_map(|(request_id, tracked)| match &mut tracked.phase {
                Phase::Fulfilled { nodes, locked } if nodes.iter().any(|n| n.id == id) => {
                    let locked = locked.take();
                    let mut nodes = std::mem::take(nodes);
                    for node in &mut nodes {
                        node.set_state(NodeState::Used);
                    }
                    tracked.set_phase(Phase::Released { nodes });
                    Some((request_id.clone(), tracked.requestor.clone(), locked))
                }
                _ => None,
            })
    };
    state.persist_requests();
    let Some((request_id, requestor, Some(locked))) = taken else {
        return error(
            StatusCode::NOT_FOUND,
            format!("node {id} is not held through this API"),
        );
    };
    let released: Vec<String> = locked.nodes().map(|n| n.id.clone()).collect();
    let client = Client::new(Arc::clone(&state.store), requestor);
    if let Err(e) = client.release(locked).await {
        warn!(node_id = %id, request_id = %request_id, error = %e, "release failed");
        return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    }
    info!(node_id = %id, request_id = %request_id, "nodes released through the API");
    Json(json!({ "request": request_id, "released": released })).into_response()
}

#[cfg(test)]
mod node_json_tests {
    use super::*;
    use nodepool_core::model::{ConnectionDetails, NodeState};

    #[test]
    fn a_kubernetes_node_shows_its_connection_details_and_others_their_port() {
        let mut node = Node::new(NodeState::Ready);
        node.connection_port = 2222;
        assert_eq!(node_json(&node)["connection_port"], 2222);
        let mut details = serde_json::Map::new();
        details.insert("namespace".into(), json!("main-0000000001"));
        details.insert("token".into(), json!("sa-token"));
        node.connection_details = Some(ConnectionDetails::from_serde(details));
        let shown = node_json(&node);
        assert_eq!(shown["connection_port"]["namespace"], "main-0000000001");
        assert_eq!(shown["connection_port"]["token"], "sa-token");
    }
}
