//! The [`ImageBuilder`] trait: builds one diskimage into local files.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::Result;

/// What to build.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BuildSpec {
    /// Diskimage name.
    pub diskimage: String,
    /// Build id.
    pub build_id: String,
    /// Elements.
    pub elements: Vec<String>,
    /// Release (`DIB_RELEASE`).
    pub release: Option<String>,
    /// Environment variables for the build.
    pub env_vars: BTreeMap<String, String>,
    /// Formats to produce ("qcow2", "raw", "vhd", ...).
    pub formats: Vec<String>,
    /// Output path without extension (`<images-dir>/<image>-<build id>`).
    pub output_base: PathBuf,
    /// Log file for this build.
    pub log_path: Option<PathBuf>,
    /// Replacement command for `disk-image-create` (`dib-cmd`).
    pub command: Option<String>,
    /// Elements directory (`ELEMENTS_PATH`).
    pub elements_dir: Option<PathBuf>,
}

/// One file a build produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltFile {
    /// Format.
    pub format: String,
    /// Path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
}

/// Builds disk images.
///
/// # Contract
/// - On success every asked format exists at `output_base.<format>`.
/// - On failure or cancellation no file of this build is left behind.
#[async_trait]
pub trait ImageBuilder: Send + Sync + Debug + 'static {
    /// Build `spec`; stop early, clean up and return an error when `cancel` fires.
    async fn build(&self, spec: &BuildSpec, cancel: CancellationToken) -> Result<Vec<BuiltFile>>;
}
