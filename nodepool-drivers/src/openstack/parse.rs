//! Reading an `openstack` (or `fake`) provider mapping into
//! [`OpenStackConfig`] and the common [`ProviderConfig`] view.

use std::collections::BTreeMap;
use std::sync::Arc;

use nodepool_core::config::{
    superseded_by_name, DriverConfig, Item, MapReader, PoolCommon, PoolConfig, PoolLabel,
    ProviderCommon, ProviderConfig, ProviderDiskImage,
};

use super::config::{
    default_connection_port, LabelImage, OpenStackCloudImage, OpenStackConfig, OpenStackDiskImage,
    OpenStackLabel, OpenStackPool, DEFAULT_BOOT_TIMEOUT, DEFAULT_CONNECTION_TYPE,
    DEFAULT_IMAGE_FORMAT, DEFAULT_IMAGE_NAME_FORMAT, DEFAULT_IMAGE_UPLOAD_TIMEOUT,
    DEFAULT_LAUNCH_RETRIES, DEFAULT_LAUNCH_TIMEOUT, DEFAULT_PORT_CLEANUP_INTERVAL,
    DEFAULT_PYTHON_PATH, DEFAULT_RATE, DEFAULT_VOLUME_SIZE,
};

/// Read the keys of an `openstack` provider (the `fake` driver reads the
/// same ones) from `provider`, whose common keys (`name`, `driver`,
/// `max-concurrency`, `priority`) core has already consumed into `common`.
///
/// Every mistake is recorded in the reader's diagnostics with file, line,
/// column and key path; the returned config then holds defaults in place of
/// the bad values and must not be used. The child mappings (diskimages,
/// cloud-images, pools, labels) are finished here; the caller finishes
/// `provider` itself, which reports its unknown keys.
pub fn parse_openstack_provider(
    provider: &mut MapReader<'_>,
    common: &ProviderCommon,
) -> OpenStackConfig {
    // Core normally consumes it; marking it known here is harmless.
    provider.ignore("driver");
    let cloud = provider.required_str("cloud").unwrap_or_default();
    let region_name = provider.opt_str("region-name");
    let boot_timeout = provider.i64_or("boot-timeout", DEFAULT_BOOT_TIMEOUT);
    let image_upload_timeout =
        provider.i64_or("image-upload-timeout", DEFAULT_IMAGE_UPLOAD_TIMEOUT);
    let launch_timeout = provider.i64_or("launch-timeout", DEFAULT_LAUNCH_TIMEOUT);
    let launch_retries = provider.i64_or("launch-retries", DEFAULT_LAUNCH_RETRIES);
    let nodepool_id = provider.opt_str("nodepool-id");
    let rate = provider
        .take("rate")
        .and_then(|item| coerce_float(&item))
        .unwrap_or(DEFAULT_RATE);
    let image_name_format = provider.str_or("image-name-format", DEFAULT_IMAGE_NAME_FORMAT);
    let clean_floating_ips = provider.opt_bool("clean-floating-ips");
    let port_cleanup_interval =
        provider.i64_or("port-cleanup-interval", DEFAULT_PORT_CLEANUP_INTERVAL);
    let post_upload_hook = provider.opt_str("post-upload-hook");

    let diskimages = unique_entries(provider, "diskimages", read_diskimage);
    let cloud_images = unique_entries(provider, "cloud-images", read_cloud_image);
    let pools = {
        let known = Images {
            diskimages: &diskimages,
            cloud_images: &cloud_images,
        };
        unique_entries(provider, "pools", |pool| read_pool(pool, &known))
    };

    OpenStackConfig {
        name: common.name.clone(),
        cloud,
        region_name,
        max_concurrency: common.max_concurrency,
        priority: common.priority,
        boot_timeout,
        launch_timeout,
        launch_retries,
        image_upload_timeout,
        nodepool_id,
        rate,
        image_name_format,
        clean_floating_ips,
        port_cleanup_interval,
        post_upload_hook,
        image_format: DEFAULT_IMAGE_FORMAT.to_string(),
        diskimages,
        cloud_images,
        pools,
    }
}

