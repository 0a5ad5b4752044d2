//! Reading a `kubernetes` or `openshiftpods` provider mapping into
//! [`K8sConfig`] and the common [`ProviderConfig`] view.

use std::collections::BTreeMap;
use std::sync::Arc;

use nodepool_core::config::{
    superseded_by_name, MapReader, PoolCommon, PoolConfig, PoolLabel, ProviderCommon,
    ProviderConfig,
};
use nodepool_core::provider::{OtherResources, Quantity};

use super::config::{
    EnvVar, Flavor, K8sConfig, K8sLabel, K8sLabel as Label, K8sPool, LabelType, DEFAULT_IMAGE_PULL,
    DEFAULT_LAUNCH_RETRIES, DEFAULT_PYTHON_PATH,
};

/// The label keys that describe the container nodepool builds: not allowed
/// with `spec` (upstream's `k8s_label_from_user` schema has none of them).
const CONTAINER_KEYS: &[&str] = &[
    "image",
    "image-pull",
    "image-pull-secrets",
    "python-path",
    "shell-type",
    "cpu",
    "memory",
    "storage",
    "cpu-limit",
    "memory-limit",
    "storage-limit",
    "gpu",
    "gpu-resource",
    "env",
    "node-selector",
    "privileged",
    "scheduler-name",
    "volumes",
    "volume-mounts",
    "extra-resources",
];

/// Read the keys of a provider of `flavor` from `provider` (core has
/// consumed `name`, `driver`, `max-concurrency` and `priority`). Mistakes
/// are recorded in the reader's diagnostics with file, line and key path.
pub fn parse_k8s_provider(
    provider: &mut MapReader<'_>,
    common: &ProviderCommon,
    flavor: Flavor,
) -> K8sConfig {
    provider.ignore("driver");
    let context = match flavor {
        Flavor::Kubernetes => provider.opt_str("context"),
        Flavor::OpenshiftPods => provider.required_str("context"),
    };
    let launch_retries = provider.i64_or("launch-retries", DEFAULT_LAUNCH_RETRIES);
    let max_servers = match flavor {
        Flavor::Kubernetes => provider.opt_i64("max-servers"),
        Flavor::OpenshiftPods => provider.opt_i64("max-pods"),
    };
    if flavor == Flavor::OpenshiftPods {
        if let Some(item) = provider.take("max-servers") {
            item.error(
                "max-servers is not supported by nodepool-rs for openshiftpods providers \
                 (upstream documents it but its schema rejects it): use max-pods",
            );
        }
    }
    let max_cores = provider.opt_i64("max-cores");
    let max_ram = provider.opt_i64("max-ram");
    let max_resources = int_map(provider, "max-resources");
    let provider_limits = Limits {
        max_cores,
        max_ram,
        max_resources: &max_resources,
    };
    let entries = provider
        .required("pools")
        .and_then(|item| item.as_seq_of_maps())
        .unwrap_or_default();
    let superseded = superseded_by_name(&entries);
    let mut pools = Vec::new();
    for (mut entry, superseded) in entries.into_iter().zip(superseded) {
        let pool = read_pool(&mut entry, &provider_limits, flavor);
        if let Some(pool) = pool {
            if superseded {
                entry.warn(format!(
                    "pool {:?} appears again later; the last one is used (as upstream does)",
                    pool.name
                ));
            } else {
                pools.push(pool);
            }
        }
        entry.finish();
    }
    K8sConfig {
        name: common.name.clone(),
        flavor,
        context,
        launch_retries,
        max_servers,
        max_cores,
        max_ram,
        max_resources,
        max_concurrency: common.max_concurrency,
        pools,
    }
}

/// The common view core's engine uses: limits, pools and labels (python
/// path and shell type come from the label; `launch-retries` from the
/// provider).
pub fn k8s_provider_view(common: ProviderCommon, config: &Arc<K8sConfig>) -> ProviderConfig {
    let pools = config
        .pools
        .iter()
        .map(|pool| pool_view(pool, &common))
        .collect();
    let mut view = common.into_config(config.clone());
    view.launch_retries = config.launch_retries;
    view.pools = pools;
    view
}

