//! [`K8sProvider`]: namespaces and pods as nodes, for both drivers.
//!
//! A `kubernetes` node is the namespace `<pool>-<node id>` (its external
//! id) holding the `zuul-worker` service account, its token Secret, a role
//! and a role binding, plus for `pod` labels a pod named as the label. An
//! `openshiftpods` node is the pod `<label>-<node id>` in the project named
//! as its pool (external id `<pool>-<label>-<node id>`). Every object
//! carries the nodepool labels, so [`Provider::list_instances_page`] finds
//! them for leak cleanup. Readiness is watched, not polled.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nodepool_core::provider::{
    Instance, InstancePage, InstanceState, LaunchSpec, Provider, ProviderCapabilities, Resources,
};
use nodepool_core::{Error, ErrorKind, Result};
use serde_json::Value;
use tracing::{debug, info, warn};

use super::client::KubeClient;
use super::config::{Flavor, K8sConfig, K8sLabel, LabelType};
use super::error::KubeError;
use super::objects::{self, LABEL_KEY};
use super::quota;

/// The longest single watch; the wait re-reads the object after each.
const WATCH_SLICE: Duration = Duration::from_secs(60);
/// The longest watch of an object that did not exist when it was read
/// (no resource version to start from, so an event just before the watch
/// could be missed): it is read again soon.
const BLIND_WATCH_SLICE: Duration = Duration::from_secs(2);
/// How long a failed launch waits for its namespace to go before it
/// reports the failure (so the retry does not meet the old namespace).
const CLEANUP_WAIT: Duration = Duration::from_secs(60);

/// A `kubernetes` or `openshiftpods` provider.
#[derive(Debug)]
pub struct K8sProvider {
    pub(super) config: Arc<K8sConfig>,
    pub(super) client: KubeClient,
}

impl K8sProvider {
    /// A provider of `config` talking through `client`.
    pub fn new(config: Arc<K8sConfig>, client: KubeClient) -> Self {
        Self { config, client }
    }

    pub(super) fn err(&self, e: KubeError) -> Error {
        e.into_core(&self.config.name)
    }

    fn label(&self, pool: &str, label: &str) -> Result<&K8sLabel> {
        self.config.label(pool, label).ok_or_else(|| {
            Error::cloud(
                &self.config.name,
                ErrorKind::Config,
                format!("pool {pool:?} has no label {label:?}"),
            )
        })
    }

