//! The typed configuration of an `aws` provider, with upstream nodepool
//! 11's names and defaults (`nodepool/driver/aws/config.py`).
//! [`parse_aws_provider`](super::parse::parse_aws_provider) fills it from a
//! `providers` entry.

use std::any::Any;
use std::collections::BTreeMap;
use std::time::Duration;

use nodepool_core::config::DriverConfig;

/// `rate` when not set: API operations per second.
pub const DEFAULT_RATE: f64 = 2.0;
/// `boot-timeout` when not set, in seconds.
pub const DEFAULT_BOOT_TIMEOUT: i64 = 180;
/// `launch-timeout` when not set, in seconds.
pub const DEFAULT_LAUNCH_TIMEOUT: i64 = 3600;
/// `launch-retries` when not set.
pub const DEFAULT_LAUNCH_RETRIES: i64 = 3;
/// `image-format` when not set.
pub const DEFAULT_IMAGE_FORMAT: &str = "raw";
/// The `image-format` values upstream accepts.
pub const IMAGE_FORMATS: &[&str] = &["ova", "vhd", "vhdx", "vmdk", "raw"];
/// `architecture` of a diskimage when not set.
pub const DEFAULT_ARCHITECTURE: &str = "x86_64";
/// `volume-type` of a diskimage when not set.
pub const DEFAULT_DISKIMAGE_VOLUME_TYPE: &str = "gp3";
/// The fleet `allocation-strategy` values upstream accepts.
pub const ALLOCATION_STRATEGIES: &[&str] = &[
    "prioritized",
    "price-capacity-optimized",
    "capacity-optimized",
    "diversified",
    "lowest-price",
];

/// The default `connection-port` for a `connection-type`: 5986 for
/// `winrm`, 22 otherwise.
pub fn default_connection_port(connection_type: &str) -> i64 {
    match connection_type {
        "winrm" => 5986,
        _ => 22,
    }
}

/// One `aws` provider.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsConfig {
    /// `name`.
    pub name: String,
    /// `region-name` (required).
    pub region_name: String,
    /// `profile-name`: the profile of `~/.aws/credentials` and
    /// `~/.aws/config` (unset: `AWS_PROFILE`, else `default`).
    pub profile_name: Option<String>,
    /// `rate` (default 2): API operations per second.
    pub rate: f64,
    /// `boot-timeout` in seconds (default 180).
    pub boot_timeout: i64,
    /// `launch-timeout` in seconds (default 3600).
    pub launch_timeout: i64,
    /// `launch-retries` (default 3).
    pub launch_retries: i64,
    /// `max-concurrency` (core's key; -1: unlimited).
    pub max_concurrency: i64,
    /// `priority` (core's key): default of the pools' priority.
    pub priority: Option<i64>,
    /// `max-servers` of the provider: the default of its pools'.
    pub max_servers: Option<i64>,
    /// `max-cores`: the default of its pools'.
    pub max_cores: Option<i64>,
    /// `max-ram` in MiB: the default of its pools'.
    pub max_ram: Option<i64>,
    /// `max-resources`: limits by resource name (AWS quota codes such as
    /// `L-1216C47A`), the defaults of its pools'.
    pub max_resources: BTreeMap<String, i64>,
    /// `post-upload-hook`.
    pub post_upload_hook: Option<String>,
    /// `object-storage.bucket-name`: where images are uploaded.
    pub bucket_name: Option<String>,
    /// `image-format` (default `raw`).
    pub image_format: String,
    /// `image-import-timeout` in seconds (unset: wait without limit).
    pub image_import_timeout: Option<i64>,
    /// `cloud-images`.
    pub cloud_images: Vec<AwsCloudImage>,
    /// `diskimages`.
    pub diskimages: Vec<AwsDiskImage>,
    /// `pools`.
    pub pools: Vec<AwsPool>,
}

impl AwsConfig {
    /// The cloud image named `name`.
    pub fn cloud_image(&self, name: &str) -> Option<&AwsCloudImage> {
        self.cloud_images.iter().find(|c| c.name == name)
    }

    /// The diskimage named `name`.
    pub fn diskimage(&self, name: &str) -> Option<&AwsDiskImage> {
        self.diskimages.iter().find(|d| d.name == name)
    }

    /// The pool named `name`.
    pub fn pool(&self, name: &str) -> Option<&AwsPool> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// `boot-timeout` as a duration.
    pub fn boot_timeout(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.boot_timeout).unwrap_or(0))
    }
}

impl DriverConfig for AwsConfig {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// One `image-filters` entry: a DescribeImages filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFilter {
    /// `name` (or `Name`).
    pub name: String,
    /// `values` (or `Values`).
    pub values: Vec<String>,
}

/// How a cloud image is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// `image-id`.
    Id(String),
    /// `image-filters`: the newest image (by creation date) matching all.
    Filters(Vec<ImageFilter>),
}

/// One `cloud-images` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsCloudImage {
    /// `name`.
    pub name: String,
    /// `image-id` or `image-filters` (exactly one).
    pub source: ImageSource,
    /// `username` (required).
    pub username: String,
    /// `python-path` (default `auto`).
    pub python_path: String,
    /// `shell-type`.
    pub shell_type: Option<String>,
    /// `connection-type` (default `ssh`).
    pub connection_type: String,
    /// `connection-port` (default 22; 5986 for winrm).
    pub connection_port: i64,
}