/// The common view of an openstack-schema provider: limits, timeouts,
/// diskimages with the format the cloud takes, pools and their labels.
/// `driver_config` is stored as is (an `Arc<OpenStackConfig>` for the
/// openstack driver; the fake driver may wrap it in its own type).
///
/// Labels booting a `diskimage` leave `username`, `python_path` and
/// `shell_type` unset: upstream takes them from the top-level diskimage,
/// which a driver does not see.
pub fn openstack_provider_view(
    common: ProviderCommon,
    config: &OpenStackConfig,
    driver_config: Arc<dyn DriverConfig>,
) -> ProviderConfig {
    let pools = config
        .pools
        .iter()
        .map(|pool| pool_view(pool, config, &common))
        .collect();
    let mut view = common.into_config(driver_config);
    view.launch_retries = config.launch_retries;
    view.boot_timeout = config.boot_timeout as f64;
    view.launch_timeout = config.launch_timeout as f64;
    view.rate = config.rate;
    view.post_upload_hook = config.post_upload_hook.clone();
    view.diskimages = config
        .diskimages
        .iter()
        .map(|d| ProviderDiskImage {
            name: d.name.clone(),
            format: config.image_format.clone(),
            pause: d.pause,
            meta: d
                .meta
                .iter()
                .map(|(k, v)| (k.clone(), json_text(v)))
                .collect(),
        })
        .collect();
    view.pools = pools;
    view
}

fn pool_view(
    pool: &OpenStackPool,
    config: &OpenStackConfig,
    common: &ProviderCommon,
) -> PoolConfig {
    let labels = pool
        .labels
        .iter()
        .map(|label| label_view(label, config))
        .collect();
    let mut view = PoolCommon {
        max_servers: pool.max_servers,
        node_attributes: pool.node_attributes.clone(),
        priority: pool.priority,
    }
    .into_pool(pool.name.clone(), common);
    view.max_cores = pool.max_cores;
    view.max_ram = pool.max_ram;
    view.ignore_provider_quota = pool.ignore_provider_quota;
    // Upstream adds these to the pool's limits only when set and not 0
    // (`if getattr(self.pool, 'max_volumes', None)`): 0 is unlimited.
    for (name, limit) in [
        ("volumes", pool.max_volumes),
        ("volume-gb", pool.max_volume_gb),
    ] {
        if let Some(limit) = limit.filter(|l| *l != 0) {
            view.max_resources.insert(name.to_string(), limit);
        }
    }
    view.labels = labels;
    view
}

fn label_view(label: &OpenStackLabel, config: &OpenStackConfig) -> PoolLabel {
    let mut view = PoolLabel {
        name: label.name.clone(),
        host_key_checking: label.host_key_checking,
        ..PoolLabel::default()
    };
    match &label.image {
        LabelImage::DiskImage(name) => {
            view.diskimage = Some(name.clone());
            if let Some(image) = config.diskimage(name) {
                view.connection_type = Some(image.connection_type.clone());
                view.connection_port = Some(image.connection_port);
            }
        }
        LabelImage::CloudImage(name) => {
            view.cloud_image = Some(name.clone());
            if let Some(image) = config.cloud_image(name) {
                view.username = image.username.clone();
                view.python_path = Some(image.python_path.clone());
                view.shell_type = image.shell_type.clone();
                view.connection_type = Some(image.connection_type.clone());
                view.connection_port = Some(image.connection_port);
            }
        }
    }
    view
}

/// A JSON value as the text a cloud property gets (strings unquoted).
fn json_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Upstream's `v.Coerce(float)`: a number, or a string holding one.
fn coerce_float(item: &Item<'_>) -> Option<f64> {
    if let Some(text) = item.node().as_str() {
        return match text.trim().parse::<f64>() {
            Ok(value) => Some(value),
            Err(_) => {
                item.error(format!("expected a number, found string {text:?}"));
                None
            }
        };
    }
    item.as_f64()
}

