//! The driver's error type: an AWS error code decides the [`ErrorKind`].
//! Messages never carry credentials.

use nodepool_core::{Error, ErrorKind};

/// What went wrong talking to AWS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AwsError {
    /// Missing or unusable credentials or settings.
    #[error("{0}")]
    Config(String),
    /// AWS answered with an error code.
    #[error("{action}: {code}: {message} (HTTP {status})")]
    Api {
        /// The API action (`RunInstances`, `PUT object`, ...).
        action: String,
        /// HTTP status.
        status: u16,
        /// AWS's error code (`InsufficientInstanceCapacity`, ...).
        code: String,
        /// AWS's message.
        message: String,
    },
    /// No answer: connection refused or reset, or a timeout.
    #[error("{action}: {message}")]
    Transport {
        /// The API action.
        action: String,
        /// What happened.
        message: String,
    },
    /// An answer that is not what the API documents.
    #[error("{action}: unexpected answer: {message}")]
    BadResponse {
        /// The API action.
        action: String,
        /// What was wrong.
        message: String,
    },
    /// Something the account does not have (an image matching filters).
    #[error("{0}")]
    NotFound(String),
    /// A launch or import that failed in the cloud.
    #[error("{0}")]
    Failed(String),
    /// A local I/O failure (reading an image file).
    #[error("{0}")]
    Io(String),
}

/// Error codes meaning the account or the region is out of capacity or
/// quota: the pool pauses until capacity is back.
const QUOTA_CODES: &[&str] = &[
    "InsufficientInstanceCapacity",
    "InsufficientHostCapacity",
    "HostLimitExceeded",
    "InsufficientCapacity",
    "VcpuLimitExceeded",
    "MaxSpotInstanceCountExceeded",
    "InstanceLimitExceeded",
    "VolumeLimitExceeded",
    "MaxIOPSLimitExceeded",
    "SpotMaxPriceTooLow",
];

/// Error codes of a passing fault: retried with backoff.
const TRANSIENT_CODES: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "SlowDown",
    "ServiceUnavailable",
    "Unavailable",
    "InternalError",
    "InternalFailure",
    "RequestTimeout",
    "RequestTimeoutException",
    "IncorrectInstanceState",
];

/// Error codes of bad credentials or permissions.
const CONFIG_CODES: &[&str] = &[
    "AuthFailure",
    "UnauthorizedOperation",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "OptInRequired",
    "AccessDenied",
    "AccessDeniedException",
    "UnrecognizedClientException",
    "NoSuchBucket",
];

/// The kind of an AWS error code with its HTTP status.
pub fn kind_of_code(code: &str, status: u16) -> ErrorKind {
    if QUOTA_CODES.contains(&code) {
        ErrorKind::Quota
    } else if TRANSIENT_CODES.contains(&code) || status >= 500 || status == 429 {
        ErrorKind::Transient
    } else if code.ends_with(".NotFound")
        || code == "NoSuchKey"
        || code == "ResourceNotFoundException"
    {
        ErrorKind::NotFound
    } else if CONFIG_CODES.contains(&code) {
        ErrorKind::Config
    } else if status == 404 {
        ErrorKind::NotFound
    } else {
        ErrorKind::Permanent
    }
}

impl AwsError {
    /// What the caller may do next.
    pub fn kind(&self) -> ErrorKind {
        match self {
            AwsError::Config(_) => ErrorKind::Config,
            AwsError::Api { code, status, .. } => kind_of_code(code, *status),
            AwsError::Transport { .. } | AwsError::BadResponse { .. } => ErrorKind::Transient,
            AwsError::NotFound(_) => ErrorKind::NotFound,
            AwsError::Failed(_) | AwsError::Io(_) => ErrorKind::Permanent,
        }
    }

    /// AWS's error code, for an error answer.
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Convert to the core error of provider `provider`: capacity and
    /// limit codes become [`Error::QuotaExceeded`] naming the code.
    pub fn into_core(self, provider: &str) -> Error {
        match self.kind() {
            ErrorKind::Quota => Error::QuotaExceeded {
                provider: provider.to_string(),
                resource: format!("{} ({self})", self.code().unwrap_or("capacity")),
            },
            kind => Error::Cloud {
                provider: provider.to_string(),
                kind,
                message: self.to_string(),
                source: Some(Box::new(self)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: &str, status: u16) -> AwsError {
        AwsError::Api {
            action: "RunInstances".into(),
            status,
            code: code.into(),
            message: "m".into(),
        }
    }

    #[test]
    fn codes_map_to_the_kinds_that_drive_retries() {
        for code in [
            "InsufficientInstanceCapacity",
            "VcpuLimitExceeded",
            "MaxSpotInstanceCountExceeded",
            "InstanceLimitExceeded",
        ] {
            assert_eq!(api(code, 400).kind(), ErrorKind::Quota, "{code}");
            assert!(matches!(
                api(code, 400).into_core("p"),
                Error::QuotaExceeded { .. }
            ));
        }
        assert_eq!(
            api("RequestLimitExceeded", 503).kind(),
            ErrorKind::Transient
        );
        assert_eq!(api("Whatever", 500).kind(), ErrorKind::Transient);
        assert_eq!(
            api("InvalidInstanceID.NotFound", 400).kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            api("InvalidAMIID.NotFound", 400).kind(),
            ErrorKind::NotFound
        );
        assert_eq!(api("AuthFailure", 401).kind(), ErrorKind::Config);
        assert_eq!(
            api("InvalidParameterValue", 400).kind(),
            ErrorKind::Permanent
        );
        let transport = AwsError::Transport {
            action: "DescribeInstances".into(),
            message: "timed out".into(),
        };
        assert!(transport.into_core("p").is_retryable());
    }
}
