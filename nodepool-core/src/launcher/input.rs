//! Building the scheduler's input for one pass: labels and their resources,
//! limits and usage (pool, cloud, tenants), ready nodes, other pools.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tracing::{debug, warn};

use super::context::{Context, ProviderRuntime};
use super::ledger::Book;
use super::nodes::NodeSummary;
use super::registered;
use crate::builder::newest_ready_upload_in as newest_upload;
use crate::config::{Config, PoolConfig, ProviderConfig};
use crate::model::{Component, NodeState};
use crate::provider::{for_each_instance, OtherResources, Provider, Quantity, Resources};
use crate::scheduler::{
    CloudQuota, LauncherPool, PoolInfo, ReadyNode, RequestInfo, SchedulingInput, TenantUsage,
};
use crate::Result;

/// What a pass read from the store, and the config it runs under.
#[derive(Debug)]
pub(crate) struct PassData<'a> {
    pub(crate) config: &'a Config,
    pub(crate) provider_cfg: &'a ProviderConfig,
    pub(crate) pool_cfg: &'a PoolConfig,
    pub(crate) provider: &'a Arc<dyn Provider>,
    pub(crate) runtime: &'a ProviderRuntime,
    pub(crate) components: &'a [Component],
    pub(crate) book: &'a Book,
    /// Read which labels' images are available (store reads per diskimage
    /// label); an admission, which ignores them, skips it.
    pub(crate) check_images: bool,
}

/// Add what one node uses (`r`, one instance when not told) to `total`.
fn add(total: &mut Resources, r: &Resources) {
    // Saturating: node records come from any writer, with any number.
    let sum = |a: Option<u64>, b: Option<u64>| Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0)));
    total.instances = sum(total.instances, Some(r.instances.unwrap_or(1)));
    total.cores = sum(total.cores, r.cores);
    total.ram = sum(total.ram, r.ram);
    for (name, amount) in r.other.iter() {
        let sum = total.other.get(name).map_or(amount, |t| t.plus(amount));
        total.other.set(name, sum);
    }
}

fn limit(v: Option<i64>) -> Option<u64> {
    v.map(|v| u64::try_from(v).unwrap_or(0))
}

/// Limits of other named resources (`max-resources`, tenant limits).
fn other_limits(limits: impl IntoIterator<Item = (String, i64)>) -> OtherResources {
    limits
        .into_iter()
        .map(|(name, v)| (name, Quantity::Int(v)))
        .collect()
}

/// Resources one node of `label` in `pool` uses, cached per provider.
pub(crate) async fn label_resources(
    provider: &dyn Provider,
    runtime: &ProviderRuntime,
    pool: &str,
    label: &str,
) -> Result<Resources> {
    if let Some(r) = runtime.label_resources(pool, label) {
        return Ok(r);
    }
    let r = provider.label_resources(pool, label).await?;
    runtime.set_label_resources(pool, label, r.clone());
    Ok(r)
}

/// The cloud's limits minus what instances nodepool does not manage use,
/// cached for `quota_cache_ttl`.
async fn cloud_quota(ctx: &Context, data: &PassData<'_>) -> Result<Resources> {
    if let Some(q) = data.runtime.quota(ctx.settings.quota_cache_ttl) {
        return Ok(q);
    }
    let mut quota = data.provider.quota().await?;
    if data.provider.capabilities().instance_listing {
        // Instances not known as ours while walking: their node id (when
        // they carry our provider's) and what they use. Node records are
        // written before their instances, so a node synced after the walk
        // covers every instance of ours it listed; that second look spares
        // an instance created during the walk.
        let mut candidates: Vec<(Option<String>, Resources)> = Vec::new();
        let provider_name = &data.provider_cfg.name;
        for_each_instance(&**data.provider, |instance| {
            let node_id = instance.node_id_of(provider_name);
            if !node_id.is_some_and(|id| ctx.nodes.contains(id)) {
                candidates.push((node_id.map(str::to_string), instance.resources.clone()));
            }
        })
        .await?;
        ctx.nodes.sync(&*ctx.store).await?;
        let mut unmanaged = Resources::default();
        for (node_id, resources) in &candidates {
            if !node_id.as_deref().is_some_and(|id| ctx.nodes.contains(id)) {
                add(&mut unmanaged, resources);
            }
        }
        let sub = |l: Option<u64>, u: Option<u64>| l.map(|l| l.saturating_sub(u.unwrap_or(0)));
        let other = quota
            .other
            .iter()
            .map(|(name, limit)| {
                let used = unmanaged.other.get(name).unwrap_or(Quantity::Int(0));
                (name.to_string(), limit.minus(used))
            })
            .collect();
        quota = Resources {
            instances: sub(quota.instances, unmanaged.instances),
            cores: sub(quota.cores, unmanaged.cores),
            ram: sub(quota.ram, unmanaged.ram),
            other,
        };
    }
    data.runtime.set_quota(quota.clone());
    Ok(quota)
}

