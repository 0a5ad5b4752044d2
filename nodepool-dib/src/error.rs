//! The crate's error type.

use std::path::PathBuf;

use nodepool_core::error::ErrorKind;

/// A diskimage-builder run that did not produce the image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DibError {
    /// `dib-cmd` cannot be split into words.
    #[error("invalid dib-cmd {command:?}: {reason}")]
    BadCommand {
        /// The command.
        command: String,
        /// What is wrong.
        reason: String,
    },
    /// The command could not be started (or waited for).
    #[error("failed to exec '{command}': {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A directory or the log file could not be created.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The command exited unsuccessfully.
    #[error("DIB failed creating build {build} of image {image} (exit code {status}){}", log.as_ref().map(|l| format!("; see {}", l.display())).unwrap_or_default())]
    Failed {
        /// The image.
        image: String,
        /// The build id.
        build: String,
        /// The exit code (or signal).
        status: String,
        /// The build log.
        log: Option<PathBuf>,
    },
    /// The command succeeded but a format's file is missing.
    #[error("the build reported success but {} is missing", path.display())]
    MissingOutput {
        /// The missing file.
        path: PathBuf,
    },
    /// The build was stopped.
    #[error("build {build} of image {image} was stopped")]
    Cancelled {
        /// The image.
        image: String,
        /// The build id.
        build: String,
    },
}

impl From<DibError> for nodepool_core::Error {
    fn from(e: DibError) -> Self {
        let kind = match &e {
            DibError::Cancelled { image, build } => {
                return nodepool_core::Error::cancelled(format!("build {build} of image {image}"));
            }
            DibError::BadCommand { .. } => ErrorKind::Config,
            DibError::Spawn { source, .. } | DibError::Io { source, .. } => {
                ErrorKind::of_io(source)
            }
            DibError::Failed { .. } | DibError::MissingOutput { .. } => ErrorKind::Permanent,
        };
        nodepool_core::Error::Backend {
            backend: "diskimage-builder",
            kind,
            message: e.to_string(),
            source: Some(Box::new(e)),
        }
    }
}
