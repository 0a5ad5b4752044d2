//! Tests of the fake provider, including the provider conformance suite.

use nodepool_core::ErrorKind;
use std::path::PathBuf;

use nodepool_core::provider::{ImageRef, META_NODE_ID};
use std::sync::Arc;

use nodepool_core::provider::ProviderExt;
use nodepool_core::testing::provider::{launch_spec, provider_suite, SuiteConfig};
use nodepool_core::testing::wrappers::{stacked_provider_suite, wrapper_suite, WrapperSuiteConfig};

use super::*;
use crate::fake::cloud::{FakeCloudSettings, FaultSettings};

fn provider_on(cloud: FakeCloud) -> FakeProvider {
    let small = FakeCloudSettings::default().flavors[0].resources();
    FakeProvider::new(
        "fake-provider",
        cloud,
        BTreeMap::from([(("main".to_string(), "small".to_string()), small)]),
    )
}

fn suite_config() -> SuiteConfig {
    SuiteConfig::new("main", "small")
}

/// A temporary image file, removed on drop.
struct TempImage(PathBuf);

impl TempImage {
    fn new() -> Self {
        // Unique per test: tests of one binary run in parallel threads.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "nodepool-fake-suite-{}-{n}.qcow2",
            std::process::id()
        ));
        std::fs::write(&path, b"not really qcow2").expect("write temp image");
        Self(path)
    }
}

impl Drop for TempImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test(start_paused = true)]
async fn fake_provider_passes_provider_suite() {
    let image = TempImage::new();
    let provider = provider_on(FakeCloud::default());
    let cfg = SuiteConfig {
        image_file: Some(image.0.clone()),
        ..suite_config()
    };
    let report = provider_suite(&provider, &cfg).await;
    assert_eq!(
        report.skipped,
        vec![(
            "unsupported_operation_returns_unsupported",
            "every optional operation is supported".to_string()
        )]
    );
    for test in [
        "create_then_get_then_delete",
        "instance_carries_metadata",
        "listed_instances_carry_nodepool_metadata",
        "paged_listing_lists_each_instance_once",
        "delete_missing_instance_succeeds",
        "image_upload_list_delete",
        "quota_reports_limits",
        "wait_active_reaches_active",
    ] {
        assert!(report.ran.contains(&test), "{test} did not run: {report:?}");
    }
    assert!(
        provider.cloud().instances().is_empty(),
        "the suite cleans up"
    );
}

#[tokio::test(start_paused = true)]
async fn suite_skips_image_test_without_image_file() {
    let provider = provider_on(FakeCloud::default());
    let report = provider_suite(&provider, &suite_config()).await;
    assert!(report.skipped.contains(&(
        "image_upload_list_delete",
        "no image_file configured".to_string()
    )));
}

#[tokio::test(start_paused = true)]
async fn capabilities_are_all_and_no_hosts_are_preregistered() {
    let provider = provider_on(FakeCloud::default());
    let caps = provider.capabilities();
    assert!(caps.image_upload && caps.quota_query && caps.instance_listing);
    assert!(provider.registered().is_none());
}

#[tokio::test(start_paused = true)]
async fn fake_provider_passes_the_provider_suite_through_the_wrapper_stack() {
    let provider = provider_on(FakeCloud::default());
    let cloud = provider.cloud().clone();
    let report = stacked_provider_suite(Arc::new(provider), &suite_config()).await;
    assert!(
        report.ran.contains(&"wait_active_reaches_active"),
        "{report:?}"
    );
    assert!(cloud.instances().is_empty(), "the suite cleans up");
}

#[tokio::test(start_paused = true)]
async fn fake_provider_passes_the_wrapper_suite() {
    let provider = provider_on(FakeCloud::default());
    let cloud = provider.cloud().clone();
    let report = wrapper_suite(Arc::new(provider), &WrapperSuiteConfig::new(suite_config())).await;
    assert_eq!(
        report.skipped,
        vec![(
            "capability_check_answers_without_the_driver",
            "every optional operation is supported".to_string()
        )]
    );
    assert!(cloud.instances().is_empty(), "the suite cleans up");
}

