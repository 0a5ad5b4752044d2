//! The listings compared with what upstream's status.py prints for the same
//! records (tests/upstream.rs, made by tests/gen_upstream.py).

mod upstream;

use std::collections::HashSet;

use super::*;
use crate::model::json::{JsonObject, JsonValue};
use crate::model::{
    BuildState, Component, ImageBuild, ImageUpload, Node, NodeRequest, NodeState, RequestState,
    UploadState, POOL,
};

/// `time.time()` in the generator.
const NOW: f64 = 1_700_000_000.0;

fn nodes() -> Vec<Node> {
    let mut n1 = Node::new(NodeState::Ready);
    n1.id = "0000000001".into();
    n1.state_time = Some(NOW - 3723.9);
    n1.provider = Some("fake-provider".into());
    n1.labels = vec!["ubuntu-noble".into()];
    n1.external_id = Some("srv-1".into());
    n1.public_ipv4 = Some("203.0.113.5".into());
    n1.public_ipv6 = Some("2001:db8::5".into());
    n1.pool = Some("main".into());
    n1.hostname = Some("np0000000001".into());
    n1.private_ipv4 = Some("10.0.0.5".into());
    n1.az = Some("az1".into());
    n1.username = Some("zuul".into());
    n1.launcher = Some("host-1234".into());

    let mut n2 = Node::new(NodeState::InUse);
    n2.id = "0000000002".into();
    n2.state_time = Some(NOW - 90061.0);
    n2.provider = Some("fake-provider".into());
    n2.labels = vec!["ubuntu-noble".into(), "small".into()];
    n2.allocated_to = Some("100-0000000007".into());
    n2.comment = Some("it's held".into());
    let mut data = JsonObject::new();
    data.insert("zone", "b");
    data.insert("n", 1_i64);
    data.insert("ok", true);
    data.insert("x", JsonValue::Null);
    n2.driver_data = Some(JsonValue::Object(data));
    n2.hold_job = Some("job".into());
    n2.connection_port = 2222;
    n2.username = Some("zuul".into());
    vec![n1, n2]
}

fn locked_second() -> HashSet<String> {
    HashSet::from(["0000000002".to_owned()])
}

#[test]
fn node_list_text_without_detail_matches_upstream_cli() {
    let listing = node_list(&nodes(), &locked_second(), NOW);
    let fields = node_list_cli_fields(false);
    assert_eq!(
        listing.to_text(Some(&fields), NOW),
        upstream::NODE_LIST_DEFAULT
    );
}

#[test]
fn node_list_text_with_detail_shows_every_column_and_python_repr_of_driver_data() {
    let listing = node_list(&nodes(), &locked_second(), NOW);
    let fields = node_list_cli_fields(true);
    assert_eq!(
        listing.to_text(Some(&fields), NOW),
        upstream::NODE_LIST_DETAIL
    );
    let none: Option<&[&str]> = None;
    assert_eq!(listing.to_text(none, NOW), upstream::NODE_LIST_DETAIL);
}

#[test]
fn node_list_json_carries_formatted_age_and_lists() {
    let listing = node_list(&nodes(), &locked_second(), NOW);
    assert_eq!(listing.to_json(), upstream::NODE_LIST_JSON);
}

#[test]
fn fields_select_columns_in_listing_order_and_ignore_unknown_names() {
    let listing = node_list(&nodes(), &locked_second(), NOW);
    let fields = parse_fields(Some("state,id,bogus"));
    assert_eq!(
        listing.to_text(fields.as_deref(), NOW),
        upstream::NODE_LIST_STATE_ID
    );
}

#[test]
fn fields_do_not_change_json_as_upstream_ignores_them() {
    let listing = node_list(&nodes(), &locked_second(), NOW);
    assert_eq!(listing.to_json(), upstream::NODE_LIST_JSON);
    assert_eq!(listing.objects()[0].len(), NODE_LIST_COLUMNS.len());
}

#[test]
fn empty_fields_value_means_all_columns() {
    assert_eq!(parse_fields(Some("")), None);
    assert_eq!(parse_fields(None), None);
    assert_eq!(
        parse_fields(Some("id,age")),
        Some(vec!["id".to_owned(), "age".to_owned()])
    );
}

#[test]
fn wide_characters_multiline_cells_and_future_times_draw_as_upstream() {
    let mut node = Node::new(NodeState::Ready);
    node.id = "0000000003".into();
    node.state_time = Some(NOW + 90.0);
    node.labels = vec!["日本".into()];
    node.comment = Some("line one\nline two".into());
    node.username = None;
    let listing = node_list(&[node], &HashSet::new(), NOW);
    let fields = ["id", "label", "age", "comment"];
    assert_eq!(listing.to_text(Some(&fields), NOW), upstream::WIDE_TEXT);
    assert_eq!(listing.to_json(), upstream::WIDE_JSON);
}

