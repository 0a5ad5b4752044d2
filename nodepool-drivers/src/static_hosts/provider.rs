//! [`StaticProvider`]: the static driver's [`Provider`], and the entry
//! points the launcher calls to keep the provider's node records in step
//! with its configuration ([`StaticProvider::sync`],
//! [`StaticProvider::check_node_liveness`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use nodepool_core::model::Node;
use nodepool_core::provider::{
    Instance, InstancePage, InstanceState, LaunchSpec, Provider, ProviderCapabilities,
    RegisteredHosts, Resources,
};
use nodepool_core::store::{LockTarget, NodeStore};
use nodepool_core::{Error, ErrorKind, Result};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use super::config::{StaticConfig, StaticNode, StaticPool};
use super::keyscan::{HostScanner, SshKeyscan};
use super::record::{
    check_host, is_free, label_capacity, probe_alive, resolve_host, HostError, HostId,
};
use super::sync::{StaticSync, SyncMode, SyncReport};

/// A configured `static` provider: existing hosts, registered by the
/// provider itself as ready node records (`max-parallel-jobs` per host).
///
/// Nodes are not launched: [`Provider::create_instance`] hands out a
/// configured host carrying the label (after checking it), and
/// [`Provider::delete_instance`] is a no-op, since the host goes back to the
/// pool when [`sync`](Self::sync) registers its slot again. It answers
/// [`Provider::registered`] with itself ([`RegisteredHosts`]); no
/// capability is set, so listing, quota and images return
/// [`Error::Unsupported`]. One node uses one instance, no
/// cores and no RAM, as upstream counts it.
#[derive(Debug)]
pub struct StaticProvider {
    config: Arc<StaticConfig>,
    scanner: Arc<dyn HostScanner>,
    /// Serialises passes (upstream's `_register_lock`); true once a full
    /// pass ran.
    pass: Mutex<bool>,
}

impl StaticProvider {
    /// A provider for `config`, probing hosts with `ssh-keyscan`.
    pub fn new(config: Arc<StaticConfig>) -> Self {
        Self::with_scanner(config, Arc::new(SshKeyscan::default()))
    }

    /// A provider for `config`, probing hosts with `scanner`.
    pub fn with_scanner(config: Arc<StaticConfig>, scanner: Arc<dyn HostScanner>) -> Self {
        Self {
            config,
            scanner,
            pass: Mutex::new(false),
        }
    }

    /// The provider's configuration.
    pub fn config(&self) -> &StaticConfig {
        &self.config
    }

    /// Bring the store's records of this provider in step with the config.
    ///
    /// The first call runs a [`SyncMode::Full`] pass (upstream's start: every
    /// host is checked, free records are updated), later calls a
    /// [`SyncMode::Periodic`] one (only hosts with an empty slot are
    /// contacted). Call it when the provider starts (a new provider is made
    /// for every config change), periodically, and whenever one of its
    /// records becomes `used` or is deleted: `used` records are deleted and
    /// their slots registered again. Passes never overlap.
    pub async fn sync(&self, store: &dyn NodeStore) -> Result<SyncReport> {
        let mut full_done = self.pass.lock().await;
        let mode = if *full_done {
            SyncMode::Periodic
        } else {
            SyncMode::Full
        };
        let report = StaticSync::new(&self.config, self.scanner.as_ref(), store)
            .run(mode)
            .await?;
        *full_done = true;
        Ok(report)
    }

    /// Run a pass of the given kind (see [`sync`](Self::sync)).
    pub async fn sync_with(&self, store: &dyn NodeStore, mode: SyncMode) -> Result<SyncReport> {
        let mut full_done = self.pass.lock().await;
        let report = StaticSync::new(&self.config, self.scanner.as_ref(), store)
            .run(mode)
            .await?;
        *full_done |= mode == SyncMode::Full;
        Ok(report)
    }

