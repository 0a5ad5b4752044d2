//! The typed configuration of an `openstack` provider, with upstream's
//! defaults. [`parse_openstack_provider`](super::parse_openstack_provider)
//! fills it from a `providers` entry.

use std::any::Any;
use std::collections::BTreeMap;
use std::time::Duration;

use nodepool_core::config::DriverConfig;

/// `boot-timeout` when not set, in seconds.
pub const DEFAULT_BOOT_TIMEOUT: i64 = 60;
/// `launch-timeout` when not set, in seconds.
pub const DEFAULT_LAUNCH_TIMEOUT: i64 = 3600;
/// `launch-retries` when not set.
pub const DEFAULT_LAUNCH_RETRIES: i64 = 3;
/// `image-upload-timeout` when not set, in seconds.
pub const DEFAULT_IMAGE_UPLOAD_TIMEOUT: i64 = 3600;
/// `rate` when not set, in seconds between API calls.
pub const DEFAULT_RATE: f64 = 1.0;
/// `port-cleanup-interval` when not set, in seconds.
pub const DEFAULT_PORT_CLEANUP_INTERVAL: i64 = 600;
/// `image-name-format` when not set.
pub const DEFAULT_IMAGE_NAME_FORMAT: &str = "{image_name}-{timestamp}";
/// The image format uploaded when the cloud does not ask for another one
/// (openstacksdk's `image_format` default).
pub const DEFAULT_IMAGE_FORMAT: &str = "qcow2";
/// `volume-size` of a label when not set, in GiB.
pub const DEFAULT_VOLUME_SIZE: i64 = 50;
/// `connection-type` of an image when not set.
pub const DEFAULT_CONNECTION_TYPE: &str = "ssh";
/// `python-path` of a cloud image when not set.
pub const DEFAULT_PYTHON_PATH: &str = "auto";

/// The default `connection-port` for a `connection-type`: 5986 for `winrm`,
/// 22 for everything else (as upstream).
pub fn default_connection_port(connection_type: &str) -> i64 {
    match connection_type {
        "winrm" => 5986,
        _ => 22,
    }
}

#[doc = include_str!("docs.md")]
#[derive(Debug, Clone, PartialEq)]
pub struct OpenStackConfig {
    /// `name`: the provider name.
    pub name: String,
    /// `cloud` (required): the cloud's name in `clouds.yaml`.
    pub cloud: String,
    /// `region-name`: the region of that cloud.
    pub region_name: Option<String>,
    /// `max-concurrency` (default -1: unlimited launches in flight).
    pub max_concurrency: i64,
    /// `priority`: default priority of the provider's pools.
    pub priority: Option<i64>,
    /// `boot-timeout` in seconds (default 60): how long an ACTIVE server
    /// may take to answer (host-key scan).
    pub boot_timeout: i64,
    /// `launch-timeout` in seconds (default 3600): how long a server may
    /// take from the create call to ACTIVE.
    pub launch_timeout: i64,
    /// `launch-retries` (default 3): attempts per node before the request
    /// is declined.
    pub launch_retries: i64,
    /// `image-upload-timeout` in seconds (default 3600).
    pub image_upload_timeout: i64,
    /// `nodepool-id`: accepted for old configs, unused (as upstream).
    pub nodepool_id: Option<String>,
    /// `rate` in seconds between API calls (default 1.0).
    pub rate: f64,
    /// `image-name-format` (default `{image_name}-{timestamp}`): the name of
    /// uploaded images; `{image_name}`, `{timestamp}` are substituted.
    pub image_name_format: String,
    /// `clean-floating-ips`: delete unattached floating IPs (unset: the
    /// cloud library's default).
    pub clean_floating_ips: Option<bool>,
    /// `port-cleanup-interval` in seconds (default 600; 0 disables the
    /// cleanup of leaked DOWN ports).
    pub port_cleanup_interval: i64,
    /// `post-upload-hook`: executable run after each image upload.
    pub post_upload_hook: Option<String>,
    /// The image format its diskimages are built in and uploaded as: the
    /// cloud's `image_format` in `clouds.yaml` (default `qcow2`), read
    /// when the `openstack` driver loads the provider, as upstream does.
    pub image_format: String,
    /// `diskimages`: the diskimages uploaded to this provider.
    pub diskimages: Vec<OpenStackDiskImage>,
    /// `cloud-images`: images the cloud already has.
    pub cloud_images: Vec<OpenStackCloudImage>,
    /// `pools`.
    pub pools: Vec<OpenStackPool>,
}

