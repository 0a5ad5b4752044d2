//! The [`Provider`] trait: what a cloud driver does.
//!
//! A provider is one configured `providers:` entry, built by its driver from
//! the provider's own config mapping. The launcher engine calls it to create,
//! inspect and delete instances, to learn quota, and the builder to upload
//! images. Waiting for an instance to become active, retries and rate limits
//! live outside the trait (see [`ProviderExt`] and the wrappers), so a driver
//! only implements the cloud verbs.
//!
//! # Contract
//! - `create_instance` returns as soon as the cloud has accepted the request
//!   and assigned an `external_id`; the engine records that id before it waits,
//!   so a crash never leaks an instance for good.
//! - Every instance carries the `metadata` of its [`LaunchSpec`] (the nodepool
//!   keys `nodepool_provider_name`, `nodepool_pool_name`, `nodepool_node_id`,
//!   ...), and `list_instances` returns it, so leaked instances can be found.
//! - `delete_instance` of an id that no longer exists succeeds.
//! - An operation outside [`Provider::capabilities`] returns
//!   [`Error::Unsupported`].
//!
//! # Providers of pre-registered nodes
//! A provider with [`ProviderCapabilities::preregistered_nodes`] (the
//! static driver) does not create capacity: it keeps one ready node record
//! per host slot in the store itself. The engine then
//! - calls [`Provider::sync_registered`] (full) when the provider starts and
//!   after every config change that rebuilds it, periodically, and
//!   whenever one of its nodes is handed back (`used`) or deleted, instead
//!   of deleting the host;
//! - never launches for its pools and reads how many more nodes of each
//!   label it can hand out from [`Provider::label_capacity`];
//! - asks [`Provider::node_alive`] before handing a ready node to a request.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::model::Node;
use crate::store::NodeStore;
use crate::{Error, Result};

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
    /// `list_instances` lists instances with their metadata (leak cleanup).
    pub instance_listing: bool,
    /// Nodes are pre-existing hosts registered by the provider (static
    /// driver) rather than instances created on demand.
    pub preregistered_nodes: bool,
}

/// Resources a node uses, or a limit on them. `None` means unlimited/unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resources {
    /// Instances (servers).
    pub instances: Option<u64>,
    /// CPU cores.
    pub cores: Option<u64>,
    /// RAM in MB.
    pub ram: Option<u64>,
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
}

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
/// See the module documentation for the contract.
#[async_trait]
pub trait Provider: Send + Sync + Debug + 'static {
    /// The provider name from the config.
    fn name(&self) -> &str;

    /// What this provider supports.
    fn capabilities(&self) -> ProviderCapabilities;

    /// Resources one node of `label` in `pool` uses (for quota accounting).
    async fn label_resources(&self, pool: &str, label: &str) -> Result<Resources>;

    /// Ask the cloud for an instance; return once it has an external id.
    async fn create_instance(&self, spec: &LaunchSpec) -> Result<Instance>;

    /// The current view of one instance, `None` if the cloud has no such id.
    async fn get_instance(&self, external_id: &str) -> Result<Option<Instance>>;

    /// Delete an instance. Deleting a missing id succeeds.
    async fn delete_instance(&self, external_id: &str) -> Result<()>;

    /// Wait until the instance is active, failed, gone or `timeout` has
    /// passed. The default polls [`Provider::get_instance`] (see
    /// [`poll_until_active`]); a driver that knows when an instance settles
    /// overrides it to wait without polling.
    async fn wait_active(&self, external_id: &str, timeout: Duration) -> Result<Instance> {
        poll_until_active(self, external_id, timeout, DEFAULT_POLL_INTERVAL).await
    }

    /// Every instance of this provider, with metadata.
    ///
    /// Requires [`ProviderCapabilities::instance_listing`].
    async fn list_instances(&self) -> Result<Vec<Instance>>;

    /// One page of [`Provider::list_instances`]: at most `limit` instances
    /// after `marker` (the `next` of the page before; `None` for the first
    /// page). The engine's periodic passes (leak cleanup, unmanaged quota)
    /// walk instances this way, so a cloud of many instances is never held
    /// in memory at once.
    ///
    /// The default ignores `marker` and `limit` and returns every instance
    /// as the only page; a driver whose cloud pages its listing overrides it.
    ///
    /// Requires [`ProviderCapabilities::instance_listing`].
    async fn list_instances_page(
        &self,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<InstancePage> {
        let _ = (marker, limit);
        Ok(InstancePage {
            instances: self.list_instances().await?,
            next: None,
        })
    }

    /// The cloud's own limits.
    ///
    /// Requires [`ProviderCapabilities::quota_query`].
    async fn quota(&self) -> Result<Resources>;

    /// Upload a built image; returns the cloud's image id.
    ///
    /// Requires [`ProviderCapabilities::image_upload`].
    async fn upload_image(&self, spec: &ImageUploadSpec) -> Result<String>;

    /// Delete an uploaded image. Deleting a missing id succeeds.
    ///
    /// Requires [`ProviderCapabilities::image_upload`].
    async fn delete_image(&self, external_id: &str) -> Result<()>;

    /// Images in the cloud, with metadata.
    ///
    /// Requires [`ProviderCapabilities::image_upload`].
    async fn list_images(&self) -> Result<Vec<CloudImage>>;

    /// Bring the provider's pre-registered node records in `store` in step
    /// with its configuration: register ready records for free host slots,
    /// hand back `used` records (delete them and register their slots
    /// again), deregister free records of hosts no longer configured.
    ///
    /// `full` asks for the pass run at start and after a config change
    /// (every host re-checked, free records updated from the config); a
    /// periodic pass (`full == false`) only contacts hosts with a free slot,
    /// and runs a full pass if the provider never ran one. Passes of one
    /// provider never overlap. Problems with single hosts are the
    /// provider's to log and retry; an error means the pass could not run.
    ///
    /// Requires [`ProviderCapabilities::preregistered_nodes`]; the default
    /// returns [`Error::Unsupported`].
    async fn sync_registered(&self, store: &dyn NodeStore, full: bool) -> Result<()> {
        let _ = (store, full);
        Err(Error::Unsupported {
            provider: self.name().to_string(),
            operation: "sync_registered",
        })
    }

    /// Whether the ready `node` may be handed to a request (upstream's
    /// `checkReusableNode`). A provider that answers `false` drops the
    /// record itself when it is still free (and registers it again once the
    /// host is back). Called before the engine locks the node.
    ///
    /// The default says every node is alive.
    async fn node_alive(&self, store: &dyn NodeStore, node: &Node) -> Result<bool> {
        let _ = (store, node);
        Ok(true)
    }

    /// How many more nodes of each label the provider can hand out now
    /// (upstream's `getLabelQuota`), counted on `nodes`: the engine passes
    /// the records of the pool being scheduled that no request has been
    /// promised yet. Labels missing from the map are unlimited; `None` (the
    /// default) means the provider has no per-label limit.
    fn label_capacity(&self, nodes: &[Node]) -> Option<BTreeMap<String, u64>> {
        let _ = nodes;
        None
    }
}

