//! The [`Provider`] trait: what a cloud driver does.
//!
//! A provider is one configured `providers:` entry, built by its driver from
//! the provider's own config mapping. The launcher engine calls it to create,
//! inspect and delete instances, to learn quota, and the builder to upload
//! images. Waiting for ACTIVE, paging and capability checks are
//! conveniences of [`ProviderExt`]; rate limits, `max-concurrency`,
//! capability enforcement and task metrics are wrappers that implement
//! [`Provider`] themselves ([`wrappers`], stacked by [`stack`]). A driver
//! only implements the cloud verbs.
//!
//! # Contract
//! - `create_instance` returns as soon as the cloud has accepted the request
//!   and assigned an `external_id`; the engine records that id before it waits,
//!   so a crash never leaks an instance for good.
//! - Every instance carries the `metadata` of its [`LaunchSpec`] (the nodepool
//!   keys `nodepool_provider_name`, `nodepool_pool_name`, `nodepool_node_id`,
//!   ...), and `list_instances_page` returns it, so leaked instances can be
//!   found.
//! - `delete_instance` of an id that no longer exists succeeds.
//! - An operation outside [`Provider::capabilities`] returns
//!   [`Error::Unsupported`] (the defaults of the optional methods do).
//! - Leaked resources that carry no metadata (OpenStack's ports left
//!   `DOWN`, unattached floating IPs) are cleaned by
//!   [`Provider::cleanup_leaked_resources`], which says how many of each
//!   kind went; the engine counts them, the driver reports nothing itself.
//!
//! # Providers of pre-registered hosts
//! A driver whose nodes are hosts that exist before and after a node (the
//! static driver) answers [`Provider::registered`] with its
//! [`RegisteredHosts`]; the engine asks that instead of guessing from
//! other methods. See [`RegisteredHosts`] for what the engine then does.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{Error, Result};

mod driver_metrics;
mod ext;
mod registered;
mod resources;
pub mod wrappers;

pub use driver_metrics::{DriverMetrics, MetricSeries, MetricTotals};
pub use ext::{
    for_each_instance, list_all_instances, poll_until_active, wait_active_with, wait_gone,
    BootClassifier, ProviderExt, DEFAULT_POLL_INTERVAL,
};
pub use registered::RegisteredHosts;
pub use resources::{OtherResources, Quantity, Resources};
pub use wrappers::{stack, stack_all, stack_with, StackSettings};

/// Instance metadata key: the provider name.
pub const META_PROVIDER: &str = "nodepool_provider_name";
/// Instance metadata key: the pool name.
pub const META_POOL: &str = "nodepool_pool_name";
/// Instance metadata key: the node id.
pub const META_NODE_ID: &str = "nodepool_node_id";
/// Instance metadata key: the diskimage name.
pub const META_IMAGE: &str = "nodepool_image_name";
/// Instance metadata key: the node's groups.
pub const META_GROUPS: &str = "groups";

/// What a provider can do. Engines check these before calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProviderCapabilities {
    /// `upload_image`, `delete_image` and `list_images` work.
    pub image_upload: bool,
    /// `quota` queries the cloud's own limits.
    pub quota_query: bool,
    /// `list_instances_page` lists instances with their metadata (leak
    /// cleanup, unmanaged quota).
    pub instance_listing: bool,
}

impl ProviderCapabilities {
    /// Whether `operation` (a [`Provider`] method name) is allowed: the
    /// optional operations need their capability, every other one is.
    pub fn allows(&self, operation: &str) -> bool {
        match operation {
            "list_instances_page" => self.instance_listing,
            "quota" => self.quota_query,
            "upload_image" | "delete_image" | "list_images" => self.image_upload,
            _ => true,
        }
    }
}

/// The image to boot an instance from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// A cloud image named or identified by the config (`cloud-images`).
    Cloud(String),
    /// An image we uploaded: its external id in the cloud and diskimage name.
    Uploaded {
        /// The diskimage name.
        diskimage: String,
        /// The cloud's image id.
        external_id: String,
    },
}