/// Something with a `name` that must be unique in its list.
pub(crate) trait Named {
    fn name(&self) -> &str;
}

impl Named for OpenStackDiskImage {
    fn name(&self) -> &str {
        &self.name
    }
}

impl Named for OpenStackCloudImage {
    fn name(&self) -> &str {
        &self.name
    }
}

impl Named for OpenStackPool {
    fn name(&self) -> &str {
        &self.name
    }
}

impl Named for OpenStackLabel {
    fn name(&self) -> &str {
        &self.name
    }
}

/// Read the list of mappings under `key` with `read`. Where a `name`
/// repeats, the last entry is kept and the earlier ones are read (so their
/// mistakes are reported) and dropped with a warning: upstream keeps such
/// entries in a dict by name. Each entry's reader is finished.
pub(crate) fn unique_entries<T: Named>(
    map: &mut MapReader<'_>,
    key: &str,
    mut read: impl FnMut(&mut MapReader<'_>) -> Option<T>,
) -> Vec<T> {
    let entries = map.seq_of_maps(key);
    let superseded = superseded_by_name(&entries);
    let mut out: Vec<T> = Vec::new();
    for (mut entry, superseded) in entries.into_iter().zip(superseded) {
        if let Some(value) = read(&mut entry) {
            if superseded {
                entry.warn(format!(
                    "{:?} appears again later in {key}; the last one is used (as upstream does)",
                    value.name()
                ));
            } else {
                out.push(value);
            }
        }
        entry.finish();
    }
    out
}

fn connection(map: &mut MapReader<'_>) -> (String, i64) {
    let connection_type = map.str_or("connection-type", DEFAULT_CONNECTION_TYPE);
    let connection_port = map
        .opt_i64("connection-port")
        .unwrap_or_else(|| default_connection_port(&connection_type));
    (connection_type, connection_port)
}

fn read_diskimage(map: &mut MapReader<'_>) -> Option<OpenStackDiskImage> {
    let name = map.required_str("name");
    let pause = map.bool_or("pause", false);
    let config_drive = map.opt_bool("config-drive");
    let (connection_type, connection_port) = connection(map);
    let meta = read_json_map(map, "meta");
    Some(OpenStackDiskImage {
        name: name?,
        pause,
        config_drive,
        connection_type,
        connection_port,
        meta,
    })
}

fn read_cloud_image(map: &mut MapReader<'_>) -> Option<OpenStackCloudImage> {
    let name = map.required_str("name");
    let config_drive = map.opt_bool("config-drive");
    let image_id = map.opt_str("image-id");
    let image_name = map.opt_str("image-name");
    if image_id.is_some() && image_name.is_some() {
        if let Some(item) = map.take("image-name") {
            item.error("a cloud image sets at most one of \"image-id\" and \"image-name\"");
        }
    }
    let username = map.opt_str("username");
    let python_path = map.str_or("python-path", DEFAULT_PYTHON_PATH);
    let shell_type = map.opt_str("shell-type");
    let (connection_type, connection_port) = connection(map);
    Some(OpenStackCloudImage {
        name: name?,
        config_drive,
        image_id,
        image_name,
        username,
        python_path,
        shell_type,
        connection_type,
        connection_port,
    })
}

/// A mapping read as JSON values by key; empty when absent.
fn read_json_map(map: &mut MapReader<'_>, key: &str) -> BTreeMap<String, serde_json::Value> {
    match map.opt_json_map(key) {
        Some(serde_json::Value::Object(entries)) => entries.into_iter().collect(),
        _ => BTreeMap::new(),
    }
}

/// The images a provider declares, for checking its labels.
struct Images<'c> {
    diskimages: &'c [OpenStackDiskImage],
    cloud_images: &'c [OpenStackCloudImage],
}

