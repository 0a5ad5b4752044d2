//! Upstream's status endpoints, with its content negotiation, its one
//! second response cache and its caching headers; plus `/healthz` and
//! `/metrics`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use nodepool_core::model::{now, POOL};
use nodepool_core::status::{self, BuildRequestStatus, ImageStatus, Listing};
use nodepool_core::store::{locked_nodes, LockTarget, NodeStore};
use tracing::warn;

use super::accept::{wanted_format, Format};
use super::WebState;

/// How long a rendered listing is reused (upstream's `cache_expiry`).
const EXPIRY: Duration = Duration::from_secs(1);

/// Rendered listings by path, parameters and format.
#[derive(Debug, Default)]
pub(super) struct Cache {
    entries: HashMap<String, (SystemTime, String)>,
}

impl Cache {
    fn get(&mut self, key: &str, at: SystemTime) -> Option<(SystemTime, String)> {
        let (made, body) = self.entries.get(key)?;
        if at > *made + EXPIRY {
            self.entries.remove(key);
            return None;
        }
        Some((*made, body.clone()))
    }

    fn put(&mut self, key: String, at: SystemTime, body: String) {
        self.entries.retain(|_, (made, _)| at <= *made + EXPIRY);
        self.entries.insert(key, (at, body));
    }
}

/// The body of upstream's (WebOb's) 404.
const NOT_FOUND: &str = "404 Not Found\n\nThe resource could not be found.\n\n   ";
/// The body of upstream's (WebOb's) 503 for `/ready`.
const UNAVAILABLE: &str = "503 Service Unavailable\n\nThe server is currently unavailable. \
Please try again at a later time.\n\n   ";

fn text(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
        body,
    )
        .into_response()
}

/// Answer for paths the web app does not know.
pub(super) async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, NOT_FOUND)
}

fn not_acceptable() -> Response {
    text(
        StatusCode::NOT_ACCEPTABLE,
        "406 Not Acceptable\n\nOffered: text/html, text/plain, application/json\n",
    )
}

fn format_of(headers: &HeaderMap) -> Option<Format> {
    wanted_format(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()))
}

/// A 200 with upstream's headers, or a 304 if the client's copy is current.
fn cached_response(
    headers: &HeaderMap,
    format: Format,
    made: SystemTime,
    body: String,
) -> Response {
    let last_modified = httpdate::fmt_http_date(made);
    if let Some(since) = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
    {
        // HTTP dates have whole seconds.
        if httpdate::parse_http_date(&last_modified).is_ok_and(|lm| lm <= since) {
            return StatusCode::NOT_MODIFIED.into_response();
        }
    }
    let content_type = match format {
        Format::Json => "application/json",
        Format::Pretty => "text/plain; charset=UTF-8",
    };
    let mut response = Response::new(Body::from(body));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=1, public"),
    );
    if let Ok(v) = HeaderValue::from_str(&last_modified) {
        h.insert(header::LAST_MODIFIED, v);
    }
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(made + EXPIRY)) {
        h.insert(header::EXPIRES, v);
    }
    response
}

/// `/ready`: 503 until every provider has started, then `OK`.
pub(super) async fn ready(State(state): State<Arc<WebState>>, headers: HeaderMap) -> Response {
    let Some(format) = format_of(&headers) else {
        return not_acceptable();
    };
    if !state.is_ready() {
        return text(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE);
    }
    cached_response(&headers, format, SystemTime::now(), "OK".to_owned())
}

/// `/healthz`: 200 while the process serves.
pub(super) async fn healthz() -> Response {
    text(StatusCode::OK, "OK")
}

/// `/metrics`: the Prometheus exposition.
pub(super) async fn metrics(State(state): State<Arc<WebState>>) -> Response {
    let census = match state.metrics.census(&*state.store).await {
        Ok(census) => census,
        Err(e) => {
            warn!(error = %e, "metrics: cannot read the store");
            return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
        }
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&census),
    )
        .into_response()
}

