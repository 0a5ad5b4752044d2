//! # nodepool-openstack-sim
//!
//! An OpenStack API simulator for testing nodepool-rs over real HTTP: the
//! Keystone v3 token API (password and application-credential auth, a
//! service catalog, expiring tokens), Nova servers, flavors, limits and
//! availability zones, Glance v2 images (direct upload and interoperable
//! import), Neutron networks, ports and floating IPs, and Cinder's volume
//! limits and volumes (when configured), answering with the status codes
//! and JSON bodies of the real services.
//!
//! Faults are injected through an admin API under `/_sim/` (or
//! [`SimState::set_faults`] in-process): failing requests with any status
//! (403/413 quota, 500, 503), dropped connections, slow requests, servers
//! that boot slowly, never boot or end in ERROR, and ports leaked on delete.
//!
//! Every service lives on one listener under a path prefix: `/identity/v3`,
//! `/compute/v2.1`, `/image/v2`, `/network/v2.0`, `/volume/v3/{project}`;
//! the catalog points at the
//! address the client used.
//!
//! ```no_run
//! use nodepool_openstack_sim::{serve, SimConfig, SimState};
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let auth_url = format!("http://{}/identity/v3", listener.local_addr()?);
//! let state = SimState::new(SimConfig::default());
//! tokio::spawn(serve(listener, state.clone()));
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![warn(unreachable_pub, missing_debug_implementations)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::ServiceExt;

mod admin;
mod cinder;
pub mod config;
mod glance;
mod keystone;
mod neutron;
mod nova;
pub mod state;

pub use config::{
    BootFault, FaultRule, Faults, SimAppCredential, SimCloudImage, SimConfig, SimFlavor, SimLimits,
    SimNetwork, SimUser, SimVolumeLimits, GLANCE_DISK_FORMATS,
};
pub use state::{Cloud, SimState};

/// Serve the simulator on `listener` until the listener fails.
///
/// Each connection is served by its own task; a `drop_connection` fault
/// closes the matching request's connection without an answer.
pub async fn serve(listener: TcpListener, state: SimState) -> std::io::Result<()> {
    let app = router(state);
    loop {
        let (stream, _) = listener.accept().await?;
        let app = app.clone();
        tokio::spawn(async move {
            let kill = Arc::new(Notify::new());
            let conn_kill = ConnKill(kill.clone());
            let service =
                hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(conn_kill.clone());
                    app.clone().oneshot(req.map(Body::new))
                });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = kill.notified() => {}
            }
        });
    }
}

/// Start the simulator on `127.0.0.1:0` in this runtime; returns its base
/// URL (`http://127.0.0.1:PORT`) and the task serving it.
pub async fn start(state: SimState) -> std::io::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        if let Err(e) = serve(listener, state).await {
            tracing::error!(error = %e, "openstack simulator stopped");
        }
    });
    Ok((base, task))
}

/// Closes the connection a request came on.
#[derive(Debug, Clone)]
struct ConnKill(Arc<Notify>);

/// The router of every service and the admin API.
pub fn router(state: SimState) -> Router {
    let services = Router::new()
        .nest("/compute/v2.1", nova::routes())
        .nest("/image", glance::routes())
        .nest("/network", neutron::routes())
        .nest("/volume", cinder::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    Router::new()
        .merge(services)
        .nest("/identity", keystone::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            inject_faults,
        ))
        .nest("/_sim", admin::routes())
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// The service a path belongs to, for the shape of error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Identity,
    Compute,
    Image,
    Network,
    Volume,
}

impl Service {
    fn of(path: &str) -> Self {
        if path.starts_with("/compute") {
            Service::Compute
        } else if path.starts_with("/image") {
            Service::Image
        } else if path.starts_with("/network") {
            Service::Network
        } else if path.starts_with("/volume") {
            Service::Volume
        } else {
            Service::Identity
        }
    }
}

