//! The `openstack` driver: servers in an OpenStack cloud named in
//! `clouds.yaml`.
//!
//! [`OpenStackConfig`] holds every key of a provider; [`Driver::create_provider`]
//! finds the provider's `cloud` in `clouds.yaml` ([`clouds_yaml`]) and
//! builds an [`OpenStackProvider`]: Keystone v3 auth ([`auth`]), an HTTP
//! client with the provider's `rate` ([`client`]), Nova servers, Glance
//! images and Neutron floating IPs and ports. Like upstream's driver
//! through openstacksdk, it reports a statsd counter and timer per REST
//! call when statsd is configured for the cloud ([`api_metrics`]).

use std::sync::Arc;

use nodepool_core::config::{Driver, DriverRegistry, MapReader, ProviderCommon, ProviderConfig};
use nodepool_core::provider::{DriverMetrics, Provider};
use nodepool_core::Result;

pub mod api_metrics;
pub mod auth;
pub mod client;
pub mod clouds_yaml;
pub mod config;
pub mod error;
pub(crate) mod images;
pub(crate) mod network;
mod parse;
pub mod provider;
pub mod server;
pub mod template;

pub use config::{
    LabelImage, OpenStackCloudImage, OpenStackConfig, OpenStackDiskImage, OpenStackLabel,
    OpenStackPool,
};
pub use network::{PortCleanup, LEAKED_FLOATING_IPS, LEAKED_PORTS};
pub use parse::{openstack_provider_view, parse_openstack_provider};
pub use provider::OpenStackProvider;

/// The `driver:` name of this driver.
pub const OPENSTACK: &str = "openstack";

/// The `openstack` driver.
#[derive(Debug, Clone, Default)]
pub struct OpenStackDriver {
    /// Where its providers record openstacksdk's per-call metrics (when
    /// their cloud configures statsd); `None`: not recorded.
    metrics: Option<Arc<DriverMetrics>>,
}

impl OpenStackDriver {
    /// A driver whose providers record openstacksdk's per-REST-call
    /// metrics into `metrics` (see [`api_metrics`]).
    pub fn reporting_to(metrics: Arc<DriverMetrics>) -> Self {
        Self {
            metrics: Some(metrics),
        }
    }
}

impl Driver for OpenStackDriver {
    fn name(&self) -> &'static str {
        OPENSTACK
    }

    fn parse_provider(
        &self,
        provider: &mut MapReader<'_>,
        common: ProviderCommon,
    ) -> Option<ProviderConfig> {
        let mut config = parse_openstack_provider(provider, &common);
        // Upstream reads clouds.yaml when it loads a provider: its
        // `image_format` is the format the provider's diskimages are built
        // in and uploaded as.
        let cwd = std::env::current_dir().unwrap_or_default();
        let env = |k: &str| std::env::var(k).ok();
        config.image_format = clouds_yaml::image_format(&config.cloud, &env, &cwd);
        let config = Arc::new(config);
        Some(openstack_provider_view(common, &config, config.clone()))
    }

    /// Finds the provider's `cloud` in `clouds.yaml` (see
    /// [`clouds_yaml`] for where it is looked for) and builds the
    /// provider. No network call is made until the provider is used.
    fn create_provider(&self, config: &ProviderConfig) -> Result<Arc<dyn Provider>> {
        let typed = config.driver_config_as::<OpenStackConfig>()?;
        let cwd = std::env::current_dir().unwrap_or_default();
        let env = |k: &str| std::env::var(k).ok();
        let cloud = clouds_yaml::load_cloud(&typed.cloud, typed.region_name.as_deref(), &env, &cwd)
            .map_err(|e| e.into_core(&config.name))?;
        let provider = OpenStackProvider::connect_reporting(
            Arc::new(typed.clone()),
            cloud,
            self.metrics.clone(),
        )
        .map_err(|e| e.into_core(&config.name))?;
        Ok(Arc::new(provider))
    }
}

/// Register the `openstack` driver, its providers recording
/// openstacksdk's per-call metrics into the registry's
/// [`DriverRegistry::metrics`].
pub fn register(reg: &mut DriverRegistry) {
    let metrics = Arc::clone(reg.metrics());
    reg.register(OpenStackDriver::reporting_to(metrics));
}

#[cfg(test)]
mod tests;