/// What the engine asks a provider to launch.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchSpec {
    /// The node id in the store.
    pub node_id: String,
    /// Pool name.
    pub pool: String,
    /// Label name (the provider knows the label's config by pool and name).
    pub label: String,
    /// Hostname to give the instance.
    pub hostname: String,
    /// The image, when the label boots one.
    pub image: Option<ImageRef>,
    /// Metadata to set on the instance (nodepool keys included).
    pub metadata: BTreeMap<String, String>,
    /// Availability zone to use, if the engine chose one.
    pub az: Option<String>,
    /// The safe attributes of the node request the node is launched for
    /// ([`NodeRequest::safe_attributes`](crate::model::NodeRequest::safe_attributes)),
    /// for drivers that template instance properties from it (upstream's
    /// `dynamic-instance-properties`); `None` when there is no request.
    pub request: Option<serde_json::Value>,
}

/// The state of a cloud instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceState {
    /// Still booting.
    Building,
    /// Booted and usable.
    Active,
    /// The cloud reports an error.
    Error(String),
    /// Being deleted.
    Deleting,
}

/// A cloud instance as a provider reports it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Instance {
    /// The cloud's id.
    pub external_id: String,
    /// State (`None` when the listing does not tell).
    pub state: Option<InstanceState>,
    /// Metadata (nodepool keys included).
    pub metadata: BTreeMap<String, String>,
    /// The IP to connect to.
    pub interface_ip: Option<String>,
    /// Public IPv4.
    pub public_ipv4: Option<String>,
    /// Private IPv4.
    pub private_ipv4: Option<String>,
    /// Public IPv6.
    pub public_ipv6: Option<String>,
    /// Availability zone.
    pub az: Option<String>,
    /// Cloud name.
    pub cloud: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Hypervisor host id.
    pub host_id: Option<String>,
    /// Image id it booted from.
    pub image_id: Option<String>,
    /// Resources it uses.
    pub resources: Resources,
    /// Host keys, when the driver knows them (static driver scans them).
    pub host_keys: Vec<String>,
    /// Connection port, when not 22.
    pub connection_port: Option<u16>,
    /// The node's `connection_type` when the driver decides it per node
    /// (upstream's kubernetes driver: `namespace` or `kubectl`); `None`
    /// keeps the label's.
    pub connection_type: Option<String>,
    /// The mapping the node stores as its `connection_port` (upstream's
    /// container drivers), see [`Node::connection_details`](crate::model::Node::connection_details).
    pub connection_details: Option<ConnectionDetails>,
    /// Facts about how the node was made that upstream keeps in the node's
    /// `node_properties` (the aws driver: `{"fleet": bool, "spot": bool}`).
    pub node_properties: Option<crate::model::json::JsonObject>,
}

pub use crate::model::ConnectionDetails;

/// One page of a provider's instances ([`Provider::list_instances_page`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InstancePage {
    /// The instances of this page.
    pub instances: Vec<Instance>,
    /// Where the next page starts (the `marker` to pass); `None` on the
    /// last page.
    pub next: Option<String>,
}

/// How many instances the engine asks for per page when it walks a
/// provider's instances ([`for_each_instance`]).
pub const INSTANCE_PAGE_SIZE: usize = 200;

impl Instance {
    /// The node id in the instance's metadata, if the instance carries
    /// provider `provider`'s metadata (one of ours, for the leak pass and
    /// the unmanaged-quota count).
    pub fn node_id_of(&self, provider: &str) -> Option<&str> {
        if self.metadata.get(META_PROVIDER).map(String::as_str) != Some(provider) {
            return None;
        }
        self.metadata.get(META_NODE_ID).map(String::as_str)
    }
}

/// What one [`Provider::cleanup_leaked_resources`] call deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeakedResources {
    /// How many resources of each kind were deleted. The kind is the
    /// plural name upstream's counter
    /// `nodepool.provider.<provider>.leaked.<kind>` carries (`ports`,
    /// `floatingips`); a kind may be left out when none went.
    pub deleted: Vec<(&'static str, u64)>,
}

impl LeakedResources {
    /// Add `count` deleted resources of `kind`.
    pub fn add(&mut self, kind: &'static str, count: u64) {
        match self.deleted.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n = n.saturating_add(count),
            None => self.deleted.push((kind, count)),
        }
    }

    /// How many of `kind` were deleted.
    pub fn count(&self, kind: &str) -> u64 {
        self.deleted
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, n)| *n)
            .sum()
    }
}

/// A built image file to upload.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageUploadSpec {
    /// Diskimage name.
    pub diskimage: String,
    /// Build id.
    pub build_id: String,
    /// Upload id.
    pub upload_id: String,
    /// The name to give the image in the cloud.
    pub external_name: String,
    /// The local file.
    pub path: PathBuf,
    /// Its format ("qcow2", "raw", "vhd", ...).
    pub format: String,
    /// Metadata to set on the image.
    pub metadata: BTreeMap<String, String>,
}

