//! What the launcher does after a failed launch attempt: a decision read
//! from the error's [`ErrorKind`], never from its message.
//!
//! The launch loop asks its [`RetryPolicy`] after every failed attempt and
//! only acts on the answer: [`RetryDecision::Pause`] gives the node up as
//! `aborted` without spending an attempt (the request is handled again
//! once capacity is back, as upstream does on a quota error),
//! [`RetryDecision::Retry`] deletes the failed instance and tries again,
//! [`RetryDecision::Fail`] fails the node at once with the reason.

use std::fmt::Debug;

use crate::error::{Error, ErrorKind};

/// What to do after a failed launch attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again; the failed attempt counts against `launch-retries`.
    Retry,
    /// The cloud is at a limit: give the node up without counting a
    /// failure; the request waits for capacity.
    Pause,
    /// Give up now: trying again cannot help, or no attempt is left.
    Fail,
}

/// Decides, from a failed attempt's error, what the launch loop does next.
pub trait RetryPolicy: Send + Sync + Debug + 'static {
    /// The decision after attempt number `attempt` (1-based) of at most
    /// `max_attempts` failed with `error`.
    fn decide(&self, error: &Error, attempt: u32, max_attempts: u32) -> RetryDecision;
}

/// The policy of the reference launcher, by [`ErrorKind`]:
///
/// | kind | decision |
/// |---|---|
/// | `Quota` | [`RetryDecision::Pause`] |
/// | `Transient`, `Conflict` | [`RetryDecision::Retry`] while attempts are left |
/// | anything else (`Permanent`, `NotFound`, `Config`, `Unsupported`, `Cancelled`) | [`RetryDecision::Fail`] |
#[derive(Debug, Clone, Copy, Default)]
pub struct KindRetryPolicy;

impl RetryPolicy for KindRetryPolicy {
    fn decide(&self, error: &Error, attempt: u32, max_attempts: u32) -> RetryDecision {
        match error.kind() {
            ErrorKind::Quota => RetryDecision::Pause,
            ErrorKind::Transient | ErrorKind::Conflict if attempt < max_attempts => {
                RetryDecision::Retry
            }
            _ => RetryDecision::Fail,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn cloud(retryable: bool) -> Error {
        let kind = if retryable {
            ErrorKind::Transient
        } else {
            ErrorKind::Permanent
        };
        Error::cloud("p", kind, "boom")
    }

    #[test]
    fn quota_pauses_without_spending_an_attempt() {
        let quota = Error::QuotaExceeded {
            provider: "p".into(),
            resource: "instances".into(),
        };
        // Even on the last attempt: a quota error is not a failure.
        assert_eq!(KindRetryPolicy.decide(&quota, 3, 3), RetryDecision::Pause);
    }

    #[test]
    fn transient_errors_retry_until_attempts_run_out() {
        let timeout = Error::Timeout {
            what: "instance x".into(),
            after: Duration::from_secs(1),
        };
        assert_eq!(KindRetryPolicy.decide(&timeout, 1, 3), RetryDecision::Retry);
        assert_eq!(
            KindRetryPolicy.decide(&cloud(true), 2, 3),
            RetryDecision::Retry
        );
        assert_eq!(
            KindRetryPolicy.decide(&cloud(true), 3, 3),
            RetryDecision::Fail
        );
    }

    #[test]
    fn permanent_errors_fail_at_once() {
        assert_eq!(
            KindRetryPolicy.decide(&cloud(false), 1, 3),
            RetryDecision::Fail
        );
        let missing = Error::NotFound {
            kind: "current upload of image",
            id: "ubuntu".into(),
        };
        assert_eq!(KindRetryPolicy.decide(&missing, 1, 3), RetryDecision::Fail);
        let stopping = Error::cancelled("the launcher");
        assert_eq!(KindRetryPolicy.decide(&stopping, 1, 3), RetryDecision::Fail);
    }
}
