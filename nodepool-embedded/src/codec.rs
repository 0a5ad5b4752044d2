//! Record encoding (the JSON upstream writes to ZooKeeper) and the upstream
//! paths used to name records in errors.

use nodepool_core::model::{Component, ImageBuild, ImageUpload, Node, NodeRequest};
use nodepool_core::{Error, Result};

/// `/nodepool/nodes/<id>`
pub(crate) fn node_path(id: &str) -> String {
    format!("/nodepool/nodes/{id}")
}

/// `/nodepool/requests/<id>`
pub(crate) fn request_path(id: &str) -> String {
    format!("/nodepool/requests/{id}")
}

/// `/nodepool/images/<image>/builds/<build>`
pub(crate) fn build_path(image: &str, build: &str) -> String {
    format!("/nodepool/images/{image}/builds/{build}")
}

/// `/nodepool/images/<image>/builds/<build>/providers/<provider>/images/<id>`
pub(crate) fn upload_path(image: &str, build: &str, provider: &str, id: &str) -> String {
    format!("/nodepool/images/{image}/builds/{build}/providers/{provider}/images/{id}")
}

/// `/nodepool/components/<kind>/<name>`
pub(crate) fn component_path(kind: &str, name: &str) -> String {
    format!("/nodepool/components/{kind}/{name}")
}

fn corrupt(path: String, message: impl ToString) -> Error {
    Error::Corrupt {
        path,
        message: message.to_string(),
    }
}

fn bytes_to_string(bytes: Vec<u8>) -> String {
    // The model writes ASCII-only JSON (Python's ensure_ascii); anything
    // else is kept lossily rather than refused.
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A node's JSON.
pub(crate) fn encode_node(node: &Node) -> String {
    bytes_to_string(node.to_json())
}

/// A node from its row.
pub(crate) fn decode_node(id: &str, data: &str) -> Result<Node> {
    Node::from_json(id, data.as_bytes()).map_err(|e| corrupt(node_path(id), e))
}

/// A request's JSON.
pub(crate) fn encode_request(request: &NodeRequest) -> String {
    bytes_to_string(request.to_json())
}

/// A request from its row.
pub(crate) fn decode_request(id: &str, data: &str) -> Result<NodeRequest> {
    NodeRequest::from_json(id, data.as_bytes()).map_err(|e| corrupt(request_path(id), e))
}

/// A build's JSON.
pub(crate) fn encode_build(build: &ImageBuild) -> String {
    bytes_to_string(build.to_json())
}

/// A build from its row.
pub(crate) fn decode_build(image: &str, id: &str, data: &str) -> Result<ImageBuild> {
    ImageBuild::from_json_at(image, id, data.as_bytes())
        .map_err(|e| corrupt(build_path(image, id), e))
}

/// An upload's JSON.
pub(crate) fn encode_upload(upload: &ImageUpload) -> String {
    bytes_to_string(upload.to_json())
}

/// An upload from its row, with its location filled in.
pub(crate) fn decode_upload(
    image: &str,
    build: &str,
    provider: &str,
    id: &str,
    data: &str,
) -> Result<ImageUpload> {
    ImageUpload::from_json_at(image, build, provider, id, data.as_bytes())
        .map_err(|e| corrupt(upload_path(image, build, provider, id), e))
}

/// A component's JSON.
pub(crate) fn encode_component(component: &Component) -> String {
    bytes_to_string(component.to_json())
}

/// A component from its row.
pub(crate) fn decode_component(kind: &str, name: &str, data: &str) -> Result<Component> {
    Component::from_json_at(kind, name, data.as_bytes())
        .map_err(|e| corrupt(component_path(kind, name), e))
}

/// Listings of at most this many rows are decoded on the calling task;
/// longer ones on the blocking pool, so a big listing neither holds the
/// worker thread (and every write behind it) nor an async runtime thread.
const DECODE_INLINE_MAX: usize = 64;

/// Decodes listed rows, logging and skipping those that fail.
pub(crate) async fn decode_listing<K, T>(
    rows: Vec<(K, String)>,
    decode: impl Fn(&K, &str) -> Result<T> + Send + 'static,
) -> Result<Vec<T>>
where
    K: Send + 'static,
    T: Send + 'static,
{
    let small = rows.len() <= DECODE_INLINE_MAX;
    // Each row's text is freed once decoded: the raw listing and the decoded
    // one are not both held whole.
    let run = move || {
        rows.into_iter()
            .filter_map(|(key, data)| match decode(&key, &data) {
                Ok(value) => Some(value),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping a record that cannot be decoded");
                    None
                }
            })
            .collect::<Vec<T>>()
    };
    if small {
        return Ok(run());
    }
    tokio::task::spawn_blocking(run)
        .await
        .map_err(|e| Error::Backend {
            backend: "SQLite",
            kind: nodepool_core::error::ErrorKind::Transient,
            message: format!("decoding a listing failed: {e}"),
            source: Some(Box::new(e)),
        })
}