/// An image as the cloud lists it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CloudImage {
    /// The cloud's id.
    pub external_id: String,
    /// The cloud's name.
    pub name: String,
    /// Metadata (nodepool keys included).
    pub metadata: BTreeMap<String, String>,
}

/// A cloud driver instance for one configured provider.
///
/// Seven methods are required: the cloud verbs a launcher cannot work
/// without. The optional ones default to [`Error::Unsupported`] (those a
/// capability gates), to polling (`wait_active`), to "nothing else leaks"
/// (`cleanup_leaked_resources`) or to "not a provider of pre-registered
/// hosts" (`registered`). Conveniences built on these live
/// in [`ProviderExt`], never here.
///
/// See the module documentation for the contract.
#[async_trait]
pub trait Provider: Send + Sync + Debug + 'static {
    /// The provider name from the config.
    fn name(&self) -> &str;

    /// What this provider supports. Engines check it before calling; the
    /// [`CapabilityCheck`](wrappers::CapabilityCheck) wrapper enforces it.
    fn capabilities(&self) -> ProviderCapabilities;

    /// Resources one node of `label` in `pool` uses (for quota accounting).
    async fn label_resources(&self, pool: &str, label: &str) -> Result<Resources>;

    /// Ask the cloud for an instance; return once it has an external id.
    async fn create_instance(&self, spec: &LaunchSpec) -> Result<Instance>;

    /// The current view of one instance, `None` if the cloud has no such id.
    async fn get_instance(&self, external_id: &str) -> Result<Option<Instance>>;

    /// Delete an instance. Deleting a missing id succeeds.
    async fn delete_instance(&self, external_id: &str) -> Result<()>;

    /// One page of the provider's instances, with metadata: at most `limit`
    /// instances after `marker` (the `next` of the page before; `None` for
    /// the first page). The engine's periodic passes (leak cleanup,
    /// unmanaged quota) walk instances this way ([`for_each_instance`]), so
    /// a cloud of many instances is never held in memory at once. A cloud
    /// that does not page returns every instance as the only page.
    ///
    /// Requires [`ProviderCapabilities::instance_listing`]; a driver
    /// without it returns [`Error::Unsupported`].
    async fn list_instances_page(&self, marker: Option<&str>, limit: usize)
        -> Result<InstancePage>;

    /// Wait until the instance is active, failed, gone or `timeout` has
    /// passed.
    ///
    /// The default polls [`Provider::get_instance`] through the shared
    /// helper ([`wait_active_with`], no [`BootClassifier`]). It stays a
    /// method, not a [`ProviderExt`] convenience, for two reasons: a driver
    /// that knows when an instance settles overrides it to wait without
    /// polling (the fake cloud), and the wrappers see the whole wait as one
    /// launch call (`max-concurrency` holds its permit across it, the task
    /// metrics time it as `wait_active`). A driver that only needs to say
    /// what a failed boot means overrides it with one call to
    /// [`wait_active_with`] and its classifier; it never copies the loop.
    async fn wait_active(&self, external_id: &str, timeout: Duration) -> Result<Instance> {
        wait_active_with(self, external_id, timeout, &|_: &Instance, _: &str| None).await
    }

    /// The cloud's own limits.
    ///
    /// Requires [`ProviderCapabilities::quota_query`]; the default returns
    /// [`Error::Unsupported`].
    async fn quota(&self) -> Result<Resources> {
        Err(unsupported(self.name(), "quota"))
    }

    /// Upload a built image; returns the cloud's image id.
    ///
    /// Requires [`ProviderCapabilities::image_upload`]; the default returns
    /// [`Error::Unsupported`].
    async fn upload_image(&self, spec: &ImageUploadSpec) -> Result<String> {
        let _ = spec;
        Err(unsupported(self.name(), "upload_image"))
    }

    /// Delete an uploaded image. Deleting a missing id succeeds.
    ///
    /// Requires [`ProviderCapabilities::image_upload`]; the default returns
    /// [`Error::Unsupported`].
    async fn delete_image(&self, external_id: &str) -> Result<()> {
        let _ = external_id;
        Err(unsupported(self.name(), "delete_image"))
    }

    /// Images in the cloud, with metadata.
    ///
    /// Requires [`ProviderCapabilities::image_upload`]; the default returns
    /// [`Error::Unsupported`].
    async fn list_images(&self) -> Result<Vec<CloudImage>> {
        Err(unsupported(self.name(), "list_images"))
    }

    /// The console output of instance `external_id` of `label` in `pool`,
    /// for the log after a launch attempt whose post-boot check failed
    /// (upstream's `getConsoleLog`, used by OpenStack labels with
    /// `console-log: true`). `None` when the label does not ask for it or
    /// the driver has no console logs (the default); an error is only
    /// logged by the engine.
    async fn console_log(
        &self,
        pool: &str,
        label: &str,
        external_id: &str,
    ) -> Result<Option<String>> {
        let _ = (pool, label, external_id);
        Ok(None)
    }

    /// Delete this provider's leaked resources that the engine cannot find
    /// by listing instances, because they carry no nodepool metadata, and
    /// say how many of each kind were deleted (OpenStack: compute ports
    /// still `DOWN` `port-cleanup-interval` after they were first seen,
    /// and with `clean-floating-ips` unattached floating IPs).
    ///
    /// The launcher's leak-cleanup pass calls it for each provider that
    /// lists its instances, once the listing succeeded and the leaked
    /// instances were deleted: the moment upstream's `listResources` runs
    /// these cleanups, at the end of its listing. The engine adds the
    /// counts to upstream's `nodepool.provider.<provider>.leaked.<kind>`
    /// counters. A driver that fails to delete one resource logs it and
    /// counts the others; an error is only logged by the engine. The
    /// default deletes nothing.
    async fn cleanup_leaked_resources(&self) -> Result<LeakedResources> {
        Ok(LeakedResources::default())
    }

    /// The provider's pre-registered hosts, when its nodes are hosts that
    /// exist before and after a node (the static driver) rather than
    /// instances created on demand. The engine asks this to learn what the
    /// driver is; the default `None` means a cloud of on-demand instances.
    fn registered(&self) -> Option<&dyn RegisteredHosts> {
        None
    }
}

