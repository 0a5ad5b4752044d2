//! The `kubernetes` driver: a namespace per node, with a service account
//! allowed to work in it; for `pod` labels also one pod, with a role
//! restricted to using that pod. See `doc/drivers/kubernetes.md`.

use std::sync::Arc;

use nodepool_core::config::{Driver, DriverRegistry, MapReader, ProviderCommon, ProviderConfig};
use nodepool_core::provider::Provider;
use nodepool_core::Result;

use crate::k8s::{k8s_provider_view, parse_k8s_provider, Flavor};

/// The `driver:` name of this driver.
pub const KUBERNETES: &str = "kubernetes";

/// The `kubernetes` driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct KubernetesDriver;

impl Driver for KubernetesDriver {
    fn name(&self) -> &'static str {
        KUBERNETES
    }

    fn parse_provider(
        &self,
        provider: &mut MapReader<'_>,
        common: ProviderCommon,
    ) -> Option<ProviderConfig> {
        let config = Arc::new(parse_k8s_provider(provider, &common, Flavor::Kubernetes));
        Some(k8s_provider_view(common, &config))
    }

    /// Reads the credentials of the provider's `context` as kubectl does
    /// and builds the provider.
    fn create_provider(&self, config: &ProviderConfig) -> Result<Arc<dyn Provider>> {
        crate::k8s::connect(config)
    }
}

/// Register the `kubernetes` driver.
pub fn register(reg: &mut DriverRegistry) {
    reg.register(KubernetesDriver);
}
