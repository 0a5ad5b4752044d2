//! The driver hook: a driver owns its provider config.
//!
//! Core reads the keys every provider has (`name`, `driver`,
//! `max-concurrency`, `priority`) and hands the rest of the provider's
//! mapping to the [`Driver`] registered under the `driver:` name. The driver
//! reads its keys with the same [`MapReader`] core uses, so a third-party
//! driver's errors name file, line, column and key path exactly like ours.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use super::reader::MapReader;
use super::{DriverConfig, Location, PoolConfig, ProviderConfig};
use crate::provider::{DriverMetrics, Provider};
use crate::{Error, Result};

/// The provider keys core has read before the driver sees the mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderCommon {
    /// `name`.
    pub name: String,
    /// `driver` (resolved: "openstack" by default, "fake" for names
    /// starting with "fake").
    pub driver: String,
    /// Where the provider entry starts.
    pub location: Location,
    /// `max-concurrency` (default -1: unlimited).
    pub max_concurrency: i64,
    /// `priority`: the default of its pools' priority.
    pub priority: Option<i64>,
}

impl ProviderCommon {
    /// A [`ProviderConfig`] with these common values and the upstream
    /// defaults for the rest (launch-retries 3, boot-timeout 60,
    /// launch-timeout 3600, rate 0: no spacing, no pools, no diskimages); the driver
    /// then fills in what it read.
    pub fn into_config(self, driver_config: Arc<dyn DriverConfig>) -> ProviderConfig {
        ProviderConfig {
            name: self.name,
            driver: self.driver,
            location: self.location,
            max_concurrency: self.max_concurrency,
            launch_retries: 3,
            boot_timeout: 60.0,
            launch_timeout: 3600.0,
            rate: 0.0,
            post_upload_hook: None,
            diskimages: Vec::new(),
            pools: Vec::new(),
            driver_config,
        }
    }
}

/// The pool keys common to every driver (upstream's
/// `ConfigPool.getCommonSchemaDict`: `max-servers`, `node-attributes`,
/// `priority`). `name` and `labels` vary by driver and are read by it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PoolCommon {
    /// `max-servers` (`None`: unlimited).
    pub max_servers: Option<i64>,
    /// `node-attributes` (a mapping).
    pub node_attributes: Option<serde_json::Value>,
    /// `priority`.
    pub priority: Option<i64>,
}

impl PoolCommon {
    /// Read (and consume) the common pool keys.
    pub fn read(pool: &mut MapReader<'_>) -> Self {
        Self {
            max_servers: pool.opt_i64("max-servers"),
            node_attributes: pool.opt_json_map("node-attributes"),
            priority: pool.opt_i64("priority"),
        }
    }

    /// A [`PoolConfig`] named `name` with these values; the priority falls
    /// back to the provider's, then to 100. The driver sets the rest
    /// (labels, `max-cores`, `max-ram`, `ignore-provider-quota`).
    pub fn into_pool(self, name: String, provider: &ProviderCommon) -> PoolConfig {
        PoolConfig {
            name,
            max_servers: self.max_servers,
            max_cores: None,
            max_ram: None,
            priority: self.priority.or(provider.priority).unwrap_or(100),
            node_attributes: self.node_attributes,
            ignore_provider_quota: false,
            max_resources: Default::default(),
            labels: Vec::new(),
        }
    }
}

/// A cloud driver: parses its providers' config and builds providers.
///
/// # Contract
/// - `parse_provider` reads the keys of its driver from `provider` (core
///   has consumed `name`, `driver`, `max-concurrency` and `priority`);
///   core calls [`MapReader::finish`] on the provider mapping afterwards, so
///   every key the driver did not read is reported as unknown. The driver
///   calls `finish` on the child readers it opens (pools, labels, ...).
/// - Errors are recorded in the reader's diagnostics, never panicked; the
///   driver returns `None` only when it could not build a config at all
///   (after recording at least one error).
pub trait Driver: Send + Sync + Debug + 'static {
    /// The `driver:` name.
    fn name(&self) -> &'static str;

    /// Read one provider's mapping.
    fn parse_provider(
        &self,
        provider: &mut MapReader<'_>,
        common: ProviderCommon,
    ) -> Option<ProviderConfig>;

    /// Build the provider for a config this driver parsed. The default
    /// returns [`Error::Unsupported`] (a driver that only validates).
    fn create_provider(&self, config: &ProviderConfig) -> Result<Arc<dyn Provider>> {
        Err(Error::Unsupported {
            provider: config.name.clone(),
            operation: "create_provider",
        })
    }
}

/// Maps `driver:` names to drivers, and holds the [`DriverMetrics`] its
/// drivers report to.
#[derive(Debug, Clone, Default)]
pub struct DriverRegistry {
    drivers: BTreeMap<&'static str, Arc<dyn Driver>>,
    metrics: Arc<DriverMetrics>,
}

impl DriverRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a driver under its name (replacing one of the same name).
    pub fn register<D: Driver>(&mut self, driver: D) {
        self.register_arc(Arc::new(driver));
    }

    /// Register a shared driver.
    pub fn register_arc(&mut self, driver: Arc<dyn Driver>) {
        self.drivers.insert(driver.name(), driver);
    }

    /// The driver named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Driver>> {
        self.drivers.get(name).cloned()
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.drivers.keys().copied().collect()
    }

    /// Where the drivers of this registry record metrics of their own
    /// (the OpenStack driver: openstacksdk's per-REST-call metrics). A
    /// driver takes it when it registers (its `register(&mut
    /// DriverRegistry)` function) and hands it to the providers it
    /// builds; the daemon that built the registry sends and serves what
    /// they record. Clones of a registry share it.
    pub fn metrics(&self) -> &Arc<DriverMetrics> {
        &self.metrics
    }
}