#[tokio::test(start_paused = true)]
async fn unknown_label_is_not_found() {
    let provider = provider_on(FakeCloud::default());
    assert!(matches!(
        provider.label_resources("main", "gpu").await,
        Err(Error::NotFound { kind: "label", .. })
    ));
    let mut spec = launch_spec(&provider, &suite_config());
    spec.label = "gpu".to_string();
    assert!(provider.create_instance(&spec).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn wait_until_active_sleeps_exactly_the_boot_delay() {
    let provider = provider_on(FakeCloud::default());
    let created = provider
        .create_instance(&launch_spec(&provider, &suite_config()))
        .await
        .expect("create");
    let start = tokio::time::Instant::now();
    let active = provider
        .wait_until_active(&created.external_id, Duration::from_secs(60))
        .await
        .expect("active");
    assert_eq!(active.state, Some(InstanceState::Active));
    assert_eq!(start.elapsed(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn wait_until_active_times_out_on_hanging_instance() {
    let cloud = FakeCloud::default();
    cloud.set_faults(FaultSettings {
        timeout_rate: 1.0,
        ..FaultSettings::default()
    });
    let provider = provider_on(cloud);
    let created = provider
        .create_instance(&launch_spec(&provider, &suite_config()))
        .await
        .expect("create");
    let start = tokio::time::Instant::now();
    let err = provider
        .wait_until_active(&created.external_id, Duration::from_secs(5))
        .await
        .expect_err("never active");
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    // The polling helper agrees.
    let err = nodepool_core::provider::poll_until_active(
        &provider,
        &created.external_id,
        Duration::from_secs(1),
        Duration::from_millis(10),
    )
    .await
    .expect_err("never active");
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
}

#[tokio::test(start_paused = true)]
async fn wait_until_active_reports_boot_failure() {
    let cloud = FakeCloud::default();
    cloud.set_faults(FaultSettings {
        boot_failure_rate: 1.0,
        ..FaultSettings::default()
    });
    let provider = provider_on(cloud);
    let created = provider
        .create_instance(&launch_spec(&provider, &suite_config()))
        .await
        .expect("create");
    let err = provider
        .wait_until_active(&created.external_id, Duration::from_secs(60))
        .await
        .expect_err("failed boot");
    assert!(
        matches!(
            err,
            Error::Cloud {
                kind: ErrorKind::Transient,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn providers_sharing_a_cloud_share_its_quota() {
    let cloud = FakeCloud::default();
    cloud.set_limits(1, 100, 1_000_000);
    let a = provider_on(cloud.clone());
    let b = FakeProvider::new(
        "other-provider",
        cloud.clone(),
        BTreeMap::from([(
            ("main".to_string(), "small".to_string()),
            FakeCloudSettings::default().flavors[0].resources(),
        )]),
    );
    let created = a
        .create_instance(&launch_spec(&a, &suite_config()))
        .await
        .expect("first");
    let err = b
        .create_instance(&launch_spec(&b, &suite_config()))
        .await
        .expect_err("cloud is full");
    assert!(
        matches!(err, Error::QuotaExceeded { ref provider, .. } if provider == "other-provider"),
        "{err}"
    );
    let listed = b.list_all_instances().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].metadata.get(META_NODE_ID),
        created.metadata.get(META_NODE_ID)
    );
    assert_eq!(b.quota().await.expect("quota").instances, Some(1));
}

#[tokio::test(start_paused = true)]
async fn boots_uploaded_image_and_refuses_missing_one() {
    let image = TempImage::new();
    let provider = provider_on(FakeCloud::default());
    let id = provider
        .upload_image(&ImageUploadSpec {
            diskimage: "ubuntu".to_string(),
            build_id: "0000000001".to_string(),
            upload_id: "0000000001".to_string(),
            external_name: "ubuntu-0000000001".to_string(),
            path: image.0.clone(),
            format: "qcow2".to_string(),
            metadata: BTreeMap::new(),
        })
        .await
        .expect("upload");
    let mut spec = launch_spec(&provider, &suite_config());
    spec.image = Some(ImageRef::Uploaded {
        diskimage: "ubuntu".to_string(),
        external_id: id.clone(),
    });
    let created = provider
        .create_instance(&spec)
        .await
        .expect("boots uploaded image");
    assert_eq!(created.image_id.as_deref(), Some(id.as_str()));
    provider.delete_image(&id).await.expect("delete image");
    assert!(provider.create_instance(&spec).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn upload_of_missing_file_fails() {
    let provider = provider_on(FakeCloud::default());
    let err = provider
        .upload_image(&ImageUploadSpec {
            diskimage: "ubuntu".to_string(),
            build_id: "1".to_string(),
            upload_id: "1".to_string(),
            external_name: "ubuntu-1".to_string(),
            path: PathBuf::from("/nonexistent/ubuntu.qcow2"),
            format: "qcow2".to_string(),
            metadata: BTreeMap::new(),
        })
        .await
        .expect_err("no file");
    assert!(
        matches!(
            err,
            Error::Cloud {
                kind: ErrorKind::Permanent,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn from_config_sizes_labels_by_flavor_and_applies_settings() {
    use nodepool_core::config::{load_str, DriverRegistry};
    let mut reg = DriverRegistry::new();
    crate::fake::config::register(&mut reg);
    let text = "labels:\n  - name: small\n  - name: huge\nproviders:\n  - name: fake-provider\n    cloud: fake\n    fake-settings:\n      instances: 5\n      ram-per-node: 4096\n    cloud-images:\n      - name: Fake Precise\n    pools:\n      - name: main\n        labels:\n          - name: small\n            cloud-image: Fake Precise\n            min-ram: 4096\n          - name: huge\n            cloud-image: Fake Precise\n            min-ram: 65536\n";
    let config = load_str("f.yaml", text, &reg).expect("loads");
    let provider_cfg = config.provider("fake-provider").expect("provider");
    let fake = provider_cfg
        .driver_config
        .as_any()
        .downcast_ref::<crate::fake::config::FakeConfig>()
        .expect("fake config");
    let cloud = FakeCloud::new(FakeCloudSettings::from_config(&fake.settings));
    let provider = FakeProvider::from_config("fake-provider", fake, cloud);
    let small = provider
        .label_resources("main", "small")
        .await
        .expect("sized");
    assert_eq!((small.cores, small.ram), (Some(4), Some(4096)));
    assert!(
        provider.label_resources("main", "huge").await.is_err(),
        "no flavor fits"
    );
    assert_eq!(provider.quota().await.expect("quota").instances, Some(5));
}