impl OpenStackConfig {
    /// The `diskimages` entry named `name`.
    pub fn diskimage(&self, name: &str) -> Option<&OpenStackDiskImage> {
        self.diskimages.iter().find(|d| d.name == name)
    }

    /// The `cloud-images` entry named `name`.
    pub fn cloud_image(&self, name: &str) -> Option<&OpenStackCloudImage> {
        self.cloud_images.iter().find(|c| c.name == name)
    }

    /// The pool named `name`.
    pub fn pool(&self, name: &str) -> Option<&OpenStackPool> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// `boot-timeout` as a duration (negative values count as zero).
    pub fn boot_timeout(&self) -> Duration {
        seconds(self.boot_timeout)
    }

    /// `launch-timeout` as a duration (negative values count as zero).
    pub fn launch_timeout(&self) -> Duration {
        seconds(self.launch_timeout)
    }

    /// `image-upload-timeout` as a duration (negative values count as zero).
    pub fn image_upload_timeout(&self) -> Duration {
        seconds(self.image_upload_timeout)
    }

    /// `port-cleanup-interval` as a duration; `None` when disabled (0).
    pub fn port_cleanup_interval(&self) -> Option<Duration> {
        (self.port_cleanup_interval > 0).then(|| seconds(self.port_cleanup_interval))
    }
}

impl DriverConfig for OpenStackConfig {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

fn seconds(value: i64) -> Duration {
    Duration::from_secs(u64::try_from(value).unwrap_or(0))
}

/// One `diskimages` entry of an openstack provider.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenStackDiskImage {
    /// `name` (required): a top-level `diskimages` entry.
    pub name: String,
    /// `pause` (default false): stop uploading this image here.
    pub pause: bool,
    /// `config-drive`: attach a config drive to servers booted from it
    /// (unset: the cloud's default).
    pub config_drive: Option<bool>,
    /// `connection-type` (default `ssh`).
    pub connection_type: String,
    /// `connection-port` (default 22; 5986 for `winrm`).
    pub connection_port: i64,
    /// `meta`: properties set on the uploaded image.
    pub meta: BTreeMap<String, serde_json::Value>,
}

/// One `cloud-images` entry: an image the cloud already has.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenStackCloudImage {
    /// `name` (required): how labels refer to it.
    pub name: String,
    /// `config-drive`: attach a config drive (unset: the cloud's default).
    pub config_drive: Option<bool>,
    /// `image-id`: the cloud's image id (exclusive with `image-name`).
    pub image_id: Option<String>,
    /// `image-name`: the cloud's image name (exclusive with `image-id`).
    pub image_name: Option<String>,
    /// `username`: login user recorded on nodes (unset: none recorded).
    pub username: Option<String>,
    /// `python-path` (default `auto`).
    pub python_path: String,
    /// `shell-type`: the login shell (unset: `sh`).
    pub shell_type: Option<String>,
    /// `connection-type` (default `ssh`).
    pub connection_type: String,
    /// `connection-port` (default 22; 5986 for `winrm`).
    pub connection_port: i64,
}

impl OpenStackCloudImage {
    /// How to find the image in the cloud: `image-id`, else `image-name`,
    /// else `name`.
    pub fn external_name(&self) -> &str {
        self.image_id
            .as_deref()
            .or(self.image_name.as_deref())
            .unwrap_or(&self.name)
    }
}

