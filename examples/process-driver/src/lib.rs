//! # nodepool-example-process-driver
//!
//! A complete third-party driver for nodepool-rs, living outside
//! `nodepool-drivers`: its "cloud" is the local host. Each instance is a
//! sandbox directory holding a metadata file (`instance.json`) and, when the
//! provider names a `command`, one child process started in it; nodes are
//! reached at `127.0.0.1`. It depends on `nodepool-core` only, registers
//! itself under `driver: process`, reads its keys with core's
//! [`MapReader`] (so its errors name file,
//! line, column and key path like core's), and passes the provider
//! conformance suite (see `tests/conformance.rs`).
//!
//! Register it next to the built-in drivers, load a configuration, and build
//! its providers through the registry:
//!
//! ```no_run
//! use nodepool_core::config::{load_str, DriverRegistry};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut registry = DriverRegistry::new();
//! nodepool_example_process_driver::register(&mut registry);
//!
//! let config = load_str(
//!     "nodepool.yaml",
//!     "labels:
//!   - name: sandbox
//! providers:
//!   - name: local
//!     driver: process
//!     root: /tmp/nodepool-sandboxes
//!     command: [sleep, infinity]
//!     pools:
//!       - name: main
//!         max-servers: 2
//!         labels:
//!           - name: sandbox
//! ",
//!     &registry,
//! )?;
//! for provider in &config.providers {
//!     let driver = registry.get(&provider.driver).expect("registered above");
//!     let provider = driver.create_provider(provider)?;
//!     println!("{} can do {:?}", provider.name(), provider.capabilities());
//! }
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![warn(unreachable_pub, missing_debug_implementations)]
#![forbid(unsafe_code)]

use std::sync::Arc;

use nodepool_core::config::{Driver, DriverRegistry, MapReader, ProviderCommon, ProviderConfig};
use nodepool_core::provider::Provider;
use nodepool_core::Result;

pub mod config;
pub mod provider;

pub use config::{parse_process_provider, ProcessConfig, ProcessLabel, ProcessPool};
pub use provider::ProcessProvider;

/// The `driver:` name of this driver.
pub const PROCESS: &str = "process";

/// The `process` driver: parses `driver: process` providers and builds
/// [`ProcessProvider`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessDriver;

impl Driver for ProcessDriver {
    fn name(&self) -> &'static str {
        PROCESS
    }

    fn parse_provider(
        &self,
        provider: &mut MapReader<'_>,
        common: ProviderCommon,
    ) -> Option<ProviderConfig> {
        parse_process_provider(provider, common)
    }

    fn create_provider(&self, config: &ProviderConfig) -> Result<Arc<dyn Provider>> {
        let typed = config.driver_config_as::<ProcessConfig>()?;
        Ok(Arc::new(ProcessProvider::new(typed.clone())))
    }
}

/// Register the `process` driver in `registry`.
pub fn register(registry: &mut DriverRegistry) {
    registry.register(ProcessDriver);
}
