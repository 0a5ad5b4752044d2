//! The AWS [`Provider`]: EC2 instances of one configured provider.
//!
//! Instances are made with RunInstances (or CreateFleet of type `instant`
//! for `fleet` labels) and carry the launch spec's metadata as tags plus
//! the label's `tags`, its formatted `dynamic-tags` and `Name`, as
//! upstream writes them. Instance types, images found by filters and the
//! account's quotas are cached. Volumes tagged with the provider's name
//! that are left unattached are deleted when the instance listing's last
//! page is read (the leak pass), after a grace period.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nodepool_core::provider::{
    CloudImage, ImageRef, ImageUploadSpec, Instance, InstancePage, InstanceState, LaunchSpec,
    Provider, ProviderCapabilities, Resources, META_PROVIDER,
};
use nodepool_core::{Error, Result};
use serde_json::json;
use tokio::sync::Mutex;

use super::client::{AwsClient, Params, Xml};
use super::config::{
    AwsConfig, AwsLabel, AwsPool, IamInstanceProfile, ImageSource, ImportMethod, InstanceSpec,
    LabelImage,
};
use super::error::AwsError;
use super::quota::{self, CodeUse, TypeInfo};
use super::{fleet, images, instance};

type AwsResult<T> = std::result::Result<T, AwsError>;

/// The account's quota values by code, and the codes its quota names give
/// instance-type prefixes.
#[derive(Debug, Clone, Default)]
struct ServiceQuotas {
    values: BTreeMap<String, f64>,
    learned: quota::LearnedCodes,
}

/// Service Quotas read at an instant (`None`: could not be read).
type QuotaCache = Option<(Instant, Option<ServiceQuotas>)>;

/// How long an image found by `image-filters` and the Service Quotas
/// answer are reused (upstream's 5 minutes).
const CACHE_TTL: Duration = Duration::from_secs(300);
/// How long one API call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The instance states listed (everything but `terminated`).
const LIVE_STATES: &[&str] = &["pending", "running", "shutting-down", "stopping", "stopped"];

/// An idempotency token for one create call: the node id and the time,
/// so a repeated call of the same attempt is recognised and a later
/// attempt for the same node is not.
fn client_token(tags: &BTreeMap<String, String>) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let node = tags
        .get(nodepool_core::provider::META_NODE_ID)
        .map_or("node", String::as_str);
    // EC2 takes up to 64 ASCII characters.
    let mut token = format!("np-{node}-{nanos:x}");
    token.retain(|c| c.is_ascii_alphanumeric() || c == '-');
    token.truncate(64);
    token
}

/// One configured `aws` provider.
#[derive(Debug)]
pub struct AwsProvider {
    config: Arc<AwsConfig>,
    client: AwsClient,
    types: Mutex<BTreeMap<String, TypeInfo>>,
    filtered_images: Mutex<BTreeMap<String, (String, Instant)>>,
    root_devices: Mutex<BTreeMap<String, Option<Xml>>>,
    templates: Mutex<Option<BTreeMap<(String, String), String>>>,
    quotas: Mutex<QuotaCache>,
    quota_fallback_logged: AtomicBool,
    volumes_seen: Mutex<BTreeMap<String, Instant>>,
    hosts_seen: Mutex<BTreeMap<String, Instant>>,
    /// Hosts of the live instances seen by the current listing walk.
    hosts_in_use: Mutex<std::collections::BTreeSet<String>>,
    volume_grace: Duration,
}

impl AwsProvider {
    /// A provider for `config` talking through `client`.
    pub fn new(config: Arc<AwsConfig>, client: AwsClient) -> Self {
        Self {
            config,
            client,
            types: Mutex::new(BTreeMap::new()),
            filtered_images: Mutex::new(BTreeMap::new()),
            root_devices: Mutex::new(BTreeMap::new()),
            templates: Mutex::new(None),
            quotas: Mutex::new(None),
            quota_fallback_logged: AtomicBool::new(false),
            volumes_seen: Mutex::new(BTreeMap::new()),
            hosts_seen: Mutex::new(BTreeMap::new()),
            hosts_in_use: Mutex::new(std::collections::BTreeSet::new()),
            volume_grace: Duration::from_secs(60),
        }
    }

