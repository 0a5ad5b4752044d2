//! The `openshiftpods` driver: pods in an existing project (one per pool),
//! all reached with the provider's own credentials.

use std::sync::Arc;

use nodepool_core::config::{Driver, DriverRegistry, MapReader, ProviderCommon, ProviderConfig};
use nodepool_core::provider::Provider;
use nodepool_core::Result;

use crate::k8s::{k8s_provider_view, parse_k8s_provider, Flavor};

/// The `driver:` name of this driver.
pub const OPENSHIFTPODS: &str = "openshiftpods";

/// The `openshiftpods` driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenshiftPodsDriver;

impl Driver for OpenshiftPodsDriver {
    fn name(&self) -> &'static str {
        OPENSHIFTPODS
    }

    fn parse_provider(
        &self,
        provider: &mut MapReader<'_>,
        common: ProviderCommon,
    ) -> Option<ProviderConfig> {
        let config = Arc::new(parse_k8s_provider(provider, &common, Flavor::OpenshiftPods));
        Some(k8s_provider_view(common, &config))
    }

    /// Reads the credentials of the provider's `context` as kubectl does
    /// and builds the provider.
    fn create_provider(&self, config: &ProviderConfig) -> Result<Arc<dyn Provider>> {
        crate::k8s::connect(config)
    }
}

/// Register the `openshiftpods` driver.
pub fn register(reg: &mut DriverRegistry) {
    reg.register(OpenshiftPodsDriver);
}
