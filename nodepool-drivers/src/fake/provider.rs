//! The fake provider: a [`Provider`] over a [`FakeCloud`].
//!
//! Every capability is supported (it is a cloud of on-demand instances,
//! not of pre-registered hosts). The provider
//! knows what one node of each `(pool, label)` uses; the cloud enforces its
//! quota on create.
//!
//! ```
//! # use std::collections::BTreeMap;
//! # use nodepool_drivers::fake::cloud::{FakeCloud, FakeCloudSettings};
//! # use nodepool_drivers::fake::provider::FakeProvider;
//! let cloud = FakeCloud::new(FakeCloudSettings::default());
//! let small = FakeCloudSettings::default().flavors[0].resources();
//! let provider = FakeProvider::new(
//!     "fake-provider",
//!     cloud.clone(),
//!     BTreeMap::from([(("main".to_string(), "small".to_string()), small)]),
//! );
//! ```

use nodepool_core::ErrorKind;
use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use nodepool_core::provider::{
    CloudImage, ImageUploadSpec, Instance, InstancePage, InstanceState, LaunchSpec, Provider,
    ProviderCapabilities, Resources,
};
use nodepool_core::{Error, Result};

use super::cloud::{CreateRequest, FakeCloud, FakeCloudSettings, Flavor};
use super::config::{FakeConfig, FakeSettings};

impl FakeCloudSettings {
    /// The cloud a provider's `fake-settings` describe: its quota, boot delay
    /// and error rate, and upstream's two flavor names sized
    /// `cores-per-node`/`ram-per-node`.
    pub fn from_config(settings: &FakeSettings) -> Self {
        let d = Self::default();
        let flavor = |f: &Flavor| Flavor {
            name: f.name.clone(),
            cores: settings.cores_per_node,
            ram: settings.ram_per_node,
        };
        Self {
            boot_delay: settings.boot_delay,
            max_instances: settings.instances,
            max_cores: settings.cores,
            max_ram: settings.ram,
            flavors: d.flavors.iter().map(flavor).collect(),
            faults: super::cloud::FaultSettings {
                error_rate: settings.error_rate,
                timeout_rate: settings.timeout_rate,
                quota_error_rate: settings.quota_error_rate,
                boot_failure_rate: settings.boot_failure_rate,
                seed: settings.seed.unwrap_or(d.faults.seed),
            },
            ..d
        }
    }
}

/// A fake provider: one configured provider on a (possibly shared) fake cloud.
#[derive(Debug, Clone)]
pub struct FakeProvider {
    name: String,
    cloud: FakeCloud,
    labels: BTreeMap<(String, String), Resources>,
}

impl FakeProvider {
    /// A provider named `name` on `cloud`, serving `labels`: what one node of
    /// each `(pool, label)` uses.
    pub fn new(
        name: impl Into<String>,
        cloud: FakeCloud,
        labels: BTreeMap<(String, String), Resources>,
    ) -> Self {
        Self {
            name: name.into(),
            cloud,
            labels,
        }
    }

    /// A provider for a parsed fake provider config on `cloud` (see
    /// [`FakeCloudSettings::from_config`] to make one). Each label is sized
    /// by the flavor upstream's OpenStack driver would pick (`flavor-name`,
    /// `min-ram`); a label no flavor fits is left out with a warning, so the
    /// engine declines it, as upstream marks it an error label.
    pub fn from_config(name: impl Into<String>, config: &FakeConfig, cloud: FakeCloud) -> Self {
        let name = name.into();
        let settings = cloud.settings();
        let mut labels = BTreeMap::new();
        for pool in &config.openstack.pools {
            for label in &pool.labels {
                let min_ram = u64::try_from(label.min_ram).ok();
                match settings.find_flavor(label.flavor_name.as_deref(), min_ram) {
                    Some(flavor) => {
                        labels.insert((pool.name.clone(), label.name.clone()), flavor.resources());
                    }
                    None => tracing::warn!(
                        provider = %name,
                        pool = %pool.name,
                        label = %label.name,
                        "no fake flavor fits the label; it is unavailable"
                    ),
                }
            }
        }
        Self::new(name, cloud, labels)
    }

    /// The cloud, to inspect or to change its faults and quota.
    pub fn cloud(&self) -> &FakeCloud {
        &self.cloud
    }

