//! The provider conformance suite: one async fn per behaviour of
//! [`Provider`], and [`provider_suite`] that runs those the provider's
//! [`capabilities`](Provider::capabilities) allow.
//!
//! Each test makes its own instances with unique node ids and deletes them
//! again, so the suite can run against a shared cloud or simulator. A failing
//! test panics with what the provider did wrong.
//!
//! ```no_run
//! # use nodepool_core::provider::Provider;
//! # use nodepool_core::testing::provider::{provider_suite, SuiteConfig};
//! # async fn run(provider: &dyn Provider) {
//! let report = provider_suite(provider, &SuiteConfig::new("main", "small")).await;
//! println!("ran {:?}, skipped {:?}", report.ran, report.skipped);
//! # }
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::provider::{
    list_all_instances, ImageUploadSpec, Instance, InstanceState, LaunchSpec, Provider,
    META_NODE_ID, META_POOL, META_PROVIDER,
};
use crate::Error;

pub use super::store::SuiteReport;

/// What the suite launches and how long it waits.
#[derive(Debug, Clone, PartialEq)]
pub struct SuiteConfig {
    /// The pool to launch in.
    pub pool: String,
    /// A label of that pool the provider can launch.
    pub label: String,
    /// How long an instance may take to become active (and to disappear
    /// after a delete).
    pub boot_timeout: Duration,
    /// The first poll interval while waiting.
    pub poll_interval: Duration,
    /// An image file to upload; without one the image test is skipped.
    pub image_file: Option<PathBuf>,
    /// The format of `image_file` (default "qcow2").
    pub image_format: String,
}

impl SuiteConfig {
    /// Launch `label` in `pool`, wait up to 60 s, upload no image.
    pub fn new(pool: impl Into<String>, label: impl Into<String>) -> Self {
        Self {
            pool: pool.into(),
            label: label.into(),
            boot_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_millis(50),
            image_file: None,
            image_format: "qcow2".to_string(),
        }
    }
}

/// A name no other test run uses.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{nanos:08x}-{n}", std::process::id())
}

/// A launch spec for the suite's label, with the nodepool metadata keys set.
pub fn launch_spec(provider: &dyn Provider, cfg: &SuiteConfig) -> LaunchSpec {
    let node_id = unique("suite");
    let metadata = BTreeMap::from([
        (META_PROVIDER.to_string(), provider.name().to_string()),
        (META_POOL.to_string(), cfg.pool.clone()),
        (META_NODE_ID.to_string(), node_id.clone()),
        ("nodepool_suite".to_string(), "yes".to_string()),
    ]);
    LaunchSpec {
        hostname: format!("np-{node_id}"),
        node_id,
        pool: cfg.pool.clone(),
        label: cfg.label.clone(),
        image: None,
        metadata,
        az: None,
        request: None,
    }
}

async fn create(provider: &dyn Provider, spec: &LaunchSpec) -> Instance {
    match provider.create_instance(spec).await {
        Ok(instance) => {
            assert!(
                !instance.external_id.is_empty(),
                "{}: create_instance returned an empty external id",
                provider.name()
            );
            instance
        }
        Err(e) => panic!("{}: create_instance failed: {e}", provider.name()),
    }
}

/// Delete `external_id` and wait until the provider no longer reports it
/// (a `Deleting` state in between is fine).
async fn delete_and_wait_gone(provider: &dyn Provider, external_id: &str, cfg: &SuiteConfig) {
    if let Err(e) = provider.delete_instance(external_id).await {
        panic!(
            "{}: delete_instance({external_id}) failed: {e}",
            provider.name()
        );
    }
    let deadline = tokio::time::Instant::now() + cfg.boot_timeout;
    loop {
        match provider.get_instance(external_id).await {
            Ok(None) => return,
            Ok(Some(i)) if tokio::time::Instant::now() >= deadline => panic!(
                "{}: instance {external_id} still reported after delete: {:?}",
                provider.name(),
                i.state
            ),
            Ok(Some(_)) => tokio::time::sleep(cfg.poll_interval).await,
            Err(e) => panic!("{}: get_instance after delete failed: {e}", provider.name()),
        }
    }
}

/// The suite's label has known resources in the suite's pool.
pub async fn label_resources_are_known(provider: &dyn Provider, cfg: &SuiteConfig) {
    if let Err(e) = provider.label_resources(&cfg.pool, &cfg.label).await {
        panic!(
            "{}: label_resources({}, {}) failed: {e}",
            provider.name(),
            cfg.pool,
            cfg.label
        );
    }
}

