//! The crate's error type and the kinds that drive retries.
//!
//! Every [`Error`] has an [`ErrorKind`] ([`Error::kind`]): callers decide
//! from the kind, never from the message, whether to retry at once, pause
//! until capacity is back, or give up (see
//! [`RetryPolicy`](crate::retry::RetryPolicy) for launches).

use std::time::Duration;

/// A boxed error kept as the `source` of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What kind of failure an [`Error`] is: what the caller may do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// What was asked for does not exist (a record, an instance, an image).
    NotFound,
    /// Somebody else holds the lock or changed the record first; trying
    /// again later may succeed.
    Conflict,
    /// A quota or capacity limit: pause, and try again once capacity is
    /// back, without counting it as a failed attempt.
    Quota,
    /// A passing fault (network, timeout, a 5xx answer, a store
    /// reconnecting): trying again may succeed.
    Transient,
    /// Trying again cannot help (a refused request, a failed boot, invalid
    /// input or data).
    Permanent,
    /// The configuration is invalid.
    Config,
    /// The backend does not support the operation.
    Unsupported,
    /// The operation stopped because its engine is shutting down.
    Cancelled,
}

impl ErrorKind {
    /// Whether trying the same operation again may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Conflict | ErrorKind::Quota | ErrorKind::Transient
        )
    }

    /// The kind of an I/O error: timeouts and interruptions are passing,
    /// a missing file is not found, anything else is permanent.
    pub fn of_io(e: &std::io::Error) -> ErrorKind {
        use std::io::ErrorKind as Io;
        match e.kind() {
            Io::NotFound => ErrorKind::NotFound,
            Io::Interrupted
            | Io::TimedOut
            | Io::WouldBlock
            | Io::ConnectionRefused
            | Io::ConnectionReset
            | Io::ConnectionAborted
            | Io::BrokenPipe => ErrorKind::Transient,
            Io::AlreadyExists => ErrorKind::Conflict,
            _ => ErrorKind::Permanent,
        }
    }
}