/// The status listings (`/node-list`, ...), JSON or text as the `Accept`
/// header decides, `fields=` selecting text columns, `node_id=` one node.
pub(super) async fn listing(
    State(state): State<Arc<WebState>>,
    uri: Uri,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let Some(format) = format_of(&headers) else {
        return not_acceptable();
    };
    let path = uri.path().to_owned();
    // WebOb's `params.get(k)`: the last value given.
    let param = |name: &str| {
        params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let key = if params.is_empty() {
        format!("{path}.{}", format.as_str())
    } else {
        let mut sorted = params.clone();
        sorted.sort();
        format!("{path}.{sorted:?}.{}", format.as_str())
    };
    let at = SystemTime::now();
    if let Some((made, body)) = state.cache().get(&key, at) {
        return cached_response(&headers, format, made, body);
    }
    let listing = match gather(state.store.as_ref(), &path, param("node_id")).await {
        Ok(Some(listing)) => listing,
        Ok(None) => return text(StatusCode::NOT_FOUND, NOT_FOUND),
        Err(e) => {
            warn!(path = %path, error = %e, "listing failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
        }
    };
    let body = match format {
        Format::Json => listing.to_json(),
        Format::Pretty => {
            let fields = status::parse_fields(param("fields"));
            let unknown = fields
                .as_deref()
                .map(|f| listing.unknown_fields(f))
                .unwrap_or_default();
            if !unknown.is_empty() {
                let message = format!(
                    "unknown field {} in fields=; the fields of {path} are: {}\n",
                    unknown.join(", "),
                    listing.json_keys.join(", ")
                );
                return (StatusCode::BAD_REQUEST, message).into_response();
            }
            listing.to_text(fields.as_deref(), now())
        }
    };
    state.cache().put(key, at, body.clone());
    cached_response(&headers, format, at, body)
}

/// Reads what the listing at `path` shows; `None` for an unknown path.
async fn gather(
    store: &dyn NodeStore,
    path: &str,
    node_id: Option<&str>,
) -> nodepool_core::Result<Option<Listing>> {
    let listing = match path {
        "/node-list" => {
            let nodes = match node_id.filter(|id| !id.is_empty()) {
                Some(id) => store.get_node(id).await?.into_iter().collect(),
                None => store.list_nodes().await?,
            };
            let locked = locked_nodes(store, nodes.iter().map(|n| n.id.clone()).collect()).await;
            status::node_list(&nodes, &locked, now())
        }
        "/request-list" => status::request_list(&store.list_requests().await?),
        "/label-list" => status::label_list(&store.list_components(POOL).await?),
        "/image-list" => {
            let mut uploads = Vec::new();
            for image in store.list_images().await? {
                for build in store.list_builds(&image).await? {
                    uploads.extend(store.list_uploads(&image, &build.id).await?);
                }
            }
            status::image_list(&uploads)
        }
        "/dib-image-list" => {
            let mut builds = Vec::new();
            let mut paused = HashSet::new();
            for image in store.list_images().await? {
                if store.image_paused(&image).await? {
                    paused.insert(image.clone());
                }
                builds.extend(store.list_builds(&image).await?);
            }
            status::dib_image_list(&builds, &paused)
        }
        "/image-status" => {
            let mut images = Vec::new();
            for image in store.list_images().await? {
                let build_request = if store.build_requested(&image).await? {
                    // Building once a builder holds the image's build lock.
                    let target = LockTarget::ImageBuilds(image.clone());
                    let building = !store.lock_contenders(&target).await?.is_empty();
                    Some(BuildRequestStatus {
                        pending: !building,
                        requested_at: None,
                    })
                } else {
                    None
                };
                images.push(ImageStatus {
                    paused: store.image_paused(&image).await?,
                    image,
                    build_request,
                });
            }
            status::image_status(&images)
        }
        _ => return Ok(None),
    };
    Ok(Some(listing))
}
