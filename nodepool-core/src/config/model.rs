//! The parsed configuration: the common view shared by engines and drivers.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;

/// Where a value was written: for error messages after parsing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    /// The file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// The whole `nodepool.yaml` (after the secure file was merged in).
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `zookeeper-servers`; empty means the embedded store.
    pub zookeeper_servers: Vec<ZooKeeperServer>,
    /// `zookeeper-tls`.
    pub zookeeper_tls: Option<ZooKeeperTls>,
    /// `zookeeper-timeout` in seconds (default 10.0).
    pub zookeeper_timeout: f64,
    /// `labels`, by name, in file order.
    pub labels: Vec<Label>,
    /// `providers`, in file order.
    pub providers: Vec<ProviderConfig>,
    /// `diskimages`, in file order, with `parent:` inheritance resolved.
    pub diskimages: Vec<DiskImage>,
    /// `webapp`.
    pub webapp: WebApp,
    /// `images-dir`.
    pub images_dir: Option<PathBuf>,
    /// `build-log-dir`.
    pub build_log_dir: Option<PathBuf>,
    /// `build-log-retention` (default 7).
    pub build_log_retention: i64,
    /// `elements-dir`.
    pub elements_dir: Option<PathBuf>,
    /// `tenant-resource-limits`.
    pub tenant_resource_limits: Vec<TenantResourceLimit>,
    /// `max-hold-age` in seconds; `None` means unlimited.
    pub max_hold_age: Option<i64>,
    /// Warnings found while loading (repeated keys, deprecated keys).
    pub warnings: Vec<String>,
    /// `api-token` (secure file only): the bearer token that guards the web
    /// app's write API. Without it the write API is disabled.
    pub api_token: Option<Secret>,
}

pub use crate::secret::Secret;

impl Config {
    /// The label named `name`.
    pub fn label(&self, name: &str) -> Option<&Label> {
        self.labels.iter().find(|l| l.name == name)
    }
    /// The provider named `name`.
    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.name == name)
    }
    /// The diskimage named `name`.
    pub fn diskimage(&self, name: &str) -> Option<&DiskImage> {
        self.diskimages.iter().find(|d| d.name == name)
    }
}

/// One `zookeeper-servers` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZooKeeperServer {
    /// Host.
    pub host: String,
    /// Port (default 2281, upstream's default in `nodepool.yaml`).
    pub port: u16,
    /// Chroot path.
    pub chroot: Option<String>,
}

/// `zookeeper-tls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZooKeeperTls {
    /// CA certificate file.
    pub ca: PathBuf,
    /// Client certificate file.
    pub cert: PathBuf,
    /// Client key file.
    pub key: PathBuf,
}

/// One `labels` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// Name.
    pub name: String,
    /// `min-ready` (default 0).
    pub min_ready: i64,
    /// `max-ready-age` in seconds (0: forever).
    pub max_ready_age: i64,
}

/// `webapp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebApp {
    /// `port` (default 8005).
    pub port: u16,
    /// `listen_address` (default "0.0.0.0").
    pub listen_address: String,
}

impl Default for WebApp {
    fn default() -> Self {
        Self {
            port: 8005,
            listen_address: "0.0.0.0".to_string(),
        }
    }
}

/// One `tenant-resource-limits` entry. `None` means unlimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantResourceLimit {
    /// `tenant-name`.
    pub tenant_name: String,
    /// `max-cores`.
    pub max_cores: Option<i64>,
    /// `max-ram`.
    pub max_ram: Option<i64>,
    /// `max-servers`.
    pub max_servers: Option<i64>,
    /// Any other `max-*`-like resource key with its integer limit, as
    /// written (upstream accepts `str: int`).
    pub other: BTreeMap<String, i64>,
}

impl TenantResourceLimit {
    /// The limits of resources other than servers, cores and RAM, named as
    /// node records name them (upstream's `setTenantResourceLimits`):
    /// `max-volumes` as `volumes`, `max-volume-gb` as `volume-gb`, every
    /// other key as written (`nvidia.com/gpu`, `ephemeral-storage`, an AWS
    /// quota code).
    pub fn resource_limits(&self) -> Vec<(String, i64)> {
        self.other
            .iter()
            .map(|(key, limit)| {
                let name = match key.as_str() {
                    "max-volumes" => "volumes",
                    "max-volume-gb" => "volume-gb",
                    other => other,
                };
                (name.to_string(), *limit)
            })
            .collect()
    }
}

/// One `diskimages` entry, inheritance resolved.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DiskImage {
    /// Name.
    pub name: String,
    /// `abstract` (not built itself).
    pub is_abstract: bool,
    /// `parent`.
    pub parent: Option<String>,
    /// `dib-cmd` (default `disk-image-create`).
    pub dib_cmd: Option<String>,
    /// `pause`.
    pub pause: bool,
    /// `elements`.
    pub elements: Vec<String>,
    /// `formats` asked for explicitly.
    pub formats: Vec<String>,
    /// `keep-formats`.
    pub keep_formats: Vec<String>,
    /// `delete-after-upload`.
    pub delete_after_upload: bool,
    /// `release` (a string or a number in YAML, kept as text).
    pub release: Option<String>,
    /// `rebuild-age` in seconds (default 86400).
    pub rebuild_age: i64,
    /// `env-vars`.
    pub env_vars: BTreeMap<String, String>,
    /// `username` (default "zuul").
    pub username: String,
    /// `python-path` (default "auto").
    pub python_path: String,
    /// `shell-type`.
    pub shell_type: Option<String>,
    /// `build-timeout` in seconds (default 28800).
    pub build_timeout: i64,
    /// `metadata`.
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// `validation` (ours): a new upload serves nodes only after a node
    /// booted from it passed this check.
    pub validation: Option<ImageValidation>,
}

