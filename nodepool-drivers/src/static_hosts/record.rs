//! The node records of static hosts: how a host is identified in the store,
//! what a registered record holds (upstream's `registerNodeFromConfig`),
//! how a host is checked before registration (`checkHost`), and the
//! per-label capacity of a static provider (`getLabelQuota`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use nodepool_core::model::json::{JsonObject, JsonValue};
use nodepool_core::model::{Node, NodeState};
use tokio::time::timeout;

use super::config::{StaticConfig, StaticNode, StaticPool, DEFAULT_USERNAME};
use super::keyscan::{HostScanner, ScanError, ScanTarget};

/// The `launcher` written on every static node record, as upstream does.
pub const STATIC_LAUNCHER: &str = "static driver";

/// Extra time a probe gets beyond the host's `timeout` before it is cut.
const PROBE_GRACE: Duration = Duration::from_secs(5);

/// A static host as the store identifies it: (host name, user, port),
/// upstream's node tuple.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId {
    /// `name` of the host (the record's `hostname`).
    pub name: String,
    /// `username`.
    pub username: String,
    /// `connection-port`.
    pub port: i64,
}

impl HostId {
    /// The identity of a configured host.
    pub fn of_config(node: &StaticNode) -> Self {
        Self {
            name: node.name.clone(),
            username: node.username.clone(),
            port: node.connection_port,
        }
    }

    /// The identity of a node record (a missing user reads as `zuul`, as
    /// upstream's record decoder does).
    pub fn of_node(node: &Node) -> Self {
        Self {
            name: node.hostname.clone().unwrap_or_default(),
            username: node
                .username
                .clone()
                .unwrap_or_else(|| DEFAULT_USERNAME.to_string()),
            port: node.connection_port,
        }
    }
}

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}", self.username, self.name, self.port)
    }
}

/// Why a static host was not (re-)registered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The host did not answer, or its name does not resolve.
    #[error(transparent)]
    Probe(#[from] ScanError),
    /// `host-key-checking` is on and the host does not offer every key of
    /// its `host-key`.
    #[error("host key mismatch: configured {expected:?}, offered {offered:?}")]
    KeyMismatch {
        /// The configured `host-key` entries.
        expected: Vec<String>,
        /// What the host offered.
        offered: Vec<String>,
    },
    /// `connection-port` is no TCP port.
    #[error("connection-port {port} is not a TCP port")]
    BadPort {
        /// The configured port.
        port: i64,
    },
    /// The store failed while the host's records were written.
    #[error("store error: {0}")]
    Store(#[source] nodepool_core::Error),
}

impl HostError {
    /// Whether the next pass may succeed without a config change (a host
    /// that is down may come back; a wrong key or port stays wrong).
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            HostError::KeyMismatch { .. } | HostError::BadPort { .. }
        )
    }
}

/// A host that could not be (re-)registered, and why.
#[derive(Debug, thiserror::Error)]
#[error("static host {host}: {error}")]
pub struct HostFailure {
    /// The host.
    pub host: HostId,
    /// What went wrong.
    #[source]
    pub error: HostError,
}

/// Whether host keys are gathered for this connection type (upstream: only
/// `ssh` and `network_cli`; other types get a plain TCP check).
pub fn gathers_host_keys(node: &StaticNode) -> bool {
    matches!(node.connection_type.as_str(), "ssh" | "network_cli")
}

fn scan_target(node: &StaticNode) -> Result<ScanTarget, HostError> {
    let port = u16::try_from(node.connection_port).map_err(|_| HostError::BadPort {
        port: node.connection_port,
    })?;
    Ok(ScanTarget {
        host: node.name.clone(),
        port,
        timeout: node.timeout(),
    })
}

/// Run one probe, cut off if the scanner overruns the host's timeout.
async fn bounded<T>(
    node: &StaticNode,
    target: &ScanTarget,
    probe: impl std::future::Future<Output = Result<T, ScanError>>,
) -> Result<T, HostError> {
    let limit = node.timeout() + PROBE_GRACE;
    let source = match timeout(limit, probe).await {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(source)) => source,
        Err(_) => ScanError::Unreachable {
            host: target.host.clone(),
            port: target.port,
            after: limit,
            message: "the probe did not return in time".to_string(),
        },
    };
    Err(HostError::Probe(source))
}

