//! Unit tests of the launcher's pure helpers.

use crate::config::PoolLabel;
use crate::model::NodeRequest;
use crate::provider::Resources;

use super::launch::metadata;
use super::nodes::{node_resources, resources_json};
use super::pool::priority_key;

fn request(id: &str, relative_priority: i64) -> NodeRequest {
    NodeRequest {
        id: id.to_string(),
        relative_priority,
        ..NodeRequest::default()
    }
}

#[test]
fn requests_sort_by_precedence_then_relative_priority_then_sequence() {
    let mut requests = [
        request("200-0000000001", 0),
        request("100-0000000004", 1),
        request("100-0000000003", 0),
        request("100-0000000002", 1),
        request("900-0000000000", -5),
    ];
    requests.sort_by_key(priority_key);
    let ids: Vec<&str> = requests.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "100-0000000003",
            "100-0000000002",
            "100-0000000004",
            "200-0000000001",
            "900-0000000000"
        ]
    );
}

#[test]
fn metadata_has_upstream_keys_and_groups() {
    let label = PoolLabel {
        name: "ubuntu".into(),
        cloud_image: Some("ubuntu-cloud".into()),
        ..PoolLabel::default()
    };
    let meta = metadata("fake-provider", "main", "0000000007", &label);
    assert_eq!(meta["nodepool_provider_name"], "fake-provider");
    assert_eq!(meta["nodepool_pool_name"], "main");
    assert_eq!(meta["nodepool_node_id"], "0000000007");
    assert_eq!(meta["groups"], "fake-provider,ubuntu-cloud,ubuntu");
    assert!(!meta.contains_key("nodepool_image_name"));

    let dib = PoolLabel {
        name: "focal".into(),
        diskimage: Some("focal-img".into()),
        ..PoolLabel::default()
    };
    let meta = metadata("p", "main", "1", &dib);
    assert_eq!(meta["nodepool_image_name"], "focal-img");
    assert_eq!(meta["groups"], "p,focal-img,focal");
}

#[test]
fn node_resources_round_trip_through_upstream_json() {
    let r = Resources {
        instances: Some(1),
        cores: Some(4),
        ram: Some(8192),
        ..Resources::default()
    };
    let node = crate::model::Node {
        resources: Some(resources_json(&r)),
        ..crate::model::Node::default()
    };
    assert_eq!(node_resources(&node), Some(r));
}

#[test]
fn launch_timeouts_take_any_number_without_panicking() {
    use std::time::Duration;
    assert_eq!(super::launch::secs(5.0, 60.0), Duration::from_secs(5));
    assert_eq!(super::launch::secs(0.0, 60.0), Duration::from_secs(60));
    assert_eq!(super::launch::secs(f64::NAN, 60.0), Duration::from_secs(60));
    let longest = crate::time::LONGEST_WAIT;
    assert_eq!(super::launch::secs(1.0e30, 60.0), longest);
    assert_eq!(super::launch::secs(f64::INFINITY, 60.0), longest);
}
