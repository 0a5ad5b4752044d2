//! The OpenStack [`Provider`]: servers, quota and images of one configured
//! provider, through an [`OpenStackClient`].
//!
//! Flavors, cloud images, networks and the external network are looked up
//! once and cached (cleared after a 400 on create, as upstream). Floating
//! IPs are attached while the engine polls `get_instance`: an ACTIVE server
//! of an `auto-floating-ip` pool without a public address gets one and is
//! reported `Building` until Nova shows it. Leaked DOWN ports and (with
//! `clean-floating-ips`) unattached floating IPs are cleaned by
//! [`Provider::cleanup_leaked_resources`], which the launcher's
//! leak-cleanup pass calls after listing the instances, as upstream's
//! `listResources` cleans them at the end of its listing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nodepool_core::provider::{
    wait_active_with, CloudImage, ImageRef, ImageUploadSpec, Instance, InstancePage, InstanceState,
    LaunchSpec, LeakedResources, Provider, ProviderCapabilities, Quantity, Resources, META_POOL,
};
use nodepool_core::{Error, Result};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::client::{OpenStackClient, Payload, ServiceType};
use super::config::{OpenStackConfig, OpenStackLabel, OpenStackPool};
use super::error::{is_quota_fault, quota_resource, OpenStackError};
use super::network::PortCleanup;
use super::server::{self, Flavor, Place};

/// One configured `openstack` provider.
#[derive(Debug)]
pub struct OpenStackProvider {
    pub(crate) config: Arc<OpenStackConfig>,
    pub(crate) client: OpenStackClient,
    flavors: Mutex<Option<Arc<Vec<Flavor>>>>,
    images: Mutex<BTreeMap<String, String>>,
    networks: Mutex<BTreeMap<String, String>>,
    pub(crate) fip_lock: Mutex<()>,
    pub(crate) ports: Mutex<PortCleanup>,
}

/// Nova's timeout for one API call when nothing else is configured.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

pub(crate) fn json_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A label's `dynamic-instance-properties` formatted with the request's
/// safe attributes. As upstream, a value that cannot be formatted (an
/// unknown attribute, a value that is no string) is logged and left out.
fn dynamic_properties(label: &OpenStackLabel, request: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, value) in &label.dynamic_instance_properties {
        let formatted = match value {
            Value::String(template) => super::template::format_request(template, request),
            other => Err(format!("{other} is no string to format")),
        };
        match formatted {
            Ok(text) => {
                out.insert(key.clone(), text);
            }
            Err(e) => {
                tracing::warn!(label = %label.name, property = %key, error = %e,
                    "cannot format dynamic instance property; left out");
            }
        }
    }
    out
}

impl OpenStackProvider {
    /// A provider for `config` talking to `client`.
    pub fn new(config: Arc<OpenStackConfig>, client: OpenStackClient) -> Self {
        Self {
            config,
            client,
            flavors: Mutex::new(None),
            images: Mutex::new(BTreeMap::new()),
            networks: Mutex::new(BTreeMap::new()),
            fip_lock: Mutex::new(()),
            ports: Mutex::new(PortCleanup::default()),
        }
    }

    /// A provider for `config` on the cloud `cloud` describes. The
    /// provider's `rate` is not applied here: the engine's
    /// [`RateLimit`](nodepool_core::provider::wrappers::RateLimit) wrapper
    /// spaces the calls (see [`nodepool_core::provider::stack`]).
    pub fn connect(
        config: Arc<OpenStackConfig>,
        cloud: super::clouds_yaml::CloudConfig,
    ) -> std::result::Result<Self, OpenStackError> {
        Self::connect_reporting(config, cloud, None)
    }

    /// [`OpenStackProvider::connect`], the client recording openstacksdk's
    /// per-call metrics into `metrics` when the cloud configures statsd
    /// ([`CloudConfig::api_statsd`](super::clouds_yaml::CloudConfig::api_statsd)).
    pub fn connect_reporting(
        config: Arc<OpenStackConfig>,
        cloud: super::clouds_yaml::CloudConfig,
        metrics: Option<Arc<nodepool_core::provider::DriverMetrics>>,
    ) -> std::result::Result<Self, OpenStackError> {
        let mut client = OpenStackClient::new(cloud, CALL_TIMEOUT)?;
        if let Some(metrics) = metrics {
            client = client.reporting_to(metrics);
        }
        Ok(Self::new(config, client))
    }

