//! The listings themselves: which columns, and which value in each.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::{age, Cell, Listing};
use crate::model::json::JsonValue;
use crate::model::{Component, ImageBuild, ImageUpload, Node, NodeRequest};

/// The columns of `node-list`, as upstream's `node_list` names them.
pub const NODE_LIST_COLUMNS: &[(&str, &str)] = &[
    ("id", "ID"),
    ("provider", "Provider"),
    ("label", "Label"),
    ("server_id", "Server ID"),
    ("public_ipv4", "Public IPv4"),
    ("ipv6", "IPv6"),
    ("state", "State"),
    ("age", "Age"),
    ("locked", "Locked"),
    ("pool", "Pool"),
    ("hostname", "Hostname"),
    ("private_ipv4", "Private IPv4"),
    ("AZ", "AZ"),
    ("username", "Username"),
    ("connection_port", "Port"),
    ("launcher", "Launcher"),
    ("allocated_to", "Allocated To"),
    ("hold_job", "Hold Job"),
    ("comment", "Comment"),
    ("user_data", "User Data"),
    ("driver_data", "Driver Data"),
];

/// The fields `nodepool list` shows without `--detail`.
pub const NODE_LIST_FIELDS: &[&str] = &[
    "id",
    "provider",
    "label",
    "server_id",
    "public_ipv4",
    "ipv6",
    "state",
    "age",
    "locked",
];

/// The fields `nodepool list --detail` adds.
pub const NODE_LIST_DETAIL_FIELDS: &[&str] = &[
    "pool",
    "hostname",
    "private_ipv4",
    "AZ",
    "username",
    "connection_port",
    "launcher",
    "allocated_to",
    "hold_job",
    "comment",
    "user_data",
    "driver_data",
];

/// The fields `nodepool list` passes to the table, with or without
/// `--detail`.
pub fn node_list_cli_fields(detail: bool) -> Vec<&'static str> {
    let mut fields = NODE_LIST_FIELDS.to_vec();
    if detail {
        fields.extend_from_slice(NODE_LIST_DETAIL_FIELDS);
    }
    fields
}

fn opt_str(value: Option<&str>) -> Cell {
    value.map_or(JsonValue::Null, JsonValue::from)
}

fn str_list(values: &[String]) -> Cell {
    JsonValue::Array(values.iter().map(|v| JsonValue::from(v.as_str())).collect())
}

/// `int(state_time)`, as upstream puts it in the image listings (`None`
/// where upstream would fail).
fn int_time(time: Option<f64>) -> Cell {
    match time {
        Some(t) if t.is_finite() => JsonValue::Int(t.trunc() as i128),
        _ => JsonValue::Null,
    }
}

/// `node-list` (`nodepool list`): one row per node, in the order given.
/// `locked` holds the ids of nodes whose lock has contenders; `now` is the
/// time the ages are measured from (the JSON carries the age already
/// formatted, as upstream's does). A node without `state_time` gets a
/// `null` age (upstream fails on it).
pub fn node_list(nodes: &[Node], locked: &HashSet<String>, now: f64) -> Listing {
    let mut listing = Listing::new(NODE_LIST_COLUMNS);
    for node in nodes {
        let locked = if locked.contains(&node.id) {
            "locked"
        } else {
            "unlocked"
        };
        listing.rows.push(vec![
            JsonValue::from(node.id.as_str()),
            opt_str(node.provider.as_deref()),
            str_list(&node.labels),
            opt_str(node.external_id.as_deref()),
            opt_str(node.public_ipv4.as_deref()),
            opt_str(node.public_ipv6.as_deref()),
            opt_str(node.state.map(|s| s.as_str())),
            node.state_time
                .map_or(JsonValue::Null, |t| JsonValue::from(age(t, now))),
            JsonValue::from(locked),
            opt_str(node.pool.as_deref()),
            opt_str(node.hostname.as_deref()),
            opt_str(node.private_ipv4.as_deref()),
            opt_str(node.az.as_deref()),
            opt_str(node.username.as_deref()),
            // Upstream shows a port that carries connection details (a
            // kubernetes node's token) as "redacted".
            if node.connection_details.is_some() {
                JsonValue::from("redacted")
            } else {
                JsonValue::from(node.connection_port)
            },
            opt_str(node.launcher.as_deref()),
            opt_str(node.allocated_to.as_deref()),
            opt_str(node.hold_job.as_deref()),
            opt_str(node.comment.as_deref()),
            node.user_data.clone().unwrap_or(JsonValue::Null),
            node.driver_data.clone().unwrap_or(JsonValue::Null),
        ]);
    }
    listing
}