/// How a diskimage is imported (`import-method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportMethod {
    /// `snapshot` (default): S3 object, ImportSnapshot, RegisterImage.
    Snapshot,
    /// `ebs-direct`: EBS direct API snapshot, RegisterImage.
    EbsDirect,
    /// `image`: S3 object, ImportImage.
    Image,
}

impl ImportMethod {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ImportMethod::Snapshot => "snapshot",
            ImportMethod::EbsDirect => "ebs-direct",
            ImportMethod::Image => "image",
        }
    }
}

/// One `diskimages` entry of an aws provider.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsDiskImage {
    /// `name`.
    pub name: String,
    /// `pause` (default false).
    pub pause: bool,
    /// `username` (unset: the top-level diskimage's).
    pub username: Option<String>,
    /// `python-path` (default `auto`).
    pub python_path: String,
    /// `shell-type`.
    pub shell_type: Option<String>,
    /// `connection-type` (default `ssh`).
    pub connection_type: String,
    /// `connection-port` (default 22; 5986 for winrm).
    pub connection_port: i64,
    /// `architecture` (default `x86_64`).
    pub architecture: String,
    /// `ena-support` (default true).
    pub ena_support: bool,
    /// `volume-size` in GiB (unset: the image's size).
    pub volume_size: Option<i64>,
    /// `volume-type` (default `gp3`).
    pub volume_type: String,
    /// `import-method` (default `snapshot`).
    pub import_method: ImportMethod,
    /// `imds-support`: `v2.0` or unset.
    pub imds_support: Option<String>,
    /// `iops`.
    pub iops: Option<i64>,
    /// `throughput`.
    pub throughput: Option<i64>,
    /// `tags`: set on the AMI, snapshot and object.
    pub tags: BTreeMap<String, String>,
}

/// One `pools` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsPool {
    /// `name`.
    pub name: String,
    /// `max-servers` (unset: the provider's, else unlimited).
    pub max_servers: Option<i64>,
    /// `max-cores` (unset: the provider's).
    pub max_cores: Option<i64>,
    /// `max-ram` (unset: the provider's).
    pub max_ram: Option<i64>,
    /// `max-resources` merged over the provider's.
    pub max_resources: BTreeMap<String, i64>,
    /// `priority`.
    pub priority: Option<i64>,
    /// `node-attributes`.
    pub node_attributes: Option<serde_json::Value>,
    /// `availability-zone`.
    pub availability_zone: Option<String>,
    /// `subnet-id`.
    pub subnet_id: Option<String>,
    /// `security-group-id`.
    pub security_group_id: Option<String>,
    /// `public-ipv4` (default true; `public-ip-address` is its old name
    /// and wins when both are set, as upstream).
    pub public_ipv4: bool,
    /// `public-ipv6` (default false).
    pub public_ipv6: bool,
    /// `host-key-checking` (default true).
    pub host_key_checking: bool,
    /// `labels`.
    pub labels: Vec<AwsLabel>,
}

impl AwsPool {
    /// The label named `name`.
    pub fn label(&self, name: &str) -> Option<&AwsLabel> {
        self.labels.iter().find(|l| l.name == name)
    }
}

/// What a label boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelImage {
    /// `cloud-image`.
    CloudImage(String),
    /// `diskimage`.
    DiskImage(String),
    /// Neither (upstream's schema allows it; such a label cannot boot).
    None,
}

/// A label's `fleet`: an EC2 Fleet of type instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    /// `instance-types`.
    pub instance_types: Vec<String>,
    /// `allocation-strategy`.
    pub allocation_strategy: String,
}

/// What a label launches: `instance-type` or `fleet`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceSpec {
    /// `instance-type`.
    Type(String),
    /// `fleet`.
    Fleet(Fleet),
    /// Neither (upstream's schema allows it; RunInstances then fails).
    None,
}

/// A label's `iam-instance-profile`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IamInstanceProfile {
    /// `name`.
    Name(String),
    /// `arn`.
    Arn(String),
}

/// One `labels` entry of a pool.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsLabel {
    /// `name`.
    pub name: String,
    /// `cloud-image` or `diskimage`.
    pub image: LabelImage,
    /// `instance-type` or `fleet`.
    pub instance: InstanceSpec,
    /// `key-name` (required).
    pub key_name: String,
    /// `ebs-optimized` (default false).
    pub ebs_optimized: bool,
    /// `volume-type`.
    pub volume_type: Option<String>,
    /// `volume-size` in GiB.
    pub volume_size: Option<i64>,
    /// `iops`.
    pub iops: Option<i64>,
    /// `throughput`.
    pub throughput: Option<i64>,
    /// `userdata`.
    pub userdata: Option<String>,
    /// `iam-instance-profile`.
    pub iam_instance_profile: Option<IamInstanceProfile>,
    /// `tags`.
    pub tags: BTreeMap<String, String>,
    /// `dynamic-tags`: format strings over the request's safe attributes.
    pub dynamic_tags: BTreeMap<String, String>,
    /// `use-spot` (default false).
    pub use_spot: bool,
    /// `imdsv2`: `required`, `optional` or unset.
    pub imdsv2: Option<String>,
    /// `dedicated-host` (default false).
    pub dedicated_host: bool,
    /// The pool's `host-key-checking`.
    pub host_key_checking: bool,
}

impl AwsLabel {
    /// The instance types this label may launch.
    pub fn instance_types(&self) -> Vec<&str> {
        match &self.instance {
            InstanceSpec::Type(t) => vec![t.as_str()],
            InstanceSpec::Fleet(f) => f.instance_types.iter().map(String::as_str).collect(),
            InstanceSpec::None => Vec::new(),
        }
    }
}
