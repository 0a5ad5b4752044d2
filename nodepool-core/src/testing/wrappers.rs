//! The wrapper suite: the provider wrappers ([`crate::provider::wrappers`])
//! around a backend's provider keep their promises: `rate` spacing,
//! `max-concurrency` bound, capability check, task metrics. And
//! [`stacked_provider_suite`]: the provider suite through the whole stack.
//!
//! Each check puts the wrapper under test around a probe that records the
//! calls reaching the backend. Run it on a runtime with paused time
//! (`#[tokio::test(start_paused = true)]`) where the backend allows, so the
//! rate spacing is measured exactly; with real time (a backend over HTTP)
//! set [`WrapperSuiteConfig::tolerance`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::join_all;
use tokio::time::Instant;

use super::provider::{launch_spec, provider_suite, SuiteConfig, SuiteReport};
use crate::provider::wrappers::{
    around_every_call, CapabilityCheck, ConcurrencyLimit, ProviderMetrics, RateLimit,
    StackSettings, Timed,
};
use crate::provider::{stack_with, ImageUploadSpec, Provider};
use crate::{Error, Result};

/// What the wrapper suite launches and how it measures.
#[derive(Debug, Clone, PartialEq)]
pub struct WrapperSuiteConfig {
    /// Pool, label and timeouts of the launches.
    pub suite: SuiteConfig,
    /// The `rate` the spacing check sets.
    pub rate: Duration,
    /// The `max-concurrency` the bound check sets.
    pub max_concurrency: usize,
    /// How many launches the bound check starts at once.
    pub launches: usize,
    /// How much earlier than `rate` a call may start under real time
    /// (timer lateness); zero under paused time.
    pub tolerance: Duration,
}

impl WrapperSuiteConfig {
    /// Rate 100 ms, `max-concurrency` 2 with 5 launches, no tolerance.
    pub fn new(suite: SuiteConfig) -> Self {
        Self {
            suite,
            rate: Duration::from_millis(100),
            max_concurrency: 2,
            launches: 5,
            tolerance: Duration::ZERO,
        }
    }
}

/// What reached the backend: calls per operation, their starts, and the
/// most launch calls at once.
#[derive(Debug, Default)]
struct Seen {
    calls: Mutex<BTreeMap<&'static str, usize>>,
    starts: Mutex<Vec<Instant>>,
    launching: AtomicUsize,
    most_launching: AtomicUsize,
}

impl Seen {
    fn calls(&self, operation: &str) -> usize {
        let calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        calls.get(operation).copied().unwrap_or(0)
    }
}

/// Records every call on its way to the backend.
#[derive(Debug)]
struct Probe<P> {
    inner: P,
    seen: Arc<Seen>,
}

impl<P: Provider> Probe<P> {
    async fn around<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T>> + Send,
    ) -> Result<T> {
        *self
            .seen
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(operation)
            .or_default() += 1;
        self.seen
            .starts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Instant::now());
        let launch = matches!(operation, "create_instance" | "wait_active");
        if launch {
            let now = self.seen.launching.fetch_add(1, Ordering::SeqCst) + 1;
            self.seen.most_launching.fetch_max(now, Ordering::SeqCst);
        }
        let result = call.await;
        if launch {
            self.seen.launching.fetch_sub(1, Ordering::SeqCst);
        }
        result
    }
}

around_every_call!(Probe);

fn probe(provider: &Arc<dyn Provider>) -> (Probe<Arc<dyn Provider>>, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let probe = Probe {
        inner: Arc::clone(provider),
        seen: Arc::clone(&seen),
    };
    (probe, seen)
}

fn missing_id() -> String {
    format!("nodepool-suite-missing-{}", std::process::id())
}

