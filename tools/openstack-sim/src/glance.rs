//! Glance v2 images: the image schema (accepted `disk_format`s), create,
//! direct upload (`PUT .../file`), interoperable
//! import (`PUT .../stage` + `POST .../import` with `glance-direct`),
//! JSON-patch updates, list with filters and pagination, show and delete.

use std::collections::{BTreeMap, HashMap};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use futures::StreamExt;
use serde_json::{json, Map, Value};

use crate::state::{new_id, now, Image};
use crate::{base_url, error_response, iso8601, Service, SimState};

/// Attributes Glance owns; anything else is an additional property.
const CORE: &[&str] = &[
    "id",
    "name",
    "status",
    "disk_format",
    "container_format",
    "visibility",
    "size",
    "virtual_size",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "created_at",
    "updated_at",
    "self",
    "file",
    "schema",
    "tags",
    "min_disk",
    "min_ram",
    "protected",
    "owner",
    "os_hidden",
    "direct_url",
    "locations",
    "stores",
];
/// Glance's default `container_formats`.
const CONTAINER_FORMATS: &[&str] = &[
    "ami",
    "ari",
    "aki",
    "bare",
    "ovf",
    "ova",
    "docker",
    "compressed",
];

pub(crate) fn routes() -> Router<SimState> {
    Router::new()
        .route("/", get(versions))
        .route("/versions", get(versions))
        .route("/v2/info/import", get(import_info))
        .route("/v2/schemas/image", get(image_schema))
        .route("/v2/images", get(list_images).post(create_image))
        .route(
            "/v2/images/{id}",
            get(show_image).delete(delete_image).patch(patch_image),
        )
        .route("/v2/images/{id}/file", put(upload))
        .route("/v2/images/{id}/stage", put(stage))
        .route("/v2/images/{id}/import", post(import))
}

fn err(status: StatusCode, message: &str) -> Response {
    error_response(Service::Image, status, message)
}

fn not_found(id: &str) -> Response {
    err(
        StatusCode::NOT_FOUND,
        &format!("No image found with ID {id}"),
    )
}

async fn versions(headers: HeaderMap) -> Response {
    let base = base_url(&headers);
    crate::json(
        StatusCode::OK,
        json!({"versions": [{"id": "v2.16", "status": "CURRENT",
            "links": [{"rel": "self", "href": format!("{base}/image/v2/")}]}]}),
    )
}

async fn import_info() -> Response {
    crate::json(
        StatusCode::OK,
        json!({"import-methods": {"description": "Import methods available.", "type": "array",
            "value": ["glance-direct", "web-download"]}}),
    )
}

/// The part of Glance's image schema clients read: the enums of
/// `disk_format` and `container_format` (with `null`, as Glance lists
/// them), and that additional properties are strings.
async fn image_schema(State(state): State<SimState>) -> Response {
    let disk: Vec<Value> = std::iter::once(Value::Null)
        .chain(
            state
                .read(|c| c.config.disk_formats.clone())
                .into_iter()
                .map(Value::String),
        )
        .collect();
    let container: Vec<Value> = std::iter::once(Value::Null)
        .chain(CONTAINER_FORMATS.iter().map(|f| json!(f)))
        .collect();
    crate::json(
        StatusCode::OK,
        json!({
            "name": "image",
            "additionalProperties": {"type": "string"},
            "properties": {
                "id": {"type": "string", "description": "An identifier for the image"},
                "name": {"type": ["null", "string"], "maxLength": 255},
                "disk_format": {"type": ["null", "string"], "enum": disk,
                    "description": "Format of the disk"},
                "container_format": {"type": ["null", "string"], "enum": container,
                    "description": "Format of the container"},
                "visibility": {"type": "string",
                    "enum": ["community", "public", "private", "shared"]},
                "min_disk": {"type": "integer"},
                "min_ram": {"type": "integer"},
                "protected": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 255}},
            },
            "links": [{"rel": "self", "href": "{self}"}, {"rel": "enclosure", "href": "{file}"},
                {"rel": "describedby", "href": "{schema}"}],
        }),
    )
}

