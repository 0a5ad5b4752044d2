//! The `static` driver: hosts that already exist, registered as ready
//! nodes and never created or deleted.
//!
//! This module parses the provider configuration (see [`StaticConfig`] for
//! every key); the provider itself (host-key scans, node registration) is
//! not implemented yet, so [`Driver::create_provider`] reports
//! [`Error::Unsupported`].

use std::sync::Arc;

use nodepool_core::config::{Driver, DriverRegistry, MapReader, ProviderCommon, ProviderConfig};
use nodepool_core::provider::Provider;
use nodepool_core::{Error, Result};

pub mod config;
mod parse;

pub use config::{StaticConfig, StaticNode, StaticPool};
pub use parse::{parse_static_provider, static_provider_view};

/// The `driver:` name of this driver.
pub const STATIC: &str = "static";

/// The `static` driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct StaticDriver;

impl Driver for StaticDriver {
    fn name(&self) -> &'static str {
        STATIC
    }

    fn parse_provider(
        &self,
        provider: &mut MapReader<'_>,
        common: ProviderCommon,
    ) -> Option<ProviderConfig> {
        let config = Arc::new(parse_static_provider(provider, &common));
        Some(static_provider_view(common, &config, config.clone()))
    }

    fn create_provider(&self, config: &ProviderConfig) -> Result<Arc<dyn Provider>> {
        Err(Error::Unsupported {
            provider: config.name.clone(),
            operation: "registering hosts (the static driver's provider is not implemented yet)",
        })
    }
}

/// Register the `static` driver.
pub fn register(reg: &mut DriverRegistry) {
    reg.register(StaticDriver);
}

#[cfg(test)]
mod tests;
