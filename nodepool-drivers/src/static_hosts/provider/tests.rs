//! Tests of the static provider: the provider conformance suite's
//! behaviours, host hand-out, liveness checks and the sync entry point.

use std::collections::BTreeMap;

use nodepool_core::model::NodeState;
use nodepool_core::provider::LaunchSpec;
use nodepool_core::store::MemoryStore;
use nodepool_core::testing::provider::{
    create_then_get_then_delete, delete_missing_instance_succeeds, label_resources_are_known,
    unsupported_operation_returns_unsupported, SuiteConfig,
};
use nodepool_core::testing::registered::{registered_suite, RegisteredSuiteConfig};
use nodepool_core::testing::wrappers::{wrapper_suite, WrapperSuiteConfig};

use super::*;
use crate::static_hosts::sync::tests::{config, host};
use crate::static_hosts::ScriptedScanner;

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA";

fn provider_on(net: &Arc<ScriptedScanner>, hosts: Vec<StaticNode>) -> StaticProvider {
    StaticProvider::with_scanner(Arc::new(config(hosts)), net.clone())
}

fn spec(label: &str) -> LaunchSpec {
    LaunchSpec {
        node_id: "0000000001".to_string(),
        pool: "main".to_string(),
        label: label.to_string(),
        hostname: "ignored".to_string(),
        image: None,
        metadata: BTreeMap::from([("nodepool_node_id".to_string(), "0000000001".to_string())]),
        az: None,
        request: None,
    }
}

/// The behaviours of `nodepool_core::testing::provider` a provider of
/// preregistered nodes must show. (`provider_suite` itself also runs
/// `wait_active_reaches_active`, which expects a deleted instance to vanish;
/// a static host stays, so that step is checked here without the vanishing.)
#[tokio::test]
async fn static_provider_passes_the_preregistered_part_of_the_provider_suite() {
    let net = Arc::new(ScriptedScanner::new());
    net.up("h1", 22, &[KEY]);
    let provider = provider_on(&net, vec![host("h1", 22, &["small"], 1)]);
    let cfg = SuiteConfig::new("main", "small");

    label_resources_are_known(&provider, &cfg).await;
    create_then_get_then_delete(&provider, &cfg).await;
    delete_missing_instance_succeeds(&provider).await;
    assert_eq!(
        unsupported_operation_returns_unsupported(&provider).await,
        5
    );

    let created = provider
        .create_instance(&spec("small"))
        .await
        .expect("create");
    let active = provider
        .wait_active(&created.external_id, cfg.boot_timeout)
        .await
        .expect("a configured host is active");
    assert_eq!(active.interface_ip.as_deref(), Some("h1"));
}