/// A created instance can be read back by its id, and is gone after delete.
pub async fn create_then_get_then_delete(provider: &dyn Provider, cfg: &SuiteConfig) {
    let spec = launch_spec(provider, cfg);
    let created = create(provider, &spec).await;
    let got = provider
        .get_instance(&created.external_id)
        .await
        .unwrap_or_else(|e| panic!("{}: get_instance failed: {e}", provider.name()));
    let got = got.unwrap_or_else(|| {
        panic!(
            "{}: get_instance({}) found nothing right after create",
            provider.name(),
            created.external_id
        )
    });
    assert_eq!(got.external_id, created.external_id);
    assert!(
        !matches!(got.state, Some(InstanceState::Deleting)),
        "{}: a new instance is being deleted",
        provider.name()
    );
    // A registered host outlives its "deletion": it goes back to the pool.
    release(provider, &created.external_id, cfg).await;
}

/// `get_instance` returns the metadata the launch spec set.
pub async fn instance_carries_metadata(provider: &dyn Provider, cfg: &SuiteConfig) {
    let spec = launch_spec(provider, cfg);
    let created = create(provider, &spec).await;
    let got = provider
        .get_instance(&created.external_id)
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("{}: created instance not found", provider.name()));
    for (key, value) in &spec.metadata {
        assert_eq!(
            got.metadata.get(key),
            Some(value),
            "{}: instance lacks metadata {key}={value}: {:?}",
            provider.name(),
            got.metadata
        );
    }
    delete_and_wait_gone(provider, &created.external_id, cfg).await;
}

/// The instance listing (walked with [`list_all_instances`]) lists a new
/// instance with the nodepool metadata keys, so leaked instances can be
/// found.
///
/// Requires [`ProviderCapabilities::instance_listing`](crate::provider::ProviderCapabilities::instance_listing).
pub async fn listed_instances_carry_nodepool_metadata(provider: &dyn Provider, cfg: &SuiteConfig) {
    let spec = launch_spec(provider, cfg);
    let created = create(provider, &spec).await;
    let listed = list_all_instances(provider)
        .await
        .unwrap_or_else(|e| panic!("{}: list_instances_page failed: {e}", provider.name()));
    let mine = listed
        .iter()
        .find(|i| i.external_id == created.external_id)
        .unwrap_or_else(|| {
            panic!(
                "{}: list_instances lacks new instance {}",
                provider.name(),
                created.external_id
            )
        });
    for key in [META_PROVIDER, META_POOL, META_NODE_ID] {
        assert_eq!(
            mine.metadata.get(key),
            spec.metadata.get(key),
            "{}: listed instance lacks {key}",
            provider.name()
        );
    }
    delete_and_wait_gone(provider, &created.external_id, cfg).await;
}

/// `list_instances_page` walked one instance a page lists two new
/// instances exactly once each, and the walk ends.
///
/// Requires [`ProviderCapabilities::instance_listing`](crate::provider::ProviderCapabilities::instance_listing).
pub async fn paged_listing_lists_each_instance_once(provider: &dyn Provider, cfg: &SuiteConfig) {
    let first = create(provider, &launch_spec(provider, cfg)).await;
    let second = create(provider, &launch_spec(provider, cfg)).await;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut marker: Option<String> = None;
    let mut pages = 0usize;
    loop {
        pages += 1;
        assert!(
            pages <= 100_000,
            "{}: paged listing does not end",
            provider.name()
        );
        let page = provider
            .list_instances_page(marker.as_deref(), 1)
            .await
            .unwrap_or_else(|e| panic!("{}: list_instances_page failed: {e}", provider.name()));
        for instance in page.instances {
            *seen.entry(instance.external_id).or_default() += 1;
        }
        match page.next {
            Some(next) => {
                assert_ne!(
                    marker.as_deref(),
                    Some(next.as_str()),
                    "{}: paged listing does not advance",
                    provider.name()
                );
                marker = Some(next);
            }
            None => break,
        }
    }
    for id in [&first.external_id, &second.external_id] {
        assert_eq!(
            seen.get(id),
            Some(&1),
            "{}: paged listing shows instance {id} {} times",
            provider.name(),
            seen.get(id).copied().unwrap_or(0)
        );
    }
    delete_and_wait_gone(provider, &first.external_id, cfg).await;
    delete_and_wait_gone(provider, &second.external_id, cfg).await;
}

/// Deleting an id the cloud does not know succeeds.
pub async fn delete_missing_instance_succeeds(provider: &dyn Provider) {
    let missing = unique("nodepool-suite-missing");
    if let Err(e) = provider.delete_instance(&missing).await {
        panic!(
            "{}: deleting a missing instance failed: {e}",
            provider.name()
        );
    }
    let got = provider.get_instance(&missing).await.unwrap_or_else(|e| {
        panic!(
            "{}: get_instance of a missing id failed: {e}",
            provider.name()
        )
    });
    assert!(got.is_none(), "{}: a missing id was found", provider.name());
}