/// An error answer shaped as `service` shapes them.
fn error_response(service: Service, status: StatusCode, message: &str) -> Response {
    let code = status.as_u16();
    match service {
        Service::Identity => {
            let title = status.canonical_reason().unwrap_or("Error");
            let body =
                serde_json::json!({"error": {"code": code, "title": title, "message": message}});
            (status, axum::Json(body)).into_response()
        }
        // Cinder shapes its errors as Nova does.
        Service::Compute | Service::Volume => {
            let key = match code {
                400 => "badRequest",
                401 => "unauthorized",
                403 => "forbidden",
                404 => "itemNotFound",
                409 => "conflictingRequest",
                413 => "overLimit",
                503 => "serviceUnavailable",
                _ => "computeFault",
            };
            let body = serde_json::json!({key: {"code": code, "message": message}});
            let mut resp = (status, axum::Json(body)).into_response();
            if code == 413 {
                resp.headers_mut()
                    .insert("Retry-After", HeaderValue::from_static("1"));
            }
            resp
        }
        Service::Network => {
            let kind = match code {
                404 => "NotFound",
                409 => "Conflict",
                400 => "BadRequest",
                403 => "OverQuota",
                _ => "InternalServerError",
            };
            let body = serde_json::json!({"NeutronError": {"type": kind, "message": message, "detail": ""}});
            (status, axum::Json(body)).into_response()
        }
        Service::Image => {
            let reason = status.canonical_reason().unwrap_or("Error");
            let text = format!("<html>\n <head>\n  <title>{code} {reason}</title>\n </head>\n <body>\n  <h1>{code} {reason}</h1>\n  {message}<br /><br />\n\n\n </body>\n</html>");
            (status, [("Content-Type", "text/html; charset=UTF-8")], text).into_response()
        }
    }
}

/// Log the request, then apply the first matching fault rule.
async fn inject_faults(State(state): State<SimState>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let rule = state.update(|cloud| {
        cloud
            .request_log
            .push((method.clone(), path.clone(), state::now()));
        let rule = cloud
            .faults
            .rules
            .iter_mut()
            .find(|r| r.matches(&method, &path))?;
        if let Some(times) = &mut rule.times {
            *times -= 1;
        }
        Some(rule.clone())
    });
    let Some(rule) = rule else {
        return next.run(req).await;
    };
    if let Some(ms) = rule.delay_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if rule.drop_connection {
        if let Some(ConnKill(kill)) = req.extensions().get::<ConnKill>() {
            kill.notify_one();
            std::future::pending::<()>().await;
        }
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    match rule.status.and_then(|s| StatusCode::from_u16(s).ok()) {
        Some(status) => {
            let message = rule.message.clone().unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("injected fault")
                    .to_string()
            });
            error_response(Service::of(&path), status, &message)
        }
        None => next.run(req).await,
    }
}

/// Service APIs need a valid, unexpired `X-Auth-Token`.
async fn require_token(State(state): State<SimState>, req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get("X-Auth-Token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let valid = token.is_some_and(|t| {
        state.read(|c| {
            c.tokens
                .get(&t)
                .is_some_and(|tok| tok.expires_at > state::now())
        })
    });
    if valid {
        next.run(req).await
    } else {
        error_response(
            Service::of(req.uri().path()),
            StatusCode::UNAUTHORIZED,
            "The request you have made requires authentication.",
        )
    }
}

/// The `http://host:port` a request was sent to.
fn base_url(headers: &axum::http::HeaderMap) -> String {
    let host = headers
        .get("Host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// A JSON answer.
fn json(status: StatusCode, value: serde_json::Value) -> Response {
    (status, axum::Json(value)).into_response()
}

/// Format epoch seconds as ISO 8601 UTC (`2024-01-02T03:04:05Z`), with
/// `micros` digits of fraction when set (Keystone uses 6).
pub fn iso8601(t: f64, micros: bool) -> String {
    let secs = t.floor() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    if micros {
        let us = ((t - t.floor()) * 1_000_000.0) as i64;
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{us:06}Z")
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
    }
}

#[cfg(test)]
mod tests;
