//! The `aws` driver: EC2 instances in one region, as upstream nodepool
//! 11's `aws` driver.
//!
//! [`AwsConfig`] holds every key of a provider ([`parse_aws_provider`]); the provider
//! talks to EC2's query API through [`client::AwsClient`], which signs
//! each request with SigV4 ([`sigv4`]) using credentials found as the AWS
//! SDKs find them ([`credentials`]).

use std::sync::Arc;

use nodepool_core::config::{Driver, DriverRegistry, MapReader, ProviderCommon, ProviderConfig};
use nodepool_core::provider::Provider;
use nodepool_core::Result;

pub mod client;
pub mod config;
pub mod credentials;
pub mod error;
pub mod fleet;
pub mod images;
pub mod instance;
mod parse;
pub mod provider;
pub mod quota;
pub mod s3;
pub mod sigv4;

pub use config::{AwsCloudImage, AwsConfig, AwsDiskImage, AwsLabel, AwsPool};
pub use parse::{aws_provider_view, parse_aws_provider};
pub use provider::AwsProvider;

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

    /// Finds credentials and endpoints as the AWS SDKs do (see
    /// [`credentials`]); no network call is made until the provider is used.
    fn create_provider(&self, config: &ProviderConfig) -> Result<Arc<dyn Provider>> {
        let typed = config.driver_config_as::<AwsConfig>()?;
        let env = |k: &str| std::env::var(k).ok();
        let provider = AwsProvider::from_env(Arc::new(typed.clone()), &env)
            .map_err(|e| e.into_core(&config.name))?;
        Ok(Arc::new(provider))
    }
}

/// Register the `aws` driver.
pub fn register(reg: &mut DriverRegistry) {
    reg.register(AwsDriver);
}

#[cfg(test)]
mod tests;
