//! Reading a `static` provider mapping into [`StaticConfig`] and the common
//! [`ProviderConfig`] view.

use std::collections::HashSet;
use std::sync::Arc;

use nodepool_core::config::{
    superseded_by_name, DriverConfig, MapReader, PoolCommon, PoolConfig, PoolLabel, ProviderCommon,
    ProviderConfig,
};

use super::config::{
    StaticConfig, StaticNode, StaticPool, DEFAULT_CONNECTION_PORT, DEFAULT_CONNECTION_TYPE,
    DEFAULT_MAX_PARALLEL_JOBS, DEFAULT_PYTHON_PATH, DEFAULT_TIMEOUT, DEFAULT_USERNAME,
};

/// Read the keys of a `static` provider from `provider`, whose common keys
/// (`name`, `driver`, `max-concurrency`, `priority`) core has already
/// consumed into `common`.
///
/// Every mistake is recorded in the reader's diagnostics with file, line,
/// column and key path; the returned config then lacks the bad entries and
/// must not be used. Pools and nodes are finished here; the caller finishes
/// `provider`.
pub fn parse_static_provider(
    provider: &mut MapReader<'_>,
    common: &ProviderCommon,
) -> StaticConfig {
    provider.ignore("driver");
    let mut pools: Vec<StaticPool> = Vec::new();
    let mut hosts: HashSet<(String, String, i64)> = HashSet::new();
    let maps = provider.seq_of_maps("pools");
    let superseded = superseded_by_name(&maps);
    for (mut map, superseded) in maps.into_iter().zip(superseded) {
        // Upstream keeps pools in a dict by name: the last one wins. An
        // earlier one is still checked, but its hosts are not registered.
        if superseded {
            if let Some(pool) = read_pool(&mut map, &mut HashSet::new()) {
                map.warn(format!(
                    "{:?} appears again later in pools; the last one is used (as upstream does)",
                    pool.name
                ));
            }
        } else if let Some(pool) = read_pool(&mut map, &mut hosts) {
            pools.push(pool);
        }
        map.finish();
    }
    StaticConfig {
        name: common.name.clone(),
        max_concurrency: common.max_concurrency,
        priority: common.priority,
        pools,
    }
}

/// The common view of a static provider. Its pools offer every label one
/// of their nodes carries; a pool label's `username`, `connection-type`,
/// `connection-port`, `python-path` and `shell-type` are set when all the
/// nodes carrying it agree (each node's own values are in
/// [`StaticNode`]), and `host-key-checking` is on when any of them checks.
/// A static provider has no launch timeouts nor rate (`rate` is 0).
pub fn static_provider_view(
    common: ProviderCommon,
    config: &StaticConfig,
    driver_config: Arc<dyn DriverConfig>,
) -> ProviderConfig {
    let pools = config
        .pools
        .iter()
        .map(|pool| pool_view(pool, &common))
        .collect();
    let mut view = common.into_config(driver_config);
    view.rate = 0.0;
    view.pools = pools;
    view
}

fn pool_view(pool: &StaticPool, common: &ProviderCommon) -> PoolConfig {
    let labels = pool
        .labels()
        .into_iter()
        .map(|label| {
            let nodes: Vec<&StaticNode> = pool
                .nodes
                .iter()
                .filter(|n| n.labels.iter().any(|l| l == label))
                .collect();
            PoolLabel {
                name: label.to_string(),
                username: agreed(&nodes, |n| Some(n.username.clone())),
                python_path: agreed(&nodes, |n| Some(n.python_path.clone())),
                shell_type: agreed(&nodes, |n| n.shell_type.clone()),
                connection_type: agreed(&nodes, |n| Some(n.connection_type.clone())),
                connection_port: agreed(&nodes, |n| Some(n.connection_port)),
                host_key_checking: nodes.iter().any(|n| n.host_key_checking),
                ..PoolLabel::default()
            }
        })
        .collect();
    let mut view = PoolCommon {
        max_servers: pool.max_servers,
        node_attributes: pool.node_attributes.clone(),
        priority: pool.priority,
    }
    .into_pool(pool.name.clone(), common);
    view.labels = labels;
    view
}

/// The value every node has, if they all have the same one.
fn agreed<T: PartialEq>(
    nodes: &[&StaticNode],
    get: impl Fn(&StaticNode) -> Option<T>,
) -> Option<T> {
    let mut values = nodes.iter().map(|n| get(n));
    let first = values.next()??;
    values.all(|v| v.as_ref() == Some(&first)).then_some(first)
}

fn read_pool(
    map: &mut MapReader<'_>,
    hosts: &mut HashSet<(String, String, i64)>,
) -> Option<StaticPool> {
    let name = map.required_str("name");
    let common = PoolCommon::read(map);
    let mut nodes = Vec::new();
    for mut node_map in map.seq_of_maps("nodes") {
        if let Some(node) = read_node(&mut node_map) {
            let key = (
                node.name.clone(),
                node.username.clone(),
                node.connection_port,
            );
            if hosts.insert(key) {
                nodes.push(node);
            } else {
                // Upstream loads this and syncs the host once per pool;
                // one host is one set of slots here.
                node_map.warn(format!(
                    "host {:?} with username {:?} and connection-port {} appears more than \
                     once in this provider; only its first entry is used",
                    node.name, node.username, node.connection_port
                ));
            }
        }
        node_map.finish();
    }
    Some(StaticPool {
        name: name?,
        max_servers: common.max_servers,
        priority: common.priority,
        node_attributes: common.node_attributes,
        nodes,
    })
}

fn read_node(map: &mut MapReader<'_>) -> Option<StaticNode> {
    let name = map.required_str("name");
    let labels = map
        .required("labels")
        .and_then(|item| item.as_str_or_list())
        .map(|labels| {
            labels
                .iter()
                .flat_map(|l| l.split_whitespace())
                .map(str::to_string)
                .collect::<Vec<_>>()
        });
    let username = map.str_or("username", DEFAULT_USERNAME);
    let timeout = map.i64_or("timeout", DEFAULT_TIMEOUT);
    let host_key_checking = map.bool_or("host-key-checking", true);
    let host_keys = map
        .take("host-key")
        .and_then(|item| item.as_str_or_list())
        .unwrap_or_default();
    let connection_port = read_port(map);
    let connection_type = map.str_or("connection-type", DEFAULT_CONNECTION_TYPE);
    let shell_type = map.opt_str("shell-type");
    let max_parallel_jobs = map.i64_or("max-parallel-jobs", DEFAULT_MAX_PARALLEL_JOBS);
    let python_path = map.str_or("python-path", DEFAULT_PYTHON_PATH);
    Some(StaticNode {
        name: name?,
        labels: labels?,
        username,
        timeout,
        host_key_checking,
        host_keys,
        connection_port,
        connection_type,
        shell_type,
        max_parallel_jobs,
        python_path,
    })
}

/// `connection-port`, or the deprecated `ssh-port` (which upstream's
/// launcher still reads, with a warning here), or 22.
fn read_port(map: &mut MapReader<'_>) -> i64 {
    let legacy = map.take("ssh-port");
    let port = map.opt_i64("connection-port");
    let legacy_port = legacy.and_then(|item| {
        item.warn("\"ssh-port\" is deprecated; use \"connection-port\"");
        item.as_i64()
    });
    port.or(legacy_port).unwrap_or(DEFAULT_CONNECTION_PORT)
}
