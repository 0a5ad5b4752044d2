//! Tests of the trait's defaults, the smart-pointer impls and the
//! [`ProviderExt`] helpers, on the in-core memory cloud.

use crate::ErrorKind;
use std::sync::Arc;

use super::*;
use crate::testing::memory::MemoryProvider;
use crate::testing::provider::{launch_spec, provider_suite, SuiteConfig};

#[tokio::test(start_paused = true)]
async fn memory_provider_passes_the_provider_suite_bare_boxed_and_stacked() {
    let cfg = SuiteConfig::new("main", "small");
    let report = provider_suite(&MemoryProvider::new("mem"), &cfg).await;
    assert!(report
        .ran
        .contains(&"unsupported_operation_returns_unsupported"));
    let boxed: Box<dyn Provider> = Box::new(MemoryProvider::new("mem"));
    provider_suite(&boxed, &cfg).await;
    let report = crate::testing::wrappers::stacked_provider_suite(
        Arc::new(MemoryProvider::new("mem")),
        &cfg,
    )
    .await;
    assert!(report
        .ran
        .contains(&"paged_listing_lists_each_instance_once"));
}

#[tokio::test]
async fn optional_operations_default_to_unsupported() {
    let p = MemoryProvider::new("mem");
    for (operation, err) in [
        ("quota", p.quota().await.err()),
        ("list_images", p.list_images().await.map(|_| ()).err()),
        ("delete_image", p.delete_image("x").await.err()),
    ] {
        assert!(
            matches!(err, Some(Error::Unsupported { operation: op, .. }) if op == operation),
            "{operation}: {err:?}"
        );
    }
    assert!(p.registered().is_none());
    assert!(p.require("quota").is_err());
    assert!(p.require("create_instance").is_ok());
}

#[tokio::test(start_paused = true)]
async fn wait_active_with_returns_the_classifiers_error_for_a_failed_boot() {
    #[derive(Debug)]
    struct Failing(MemoryProvider);
    #[async_trait]
    impl Provider for Failing {
        fn name(&self) -> &str {
            self.0.name()
        }
        fn capabilities(&self) -> ProviderCapabilities {
            self.0.capabilities()
        }
        async fn label_resources(&self, pool: &str, label: &str) -> Result<Resources> {
            self.0.label_resources(pool, label).await
        }
        async fn create_instance(&self, spec: &LaunchSpec) -> Result<Instance> {
            self.0.create_instance(spec).await
        }
        async fn get_instance(&self, id: &str) -> Result<Option<Instance>> {
            Ok(self.0.get_instance(id).await?.map(|i| Instance {
                state: Some(InstanceState::Error("Quota exceeded for cores".into())),
                ..i
            }))
        }
        async fn delete_instance(&self, id: &str) -> Result<()> {
            self.0.delete_instance(id).await
        }
        async fn list_instances_page(&self, m: Option<&str>, l: usize) -> Result<InstancePage> {
            self.0.list_instances_page(m, l).await
        }
    }
    let p = Failing(MemoryProvider::new("mem"));
    let created = p
        .create_instance(&launch_spec(&p, &SuiteConfig::new("main", "small")))
        .await
        .expect("create");
    let timeout = Duration::from_secs(5);
    let generic = p.wait_active(&created.external_id, timeout).await;
    assert!(
        matches!(
            generic,
            Err(Error::Cloud {
                kind: ErrorKind::Transient,
                ..
            })
        ),
        "{generic:?}"
    );
    let quota = |_: &Instance, fault: &str| {
        fault.contains("Quota").then(|| Error::QuotaExceeded {
            provider: "mem".into(),
            resource: "cores".into(),
        })
    };
    let classified = p
        .wait_active_with(&created.external_id, timeout, &quota)
        .await;
    assert!(
        matches!(classified, Err(Error::QuotaExceeded { .. })),
        "{classified:?}"
    );
}

#[tokio::test]
async fn list_all_instances_walks_every_page() {
    let p = MemoryProvider::new("mem");
    let cfg = SuiteConfig::new("main", "small");
    for _ in 0..(INSTANCE_PAGE_SIZE + 3) {
        p.create_instance(&launch_spec(&p, &cfg))
            .await
            .expect("create");
    }
    assert_eq!(
        p.list_all_instances().await.expect("list").len(),
        INSTANCE_PAGE_SIZE + 3
    );
}
