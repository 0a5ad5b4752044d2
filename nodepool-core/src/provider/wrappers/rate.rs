//! [`RateLimit`]: upstream's `rate`, per provider.

use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::around_every_call;
use crate::provider::Provider;
use crate::Result;

/// The longest spacing [`RateLimit`] keeps: a year (a `rate` beyond it
/// stops the provider's calls just as well).
pub const MAX_RATE: Duration = Duration::from_secs(365 * 24 * 3600);

/// Starts the calls to the inner provider at least `rate` apart (upstream's
/// provider `rate`: "seconds to wait between API calls"). Calls queue in
/// the order they ask; a call that finds the last turn long past starts at
/// once. Waiting inside a driver's own `wait_active` (its polls) is one
/// call here.
#[derive(Debug)]
pub struct RateLimit<P> {
    inner: P,
    rate: Duration,
    next: Mutex<Option<Instant>>,
}

impl<P: Provider> RateLimit<P> {
    /// Calls to `inner` start at least `rate` apart (zero: no spacing;
    /// more than [`MAX_RATE`] counts as [`MAX_RATE`], so no deadline
    /// overflows).
    pub fn new(inner: P, rate: Duration) -> Self {
        Self {
            inner,
            rate: rate.min(MAX_RATE),
            next: Mutex::new(None),
        }
    }

    /// The wrapped provider.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// The spacing.
    pub fn rate(&self) -> Duration {
        self.rate
    }

    /// Wait for this call's turn.
    async fn turn(&self) {
        if self.rate.is_zero() {
            return;
        }
        let start = {
            let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let start = next.map_or(now, |n| n.max(now));
            *next = Some(start + self.rate);
            start
        };
        tokio::time::sleep_until(start).await;
    }

    async fn around<T>(
        &self,
        _operation: &'static str,
        call: impl Future<Output = Result<T>> + Send,
    ) -> Result<T> {
        self.turn().await;
        call.await
    }
}

around_every_call!(RateLimit);