fn pool_view(pool: &K8sPool, common: &ProviderCommon) -> PoolConfig {
    let mut view = PoolCommon {
        max_servers: pool.max_servers,
        node_attributes: pool.node_attributes.clone(),
        priority: pool.priority,
    }
    .into_pool(pool.name.clone(), common);
    view.max_cores = pool.max_cores;
    view.max_ram = pool.max_ram;
    view.max_resources = pool.max_resources.clone();
    view.labels = pool.labels.iter().map(label_view).collect();
    view
}

fn label_view(label: &K8sLabel) -> PoolLabel {
    PoolLabel {
        name: label.name.clone(),
        python_path: Some(label.python_path.clone()),
        shell_type: label.shell_type.clone(),
        connection_type: Some(
            match label.kind {
                LabelType::Namespace => "namespace",
                LabelType::Pod => "kubectl",
            }
            .to_string(),
        ),
        ..PoolLabel::default()
    }
}

struct Limits<'a> {
    max_cores: Option<i64>,
    max_ram: Option<i64>,
    max_resources: &'a BTreeMap<String, i64>,
}

/// The pool's `default-label-*` values.
struct Defaults {
    cpu: Option<i64>,
    memory: Option<i64>,
    storage: Option<i64>,
    cpu_limit: Option<i64>,
    memory_limit: Option<i64>,
    storage_limit: Option<i64>,
    extra_resources: OtherResources,
}

fn read_pool(map: &mut MapReader<'_>, provider: &Limits<'_>, flavor: Flavor) -> Option<K8sPool> {
    let name = map.required_str("name");
    let common = PoolCommon::read(map);
    let max_cores = map.opt_i64("max-cores").or(provider.max_cores);
    let max_ram = map.opt_i64("max-ram").or(provider.max_ram);
    let mut max_resources = provider.max_resources.clone();
    max_resources.extend(int_map(map, "max-resources"));
    let defaults = Defaults {
        cpu: map.opt_i64("default-label-cpu"),
        memory: map.opt_i64("default-label-memory"),
        storage: map.opt_i64("default-label-storage"),
        cpu_limit: map.opt_i64("default-label-cpu-limit"),
        memory_limit: map.opt_i64("default-label-memory-limit"),
        storage_limit: map.opt_i64("default-label-storage-limit"),
        extra_resources: quantities(map, "default-label-extra-resources"),
    };
    let entries = map
        .required("labels")
        .and_then(|item| item.as_seq_of_maps())
        .unwrap_or_default();
    let superseded = superseded_by_name(&entries);
    let mut labels = Vec::new();
    for (mut entry, superseded) in entries.into_iter().zip(superseded) {
        if let Some(label) = read_label(&mut entry, &defaults, flavor) {
            if !superseded {
                labels.push(label);
            }
        }
        entry.finish();
    }
    Some(K8sPool {
        name: name?,
        max_servers: common.max_servers,
        priority: common.priority,
        node_attributes: common.node_attributes,
        max_cores,
        max_ram,
        max_resources,
        labels,
    })
}

