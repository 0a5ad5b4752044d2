//! Building the scheduler's input for one pass: labels and their resources,
//! limits and usage (pool, cloud, tenants), ready nodes, other pools.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, warn};

use super::launch;
use super::nodes::NodeSummary;
use super::pool::{Book, PoolState};
use super::shared::{lock, ProviderRuntime, Shared};
use crate::config::{Config, PoolConfig, ProviderConfig};
use crate::model::json::{JsonObject, JsonValue};
use crate::model::{Component, Node, NodeState};
use crate::provider::{for_each_instance, Provider, Resources};
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
}

/// The resources a node record says it uses.
pub(crate) fn node_resources(node: &Node) -> Option<Resources> {
    let r = node.resources.as_ref()?;
    let get = |k: &str| {
        r.get(k)
            .and_then(JsonValue::as_i64)
            .map(|v| u64::try_from(v).unwrap_or(0))
    };
    Some(Resources {
        instances: get("instances"),
        cores: get("cores"),
        ram: get("ram"),
    })
}

/// Resources as upstream writes them on a node (`{"cores":…, "instances":…,
/// "ram":…}`).
pub(crate) fn resources_json(r: &Resources) -> JsonObject {
    let mut o = JsonObject::new();
    let put = |o: &mut JsonObject, k: &str, v: Option<u64>| {
        if let Some(v) = v {
            o.insert(k, JsonValue::Int(i128::from(v)));
        }
    };
    put(&mut o, "cores", r.cores);
    put(&mut o, "instances", Some(r.instances.unwrap_or(1)));
    put(&mut o, "ram", r.ram);
    o
}

fn add(total: &mut Resources, r: &Resources) {
    let sum = |a: Option<u64>, b: Option<u64>| Some(a.unwrap_or(0) + b.unwrap_or(0));
    total.instances = sum(total.instances, Some(r.instances.unwrap_or(1)));
    total.cores = sum(total.cores, r.cores);
    total.ram = sum(total.ram, r.ram);
}

fn limit(v: Option<i64>) -> Option<u64> {
    v.map(|v| u64::try_from(v).unwrap_or(0))
}

/// Resources one node of `label` in `pool` uses, cached per provider.
pub(crate) async fn label_resources(
    provider: &dyn Provider,
    runtime: &ProviderRuntime,
    pool: &str,
    label: &str,
) -> Result<Resources> {
    let key = (pool.to_string(), label.to_string());
    if let Some(r) = lock(&runtime.label_resources).get(&key) {
        return Ok(*r);
    }
    let r = provider.label_resources(pool, label).await?;
    lock(&runtime.label_resources).insert(key, r);
    Ok(r)
}

/// The cloud's limits minus what instances nodepool does not manage use,
/// cached for `quota_cache_ttl`.
async fn cloud_quota(shared: &Shared, data: &PassData<'_>) -> Result<Resources> {
    let ttl = shared.settings.quota_cache_ttl;
    if let Some((at, q)) = *lock(&data.runtime.quota) {
        if at.elapsed() < ttl {
            return Ok(q);
        }
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
            if !node_id.is_some_and(|id| shared.nodes.contains(id)) {
                candidates.push((node_id.map(str::to_string), instance.resources));
            }
        })
        .await?;
        shared.nodes.sync(&*shared.store).await?;
        let mut unmanaged = Resources::default();
        for (node_id, resources) in &candidates {
            if !node_id
                .as_deref()
                .is_some_and(|id| shared.nodes.contains(id))
            {
                add(&mut unmanaged, resources);
            }
        }
        let sub = |l: Option<u64>, u: Option<u64>| l.map(|l| l.saturating_sub(u.unwrap_or(0)));
        quota = Resources {
            instances: sub(quota.instances, unmanaged.instances),
            cores: sub(quota.cores, unmanaged.cores),
            ram: sub(quota.ram, unmanaged.ram),
        };
    }
    *lock(&data.runtime.quota) = Some((Instant::now(), quota));
    Ok(quota)
}

/// Build the scheduler's input for the `open` requests (in the order they
/// are taken). Problems reading quota or label resources are logged; the
/// affected label is left out (and so declined).
pub(crate) async fn build(
    shared: &Shared,
    state: &PoolState,
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
        if let Some(diskimage) = &label.diskimage {
            match launch::newest_upload(&*shared.store, diskimage, provider_name).await {
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
            .or_else(|| node.labels.first().and_then(|l| labels.get(&**l).copied()))
            .unwrap_or(Resources {
                instances: Some(1),
                ..Resources::default()
            })
    };
    // Nodes our handlers created are counted through their plans instead.
    let created: BTreeSet<&str> = data
        .book
        .active
        .values()
        .flat_map(|a| a.created.iter().map(String::as_str))
        .collect();
    let reserved: BTreeSet<&str> = data
        .book
        .active
        .values()
        .flat_map(|a| a.reused.iter().map(String::as_str))
        .collect();
    let mut pool_used = Resources::default();
    let mut provider_used = Resources::default();
    let mut ready_nodes = Vec::new();
    shared.nodes.with(|nodes| {
        for (id, node) in nodes {
            if !node.provider_is(provider_name) {
                continue;
            }
            let size = size_of(node);
            add(&mut provider_used, &size);
            if !node.pool_is(pool_name) || created.contains(id.as_str()) {
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
    for active in data.book.active.values() {
        for label in &active.launch_labels {
            let size = labels.get(label).copied().unwrap_or_default();
            add(&mut pool_used, &size);
            add(&mut provider_used, &size);
        }
    }

    let label_capacity = pool_label_capacity(shared, data, &reserved).await;

    let caps = data.provider.capabilities();
    let cloud = if caps.quota_query && !data.pool_cfg.ignore_provider_quota {
        match cloud_quota(shared, data).await {
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
        shared.nodes.with(|nodes| {
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
            launcher_id: state.launcher_id.clone(),
            labels,
            limits: Resources {
                instances: limit(data.pool_cfg.max_servers),
                cores: limit(data.pool_cfg.max_cores),
                ram: limit(data.pool_cfg.max_ram),
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

/// The provider's per-label capacity for this pool: counted on the pool's
/// records that no handler has been promised, limited to the pool's labels
/// (a label of another pool is this pool's to decline, not to defer).
///
/// Only providers with a per-label limit (static hosts: few records) get
/// the full records, read for the purpose.
async fn pool_label_capacity(
    shared: &Shared,
    data: &PassData<'_>,
    reserved: &BTreeSet<&str>,
) -> BTreeMap<String, u64> {
    let Some(hosts) = data.provider.registered() else {
        return BTreeMap::new();
    };
    let provider = data.provider_cfg.name.as_str();
    let pool = data.pool_cfg.name.as_str();
    let nodes: Vec<Node> = match shared.store.list_nodes().await {
        Ok(nodes) => nodes
            .into_iter()
            .filter(|n| {
                n.provider.as_deref() == Some(provider)
                    && n.pool.as_deref() == Some(pool)
                    && !reserved.contains(n.id.as_str())
            })
            .collect(),
        Err(e) => {
            warn!(error = %e, "cannot list nodes for the label capacity");
            Vec::new()
        }
    };
    let mut capacity = hosts.label_capacity(&nodes);
    capacity.retain(|label, _| data.pool_cfg.labels.iter().any(|l| &l.name == label));
    capacity
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
