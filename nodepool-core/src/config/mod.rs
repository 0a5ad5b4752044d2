//! Configuration: `nodepool.yaml` (and the secure file), as upstream reads it.
//!
//! Core parses the common keys into [`Config`]; each provider's own mapping is
//! handed to the driver registered under its `driver:` name, which returns a
//! [`ProviderConfig`]: the common view every engine reads (pools, labels,
//! limits) plus the driver's own typed config in `driver_config`.
//!
//! Reading goes through [`yaml`] (a position-keeping YAML loader that reads
//! YAML as PyYAML does) and [`MapReader`] (typed getters that collect every
//! error with file, line, column and key path). Drivers implement [`Driver`]
//! and are found in a [`DriverRegistry`].

mod diskimage;
mod driver;
mod loader;
mod model;
mod reader;
pub mod yaml;

pub use driver::{Driver, DriverRegistry, PoolCommon, ProviderCommon};
pub use loader::{load, load_str, load_str_with_secure, DEFAULT_ZOOKEEPER_PORT, MAX_MIN_READY};
pub use model::*;
pub use reader::{superseded_by_name, Diagnostics, Item, MapReader};

/// An invalid configuration, naming file, line, column and key path
/// (`file: message` alone for errors about the whole file, line 0).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}{message}", position(.file, *.line, *.column), path_prefix(.path))]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// 1-based line; 0 for an error about the whole file (one that
    /// cannot be read).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Key path, e.g. `providers[0].pools[1].max-servers` (empty for
    /// errors about the file itself, such as YAML syntax errors).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

fn position(file: &str, line: usize, column: usize) -> String {
    if line == 0 {
        format!("{file}: ")
    } else {
        format!("{file}:{line}:{column}: ")
    }
}

fn path_prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}

/// Every error found in a configuration, in the order found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    /// The errors (at least one).
    pub errors: Vec<ConfigError>,
    /// Warnings found before the errors (repeated keys, ...).
    pub warnings: Vec<String>,
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        Self {
            errors: vec![error],
            warnings: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests;
