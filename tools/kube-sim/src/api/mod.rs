//! The HTTP API: Kubernetes routes behind the bearer token, discovery, and
//! the simulator's own admin routes under `/_sim/`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::Router;
use serde_json::Value;

use crate::error::ApiError;
use crate::Shared;

mod admin;
mod discovery;
mod objects;
pub mod table;

/// Every route of the simulator.
pub fn router(shared: Arc<Shared>) -> Router {
    let kube = Router::new()
        .route("/api", get(discovery::api_versions))
        .route("/api/v1", get(discovery::core_resources))
        .route("/api/v1/{*rest}", any(objects::core))
        .route("/apis", get(discovery::groups))
        .route("/apis/{group}", get(discovery::group))
        .route("/apis/{group}/{version}", get(discovery::group_resources))
        .route("/apis/{group}/{version}/{*rest}", any(objects::grouped))
        .fallback(|| async { ApiError::no_route() })
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            inject_faults,
        ))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            require_token,
        ));
    Router::new()
        .merge(kube)
        .route("/version", get(discovery::version))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/_sim/objects", get(admin::objects))
        .route("/_sim/pod-outcome", put(admin::pod_outcome))
        .route(
            "/_sim/faults",
            get(admin::faults)
                .post(admin::add_fault)
                .delete(admin::clear_faults),
        )
        .route(
            "/_sim/namespaces/{ns}/pods/{name}/phase",
            post(admin::pod_phase),
        )
        .with_state(shared)
}

/// 401 unless the request carries an accepted bearer token.
async fn require_token(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let ok = token.is_some_and(|t| shared.lock().accepts_token(t));
    if !ok {
        return ApiError::unauthorized().into_response();
    }
    next.run(req).await
}

/// Answer with the first matching injected fault, if any.
async fn inject_faults(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let fault = crate::faults::take(
        &mut shared.faults(),
        req.method().as_str(),
        req.uri().path(),
    );
    match fault {
        Some(e) => e.into_response(),
        None => next.run(req).await,
    }
}

/// A JSON answer.
pub fn json_response(code: StatusCode, body: &Value) -> Response {
    let mut resp = (code, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Whether the client asked for `meta.k8s.io` Tables (kubectl's human
/// output).
pub fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}
