//! The `openstack` driver: servers in an OpenStack cloud named in
//! `clouds.yaml`.
//!
//! This module parses the provider configuration (see [`OpenStackConfig`]
//! for every key); the cloud client is not implemented yet, so
//! [`Driver::create_provider`] reports [`Error::Unsupported`].

use std::sync::Arc;

use nodepool_core::config::{Driver, DriverRegistry, MapReader, ProviderCommon, ProviderConfig};
use nodepool_core::provider::Provider;
use nodepool_core::{Error, Result};

pub mod config;
mod parse;

pub use config::{
    LabelImage, OpenStackCloudImage, OpenStackConfig, OpenStackDiskImage, OpenStackLabel,
    OpenStackPool,
};
pub use parse::{openstack_provider_view, parse_openstack_provider};

/// The `driver:` name of this driver.
pub const OPENSTACK: &str = "openstack";

/// The `openstack` driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenStackDriver;

impl Driver for OpenStackDriver {
    fn name(&self) -> &'static str {
        OPENSTACK
    }

    fn parse_provider(
        &self,
        provider: &mut MapReader<'_>,
        common: ProviderCommon,
    ) -> Option<ProviderConfig> {
        let config = Arc::new(parse_openstack_provider(provider, &common));
        Some(openstack_provider_view(common, &config, config.clone()))
    }

    fn create_provider(&self, config: &ProviderConfig) -> Result<Arc<dyn Provider>> {
        Err(Error::Unsupported {
            provider: config.name.clone(),
            operation:
                "launching nodes (the openstack driver's cloud client is not implemented yet)",
        })
    }
}

/// Register the `openstack` driver.
pub fn register(reg: &mut DriverRegistry) {
    reg.register(OpenStackDriver);
}

#[cfg(test)]
mod tests;