/// [`RateLimit`]: four calls asked for at once reach the backend `rate`
/// apart (less `tolerance`).
pub async fn rate_limit_spaces_call_starts(provider: Arc<dyn Provider>, cfg: &WrapperSuiteConfig) {
    let (probe, seen) = probe(&provider);
    let limited = RateLimit::new(probe, cfg.rate);
    let missing = missing_id();
    let calls = (0..4).map(|_| limited.get_instance(&missing));
    for result in join_all(calls).await {
        if let Err(e) = result {
            panic!(
                "{}: get_instance of a missing id failed: {e}",
                provider.name()
            );
        }
    }
    let mut starts = seen
        .starts
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    starts.sort();
    assert_eq!(
        starts.len(),
        4,
        "{}: every call reaches the backend",
        provider.name()
    );
    for pair in starts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap + cfg.tolerance >= cfg.rate,
            "{}: two calls started {gap:?} apart, rate is {:?}",
            provider.name(),
            cfg.rate
        );
    }
}

/// [`ConcurrencyLimit`]: `launches` launches at once never have more than
/// `max-concurrency` launch calls at the backend at a time.
pub async fn concurrency_limit_bounds_launch_calls(
    provider: Arc<dyn Provider>,
    cfg: &WrapperSuiteConfig,
) {
    let (probe, seen) = probe(&provider);
    let limited = ConcurrencyLimit::new(probe, Some(cfg.max_concurrency));
    let launch = |_| async {
        let spec = launch_spec(&*provider, &cfg.suite);
        let created = limited.create_instance(&spec).await.ok()?;
        let _ = limited
            .wait_active(&created.external_id, cfg.suite.boot_timeout)
            .await;
        Some(created.external_id)
    };
    let created: Vec<String> = join_all((0..cfg.launches).map(launch))
        .await
        .into_iter()
        .flatten()
        .collect();
    for id in &created {
        if let Err(e) = provider.delete_instance(id).await {
            panic!("{}: delete_instance({id}) failed: {e}", provider.name());
        }
    }
    assert!(
        !created.is_empty(),
        "{}: no launch of the bound check was created",
        provider.name()
    );
    let most = seen.most_launching.load(Ordering::SeqCst);
    assert!(
        (1..=cfg.max_concurrency).contains(&most),
        "{}: {most} launch calls at once, max-concurrency is {}",
        provider.name(),
        cfg.max_concurrency
    );
    assert_eq!(
        limited.available(),
        Some(cfg.max_concurrency),
        "every permit is back"
    );
}

/// [`CapabilityCheck`]: every operation outside the capabilities is
/// answered [`Error::Unsupported`] without reaching the backend; an allowed
/// one reaches it. Returns how many operations were refused.
pub async fn capability_check_answers_without_the_driver(provider: Arc<dyn Provider>) -> usize {
    let (probe, seen) = probe(&provider);
    let checked = CapabilityCheck::new(probe);
    let caps = provider.capabilities();
    let mut refused = Vec::new();
    let unsupported = |operation: &'static str, failed: Option<Error>| match failed {
        Some(Error::Unsupported { operation: op, .. }) if op == operation => operation,
        other => panic!(
            "{}: {operation} outside the capabilities answered {other:?}",
            provider.name()
        ),
    };
    if !caps.instance_listing {
        let r = checked.list_instances_page(None, 10).await;
        refused.push(unsupported("list_instances_page", r.err()));
    }
    if !caps.quota_query {
        refused.push(unsupported("quota", checked.quota().await.err()));
    }
    if !caps.image_upload {
        let spec = ImageUploadSpec {
            diskimage: "suite".to_string(),
            build_id: "0000000001".to_string(),
            upload_id: "0000000001".to_string(),
            external_name: "suite".to_string(),
            path: "/nonexistent/suite.qcow2".into(),
            format: "qcow2".to_string(),
            metadata: BTreeMap::new(),
        };
        refused.push(unsupported(
            "upload_image",
            checked.upload_image(&spec).await.err(),
        ));
        refused.push(unsupported(
            "delete_image",
            checked.delete_image("suite").await.err(),
        ));
        refused.push(unsupported(
            "list_images",
            checked.list_images().await.err(),
        ));
    }
    for operation in &refused {
        assert_eq!(
            seen.calls(operation),
            0,
            "{}: refused {operation} reached the driver",
            provider.name()
        );
    }
    if let Err(e) = checked.get_instance(&missing_id()).await {
        panic!(
            "{}: get_instance through the check failed: {e}",
            provider.name()
        );
    }
    assert_eq!(
        seen.calls("get_instance"),
        1,
        "an allowed call reaches the driver"
    );
    refused.len()
}

