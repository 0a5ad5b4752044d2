//! [`ConcurrencyLimit`]: the provider's `max-concurrency` as a semaphore.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::around_every_call;
use crate::provider::Provider;
use crate::Result;

/// The operations that hold a permit: the calls of one launch.
const LAUNCH_CALLS: [&str; 2] = ["create_instance", "wait_active"];

/// Holds one of `max-concurrency` permits during each launch call
/// (`create_instance`, `wait_active`) to the inner provider; other calls
/// pass freely (object_store's `LimitStore`). A backstop: the launcher's
/// pools already count their launches for scheduling.
#[derive(Debug)]
pub struct ConcurrencyLimit<P> {
    inner: P,
    permits: Option<Arc<Semaphore>>,
}

impl<P: Provider> ConcurrencyLimit<P> {
    /// At most `limit` launch calls to `inner` at once (`None`: no limit).
    pub fn new(inner: P, limit: Option<usize>) -> Self {
        Self {
            inner,
            permits: limit.map(|n| Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS)))),
        }
    }

    /// The wrapped provider.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// Permits free now (`None` without a limit).
    pub fn available(&self) -> Option<usize> {
        self.permits.as_ref().map(|s| s.available_permits())
    }

    async fn around<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T>> + Send,
    ) -> Result<T> {
        let permits = self
            .permits
            .as_ref()
            .filter(|_| LAUNCH_CALLS.contains(&operation));
        // The semaphore is never closed, so acquiring only waits.
        let _permit = match permits {
            Some(semaphore) => semaphore.acquire().await.ok(),
            None => None,
        };
        call.await
    }
}

around_every_call!(ConcurrencyLimit);
