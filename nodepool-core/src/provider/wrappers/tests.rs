//! The wrapper suite on the in-core memory cloud, and the stack's settings.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::testing::memory::MemoryProvider;
use crate::testing::provider::SuiteConfig;
use crate::testing::wrappers::{wrapper_suite, WrapperSuiteConfig};

#[tokio::test(start_paused = true)]
async fn memory_provider_passes_the_wrapper_suite() {
    let provider: Arc<dyn Provider> = Arc::new(MemoryProvider::new("mem"));
    let cfg = WrapperSuiteConfig::new(SuiteConfig::new("main", "small"));
    let report = wrapper_suite(provider, &cfg).await;
    assert!(report.skipped.is_empty(), "{report:?}");
    assert_eq!(report.ran.len(), 4);
}

#[tokio::test(start_paused = true)]
async fn the_stack_refuses_unsupported_calls_before_they_take_a_rate_turn() {
    let metrics = Arc::new(ProviderMetrics::new());
    let settings = StackSettings {
        rate: Duration::from_secs(10),
        max_concurrency: Some(1),
    };
    let stacked = stack_with(Arc::new(MemoryProvider::new("mem")), settings, &metrics);
    let start = tokio::time::Instant::now();
    assert!(stacked.get_instance("x").await.expect("get").is_none());
    assert!(matches!(
        stacked.quota().await,
        Err(crate::Error::Unsupported {
            operation: "quota",
            ..
        })
    ));
    assert!(stacked.get_instance("x").await.expect("get").is_none());
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.len(), 1, "{snapshot:?}");
    assert_eq!(snapshot[0].operation, "get_instance");
    assert_eq!(snapshot[0].stats.calls, 2);
}

#[derive(Debug)]
struct NoDriverConfig;

impl crate::config::DriverConfig for NoDriverConfig {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[test]
fn any_rate_number_gives_settings_without_panicking() {
    let with_rate = |rate: f64| {
        let mut config = crate::config::ProviderCommon {
            name: "p".into(),
            driver: "test".into(),
            location: crate::config::Location::default(),
            max_concurrency: -1,
            priority: None,
        }
        .into_config(Arc::new(NoDriverConfig));
        config.rate = rate;
        StackSettings::from_config(&config).rate
    };
    assert_eq!(with_rate(0.5), Duration::from_millis(500));
    assert_eq!(with_rate(1.0e30), MAX_RATE);
    assert_eq!(with_rate(f64::INFINITY), MAX_RATE);
    assert_eq!(with_rate(f64::NAN), Duration::ZERO);
    assert_eq!(with_rate(-1.0), Duration::ZERO);
    // A huge spacing set directly is capped, so deadlines never overflow.
    let limited = RateLimit::new(MemoryProvider::new("p"), Duration::MAX);
    assert_eq!(limited.rate(), MAX_RATE);
}