    /// The client, for tests and tools.
    pub fn client(&self) -> &OpenStackClient {
        &self.client
    }

    pub(crate) fn err(&self, e: OpenStackError) -> Error {
        e.into_core(&self.config.name)
    }

    fn place(&self) -> Place<'_> {
        let cloud = self.client.cloud();
        Place {
            cloud: &cloud.name,
            region: cloud.region_name.as_deref(),
            private: cloud.private,
        }
    }

    fn label(&self, pool: &str, label: &str) -> Result<(&OpenStackPool, &OpenStackLabel)> {
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

    /// The cloud's flavors sorted by (ram, name), cached.
    pub(crate) async fn flavors(&self) -> std::result::Result<Arc<Vec<Flavor>>, OpenStackError> {
        let mut cache = self.flavors.lock().await;
        if let Some(f) = cache.as_ref() {
            return Ok(f.clone());
        }
        let body = self
            .client
            .get(ServiceType::Compute, "/flavors/detail")
            .await?;
        let mut list: Vec<Flavor> = body["flavors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Flavor::from_json)
            .collect();
        server::sort_flavors(&mut list);
        let list = Arc::new(list);
        *cache = Some(list.clone());
        Ok(list)
    }

    async fn label_flavor(
        &self,
        label: &OpenStackLabel,
    ) -> std::result::Result<Flavor, OpenStackError> {
        let flavors = self.flavors().await?;
        server::find_flavor(&flavors, label.flavor_name.as_deref(), label.min_ram).cloned()
    }

    async fn clear_caches(&self) {
        *self.flavors.lock().await = None;
        self.images.lock().await.clear();
        self.networks.lock().await.clear();
    }

    /// The id of the active image named or identified `name`.
    async fn find_image(&self, name: &str) -> std::result::Result<String, OpenStackError> {
        if let Some(id) = self.images.lock().await.get(name) {
            return Ok(id.clone());
        }
        let path = format!("/images/{name}");
        let by_id = self.client.get_opt(ServiceType::Image, &path).await;
        // A name is no valid id: Glance may answer 404 or 400.
        let id = match by_id {
            Ok(Some(v)) => v["id"].as_str().map(str::to_string),
            Ok(None) | Err(OpenStackError::Http { status: 400, .. }) => {
                let query = format!("/images?name={}&status=active", encode(name));
                let v = self.client.get(ServiceType::Image, &query).await?;
                v["images"][0]["id"].as_str().map(str::to_string)
            }
            Err(e) => return Err(e),
        };
        let id =
            id.ok_or_else(|| OpenStackError::NotFound(format!("Unable to find image {name}")))?;
        self.images
            .lock()
            .await
            .insert(name.to_string(), id.clone());
        Ok(id)
    }

    async fn find_network(&self, name: &str) -> std::result::Result<String, OpenStackError> {
        if let Some(id) = self.networks.lock().await.get(name) {
            return Ok(id.clone());
        }
        let mut id = None;
        for key in ["name", "id"] {
            let v = self
                .client
                .get(
                    ServiceType::Network,
                    &format!("/networks?{key}={}", encode(name)),
                )
                .await?;
            id = v["networks"][0]["id"].as_str().map(str::to_string);
            if id.is_some() {
                break;
            }
        }
        let id = id.ok_or_else(|| {
            OpenStackError::NotFound(format!(
                "Unable to find network {name} in provider {}",
                self.config.name
            ))
        })?;
        self.networks
            .lock()
            .await
            .insert(name.to_string(), id.clone());
        Ok(id)
    }

    /// The image reference and config-drive setting of a launch.
    async fn launch_image(
        &self,
        spec: &LaunchSpec,
        label: &OpenStackLabel,
    ) -> std::result::Result<(String, Option<bool>), OpenStackError> {
        match (&spec.image, &label.image) {
            (
                Some(ImageRef::Uploaded {
                    diskimage,
                    external_id,
                }),
                _,
            ) => {
                let drive = self
                    .config
                    .diskimage(diskimage)
                    .and_then(|d| d.config_drive);
                Ok((external_id.clone(), drive))
            }
            (Some(ImageRef::Cloud(name)), _)
            | (None, super::config::LabelImage::CloudImage(name)) => {
                let entry = self.config.cloud_image(name);
                let drive = entry.and_then(|c| c.config_drive);
                let id = match entry {
                    Some(c) if c.image_id.is_some() => c.image_id.clone().unwrap_or_default(),
                    Some(c) => self.find_image(c.external_name()).await?,
                    None => self.find_image(name).await?,
                };
                Ok((id, drive))
            }
            (None, super::config::LabelImage::DiskImage(name)) => Err(OpenStackError::NotFound(
                format!("no ready upload of diskimage {name} to launch from"),
            )),
        }
    }

    /// The `POST /servers` body of a launch.
    async fn server_body(
        &self,
        spec: &LaunchSpec,
        pool: &OpenStackPool,
        label: &OpenStackLabel,
        flavor: &Flavor,
    ) -> std::result::Result<Value, OpenStackError> {
        let (image, config_drive) = self.launch_image(spec, label).await?;
        let mut metadata: BTreeMap<String, String> = label
            .instance_properties
            .iter()
            .map(|(k, v)| (k.clone(), json_text(v)))
            .collect();
        if let Some(request) = &spec.request {
            metadata.extend(dynamic_properties(label, request));
        }
        metadata.extend(spec.metadata.clone());
        let mut networks = Vec::new();
        for net in &label.networks {
            networks.push(json!({ "uuid": self.find_network(net).await? }));
        }
        let mut body = json!({
            "name": spec.hostname,
            "flavorRef": flavor.id,
            "metadata": metadata,
            "networks": if networks.is_empty() { json!("auto") } else { json!(networks) },
        });
        if label.boot_from_volume {
            body["block_device_mapping_v2"] = json!([{
                "boot_index": 0, "uuid": image, "source_type": "image",
                "destination_type": "volume", "volume_size": label.volume_size,
                "delete_on_termination": true,
            }]);
            body["imageRef"] = json!("");
        } else {
            body["imageRef"] = json!(image);
        }
        if let Some(key) = &label.key_name {
            body["key_name"] = json!(key);
        }
        if let Some(az) = spec
            .az
            .as_deref()
            .or_else(|| pool_az(&pool.availability_zones, spec))
        {
            body["availability_zone"] = json!(az);
        }
        if let Some(drive) = config_drive {
            body["config_drive"] = json!(drive);
        }
        if !pool.security_groups.is_empty() {
            let groups: Vec<Value> = pool
                .security_groups
                .iter()
                .map(|g| json!({ "name": g }))
                .collect();
            body["security_groups"] = json!(groups);
        }
        if let Some(userdata) = &label.userdata {
            body["user_data"] = json!(server::base64(userdata.as_bytes()));
        }
        Ok(json!({ "server": body }))
    }

    /// The pool config a server's metadata names.
    pub(crate) fn pool_of(&self, inst: &Instance) -> Option<&OpenStackPool> {
        inst.metadata
            .get(META_POOL)
            .and_then(|p| self.config.pool(p))
    }

    async fn server_instance(&self, server: &Value) -> Option<Instance> {
        let flavor_id = server["flavor"]["id"].as_str();
        let flavor = match flavor_id {
            Some(id) => self
                .flavors()
                .await
                .ok()
                .and_then(|f| f.iter().find(|f| f.id == id).cloned()),
            None => None,
        };
        server::instance(server, self.place(), flavor.as_ref())
    }

    /// The sizes (GiB) of the volumes attached to `servers`, by volume id,
    /// read from Cinder when a server has any and the cloud has a
    /// block-storage endpoint (upstream lists the volumes to count what
    /// each server uses). Empty when they cannot be read.
    async fn attached_volume_sizes(&self, servers: &[Value]) -> BTreeMap<String, u64> {
        let attached = servers.iter().any(|s| {
            s["os-extended-volumes:volumes_attached"]
                .as_array()
                .is_some_and(|v| !v.is_empty())
        });
        if !attached {
            return BTreeMap::new();
        }
        match self
            .client
            .get(ServiceType::BlockStorage, "/volumes/detail")
            .await
        {
            Ok(body) => body["volumes"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|v| Some((v["id"].as_str()?.to_string(), v["size"].as_u64()?)))
                .collect(),
            Err(OpenStackError::NoEndpoint { .. }) => BTreeMap::new(),
            Err(e) => {
                tracing::debug!(error = %e, "cannot list volumes; not counting them");
                BTreeMap::new()
            }
        }
    }

    pub(crate) async fn fetch_server(
        &self,
        id: &str,
    ) -> std::result::Result<Option<Value>, OpenStackError> {
        let path = format!("/servers/{}", encode(id));
        Ok(self
            .client
            .get_opt(ServiceType::Compute, &path)
            .await?
            .map(|v| v["server"].clone()))
    }
}

/// Percent-encode a query or path value.
/// The pool's availability zone for a launch the engine gave none: one of
/// `availability-zones`, the same for every node of a request (upstream
/// picks one at random per request and boots its nodes there), spread over
/// requests by a hash of the request id (of the node id without a
/// request). `None` when the pool lists no zones: Nova chooses.
fn pool_az<'a>(zones: &'a [String], spec: &LaunchSpec) -> Option<&'a str> {
    if zones.is_empty() {
        return None;
    }
    let key = spec
        .request
        .as_ref()
        .and_then(|r| r["id"].as_str())
        .unwrap_or(&spec.node_id);
    // FNV-1a: stable across runs and processes, unlike the std hasher.
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let index = usize::try_from(hash % zones.len() as u64).unwrap_or(0);
    zones.get(index).map(String::as_str)
}