/// One `pools` entry of an openstack provider.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenStackPool {
    /// `name` (required).
    pub name: String,
    /// `max-servers` (unset: unlimited).
    pub max_servers: Option<i64>,
    /// `max-cores` (unset: unlimited).
    pub max_cores: Option<i64>,
    /// `max-ram` in MiB (unset: unlimited).
    pub max_ram: Option<i64>,
    /// `max-volumes` (unset: unlimited).
    pub max_volumes: Option<i64>,
    /// `max-volume-gb` (unset: unlimited).
    pub max_volume_gb: Option<i64>,
    /// `priority` (unset: the provider's, else 100).
    pub priority: Option<i64>,
    /// `node-attributes`: a mapping copied onto every node.
    pub node_attributes: Option<serde_json::Value>,
    /// `ignore-provider-quota` (default false).
    pub ignore_provider_quota: bool,
    /// `availability-zones`: pick among these (empty: let the cloud pick).
    pub availability_zones: Vec<String>,
    /// `networks`: default networks of the pool's labels.
    pub networks: Vec<String>,
    /// `security-groups`.
    pub security_groups: Vec<String>,
    /// `auto-floating-ip` (default true).
    pub auto_floating_ip: bool,
    /// `host-key-checking` (default true): default of the pool's labels.
    pub host_key_checking: bool,
    /// `labels`.
    pub labels: Vec<OpenStackLabel>,
}

impl OpenStackPool {
    /// The label named `name`.
    pub fn label(&self, name: &str) -> Option<&OpenStackLabel> {
        self.labels.iter().find(|l| l.name == name)
    }
}

/// What a label boots: exactly one of `diskimage` or `cloud-image`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelImage {
    /// `diskimage`: our newest ready upload of this diskimage.
    DiskImage(String),
    /// `cloud-image`: a `cloud-images` entry of the provider.
    CloudImage(String),
}

/// One `labels` entry of an openstack pool.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenStackLabel {
    /// `name` (required): a top-level label.
    pub name: String,
    /// `diskimage` or `cloud-image`.
    pub image: LabelImage,
    /// `min-ram` in MiB (default 0): pick the smallest flavor with at least
    /// this much RAM (and `flavor-name` in its name, if set).
    pub min_ram: i64,
    /// `flavor-name`: the flavor (exact name or id, or a substring when
    /// combined with `min-ram`).
    pub flavor_name: Option<String>,
    /// `key-name`: the keypair to boot with.
    pub key_name: Option<String>,
    /// `console-log` (default false): log the console when a launch fails.
    pub console_log: bool,
    /// `boot-from-volume` (default false).
    pub boot_from_volume: bool,
    /// `volume-size` in GiB (default 50) for `boot-from-volume`.
    pub volume_size: i64,
    /// `instance-properties`: server metadata.
    pub instance_properties: BTreeMap<String, serde_json::Value>,
    /// `dynamic-instance-properties`: server metadata whose values are
    /// format strings over the request (`{request.id}`, ...); see
    /// [`format_request`](super::template::format_request).
    pub dynamic_instance_properties: BTreeMap<String, serde_json::Value>,
    /// `userdata`: passed to the server as user data.
    pub userdata: Option<String>,
    /// `networks` (default: the pool's).
    pub networks: Vec<String>,
    /// `host-key-checking` (default: the pool's).
    pub host_key_checking: bool,
}

impl OpenStackLabel {
    /// The `diskimage`, if the label boots one.
    pub fn diskimage(&self) -> Option<&str> {
        match &self.image {
            LabelImage::DiskImage(name) => Some(name),
            LabelImage::CloudImage(_) => None,
        }
    }

    /// The `cloud-image`, if the label boots one.
    pub fn cloud_image(&self) -> Option<&str> {
        match &self.image {
            LabelImage::CloudImage(name) => Some(name),
            LabelImage::DiskImage(_) => None,
        }
    }
}
