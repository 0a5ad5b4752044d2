//! Reading an `aws` provider mapping into [`AwsConfig`], with upstream's
//! schema: every key upstream's voluptuous schema accepts, every other
//! key reported as unknown with file, line and key path.

use std::collections::BTreeMap;
use std::sync::Arc;

use nodepool_core::config::{
    superseded_by_name, DriverConfig, Item, MapReader, PoolCommon, PoolLabel, ProviderCommon,
    ProviderConfig, ProviderDiskImage,
};

use super::config::{
    default_connection_port, AwsCloudImage, AwsConfig, AwsDiskImage, AwsLabel, AwsPool, Fleet,
    IamInstanceProfile, ImageFilter, ImageSource, ImportMethod, InstanceSpec, LabelImage,
    ALLOCATION_STRATEGIES, DEFAULT_ARCHITECTURE, DEFAULT_BOOT_TIMEOUT,
    DEFAULT_DISKIMAGE_VOLUME_TYPE, DEFAULT_IMAGE_FORMAT, DEFAULT_LAUNCH_RETRIES,
    DEFAULT_LAUNCH_TIMEOUT, DEFAULT_RATE, IMAGE_FORMATS,
};

/// Read the keys of an `aws` provider from `provider` (core has consumed
/// `name`, `driver`, `max-concurrency` and `priority` into `common`).
/// Mistakes are recorded in the reader's diagnostics.
pub fn parse_aws_provider(provider: &mut MapReader<'_>, common: &ProviderCommon) -> AwsConfig {
    provider.ignore("driver");
    let region_name = provider.required_str("region-name").unwrap_or_default();
    let profile_name = provider.opt_str("profile-name");
    let rate = provider.opt_f64("rate").unwrap_or(DEFAULT_RATE);
    if rate <= 0.0 {
        provider.error("rate must be a positive number of operations per second");
    }
    let boot_timeout = provider.i64_or("boot-timeout", DEFAULT_BOOT_TIMEOUT);
    let launch_timeout = provider.i64_or("launch-timeout", DEFAULT_LAUNCH_TIMEOUT);
    let launch_retries = provider.i64_or("launch-retries", DEFAULT_LAUNCH_RETRIES);
    let max_servers = provider.opt_i64("max-servers");
    let max_cores = provider.opt_i64("max-cores");
    let max_ram = provider.opt_i64("max-ram");
    let max_resources = int_map(provider, "max-resources");
    let post_upload_hook = provider.opt_str("post-upload-hook");
    let bucket_name = provider.opt_map("object-storage").and_then(|mut m| {
        let name = m.required_str("bucket-name");
        m.finish();
        name
    });
    let image_format = one_of(provider, "image-format", IMAGE_FORMATS)
        .unwrap_or_else(|| DEFAULT_IMAGE_FORMAT.to_string());
    let image_import_timeout = provider.opt_i64("image-import-timeout");
    let cloud_images = unique_entries(provider, "cloud-images", read_cloud_image);
    let diskimages = unique_entries(provider, "diskimages", read_diskimage);
    if !provider.has("pools") {
        provider.error("missing required key \"pools\"");
    }
    let defaults = ProviderDefaults {
        max_servers,
        max_cores,
        max_ram,
        max_resources: &max_resources,
        cloud_images: &cloud_images,
        diskimages: &diskimages,
    };
    let pools = unique_entries(provider, "pools", |p| read_pool(p, &defaults));
    AwsConfig {
        name: common.name.clone(),
        region_name,
        profile_name,
        rate,
        boot_timeout,
        launch_timeout,
        launch_retries,
        max_concurrency: common.max_concurrency,
        priority: common.priority,
        max_servers,
        max_cores,
        max_ram,
        max_resources,
        post_upload_hook,
        bucket_name,
        image_format,
        image_import_timeout,
        cloud_images,
        diskimages,
        pools,
    }
}