/// [`Timed`]: calls and errors are counted per operation, with durations.
pub async fn timed_counts_calls_and_errors(provider: Arc<dyn Provider>, cfg: &SuiteConfig) {
    let metrics = Arc::new(ProviderMetrics::new());
    let timed = Timed::new(Arc::clone(&provider), Arc::clone(&metrics));
    let missing = missing_id();
    for _ in 0..2 {
        if let Err(e) = timed.get_instance(&missing).await {
            panic!("{}: get_instance failed: {e}", provider.name());
        }
    }
    let unknown = timed
        .label_resources(&cfg.pool, "nodepool-suite-no-such-label")
        .await;
    let name = provider.name();
    let get = metrics.get(name, "get_instance").unwrap_or_default();
    assert_eq!(
        (get.calls, get.errors),
        (2, 0),
        "{name}: get_instance counted"
    );
    assert!(get.total >= get.last, "{name}: total covers the last call");
    let label = metrics.get(name, "label_resources").unwrap_or_default();
    assert_eq!(
        (label.calls, label.errors),
        (1, u64::from(unknown.is_err())),
        "{name}: label_resources counted with its outcome"
    );
    assert_eq!(
        metrics.snapshot().len(),
        2,
        "{name}: only called operations"
    );
}

/// Runs every wrapper check on `provider`. A failing check panics.
pub async fn wrapper_suite(provider: Arc<dyn Provider>, cfg: &WrapperSuiteConfig) -> SuiteReport {
    let mut report = SuiteReport::default();
    let mut ran = |name: &'static str| {
        println!("wrapper suite: {name} ... ok");
        report.ran.push(name);
    };
    rate_limit_spaces_call_starts(Arc::clone(&provider), cfg).await;
    ran("rate_limit_spaces_call_starts");
    concurrency_limit_bounds_launch_calls(Arc::clone(&provider), cfg).await;
    ran("concurrency_limit_bounds_launch_calls");
    timed_counts_calls_and_errors(Arc::clone(&provider), &cfg.suite).await;
    ran("timed_counts_calls_and_errors");
    if capability_check_answers_without_the_driver(Arc::clone(&provider)).await > 0 {
        ran("capability_check_answers_without_the_driver");
    } else {
        let name = "capability_check_answers_without_the_driver";
        println!("wrapper suite: {name} ... skipped (every optional operation is supported)");
        report
            .skipped
            .push((name, "every optional operation is supported".to_string()));
    }
    report
}

/// The provider suite ([`provider_suite`]) through the whole wrapper stack
/// ([`stack_with`]: capability check, `max-concurrency` 2, a 1 ms rate,
/// metrics), then a check that the metrics saw the suite's launches.
pub async fn stacked_provider_suite(provider: Arc<dyn Provider>, cfg: &SuiteConfig) -> SuiteReport {
    let metrics = Arc::new(ProviderMetrics::new());
    let settings = StackSettings {
        rate: Duration::from_millis(1),
        max_concurrency: Some(2),
    };
    let stacked = stack_with(Arc::clone(&provider), settings, &metrics);
    let report = provider_suite(&*stacked, cfg).await;
    let created = metrics
        .get(provider.name(), "create_instance")
        .unwrap_or_default();
    assert!(
        created.calls > 0,
        "{}: the stack's metrics saw no create_instance",
        provider.name()
    );
    report
}
