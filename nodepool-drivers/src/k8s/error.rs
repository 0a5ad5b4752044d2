//! The drivers' own error type, converted to [`nodepool_core::Error`] with
//! the provider's name. Messages never carry tokens or keys.

use nodepool_core::{Error, ErrorKind};

/// What went wrong reaching or using the Kubernetes API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KubeError {
    /// The kubeconfig or in-cluster credentials are missing or incomplete.
    #[error("kubernetes credentials: {0}")]
    Config(String),
    /// The API answered with a `Status` error.
    #[error("{method} {path}: HTTP {code} {reason}: {message}")]
    Status {
        /// HTTP method.
        method: String,
        /// API path (no credentials in it).
        path: String,
        /// HTTP status code.
        code: u16,
        /// The Status `reason` (`NotFound`, `AlreadyExists`, `Forbidden`...).
        reason: String,
        /// The Status `message`.
        message: String,
    },
    /// No answer: connection refused or reset, a timeout, a broken body.
    #[error("{method} {path}: {message}")]
    Transport {
        /// HTTP method.
        method: String,
        /// API path.
        path: String,
        /// What happened.
        message: String,
    },
    /// An answer we cannot use (not JSON, a field missing).
    #[error("{0}")]
    Invalid(String),
    /// A pod or namespace did not get ready.
    #[error("{0}")]
    Launch(String),
    /// A wait ran out of time.
    #[error("{0}")]
    Timeout(String),
}

impl KubeError {
    /// The HTTP status code of a `Status` error.
    pub fn code(&self) -> Option<u16> {
        match self {
            KubeError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the object was not there (404).
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }

    /// What a retry can do about it: 404 NotFound, 409 Conflict, 422
    /// (invalid object) Permanent, a 403 for an exceeded ResourceQuota
    /// Quota, 429 and 5xx Transient.
    pub fn kind(&self) -> ErrorKind {
        match self {
            KubeError::Config(_) => ErrorKind::Config,
            KubeError::Transport { .. } | KubeError::Timeout(_) => ErrorKind::Transient,
            KubeError::Invalid(_) | KubeError::Launch(_) => ErrorKind::Permanent,
            KubeError::Status { code, message, .. } => match code {
                404 => ErrorKind::NotFound,
                409 => ErrorKind::Conflict,
                403 if message.contains("exceeded quota") => ErrorKind::Quota,
                401 => ErrorKind::Config,
                408 | 429 | 500..=599 => ErrorKind::Transient,
                _ => ErrorKind::Permanent,
            },
        }
    }

    /// The core error of provider `provider`.
    pub fn into_core(self, provider: &str) -> Error {
        let kind = self.kind();
        Error::cloud(provider, kind, self.to_string())
    }
}