/// The columns of `request-list`.
pub const REQUEST_LIST_COLUMNS: &[(&str, &str)] = &[
    ("id", "Request ID"),
    ("relative_priority", "Priority"),
    ("state", "State"),
    ("requestor", "Requestor"),
    ("node_types", "Node Types"),
    ("nodes", "Nodes"),
    ("declined_by", "Declined By"),
    ("event_id", "Event ID"),
];

/// `request-list`: one row per request, in the order given.
pub fn request_list(requests: &[NodeRequest]) -> Listing {
    let mut listing = Listing::new(REQUEST_LIST_COLUMNS);
    for request in requests {
        listing.rows.push(vec![
            JsonValue::from(request.id.as_str()),
            JsonValue::from(request.relative_priority),
            opt_str(request.state.map(|s| s.as_str())),
            opt_str(request.requestor.as_deref()),
            str_list(&request.node_types),
            str_list(&request.nodes),
            str_list(&request.declined_by),
            opt_str(request.event_id.as_deref()),
        ]);
    }
    listing
}

/// The columns of `label-list`.
pub const LABEL_LIST_COLUMNS: &[(&str, &str)] = &[("label", "Label")];

/// `label-list`: every label some registered pool supports, once. Upstream
/// walks a Python set (no stable order); this sorts by name.
pub fn label_list(pools: &[Component]) -> Listing {
    let mut listing = Listing::new(LABEL_LIST_COLUMNS);
    let labels: BTreeSet<&str> = pools
        .iter()
        .flat_map(|p| p.supported_labels.iter().flatten())
        .map(String::as_str)
        .collect();
    for label in labels {
        listing.rows.push(vec![JsonValue::from(label)]);
    }
    listing
}

/// The columns of `image-list`.
pub const IMAGE_LIST_COLUMNS: &[(&str, &str)] = &[
    ("id", "Build ID"),
    ("upload_id", "Upload ID"),
    ("provider", "Provider"),
    ("image", "Image"),
    ("external_name", "Provider Image Name"),
    ("external_id", "Provider Image ID"),
    ("state", "State"),
    ("age", "Age"),
];

/// `image-list`: one row per upload, in the order given; `age` is the
/// integer `state_time` (the text table turns it into an age).
///
/// When an upload carries a validation outcome (ours, see doc/images.md), a
/// last column, `validation`, says `passed`, or `failed: <reason>` and the
/// hook's log file; without one the listing is upstream's.
pub fn image_list(uploads: &[ImageUpload]) -> Listing {
    let mut listing = Listing::new(IMAGE_LIST_COLUMNS);
    let validated = uploads.iter().any(|u| u.validation().is_some());
    if validated {
        listing.json_keys.push("validation");
        listing.headers.push("Validation");
    }
    for upload in uploads {
        let mut row = vec![
            JsonValue::from(upload.build_id.as_str()),
            JsonValue::from(upload.id.as_str()),
            JsonValue::from(upload.provider_name.as_str()),
            JsonValue::from(upload.image_name.as_str()),
            opt_str(upload.external_name.as_deref()),
            opt_str(upload.external_id.as_deref()),
            opt_str(upload.state.map(|s| s.as_str())),
            int_time(upload.state_time),
        ];
        if validated {
            row.push(JsonValue::from(
                upload
                    .validation()
                    .map(|v| {
                        let mut text = v.result.clone();
                        if let Some(reason) = &v.reason {
                            text.push_str(&format!(": {reason}"));
                        }
                        if let Some(log) = &v.log {
                            text.push_str(&format!(" (log: {log})"));
                        }
                        text
                    })
                    .unwrap_or_default(),
            ));
        }
        listing.rows.push(row);
    }
    listing
}

/// The columns of `dib-image-list`.
pub const DIB_IMAGE_LIST_COLUMNS: &[(&str, &str)] = &[
    ("id", "ID"),
    ("image", "Image"),
    ("builder", "Builder"),
    ("formats", "Formats"),
    ("state", "State"),
    ("age", "Age"),
];

