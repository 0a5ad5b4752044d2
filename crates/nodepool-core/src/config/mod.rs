//! Configuration: `nodepool.yaml` (and the secure file), as upstream reads it.
//!
//! Core parses the common keys into [`Config`]; each provider's own mapping is
//! handed to the driver registered under its `driver:` name, which returns a
//! [`ProviderConfig`]: the common view every engine reads (pools, labels,
//! limits) plus the driver's own typed config in `driver_config`.

mod model;

pub use model::*;

/// An invalid configuration, naming file, line, column and key path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {path}: {message}")]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Key path, e.g. `providers[0].pools[1].max-servers`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}