/// Build the scheduler's input for the `open` requests (in the order they
/// are taken). Problems reading quota or label resources are logged; the
/// affected label is left out (and so declined).
pub(crate) async fn build(
    ctx: &Context,
    launcher_id: &str,
    data: &PassData<'_>,
    open: Vec<RequestInfo>,
) -> SchedulingInput {
    let pool_name = data.pool_cfg.name.as_str();
    let provider_name = data.provider_cfg.name.as_str();

    let mut labels = BTreeMap::new();
    let mut labels_without_image = BTreeSet::new();
    for label in &data.pool_cfg.labels {
        match label_resources(&**data.provider, data.runtime, pool_name, &label.name).await {
            Ok(r) => {
                labels.insert(label.name.clone(), r);
            }
            Err(e) => {
                warn!(label = %label.name, error = %e, "cannot size label; it is unavailable");
                continue;
            }
        }
        if let Some(diskimage) = label.diskimage.as_ref().filter(|_| data.check_images) {
            match newest_upload(&*ctx.store, diskimage, provider_name).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    labels_without_image.insert(label.name.clone());
                }
                Err(e) => {
                    debug!(label = %label.name, error = %e, "cannot read uploads");
                    labels_without_image.insert(label.name.clone());
                }
            }
        }
    }

    // Only ready nodes with a label some open request asks for can be
    // handed out; the others need not be copied into the input.
    let wanted: BTreeSet<&str> = open
        .iter()
        .flat_map(|r| r.labels.iter().map(String::as_str))
        .collect();
    let size_of = |node: &NodeSummary| -> Resources {
        node.resources
            .clone()
            .or_else(|| node.labels.first().and_then(|l| labels.get(&**l).cloned()))
            .unwrap_or(Resources {
                instances: Some(1),
                ..Resources::default()
            })
    };
    // Nodes our handlers created are counted through their plans instead.
    let created = data.book.created_nodes();
    let reserved = data.book.reserved_nodes();
    let mut pool_used = Resources::default();
    let mut provider_used = Resources::default();
    let mut ready_nodes = Vec::new();
    ctx.nodes.with(|nodes| {
        for (id, node) in nodes {
            if !node.provider_is(provider_name) {
                continue;
            }
            // Nodes our handlers created are counted through their plans
            // (below), in the provider's use as in the pool's.
            if created.contains(id.as_str()) {
                continue;
            }
            let size = size_of(node);
            add(&mut provider_used, &size);
            if !node.pool_is(pool_name) {
                continue;
            }
            add(&mut pool_used, &size);
            if node.state == Some(NodeState::Ready)
                && node.allocated_to.is_none()
                && !reserved.contains(id.as_str())
                && node.labels.iter().any(|l| wanted.contains(&**l))
            {
                ready_nodes.push(ReadyNode {
                    id: id.clone(),
                    labels: node.labels.iter().map(|l| l.to_string()).collect(),
                    az: node.az.as_deref().map(str::to_string),
                });
            }
        }
    });
    for label in data.book.launch_labels() {
        let size = labels.get(label).cloned().unwrap_or_default();
        add(&mut pool_used, &size);
        add(&mut provider_used, &size);
    }

    let label_capacity = registered::label_capacity(
        ctx,
        &**data.provider,
        provider_name,
        data.pool_cfg,
        &reserved,
    )
    .await;

    let caps = data.provider.capabilities();
    let cloud = if caps.quota_query && !data.pool_cfg.ignore_provider_quota {
        match cloud_quota(ctx, data).await {
            Ok(limits) => Some(CloudQuota {
                limits,
                used: provider_used,
            }),
            Err(e) => {
                warn!(error = %e, "cannot read the cloud's quota; using pool limits only");
                None
            }
        }
    } else {
        None
    };

    let mut tenants = BTreeMap::new();
    for t in &data.config.tenant_resource_limits {
        let mut used = Resources::default();
        ctx.nodes.with(|nodes| {
            for node in nodes.values() {
                if node.tenant_name.as_deref() == Some(t.tenant_name.as_str()) {
                    if let Some(r) = &node.resources {
                        add(&mut used, r);
                    }
                }
            }
        });
        tenants.insert(
            t.tenant_name.clone(),
            TenantUsage {
                limits: Resources {
                    instances: limit(t.max_servers),
                    cores: limit(t.max_cores),
                    ram: limit(t.max_ram),
                    other: other_limits(t.resource_limits()),
                },
                used,
            },
        );
    }

    let launchers = data.components.iter().filter_map(launcher_pool).collect();

    SchedulingInput {
        pool: PoolInfo {
            provider: provider_name.to_string(),
            pool: pool_name.to_string(),
            launcher_id: launcher_id.to_string(),
            labels,
            limits: Resources {
                instances: limit(data.pool_cfg.max_servers),
                cores: limit(data.pool_cfg.max_cores),
                ram: limit(data.pool_cfg.max_ram),
                other: other_limits(data.pool_cfg.max_resources.clone()),
            },
            used: pool_used,
            cloud,
            labels_without_image,
            label_capacity,
            release_at_quota: data.provider.registered().is_some(),
            priority: data.pool_cfg.priority,
        },
        requests: open,
        ready_nodes,
        tenants,
        launchers,
    }
}

/// A registered pool component as the scheduler sees it.
fn launcher_pool(c: &Component) -> Option<LauncherPool> {
    Some(LauncherPool {
        id: c.id.clone()?,
        provider: c.provider_name.clone().unwrap_or_default(),
        supported_labels: c
            .supported_labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        priority: c.priority.unwrap_or(100),
        paused: c.paused.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_of_nodes_with_huge_resources_saturates() {
        let huge = Resources {
            instances: Some(u64::MAX),
            cores: Some(u64::MAX / 2 + 1),
            ram: Some(i64::MAX as u64),
            ..Resources::default()
        };
        let mut total = Resources::default();
        for _ in 0..3 {
            add(&mut total, &huge);
        }
        assert_eq!(total.instances, Some(u64::MAX));
        assert_eq!(total.cores, Some(u64::MAX));
        assert_eq!(total.ram, Some(u64::MAX));
    }
}