/// `dib-image-list`: one row per build, in the order given. The id is
/// `<image>-<build id>`; the state reads `paused` for builds of an image in
/// `paused_images`; `age` is the integer `state_time`.
pub fn dib_image_list(builds: &[ImageBuild], paused_images: &HashSet<String>) -> Listing {
    let mut listing = Listing::new(DIB_IMAGE_LIST_COLUMNS);
    for build in builds {
        let state = if paused_images.contains(&build.image_name) {
            JsonValue::from("paused")
        } else {
            opt_str(build.state.map(|s| s.as_str()))
        };
        listing.rows.push(vec![
            JsonValue::from(format!("{}-{}", build.image_name, build.id)),
            JsonValue::from(build.image_name.as_str()),
            opt_str(build.builder.as_deref()),
            str_list(&build.formats),
            state,
            int_time(build.state_time),
        ]);
    }
    listing
}

/// A manual build request (`nodepool image-build`) of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildRequestStatus {
    /// Not yet picked up by a builder (`pending`), or being built
    /// (`building`).
    pub pending: bool,
    /// When it was made, if the store knows (upstream shows the request
    /// znode's creation time).
    pub requested_at: Option<f64>,
}

/// What `image-status` shows of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageStatus {
    /// Image name.
    pub image: String,
    /// Whether it is paused.
    pub paused: bool,
    /// Its build request, if one is outstanding.
    pub build_request: Option<BuildRequestStatus>,
}

/// The columns of `image-status`.
pub const IMAGE_STATUS_COLUMNS: &[(&str, &str)] = &[
    ("image", "Image"),
    ("paused", "Paused"),
    ("build_request", "Build Request"),
    ("build_request_age", "Build Request Age"),
];

/// `image-status`: one row per image, in the order given.
pub fn image_status(images: &[ImageStatus]) -> Listing {
    let mut listing = Listing::new(IMAGE_STATUS_COLUMNS);
    for image in images {
        let (request, requested_at) = match &image.build_request {
            Some(r) => (
                JsonValue::from(if r.pending { "pending" } else { "building" }),
                int_time(r.requested_at),
            ),
            None => (JsonValue::Null, JsonValue::Null),
        };
        listing.rows.push(vec![
            JsonValue::from(image.image.as_str()),
            JsonValue::Bool(image.paused),
            request,
            requested_at,
        ]);
    }
    listing
}

/// `nodepool info PROVIDER`, image part: one row per build that has
/// uploads to `provider` (sorted by image, then build), with its upload
/// ids sorted and joined by commas.
pub fn info_images(provider: &str, uploads: &[ImageUpload]) -> Listing {
    let mut listing = Listing::new(&[
        ("image", "Image Name"),
        ("build", "Build ID"),
        ("uploads", "Upload IDs"),
    ]);
    let mut by_build: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for upload in uploads.iter().filter(|u| u.provider_name == provider) {
        by_build
            .entry((upload.image_name.as_str(), upload.build_id.as_str()))
            .or_default()
            .push(upload.id.as_str());
    }
    for ((image, build), mut ids) in by_build {
        ids.sort_unstable();
        listing.rows.push(vec![
            JsonValue::from(image),
            JsonValue::from(build),
            JsonValue::from(ids.join(",")),
        ]);
    }
    listing
}

/// `nodepool info PROVIDER`, node part: the provider's nodes in the order
/// given. A node without a server id shows `None`, as upstream's table does.
pub fn info_nodes(provider: &str, nodes: &[Node]) -> Listing {
    let mut listing = Listing::new(&[("id", "ID"), ("server_id", "Server ID")]);
    for node in nodes
        .iter()
        .filter(|n| n.provider.as_deref() == Some(provider))
    {
        listing.rows.push(vec![
            JsonValue::from(node.id.as_str()),
            JsonValue::from(node.external_id.as_deref().unwrap_or("None")),
        ]);
    }
    listing
}

/// Everything `nodepool info PROVIDER` prints, final newline included.
pub fn info_text(provider: &str, uploads: &[ImageUpload], nodes: &[Node]) -> String {
    let images = info_images(provider, uploads);
    let nodes = info_nodes(provider, nodes);
    let none: Option<&[&str]> = None;
    format!(
        "ZooKeeper data for provider {provider}\n\nImage data:\n{}\n\nNodes:\n{}\n",
        images.to_text(none, 0.0),
        nodes.to_text(none, 0.0)
    )
}