    /// Whether a ready record may be handed to a request (upstream's
    /// `checkReusableNode`): its host is still configured and, with
    /// `host-key-checking` on, accepts connections. A record that fails is
    /// deleted when it is still free and unlocked; the next
    /// [`sync`](Self::sync) registers it again once the host answers.
    pub async fn check_node_liveness(&self, store: &dyn NodeStore, node: &Node) -> Result<bool> {
        let id = HostId::of_node(node);
        let Some((_, host)) = self.host(&id) else {
            return Ok(false);
        };
        let Err(error) = probe_alive(self.scanner.as_ref(), host).await else {
            return Ok(true);
        };
        warn!(node_id = %node.id, %error, "static node failed its liveness check");
        let _pass = self.pass.lock().await;
        let handle = match store
            .lock(&LockTarget::Node(node.id.clone()), &Default::default())
            .await
        {
            Ok(handle) => handle,
            Err(Error::LockHeld { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let result = match store.get_node(&node.id).await {
            Ok(Some(current)) if is_free(&current) => store.delete_node(&node.id).await,
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        let _ = store.unlock(&handle).await;
        result.map(|()| {
            info!(node_id = %node.id, "deregistered unreachable static node");
            false
        })
    }

    /// How many more nodes of each label the provider can hand out now:
    /// the free ready records per label, 0 for its other labels (upstream's
    /// per-label quota; the scheduler's `label_capacity`).
    pub fn label_capacity(&self, nodes: &[Node]) -> BTreeMap<String, u64> {
        label_capacity(&self.config, nodes)
    }

    fn host(&self, id: &HostId) -> Option<(&StaticPool, &StaticNode)> {
        self.config
            .nodes()
            .find(|(_, host)| HostId::of_config(host) == *id)
    }

    fn unsupported(&self, operation: &'static str) -> Error {
        Error::Unsupported {
            provider: self.config.name.clone(),
            operation,
        }
    }

    /// The instance view of a configured host.
    fn instance(
        &self,
        host: &StaticNode,
        host_keys: Vec<String>,
        address: Option<IpAddr>,
    ) -> Instance {
        Instance {
            external_id: host.name.clone(),
            state: Some(InstanceState::Active),
            interface_ip: Some(host.name.clone()),
            public_ipv4: address.filter(IpAddr::is_ipv4).map(|a| a.to_string()),
            public_ipv6: address.filter(IpAddr::is_ipv6).map(|a| a.to_string()),
            resources: node_resources(),
            host_keys,
            connection_port: u16::try_from(host.connection_port).ok(),
            ..Instance::default()
        }
    }
}

/// What one static node uses: one instance, no cores, no RAM.
fn node_resources() -> Resources {
    Resources {
        instances: Some(1),
        cores: Some(0),
        ram: Some(0),
        ..Resources::default()
    }
}

#[async_trait]
impl Provider for StaticProvider {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn capabilities(&self) -> ProviderCapabilities {
        ProviderCapabilities::default()
    }

    async fn label_resources(&self, pool: &str, label: &str) -> Result<Resources> {
        let known = self
            .config
            .pool(pool)
            .is_some_and(|p| p.labels().contains(&label));
        if known {
            Ok(node_resources())
        } else {
            Err(Error::NotFound {
                kind: "static pool label",
                id: format!("{}/{pool}/{label}", self.config.name),
            })
        }
    }

    /// Hand out the first configured host of `spec.pool` carrying
    /// `spec.label` that passes its check (key scan when SSH with
    /// `host-key-checking`); its instance id is the host name.
    async fn create_instance(&self, spec: &LaunchSpec) -> Result<Instance> {
        let candidates: Vec<&StaticNode> = self
            .config
            .pool(&spec.pool)
            .map(|p| {
                p.nodes
                    .iter()
                    .filter(|n| n.labels.contains(&spec.label))
                    .collect()
            })
            .unwrap_or_default();
        if candidates.is_empty() {
            return Err(Error::NotFound {
                kind: "static host for label",
                id: format!("{}/{}/{}", self.config.name, spec.pool, spec.label),
            });
        }
        let mut errors = Vec::new();
        for host in candidates {
            let checked = async {
                let keys = check_host(self.scanner.as_ref(), host).await?;
                let address = resolve_host(self.scanner.as_ref(), host).await?;
                Ok::<_, HostError>(self.instance(host, keys, Some(address)))
            };
            match checked.await {
                Ok(mut instance) => {
                    instance.metadata = spec.metadata.clone();
                    return Ok(instance);
                }
                Err(e) => errors.push((host, e)),
            }
        }
        let kind = if errors.iter().any(|(_, e)| e.is_retryable()) {
            ErrorKind::Transient
        } else {
            ErrorKind::Permanent
        };
        let messages: Vec<String> = errors
            .iter()
            .map(|(host, e)| format!("{}: {e}", HostId::of_config(host)))
            .collect();
        Err(Error::Cloud {
            provider: self.config.name.clone(),
            message: format!(
                "no host of label {} in pool {} passed its check: {}",
                spec.label,
                spec.pool,
                messages.join("; ")
            ),
            kind,
            source: None,
        })
    }

    /// A configured host, by name, as an active instance (no network I/O:
    /// the configured host keys, no address).
    async fn get_instance(&self, external_id: &str) -> Result<Option<Instance>> {
        let host = self
            .config
            .nodes()
            .map(|(_, host)| host)
            .find(|host| host.name == external_id);
        Ok(host.map(|h| self.instance(h, h.host_keys.clone(), None)))
    }

    /// Static hosts are never deleted: this succeeds and does nothing.
    async fn delete_instance(&self, _external_id: &str) -> Result<()> {
        Ok(())
    }

    /// Static hosts are not listed (no leaks to find).
    async fn list_instances_page(
        &self,
        _marker: Option<&str>,
        _limit: usize,
    ) -> Result<InstancePage> {
        Err(self.unsupported("list_instances_page"))
    }

    /// The provider is its own [`RegisteredHosts`].
    fn registered(&self) -> Option<&dyn RegisteredHosts> {
        Some(self)
    }
}

#[async_trait]
impl RegisteredHosts for StaticProvider {
    /// A [`SyncMode::Full`] pass when `full`, else [`sync`](Self::sync)
    /// (periodic, or full if none ran yet). Hosts that fail are logged by
    /// the pass and retried by the next one.
    async fn sync_registered(&self, store: &dyn NodeStore, full: bool) -> Result<()> {
        let report = if full {
            self.sync_with(store, SyncMode::Full).await?
        } else {
            self.sync(store).await?
        };
        debug!(
            registered = report.registered.len(),
            updated = report.updated.len(),
            recycled = report.recycled.len(),
            deregistered = report.deregistered.len(),
            deferred = report.deferred.len(),
            failures = report.failures.len(),
            "static provider synchronised"
        );
        Ok(())
    }

    /// [`check_node_liveness`](Self::check_node_liveness).
    async fn node_alive(&self, store: &dyn NodeStore, node: &Node) -> Result<bool> {
        self.check_node_liveness(store, node).await
    }

    /// [`StaticProvider::label_capacity`]: every label of the provider's
    /// pools, with its free ready records.
    fn label_capacity(&self, nodes: &[Node]) -> BTreeMap<String, u64> {
        label_capacity(&self.config, nodes)
    }
}

#[cfg(test)]
mod tests;
