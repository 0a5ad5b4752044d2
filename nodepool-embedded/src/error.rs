//! The crate's error type.

use std::path::PathBuf;

/// Errors of the embedded store that are not already a
/// [`nodepool_core::Error`] (opening, migrating, SQLite failures).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database file could not be opened or configured.
    #[error("cannot open the embedded store at {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer nodepool-rs.
    #[error(
        "the embedded store at {} has schema version {found}, newer than the {supported} \
         this nodepool-rs knows; upgrade nodepool-rs",
        path.display()
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// The version in the file.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// A statement failed.
    #[error("embedded store: {context}: {source}")]
    Sqlite {
        /// What was being done.
        context: &'static str,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The store's worker thread has stopped (the store was dropped, or the
    /// thread panicked).
    #[error("embedded store worker has stopped")]
    WorkerGone,
    /// Ending a dead session failed.
    #[error("embedded store: cannot end a session: {0}")]
    Cleanup(String),
    /// The worker thread could not be started.
    #[error("cannot start the embedded store worker: {0}")]
    Spawn(#[source] std::io::Error),
}

impl Error {
    /// Whether the failure is SQLite saying the database is locked or busy
    /// (another process held it longer than the busy timeout).
    pub fn is_busy(&self) -> bool {
        match self {
            Error::Sqlite { source, .. } | Error::Open { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            _ => false,
        }
    }
}

impl From<Error> for nodepool_core::Error {
    fn from(err: Error) -> Self {
        nodepool_core::Error::StoreUnavailable(err.to_string())
    }
}

/// Adds a context to a `rusqlite` result.
pub(crate) trait SqlContext<T> {
    /// Turns a SQLite error into [`Error::Sqlite`] naming `context`.
    fn ctx(self, context: &'static str) -> Result<T>;
}

impl<T> SqlContext<T> for Result<T, rusqlite::Error> {
    fn ctx(self, context: &'static str) -> Result<T> {
        self.map_err(|source| Error::Sqlite { context, source })
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