/// Errors of nodepool-core and of the backends implementing its traits.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A node id that the store does not hold.
    #[error("node {id} not found")]
    NodeNotFound {
        /// The node id.
        id: String,
    },
    /// A node request id that the store does not hold.
    #[error("node request {id} not found")]
    RequestNotFound {
        /// The request id.
        id: String,
    },
    /// Any other record that the store does not hold.
    #[error("{kind} {id} not found")]
    NotFound {
        /// What was looked for ("image build", "upload", ...).
        kind: &'static str,
        /// Its id or path.
        id: String,
    },
    /// A record that must be new exists already.
    #[error("{kind} {id} already exists")]
    AlreadyExists {
        /// What was created ("image build", ...).
        kind: &'static str,
        /// Its id or path.
        id: String,
    },
    /// A lock is held by somebody else (non-blocking attempt or timeout).
    #[error("lock on {target} is held by another owner")]
    LockHeld {
        /// What the lock protects.
        target: String,
    },
    /// A lock handle that is no longer valid (released, or its session died).
    #[error("lock on {target} was lost")]
    LockLost {
        /// What the lock protected.
        target: String,
    },
    /// A conditional write found another version than expected.
    #[error("{target} was changed concurrently (expected version {expected})")]
    VersionConflict {
        /// The record.
        target: String,
        /// The version the writer expected.
        expected: i64,
    },
    /// A node request was declined by every provider that could serve it.
    #[error("node request {id} failed (declined by {})", declined_by.join(", "))]
    RequestFailed {
        /// The request id.
        id: String,
        /// The launchers that declined it.
        declined_by: Vec<String>,
    },
    /// A node that a request was given is no longer allocated to it.
    #[error("node {node} is no longer allocated to request {request}")]
    NotAllocated {
        /// The node id.
        node: String,
        /// The request id.
        request: String,
    },
    /// The cloud refused because a quota is exhausted.
    #[error("provider {provider}: quota exceeded for {resource}")]
    QuotaExceeded {
        /// The provider name.
        provider: String,
        /// The exhausted resource ("instances", "cores", "ram", ...).
        resource: String,
    },
    /// An operation the backend does not support.
    #[error("provider {provider} does not support {operation}")]
    Unsupported {
        /// The provider (or store) name.
        provider: String,
        /// The operation.
        operation: &'static str,
    },
    /// A timeout while waiting for something.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        after: Duration,
    },
    /// A cloud API failure, with the kind the driver gave it (a passing
    /// fault is [`ErrorKind::Transient`], a refused request
    /// [`ErrorKind::Permanent`], ...).
    #[error("provider {provider}: {message}")]
    Cloud {
        /// The provider name.
        provider: String,
        /// What the caller may do next.
        kind: ErrorKind,
        /// What the cloud said.
        message: String,
        /// The client's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// The store lost its connection or session; a retry after reconnect can help.
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    /// A record in the store could not be decoded.
    #[error("corrupt record at {path}: {message}")]
    Corrupt {
        /// Where the record lives.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// Input that the operation cannot take (an argument, not the config).
    #[error("{message}")]
    InvalidInput {
        /// What is wrong, as a sentence.
        message: String,
    },
    /// The operation stopped because its engine is shutting down.
    #[error("{what} was stopped")]
    Cancelled {
        /// What was stopped ("the launcher", "build 0000000001 of image x").
        what: String,
    },
    /// A local file operation failed.
    #[error("cannot {action}: {source}")]
    Io {
        /// What was being done ("list /var/lib/nodepool/images").
        action: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A backend's own failure (a store or image builder), with its kind.
    #[error("{message}")]
    Backend {
        /// The backend ("ZooKeeper", "SQLite", "diskimage-builder").
        backend: &'static str,
        /// What the caller may do next.
        kind: ErrorKind,
        /// What failed, as a sentence.
        message: String,
        /// The backend's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NodeNotFound { .. } | Error::RequestNotFound { .. } | Error::NotFound { .. } => {
                ErrorKind::NotFound
            }
            Error::LockHeld { .. } | Error::VersionConflict { .. } => ErrorKind::Conflict,
            Error::QuotaExceeded { .. } => ErrorKind::Quota,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::Timeout { .. } | Error::StoreUnavailable(_) => ErrorKind::Transient,
            Error::Cloud { kind, .. } => *kind,
            Error::AlreadyExists { .. }
            | Error::LockLost { .. }
            | Error::RequestFailed { .. }
            | Error::NotAllocated { .. }
            | Error::Corrupt { .. }
            | Error::InvalidInput { .. } => ErrorKind::Permanent,
            Error::Cancelled { .. } => ErrorKind::Cancelled,
            Error::Io { source, .. } => ErrorKind::of_io(source),
            Error::Backend { kind, .. } => *kind,
            Error::Config(_) => ErrorKind::Config,
        }
    }

    /// Whether trying the same operation again may succeed
    /// ([`ErrorKind::is_retryable`] of [`Error::kind`]).
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    /// An [`Error::Io`] for `action` ("list /some/dir").
    pub fn io(action: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            action: action.into(),
            source,
        }
    }

    /// An [`Error::Cloud`] of provider `provider` without a source.
    pub fn cloud(provider: impl Into<String>, kind: ErrorKind, message: impl Into<String>) -> Self {
        Error::Cloud {
            provider: provider.into(),
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An [`Error::Cancelled`] for `what` ("the launcher").
    pub fn cancelled(what: impl Into<String>) -> Self {
        Error::Cancelled { what: what.into() }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_say_whether_a_retry_can_help() {
        let quota = Error::QuotaExceeded {
            provider: "p".into(),
            resource: "cores".into(),
        };
        assert_eq!(quota.kind(), ErrorKind::Quota);
        assert!(quota.is_retryable());
        let refused = Error::Cloud {
            provider: "p".into(),
            message: "400 bad flavor".into(),
            kind: ErrorKind::Permanent,
            source: None,
        };
        assert_eq!(refused.kind(), ErrorKind::Permanent);
        assert!(!refused.is_retryable());
        let lost = Error::StoreUnavailable("connection lost".into());
        assert_eq!(lost.kind(), ErrorKind::Transient);
        assert!(lost.is_retryable());
        let stopping = Error::cancelled("the launcher");
        assert_eq!(stopping.kind(), ErrorKind::Cancelled);
        assert!(!stopping.is_retryable());
        assert_eq!(stopping.to_string(), "the launcher was stopped");
    }

    #[test]
    fn io_errors_keep_their_source_and_kind() {
        let e = Error::io(
            "list /images",
            std::io::Error::new(std::io::ErrorKind::TimedOut, "slow disk"),
        );
        assert_eq!(e.kind(), ErrorKind::Transient);
        assert_eq!(e.to_string(), "cannot list /images: slow disk");
        assert!(std::error::Error::source(&e).is_some());
        let missing = Error::io(
            "read /x",
            std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        );
        assert_eq!(missing.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn backend_errors_carry_their_kind() {
        let e = Error::Backend {
            backend: "ZooKeeper",
            kind: ErrorKind::Transient,
            message: "ZooKeeper delete /x: children keep appearing".into(),
            source: None,
        };
        assert!(e.is_retryable());
        assert_eq!(
            e.to_string(),
            "ZooKeeper delete /x: children keep appearing"
        );
    }
}