/// The common view of an aws provider for core: limits, timeouts,
/// diskimages, pools and labels with their login details.
pub fn aws_provider_view(
    common: ProviderCommon,
    config: &AwsConfig,
    driver_config: Arc<dyn DriverConfig>,
) -> ProviderConfig {
    let pools = config
        .pools
        .iter()
        .map(|pool| {
            let mut view = PoolCommon {
                max_servers: pool.max_servers,
                node_attributes: pool.node_attributes.clone(),
                priority: pool.priority,
            }
            .into_pool(pool.name.clone(), &common);
            view.max_cores = pool.max_cores;
            view.max_ram = pool.max_ram;
            view.labels = pool
                .labels
                .iter()
                .map(|label| label_view(label, config))
                .collect();
            view
        })
        .collect();
    let mut view = common.into_config(driver_config);
    view.launch_retries = config.launch_retries;
    view.boot_timeout = config.boot_timeout as f64;
    view.launch_timeout = config.launch_timeout as f64;
    // Upstream's `rate` is operations per second; core's is seconds
    // between calls.
    view.rate = if config.rate > 0.0 {
        1.0 / config.rate
    } else {
        0.0
    };
    view.post_upload_hook = config.post_upload_hook.clone();
    view.diskimages = config
        .diskimages
        .iter()
        .map(|d| ProviderDiskImage {
            name: d.name.clone(),
            format: config.image_format.clone(),
            pause: d.pause,
            meta: d.tags.clone(),
        })
        .collect();
    view.pools = pools;
    view
}

fn label_view(label: &AwsLabel, config: &AwsConfig) -> PoolLabel {
    let mut view = PoolLabel {
        name: label.name.clone(),
        host_key_checking: label.host_key_checking,
        ..PoolLabel::default()
    };
    match &label.image {
        LabelImage::CloudImage(name) => {
            view.cloud_image = Some(name.clone());
            if let Some(image) = config.cloud_image(name) {
                view.username = Some(image.username.clone());
                view.python_path = Some(image.python_path.clone());
                view.shell_type = image.shell_type.clone();
                view.connection_type = Some(image.connection_type.clone());
                view.connection_port = Some(image.connection_port);
            }
        }
        LabelImage::DiskImage(name) => {
            view.diskimage = Some(name.clone());
            if let Some(image) = config.diskimage(name) {
                view.username = image.username.clone();
                view.python_path = Some(image.python_path.clone());
                view.shell_type = image.shell_type.clone();
                view.connection_type = Some(image.connection_type.clone());
                view.connection_port = Some(image.connection_port);
            }
        }
        LabelImage::None => {}
    }
    view
}

/// Something with a unique `name` in its list.
trait Named {
    fn name(&self) -> &str;
}

macro_rules! named {
    ($($t:ty),*) => {$(
        impl Named for $t {
            fn name(&self) -> &str {
                &self.name
            }
        }
    )*};
}
named!(AwsCloudImage, AwsDiskImage, AwsPool, AwsLabel);