fn assert_unsupported<T: std::fmt::Debug>(
    provider: &dyn Provider,
    operation: &str,
    result: crate::Result<T>,
) {
    match result {
        Err(Error::Unsupported { .. }) => {}
        other => panic!(
            "{}: {operation} is outside the capabilities but returned {other:?}, not Unsupported",
            provider.name()
        ),
    }
}

/// Every operation outside the capabilities returns [`Error::Unsupported`].
/// Returns how many operations were checked (0 when all are supported).
pub async fn unsupported_operation_returns_unsupported(provider: &dyn Provider) -> usize {
    let caps = provider.capabilities();
    let mut checked = 0;
    if !caps.instance_listing {
        assert_unsupported(
            provider,
            "list_instances_page",
            provider.list_instances_page(None, 10).await,
        );
        checked += 1;
    }
    if !caps.quota_query {
        assert_unsupported(provider, "quota", provider.quota().await);
        checked += 1;
    }
    if !caps.image_upload {
        let spec = ImageUploadSpec {
            diskimage: "suite".to_string(),
            build_id: "0000000001".to_string(),
            upload_id: "0000000001".to_string(),
            external_name: unique("suite-image"),
            path: PathBuf::from("/nonexistent/suite.qcow2"),
            format: "qcow2".to_string(),
            metadata: BTreeMap::new(),
        };
        assert_unsupported(provider, "upload_image", provider.upload_image(&spec).await);
        assert_unsupported(
            provider,
            "delete_image",
            provider.delete_image("suite").await,
        );
        assert_unsupported(provider, "list_images", provider.list_images().await);
        checked += 3;
    }
    checked
}

/// An uploaded image is listed with its name and metadata, and is gone
/// after delete; deleting it again succeeds.
///
/// Requires [`ProviderCapabilities::image_upload`](crate::provider::ProviderCapabilities::image_upload).
pub async fn image_upload_list_delete(provider: &dyn Provider, cfg: &SuiteConfig, file: PathBuf) {
    let name = unique("suite-image");
    let metadata = BTreeMap::from([
        ("nodepool_build_id".to_string(), "0000000001".to_string()),
        ("nodepool_upload_id".to_string(), "0000000001".to_string()),
    ]);
    let spec = ImageUploadSpec {
        diskimage: "suite".to_string(),
        build_id: "0000000001".to_string(),
        upload_id: "0000000001".to_string(),
        external_name: name.clone(),
        path: file,
        format: cfg.image_format.clone(),
        metadata: metadata.clone(),
    };
    let id = provider
        .upload_image(&spec)
        .await
        .unwrap_or_else(|e| panic!("{}: upload_image failed: {e}", provider.name()));
    let listed = provider
        .list_images()
        .await
        .unwrap_or_else(|e| panic!("{}: list_images failed: {e}", provider.name()));
    let image = listed
        .iter()
        .find(|i| i.external_id == id)
        .unwrap_or_else(|| panic!("{}: uploaded image {id} not listed", provider.name()));
    assert_eq!(image.name, name, "{}: image name", provider.name());
    for (key, value) in &metadata {
        assert_eq!(
            image.metadata.get(key),
            Some(value),
            "{}: image lacks metadata {key}",
            provider.name()
        );
    }
    for _ in 0..2 {
        if let Err(e) = provider.delete_image(&id).await {
            panic!("{}: delete_image({id}) failed: {e}", provider.name());
        }
    }
    let listed = provider
        .list_images()
        .await
        .unwrap_or_else(|e| panic!("{}: list_images failed: {e}", provider.name()));
    assert!(
        listed.iter().all(|i| i.external_id != id),
        "{}: deleted image {id} still listed",
        provider.name()
    );
}

/// The quota can be read, and one node of the suite's label fits in it.
///
/// Requires [`ProviderCapabilities::quota_query`](crate::provider::ProviderCapabilities::quota_query).
pub async fn quota_reports_limits(provider: &dyn Provider, cfg: &SuiteConfig) {
    let quota = provider
        .quota()
        .await
        .unwrap_or_else(|e| panic!("{}: quota failed: {e}", provider.name()));
    let need = provider
        .label_resources(&cfg.pool, &cfg.label)
        .await
        .unwrap_or_else(|e| panic!("{}: label_resources failed: {e}", provider.name()));
    let fits = |limit: Option<u64>, need: Option<u64>, what: &str| {
        if let (Some(limit), Some(need)) = (limit, need) {
            assert!(
                need <= limit,
                "{}: one {} node needs {need} {what}, the quota is {limit}",
                provider.name(),
                cfg.label
            );
        }
    };
    fits(
        quota.instances,
        Some(need.instances.unwrap_or(1)),
        "instances",
    );
    fits(quota.cores, need.cores, "cores");
    fits(quota.ram, need.ram, "MB of RAM");
}

