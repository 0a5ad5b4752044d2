//! The `aws` driver: EC2 instances in one region, as upstream nodepool
//! 11's `aws` driver.
//!
//! [`AwsConfig`] holds every key of a provider ([`parse`]); the provider
//! talks to EC2's query API through [`client::AwsClient`], which signs
//! each request with SigV4 ([`sigv4`]) using credentials found as the AWS
//! SDKs find them ([`credentials`]).

use std::sync::Arc;

use nodepool_core::config::{Driver, DriverRegistry, MapReader, ProviderCommon, ProviderConfig};
use nodepool_core::provider::Provider;
use nodepool_core::Result;

pub mod config;
mod parse;
pub mod sigv4;

pub use config::{AwsCloudImage, AwsConfig, AwsDiskImage, AwsLabel, AwsPool};
pub use parse::{aws_provider_view, parse_aws_provider};

/// The `driver:` name of this driver.
pub const AWS: &str = "aws";

/// The `aws` driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct AwsDriver;

impl Driver for AwsDriver {
    fn name(&self) -> &'static str {
        AWS
    }

    fn parse_provider(
        &self,
        provider: &mut MapReader<'_>,
        common: ProviderCommon,
    ) -> Option<ProviderConfig> {
        let config = Arc::new(parse_aws_provider(provider, &common));
        Some(aws_provider_view(common, &config, config.clone()))
    }

    fn create_provider(&self, config: &ProviderConfig) -> Result<Arc<dyn Provider>> {
        let _typed = config.driver_config_as::<AwsConfig>()?;
        Err(nodepool_core::Error::Unsupported {
            provider: config.name.clone(),
            operation: "create_provider",
        })
    }
}

/// Register the `aws` driver.
pub fn register(reg: &mut DriverRegistry) {
    reg.register(AwsDriver);
}

#[cfg(test)]
mod tests;