fn read_label(map: &mut MapReader<'_>, defaults: &Defaults, flavor: Flavor) -> Option<Label> {
    let name = map.required_str("name");
    let kind = match flavor {
        // Upstream forces every openshiftpods label to be a pod; its schema
        // has no `type` (finish() reports one as an unknown key).
        Flavor::OpenshiftPods => Some(LabelType::Pod),
        Flavor::Kubernetes => {
            let item = map.required("type");
            match item.as_ref().and_then(|i| i.as_str()).as_deref() {
                Some("namespace") => Some(LabelType::Namespace),
                Some("pod") => Some(LabelType::Pod),
                Some(other) => {
                    if let Some(item) = &item {
                        item.error(format!(
                            "unknown label type {other:?}: expected \"namespace\" or \"pod\""
                        ));
                    }
                    None
                }
                None => None,
            }
        }
    };
    let spec = map.opt_json_map("spec");
    if spec.is_some() {
        // Upstream's schema: a label with `spec` is `k8s_label_from_user`,
        // which has none of the container keys.
        for key in CONTAINER_KEYS {
            if let Some(item) = map.take(key) {
                item.error(format!(
                    "{key:?} is not allowed in a label with \"spec\" (the pod spec is used as \
                     written; only name, type, spec, labels, dynamic-labels and annotations go \
                     with it)"
                ));
            }
        }
    }
    let image = match (flavor, spec.is_some()) {
        (Flavor::OpenshiftPods, false) => map.required_str("image"),
        _ => map.opt_str("image"),
    };
    let image_pull = map.str_or("image-pull", DEFAULT_IMAGE_PULL);
    let image_pull_secrets = match flavor {
        Flavor::OpenshiftPods => json_list(map, "image-pull-secrets").unwrap_or_default(),
        Flavor::Kubernetes => Vec::new(),
    };
    let python_path = map.str_or("python-path", DEFAULT_PYTHON_PATH);
    let shell_type = map.opt_str("shell-type");
    let cpu = map.opt_i64("cpu").or(defaults.cpu);
    let memory = map.opt_i64("memory").or(defaults.memory);
    let storage = map.opt_i64("storage").or(defaults.storage);
    // The limits are the first of: the label's limit, the pool's default
    // limit, the label's request, the pool's default request.
    let cpu_limit = map.opt_i64("cpu-limit").or(defaults.cpu_limit).or(cpu);
    let memory_limit = map
        .opt_i64("memory-limit")
        .or(defaults.memory_limit)
        .or(memory);
    let storage_limit = map
        .opt_i64("storage-limit")
        .or(defaults.storage_limit)
        .or(storage);
    let mut extra_resources = defaults.extra_resources.clone();
    for (name, amount) in quantities(map, "extra-resources").iter() {
        extra_resources.set(name, amount);
    }
    let gpu = map.opt_f64("gpu");
    let gpu_resource = map.opt_str("gpu-resource");
    let env = read_env(map);
    let node_selector = map.opt_json_map("node-selector");
    let privileged = map.opt_bool("privileged");
    let scheduler_name = map.opt_str("scheduler-name");
    let volumes = json_list(map, "volumes").map(serde_json::Value::Array);
    let volume_mounts = json_list(map, "volume-mounts").map(serde_json::Value::Array);
    let labels = json_object(map, "labels");
    let dynamic_labels = map.str_map("dynamic-labels");
    let annotations = json_object(map, "annotations");
    Some(Label {
        name: name?,
        kind: kind?,
        spec,
        image,
        image_pull,
        image_pull_secrets,
        python_path,
        shell_type,
        cpu,
        memory,
        storage,
        cpu_limit,
        memory_limit,
        storage_limit,
        extra_resources,
        gpu,
        gpu_resource,
        env,
        node_selector,
        scheduler_name,
        privileged,
        volumes,
        volume_mounts,
        labels,
        dynamic_labels,
        annotations,
    })
}

fn read_env(map: &mut MapReader<'_>) -> Vec<EnvVar> {
    let Some(item) = map.take("env") else {
        return Vec::new();
    };
    let Some(entries) = item.as_seq_of_maps() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for mut entry in entries {
        let name = entry.required_str("name");
        let value = entry.required_str("value");
        entry.finish();
        if let (Some(name), Some(value)) = (name, value) {
            out.push(EnvVar { name, value });
        }
    }
    out
}

/// A mapping of names to integers (`max-resources`, `extra-resources`).
fn int_map(map: &mut MapReader<'_>, key: &str) -> BTreeMap<String, i64> {
    let Some(mut child) = map.opt_map(key) else {
        return BTreeMap::new();
    };
    child
        .rest()
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.as_i64()?)))
        .collect()
}

/// A mapping of names to integers in the order written (`extra-resources`).
fn quantities(map: &mut MapReader<'_>, key: &str) -> OtherResources {
    let Some(mut child) = map.opt_map(key) else {
        return OtherResources::new();
    };
    child
        .rest()
        .into_iter()
        .filter_map(|(k, v)| Some((k, Quantity::Int(v.as_i64()?))))
        .collect()
}

/// A list taken as JSON (`volumes`, `image-pull-secrets`).
fn json_list(map: &mut MapReader<'_>, key: &str) -> Option<Vec<serde_json::Value>> {
    let item = map.take(key)?;
    let items = item.as_seq()?;
    Some(items.iter().map(|i| i.to_json()).collect())
}

/// A mapping taken as JSON (`labels`, `annotations`).
fn json_object(map: &mut MapReader<'_>, key: &str) -> BTreeMap<String, serde_json::Value> {
    match map.opt_json_map(key) {
        Some(serde_json::Value::Object(o)) => o.into_iter().collect(),
        _ => BTreeMap::new(),
    }
}