/// [`Provider::wait_active`] brings a new instance to `Active`, with an
/// address to reach it (an `interface_ip`, or the connection details of a
/// container node such as a Kubernetes namespace).
pub async fn wait_active_reaches_active(provider: &dyn Provider, cfg: &SuiteConfig) {
    let spec = launch_spec(provider, cfg);
    let created = create(provider, &spec).await;
    let active = provider
        .wait_active(&created.external_id, cfg.boot_timeout)
        .await
        .unwrap_or_else(|e| panic!("{}: wait_active failed: {e}", provider.name()));
    assert_eq!(active.state, Some(InstanceState::Active));
    assert!(
        active.interface_ip.is_some() || active.connection_details.is_some(),
        "{}: an active instance has no interface_ip nor connection details",
        provider.name()
    );
    release(provider, &created.external_id, cfg).await;
}

/// Give an instance back: a preregistered host returns to its pool, a
/// cloud instance is deleted and waited for.
async fn release(provider: &dyn Provider, external_id: &str, cfg: &SuiteConfig) {
    if provider.registered().is_some() {
        if let Err(e) = provider.delete_instance(external_id).await {
            panic!("{}: delete_instance failed: {e}", provider.name());
        }
    } else {
        delete_and_wait_gone(provider, external_id, cfg).await;
    }
}

fn ran(report: &mut SuiteReport, name: &'static str) {
    println!("provider suite: {name} ... ok");
    report.ran.push(name);
}

fn skip(report: &mut SuiteReport, name: &'static str, reason: &str) {
    println!("provider suite: {name} ... skipped ({reason})");
    report.skipped.push((name, reason.to_string()));
}

/// Runs every test the provider's capabilities allow. A failing test panics;
/// the report lists what ran and what was skipped, and why.
pub async fn provider_suite(provider: &dyn Provider, cfg: &SuiteConfig) -> SuiteReport {
    let caps = provider.capabilities();
    let mut report = SuiteReport::default();

    label_resources_are_known(provider, cfg).await;
    ran(&mut report, "label_resources_are_known");
    create_then_get_then_delete(provider, cfg).await;
    ran(&mut report, "create_then_get_then_delete");
    wait_active_reaches_active(provider, cfg).await;
    ran(&mut report, "wait_active_reaches_active");
    delete_missing_instance_succeeds(provider).await;
    ran(&mut report, "delete_missing_instance_succeeds");

    let preregistered = provider.registered().is_some();
    if preregistered {
        skip(
            &mut report,
            "instance_carries_metadata",
            "nodes are preregistered hosts",
        );
    } else {
        instance_carries_metadata(provider, cfg).await;
        ran(&mut report, "instance_carries_metadata");
    }
    if !caps.instance_listing {
        skip(
            &mut report,
            "listed_instances_carry_nodepool_metadata",
            "no instance_listing capability",
        );
    } else if preregistered {
        skip(
            &mut report,
            "listed_instances_carry_nodepool_metadata",
            "nodes are preregistered hosts",
        );
    } else {
        listed_instances_carry_nodepool_metadata(provider, cfg).await;
        ran(&mut report, "listed_instances_carry_nodepool_metadata");
        paged_listing_lists_each_instance_once(provider, cfg).await;
        ran(&mut report, "paged_listing_lists_each_instance_once");
    }
    if unsupported_operation_returns_unsupported(provider).await > 0 {
        ran(&mut report, "unsupported_operation_returns_unsupported");
    } else {
        skip(
            &mut report,
            "unsupported_operation_returns_unsupported",
            "every optional operation is supported",
        );
    }
    match (&cfg.image_file, caps.image_upload) {
        (_, false) => skip(
            &mut report,
            "image_upload_list_delete",
            "no image_upload capability",
        ),
        (None, true) => skip(
            &mut report,
            "image_upload_list_delete",
            "no image_file configured",
        ),
        (Some(file), true) => {
            image_upload_list_delete(provider, cfg, file.clone()).await;
            ran(&mut report, "image_upload_list_delete");
        }
    }
    if caps.quota_query {
        quota_reports_limits(provider, cfg).await;
        ran(&mut report, "quota_reports_limits");
    } else {
        skip(
            &mut report,
            "quota_reports_limits",
            "no quota_query capability",
        );
    }
    report
}
