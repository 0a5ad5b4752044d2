//! The resource routes: `/api/v1/...` and `/apis/{group}/v1/...`, for
//! collections (list, watch, create) and objects (get, replace, patch,
//! delete), namespaced or cluster-scoped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::api::{json_response, table, wants_table};
use crate::error::ApiError;
use crate::kinds::{self, Kind};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::watch::{self, WatchFilter};
use crate::Shared;

/// What a path names.
#[derive(Debug)]
struct Target {
    kind: &'static Kind,
    namespace: Option<String>,
    name: Option<String>,
}

/// One request, taken apart.
struct Call {
    method: Method,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
}

/// `/api/v1/{*rest}`.
pub(super) async fn core(
    State(shared): State<Arc<Shared>>,
    Path(rest): Path<String>,
    method: Method,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let call = Call {
        method,
        query,
        headers,
        body,
    };
    respond(dispatch(&shared, "", &rest, call))
}

/// `/apis/{group}/{version}/{*rest}`.
pub(super) async fn grouped(
    State(shared): State<Arc<Shared>>,
    Path((group, version, rest)): Path<(String, String, String)>,
    method: Method,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if version != "v1" || group.is_empty() {
        return ApiError::no_route().into_response();
    }
    let call = Call {
        method,
        query,
        headers,
        body,
    };
    respond(dispatch(&shared, &group, &rest, call))
}

fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

fn target(group: &str, rest: &str) -> Result<Target, ApiError> {
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let kind = |plural: &str| kinds::lookup(group, plural).ok_or_else(ApiError::no_route);
    let t = match segs.as_slice() {
        [plural] => Target {
            kind: kind(plural)?,
            namespace: None,
            name: None,
        },
        ["namespaces", ns, plural] => Target {
            kind: kind(plural).and_then(namespaced)?,
            namespace: Some((*ns).to_string()),
            name: None,
        },
        [plural, name] => {
            let k = kind(plural)?;
            if k.namespaced {
                return Err(ApiError::no_route());
            }
            Target {
                kind: k,
                namespace: None,
                name: Some((*name).to_string()),
            }
        }
        ["namespaces", ns, plural, name] => Target {
            kind: kind(plural).and_then(namespaced)?,
            namespace: Some((*ns).to_string()),
            name: Some((*name).to_string()),
        },
        _ => return Err(ApiError::no_route()),
    };
    Ok(t)
}

fn namespaced(kind: &'static Kind) -> Result<&'static Kind, ApiError> {
    if kind.namespaced {
        Ok(kind)
    } else {
        Err(ApiError::no_route())
    }
}

fn body_json(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("the body of the request is not valid JSON: {e}"))
    })
}

fn flag(query: &HashMap<String, String>, name: &str) -> bool {
    query
        .get(name)
        .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "True"))
}

fn selectors(query: &HashMap<String, String>) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    Ok((labels, fields))
}

fn dispatch(
    shared: &Arc<Shared>,
    group: &str,
    rest: &str,
    call: Call,
) -> Result<Response, ApiError> {
    let t = target(group, rest)?;
    let kind = t.kind;
    let ns = t.namespace.as_deref().unwrap_or("");
    let table = wants_table(&call.headers);
    let answer = match (&call.method, t.name.as_deref()) {
        (&Method::GET, None) => {
            let (labels, fields) = selectors(&call.query)?;
            if flag(&call.query, "watch") {
                let rv = match call.query.get("resourceVersion").map(String::as_str) {
                    None | Some("") => None,
                    Some(v) => Some(v.parse::<u64>().map_err(|_| {
                        ApiError::bad_request(format!("invalid resource version: {v:?}"))
                    })?),
                };
                let timeout = call
                    .query
                    .get("timeoutSeconds")
                    .and_then(|s| s.parse::<u64>().ok())
                    .map(Duration::from_secs);
                let filter = WatchFilter {
                    kind,
                    namespace: t.namespace.clone(),
                    labels,
                    fields,
                    table,
                };
                return watch::start(shared, filter, rv, timeout);
            }
            let store = shared.lock();
            let items = store.list(kind, t.namespace.as_deref(), &labels, &fields);
            let rv = store.resource_version();
            if table {
                return Ok(json_response(
                    StatusCode::OK,
                    &table::table(kind, &items, Some(rv)),
                ));
            }
            (
                StatusCode::OK,
                json!({
                    "kind": format!("{}List", kind.kind),
                    "apiVersion": kind.api_version(),
                    "metadata": {"resourceVersion": rv.to_string()},
                    "items": items,
                }),
            )
        }
        (&Method::POST, None) => {
            if kind.namespaced && t.namespace.is_none() {
                return Err(ApiError::method_not_allowed("POST"));
            }
            let body = body_json(&call.body)?;
            let created = shared.lock().create(kind, t.namespace.as_deref(), body)?;
            (StatusCode::CREATED, created)
        }
        (&Method::GET, Some(name)) => {
            let object = shared.lock().get(kind, ns, name)?;
            if table {
                let rv = shared.lock().resource_version();
                return Ok(json_response(
                    StatusCode::OK,
                    &table::table(kind, &[object], Some(rv)),
                ));
            }
            (StatusCode::OK, object)
        }
        (&Method::PUT, Some(name)) => {
            let body = body_json(&call.body)?;
            (StatusCode::OK, shared.lock().replace(kind, ns, name, body)?)
        }
        (&Method::PATCH, Some(name)) => {
            let content_type = call
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let merge = content_type.starts_with("application/merge-patch+json")
                || content_type.starts_with("application/strategic-merge-patch+json");
            if !merge {
                return Err(ApiError::unsupported_media(content_type));
            }
            let patch = body_json(&call.body)?;
            (StatusCode::OK, shared.lock().patch(kind, ns, name, &patch)?)
        }
        (&Method::DELETE, Some(name)) => {
            let options = if call.body.iter().all(u8::is_ascii_whitespace) {
                json!({})
            } else {
                body_json(&call.body)?
            };
            let grace = options
                .get("gracePeriodSeconds")
                .and_then(Value::as_i64)
                .or_else(|| {
                    call.query
                        .get("gracePeriodSeconds")
                        .and_then(|g| g.parse().ok())
                });
            (StatusCode::OK, shared.lock().delete(kind, ns, name, grace)?)
        }
        (method, _) => return Err(ApiError::method_not_allowed(method.as_str())),
    };
    shared.wake.notify_one();
    Ok(json_response(answer.0, &answer.1))
}
