//! Small helpers every stage uses: a poison-tolerant mutex lock, the
//! store's clock, and the wait of a task between passes.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Lock a std mutex, recovering from poisoning (the data are caches and
/// bookkeeping that stay consistent per operation).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Seconds since the epoch, as upstream writes `state_time`.
pub(crate) fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Wait for `notify` or `interval`, whichever comes first, or cancellation.
/// Returns false when cancelled.
pub(crate) async fn wait_or_tick(
    notify: &Notify,
    interval: Duration,
    cancel: &CancellationToken,
) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = notify.notified() => true,
        _ = tokio::time::sleep(interval) => true,
    }
}
