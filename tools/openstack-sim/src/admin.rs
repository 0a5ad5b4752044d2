//! The admin API under `/_sim/`, for tests and other processes:
//!
//! | Request | Effect |
//! |---|---|
//! | `GET /_sim/faults` | The injected [`Faults`] as JSON. |
//! | `POST /_sim/faults` | Replace them (body: [`Faults`] JSON). |
//! | `DELETE /_sim/faults` | Clear them. |
//! | `PUT /_sim/limits` | Replace the compute limits (body: [`SimLimits`](crate::SimLimits)). |
//! | `POST /_sim/revoke-tokens` | Invalidate every token (clients get 401). |
//! | `POST /_sim/ports` | Add a detached DOWN port (body: `{"network_id"?, "device_owner"?}`). |
//! | `GET /_sim/state` | The whole [`Cloud`](crate::Cloud) as JSON. |

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::config::{Faults, SimLimits};
use crate::state::{new_id, Port};
use crate::SimState;

pub(crate) fn routes() -> Router<SimState> {
    Router::new()
        .route(
            "/faults",
            get(get_faults).post(set_faults).delete(clear_faults),
        )
        .route("/limits", put(set_limits))
        .route("/revoke-tokens", post(revoke_tokens))
        .route("/ports", post(add_port))
        .route("/state", get(dump))
}

async fn get_faults(State(state): State<SimState>) -> Response {
    Json(state.read(|c| c.faults.clone())).into_response()
}

async fn set_faults(State(state): State<SimState>, Json(faults): Json<Faults>) -> Response {
    state.set_faults(faults);
    StatusCode::NO_CONTENT.into_response()
}

async fn clear_faults(State(state): State<SimState>) -> Response {
    state.set_faults(Faults::default());
    StatusCode::NO_CONTENT.into_response()
}

async fn set_limits(State(state): State<SimState>, Json(limits): Json<SimLimits>) -> Response {
    state.update(|c| c.config.limits = limits);
    StatusCode::NO_CONTENT.into_response()
}

async fn revoke_tokens(State(state): State<SimState>) -> Response {
    state.update(|c| c.tokens.clear());
    StatusCode::NO_CONTENT.into_response()
}

async fn add_port(State(state): State<SimState>, Json(req): Json<Value>) -> Response {
    let port = state.update(|c| {
        let network = req
            .get("network_id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| c.config.networks.first().map(|n| n.id.clone()))
            .unwrap_or_default();
        let prefix = c
            .config
            .networks
            .iter()
            .find(|n| n.id == network)
            .map(|n| n.prefix.clone())
            .unwrap_or_else(|| "10.0.0".to_string());
        let port = Port {
            id: new_id(),
            network_id: network,
            device_id: String::new(),
            device_owner: req
                .get("device_owner")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            status: "DOWN".to_string(),
            ip: c.next_ip(&prefix),
            mac: c.next_mac(),
        };
        c.ports.insert(port.id.clone(), port.clone());
        port
    });
    (StatusCode::CREATED, Json(json!({ "port": port }))).into_response()
}

async fn dump(State(state): State<SimState>) -> Response {
    Json(state.read(|c| c.clone())).into_response()
}