fn read_pool(map: &mut MapReader<'_>, images: &Images<'_>) -> Option<OpenStackPool> {
    let name = map.required_str("name");
    let common = PoolCommon::read(map);
    let max_cores = map.opt_i64("max-cores");
    let max_ram = map.opt_i64("max-ram");
    let max_volumes = map.opt_i64("max-volumes");
    let max_volume_gb = map.opt_i64("max-volume-gb");
    let ignore_provider_quota = map.bool_or("ignore-provider-quota", false);
    let availability_zones = map.str_list("availability-zones");
    let networks = map.str_list("networks");
    let security_groups = map.str_list("security-groups");
    let auto_floating_ip = map.bool_or("auto-floating-ip", true);
    let host_key_checking = map.bool_or("host-key-checking", true);
    let defaults = LabelDefaults {
        networks: &networks,
        host_key_checking,
    };
    let labels = unique_entries(map, "labels", |label| read_label(label, images, &defaults));
    Some(OpenStackPool {
        name: name?,
        max_servers: common.max_servers,
        max_cores,
        max_ram,
        max_volumes,
        max_volume_gb,
        priority: common.priority,
        node_attributes: common.node_attributes,
        ignore_provider_quota,
        availability_zones,
        networks,
        security_groups,
        auto_floating_ip,
        host_key_checking,
        labels,
    })
}

/// What a label inherits from its pool.
struct LabelDefaults<'p> {
    networks: &'p [String],
    host_key_checking: bool,
}

fn read_label(
    map: &mut MapReader<'_>,
    images: &Images<'_>,
    defaults: &LabelDefaults<'_>,
) -> Option<OpenStackLabel> {
    let name = map.required_str("name");
    let image = read_label_image(map, images);
    let min_ram = map.opt_i64("min-ram");
    let flavor_name = map.opt_str("flavor-name");
    if !map.has("min-ram") && !map.has("flavor-name") {
        map.error("a label needs \"min-ram\" or \"flavor-name\" (or both)");
    }
    let key_name = map.opt_str("key-name");
    let console_log = map.bool_or("console-log", false);
    let boot_from_volume = map.bool_or("boot-from-volume", false);
    let volume_size = map.i64_or("volume-size", DEFAULT_VOLUME_SIZE);
    let instance_properties = read_json_map(map, "instance-properties");
    let dynamic_instance_properties = read_json_map(map, "dynamic-instance-properties");
    let userdata = map.opt_str("userdata");
    let networks = map
        .opt_str_list("networks")
        .unwrap_or_else(|| defaults.networks.to_vec());
    let host_key_checking = map.bool_or("host-key-checking", defaults.host_key_checking);
    Some(OpenStackLabel {
        name: name?,
        image: image?,
        min_ram: min_ram.unwrap_or(0),
        flavor_name,
        key_name,
        console_log,
        boot_from_volume,
        volume_size,
        instance_properties,
        dynamic_instance_properties,
        userdata,
        networks,
        host_key_checking,
    })
}

/// Exactly one of `diskimage` / `cloud-image`, naming an image the provider
/// declares.
fn read_label_image(map: &mut MapReader<'_>, images: &Images<'_>) -> Option<LabelImage> {
    let diskimage = map.take("diskimage");
    let cloud_image = map.take("cloud-image");
    match (diskimage, cloud_image) {
        (None, None) => {
            map.error("a label needs one of \"diskimage\" or \"cloud-image\"");
            None
        }
        (Some(_), Some(second)) => {
            second.error("a label sets only one of \"diskimage\" and \"cloud-image\"");
            None
        }
        (Some(item), None) => {
            let name = item.as_str()?;
            if !images.diskimages.iter().any(|d| d.name == name) {
                // Upstream loads it (a provider being drained lists no
                // diskimages); nothing can boot until an upload exists.
                item.warn(format!(
                    "diskimage {name:?} is not in this provider's diskimages: no node of \
                     this label can boot here until it is"
                ));
            }
            Some(LabelImage::DiskImage(name))
        }
        (None, Some(item)) => {
            let name = item.as_str()?;
            if !images.cloud_images.iter().any(|c| c.name == name) {
                item.error(format!(
                    "cloud-image {name:?} is not in this provider's cloud-images"
                ));
            }
            Some(LabelImage::CloudImage(name))
        }
    }
}