#[test]
fn node_without_state_time_has_null_age() {
    let node = Node {
        id: "0000000009".into(),
        ..Node::default()
    };
    let listing = node_list(&[node], &HashSet::new(), NOW);
    assert_eq!(listing.rows[0][7], JsonValue::Null);
    assert!(listing.to_json().contains("\"age\": null"));
}

fn requests() -> Vec<NodeRequest> {
    let mut r1 = NodeRequest::new(["ubuntu-noble", "small"]);
    r1.id = "100-0000000007".into();
    r1.state = Some(RequestState::Fulfilled);
    r1.requestor = Some("zuul-scheduler".into());
    r1.nodes = vec!["0000000002".into()];
    r1.declined_by = vec!["host-1234-fake-provider-main".into()];
    r1.event_id = Some("ev1".into());
    r1.relative_priority = 3;
    let mut r2 = NodeRequest::new(["big"]);
    r2.id = "200-0000000009".into();
    vec![r1, r2]
}

#[test]
fn request_list_text_and_json_match_upstream() {
    let listing = request_list(&requests());
    let none: Option<&[&str]> = None;
    assert_eq!(listing.to_text(none, NOW), upstream::REQUEST_LIST);
    assert_eq!(listing.to_json(), upstream::REQUEST_LIST_JSON);
}

#[test]
fn empty_listing_draws_header_and_closing_rule_and_json_empty_list() {
    let listing = request_list(&[]);
    let none: Option<&[&str]> = None;
    assert_eq!(listing.to_text(none, NOW), upstream::EMPTY_REQUEST_LIST);
    assert_eq!(listing.to_json(), "[]");
}

#[test]
fn dib_image_list_shows_paused_images_and_integer_ages() {
    let mut b1 = ImageBuild::new("ubuntu", BuildState::Ready);
    b1.id = "5d3f".into();
    b1.state_time = Some(NOW - 600.5);
    b1.builder = Some("builder-1".into());
    b1.formats = vec!["qcow2".into(), "raw".into()];
    let mut b2 = ImageBuild::new("debian", BuildState::Building);
    b2.id = "9a9a".into();
    b2.state_time = Some(NOW - 5.0);
    b2.builder = Some("builder-1".into());
    let paused = HashSet::from(["debian".to_owned()]);
    let listing = dib_image_list(&[b1, b2], &paused);
    let none: Option<&[&str]> = None;
    assert_eq!(listing.to_text(none, NOW), upstream::DIB_IMAGE_LIST);
    assert_eq!(listing.to_json(), upstream::DIB_IMAGE_LIST_JSON);
}

fn uploads() -> Vec<ImageUpload> {
    let mut u1 = ImageUpload {
        id: "0000000001".into(),
        build_id: "5d3f".into(),
        provider_name: "fake-provider".into(),
        image_name: "ubuntu".into(),
        ..ImageUpload::default()
    };
    u1.state = Some(UploadState::Ready);
    u1.state_time = Some(NOW - 86400.0);
    u1.external_name = Some("ubuntu-1700".into());
    u1.external_id = Some("img-1".into());
    let mut u2 = ImageUpload {
        id: "0000000002".into(),
        build_id: "5d3f".into(),
        provider_name: "other".into(),
        image_name: "ubuntu".into(),
        ..ImageUpload::default()
    };
    u2.state = Some(UploadState::Uploading);
    u2.state_time = Some(NOW - 1.0);
    vec![u1, u2]
}

#[test]
fn image_list_text_and_json_match_upstream() {
    let listing = image_list(&uploads());
    let none: Option<&[&str]> = None;
    assert_eq!(listing.to_text(none, NOW), upstream::IMAGE_LIST);
    assert_eq!(listing.to_json(), upstream::IMAGE_LIST_JSON);
}

#[test]
fn image_status_shows_pause_and_build_requests() {
    let images = vec![
        ImageStatus {
            image: "debian".into(),
            paused: true,
            build_request: None,
        },
        ImageStatus {
            image: "ubuntu".into(),
            paused: false,
            build_request: Some(BuildRequestStatus {
                pending: true,
                requested_at: Some(NOW - 30.0),
            }),
        },
        ImageStatus {
            image: "fedora".into(),
            paused: false,
            build_request: Some(BuildRequestStatus {
                pending: false,
                requested_at: Some(NOW - 7200.0),
            }),
        },
    ];
    let listing = image_status(&images);
    let none: Option<&[&str]> = None;
    assert_eq!(listing.to_text(none, NOW), upstream::IMAGE_STATUS);
    assert_eq!(listing.to_json(), upstream::IMAGE_STATUS_JSON);
}

fn pool(labels: &[&str]) -> Component {
    let mut pool = Component::new(POOL, "host");
    pool.supported_labels = Some(labels.iter().map(|l| l.to_string()).collect());
    pool
}

#[test]
fn label_list_shows_each_supported_label_once() {
    let listing = label_list(&[pool(&["small"]), pool(&["small"])]);
    let none: Option<&[&str]> = None;
    assert_eq!(listing.to_text(none, NOW), upstream::LABEL_LIST);
    assert_eq!(listing.to_json(), upstream::LABEL_LIST_JSON);
}

