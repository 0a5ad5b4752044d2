//! Configuration: `nodepool.yaml` (and the secure file), as upstream reads it.

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
