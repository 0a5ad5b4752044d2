//! Provider wrappers: each is a [`Provider`] around another one, adding one
//! concern the drivers must not implement themselves, and [`stack`], which
//! puts them around a driver's provider in the order the engine relies on.
//!
//! From the outside in:
//! 1. [`CapabilityCheck`]: a call to an operation the driver's
//!    [`capabilities`](Provider::capabilities) do not allow is answered
//!    [`Error::Unsupported`](crate::Error::Unsupported) without waiting for
//!    anything below and without reaching the driver.
//! 2. [`ConcurrencyLimit`]: the provider's `max-concurrency`; a permit is
//!    held during each launch call (`create_instance`, `wait_active`). It
//!    is a backstop: the launcher's pools count their launches and do not
//!    start more than `max-concurrency` in the first place.
//! 3. [`RateLimit`]: the provider's `rate`, the minimum time between the
//!    starts of two calls that reach the cloud. Below the permit, so a
//!    launch waiting for a permit holds no turn.
//! 4. [`Timed`]: count, errors and duration per provider and operation into
//!    a shared [`ProviderMetrics`], read as upstream's
//!    `nodepool.task.<provider>.<operation>` timers. Innermost, so it times
//!    the driver's own work, as upstream's task timer started after the
//!    rate delay; refused calls are not counted.
//!
//! Every wrapper implements every [`Provider`] method (its impl denies
//! `clippy::missing_trait_methods`), so no default method skips the inner
//! provider. [`Provider::registered`] is forwarded: the pre-registered host
//! calls are the driver's own bookkeeping and pass no wrapper.

use std::sync::Arc;
use std::time::Duration;

use super::Provider;
use crate::config::ProviderConfig;

mod capability;
mod concurrency;
mod rate;
mod timed;

pub use capability::CapabilityCheck;
pub use concurrency::ConcurrencyLimit;
pub use rate::{RateLimit, MAX_RATE};
pub use timed::{OperationSnapshot, OperationStats, ProviderMetrics, Timed};

/// What the wrappers of one provider are set to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StackSettings {
    /// Minimum time between the starts of two calls (zero: no spacing).
    pub rate: Duration,
    /// Most launch calls at once (`None`: no limit).
    pub max_concurrency: Option<usize>,
}

impl StackSettings {
    /// The settings of a parsed provider: its `rate` in seconds (zero,
    /// negative or NaN: no spacing; beyond [`MAX_RATE`], infinite
    /// included: [`MAX_RATE`]; drivers without a `rate` key leave it at
    /// zero) and its `max-concurrency` (zero or negative: no wrapper limit;
    /// at zero the launcher starts no launch at all).
    pub fn from_config(config: &ProviderConfig) -> Self {
        let rate = if config.rate > 0.0 {
            Duration::try_from_secs_f64(config.rate).map_or(MAX_RATE, |r| r.min(MAX_RATE))
        } else {
            Duration::ZERO
        };
        let max_concurrency = usize::try_from(config.max_concurrency)
            .ok()
            .filter(|&n| n > 0);
        Self {
            rate,
            max_concurrency,
        }
    }
}

/// `provider` inside the wrapper stack its config asks for (see the module
/// documentation for the order), recording task metrics into `metrics`.
pub fn stack(
    provider: Arc<dyn Provider>,
    config: &ProviderConfig,
    metrics: &Arc<ProviderMetrics>,
) -> Arc<dyn Provider> {
    stack_with(provider, StackSettings::from_config(config), metrics)
}

/// Every provider of `providers` inside the stack its entry in `config`
/// asks for ([`stack`]; a provider without an entry gets the stack with
/// default settings). The engines ([`Launcher`](crate::launcher::Launcher),
/// [`Builder`](crate::builder::Builder)) call it on the providers they are
/// given, so drivers' providers are passed to them as they are.
pub fn stack_all(
    config: &crate::config::Config,
    providers: std::collections::BTreeMap<String, Arc<dyn Provider>>,
    metrics: &Arc<ProviderMetrics>,
) -> std::collections::BTreeMap<String, Arc<dyn Provider>> {
    providers
        .into_iter()
        .map(|(name, provider)| {
            let settings = config
                .provider(&name)
                .map(StackSettings::from_config)
                .unwrap_or_default();
            let stacked = stack_with(provider, settings, metrics);
            (name, stacked)
        })
        .collect()
}

