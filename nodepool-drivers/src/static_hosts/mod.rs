//! The `static` driver: hosts that already exist, registered as ready
//! nodes and never created or deleted.
//!
//! - [`config`]/`parse`: the provider configuration (see [`StaticConfig`]
//!   for every key);
//! - [`keyscan`]: probing hosts ([`HostScanner`]; [`SshKeyscan`] runs
//!   OpenSSH's `ssh-keyscan`);
//! - [`record`]: a host's node records and its check before registration;
//! - [`sync`]: one pass that registers, re-registers and deregisters the
//!   provider's records ([`StaticSync`]);
//! - [`provider`]: [`StaticProvider`], the [`Provider`] the driver creates,
//!   with [`StaticProvider::sync`] for the launcher to call.

use std::sync::Arc;

use nodepool_core::config::{Driver, DriverRegistry, MapReader, ProviderCommon, ProviderConfig};
use nodepool_core::provider::Provider;
use nodepool_core::Result;

pub mod config;
pub mod keyscan;
mod parse;
pub mod provider;
pub mod record;
pub mod scripted;
pub mod sync;

pub use config::{StaticConfig, StaticNode, StaticPool};
pub use keyscan::{HostScanner, ScanError, ScanTarget, SshKeyscan};
pub use parse::{parse_static_provider, static_provider_view};
pub use provider::StaticProvider;
pub use record::{HostError, HostFailure, HostId};
pub use scripted::ScriptedScanner;
pub use sync::{StaticSync, SyncMode, SyncReport};

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
        let typed = config.driver_config_as::<StaticConfig>()?;
        Ok(Arc::new(StaticProvider::new(Arc::new(typed.clone()))))
    }
}

/// Register the `static` driver.
pub fn register(reg: &mut DriverRegistry) {
    reg.register(StaticDriver);
}

#[cfg(test)]
mod tests;
