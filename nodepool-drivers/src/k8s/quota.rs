//! What a node counts against quota (upstream's `quotaNeededByLabel`) and
//! the provider's own limits. The launcher's scheduler checks both ahead of
//! a launch, like any driver's: the pool's `max-servers`, `max-cores`,
//! `max-ram` and `max-resources` (the provider's updated by the pool's) as
//! pool limits, the provider's `max-servers`, `max-cores`, `max-ram` and
//! `max-resources` as the provider's quota.

use nodepool_core::provider::{OtherResources, Quantity, Resources};

use super::config::{K8sConfig, K8sLabel};

/// What one node of `label` uses, as upstream's `quotaNeededByLabel`
/// writes it into the node's `resources`: one instance, `cpu` as cores and
/// `memory` as RAM (0 when unset), then `storage` as `ephemeral-storage`,
/// `gpu` as its `gpu-resource` (a float) and the `extra-resources` in
/// their order (a name already listed keeps its place, as a dict update).
pub fn resources_of(label: &K8sLabel) -> Resources {
    let count = |v: Option<i64>| Some(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0));
    let mut other = OtherResources::new();
    if let Some(storage) = label.storage.filter(|s| *s != 0) {
        other.set("ephemeral-storage", Quantity::Int(storage));
    }
    if let (Some(gpu), Some(resource)) = (label.gpu.filter(|g| *g != 0.0), &label.gpu_resource) {
        other.set(resource.as_str(), Quantity::Float(gpu));
    }
    let mut resources = Resources {
        instances: Some(1),
        cores: count(label.cpu),
        ram: count(label.memory),
        other,
    };
    for (name, amount) in label.extra_resources.iter() {
        // Upstream passes these as keyword arguments of its quota object,
        // so `cores` and `ram` among them set those.
        let whole = match amount {
            Quantity::Int(i) => u64::try_from(i).ok(),
            Quantity::Float(_) => None,
        };
        match name {
            "cores" => resources.cores = whole,
            "ram" => resources.ram = whole,
            _ => resources.other.set(name, amount),
        }
    }
    resources
}

/// The provider's own limits (reported as its quota): `max-servers` (or
/// `max-pods`), `max-cores`, `max-ram` and `max-resources`, each across all
/// pools. Unset ones are unlimited.
pub fn provider_limits(config: &K8sConfig) -> Resources {
    let limit = |v: Option<i64>| v.map(|v| u64::try_from(v).unwrap_or(0));
    Resources {
        instances: limit(config.max_servers),
        cores: limit(config.max_cores),
        ram: limit(config.max_ram),
        other: config
            .max_resources
            .iter()
            .map(|(name, v)| (name.clone(), Quantity::Int(*v)))
            .collect(),
    }
}
