//! The provider conformance suite (bare and through the wrapper stack) and
//! the wrapper suite against the OpenStack simulator.

mod openstack_support;

use std::sync::Arc;
use std::time::Duration;

use nodepool_core::testing::provider::{provider_suite, SuiteConfig};
use nodepool_core::testing::wrappers::{stacked_provider_suite, wrapper_suite, WrapperSuiteConfig};
use nodepool_openstack_sim::SimConfig;
use openstack_support::{provider, sim};

#[tokio::test]
async fn openstack_provider_passes_the_conformance_suite() {
    let sim = sim(SimConfig {
        boot_delay_secs: 0.1,
        ..SimConfig::default()
    })
    .await;
    let provider = provider(&sim);
    let dir = std::env::temp_dir().join(format!("np-os-suite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let image = dir.join("image.qcow2");
    std::fs::write(&image, vec![7u8; 300_000]).expect("image file");
    let mut cfg = SuiteConfig::new("main", "small");
    cfg.boot_timeout = Duration::from_secs(10);
    cfg.image_file = Some(image);
    let report = provider_suite(&provider, &cfg).await;
    assert!(
        report.ran.contains(&"image_upload_list_delete"),
        "{report:?}"
    );
    assert!(report.ran.contains(&"quota_reports_limits"), "{report:?}");
    assert!(
        report
            .ran
            .contains(&"listed_instances_carry_nodepool_metadata"),
        "{report:?}"
    );
    assert!(
        report
            .ran
            .contains(&"paged_listing_lists_each_instance_once"),
        "{report:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn suite_config() -> SuiteConfig {
    let mut cfg = SuiteConfig::new("main", "small");
    cfg.boot_timeout = Duration::from_secs(10);
    cfg
}

#[tokio::test]
async fn openstack_provider_passes_the_conformance_suite_through_the_wrapper_stack() {
    let sim = sim(SimConfig {
        boot_delay_secs: 0.1,
        ..SimConfig::default()
    })
    .await;
    let report = stacked_provider_suite(Arc::new(provider(&sim)), &suite_config()).await;
    assert!(
        report.ran.contains(&"wait_active_reaches_active"),
        "{report:?}"
    );
    assert!(
        sim.state.read(|c| c.servers.is_empty()),
        "the suite cleans up"
    );
}

/// Real time (the simulator answers over loopback HTTP): a call may start
/// a little early against its scheduled turn only by timer lateness.
#[tokio::test]
async fn openstack_provider_passes_the_wrapper_suite() {
    let sim = sim(SimConfig {
        boot_delay_secs: 0.1,
        ..SimConfig::default()
    })
    .await;
    let mut cfg = WrapperSuiteConfig::new(suite_config());
    cfg.rate = Duration::from_millis(50);
    cfg.tolerance = Duration::from_millis(10);
    let report = wrapper_suite(Arc::new(provider(&sim)), &cfg).await;
    assert_eq!(report.ran.len(), 3, "{report:?}");
}