/// [`stack`] with explicit settings.
pub fn stack_with(
    provider: Arc<dyn Provider>,
    settings: StackSettings,
    metrics: &Arc<ProviderMetrics>,
) -> Arc<dyn Provider> {
    let timed = Timed::new(provider, Arc::clone(metrics));
    let rated = RateLimit::new(timed, settings.rate);
    let limited = ConcurrencyLimit::new(rated, settings.max_concurrency);
    Arc::new(CapabilityCheck::new(limited))
}

/// Implement every [`Provider`] method of wrapper `$ty<P>` by passing the
/// inner call (`self.inner`) through the wrapper's
/// `async fn around<T>(&self, operation: &'static str, call: impl Future<Output = Result<T>>) -> Result<T>`.
/// `name`, `capabilities` and `registered` are forwarded as they are.
macro_rules! around_every_call {
    ($ty:ident) => {
        #[async_trait::async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<P: $crate::provider::Provider> $crate::provider::Provider for $ty<P> {
            fn name(&self) -> &str {
                self.inner.name()
            }
            fn capabilities(&self) -> $crate::provider::ProviderCapabilities {
                self.inner.capabilities()
            }
            async fn label_resources(
                &self,
                pool: &str,
                label: &str,
            ) -> $crate::Result<$crate::provider::Resources> {
                self.around("label_resources", self.inner.label_resources(pool, label))
                    .await
            }
            async fn create_instance(
                &self,
                spec: &$crate::provider::LaunchSpec,
            ) -> $crate::Result<$crate::provider::Instance> {
                self.around("create_instance", self.inner.create_instance(spec))
                    .await
            }
            async fn get_instance(
                &self,
                external_id: &str,
            ) -> $crate::Result<Option<$crate::provider::Instance>> {
                self.around("get_instance", self.inner.get_instance(external_id))
                    .await
            }
            async fn delete_instance(&self, external_id: &str) -> $crate::Result<()> {
                self.around("delete_instance", self.inner.delete_instance(external_id))
                    .await
            }
            async fn list_instances_page(
                &self,
                marker: Option<&str>,
                limit: usize,
            ) -> $crate::Result<$crate::provider::InstancePage> {
                self.around(
                    "list_instances_page",
                    self.inner.list_instances_page(marker, limit),
                )
                .await
            }
            async fn wait_active(
                &self,
                external_id: &str,
                timeout: std::time::Duration,
            ) -> $crate::Result<$crate::provider::Instance> {
                self.around("wait_active", self.inner.wait_active(external_id, timeout))
                    .await
            }
            async fn quota(&self) -> $crate::Result<$crate::provider::Resources> {
                self.around("quota", self.inner.quota()).await
            }
            async fn upload_image(
                &self,
                spec: &$crate::provider::ImageUploadSpec,
            ) -> $crate::Result<String> {
                self.around("upload_image", self.inner.upload_image(spec))
                    .await
            }
            async fn delete_image(&self, external_id: &str) -> $crate::Result<()> {
                self.around("delete_image", self.inner.delete_image(external_id))
                    .await
            }
            async fn list_images(&self) -> $crate::Result<Vec<$crate::provider::CloudImage>> {
                self.around("list_images", self.inner.list_images()).await
            }
            async fn console_log(
                &self,
                pool: &str,
                label: &str,
                external_id: &str,
            ) -> $crate::Result<Option<String>> {
                self.around(
                    "console_log",
                    self.inner.console_log(pool, label, external_id),
                )
                .await
            }
            async fn cleanup_leaked_resources(
                &self,
            ) -> $crate::Result<$crate::provider::LeakedResources> {
                self.around(
                    "cleanup_leaked_resources",
                    self.inner.cleanup_leaked_resources(),
                )
                .await
            }
            fn registered(&self) -> Option<&dyn $crate::provider::RegisteredHosts> {
                self.inner.registered()
            }
        }
    };
}
pub(crate) use around_every_call;

#[cfg(test)]
mod tests;
