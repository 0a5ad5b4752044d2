//! `max-resources`: limits on what the launcher's quota does not count
//! (extra resources, a GPU, ephemeral storage). The provider checks them
//! before it creates a node, from the nodes its listing finds, and refuses
//! with a Quota error (the launcher pauses the pool and tries again).

use std::collections::BTreeMap;

use super::config::{K8sConfig, K8sLabel};

/// What one node of `label` uses beyond instances, cores and RAM:
/// `extra-resources`, `storage` as `ephemeral-storage`, and `gpu` as its
/// `gpu-resource` (as upstream's `quotaNeededByLabel`).
pub fn extra_needs(label: &K8sLabel) -> BTreeMap<String, f64> {
    let mut needs: BTreeMap<String, f64> = BTreeMap::new();
    if let Some(storage) = label.storage.filter(|s| *s != 0) {
        needs.insert("ephemeral-storage".into(), storage as f64);
    }
    if let (Some(gpu), Some(resource)) = (label.gpu.filter(|g| *g != 0.0), &label.gpu_resource) {
        needs.insert(resource.clone(), gpu);
    }
    for (k, v) in &label.extra_resources {
        needs.insert(k.clone(), *v as f64);
    }
    needs
}

/// Add `needs` to `used`.
pub fn add(used: &mut BTreeMap<String, f64>, needs: &BTreeMap<String, f64>) {
    for (k, v) in needs {
        *used.entry(k.clone()).or_default() += v;
    }
}

/// The first limit of `limits` that `used` plus `needs` would pass, as a
/// sentence.
pub fn exceeded(
    limits: &BTreeMap<String, i64>,
    used: &BTreeMap<String, f64>,
    needs: &BTreeMap<String, f64>,
) -> Option<String> {
    needs.iter().find_map(|(resource, need)| {
        let limit = *limits.get(resource)?;
        let total = used.get(resource).copied().unwrap_or(0.0) + need;
        (total > limit as f64)
            .then(|| format!("{resource} would be {total} of max-resources {limit}"))
    })
}

/// Whether any limit of the provider or `pool` applies to `needs` (so the
/// provider must count what its nodes use).
pub fn limited(config: &K8sConfig, pool: &str, needs: &BTreeMap<String, f64>) -> bool {
    let pool_limits = config.pool(pool).map(|p| &p.max_resources);
    needs.keys().any(|k| {
        config.max_resources.contains_key(k) || pool_limits.is_some_and(|l| l.contains_key(k))
    })
}