/// Upstream's `checkHost`: the host keys to record for `node`.
///
/// - SSH-like connection with `host-key-checking: false`: the configured
///   `host-key` entries, without contacting the host;
/// - other connection types: a TCP check of the port, no keys;
/// - otherwise a key scan, which must offer every configured key.
pub async fn check_host(
    scanner: &dyn HostScanner,
    node: &StaticNode,
) -> Result<Vec<String>, HostError> {
    let gather = gathers_host_keys(node);
    if gather && !node.host_key_checking {
        return Ok(node.host_keys.clone());
    }
    let target = scan_target(node)?;
    if !gather {
        bounded(node, &target, scanner.check_port(&target)).await?;
        return Ok(Vec::new());
    }
    let offered = bounded(node, &target, scanner.scan_host_keys(&target)).await?;
    if node.host_keys.iter().all(|k| offered.contains(k)) {
        Ok(offered)
    } else {
        Err(HostError::KeyMismatch {
            expected: node.host_keys.clone(),
            offered,
        })
    }
}

/// Upstream's `checkNodeLiveness` probe: with `host-key-checking` on, the
/// port must accept a connection; with it off the host is assumed alive.
pub async fn probe_alive(scanner: &dyn HostScanner, node: &StaticNode) -> Result<(), HostError> {
    if !node.host_key_checking {
        return Ok(());
    }
    let target = scan_target(node)?;
    bounded(node, &target, scanner.check_port(&target)).await
}

/// The address of the host (upstream's `set_node_ip`).
pub async fn resolve_host(
    scanner: &dyn HostScanner,
    node: &StaticNode,
) -> Result<IpAddr, HostError> {
    let target = scan_target(node)?;
    bounded(node, &target, scanner.resolve(&target.host, target.port)).await
}

/// What a host's records must say; compared with registered records.
#[derive(Debug, Clone, PartialEq)]
pub struct HostRecord<'a> {
    /// The provider name.
    pub provider: &'a str,
    /// The pool the host is configured in.
    pub pool: &'a StaticPool,
    /// The host.
    pub host: &'a StaticNode,
    /// Its checked host keys.
    pub host_keys: Vec<String>,
    /// Its resolved address.
    pub address: IpAddr,
}

impl HostRecord<'_> {
    /// A new ready record for `slot`, as upstream's `registerNodeFromConfig`
    /// writes it (`created_time` is the `state_time`, as upstream's store
    /// sets it).
    pub fn new_node(&self, slot: i64) -> Node {
        let mut node = Node::new(NodeState::Ready);
        node.created_time = node.state_time;
        node.provider = Some(self.provider.to_string());
        node.launcher = Some(STATIC_LAUNCHER.to_string());
        node.external_id = Some(self.host.name.clone());
        node.hostname = Some(self.host.name.clone());
        node.interface_ip = Some(self.host.name.clone());
        node.slot = Some(slot);
        self.apply(&mut node);
        node
    }

    /// Set the configured fields on `node`; whether anything changed
    /// (upstream's `updateNodeFromConfig`, which also follows the pool,
    /// its attributes and the address here).
    pub fn apply(&self, node: &mut Node) -> bool {
        let before = node.clone();
        node.pool = Some(self.pool.name.clone());
        node.labels = self.host.labels.clone();
        node.username = Some(self.host.username.clone());
        node.connection_port = self.host.connection_port;
        node.connection_type = Some(self.host.connection_type.clone());
        node.shell_type = self.host.shell_type.clone();
        node.python_path = Some(self.host.python_path.clone());
        node.host_keys = self.host_keys.clone();
        node.attributes = attributes(self.pool);
        match self.address {
            IpAddr::V4(ip) => node.public_ipv4 = Some(ip.to_string()),
            IpAddr::V6(ip) => node.public_ipv6 = Some(ip.to_string()),
        }
        *node != before
    }
}

/// The pool's `node-attributes` as a record's `attributes`.
fn attributes(pool: &StaticPool) -> Option<JsonObject> {
    match pool.node_attributes.clone().map(JsonValue::from) {
        Some(JsonValue::Object(object)) => Some(object),
        _ => None,
    }
}

/// Whether `node` is free for the taking: ready and allocated to nobody.
pub fn is_free(node: &Node) -> bool {
    node.state == Some(NodeState::Ready) && node.allocated_to.is_none()
}

/// How many more nodes of each label the provider can hand out now
/// (upstream's `getLabelQuota`): every label of its pools, with the number
/// of its ready, unallocated records carrying it. Upstream counts ready
/// nodes of every provider here; this counts the provider's own.
pub fn label_capacity(config: &StaticConfig, nodes: &[Node]) -> BTreeMap<String, u64> {
    let mut capacity: BTreeMap<String, u64> = config
        .pools
        .iter()
        .flat_map(|p| p.labels())
        .map(|l| (l.to_string(), 0))
        .collect();
    let mine = nodes
        .iter()
        .filter(|n| n.provider.as_deref() == Some(config.name.as_str()) && is_free(n));
    for node in mine {
        for label in &node.labels {
            if let Some(count) = capacity.get_mut(label) {
                *count += 1;
            }
        }
    }
    capacity
}
