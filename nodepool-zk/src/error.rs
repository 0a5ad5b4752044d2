//! The crate's error type and its mapping onto `nodepool_core::Error`.

use std::path::PathBuf;

use nodepool_core::error::ErrorKind;

/// What can go wrong when opening a [`ZkStore`](crate::ZkStore). Once
/// open, the store reports through `nodepool_core::Error` like every
/// [`NodeStore`](nodepool_core::store::NodeStore).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No hosts were configured.
    #[error("no ZooKeeper hosts configured")]
    NoHosts,
    /// A TLS file could not be read or holds no usable PEM data.
    #[error("ZooKeeper TLS {what} {path}: {message}")]
    Tls {
        /// Which file ("CA", "certificate", "key").
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// No session could be established.
    #[error("cannot connect to ZooKeeper at {hosts}: {source}")]
    Connect {
        /// The connection string.
        hosts: String,
        /// The client's error.
        #[source]
        source: zookeeper_client::Error,
    },
    /// The chroot is not an absolute path ZooKeeper accepts.
    #[error("invalid ZooKeeper chroot {chroot:?}")]
    Chroot {
        /// The configured chroot.
        chroot: String,
    },
    /// A ZooKeeper operation failed.
    #[error("ZooKeeper {operation} {path}: {source}")]
    ZooKeeper {
        /// The operation ("create", "get", "add watch", ...).
        operation: &'static str,
        /// The path it was applied to.
        path: String,
        /// The client's error.
        #[source]
        source: zookeeper_client::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether the connection broke while the call was in flight, so that the
/// server may or may not have applied it. `zookeeper-client` 0.11 fails the
/// calls in flight with the transport's error, not only with
/// `ConnectionLoss`: an I/O error such as "Connection reset by peer" or "no
/// response from connection in ..." (`Custom`), or a garbled reply
/// (`UnexpectedError`). The session usually survives (the client
/// reconnects), so an idempotent call can simply be made again.
pub(crate) fn is_connection_broken(e: &zookeeper_client::Error) -> bool {
    use zookeeper_client::Error as Zk;
    matches!(
        e,
        Zk::ConnectionLoss | Zk::Custom(_) | Zk::UnexpectedError(_) | Zk::Timeout
    )
}

/// Whether the session is over for good: its ephemeral nodes (locks,
/// requests, registrations) are gone with it.
pub(crate) fn is_session_ended(e: &zookeeper_client::Error) -> bool {
    use zookeeper_client::Error as Zk;
    matches!(e, Zk::SessionExpired | Zk::ClientClosed)
}

/// Whether `e` means the session or connection is gone for now: a retry
/// after reconnecting (or on the store's next session) can help.
pub(crate) fn is_unavailable(e: &zookeeper_client::Error) -> bool {
    use zookeeper_client::Error as Zk;
    is_connection_broken(e)
        || is_session_ended(e)
        || matches!(
            e,
            Zk::NoHosts | Zk::Throttled | Zk::SessionMoved | Zk::NotReadOnly
        )
}

/// What a caller may do after a ZooKeeper call failed with `e` (one that
/// is not [`is_unavailable`]).
fn kind_of(e: &zookeeper_client::Error) -> ErrorKind {
    use zookeeper_client::Error as Zk;
    match e {
        Zk::NoNode => ErrorKind::NotFound,
        Zk::NodeExists | Zk::BadVersion | Zk::NotEmpty => ErrorKind::Conflict,
        _ => ErrorKind::Permanent,
    }
}

/// A failed ZooKeeper call as a store error: `StoreUnavailable` when a
/// retry after reconnecting can help, a [`Backend`] error of the call's
/// kind otherwise.
///
/// [`Backend`]: nodepool_core::Error::Backend
pub(crate) fn store_error(
    operation: &'static str,
    path: &str,
    source: zookeeper_client::Error,
) -> nodepool_core::Error {
    Error::ZooKeeper {
        operation,
        path: path.to_string(),
        source,
    }
    .into()
}

/// A ZooKeeper store error of `kind` with no client error behind it.
pub(crate) fn backend_error(kind: ErrorKind, message: String) -> nodepool_core::Error {
    nodepool_core::Error::Backend {
        backend: BACKEND,
        kind,
        message,
        source: None,
    }
}

/// The backend name in [`nodepool_core::Error::Backend`].
const BACKEND: &str = "ZooKeeper";

impl From<Error> for nodepool_core::Error {
    fn from(e: Error) -> Self {
        let kind = match &e {
            Error::Connect { source, .. } | Error::ZooKeeper { source, .. }
                if is_unavailable(source) =>
            {
                return nodepool_core::Error::StoreUnavailable(e.to_string());
            }
            Error::ZooKeeper { source, .. } => kind_of(source),
            Error::Connect { .. } => ErrorKind::Transient,
            Error::NoHosts | Error::Tls { .. } | Error::Chroot { .. } => ErrorKind::Config,
        };
        nodepool_core::Error::Backend {
            backend: BACKEND,
            kind,
            message: e.to_string(),
            source: Some(Box::new(e)),
        }
    }
}