pub(crate) fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[async_trait]
impl Provider for OpenStackProvider {
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
        let flavor = self.label_flavor(l).await.map_err(|e| self.err(e))?;
        let mut resources = flavor.resources();
        // Upstream's quota_from_flavor with the label: a boot volume of
        // `volume-size` GiB.
        if l.boot_from_volume {
            resources.other.set("volumes", Quantity::Int(1));
            resources
                .other
                .set("volume-gb", Quantity::Int(l.volume_size));
        }
        Ok(resources)
    }

    #[tracing::instrument(skip_all, fields(provider = %self.config.name, node_id = %spec.node_id))]
    async fn create_instance(&self, spec: &LaunchSpec) -> Result<Instance> {
        let (pool, label) = self.label(&spec.pool, &spec.label)?;
        let flavor = self.label_flavor(label).await.map_err(|e| self.err(e))?;
        let body = self
            .server_body(spec, pool, label, &flavor)
            .await
            .map_err(|e| self.err(e))?;
        let answer = match self
            .client
            .call(
                ServiceType::Compute,
                Method::POST,
                "/servers",
                Payload::Json(body),
            )
            .await
        {
            Ok(a) => a,
            Err(e) => {
                if e.status() == Some(400) {
                    tracing::info!(
                        "clearing flavor, image and network caches after a 400 from nova"
                    );
                    self.clear_caches().await;
                }
                return Err(self.err(e));
            }
        };
        let id = answer.body["server"]["id"].as_str().ok_or_else(|| {
            self.err(OpenStackError::BadResponse {
                url: "POST /servers".to_string(),
                message: "no server id in the answer".to_string(),
            })
        })?;
        Ok(Instance {
            external_id: id.to_string(),
            state: Some(InstanceState::Building),
            metadata: spec.metadata.clone(),
            az: spec.az.clone(),
            cloud: Some(self.client.cloud().name.clone()),
            region: self.client.cloud().region_name.clone(),
            resources: flavor.resources(),
            ..Instance::default()
        })
    }

    async fn get_instance(&self, external_id: &str) -> Result<Option<Instance>> {
        let Some(server) = self
            .fetch_server(external_id)
            .await
            .map_err(|e| self.err(e))?
        else {
            return Ok(None);
        };
        let Some(inst) = self.server_instance(&server).await else {
            return Ok(None);
        };
        if inst.state == Some(InstanceState::Active) {
            return self.ensure_floating_ip(&server, inst).await.map(Some);
        }
        Ok(Some(inst))
    }

    /// The shared wait ([`wait_active_with`]) with OpenStack's
    /// classifier: a server that goes to ERROR with a quota fault (Nova's
    /// `fault.message` with "quota exceeded", "number of ports exceeded",
    /// or both "exceeds" and "quota") is [`Error::QuotaExceeded`], so the
    /// engine aborts the node and pauses the pool instead of retrying the
    /// launch, as upstream does.
    async fn wait_active(&self, external_id: &str, timeout: Duration) -> Result<Instance> {
        let quota_fault = |_: &Instance, fault: &str| {
            is_quota_fault(fault).then(|| {
                tracing::warn!(%external_id, %fault, "server failed for quota");
                Error::QuotaExceeded {
                    provider: self.config.name.clone(),
                    resource: quota_resource(fault),
                }
            })
        };
        wait_active_with(self, external_id, timeout, &quota_fault).await
    }

    async fn delete_instance(&self, external_id: &str) -> Result<()> {
        let server = self
            .fetch_server(external_id)
            .await
            .map_err(|e| self.err(e))?;
        let Some(server) = server else {
            return Ok(());
        };
        self.delete_floating_ips(&server)
            .await
            .map_err(|e| self.err(e))?;
        let path = format!("/servers/{}", encode(external_id));
        self.client
            .delete(ServiceType::Compute, &path)
            .await
            .map_err(|e| self.err(e))
    }

    /// `GET /servers/detail?limit=&marker=`: one of Nova's pages.
    async fn list_instances_page(
        &self,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<InstancePage> {
        let limit = limit.max(1);
        let mut path = format!("/servers/detail?limit={limit}");
        if let Some(marker) = marker {
            path.push_str(&format!("&marker={}", encode(marker)));
        }
        let body = self
            .client
            .get(ServiceType::Compute, &path)
            .await
            .map_err(|e| self.err(e))?;
        let servers = body["servers"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let linked = body["servers_links"]
            .as_array()
            .is_some_and(|links| links.iter().any(|l| l["rel"] == "next"));
        let next = servers
            .last()
            .filter(|_| linked || servers.len() >= limit)
            .and_then(|s| s["id"].as_str())
            .map(str::to_string);
        let volumes = self.attached_volume_sizes(servers).await;
        let mut instances = Vec::with_capacity(servers.len());
        for s in servers {
            if let Some(mut i) = self.server_instance(s).await {
                server::count_volumes(&mut i.resources, s, &volumes);
                instances.push(i);
            }
        }
        Ok(InstancePage { instances, next })
    }

    async fn quota(&self) -> Result<Resources> {
        let body = self
            .client
            .get(ServiceType::Compute, "/limits")
            .await
            .map_err(|e| self.err(e))?;
        let abs = &body["limits"]["absolute"];
        let bound = |key: &str| abs[key].as_i64().and_then(|v| u64::try_from(v).ok());
        let mut quota = Resources {
            instances: bound("maxTotalInstances"),
            cores: bound("maxTotalCores"),
            ram: bound("maxTotalRAMSize"),
            ..Resources::default()
        };
        // Cinder's limits, when the cloud has a block-storage endpoint (as
        // upstream's quota_from_limits; -1 is unlimited).
        match self.client.get(ServiceType::BlockStorage, "/limits").await {
            Ok(body) => {
                let abs = &body["limits"]["absolute"];
                for (name, key) in [
                    ("volumes", "maxTotalVolumes"),
                    ("volume-gb", "maxTotalVolumeGigabytes"),
                ] {
                    if let Some(limit) = abs[key].as_i64().filter(|v| *v >= 0) {
                        quota.other.set(name, Quantity::Int(limit));
                    }
                }
            }
            Err(OpenStackError::NoEndpoint { .. }) => {}
            Err(e) => return Err(self.err(e)),
        }
        Ok(quota)
    }

    async fn upload_image(&self, spec: &ImageUploadSpec) -> Result<String> {
        self.upload(spec).await.map_err(|e| self.err(e))
    }

    /// The server's console output (Nova's `os-getConsoleOutput`) when the
    /// label sets `console-log`; `None` otherwise, or when Nova has none
    /// (a 400), as openstacksdk's `get_server_console` answers.
    async fn console_log(
        &self,
        pool: &str,
        label: &str,
        external_id: &str,
    ) -> Result<Option<String>> {
        let (_, l) = self.label(pool, label)?;
        if !l.console_log {
            return Ok(None);
        }
        let path = format!("/servers/{}/action", encode(external_id));
        let answer = self
            .client
            .call(
                ServiceType::Compute,
                Method::POST,
                &path,
                Payload::Json(json!({"os-getConsoleOutput": {}})),
            )
            .await;
        match answer {
            Ok(a) => Ok(a.body["output"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string)),
            Err(e) if e.status() == Some(400) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Leaked DOWN ports and unattached floating IPs (see
    /// [`OpenStackProvider::cleanup_leaked_ports`] and
    /// [`OpenStackProvider::cleanup_floating_ips`]), counted as upstream's
    /// `leaked.ports` and `leaked.floatingips`.
    async fn cleanup_leaked_resources(&self) -> Result<LeakedResources> {
        Ok(self.cleanup_network_leaks().await)
    }

    async fn delete_image(&self, external_id: &str) -> Result<()> {
        let path = format!("/images/{}", encode(external_id));
        self.client
            .delete(ServiceType::Image, &path)
            .await
            .map_err(|e| self.err(e))
    }

    async fn list_images(&self) -> Result<Vec<CloudImage>> {
        self.images().await.map_err(|e| self.err(e))
    }
}