/// A diskimage's `validation` (a key of ours; see doc/images.md).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageValidation {
    /// `hook`: the program run with the validation node's JSON on stdin.
    pub hook: String,
    /// `timeout` in seconds (default 600).
    pub timeout: f64,
    /// `label`: the pool label whose node validates the upload (default:
    /// the first label of each provider that uses the diskimage).
    pub label: Option<String>,
}

/// The default `validation.timeout`, in seconds.
pub const VALIDATION_TIMEOUT: f64 = 600.0;

/// A driver's own, typed provider configuration.
pub trait DriverConfig: Debug + Send + Sync + 'static {
    /// For the driver to downcast to its own type.
    fn as_any(&self) -> &dyn Any;
}

/// One `providers` entry: the common view plus the driver's own config.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// `name`.
    pub name: String,
    /// `driver` (default "openstack"; "fake" for names starting with "fake").
    pub driver: String,
    /// Where the entry starts in the file.
    pub location: Location,
    /// `max-concurrency` (default -1: unlimited).
    pub max_concurrency: i64,
    /// `launch-retries` (default 3).
    pub launch_retries: i64,
    /// `boot-timeout` in seconds (default 60).
    pub boot_timeout: f64,
    /// `launch-timeout` in seconds (default 3600).
    pub launch_timeout: f64,
    /// `rate`: the minimum seconds between the starts of two provider
    /// calls, applied by [`RateLimit`](crate::provider::wrappers::RateLimit)
    /// (0: no spacing; the drivers with a `rate` key set it, OpenStack's
    /// default is 1.0).
    pub rate: f64,
    /// `post-upload-hook`: an executable the builder runs after each
    /// upload to this provider, as upstream (`HOOK PROVIDER IMAGE_ID
    /// FILE`); drivers with the key set it.
    pub post_upload_hook: Option<String>,
    /// Diskimages this provider uses (`diskimages:`), with the format it needs.
    pub diskimages: Vec<ProviderDiskImage>,
    /// `pools`.
    pub pools: Vec<PoolConfig>,
    /// The driver's own typed config.
    pub driver_config: Arc<dyn DriverConfig>,
}

impl ProviderConfig {
    /// The driver's own config as its type `T`, for the driver's factory.
    /// Fails with [`Error::InvalidInput`](crate::Error::InvalidInput) when
    /// another driver read this provider's config (a registry wired to the
    /// wrong factory).
    pub fn driver_config_as<T: DriverConfig>(&self) -> crate::Result<&T> {
        self.driver_config
            .as_any()
            .downcast_ref::<T>()
            .ok_or_else(|| crate::Error::InvalidInput {
                message: format!(
                    "provider {}: its config was read by the {} driver, not as {}",
                    self.name,
                    self.driver,
                    std::any::type_name::<T>()
                ),
            })
    }
}

/// A diskimage as a provider uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderDiskImage {
    /// Diskimage name.
    pub name: String,
    /// Format the provider needs (`image-type`; qcow2 by default).
    pub format: String,
    /// `pause` for uploads to this provider.
    pub pause: bool,
    /// Metadata to set on the uploaded image.
    pub meta: BTreeMap<String, String>,
}

/// One pool of a provider.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// `name`.
    pub name: String,
    /// `max-servers` (`None`: unlimited).
    pub max_servers: Option<i64>,
    /// `max-cores`.
    pub max_cores: Option<i64>,
    /// `max-ram`.
    pub max_ram: Option<i64>,
    /// `priority` (default 100; lower first).
    pub priority: i64,
    /// `node-attributes`, copied onto every node.
    pub node_attributes: Option<serde_json::Value>,
    /// `ignore-provider-quota`.
    pub ignore_provider_quota: bool,
    /// Limits of other named resources, as node records name them: the
    /// kubernetes and openshiftpods `max-resources` (the provider's updated
    /// by the pool's), OpenStack's `max-volumes` as `volumes` and
    /// `max-volume-gb` as `volume-gb`. A resource not listed is unlimited.
    pub max_resources: BTreeMap<String, i64>,
    /// `labels` of this pool.
    pub labels: Vec<PoolLabel>,
}

/// One label of a pool, as the engine needs it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PoolLabel {
    /// `name`.
    pub name: String,
    /// `diskimage`: boot our newest ready upload of this image.
    pub diskimage: Option<String>,
    /// `cloud-image`: boot a cloud's own image.
    pub cloud_image: Option<String>,
    /// Login user for the node record (default "zuul").
    pub username: Option<String>,
    /// `python-path` for the node record.
    pub python_path: Option<String>,
    /// `shell-type` for the node record.
    pub shell_type: Option<String>,
    /// `connection-type` ("ssh", "winrm", ...).
    pub connection_type: Option<String>,
    /// `connection-port` (default 22).
    pub connection_port: Option<i64>,
    /// `host-key-checking`.
    pub host_key_checking: bool,
}