fn view(i: &Image) -> Value {
    let mut v = json!({
        "id": i.id, "name": i.name, "status": i.status, "disk_format": i.disk_format,
        "container_format": i.container_format, "visibility": i.visibility, "size": i.size,
        "virtual_size": null, "checksum": null, "os_hash_algo": null, "os_hash_value": null,
        "created_at": iso8601(i.created, false), "updated_at": iso8601(i.updated, false),
        "self": format!("/v2/images/{}", i.id), "file": format!("/v2/images/{}/file", i.id),
        "schema": "/v2/schemas/image", "tags": [], "min_disk": i.min_disk, "min_ram": i.min_ram,
        "protected": false, "owner": "p-demo", "os_hidden": false,
    });
    if let Value::Object(map) = &mut v {
        for (k, val) in &i.properties {
            map.insert(k.clone(), val.clone());
        }
    }
    v
}

/// Additional properties must be strings (Glance's image schema).
// The error is the answer to send; handlers return it at once.
#[allow(clippy::result_large_err)]
fn properties(body: &Map<String, Value>) -> Result<BTreeMap<String, Value>, Response> {
    let mut out = BTreeMap::new();
    for (k, v) in body {
        if CORE.contains(&k.as_str()) {
            continue;
        }
        if !v.is_string() {
            return Err(err(
                StatusCode::BAD_REQUEST,
                &format!("Provided object does not match schema 'image': {v} is not of type 'string' (property {k})"),
            ));
        }
        out.insert(k.clone(), v.clone());
    }
    Ok(out)
}

async fn create_image(State(state): State<SimState>, body: axum::body::Bytes) -> Response {
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(&body) else {
        return err(StatusCode::BAD_REQUEST, "Malformed JSON");
    };
    let props = match properties(&req) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let field = |k: &str| req.get(k).and_then(Value::as_str).map(str::to_string);
    let disk_formats = state.read(|c| c.config.disk_formats.clone());
    if let Some(f) = field("disk_format") {
        if !disk_formats.contains(&f) {
            return err(
                StatusCode::BAD_REQUEST,
                &format!("Invalid disk format '{f}' for image."),
            );
        }
    }
    if let Some(f) = field("container_format") {
        if !CONTAINER_FORMATS.contains(&f.as_str()) {
            return err(
                StatusCode::BAD_REQUEST,
                &format!("Invalid container format '{f}' for image."),
            );
        }
    }
    let mut sizes = [0u64; 2];
    for (slot, key) in sizes.iter_mut().zip(["min_disk", "min_ram"]) {
        match req.get(key) {
            None => {}
            Some(v) => match v.as_u64() {
                Some(n) => *slot = n,
                None => {
                    return err(
                        StatusCode::BAD_REQUEST,
                        &format!("Provided object does not match schema 'image': {v} is not of type 'integer' (property {key})"),
                    )
                }
            },
        }
    }
    let t = now();
    let image = Image {
        id: field("id").unwrap_or_else(new_id),
        name: field("name").unwrap_or_default(),
        status: "queued".to_string(),
        disk_format: field("disk_format"),
        container_format: field("container_format"),
        visibility: field("visibility").unwrap_or_else(|| "shared".to_string()),
        size: None,
        properties: props,
        created: t,
        updated: t,
        staged: None,
        min_disk: sizes[0],
        min_ram: sizes[1],
    };
    let v = view(&image);
    state.update(|c| c.images.insert(image.id.clone(), image));
    crate::json(StatusCode::CREATED, v)
}

async fn list_images(
    State(state): State<SimState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let _ = base_url(&headers);
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(25);
    let body = state.read(|c| {
        let mut images: Vec<&Image> = c.images.values().collect();
        images.sort_by(|a, b| b.created.total_cmp(&a.created).then(a.id.cmp(&b.id)));
        let mut iter = images.into_iter().filter(|i| {
            q.get("name").map_or(true, |n| &i.name == n)
                && q.get("status").map_or(true, |s| &i.status == s)
                && q.get("visibility")
                    .map_or(true, |v| v == "all" || &i.visibility == v)
        });
        if let Some(marker) = q.get("marker") {
            iter.by_ref().find(|i| &i.id == marker);
        }
        let page: Vec<&Image> = iter.by_ref().take(limit).collect();
        let more = iter.next().is_some();
        let mut body = json!({"images": page.iter().map(|i| view(i)).collect::<Vec<_>>(),
            "first": "/v2/images", "schema": "/v2/schemas/images"});
        if let (true, Some(last)) = (more, page.last()) {
            body["next"] = json!(format!("/v2/images?limit={limit}&marker={}", last.id));
        }
        body
    });
    crate::json(StatusCode::OK, body)
}

