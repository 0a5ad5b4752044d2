//! # nodepool-dib
//!
//! The [`ImageBuilder`](nodepool_core::image_builder::ImageBuilder) that
//! runs [diskimage-builder](https://docs.openstack.org/diskimage-builder/):
//! `disk-image-create`, or a diskimage's `dib-cmd`, with upstream nodepool's
//! command line and environment ([`command`]), the build log streamed to
//! `<build-log-dir>/<image>-<build>.log`, the process group stopped on
//! cancellation, and partial outputs removed on failure.
//!
//! ```no_run
//! use nodepool_core::image_builder::{BuildSpec, ImageBuilder};
//! use nodepool_dib::{DibImageBuilder, DibSettings};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn demo() -> nodepool_core::Result<()> {
//! let builder = DibImageBuilder::new(DibSettings::default());
//! let spec = BuildSpec {
//!     diskimage: "ubuntu-noble".into(),
//!     build_id: "0123456789abcdef0123456789abcdef".into(),
//!     elements: vec!["ubuntu-minimal".into(), "vm".into()],
//!     release: Some("noble".into()),
//!     formats: vec!["qcow2".into()],
//!     output_base: "/opt/nodepool/images/ubuntu-noble-0123456789abcdef0123456789abcdef".into(),
//!     log_path: Some("/var/log/nodepool/builds/ubuntu-noble-0123456789abcdef0123456789abcdef.log".into()),
//!     ..BuildSpec::default()
//! };
//! let files = builder.build(&spec, CancellationToken::new()).await?;
//! for f in files {
//!     println!("{} {} bytes", f.path.display(), f.size);
//! }
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![warn(unreachable_pub, missing_debug_implementations)]

mod builder;
pub mod command;
mod error;
mod orphans;

pub use builder::{remove_outputs, DibImageBuilder, DibSettings};
pub use command::{dib_command, DibCommand, DEFAULT_DIB_CMD};
pub use error::DibError;
pub use orphans::{alive, building_into, stop_orphaned_builds};

#[cfg(test)]
mod tests;