    /// Like [`poll_until_active`](nodepool_core::provider::poll_until_active)
    /// but without polling: sleeps exactly until the instance leaves
    /// `Building` (or `timeout` passes), then reports it. Errors as
    /// `wait_active` does: [`Error::Cloud`] for a failed or vanished
    /// instance, [`Error::Timeout`] for one still building at the deadline.
    pub async fn wait_until_active(
        &self,
        external_id: &str,
        timeout: Duration,
    ) -> Result<Instance> {
        let deadline = nodepool_core::time::deadline_after(timeout);
        if let Some(at) = self.cloud.settles_at(external_id) {
            tokio::time::sleep_until(at.min(deadline)).await;
        } else if self.cloud.get(external_id).is_some() {
            // Never settles: the caller's boot timeout is what ends it.
            tokio::time::sleep_until(deadline).await;
        }
        let Some(instance) = self.cloud.get(external_id) else {
            return Err(
                self.cloud_error(format!("instance {external_id} disappeared while booting"))
            );
        };
        match &instance.state {
            Some(InstanceState::Active) => Ok(instance),
            Some(InstanceState::Error(message)) => {
                Err(self.cloud_error(format!("instance {external_id} failed: {message}")))
            }
            _ => Err(Error::Timeout {
                what: format!("instance {external_id} to become active"),
                after: timeout,
            }),
        }
    }

    fn cloud_error(&self, message: String) -> Error {
        Error::Cloud {
            provider: self.name.clone(),
            message,
            kind: ErrorKind::Transient,
            source: None,
        }
    }

    fn resources_of(&self, pool: &str, label: &str) -> Result<Resources> {
        self.labels
            .get(&(pool.to_string(), label.to_string()))
            .cloned()
            .ok_or_else(|| Error::NotFound {
                kind: "label",
                id: format!("{}/{pool}/{label}", self.name),
            })
    }
}

#[async_trait]
impl Provider for FakeProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> ProviderCapabilities {
        ProviderCapabilities {
            image_upload: true,
            quota_query: true,
            instance_listing: true,
        }
    }

    async fn label_resources(&self, pool: &str, label: &str) -> Result<Resources> {
        self.resources_of(pool, label)
    }

    #[tracing::instrument(skip_all, fields(provider = %self.name, node_id = %spec.node_id))]
    async fn create_instance(&self, spec: &LaunchSpec) -> Result<Instance> {
        let resources = self.resources_of(&spec.pool, &spec.label)?;
        self.cloud.create(CreateRequest {
            provider: self.name.clone(),
            name: spec.hostname.clone(),
            image: spec.image.clone(),
            resources,
            metadata: spec.metadata.clone(),
            az: spec.az.clone(),
        })
    }

    async fn get_instance(&self, external_id: &str) -> Result<Option<Instance>> {
        Ok(self.cloud.get(external_id))
    }

    /// [`FakeProvider::wait_until_active`]: the fake cloud knows when an
    /// instance settles, so the wait sleeps until then instead of polling.
    async fn wait_active(&self, external_id: &str, timeout: Duration) -> Result<Instance> {
        self.wait_until_active(external_id, timeout).await
    }

    async fn delete_instance(&self, external_id: &str) -> Result<()> {
        self.cloud.delete(&self.name, external_id)
    }

    /// The servers in id order, `limit` at a time: every server in the
    /// cloud, as an OpenStack account lists them (those of other providers
    /// sharing the cloud and unmanaged ones included).
    async fn list_instances_page(
        &self,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<InstancePage> {
        let (instances, next) = self.cloud.instances_page(marker, limit.max(1));
        Ok(InstancePage { instances, next })
    }

    async fn quota(&self) -> Result<Resources> {
        Ok(self.cloud.settings().limits())
    }

    /// Stores the image in memory; the file must exist.
    async fn upload_image(&self, spec: &ImageUploadSpec) -> Result<String> {
        if let Err(e) = tokio::fs::metadata(&spec.path).await {
            return Err(Error::Cloud {
                provider: self.name.clone(),
                message: format!("cannot read image file {}: {e}", spec.path.display()),
                kind: ErrorKind::Permanent,
                source: None,
            });
        }
        self.cloud
            .upload_image(&self.name, &spec.external_name, spec.metadata.clone())
    }

    async fn delete_image(&self, external_id: &str) -> Result<()> {
        self.cloud.delete_image(&self.name, external_id)
    }

    async fn list_images(&self) -> Result<Vec<CloudImage>> {
        Ok(self.cloud.images())
    }
}

#[cfg(test)]
mod tests;