    /// The project and pod name of an openshiftpods external id.
    pub(super) fn split_pod_id<'a>(&self, external_id: &'a str) -> Option<(&'a str, &'a str)> {
        self.config.pools.iter().find_map(|pool| {
            let rest = external_id
                .strip_prefix(pool.name.as_str())?
                .strip_prefix('-')?;
            Some((&external_id[..pool.name.len()], rest))
        })
    }

    /// A bare instance of `object` (its labels as metadata).
    pub(super) fn instance_of(&self, external_id: &str, object: &Value) -> Instance {
        let metadata = objects::labels_of(object);
        let resources = match (metadata.get("nodepool_pool_name"), metadata.get(LABEL_KEY)) {
            (Some(pool), Some(label)) => self
                .config
                .label(pool, label)
                .map(quota::resources_of)
                .unwrap_or_default(),
            _ => Resources::default(),
        };
        let deleting = object.pointer("/metadata/deletionTimestamp").is_some()
            || object.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating");
        Instance {
            external_id: external_id.to_string(),
            state: deleting.then_some(InstanceState::Deleting),
            metadata,
            cloud: self.config.context.clone(),
            resources,
            ..Instance::default()
        }
    }

    async fn create_namespace_node(&self, spec: &LaunchSpec, label: &K8sLabel) -> Result<Instance> {
        let ns = format!("{}-{}", spec.pool, spec.node_id);
        let labels = objects::node_labels(
            label,
            &spec.node_id,
            &self.config.name,
            &spec.pool,
            spec.request.as_ref(),
            &spec.metadata,
        );
        let created = self
            .create_replacing(
                &objects::namespaces_path(),
                &objects::namespace_path(&ns),
                &objects::namespace(&ns, &labels),
                &spec.node_id,
            )
            .await?;
        let restricted = label.kind == LabelType::Pod;
        let rest = async {
            let c = &self.client;
            c.create(
                &objects::core_path(&ns, "serviceaccounts"),
                &objects::service_account(),
            )
            .await?;
            c.create(
                &objects::core_path(&ns, "secrets"),
                &objects::token_secret(),
            )
            .await?;
            c.create(
                &objects::rbac_path(&ns, "roles"),
                &objects::role(restricted),
            )
            .await?;
            c.create(
                &objects::rbac_path(&ns, "rolebindings"),
                &objects::role_binding(&ns, restricted),
            )
            .await?;
            if restricted {
                let pod = objects::pod(&label.name, label, &labels, false);
                c.create(&objects::core_path(&ns, "pods"), &pod).await?;
            }
            Ok::<(), KubeError>(())
        };
        if let Err(e) = rest.await {
            warn!(namespace = %ns, error = %e, "launch failed; deleting the namespace");
            self.remove_and_wait(&ns).await;
            return Err(self.err(e));
        }
        info!(namespace = %ns, "namespace created");
        let mut instance = self.instance_of(&ns, &created);
        instance.state = Some(InstanceState::Building);
        Ok(instance)
    }

    /// Create `body` in `collection`. When an object of the same name is
    /// still going away from this node's earlier attempt (the launcher
    /// deletes a failed attempt's namespace and retries at once), wait for
    /// it to go first, as upstream waits for a failed node's cleanup.
    async fn create_replacing(
        &self,
        collection: &str,
        path: &str,
        body: &Value,
        node_id: &str,
    ) -> Result<Value> {
        match self.client.create(collection, body).await {
            Err(e) if e.code() == Some(409) => {
                let old = self.client.get(path).await.map_err(|e| self.err(e))?;
                let ours_going = old.as_ref().is_some_and(|o| {
                    o.pointer("/metadata/deletionTimestamp").is_some()
                        && objects::labels_of(o)
                            .get("nodepool_node_id")
                            .map(String::as_str)
                            == Some(node_id)
                });
                if !ours_going {
                    return Err(self.err(e));
                }
                info!(path, "waiting for the earlier attempt's object to go");
                self.wait_gone(path).await;
                self.client
                    .create(collection, body)
                    .await
                    .map_err(|e| self.err(e))
            }
            other => other.map_err(|e| self.err(e)),
        }
    }

    /// Wait (at most [`CLEANUP_WAIT`]) until the object at `path` is gone.
    async fn wait_gone(&self, path: &str) {
        let deadline = tokio::time::Instant::now() + CLEANUP_WAIT;
        while tokio::time::Instant::now() < deadline {
            match self.client.get(path).await {
                Ok(None) => return,
                Ok(Some(_)) | Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    async fn remove_and_wait(&self, ns: &str) {
        if let Err(e) = self.client.delete(&objects::namespace_path(ns)).await {
            warn!(namespace = %ns, error = %e, "cannot delete the namespace");
            return;
        }
        self.wait_gone(&objects::namespace_path(ns)).await;
    }

    async fn create_pod_node(&self, spec: &LaunchSpec, label: &K8sLabel) -> Result<Instance> {
        let project = &spec.pool;
        let pod_name = format!("{}-{}", label.name, spec.node_id);
        let labels = objects::node_labels(
            label,
            &spec.node_id,
            &self.config.name,
            &spec.pool,
            spec.request.as_ref(),
            &spec.metadata,
        );
        let body = objects::pod(&pod_name, label, &labels, true);
        let pods = objects::core_path(project, "pods");
        let created = self
            .create_replacing(&pods, &format!("{pods}/{pod_name}"), &body, &spec.node_id)
            .await?;
        let external_id = format!("{project}-{pod_name}");
        info!(pod = %external_id, "pod created");
        let mut instance = self.instance_of(&external_id, &created);
        instance.state = Some(InstanceState::Building);
        instance.interface_ip = Some(pod_name);
        Ok(instance)
    }
}

#[async_trait]
impl Provider for K8sProvider {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn capabilities(&self) -> ProviderCapabilities {
        ProviderCapabilities {
            image_upload: false,
            quota_query: true,
            instance_listing: true,
        }
    }

    async fn label_resources(&self, pool: &str, label: &str) -> Result<Resources> {
        Ok(quota::resources_of(self.label(pool, label)?))
    }

    #[tracing::instrument(skip_all, fields(provider = %self.config.name, node_id = %spec.node_id))]
    async fn create_instance(&self, spec: &LaunchSpec) -> Result<Instance> {
        let label = self.label(&spec.pool, &spec.label)?;
        match self.config.flavor {
            Flavor::Kubernetes => self.create_namespace_node(spec, label).await,
            Flavor::OpenshiftPods => self.create_pod_node(spec, label).await,
        }
    }

    async fn get_instance(&self, external_id: &str) -> Result<Option<Instance>> {
        Ok(self
            .observe(external_id)
            .await
            .map_err(|e| self.err(e))?
            .map(|o| o.instance))
    }

    #[tracing::instrument(skip_all, fields(provider = %self.config.name, external_id = %external_id))]
    async fn delete_instance(&self, external_id: &str) -> Result<()> {
        let path = match self.config.flavor {
            Flavor::Kubernetes => objects::namespace_path(external_id),
            Flavor::OpenshiftPods => match self.split_pod_id(external_id) {
                Some((project, pod)) => format!("{}/{pod}", objects::core_path(project, "pods")),
                None => {
                    warn!(external_id, "not a pod of any pool; nothing to delete");
                    return Ok(());
                }
            },
        };
        self.client.delete(&path).await.map_err(|e| self.err(e))
    }

    async fn list_instances_page(
        &self,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<InstancePage> {
        let selector = format!("nodepool_provider_name={}", self.config.name);
        match self.config.flavor {
            Flavor::Kubernetes => {
                let list = self
                    .client
                    .list(
                        &objects::namespaces_path(),
                        Some(&selector),
                        Some(limit),
                        marker,
                    )
                    .await
                    .map_err(|e| self.err(e))?;
                let instances = list
                    .items
                    .iter()
                    .filter_map(|ns| {
                        let name = ns.pointer("/metadata/name")?.as_str()?;
                        Some(self.instance_of(name, ns))
                    })
                    .collect();
                Ok(InstancePage {
                    instances,
                    next: list.next,
                })
            }
            Flavor::OpenshiftPods => {
                let mut instances = Vec::new();
                for pool in &self.config.pools {
                    let path = objects::core_path(&pool.name, "pods");
                    let list = self
                        .client
                        .list(&path, Some(&selector), None, None)
                        .await
                        .map_err(|e| self.err(e))?;
                    for pod in &list.items {
                        if let Some(name) = pod.pointer("/metadata/name").and_then(Value::as_str) {
                            instances.push(self.instance_of(&format!("{}-{name}", pool.name), pod));
                        }
                    }
                }
                Ok(InstancePage {
                    instances,
                    next: None,
                })
            }
        }
    }

    /// Watches the pod (or the token Secret) until the node is ready, the
    /// pod fails or `timeout` passes; after a broken watch it reads the
    /// objects again and watches from there.
    #[tracing::instrument(skip_all, fields(provider = %self.config.name, external_id = %external_id))]
    async fn wait_active(&self, external_id: &str, timeout: Duration) -> Result<Instance> {
        let deadline = nodepool_core::time::deadline_after(timeout);
        loop {
            let observed = match self.observe(external_id).await {
                Ok(Some(o)) => o,
                Ok(None) => {
                    return Err(Error::cloud(
                        &self.config.name,
                        ErrorKind::NotFound,
                        format!("{external_id} is gone"),
                    ))
                }
                Err(e) if e.kind().is_retryable() => {
                    debug!(error = %e, "cannot read the node's objects; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if tokio::time::Instant::now() >= deadline {
                        return Err(self.err(e));
                    }
                    continue;
                }
                Err(e) => return Err(self.err(e)),
            };
            match (&observed.instance.state, &observed.watch) {
                (Some(InstanceState::Active), _) => return Ok(observed.instance),
                (Some(InstanceState::Error(why)), _) => {
                    return Err(self.err(KubeError::Launch(format!("{external_id}: {why}"))))
                }
                (Some(InstanceState::Deleting), _) => {
                    return Err(
                        self.err(KubeError::Launch(format!("{external_id} is being deleted")))
                    )
                }
                (_, Some(watch)) => {
                    let now = tokio::time::Instant::now();
                    if now >= deadline {
                        return Err(self.err(KubeError::Timeout(format!(
                            "{external_id} is not ready after {}s",
                            timeout.as_secs()
                        ))));
                    }
                    let slice = if watch.2.is_some() {
                        WATCH_SLICE
                    } else {
                        BLIND_WATCH_SLICE
                    };
                    self.next_change(watch, (deadline - now).min(slice)).await;
                }
                (_, None) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }

    async fn quota(&self) -> Result<Resources> {
        Ok(quota::provider_limits(&self.config))
    }
}
