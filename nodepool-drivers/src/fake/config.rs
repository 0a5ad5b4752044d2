//! Fake driver: config.
//!
//! Upstream's `fake` driver reads exactly the `openstack` schema, so a fake
//! provider is parsed by the openstack parser; on top of it, our fake cloud
//! has its own knobs ([`FakeSettings`]) under the provider key
//! [`FAKE_SETTINGS_KEY`], which no upstream configuration uses:
//!
//! ```yaml
//! providers:
//!   - name: fake-provider
//!     cloud: fake
//!     fake-settings:
//!       boot-delay: 0.1      # seconds until a server is ACTIVE
//!       instances: 20        # cloud quota
//!       cores: 100
//!       ram: 1000000         # MB
//!       cores-per-node: 4
//!       ram-per-node: 8192   # MB
//!       error-rate: 0.0      # 0.0 ..= 1.0: mutating calls that fail
//!       timeout-rate: 0.0    # servers that never become ACTIVE
//!       quota-error-rate: 0.0  # creates refused for quota
//!       boot-failure-rate: 0.0 # servers that end in ERROR
//!       seed: 42             # fault RNG seed (default: the cloud's)
//!     pools: [...]
//! ```
//!
//! Each process has a fake cloud of its own, in memory. A launcher boots
//! from uploads another process's fake cloud made (ids `fake-image-<hex>`,
//! the builder's when `nodepool builder` and `nodepool launcher` run as two
//! processes, as upstream's daemons do), and never reuses an instance id
//! after a restart (ids start at the microseconds since the epoch).

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use nodepool_core::config::{
    Driver, DriverConfig, DriverRegistry, MapReader, ProviderCommon, ProviderConfig,
};

use crate::openstack::{openstack_provider_view, parse_openstack_provider, OpenStackConfig};

/// The `driver:` name of the fake driver (also implied by a provider name
/// starting with "fake").
pub const FAKE: &str = "fake";

/// The provider key holding [`FakeSettings`] (our extension).
pub const FAKE_SETTINGS_KEY: &str = "fake-settings";

/// Our fake cloud's behaviour. The defaults are upstream's fake cloud:
/// 20 instances, 100 cores, 4 cores and 8192 MB a server, ACTIVE 0.1 s after
/// creation, no failures.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeSettings {
    /// `boot-delay`: time from create to ACTIVE (default 0.1 s).
    pub boot_delay: Duration,
    /// `instances`: the cloud's instance quota (default 20).
    pub instances: u64,
    /// `cores`: the cloud's core quota (default 100).
    pub cores: u64,
    /// `ram`: the cloud's RAM quota in MB (default 1 000 000).
    pub ram: u64,
    /// `cores-per-node` (default 4).
    pub cores_per_node: u64,
    /// `ram-per-node` in MB (default 8192).
    pub ram_per_node: u64,
    /// `error-rate`: share of mutating calls that fail, 0.0 to 1.0
    /// (default 0).
    pub error_rate: f64,
    /// `timeout-rate`: share of servers that never become active (default 0).
    pub timeout_rate: f64,
    /// `quota-error-rate`: share of creates refused for quota (default 0).
    pub quota_error_rate: f64,
    /// `boot-failure-rate`: share of servers ending in error (default 0).
    pub boot_failure_rate: f64,
    /// `seed`: the fault RNG seed (`None`: the fake cloud's default).
    pub seed: Option<u64>,
}

impl Default for FakeSettings {
    fn default() -> Self {
        Self {
            boot_delay: Duration::from_millis(100),
            instances: 20,
            cores: 100,
            ram: 1_000_000,
            cores_per_node: 4,
            ram_per_node: 8192,
            error_rate: 0.0,
            timeout_rate: 0.0,
            quota_error_rate: 0.0,
            boot_failure_rate: 0.0,
            seed: None,
        }
    }
}

impl FakeSettings {
    /// Read the `fake-settings` mapping (all keys optional).
    pub fn read(map: &mut MapReader<'_>) -> Self {
        let d = Self::default();
        let non_negative = |map: &mut MapReader<'_>, key: &str, default: u64| -> u64 {
            let Some(item) = map.take(key) else {
                return default;
            };
            match item.as_i64().map(u64::try_from) {
                Some(Ok(v)) => v,
                Some(Err(_)) => {
                    item.error("expected a non-negative integer");
                    default
                }
                None => default,
            }
        };
        let boot_delay = match map.take("boot-delay") {
            Some(item) => match item.as_f64().map(Duration::try_from_secs_f64) {
                Some(Ok(delay)) => delay,
                Some(Err(_)) => {
                    item.error("expected a non-negative number of seconds");
                    d.boot_delay
                }
                None => d.boot_delay,
            },
            None => d.boot_delay,
        };
        let rate = |map: &mut MapReader<'_>, key: &str| -> f64 {
            match map.take(key) {
                Some(item) => match item.as_f64() {
                    Some(r) if (0.0..=1.0).contains(&r) => r,
                    Some(_) => {
                        item.error("expected a number from 0.0 to 1.0");
                        0.0
                    }
                    None => 0.0,
                },
                None => 0.0,
            }
        };
        let error_rate = rate(map, "error-rate");
        let timeout_rate = rate(map, "timeout-rate");
        let quota_error_rate = rate(map, "quota-error-rate");
        let boot_failure_rate = rate(map, "boot-failure-rate");
        let seed = map.has("seed").then(|| non_negative(map, "seed", 0));
        Self {
            boot_delay,
            instances: non_negative(map, "instances", d.instances),
            cores: non_negative(map, "cores", d.cores),
            ram: non_negative(map, "ram", d.ram),
            cores_per_node: non_negative(map, "cores-per-node", d.cores_per_node),
            ram_per_node: non_negative(map, "ram-per-node", d.ram_per_node),
            error_rate,
            timeout_rate,
            quota_error_rate,
            boot_failure_rate,
            seed,
        }
    }
}