async fn show_image(State(state): State<SimState>, Path(id): Path<String>) -> Response {
    state.read(|c| match c.images.get(&id) {
        Some(i) => crate::json(StatusCode::OK, view(i)),
        None => not_found(&id),
    })
}

async fn delete_image(State(state): State<SimState>, Path(id): Path<String>) -> Response {
    state.update(|c| match c.images.remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => not_found(&id),
    })
}

async fn patch_image(
    State(state): State<SimState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Ok(Value::Array(ops)) = serde_json::from_slice::<Value>(&body) else {
        return err(StatusCode::BAD_REQUEST, "Malformed JSON patch");
    };
    state.update(|c| {
        let Some(image) = c.images.get_mut(&id) else {
            return not_found(&id);
        };
        for op in &ops {
            let path = op.get("path").and_then(Value::as_str).unwrap_or("");
            let key = path.trim_start_matches('/').to_string();
            match (op.get("op").and_then(Value::as_str), op.get("value")) {
                (Some("add" | "replace"), Some(v)) if key == "name" => {
                    image.name = v.as_str().unwrap_or_default().to_string();
                }
                (Some("add" | "replace"), Some(Value::String(v)))
                    if !CORE.contains(&key.as_str()) =>
                {
                    image.properties.insert(key, Value::String(v.clone()));
                }
                (Some("remove"), _) if !CORE.contains(&key.as_str()) => {
                    image.properties.remove(&key);
                }
                _ => {
                    return err(
                        StatusCode::FORBIDDEN,
                        &format!("Attribute '{key}' is read-only or the patch is invalid."),
                    )
                }
            }
        }
        image.updated = now();
        crate::json(StatusCode::OK, view(image))
    })
}

/// Read the whole request body, counting bytes.
async fn count(body: Body) -> Result<u64, Response> {
    let mut stream = body.into_data_stream();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| err(StatusCode::BAD_REQUEST, &format!("upload interrupted: {e}")))?;
        n += chunk.len() as u64;
    }
    Ok(n)
}

async fn upload(State(state): State<SimState>, Path(id): Path<String>, body: Body) -> Response {
    let ok = state.read(|c| c.images.get(&id).map(|i| i.status.clone()));
    match ok.as_deref() {
        None => return not_found(&id),
        Some("queued") => {}
        Some(_) => {
            return err(
                StatusCode::CONFLICT,
                "Image status transition from active to saving is not allowed",
            )
        }
    }
    let size = match count(body).await {
        Ok(n) => n,
        Err(resp) => return resp,
    };
    state.update(|c| match c.images.get_mut(&id) {
        Some(i) => {
            i.size = Some(size);
            i.status = "active".to_string();
            i.updated = now();
            StatusCode::NO_CONTENT.into_response()
        }
        None => not_found(&id),
    })
}

async fn stage(State(state): State<SimState>, Path(id): Path<String>, body: Body) -> Response {
    if state.read(|c| !c.images.contains_key(&id)) {
        return not_found(&id);
    }
    let size = match count(body).await {
        Ok(n) => n,
        Err(resp) => return resp,
    };
    state.update(|c| match c.images.get_mut(&id) {
        Some(i) => {
            i.staged = Some(size);
            i.status = "uploading".to_string();
            StatusCode::NO_CONTENT.into_response()
        }
        None => not_found(&id),
    })
}

async fn import(
    State(state): State<SimState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let method = req
        .get("method")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str);
    if method != Some("glance-direct") {
        return err(
            StatusCode::BAD_REQUEST,
            "Import method not supported by the simulator",
        );
    }
    state.update(|c| match c.images.get_mut(&id) {
        Some(i) => match i.staged.take() {
            Some(size) => {
                i.size = Some(size);
                i.status = "active".to_string();
                i.updated = now();
                StatusCode::ACCEPTED.into_response()
            }
            None => err(
                StatusCode::CONFLICT,
                "Image needs to be staged before an import",
            ),
        },
        None => not_found(&id),
    })
}