#[test]
fn label_list_sorts_labels_of_all_pools() {
    let listing = label_list(&[pool(&["zeta", "alpha"]), pool(&["mid"])]);
    assert_eq!(
        listing.rows,
        vec![
            vec![JsonValue::from("alpha")],
            vec![JsonValue::from("mid")],
            vec![JsonValue::from("zeta")],
        ]
    );
}

#[test]
fn info_lists_provider_uploads_by_build_and_its_nodes() {
    // Expected text printed by upstream's `nodepool info` code (PrettyTable
    // 0.7.2) on the same data.
    let expected = "ZooKeeper data for provider fake-provider\n\nImage data:\n\
+------------+----------+-----------------------+\n\
| Image Name | Build ID | Upload IDs            |\n\
+------------+----------+-----------------------+\n\
| debian     | 9a9a     | 0000000004            |\n\
| ubuntu     | 1a1a     | 0000000002            |\n\
| ubuntu     | 5d3f     | 0000000001,0000000003 |\n\
+------------+----------+-----------------------+\n\nNodes:\n\
+------------+-----------+\n\
| ID         | Server ID |\n\
+------------+-----------+\n\
| 0000000001 | srv-1     |\n\
| 0000000004 | None      |\n\
+------------+-----------+\n";
    let upload = |image: &str, build: &str, provider: &str, id: &str| ImageUpload {
        id: id.into(),
        build_id: build.into(),
        provider_name: provider.into(),
        image_name: image.into(),
        ..ImageUpload::default()
    };
    let uploads = vec![
        upload("ubuntu", "5d3f", "fake-provider", "0000000003"),
        upload("ubuntu", "5d3f", "fake-provider", "0000000001"),
        upload("ubuntu", "1a1a", "fake-provider", "0000000002"),
        upload("debian", "9a9a", "fake-provider", "0000000004"),
        upload("debian", "9a9a", "elsewhere", "0000000005"),
    ];
    let n1 = Node {
        id: "0000000001".into(),
        provider: Some("fake-provider".into()),
        external_id: Some("srv-1".into()),
        ..Node::default()
    };
    let n4 = Node {
        id: "0000000004".into(),
        provider: Some("fake-provider".into()),
        ..Node::default()
    };
    let other = Node {
        id: "0000000005".into(),
        provider: Some("elsewhere".into()),
        ..Node::default()
    };
    assert_eq!(
        info_text("fake-provider", &uploads, &[n1, n4, other]),
        expected
    );
}

#[test]
fn age_formats_like_upstream_including_negative_days() {
    // Values printed by upstream's status.age() for these offsets.
    let cases = [
        (0.0, "00:00:00:00"),
        (59.99, "00:00:00:59"),
        (61.0, "00:00:01:01"),
        (3600.0 * 24.0 * 123.0 + 1.0, "123:00:00:01"),
        (-1.0, "-1:23:59:59"),
        (-90.0, "-1:23:58:30"),
        (-86401.0, "-2:23:59:59"),
    ];
    for (dt, expected) in cases {
        assert_eq!(age(NOW - dt, NOW), expected, "dt={dt}");
    }
}

#[test]
fn python_repr_quotes_like_python() {
    use super::pyrepr::{python_repr, string_repr};
    assert_eq!(string_repr("plain"), "'plain'");
    assert_eq!(string_repr("it's"), "\"it's\"");
    assert_eq!(string_repr("both ' and \""), "'both \\' and \"'");
    assert_eq!(string_repr("tab\tnl\n\u{1}"), "'tab\\tnl\\n\\x01'");
    assert_eq!(string_repr("日本"), "'日本'");
    let value = JsonValue::Array(vec![
        JsonValue::Float(1.5),
        JsonValue::Float(f64::INFINITY),
        JsonValue::Float(1e16),
        JsonValue::Null,
    ]);
    assert_eq!(python_repr(&value), "[1.5, inf, 1e+16, None]");
}

#[test]
fn table_with_no_columns_draws_as_prettytable() {
    // str(PrettyTable([])) with align 'l', and with one empty row.
    assert_eq!(pretty_table(&[], &[]), "++\n||\n++\n++");
    assert_eq!(pretty_table(&[], &[vec![]]), "++\n||\n++\n\n++");
}

#[test]
fn a_port_carrying_connection_details_is_redacted_as_upstream() {
    let mut node = Node::new(NodeState::Ready);
    node.id = "0000000009".into();
    node.connection_details = Some(crate::model::ConnectionDetails(
        [("token".to_string(), JsonValue::from("s3cret"))]
            .into_iter()
            .collect(),
    ));
    assert!(!format!("{node:?}").contains("s3cret"), "no token in Debug");
    let listing = node_list(&[node], &HashSet::new(), NOW);
    let json = listing.to_json();
    assert!(json.contains(r#""connection_port": "redacted""#), "{json}");
    assert!(!json.contains("s3cret"), "{json}");
}
