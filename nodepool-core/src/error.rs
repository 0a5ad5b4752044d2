//! The crate's error type.

use std::time::Duration;

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
    /// A cloud API failure that may succeed when tried again.
    #[error("provider {provider}: {message}")]
    Cloud {
        /// The provider name.
        provider: String,
        /// What the cloud said.
        message: String,
        /// Whether a retry can help.
        retryable: bool,
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
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Anything else, with a message.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Whether trying the same operation again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Cloud { retryable, .. } => *retryable,
            Error::Timeout { .. }
            | Error::StoreUnavailable(_)
            | Error::LockHeld { .. }
            | Error::VersionConflict { .. }
            | Error::QuotaExceeded { .. } => true,
            _ => false,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