/// The [`Error::Unsupported`] of `operation` on provider `provider`.
pub fn unsupported(provider: &str, operation: &'static str) -> Error {
    Error::Unsupported {
        provider: provider.to_string(),
        operation,
    }
}

/// A shared provider.
pub type DynProvider = dyn Provider;

/// Forward every [`Provider`] method to `(**self)`, for the smart pointers.
macro_rules! forward_provider {
    ($ty:ty) => {
        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<P: Provider + ?Sized> Provider for $ty {
            fn name(&self) -> &str {
                (**self).name()
            }
            fn capabilities(&self) -> ProviderCapabilities {
                (**self).capabilities()
            }
            async fn label_resources(&self, pool: &str, label: &str) -> Result<Resources> {
                (**self).label_resources(pool, label).await
            }
            async fn create_instance(&self, spec: &LaunchSpec) -> Result<Instance> {
                (**self).create_instance(spec).await
            }
            async fn get_instance(&self, external_id: &str) -> Result<Option<Instance>> {
                (**self).get_instance(external_id).await
            }
            async fn delete_instance(&self, external_id: &str) -> Result<()> {
                (**self).delete_instance(external_id).await
            }
            async fn list_instances_page(
                &self,
                marker: Option<&str>,
                limit: usize,
            ) -> Result<InstancePage> {
                (**self).list_instances_page(marker, limit).await
            }
            async fn wait_active(&self, external_id: &str, timeout: Duration) -> Result<Instance> {
                (**self).wait_active(external_id, timeout).await
            }
            async fn quota(&self) -> Result<Resources> {
                (**self).quota().await
            }
            async fn upload_image(&self, spec: &ImageUploadSpec) -> Result<String> {
                (**self).upload_image(spec).await
            }
            async fn delete_image(&self, external_id: &str) -> Result<()> {
                (**self).delete_image(external_id).await
            }
            async fn list_images(&self) -> Result<Vec<CloudImage>> {
                (**self).list_images().await
            }
            async fn console_log(
                &self,
                pool: &str,
                label: &str,
                external_id: &str,
            ) -> Result<Option<String>> {
                (**self).console_log(pool, label, external_id).await
            }
            async fn cleanup_leaked_resources(&self) -> Result<LeakedResources> {
                (**self).cleanup_leaked_resources().await
            }
            fn registered(&self) -> Option<&dyn RegisteredHosts> {
                (**self).registered()
            }
        }
    };
}

forward_provider!(Arc<P>);
forward_provider!(Box<P>);

#[cfg(test)]
mod tests;
