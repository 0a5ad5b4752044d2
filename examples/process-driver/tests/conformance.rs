//! The process driver passes nodepool-core's provider conformance suite.

use std::time::Duration;

use nodepool_core::config::{load_str, DriverRegistry};
use nodepool_core::provider::{list_all_instances, InstanceState, Provider};
use nodepool_core::testing::provider::{provider_suite, SuiteConfig};
use nodepool_core::testing::wrappers::{stacked_provider_suite, wrapper_suite, WrapperSuiteConfig};
use nodepool_example_process_driver::register;

/// Build the provider the way a daemon does: load the config with the
/// driver registered, then ask the registry to create it.
fn provider(root: &std::path::Path, extra: &str) -> std::sync::Arc<dyn Provider> {
    let mut registry = DriverRegistry::new();
    register(&mut registry);
    let text = format!(
        "labels:
  - name: sandbox
providers:
  - name: local
    driver: process
    root: {}
{extra}
    pools:
      - name: main
        labels:
          - name: sandbox
            cores: 2
",
        root.display()
    );
    let config = load_str("nodepool.yaml", &text, &registry)
        .unwrap_or_else(|e| panic!("config does not load: {e}"));
    let p = &config.providers[0];
    registry
        .get(&p.driver)
        .expect("registered")
        .create_provider(p)
        .expect("provider")
}

fn suite_config() -> SuiteConfig {
    let mut cfg = SuiteConfig::new("main", "sandbox");
    cfg.boot_timeout = Duration::from_secs(10);
    cfg.poll_interval = Duration::from_millis(10);
    cfg
}

#[tokio::test]
async fn passes_the_suite_with_processes() {
    let root = tempfile::tempdir().expect("tempdir");
    let provider = provider(root.path(), "    command: [sleep, '300']\n    instances: 4");
    let report = provider_suite(&*provider, &suite_config()).await;
    for name in [
        "create_then_get_then_delete",
        "wait_active_reaches_active",
        "instance_carries_metadata",
        "listed_instances_carry_nodepool_metadata",
        "paged_listing_lists_each_instance_once",
        "unsupported_operation_returns_unsupported",
        "quota_reports_limits",
    ] {
        assert!(report.ran.contains(&name), "{name} did not run: {report:?}");
    }
    assert_eq!(
        report.skipped,
        vec![(
            "image_upload_list_delete",
            "no image_upload capability".to_string()
        )]
    );
    // The suite cleaned up after itself: no sandbox is left.
    assert!(list_all_instances(&*provider)
        .await
        .expect("list")
        .is_empty());
}

#[tokio::test]
async fn passes_the_suite_with_directories_only() {
    let root = tempfile::tempdir().expect("tempdir");
    let provider = provider(root.path(), "");
    let report = provider_suite(&*provider, &suite_config()).await;
    assert!(report.ran.contains(&"quota_reports_limits"), "{report:?}");
}

#[tokio::test]
async fn an_exited_process_is_an_error_state_and_quota_is_enforced() {
    let root = tempfile::tempdir().expect("tempdir");
    let provider = provider(root.path(), "    command: ['true']\n    instances: 1");
    let spec = nodepool_core::testing::provider::launch_spec(&*provider, &suite_config());
    let created = provider.create_instance(&spec).await.expect("create");
    // `true` exits at once; the instance then reports an error state.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let instance = provider
            .get_instance(&created.external_id)
            .await
            .expect("get")
            .expect("the sandbox exists until deleted");
        if let Some(InstanceState::Error(message)) = &instance.state {
            assert!(message.contains("exit"), "{message}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "an exited process is still reported as {:?}",
            instance.state
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = provider.create_instance(&spec).await;
    assert!(
        matches!(second, Err(nodepool_core::Error::QuotaExceeded { .. })),
        "{second:?}"
    );
    provider
        .delete_instance(&created.external_id)
        .await
        .expect("delete");
    assert!(list_all_instances(&*provider)
        .await
        .expect("list")
        .is_empty());
}

#[tokio::test]
async fn passes_the_suite_through_the_wrapper_stack() {
    let root = tempfile::tempdir().expect("tempdir");
    let provider = provider(root.path(), "    command: [sleep, '300']\n    instances: 4");
    let report = stacked_provider_suite(provider.clone(), &suite_config()).await;
    assert!(
        report.ran.contains(&"wait_active_reaches_active"),
        "{report:?}"
    );
    assert!(list_all_instances(&*provider)
        .await
        .expect("list")
        .is_empty());
}

#[tokio::test]
async fn passes_the_wrapper_suite() {
    let root = tempfile::tempdir().expect("tempdir");
    let provider = provider(root.path(), "    instances: 8");
    let mut cfg = WrapperSuiteConfig::new(suite_config());
    cfg.rate = Duration::from_millis(20);
    cfg.tolerance = Duration::from_millis(5);
    let report = wrapper_suite(provider.clone(), &cfg).await;
    assert_eq!(report.ran.len(), 4, "{report:?}");
    assert!(list_all_instances(&*provider)
        .await
        .expect("list")
        .is_empty());
}
