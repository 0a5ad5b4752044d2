//! [`Timed`]: task metrics per provider and operation.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::around_every_call;
use crate::provider::Provider;
use crate::Result;

/// What the calls of one operation of one provider added up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OperationStats {
    /// Calls that finished (successful or not).
    pub calls: u64,
    /// Calls that returned an error.
    pub errors: u64,
    /// Time spent in all of them.
    pub total: Duration,
    /// Time the last one took.
    pub last: Duration,
}

/// One row of [`ProviderMetrics::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationSnapshot {
    /// The provider name.
    pub provider: String,
    /// The [`Provider`] method (`create_instance`, `get_instance`, ...).
    pub operation: &'static str,
    /// Its numbers so far.
    pub stats: OperationStats,
}

/// Task metrics of any number of providers, shared by their [`Timed`]
/// wrappers and read by the daemon's statsd reporter and `/metrics`.
#[derive(Debug, Default)]
pub struct ProviderMetrics {
    operations: Mutex<BTreeMap<(String, &'static str), OperationStats>>,
}

impl ProviderMetrics {
    /// No calls recorded yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record one finished call.
    pub fn record(&self, provider: &str, operation: &'static str, took: Duration, failed: bool) {
        let mut ops = self
            .operations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let stats = ops.entry((provider.to_string(), operation)).or_default();
        stats.calls += 1;
        stats.errors += u64::from(failed);
        stats.total += took;
        stats.last = took;
    }

    /// The numbers of one operation of one provider, if it was called.
    pub fn get(&self, provider: &str, operation: &str) -> Option<OperationStats> {
        let ops = self
            .operations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        ops.iter()
            .find(|((p, o), _)| p == provider && *o == operation)
            .map(|(_, s)| *s)
    }

    /// Every operation called so far, by provider and operation name.
    pub fn snapshot(&self) -> Vec<OperationSnapshot> {
        let ops = self
            .operations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        ops.iter()
            .map(|((provider, operation), stats)| OperationSnapshot {
                provider: provider.clone(),
                operation,
                stats: *stats,
            })
            .collect()
    }
}

/// Records each call to the inner provider (count, error, duration) in a
/// shared [`ProviderMetrics`] under the provider's name and the method.
#[derive(Debug)]
pub struct Timed<P> {
    inner: P,
    metrics: Arc<ProviderMetrics>,
}

impl<P: Provider> Timed<P> {
    /// Time the calls to `inner` into `metrics`.
    pub fn new(inner: P, metrics: Arc<ProviderMetrics>) -> Self {
        Self { inner, metrics }
    }

    /// The wrapped provider.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    async fn around<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T>> + Send,
    ) -> Result<T> {
        let start = Instant::now();
        let result = call.await;
        self.metrics.record(
            self.inner.name(),
            operation,
            start.elapsed(),
            result.is_err(),
        );
        result
    }
}

around_every_call!(Timed);
