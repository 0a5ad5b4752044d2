//! The driver's own error type, converted to [`nodepool_core::Error`] with
//! the provider's name. Messages never carry credentials or tokens.

use nodepool_core::Error;

/// What went wrong talking to the cloud.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenStackError {
    /// `clouds.yaml` is missing, unreadable or incomplete.
    #[error("{0}")]
    Config(String),
    /// Keystone refused the credentials (401 on `POST /v3/auth/tokens`).
    #[error("authentication failed at {url}: {message}")]
    AuthFailed {
        /// The token URL (no secrets in it).
        url: String,
        /// Keystone's message.
        message: String,
    },
    /// The catalog has no endpoint of this service type for the region
    /// and interface.
    #[error("no {service} endpoint in the catalog (region {region}, interface {interface})")]
    NoEndpoint {
        /// Service type (`compute`, ...).
        service: String,
        /// Region, or "any".
        region: String,
        /// Interface.
        interface: String,
    },
    /// The cloud refused for quota (403/413 with a quota message).
    #[error("quota exceeded ({what}): {message}")]
    Quota {
        /// The exhausted resource, as far as the message tells.
        what: String,
        /// The cloud's message.
        message: String,
    },
    /// The cloud answered with an error status.
    #[error("{method} {url}: HTTP {status}: {message}")]
    Http {
        /// HTTP method.
        method: String,
        /// URL (path and endpoint; never credentials).
        url: String,
        /// Status code.
        status: u16,
        /// The error message of the body.
        message: String,
    },
    /// No answer: connection refused, reset or dropped, or a timeout.
    #[error("{method} {url}: {message}")]
    Transport {
        /// HTTP method.
        method: String,
        /// URL.
        url: String,
        /// What happened.
        message: String,
    },
    /// The answer was not the JSON the API documents.
    #[error("{url}: unexpected answer: {message}")]
    BadResponse {
        /// URL.
        url: String,
        /// What was wrong.
        message: String,
    },
    /// Something the cloud does not have (flavor, image, network).
    #[error("{0}")]
    NotFound(String),
    /// A local I/O failure (reading an image file).
    #[error("{0}")]
    Io(String),
    /// The server or image reached a failed state.
    #[error("{0}")]
    Failed(String),
}

impl OpenStackError {
    /// Whether trying again may help: transport errors, 5xx, 409 and 429
    /// yes; quota yes (after waiting); other 4xx and config no.
    pub fn is_retryable(&self) -> bool {
        match self {
            OpenStackError::Transport { .. } | OpenStackError::Quota { .. } => true,
            OpenStackError::Http { status, .. } => {
                *status >= 500 || *status == 409 || *status == 429 || *status == 408
            }
            OpenStackError::Failed(_) | OpenStackError::BadResponse { .. } => true,
            OpenStackError::Config(_)
            | OpenStackError::AuthFailed { .. }
            | OpenStackError::NoEndpoint { .. }
            | OpenStackError::NotFound(_)
            | OpenStackError::Io(_) => false,
        }
    }

    /// The HTTP status, for an answer with an error status.
    pub fn status(&self) -> Option<u16> {
        match self {
            OpenStackError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Convert to the core error of provider `provider`.
    pub fn into_core(self, provider: &str) -> Error {
        match self {
            OpenStackError::Quota { what, .. } => Error::QuotaExceeded {
                provider: provider.to_string(),
                resource: what,
            },
            other => Error::Cloud {
                provider: provider.to_string(),
                retryable: other.is_retryable(),
                message: other.to_string(),
            },
        }
    }
}

/// The resource a quota message names ("Quota exceeded for cores: ...").
pub(crate) fn quota_resource(message: &str) -> String {
    let lower = message.to_lowercase();
    for what in [
        "instances",
        "cores",
        "ram",
        "ports",
        "volumes",
        "gigabytes",
        "floatingip",
    ] {
        if lower.contains(what) {
            return what.to_string();
        }
    }
    "unknown".to_string()
}

/// Whether an error message from the cloud is about quota (upstream's
/// checks: "quota exceeded", "number of ports exceeded", or both
/// "exceeds" and "quota").
pub(crate) fn is_quota_message(message: &str) -> bool {
    let lower = message.to_lowercase();
    lower.contains("quota exceeded")
        || lower.contains("number of ports exceeded")
        || (lower.contains("exceeds") && lower.contains("quota"))
        || lower.contains("overquota")
}
