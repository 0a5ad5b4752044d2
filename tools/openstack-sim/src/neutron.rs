//! Neutron v2.0: networks (list, show), ports (list with filters, show,
//! delete) and floating IPs (list with filters, create, attach/detach,
//! delete).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use crate::config::SimNetwork;
use crate::state::{new_id, Cloud, FloatingIp, Port};
use crate::{error_response, Service, SimState};

pub(crate) fn routes() -> Router<SimState> {
    Router::new()
        .route("/", get(versions))
        .route("/v2.0/networks", get(list_networks))
        .route("/v2.0/networks/{id}", get(show_network))
        .route("/v2.0/ports", get(list_ports))
        .route("/v2.0/ports/{id}", get(show_port).delete(delete_port))
        .route("/v2.0/floatingips", get(list_fips).post(create_fip))
        .route(
            "/v2.0/floatingips/{id}",
            get(show_fip).put(update_fip).delete(delete_fip),
        )
}

fn err(status: StatusCode, message: &str) -> Response {
    error_response(Service::Network, status, message)
}

async fn versions() -> Response {
    crate::json(
        StatusCode::OK,
        json!({"versions": [{"id": "v2.0", "status": "CURRENT", "links": []}]}),
    )
}

fn network_view(n: &SimNetwork) -> Value {
    json!({"id": n.id, "name": n.name, "status": "ACTIVE", "admin_state_up": true,
        "router:external": n.external, "shared": false, "subnets": [format!("sub-{}", n.id)],
        "tenant_id": "p-demo", "project_id": "p-demo", "mtu": 1500})
}

/// Whether `v`'s field `key` equals the query's value (ignored when absent).
fn filter(q: &HashMap<String, String>, key: &str, v: &Value) -> bool {
    q.get(key).map_or(true, |want| match v.get(key) {
        Some(Value::String(s)) => s == want,
        Some(Value::Bool(b)) => b.to_string() == want.to_lowercase(),
        Some(Value::Null) | None => want.is_empty(),
        Some(other) => &other.to_string() == want,
    })
}

fn listed(items: Vec<Value>, q: &HashMap<String, String>, keys: &[&str]) -> Vec<Value> {
    items
        .into_iter()
        .filter(|v| keys.iter().all(|k| filter(q, k, v)))
        .collect()
}

async fn list_networks(
    State(state): State<SimState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let nets = state.read(|c| c.config.networks.iter().map(network_view).collect());
    let nets = listed(nets, &q, &["id", "name", "router:external", "status"]);
    crate::json(StatusCode::OK, json!({ "networks": nets }))
}

async fn show_network(State(state): State<SimState>, Path(id): Path<String>) -> Response {
    state.read(|c| match c.config.networks.iter().find(|n| n.id == id) {
        Some(n) => crate::json(StatusCode::OK, json!({"network": network_view(n)})),
        None => err(
            StatusCode::NOT_FOUND,
            &format!("Network {id} could not be found."),
        ),
    })
}

fn port_view(p: &Port) -> Value {
    json!({"id": p.id, "name": "", "network_id": p.network_id, "device_id": p.device_id,
        "device_owner": p.device_owner, "status": p.status, "mac_address": p.mac,
        "admin_state_up": true, "tenant_id": "p-demo", "project_id": "p-demo",
        "fixed_ips": [{"subnet_id": format!("sub-{}", p.network_id), "ip_address": p.ip}]})
}

async fn list_ports(
    State(state): State<SimState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let ports = state.read(|c| c.ports.values().map(port_view).collect());
    let ports = listed(
        ports,
        &q,
        &["id", "status", "device_owner", "device_id", "network_id"],
    );
    crate::json(StatusCode::OK, json!({ "ports": ports }))
}

async fn show_port(State(state): State<SimState>, Path(id): Path<String>) -> Response {
    state.read(|c| match c.ports.get(&id) {
        Some(p) => crate::json(StatusCode::OK, json!({"port": port_view(p)})),
        None => err(
            StatusCode::NOT_FOUND,
            &format!("Port {id} could not be found."),
        ),
    })
}

async fn delete_port(State(state): State<SimState>, Path(id): Path<String>) -> Response {
    state.update(|c| match c.ports.remove(&id) {
        Some(_) => {
            for server in c.servers.values_mut() {
                server.ports.retain(|p| p != &id);
            }
            for fip in c.floating_ips.values_mut() {
                if fip.port_id.as_deref() == Some(id.as_str()) {
                    fip.port_id = None;
                    fip.status = "DOWN".to_string();
                }
            }
            StatusCode::NO_CONTENT.into_response()
        }
        None => err(
            StatusCode::NOT_FOUND,
            &format!("Port {id} could not be found."),
        ),
    })
}