#[tokio::test]
async fn capabilities_are_none_the_hosts_are_registered_and_a_node_is_one_instance() {
    let net = Arc::new(ScriptedScanner::new());
    let provider = provider_on(&net, vec![host("h1", 22, &["small"], 1)]);
    assert_eq!(provider.capabilities(), ProviderCapabilities::default());
    assert!(provider.registered().is_some());
    let resources = provider
        .label_resources("main", "small")
        .await
        .expect("known");
    assert_eq!(
        (resources.instances, resources.cores, resources.ram),
        (Some(1), Some(0), Some(0))
    );
    assert!(matches!(
        provider.label_resources("main", "gpu").await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn create_instance_hands_out_a_checked_host_of_the_label() {
    let net = Arc::new(ScriptedScanner::new());
    net.down("h1", 22);
    net.up("h2", 22, &[KEY]);
    let provider = provider_on(
        &net,
        vec![host("h1", 22, &["small"], 1), host("h2", 22, &["small"], 1)],
    );

    let instance = provider
        .create_instance(&spec("small"))
        .await
        .expect("h2 answers");

    assert_eq!(instance.external_id, "h2");
    assert_eq!(instance.host_keys, vec![KEY]);
    assert_eq!(instance.public_ipv4.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        instance
            .metadata
            .get("nodepool_node_id")
            .map(String::as_str),
        Some("0000000001")
    );
}

#[tokio::test]
async fn create_instance_fails_retryably_when_no_host_answers_and_not_found_for_unknown_labels() {
    let net = Arc::new(ScriptedScanner::new());
    net.down("h1", 22);
    let provider = provider_on(&net, vec![host("h1", 22, &["small"], 1)]);

    match provider.create_instance(&spec("small")).await {
        Err(e @ Error::Cloud { .. }) => assert!(e.is_retryable(), "{e}"),
        other => panic!("expected a retryable cloud error, got {other:?}"),
    }
    assert!(matches!(
        provider.create_instance(&spec("gpu")).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn first_sync_is_full_and_later_ones_periodic() {
    let net = Arc::new(ScriptedScanner::new());
    net.up("h1", 22, &[KEY]);
    let provider = provider_on(&net, vec![host("h1", 22, &["small"], 1)]);
    let store = MemoryStore::new();

    let first = provider.sync(&store).await.expect("sync");
    assert_eq!(first.registered.len(), 1);
    net.down("h1", 22);
    // A periodic pass does not contact a host whose slots are all taken.
    let second = provider.sync(&store).await.expect("sync");
    assert!(second.is_clean(), "{second:?}");
    assert_eq!(net.probes("h1", 22), 1);
    // A full pass does, and deregisters its free record.
    let full = provider
        .sync_with(&store, SyncMode::Full)
        .await
        .expect("sync");
    assert_eq!(full.deregistered, first.registered);
}

#[tokio::test]
async fn liveness_check_passes_a_live_host_and_deregisters_a_dead_one() {
    let net = Arc::new(ScriptedScanner::new());
    net.up("h1", 22, &[KEY]);
    let provider = provider_on(&net, vec![host("h1", 22, &["small"], 1)]);
    let store = MemoryStore::new();
    let id = provider.sync(&store).await.expect("sync").registered[0].clone();
    let node = store.get_node(&id).await.expect("get").expect("exists");

    assert!(provider
        .check_node_liveness(&store, &node)
        .await
        .expect("check"));
    net.down("h1", 22);
    assert!(!provider
        .check_node_liveness(&store, &node)
        .await
        .expect("check"));
    assert!(store.get_node(&id).await.expect("get").is_none());

    net.up("h1", 22, &[KEY]);
    let report = provider.sync(&store).await.expect("sync");
    assert_eq!(
        report.registered.len(),
        1,
        "registered again once it answers"
    );
}

#[tokio::test]
async fn liveness_check_fails_for_a_host_removed_from_the_config() {
    let net = Arc::new(ScriptedScanner::new());
    net.up("h1", 22, &[KEY]);
    let store = MemoryStore::new();
    let old = provider_on(&net, vec![host("h1", 22, &["small"], 1)]);
    let id = old.sync(&store).await.expect("sync").registered[0].clone();
    let node = store.get_node(&id).await.expect("get").expect("exists");
    let new = provider_on(&net, vec![host("h2", 22, &["small"], 1)]);

    assert!(!new.check_node_liveness(&store, &node).await.expect("check"));
}

#[tokio::test]
async fn liveness_check_assumes_alive_without_host_key_checking() {
    let net = Arc::new(ScriptedScanner::new());
    let mut h1 = host("h1", 22, &["small"], 1);
    h1.host_key_checking = false;
    net.down("h1", 22);
    let provider = provider_on(&net, vec![h1]);
    let store = MemoryStore::new();
    let id = provider.sync(&store).await.expect("sync").registered[0].clone();
    let mut node = store.get_node(&id).await.expect("get").expect("exists");
    node.set_state(NodeState::Ready);

    assert!(provider
        .check_node_liveness(&store, &node)
        .await
        .expect("check"));
    assert_eq!(net.probes("h1", 22), 0);
}

#[tokio::test]
async fn static_provider_passes_the_registered_hosts_suite() {
    let net = Arc::new(ScriptedScanner::new());
    net.up("h1", 22, &[KEY]);
    net.up("h2", 22, &[KEY]);
    let provider = provider_on(
        &net,
        vec![host("h1", 22, &["small"], 2), host("h2", 22, &["small"], 1)],
    );
    let store = MemoryStore::new();
    let report = registered_suite(
        &provider,
        &store,
        &RegisteredSuiteConfig::new("main", "small"),
    )
    .await;
    assert!(report.skipped.is_empty(), "{report:?}");
    assert_eq!(report.ran.len(), 4);
}

#[tokio::test(start_paused = true)]
async fn static_provider_passes_the_wrapper_suite() {
    let net = Arc::new(ScriptedScanner::new());
    net.up("h1", 22, &[KEY]);
    let provider = provider_on(&net, vec![host("h1", 22, &["small"], 1)]);
    let cfg = WrapperSuiteConfig::new(SuiteConfig::new("main", "small"));
    let report = wrapper_suite(Arc::new(provider), &cfg).await;
    assert!(report.skipped.is_empty(), "{report:?}");
}