    /// A provider for `config` with credentials and endpoints from the
    /// environment and the shared files (see [`super::credentials`]).
    pub fn from_env(
        config: Arc<AwsConfig>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> AwsResult<Self> {
        let creds = super::credentials::resolve(config.profile_name.as_deref(), env)?;
        let client = AwsClient::new(creds, &config.region_name, env, CALL_TIMEOUT)?;
        Ok(Self::new(config, client))
    }

    /// How long a tagged volume must stay unattached, or a tagged
    /// dedicated host empty, before it is deleted or released as leaked
    /// (default 60 s).
    pub fn with_volume_grace(mut self, grace: Duration) -> Self {
        self.volume_grace = grace;
        self
    }

    /// The client, for tests and tools.
    pub fn client(&self) -> &AwsClient {
        &self.client
    }

    fn uses_dedicated_hosts(&self) -> bool {
        self.config
            .pools
            .iter()
            .any(|p| p.labels.iter().any(|l| l.dedicated_host))
    }

    fn err(&self, e: AwsError) -> Error {
        e.into_core(&self.config.name)
    }

    fn label(&self, pool: &str, label: &str) -> Result<(&AwsPool, &AwsLabel)> {
        let p = self.config.pool(pool).ok_or_else(|| Error::NotFound {
            kind: "pool",
            id: format!("{}/{pool}", self.config.name),
        })?;
        let l = p.label(label).ok_or_else(|| Error::NotFound {
            kind: "label",
            id: format!("{}/{pool}/{label}", self.config.name),
        })?;
        Ok((p, l))
    }

    /// vCPUs, cores and memory of an instance type (DescribeInstanceTypes,
    /// cached).
    async fn type_info(&self, instance_type: &str) -> AwsResult<TypeInfo> {
        if let Some(info) = self.types.lock().await.get(instance_type) {
            return Ok(*info);
        }
        let mut p = Params::new();
        p.set("InstanceType.1", instance_type);
        let answer = self.client.ec2("DescribeInstanceTypes", &p).await?;
        let item = answer
            .items("instanceTypeSet")
            .next()
            .ok_or_else(|| AwsError::Api {
                action: "DescribeInstanceTypes".into(),
                status: 400,
                code: "InvalidInstanceType".into(),
                message: format!("instance type {instance_type} is not offered"),
            })?;
        let number = |path: &[&str]| {
            item.text_at(path)
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let vcpus = number(&["vCpuInfo", "defaultVCpus"]);
        let cores = match number(&["vCpuInfo", "defaultCores"]) {
            0 => vcpus,
            c => c,
        };
        let info = TypeInfo {
            vcpus,
            cores,
            ram_mib: number(&["memoryInfo", "sizeInMiB"]),
        };
        self.types
            .lock()
            .await
            .insert(instance_type.to_string(), info);
        Ok(info)
    }

    /// The newest image matching `filters` (cached for 5 minutes).
    async fn image_by_filters(&self, filters: &[super::config::ImageFilter]) -> AwsResult<String> {
        let key = filters
            .iter()
            .map(|f| format!("{}={}", f.name, f.values.join(",")))
            .collect::<Vec<_>>()
            .join(";");
        if let Some((id, at)) = self.filtered_images.lock().await.get(&key) {
            if at.elapsed() < CACHE_TTL {
                return Ok(id.clone());
            }
        }
        let mut p = Params::new();
        for f in filters {
            let values: Vec<&str> = f.values.iter().map(String::as_str).collect();
            p.filter(&f.name, &values);
        }
        let answer = self.client.ec2("DescribeImages", &p).await?;
        let newest = answer
            .items("imagesSet")
            .filter_map(|i| {
                Some((
                    i.text_at(&["creationDate"]).unwrap_or_default(),
                    i.text_at(&["imageId"])?,
                ))
            })
            .max();
        let (_, id) = newest.ok_or_else(|| {
            AwsError::NotFound("No cloud-image (AMI) matches supplied image filters".into())
        })?;
        self.filtered_images
            .lock()
            .await
            .insert(key, (id.clone(), Instant::now()));
        Ok(id)
    }

    /// The image a launch boots.
    async fn image_id(&self, spec: &LaunchSpec, label: &AwsLabel) -> AwsResult<String> {
        if let Some(ImageRef::Uploaded { external_id, .. }) = &spec.image {
            return Ok(external_id.clone());
        }
        let name = match (&spec.image, &label.image) {
            (Some(ImageRef::Cloud(name)), _) | (None, LabelImage::CloudImage(name)) => name,
            (None, LabelImage::DiskImage(name)) => {
                return Err(AwsError::NotFound(format!(
                    "no ready upload of diskimage {name} to launch from"
                )))
            }
            _ => {
                return Err(AwsError::NotFound(format!(
                    "label {} names no cloud-image or diskimage",
                    label.name
                )))
            }
        };
        let image = self
            .config
            .cloud_image(name)
            .ok_or_else(|| AwsError::NotFound(format!("cloud-image {name} is not configured")))?;
        match &image.source {
            ImageSource::Id(id) => Ok(id.clone()),
            ImageSource::Filters(filters) => self.image_by_filters(filters).await,
        }
    }

    /// The first block device mapping of an image (cached), which
    /// RunInstances overrides as upstream does.
    async fn root_device(&self, image_id: &str) -> AwsResult<Option<Xml>> {
        if let Some(found) = self.root_devices.lock().await.get(image_id) {
            return Ok(found.clone());
        }
        let mut p = Params::new();
        p.set("ImageId.1", image_id);
        let answer = self.client.ec2("DescribeImages", &p).await?;
        let device = answer
            .items("imagesSet")
            .next()
            .and_then(|i| i.items("blockDeviceMapping").next().cloned());
        self.root_devices
            .lock()
            .await
            .insert(image_id.to_string(), device.clone());
        Ok(device)
    }

    /// The tags of a new instance: the label's `tags`, its formatted
    /// `dynamic-tags`, the launch metadata and `Name`, in that order of
    /// precedence (upstream's).
    fn tags(&self, spec: &LaunchSpec, label: &AwsLabel) -> BTreeMap<String, String> {
        let mut tags = label.tags.clone();
        if let Some(request) = &spec.request {
            for (key, template) in &label.dynamic_tags {
                match crate::openstack::template::format_request(template, request) {
                    Ok(text) => {
                        tags.insert(key.clone(), text);
                    }
                    Err(e) => {
                        tracing::warn!(node_id = %spec.node_id, tag = %key, error = %e,
                            "cannot format dynamic tag; left out");
                    }
                }
            }
        }
        tags.extend(spec.metadata.clone());
        tags.insert("Name".to_string(), spec.hostname.clone());
        tags
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_instances(
        &self,
        pool: &AwsPool,
        label: &AwsLabel,
        instance_type: &str,
        image_id: &str,
        tags: &BTreeMap<String, String>,
        host: Option<&str>,
    ) -> AwsResult<Xml> {
        let mut p = Params::new();
        // Makes a repeated call (after a lost answer) return the same
        // instance instead of a second one, as the SDKs' idempotency token.
        p.set("ClientToken", client_token(tags));
        p.set("ImageId", image_id)
            .set("MinCount", 1)
            .set("MaxCount", 1)
            .set("KeyName", &label.key_name)
            .set("EbsOptimized", label.ebs_optimized)
            .set("InstanceType", instance_type);
        let nic = "NetworkInterface.1";
        p.set(format!("{nic}.AssociatePublicIpAddress"), pool.public_ipv4)
            .set(format!("{nic}.DeviceIndex"), 0);
        if let Some(sg) = &pool.security_group_id {
            p.set(format!("{nic}.SecurityGroupId.1"), sg);
        }
        if let Some(subnet) = &pool.subnet_id {
            p.set(format!("{nic}.SubnetId"), subnet);
        }
        if pool.public_ipv6 {
            p.set(format!("{nic}.Ipv6AddressCount"), 1);
        }
        for (i, kind) in ["instance", "volume"].iter().enumerate() {
            let spec = format!("TagSpecification.{}", i + 1);
            p.set(format!("{spec}.ResourceType"), kind);
            p.tags(&format!("{spec}.Tag"), tags);
        }
        if let Some(userdata) = &label.userdata {
            use base64::Engine;
            p.set(
                "UserData",
                base64::engine::general_purpose::STANDARD.encode(userdata.as_bytes()),
            );
        }
        match &label.iam_instance_profile {
            Some(IamInstanceProfile::Name(n)) => {
                p.set("IamInstanceProfile.Name", n);
            }
            Some(IamInstanceProfile::Arn(a)) => {
                p.set("IamInstanceProfile.Arn", a);
            }
            None => {}
        }
        if let Some(device) = self.root_device(image_id).await? {
            if let Some(ebs) = device.child("ebs") {
                let bdm = "BlockDeviceMapping.1";
                if let Some(name) = device.text_at(&["deviceName"]) {
                    p.set(format!("{bdm}.DeviceName"), name);
                }
                p.set(format!("{bdm}.Ebs.DeleteOnTermination"), true);
                let mut set = |key: &str, ours: Option<String>, theirs: &str| {
                    if let Some(v) = ours.or_else(|| ebs.text_at(&[theirs])) {
                        p.set(format!("{bdm}.Ebs.{key}"), v);
                    }
                };
                set("SnapshotId", None, "snapshotId");
                set(
                    "VolumeSize",
                    label.volume_size.map(|v| v.to_string()),
                    "volumeSize",
                );
                set("VolumeType", label.volume_type.clone(), "volumeType");
                set("Iops", label.iops.map(|v| v.to_string()), "iops");
                set(
                    "Throughput",
                    label.throughput.map(|v| v.to_string()),
                    "throughput",
                );
            }
        }
        if label.use_spot {
            p.set("InstanceMarketOptions.MarketType", "spot")
                .set(
                    "InstanceMarketOptions.SpotOptions.SpotInstanceType",
                    "one-time",
                )
                .set(
                    "InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior",
                    "terminate",
                );
        }
        if let Some(mode) = &label.imdsv2 {
            p.set("MetadataOptions.HttpTokens", mode)
                .set("MetadataOptions.HttpEndpoint", "enabled");
        }
        if let Some(host) = host {
            p.set("Placement.Tenancy", "host")
                .set("Placement.HostId", host)
                .set("Placement.Affinity", "host");
        }
        if let Some(az) = &pool.availability_zone {
            p.set("Placement.AvailabilityZone", az);
        }
        let answer = self.client.ec2("RunInstances", &p).await?;
        let item = answer.items("instancesSet").next().cloned();
        item.ok_or_else(|| AwsError::BadResponse {
            action: "RunInstances".into(),
            message: "no instance in the answer".into(),
        })
    }

    /// The launch template of a fleet label, created on first use.
    async fn launch_template(&self, pool: &AwsPool, label: &AwsLabel) -> AwsResult<String> {
        let key = (pool.name.clone(), label.name.clone());
        let mut templates = self.templates.lock().await;
        if let Some(name) = templates.as_ref().and_then(|t| t.get(&key)) {
            return Ok(name.clone());
        }
        let args = fleet::template_args(label, pool, &self.config.name);
        let name = fleet::template_name(&args);
        let mut q = Params::new();
        q.set("LaunchTemplateName.1", &name);
        let exists = match self.client.ec2("DescribeLaunchTemplates", &q).await {
            Ok(answer) => answer.items("launchTemplates").next().is_some(),
            Err(e) if e.kind() == nodepool_core::ErrorKind::NotFound => false,
            Err(AwsError::Api { code, .. }) if code.starts_with("InvalidLaunchTemplateName") => {
                false
            }
            Err(e) => return Err(e),
        };
        if !exists {
            match self
                .client
                .ec2("CreateLaunchTemplate", &fleet::create_params(&args, &name))
                .await
            {
                Ok(_) => tracing::info!(template = %name, "created launch template"),
                Err(AwsError::Api { code, .. })
                    if code == "InvalidLaunchTemplateName.AlreadyExistsException" => {}
                Err(e) => return Err(e),
            }
        }
        templates
            .get_or_insert_with(BTreeMap::new)
            .insert(key, name.clone());
        Ok(name)
    }

    async fn create_fleet(
        &self,
        pool: &AwsPool,
        label: &AwsLabel,
        fleet_cfg: &super::config::Fleet,
        image_id: &str,
        tags: &BTreeMap<String, String>,
    ) -> AwsResult<String> {
        let template = self.launch_template(pool, label).await?;
        let mut p = Params::new();
        p.set("ClientToken", client_token(tags));
        p.set("Type", "instant");
        let (options, capacity) = if label.use_spot {
            ("SpotOptions", "spot")
        } else {
            ("OnDemandOptions", "on-demand")
        };
        p.set(
            format!("{options}.AllocationStrategy"),
            &fleet_cfg.allocation_strategy,
        )
        .set("TargetCapacitySpecification.TotalTargetCapacity", 1)
        .set(
            "TargetCapacitySpecification.DefaultTargetCapacityType",
            capacity,
        );
        let config = "LaunchTemplateConfigs.1";
        p.set(
            format!("{config}.LaunchTemplateSpecification.LaunchTemplateName"),
            &template,
        )
        .set(
            format!("{config}.LaunchTemplateSpecification.Version"),
            "$Latest",
        );
        for (i, t) in fleet_cfg.instance_types.iter().enumerate() {
            let o = format!("{config}.Overrides.{}", i + 1);
            p.set(format!("{o}.ImageId"), image_id)
                .set(format!("{o}.InstanceType"), t);
            if let Some(subnet) = &pool.subnet_id {
                p.set(format!("{o}.SubnetId"), subnet);
            }
        }
        for (i, kind) in ["instance", "volume"].iter().enumerate() {
            let spec = format!("TagSpecification.{}", i + 1);
            p.set(format!("{spec}.ResourceType"), kind);
            p.tags(&format!("{spec}.Tag"), tags);
        }
        let answer = self.client.ec2("CreateFleet", &p).await?;
        let id = answer
            .items("fleetInstanceSet")
            .flat_map(|f| f.items("instanceIds"))
            .map(|i| i.text.clone())
            .find(|t| !t.is_empty());
        match id {
            Some(id) => Ok(id),
            None => {
                let error = answer.items("errorSet").next();
                Err(AwsError::Api {
                    action: "CreateFleet".into(),
                    status: 400,
                    code: error
                        .and_then(|e| e.text_at(&["errorCode"]))
                        .unwrap_or_else(|| "EmptyFleet".into()),
                    message: error
                        .and_then(|e| e.text_at(&["errorMessage"]))
                        .unwrap_or_else(|| "empty instance list was returned".into()),
                })
            }
        }
    }

    /// The resources of an instance of `instance_type` as upstream counts
    /// them: one instance, its cores and its memory.
    async fn type_resources(&self, instance_type: &str) -> AwsResult<Resources> {
        let info = self.type_info(instance_type).await?;
        Ok(Resources {
            instances: Some(1),
            cores: Some(info.cores),
            ram: Some(info.ram_mib),
            ..Resources::default()
        })
    }

    async fn describe_instance(&self, external_id: &str) -> AwsResult<Option<Xml>> {
        let mut p = Params::new();
        p.set("InstanceId.1", external_id);
        match self.client.ec2("DescribeInstances", &p).await {
            Ok(answer) => Ok(instance::items(&answer).next().cloned()),
            Err(e) if e.kind() == nodepool_core::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn instance_of(&self, item: &Xml) -> Instance {
        let resources = match item.text_at(&["instanceType"]) {
            Some(t) => self.type_resources(&t).await.unwrap_or_default(),
            None => Resources::default(),
        };
        instance::from_item(item, &self.config.region_name, resources)
    }

    /// The account's quota values by code (`ec2` service), cached for 5
    /// minutes; `None` when Service Quotas cannot be read.
    async fn service_quotas(&self) -> Option<ServiceQuotas> {
        let mut cache = self.quotas.lock().await;
        if let Some((at, quotas)) = cache.as_ref() {
            if at.elapsed() < CACHE_TTL {
                return quotas.clone();
            }
        }
        let read = self.list_service_quotas().await;
        let quotas = match read {
            Ok(q) => Some(q),
            Err(e) => {
                if !self.quota_fallback_logged.swap(true, Ordering::Relaxed) {
                    tracing::warn!(provider = %self.config.name, error = %e,
                        "cannot read EC2 quotas from Service Quotas; using the configured \
                         limits only (upstream would not launch)");
                }
                None
            }
        };
        *cache = Some((Instant::now(), quotas.clone()));
        quotas
    }

    async fn list_service_quotas(&self) -> AwsResult<ServiceQuotas> {
        let mut out = BTreeMap::new();
        let mut names: Vec<(String, String)> = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut body = json!({ "ServiceCode": "ec2", "MaxResults": 100 });
            if let Some(t) = &token {
                body["NextToken"] = json!(t);
            }
            let page = self
                .client
                .service_quotas("ListServiceQuotas", &body)
                .await?;
            for q in page["Quotas"].as_array().into_iter().flatten() {
                if let (Some(code), Some(value)) = (q["QuotaCode"].as_str(), q["Value"].as_f64()) {
                    out.insert(code.to_string(), value);
                    if let Some(name) = q["QuotaName"].as_str() {
                        names.push((code.to_string(), name.to_string()));
                    }
                }
            }
            token = page["NextToken"].as_str().map(str::to_string);
            if token.is_none() {
                let learned =
                    quota::learn_codes(names.iter().map(|(c, n)| (c.as_str(), n.as_str())));
                return Ok(ServiceQuotas {
                    values: out,
                    learned,
                });
            }
        }
    }

    /// Allocate a dedicated host for one instance of `instance_type` in the
    /// pool's availability zone, tagged like the instance, and wait until
    /// it is available (upstream's arguments).
    async fn allocate_host(
        &self,
        pool: &AwsPool,
        instance_type: &str,
        tags: &BTreeMap<String, String>,
    ) -> AwsResult<String> {
        let mut p = Params::new();
        p.set("AutoPlacement", "off")
            .set("InstanceType", instance_type)
            .set("Quantity", 1)
            .set("HostRecovery", "off")
            .set("HostMaintenance", "off")
            .set("TagSpecification.1.ResourceType", "dedicated-host");
        if let Some(az) = &pool.availability_zone {
            p.set("AvailabilityZone", az);
        }
        p.tags("TagSpecification.1.Tag", tags);
        let answer = self.client.ec2("AllocateHosts", &p).await?;
        let host = answer
            .child("hostIdSet")
            .and_then(|set| set.children.first())
            .map(|item| item.text.clone())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| AwsError::BadResponse {
                action: "AllocateHosts".into(),
                message: "no host id".into(),
            })?;
        tracing::info!(host = %host, "allocated dedicated host");
        let deadline = nodepool_core::time::deadline_after(self.config.boot_timeout());
        loop {
            let mut q = Params::new();
            q.set("HostId.1", &host);
            let state = self
                .client
                .ec2("DescribeHosts", &q)
                .await?
                .items("hostSet")
                .next()
                .and_then(|h| h.text_at(&["state"]))
                .unwrap_or_default()
                .to_lowercase();
            match state.as_str() {
                "available" => return Ok(host),
                "permanent-failure" | "released" | "released-permanent-failure" => {
                    self.release_host(&host).await;
                    return Err(AwsError::Failed(format!("host {host} in {state} state")));
                }
                _ if tokio::time::Instant::now() > deadline => {
                    self.release_host(&host).await;
                    return Err(AwsError::Failed(format!(
                        "host {host} not available within boot-timeout"
                    )));
                }
                _ => tokio::time::sleep(Duration::from_secs(2)).await,
            }
        }
    }

    async fn release_host(&self, host: &str) {
        let mut p = Params::new();
        p.set("HostId.1", host);
        match self.client.ec2("ReleaseHosts", &p).await {
            Ok(_) => tracing::info!(host = %host, "released dedicated host"),
            Err(e) => tracing::warn!(host = %host, error = %e, "cannot release dedicated host"),
        }
    }

    /// Release dedicated hosts tagged with this provider's name that have
    /// held no instance for the grace period (the host of a deleted node,
    /// or one whose launch failed or was interrupted).
    async fn clean_hosts(&self) -> AwsResult<()> {
        let mut token: Option<String> = None;
        let mut empty = Vec::new();
        loop {
            // Tags are checked here rather than filtered on: not every EC2
            // (moto) filters hosts by tag.
            let mut p = Params::new();
            p.filter("state", &["available"]);
            if let Some(t) = &token {
                p.set("NextToken", t);
            }
            let answer = self.client.ec2("DescribeHosts", &p).await?;
            let in_use = self.hosts_in_use.lock().await;
            for host in answer.items("hostSet") {
                let ours = host.tags().get(META_PROVIDER) == Some(&self.config.name);
                let Some(id) = host.text_at(&["hostId"]) else {
                    continue;
                };
                let busy = host.items("instances").next().is_some() || in_use.contains(&id);
                if ours && !busy {
                    empty.push(id);
                }
            }
            token = answer.text_at(&["nextToken"]);
            if token.is_none() {
                break;
            }
        }
        let mut seen = self.hosts_seen.lock().await;
        seen.retain(|id, _| empty.contains(id));
        for id in empty {
            let first = *seen.entry(id.clone()).or_insert_with(Instant::now);
            if first.elapsed() >= self.volume_grace {
                self.release_host(&id).await;
                seen.remove(&id);
            }
        }
        Ok(())
    }

    /// Delete volumes tagged with this provider's name that have been
    /// unattached (`available`) for the grace period.
    async fn clean_volumes(&self) -> AwsResult<()> {
        let mut token: Option<String> = None;
        let mut available = Vec::new();
        loop {
            let mut p = Params::new();
            p.filter(&format!("tag:{META_PROVIDER}"), &[&self.config.name])
                .filter("status", &["available"]);
            if let Some(t) = &token {
                p.set("NextToken", t);
            }
            let answer = self.client.ec2("DescribeVolumes", &p).await?;
            available.extend(
                answer
                    .items("volumeSet")
                    .filter_map(|v| v.text_at(&["volumeId"])),
            );
            token = answer.text_at(&["nextToken"]);
            if token.is_none() {
                break;
            }
        }
        let mut seen = self.volumes_seen.lock().await;
        seen.retain(|id, _| available.contains(id));
        for id in available {
            let first = *seen.entry(id.clone()).or_insert_with(Instant::now);
            if first.elapsed() < self.volume_grace {
                continue;
            }
            let mut p = Params::new();
            p.set("VolumeId", &id);
            match self.client.ec2("DeleteVolume", &p).await {
                Ok(_) => {
                    tracing::info!(provider = %self.config.name, volume = %id,
                        "deleted leaked volume");
                    seen.remove(&id);
                }
                Err(e) if e.kind() == nodepool_core::ErrorKind::NotFound => {
                    seen.remove(&id);
                }
                Err(e) => tracing::warn!(volume = %id, error = %e, "cannot delete leaked volume"),
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Provider for AwsProvider {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn capabilities(&self) -> ProviderCapabilities {
        ProviderCapabilities {
            image_upload: true,
            quota_query: true,
            instance_listing: true,
        }
    }

    async fn label_resources(&self, pool: &str, label: &str) -> Result<Resources> {
        let (_, l) = self.label(pool, label)?;
        match &l.instance {
            InstanceSpec::Type(t) => self.type_resources(t).await.map_err(|e| self.err(e)),
            // Upstream counts a fleet launch as one instance before it
            // knows the type the fleet picked.
            InstanceSpec::Fleet(_) | InstanceSpec::None => Ok(Resources {
                instances: Some(1),
                cores: None,
                ram: None,
                ..Resources::default()
            }),
        }
    }

    async fn create_instance(&self, spec: &LaunchSpec) -> Result<Instance> {
        let span = tracing::info_span!("aws_create", node_id = %spec.node_id,
            provider = %self.config.name, pool = %spec.pool, label = %spec.label);
        let _guard = span.enter();
        let (pool, label) = self.label(&spec.pool, &spec.label)?;
        let image_id = self.image_id(spec, label).await.map_err(|e| self.err(e))?;
        let tags = self.tags(spec, label);
        let external_id = match &label.instance {
            InstanceSpec::Type(t) => {
                let host = if label.dedicated_host {
                    Some(
                        self.allocate_host(pool, t, &tags)
                            .await
                            .map_err(|e| self.err(e))?,
                    )
                } else {
                    None
                };
                let item = self
                    .run_instances(pool, label, t, &image_id, &tags, host.as_deref())
                    .await;
                let item = match (item, &host) {
                    (Ok(item), _) => item,
                    (Err(e), Some(host)) => {
                        self.release_host(host).await;
                        return Err(self.err(e));
                    }
                    (Err(e), None) => return Err(self.err(e)),
                };
                item.text_at(&["instanceId"]).unwrap_or_default()
            }
            InstanceSpec::Fleet(f) => self
                .create_fleet(pool, label, f, &image_id, &tags)
                .await
                .map_err(|e| self.err(e))?,
            InstanceSpec::None => {
                return Err(self.err(AwsError::Failed(format!(
                    "label {} sets neither instance-type nor fleet",
                    label.name
                ))))
            }
        };
        tracing::info!(instance = %external_id, hostname = %spec.hostname, "created instance");
        Ok(Instance {
            external_id,
            state: Some(InstanceState::Building),
            metadata: tags,
            cloud: Some(instance::CLOUD.to_string()),
            region: Some(self.config.region_name.clone()),
            image_id: Some(image_id),
            node_properties: Some(node_properties(label)),
            ..Instance::default()
        })
    }

    async fn get_instance(&self, external_id: &str) -> Result<Option<Instance>> {
        let item = self
            .describe_instance(external_id)
            .await
            .map_err(|e| self.err(e))?;
        match item {
            Some(item) if instance::state_name(&item) != "terminated" => {
                Ok(Some(self.instance_of(&item).await))
            }
            _ => Ok(None),
        }
    }

    async fn delete_instance(&self, external_id: &str) -> Result<()> {
        let mut p = Params::new();
        p.set("InstanceId.1", external_id);
        match self.client.ec2("TerminateInstances", &p).await {
            Ok(_) => {
                tracing::info!(provider = %self.config.name, instance = %external_id,
                    "terminating instance");
                Ok(())
            }
            Err(e) if e.kind() == nodepool_core::ErrorKind::NotFound => Ok(()),
            // An id that is no instance id at all is as missing.
            Err(AwsError::Api { code, .. }) if code == "InvalidInstanceID.Malformed" => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    async fn list_instances_page(
        &self,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<InstancePage> {
        let mut p = Params::new();
        p.filter(&format!("tag:{META_PROVIDER}"), &[&self.config.name])
            .filter("instance-state-name", LIVE_STATES);
        // EC2 takes 5 to 1000 results a page.
        p.set("MaxResults", limit.clamp(5, 1000));
        if let Some(token) = marker {
            p.set("NextToken", token);
        }
        let answer = self
            .client
            .ec2("DescribeInstances", &p)
            .await
            .map_err(|e| self.err(e))?;
        let mut instances = Vec::new();
        {
            let mut in_use = self.hosts_in_use.lock().await;
            if marker.is_none() {
                in_use.clear();
            }
            for item in instance::items(&answer) {
                if let Some(host) = item.text_at(&["placement", "hostId"]) {
                    in_use.insert(host);
                }
            }
        }
        for item in instance::items(&answer) {
            if instance::state_name(item) != "terminated" {
                instances.push(self.instance_of(item).await);
            }
        }
        let next = answer.text_at(&["nextToken"]);
        if next.is_none() {
            if let Err(e) = self.clean_volumes().await {
                tracing::warn!(provider = %self.config.name, error = %e,
                    "cannot look for leaked volumes");
            }
            if self.uses_dedicated_hosts() {
                if let Err(e) = self.clean_hosts().await {
                    tracing::warn!(provider = %self.config.name, error = %e,
                        "cannot look for leaked dedicated hosts");
                }
            }
        }
        Ok(InstancePage { instances, next })
    }

    async fn upload_image(&self, spec: &ImageUploadSpec) -> Result<String> {
        let span = tracing::info_span!("aws_upload", provider = %self.config.name,
            diskimage = %spec.diskimage, upload_id = %spec.upload_id);
        let _guard = span.enter();
        let image = self
            .config
            .diskimage(&spec.diskimage)
            .ok_or_else(|| Error::NotFound {
                kind: "diskimage",
                id: format!("{}/{}", self.config.name, spec.diskimage),
            })?;
        let bucket = match (image.import_method, &self.config.bucket_name) {
            (ImportMethod::Snapshot | ImportMethod::Image, None) => {
                return Err(self.err(AwsError::Config(format!(
                    "diskimage {} is imported with import-method {}, which needs \
                     object-storage.bucket-name",
                    image.name,
                    image.import_method.as_str()
                ))))
            }
            (ImportMethod::Snapshot | ImportMethod::Image, Some(b)) => Some(b.clone()),
            (ImportMethod::EbsDirect, _) => None,
        };
        let mut spec = spec.clone();
        spec.metadata
            .insert(META_PROVIDER.to_string(), self.config.name.clone());
        let timeout = self
            .config
            .image_import_timeout
            .map(|t| Duration::from_secs(u64::try_from(t).unwrap_or(0)));
        let uploaded = match (&bucket, image.import_method) {
            (Some(bucket), ImportMethod::Image) => {
                images::upload_image_import(&self.client, image, &spec, bucket, timeout).await
            }
            (Some(bucket), _) => {
                images::upload_snapshot_import(&self.client, image, &spec, bucket, timeout).await
            }
            (None, _) => images::upload_ebs_direct(&self.client, image, &spec, timeout).await,
        };
        let id = uploaded.map_err(|e| self.err(e))?;
        tracing::info!(image = %id, name = %spec.external_name, "registered image");
        Ok(id)
    }

    async fn delete_image(&self, external_id: &str) -> Result<()> {
        images::delete_image(&self.client, external_id)
            .await
            .map_err(|e| self.err(e))
    }

    async fn list_images(&self) -> Result<Vec<CloudImage>> {
        images::list_images(
            &self.client,
            &self.config.name,
            self.config.bucket_name.as_deref(),
        )
        .await
        .map_err(|e| self.err(e))
    }

    async fn quota(&self) -> Result<Resources> {
        let service = self.service_quotas().await.unwrap_or_default();
        // The codes the labels launch under, and what their types use.
        let mut uses: BTreeMap<String, Vec<CodeUse>> = BTreeMap::new();
        for pool in &self.config.pools {
            for label in &pool.labels {
                for t in label.instance_types() {
                    let Some(code) = quota::quota_code_learned(t, label.use_spot, &service.learned)
                    else {
                        continue;
                    };
                    let info = self.type_info(t).await.map_err(|e| self.err(e))?;
                    uses.entry(code).or_default().push(CodeUse {
                        vcpus: info.vcpus,
                        cores: info.cores,
                    });
                }
            }
        }
        let mut limits = service.values;
        // `max-resources` of any pool caps its quota code for the provider.
        for pool in &self.config.pools {
            for (code, value) in &pool.max_resources {
                let v = *value as f64;
                limits
                    .entry(code.clone())
                    .and_modify(|l| *l = l.min(v))
                    .or_insert(v);
            }
        }
        Ok(Resources {
            instances: None,
            cores: quota::cores_limit(&limits, &uses),
            ram: None,
            ..Resources::default()
        })
    }
}

/// Upstream's `node_properties` of an aws node: whether the fleet API made
/// it and whether it is a spot instance.
fn node_properties(label: &AwsLabel) -> nodepool_core::model::json::JsonObject {
    use nodepool_core::model::json::{JsonObject, JsonValue};
    let mut props = JsonObject::new();
    props.insert(
        "fleet",
        JsonValue::Bool(matches!(label.instance, InstanceSpec::Fleet(_))),
    );
    props.insert("spot", JsonValue::Bool(label.use_spot));
    props
}
