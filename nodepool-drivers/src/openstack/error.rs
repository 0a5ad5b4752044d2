//! The driver's own error type, converted to [`nodepool_core::Error`] with
//! the provider's name. Messages never carry credentials or tokens.

use nodepool_core::{Error, ErrorKind};

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
    /// What the caller may do next: transport errors, 5xx, 408, 409 and
    /// 429 are passing; quota waits for capacity; 404 and missing
    /// resources are not found; bad credentials, endpoints and settings
    /// are config; other 4xx and local I/O are permanent.
    pub fn kind(&self) -> ErrorKind {
        match self {
            OpenStackError::Quota { .. } => ErrorKind::Quota,
            OpenStackError::Transport { .. }
            | OpenStackError::Failed(_)
            | OpenStackError::BadResponse { .. } => ErrorKind::Transient,
            OpenStackError::Http { status, .. } => match *status {
                404 => ErrorKind::NotFound,
                408 | 409 | 429 => ErrorKind::Transient,
                s if s >= 500 => ErrorKind::Transient,
                _ => ErrorKind::Permanent,
            },
            OpenStackError::NotFound(_) => ErrorKind::NotFound,
            OpenStackError::Config(_)
            | OpenStackError::AuthFailed { .. }
            | OpenStackError::NoEndpoint { .. } => ErrorKind::Config,
            OpenStackError::Io(_) => ErrorKind::Permanent,
        }
    }

    /// Whether trying again may help ([`ErrorKind::is_retryable`]).
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
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
                kind: other.kind(),
                message: other.to_string(),
                source: Some(Box::new(other)),
            },
        }
    }
}

/// The resource a quota message names ("Quota exceeded for cores: ...",
/// "... exceeds allowed gigabytes quota"): the first whole word that is a
/// quota resource, else "unknown".
pub(crate) fn quota_resource(message: &str) -> String {
    const RESOURCES: &[&str] = &[
        "instances",
        "cores",
        "ram",
        "ports",
        "volumes",
        "gigabytes",
        "floatingip",
    ];
    message
        .to_lowercase()
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .find(|word| RESOURCES.contains(word))
        .unwrap_or("unknown")
        .to_string()
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

/// Whether the fault message of a server in ERROR means the cloud ran out
/// of quota while building it. Upstream checks the fault it sees right
/// after the create call for "quota exceeded" or "number of ports
/// exceeded", and the fault of a server that went to ERROR later for both
/// "exceeds" and "quota"; when Nova's fault appears is timing, so both
/// tests apply to every fault here.
pub(crate) fn is_quota_fault(message: &str) -> bool {
    let lower = message.to_lowercase();
    lower.contains("quota exceeded")
        || lower.contains("number of ports exceeded")
        || (lower.contains("exceeds") && lower.contains("quota"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_faults_are_recognised_as_upstream_does() {
        assert!(is_quota_fault(
            "Build of instance x aborted: VolumeSizeExceedsAvailableQuota: \
             Requested volume or snapshot exceeds allowed gigabytes quota."
        ));
        assert!(is_quota_fault(
            "Quota exceeded for cores: Requested 2, but already used 40 of 40 cores"
        ));
        assert!(is_quota_fault("Maximum number of ports exceeded"));
        assert!(!is_quota_fault("No valid host was found."));
        assert!(!is_quota_fault("Exceeded maximum number of retries."));
        assert_eq!(
            quota_resource(
                "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot \
                 exceeds allowed gigabytes quota."
            ),
            "gigabytes"
        );
        assert_eq!(
            quota_resource("Quota exceeded for resources: ['floatingip']."),
            "floatingip"
        );
        assert_eq!(quota_resource("Quota exceeded for ram: ..."), "ram");
        assert_eq!(quota_resource("Over quota"), "unknown");
    }
}