/// A fake provider's own config: the openstack config it was written as,
/// plus our fake cloud's settings.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// The provider read with the openstack schema.
    pub openstack: Arc<OpenStackConfig>,
    /// The fake cloud's knobs.
    pub settings: FakeSettings,
}

impl DriverConfig for FakeConfig {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Read a fake provider: `fake-settings`, then the openstack keys.
pub fn parse_fake_provider(
    provider: &mut MapReader<'_>,
    common: ProviderCommon,
) -> Option<ProviderConfig> {
    let settings = match provider.opt_map(FAKE_SETTINGS_KEY) {
        Some(mut map) => {
            let s = FakeSettings::read(&mut map);
            map.finish();
            s
        }
        None => FakeSettings::default(),
    };
    let openstack = Arc::new(parse_openstack_provider(provider, &common));
    let config = Arc::new(FakeConfig {
        openstack: openstack.clone(),
        settings,
    });
    let mut view = openstack_provider_view(common, &openstack, config);
    // Upstream's fake client replaces openstacksdk, whose `rate_limit` is
    // what applies `rate`: a fake provider reads `rate` but never waits.
    view.rate = 0.0;
    Some(view)
}

/// The fake driver: upstream's OpenStack schema plus `fake-settings`, and a
/// [`FakeProvider`](super::provider::FakeProvider) on its own in-memory cloud.
#[derive(Debug, Clone, Copy, Default)]
pub struct FakeConfigDriver;

impl Driver for FakeConfigDriver {
    fn name(&self) -> &'static str {
        FAKE
    }

    fn parse_provider(
        &self,
        provider: &mut MapReader<'_>,
        common: ProviderCommon,
    ) -> Option<ProviderConfig> {
        parse_fake_provider(provider, common)
    }

    fn create_provider(
        &self,
        config: &ProviderConfig,
    ) -> nodepool_core::Result<Arc<dyn nodepool_core::provider::Provider>> {
        let fake = config.driver_config_as::<FakeConfig>()?;
        let cloud = super::cloud::FakeCloud::new(super::cloud::FakeCloudSettings::from_config(
            &fake.settings,
        ));
        Ok(Arc::new(super::provider::FakeProvider::from_config(
            config.name.clone(),
            fake,
            cloud,
        )))
    }
}

/// Register the fake driver's config reader under [`FAKE`].
pub fn register(reg: &mut DriverRegistry) {
    reg.register(FakeConfigDriver);
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodepool_core::config::load_str;

    fn registry() -> DriverRegistry {
        let mut reg = DriverRegistry::new();
        register(&mut reg);
        reg
    }

    const BASE: &str =
        "labels:\n  - name: small\nproviders:\n  - name: fake-provider\n    cloud: fake\n";

    fn settings_of(config: &nodepool_core::config::Config) -> FakeSettings {
        let p = config.provider("fake-provider").expect("provider");
        let fake = p.driver_config_as::<FakeConfig>().expect("a fake config");
        fake.settings.clone()
    }

    #[test]
    fn fake_provider_without_settings_gets_upstream_fake_limits() {
        let text = format!("{BASE}    cloud-images:\n      - name: Fake Precise\n    pools:\n      - name: main\n        labels:\n          - name: small\n            cloud-image: Fake Precise\n            min-ram: 8192\n");
        let config = load_str("f.yaml", &text, &registry()).expect("loads");
        assert_eq!(settings_of(&config), FakeSettings::default());
        assert_eq!(config.providers[0].driver, FAKE);
    }

    #[test]
    fn fake_settings_override_defaults() {
        let text = format!("{BASE}    fake-settings:\n      boot-delay: 0\n      instances: 5\n      error-rate: 0.25\n");
        let config = load_str("f.yaml", &text, &registry()).expect("loads");
        let s = settings_of(&config);
        assert_eq!(s.boot_delay, Duration::ZERO);
        assert_eq!(s.instances, 5);
        assert_eq!(s.error_rate, 0.25);
        assert_eq!(s.cores, 100);
    }

    #[test]
    fn fake_settings_reject_unknown_keys_and_bad_values() {
        let text = format!("{BASE}    fake-settings:\n      error-rate: 2\n      colour: blue\n");
        let err = load_str("f.yaml", &text, &registry()).expect_err("invalid");
        let text = err.to_string();
        assert!(
            text.contains("f.yaml:7:19: providers[0].fake-settings.error-rate: expected a number from 0.0 to 1.0"),
            "{text}"
        );
        assert!(
            text.contains("f.yaml:8:7: providers[0].fake-settings.colour: unknown key"),
            "{text}"
        );
    }

    #[test]
    fn boot_delays_beyond_a_duration_are_errors_not_panics() {
        for value in ["1.0e+30", ".inf", "-1", ".nan"] {
            let text = format!("{BASE}    fake-settings:\n      boot-delay: {value}\n");
            let err = load_str("f.yaml", &text, &registry()).expect_err(value);
            assert!(
                err.to_string().contains(
                    "providers[0].fake-settings.boot-delay: expected a non-negative number of seconds"
                ),
                "{value}: {err}"
            );
        }
    }
}