/// A shared provider.
pub type DynProvider = dyn Provider;

#[async_trait]
impl<P: Provider + ?Sized> Provider for Arc<P> {
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
    async fn wait_active(&self, external_id: &str, timeout: Duration) -> Result<Instance> {
        (**self).wait_active(external_id, timeout).await
    }
    async fn list_instances(&self) -> Result<Vec<Instance>> {
        (**self).list_instances().await
    }
    async fn list_instances_page(
        &self,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<InstancePage> {
        (**self).list_instances_page(marker, limit).await
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
    async fn sync_registered(&self, store: &dyn NodeStore, full: bool) -> Result<()> {
        (**self).sync_registered(store, full).await
    }
    async fn node_alive(&self, store: &dyn NodeStore, node: &Node) -> Result<bool> {
        (**self).node_alive(store, node).await
    }
    fn label_capacity(&self, nodes: &[Node]) -> Option<BTreeMap<String, u64>> {
        (**self).label_capacity(nodes)
    }
}

/// First poll delay of [`Provider::wait_active`]'s default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Poll `get_instance` until the instance is active, failed, gone or
/// `timeout` has passed. `interval` is the first poll delay; it doubles up
/// to one second.
pub async fn poll_until_active<P: Provider + ?Sized>(
    provider: &P,
    external_id: &str,
    timeout: Duration,
    interval: Duration,
) -> Result<Instance> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = interval;
    loop {
        match provider.get_instance(external_id).await? {
            Some(inst) => match &inst.state {
                Some(InstanceState::Active) => return Ok(inst),
                Some(InstanceState::Error(msg)) => {
                    return Err(Error::Cloud {
                        provider: provider.name().to_string(),
                        message: format!("instance {external_id} failed: {msg}"),
                        retryable: true,
                    })
                }
                _ => {}
            },
            None => {
                return Err(Error::Cloud {
                    provider: provider.name().to_string(),
                    message: format!("instance {external_id} disappeared while booting"),
                    retryable: true,
                })
            }
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(Error::Timeout {
                what: format!("instance {external_id} to become active"),
                after: timeout,
            });
        }
        tokio::time::sleep(delay.min(deadline - now)).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// Conveniences over any [`Provider`].
#[async_trait]
pub trait ProviderExt: Provider {
    /// Fail with [`Error::Unsupported`] unless `supported`.
    fn require(&self, supported: bool, operation: &'static str) -> Result<()> {
        if supported {
            Ok(())
        } else {
            Err(Error::Unsupported {
                provider: self.name().to_string(),
                operation,
            })
        }
    }
}

impl<P: Provider + ?Sized> ProviderExt for P {}

/// Walk every instance of `provider` page by page
/// ([`Provider::list_instances_page`], [`INSTANCE_PAGE_SIZE`] a page),
/// handing each to `visit`. Only one page is held at a time. A driver that
/// answers a page with the marker it was given fails the walk instead of
/// looping.
pub async fn for_each_instance(
    provider: &dyn Provider,
    mut visit: impl FnMut(Instance) + Send,
) -> Result<()> {
    let mut marker: Option<String> = None;
    loop {
        let page = provider
            .list_instances_page(marker.as_deref(), INSTANCE_PAGE_SIZE)
            .await?;
        let empty = page.instances.is_empty();
        page.instances.into_iter().for_each(&mut visit);
        match page.next {
            None => return Ok(()),
            Some(_) if empty => return Ok(()),
            Some(next) if marker.as_deref() == Some(next.as_str()) => {
                return Err(Error::Cloud {
                    provider: provider.name().to_string(),
                    message: format!("instance listing does not advance past marker {next}"),
                    retryable: false,
                });
            }
            Some(next) => marker = Some(next),
        }
    }
}