fn fip_view(c: &Cloud, f: &FloatingIp) -> Value {
    let fixed = f
        .port_id
        .as_ref()
        .and_then(|p| c.ports.get(p))
        .map(|p| p.ip.clone());
    json!({"id": f.id, "floating_ip_address": f.address, "floating_network_id": f.network_id,
        "port_id": f.port_id, "fixed_ip_address": fixed, "status": f.status,
        "router_id": f.port_id.as_ref().map(|_| "router-1"), "tenant_id": "p-demo",
        "project_id": "p-demo", "description": ""})
}

async fn list_fips(
    State(state): State<SimState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let fips = state.read(|c| c.floating_ips.values().map(|f| fip_view(c, f)).collect());
    let fips = listed(
        fips,
        &q,
        &[
            "id",
            "port_id",
            "floating_ip_address",
            "floating_network_id",
            "status",
        ],
    );
    crate::json(StatusCode::OK, json!({ "floatingips": fips }))
}

async fn show_fip(State(state): State<SimState>, Path(id): Path<String>) -> Response {
    state.read(|c| match c.floating_ips.get(&id) {
        Some(f) => crate::json(StatusCode::OK, json!({"floatingip": fip_view(c, f)})),
        None => err(
            StatusCode::NOT_FOUND,
            &format!("Floating IP {id} could not be found"),
        ),
    })
}

/// Attach `fip` to `port` (or detach with `None`), checking the port.
// The error is the answer to send; handlers return it at once.
#[allow(clippy::result_large_err)]
fn attach(c: &mut Cloud, fip: &str, port: Option<String>) -> Result<(), Response> {
    if let Some(p) = &port {
        if !c.ports.contains_key(p) {
            return Err(err(
                StatusCode::NOT_FOUND,
                &format!("Port {p} could not be found."),
            ));
        }
    }
    let Some(f) = c.floating_ips.get_mut(fip) else {
        return Err(err(
            StatusCode::NOT_FOUND,
            &format!("Floating IP {fip} could not be found"),
        ));
    };
    f.status = if port.is_some() { "ACTIVE" } else { "DOWN" }.to_string();
    f.port_id = port;
    Ok(())
}

async fn create_fip(State(state): State<SimState>, body: axum::body::Bytes) -> Response {
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(req) = req.get("floatingip") else {
        return err(StatusCode::BAD_REQUEST, "Resource body required");
    };
    let network = req
        .get("floating_network_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    let port = req
        .get("port_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    state.update(|c| {
        let Some(net) = c
            .config
            .networks
            .iter()
            .find(|n| Some(&n.id) == network.as_ref() && n.external)
            .cloned()
        else {
            return err(
                StatusCode::NOT_FOUND,
                "External network could not be found.",
            );
        };
        let fip = FloatingIp {
            id: new_id(),
            address: c.next_ip(&net.prefix),
            network_id: net.id,
            port_id: None,
            status: "DOWN".to_string(),
        };
        let id = fip.id.clone();
        c.floating_ips.insert(id.clone(), fip);
        if let Err(resp) = attach(c, &id, port) {
            c.floating_ips.remove(&id);
            return resp;
        }
        match c.floating_ips.get(&id) {
            Some(f) => crate::json(StatusCode::CREATED, json!({"floatingip": fip_view(c, f)})),
            None => err(
                StatusCode::INTERNAL_SERVER_ERROR,
                "lost the new floating IP",
            ),
        }
    })
}

async fn update_fip(
    State(state): State<SimState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(port) = req.get("floatingip").and_then(|f| f.get("port_id")) else {
        return err(StatusCode::BAD_REQUEST, "Resource body required");
    };
    let port = port.as_str().map(str::to_string);
    state.update(|c| match attach(c, &id, port) {
        Ok(()) => match c.floating_ips.get(&id) {
            Some(f) => crate::json(StatusCode::OK, json!({"floatingip": fip_view(c, f)})),
            None => err(StatusCode::NOT_FOUND, "Floating IP could not be found"),
        },
        Err(resp) => resp,
    })
}

async fn delete_fip(State(state): State<SimState>, Path(id): Path<String>) -> Response {
    state.update(|c| match c.floating_ips.remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => err(
            StatusCode::NOT_FOUND,
            &format!("Floating IP {id} could not be found"),
        ),
    })
}
