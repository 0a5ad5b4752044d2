//! Deadlines that never overflow: a timeout read from a config or a cloud
//! (`boot-timeout: 1e30`, `image-upload-timeout: 9223372036854775807`)
//! waits as long as one can instead of panicking in `Instant + Duration`.

use std::time::Duration;

use tokio::time::Instant;

/// The longest wait a deadline means: a century.
pub const LONGEST_WAIT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The instant `timeout` from now; at most [`LONGEST_WAIT`] away.
pub fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout.min(LONGEST_WAIT)).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_timeout_gives_a_deadline() {
        let now = Instant::now();
        assert!(deadline_after(Duration::from_secs(5)) >= now + Duration::from_secs(5));
        let far = deadline_after(Duration::MAX);
        assert!(far >= now + LONGEST_WAIT);
    }
}