/// The list of mappings under `key`, read with `read`; a repeated `name`
/// keeps the last entry (upstream keeps these lists in a dict by name).
fn unique_entries<T: Named>(
    map: &mut MapReader<'_>,
    key: &str,
    mut read: impl FnMut(&mut MapReader<'_>) -> Option<T>,
) -> Vec<T> {
    let entries = map.seq_of_maps(key);
    let superseded = superseded_by_name(&entries);
    let mut out = Vec::new();
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

/// A string that must be one of `allowed`.
fn one_of(map: &mut MapReader<'_>, key: &str, allowed: &[&str]) -> Option<String> {
    let item = map.take(key)?;
    let value = item.as_str()?;
    if allowed.contains(&value.as_str()) {
        Some(value)
    } else {
        item.error(format!(
            "{value:?} is not one of {}",
            allowed
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        None
    }
}

/// A mapping of strings to integers (`max-resources`).
fn int_map(map: &mut MapReader<'_>, key: &str) -> BTreeMap<String, i64> {
    let Some(mut inner) = map.opt_map(key) else {
        return BTreeMap::new();
    };
    inner
        .rest()
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.as_i64()?)))
        .collect()
}

/// A tag value as upstream writes it (`str(v)` in Python).
fn tag_text(item: &Item<'_>) -> Option<String> {
    match item.to_json() {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Bool(true) => Some("True".to_string()),
        serde_json::Value::Bool(false) => Some("False".to_string()),
        serde_json::Value::Null => Some("None".to_string()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        other => {
            // Upstream's schema takes any value (`tags: dict`) and writes
            // `str(v)`; a list or mapping is kept as its JSON text.
            item.warn("a tag value that is a list or mapping is written as its JSON text");
            Some(other.to_string())
        }
    }
}

/// A mapping of tags (`tags`, `dynamic-tags`), empty when absent.
fn tag_map(map: &mut MapReader<'_>, key: &str) -> BTreeMap<String, String> {
    let Some(mut inner) = map.opt_map(key) else {
        return BTreeMap::new();
    };
    inner
        .rest()
        .into_iter()
        .filter_map(|(k, v)| Some((k, tag_text(&v)?)))
        .collect()
}

fn connection(map: &mut MapReader<'_>) -> (String, i64) {
    let connection_type = map.str_or("connection-type", "ssh");
    let connection_port = map
        .opt_i64("connection-port")
        .unwrap_or_else(|| default_connection_port(&connection_type));
    (connection_type, connection_port)
}

fn read_image_filter(map: &mut MapReader<'_>) -> Option<ImageFilter> {
    let name = match map.take("name").or_else(|| map.take("Name")) {
        Some(item) => item.as_str(),
        None => {
            map.error("an image filter needs \"name\"");
            None
        }
    };
    let values = match map.take("values").or_else(|| map.take("Values")) {
        Some(item) => item.as_str_list(),
        None => {
            map.error("an image filter needs \"values\"");
            None
        }
    };
    Some(ImageFilter {
        name: name?,
        values: values?,
    })
}

fn read_cloud_image(map: &mut MapReader<'_>) -> Option<AwsCloudImage> {
    let name = map.required_str("name");
    let username = map.required_str("username");
    let image_id = map.take("image-id");
    let filters = map.take("image-filters");
    let source = match (image_id, filters) {
        (Some(_), Some(second)) => {
            second.error("a cloud image sets only one of \"image-id\" and \"image-filters\"");
            None
        }
        (None, None) => {
            map.error("Provide either \"image-filters\", or \"image-id\" keys");
            None
        }
        (Some(id), None) => id.as_str().map(ImageSource::Id),
        (None, Some(filters)) => {
            let mut out = Vec::new();
            for mut entry in filters.as_seq_of_maps().unwrap_or_default() {
                if let Some(filter) = read_image_filter(&mut entry) {
                    out.push(filter);
                }
                entry.finish();
            }
            Some(ImageSource::Filters(out))
        }
    };
    let python_path = map.str_or("python-path", "auto");
    let shell_type = map.opt_str("shell-type");
    let (connection_type, connection_port) = connection(map);
    Some(AwsCloudImage {
        name: name?,
        source: source?,
        username: username?,
        python_path,
        shell_type,
        connection_type,
        connection_port,
    })
}

fn read_diskimage(map: &mut MapReader<'_>) -> Option<AwsDiskImage> {
    let name = map.required_str("name");
    let username = map.opt_str("username");
    let pause = map.bool_or("pause", false);
    let (connection_type, connection_port) = connection(map);
    let python_path = map.str_or("python-path", "auto");
    let shell_type = map.opt_str("shell-type");
    let architecture = map.str_or("architecture", DEFAULT_ARCHITECTURE);
    let ena_support = map.bool_or("ena-support", true);
    let volume_size = map.opt_i64("volume-size");
    let volume_type = map.str_or("volume-type", DEFAULT_DISKIMAGE_VOLUME_TYPE);
    let import_method =
        match one_of(map, "import-method", &["snapshot", "ebs-direct", "image"]).as_deref() {
            Some("ebs-direct") => ImportMethod::EbsDirect,
            Some("image") => ImportMethod::Image,
            _ => ImportMethod::Snapshot,
        };
    let imds_support = match map.take("imds-support") {
        Some(item) if item.is_null() => None,
        Some(item) => {
            let value = item.as_str();
            if value.as_deref().is_some_and(|v| v != "v2.0") {
                item.error("imds-support must be \"v2.0\" or null");
            }
            if value.is_some() && import_method == ImportMethod::Image {
                item.error("IMDSv2 requires 'snapshot' or 'ebs-direct' import method");
            }
            value
        }
        None => None,
    };
    let iops = map.opt_i64("iops");
    let throughput = map.opt_i64("throughput");
    let tags = tag_map(map, "tags");
    Some(AwsDiskImage {
        name: name?,
        pause,
        username,
        python_path,
        shell_type,
        connection_type,
        connection_port,
        architecture,
        ena_support,
        volume_size,
        volume_type,
        import_method,
        imds_support,
        iops,
        throughput,
        tags,
    })
}

/// What pools inherit from their provider and may refer to.
struct ProviderDefaults<'c> {
    max_servers: Option<i64>,
    max_cores: Option<i64>,
    max_ram: Option<i64>,
    max_resources: &'c BTreeMap<String, i64>,
    cloud_images: &'c [AwsCloudImage],
    diskimages: &'c [AwsDiskImage],
}

/// An optional string that may also be written as null.
fn opt_nullable_str(map: &mut MapReader<'_>, key: &str) -> Option<String> {
    let item = map.take(key)?;
    if item.is_null() {
        return None;
    }
    item.as_str()
}

fn read_pool(map: &mut MapReader<'_>, defaults: &ProviderDefaults<'_>) -> Option<AwsPool> {
    let name = map.required_str("name");
    let common = PoolCommon::read(map);
    if !map.has("labels") {
        map.error("missing required key \"labels\"");
    }
    let security_group_id = opt_nullable_str(map, "security-group-id");
    let subnet_id = opt_nullable_str(map, "subnet-id");
    let public_ipv4 = map.opt_bool("public-ipv4");
    let public_ip_address = map.opt_bool("public-ip-address");
    let public_ipv4 = public_ip_address.or(public_ipv4).unwrap_or(true);
    let public_ipv6 = map.bool_or("public-ipv6", false);
    if let Some(item) = map.take("use-internal-ip") {
        item.error(
            "use-internal-ip is not supported by nodepool-rs: upstream nodepool 11 documents \
             it for aws pools but its schema rejects the key, and its aws driver never reads \
             it; remove it",
        );
    }
    let host_key_checking = map.bool_or("host-key-checking", true);
    let max_cores = map.opt_i64("max-cores").or(defaults.max_cores);
    let max_ram = map.opt_i64("max-ram").or(defaults.max_ram);
    let mut max_resources = defaults.max_resources.clone();
    max_resources.extend(int_map(map, "max-resources"));
    let availability_zone = map.opt_str("availability-zone");
    let labels = unique_entries(map, "labels", |label| {
        read_label(
            label,
            defaults,
            host_key_checking,
            availability_zone.is_some(),
        )
    });
    Some(AwsPool {
        name: name?,
        max_servers: common.max_servers.or(defaults.max_servers),
        max_cores,
        max_ram,
        max_resources,
        priority: common.priority,
        node_attributes: common.node_attributes,
        availability_zone,
        subnet_id,
        security_group_id,
        public_ipv4,
        public_ipv6,
        host_key_checking,
        labels,
    })
}

fn read_fleet(item: &Item<'_>) -> Option<Fleet> {
    let mut map = item.as_map()?;
    // Upstream's schema says only `list`; an entry that is no string is
    // accepted as upstream does (and warned about: EC2 will refuse it).
    let instance_types = map.required("instance-types").and_then(|i| {
        let items = i.as_seq()?;
        Some(
            items
                .iter()
                .map(|item| match item.to_json() {
                    serde_json::Value::String(s) => s,
                    other => {
                        item.warn("an instance type that is no string cannot be launched");
                        other.to_string()
                    }
                })
                .collect::<Vec<_>>(),
        )
    });
    let allocation_strategy = match map.required("allocation-strategy") {
        Some(item) => {
            let value = item.as_str();
            if let Some(v) = &value {
                if !ALLOCATION_STRATEGIES.contains(&v.as_str()) {
                    item.error(format!(
                        "{v:?} is not an allocation strategy ({})",
                        ALLOCATION_STRATEGIES.join(", ")
                    ));
                    map.finish();
                    return None;
                }
            }
            value
        }
        None => None,
    };
    map.finish();
    Some(Fleet {
        instance_types: instance_types?,
        allocation_strategy: allocation_strategy?,
    })
}

fn read_iam_profile(item: &Item<'_>) -> Option<IamInstanceProfile> {
    let mut map = item.as_map()?;
    let name = map.opt_str("name");
    let arn = map.opt_str("arn");
    map.finish();
    match (name, arn) {
        (Some(_), Some(_)) => {
            item.error("iam-instance-profile sets only one of \"name\" and \"arn\"");
            None
        }
        (Some(name), None) => Some(IamInstanceProfile::Name(name)),
        (None, Some(arn)) => Some(IamInstanceProfile::Arn(arn)),
        (None, None) => None,
    }
}

fn read_label(
    map: &mut MapReader<'_>,
    defaults: &ProviderDefaults<'_>,
    host_key_checking: bool,
    pool_has_az: bool,
) -> Option<AwsLabel> {
    let name = map.required_str("name");
    let image = match (map.take("cloud-image"), map.take("diskimage")) {
        (Some(_), Some(second)) => {
            second.error("a label sets only one of \"cloud-image\" and \"diskimage\"");
            None
        }
        (Some(item), None) => {
            let image = item.as_str()?;
            if !defaults.cloud_images.iter().any(|c| c.name == image) {
                item.error(format!(
                    "cloud-image {image} does not exist in this provider's cloud-images"
                ));
            }
            Some(LabelImage::CloudImage(image))
        }
        (None, Some(item)) => {
            let image = item.as_str()?;
            if !defaults.diskimages.iter().any(|d| d.name == image) {
                item.error(format!(
                    "diskimage {image} does not exist in this provider's diskimages"
                ));
            }
            Some(LabelImage::DiskImage(image))
        }
        (None, None) => Some(LabelImage::None),
    };
    let instance = match (map.take("instance-type"), map.take("fleet")) {
        (Some(_), Some(second)) => {
            second.error("a label sets only one of \"instance-type\" and \"fleet\"");
            None
        }
        (Some(item), None) => item.as_str().map(InstanceSpec::Type),
        (None, Some(item)) => read_fleet(&item).map(InstanceSpec::Fleet),
        (None, None) => Some(InstanceSpec::None),
    };
    let key_name = map.required_str("key-name");
    let ebs_optimized = map.bool_or("ebs-optimized", false);
    let volume_type = map.opt_str("volume-type");
    let volume_size = map.opt_i64("volume-size");
    let iops = map.opt_i64("iops");
    let throughput = map.opt_i64("throughput");
    let userdata = map.opt_str("userdata");
    let iam_instance_profile = map
        .take("iam-instance-profile")
        .and_then(|i| read_iam_profile(&i));
    let tags = tag_map(map, "tags");
    let dynamic_tags = tag_map(map, "dynamic-tags");
    let use_spot = map.bool_or("use-spot", false);
    let imdsv2 = match map.take("imdsv2") {
        Some(item) if item.is_null() => None,
        Some(item) => {
            let v = item.as_str();
            if v.as_deref()
                .is_some_and(|v| v != "required" && v != "optional")
            {
                item.error("imdsv2 must be \"required\", \"optional\" or null");
            }
            v
        }
        None => None,
    };
    let dedicated_host = map.bool_or("dedicated-host", false);
    if dedicated_host && use_spot {
        map.error("Spot instances can not be used on dedicated hosts");
    }
    if dedicated_host && !pool_has_az {
        map.error("Availability-zone is required for dedicated hosts");
    }
    Some(AwsLabel {
        name: name?,
        image: image?,
        instance: instance?,
        key_name: key_name?,
        ebs_optimized,
        volume_type,
        volume_size,
        iops,
        throughput,
        userdata,
        iam_instance_profile,
        tags,
        dynamic_tags,
        use_spot,
        imdsv2,
        dedicated_host,
        host_key_checking,
    })
}
