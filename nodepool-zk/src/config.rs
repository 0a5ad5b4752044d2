//! How to reach ZooKeeper: [`ZkConfig`] and its TLS part, [`ZkTls`].

use std::path::PathBuf;
use std::time::Duration;

/// The session timeout upstream nodepool asks for (`zookeeper-timeout`).
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Connection settings of a [`ZkStore`](crate::ZkStore), the same knobs as
/// upstream's `zookeeper-servers`, `zookeeper-tls` and `zookeeper-timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkConfig {
    /// `host:port` of each server of the ensemble.
    pub hosts: Vec<String>,
    /// A path every other path is relative to (`/nodepool-test-1`); made
    /// if missing. `None` uses the server's root, as upstream does.
    pub chroot: Option<String>,
    /// Client certificate and CA; `None` connects in plain text (upstream
    /// nodepool 11 refuses that, but a test server may allow it).
    pub tls: Option<ZkTls>,
    /// The session timeout to negotiate with the server.
    pub session_timeout: Duration,
}

impl ZkConfig {
    /// Plain-text settings for `hosts`, no chroot, the default timeout.
    pub fn new<I, S>(hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            hosts: hosts.into_iter().map(Into::into).collect(),
            chroot: None,
            tls: None,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
        }
    }

    /// The same settings under `chroot`.
    pub fn with_chroot(mut self, chroot: impl Into<String>) -> Self {
        self.chroot = Some(chroot.into());
        self
    }

    /// The same settings over TLS.
    pub fn with_tls(mut self, tls: ZkTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The same settings with another session timeout.
    pub fn with_session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// The connection string: hosts joined with commas.
    pub(crate) fn connect_string(&self) -> String {
        self.hosts.join(",")
    }
}

/// PEM files for a TLS connection (upstream's `zookeeper-tls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkTls {
    /// CA certificate(s) that signed the server's certificate.
    pub ca: PathBuf,
    /// The client certificate.
    pub cert: PathBuf,
    /// The client certificate's private key.
    pub key: PathBuf,
}
