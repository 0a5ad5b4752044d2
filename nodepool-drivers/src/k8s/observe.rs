//! Reading a node's objects: what state the node is in, its connection
//! details once ready, and what to watch until it changes.

use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt;
use nodepool_core::provider::{ConnectionDetails, Instance, InstanceState};
use serde_json::{json, Map, Value};
use tracing::debug;

use super::client::{resource_version, WatchEvent};
use super::config::{Flavor, LabelType, WORKER_USER};
use super::error::KubeError;
use super::objects::{self, LABEL_KEY};
use super::provider::K8sProvider;

/// What an instance's objects say, and what to watch for a change.
pub(super) struct Observed {
    pub(super) instance: Instance,
    /// The collection path, field selector and resource version to watch
    /// when the instance is not settled.
    pub(super) watch: Option<(String, String, Option<String>)>,
}

impl K8sProvider {
    /// Look at a node's objects.
    pub(super) async fn observe(
        &self,
        external_id: &str,
    ) -> std::result::Result<Option<Observed>, KubeError> {
        match self.config.flavor {
            Flavor::Kubernetes => self.observe_namespace(external_id).await,
            Flavor::OpenshiftPods => self.observe_project_pod(external_id).await,
        }
    }

    async fn observe_namespace(
        &self,
        ns: &str,
    ) -> std::result::Result<Option<Observed>, KubeError> {
        let Some(object) = self.client.get(&objects::namespace_path(ns)).await? else {
            return Ok(None);
        };
        let mut instance = self.instance_of(ns, &object);
        if instance.state.is_some() {
            return Ok(Some(Observed {
                instance,
                watch: None,
            }));
        }
        let label_name = instance
            .metadata
            .get(LABEL_KEY)
            .cloned()
            .unwrap_or_default();
        let pool = instance
            .metadata
            .get("nodepool_pool_name")
            .cloned()
            .unwrap_or_default();
        let is_pod = match self.config.label(&pool, &label_name) {
            Some(label) => label.kind == LabelType::Pod,
            None => false,
        };
        // The token the API fills into the service account's Secret.
        let secrets = objects::core_path(ns, "secrets");
        let secret = self.client.get(&format!("{secrets}/{WORKER_USER}")).await?;
        let data = secret.as_ref().and_then(|s| s.get("data"));
        let field = |k: &str| data.and_then(|d| d.get(k)).and_then(Value::as_str);
        let (Some(token), Some(ca_crt)) = (field("token"), field("ca.crt")) else {
            instance.state = Some(InstanceState::Building);
            let rv = secret.as_ref().and_then(resource_version);
            let watch = (secrets, format!("metadata.name={WORKER_USER}"), rv);
            return Ok(Some(Observed {
                instance,
                watch: Some(watch),
            }));
        };
        let token = base64::engine::general_purpose::STANDARD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                KubeError::Invalid(format!(
                    "{ns}: the token of secret {WORKER_USER} is not base64 text"
                ))
            })?;
        let creds = self.client.credentials();
        let mut details = Map::new();
        details.insert(
            "name".into(),
            json!(object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or(ns)),
        );
        details.insert("namespace".into(), json!(ns));
        details.insert("host".into(), json!(creds.server));
        details.insert("skiptls".into(), json!(creds.insecure));
        details.insert("token".into(), json!(token));
        details.insert("user".into(), json!(WORKER_USER));
        if !creds.insecure {
            details.insert("ca_crt".into(), json!(ca_crt));
        }
        if !is_pod {
            instance.state = Some(InstanceState::Active);
            instance.connection_type = Some("namespace".into());
            instance.connection_details = Some(ConnectionDetails::from_serde(details));
            return Ok(Some(Observed {
                instance,
                watch: None,
            }));
        }
        let pods = objects::core_path(ns, "pods");
        let pod = self.client.get(&format!("{pods}/{label_name}")).await?;
        let watch = (
            pods,
            format!("metadata.name={label_name}"),
            pod.as_ref().and_then(resource_version),
        );
        details.insert("pod".into(), json!(label_name));
        instance.interface_ip = Some(label_name.clone());
        instance.connection_type = Some("kubectl".into());
        Ok(Some(self.pod_state(instance, pod.as_ref(), details, watch)))
    }

    async fn observe_project_pod(
        &self,
        external_id: &str,
    ) -> std::result::Result<Option<Observed>, KubeError> {
        let Some((project, pod_name)) = self.split_pod_id(external_id) else {
            return Ok(None);
        };
        let pods = objects::core_path(project, "pods");
        let Some(pod) = self.client.get(&format!("{pods}/{pod_name}")).await? else {
            return Ok(None);
        };
        let mut instance = self.instance_of(external_id, &pod);
        instance.interface_ip = Some(pod_name.to_string());
        if instance.state.is_some() {
            return Ok(Some(Observed {
                instance,
                watch: None,
            }));
        }
        let creds = self.client.credentials();
        let mut details = Map::new();
        details.insert("pod".into(), json!(pod_name));
        details.insert("namespace".into(), json!(project));
        details.insert("host".into(), json!(creds.server));
        details.insert("ca_crt".into(), json!(creds.ca_base64()));
        details.insert("skiptls".into(), json!(creds.insecure));
        details.insert(
            "token".into(),
            json!(creds.token.as_ref().map(|t| t.expose().to_string())),
        );
        details.insert("user".into(), json!(WORKER_USER));
        instance.connection_type = Some("kubectl".into());
        let watch = (
            pods,
            format!("metadata.name={pod_name}"),
            resource_version(&pod),
        );
        Ok(Some(self.pod_state(instance, Some(&pod), details, watch)))
    }

    /// The instance of a pod node by the pod's phase.
    fn pod_state(
        &self,
        mut instance: Instance,
        pod: Option<&Value>,
        details: Map<String, Value>,
        watch: (String, String, Option<String>),
    ) -> Observed {
        let phase = pod
            .and_then(|p| p.pointer("/status/phase"))
            .and_then(Value::as_str)
            .unwrap_or("Pending");
        instance.host_id = pod
            .and_then(|p| p.pointer("/spec/nodeName"))
            .and_then(Value::as_str)
            .map(str::to_string);
        match phase {
            "Running" => {
                instance.state = Some(InstanceState::Active);
                instance.connection_details = Some(ConnectionDetails::from_serde(details));
                Observed {
                    instance,
                    watch: None,
                }
            }
            "Failed" | "Succeeded" => {
                instance.state = Some(InstanceState::Error(format!("the pod is {phase}")));
                Observed {
                    instance,
                    watch: None,
                }
            }
            _ => {
                instance.state = Some(InstanceState::Building);
                Observed {
                    instance,
                    watch: Some(watch),
                }
            }
        }
    }

    /// Watch for the next change of what `watch` names, for at most
    /// `limit`. Returns when an event arrives, the watch ends or breaks (the
    /// caller then reads the objects again: a re-list).
    pub(super) async fn next_change(
        &self,
        watch: &(String, String, Option<String>),
        limit: Duration,
    ) {
        let (path, field, rv) = watch;
        let stream = match self
            .client
            .watch(path, Some(field), rv.as_deref(), limit)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                debug!(error = %e, "watch failed; reading again");
                tokio::time::sleep(Duration::from_secs(1).min(limit)).await;
                return;
            }
        };
        let mut stream = std::pin::pin!(stream);
        let deadline = nodepool_core::time::deadline_after(limit);
        loop {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(Ok(WatchEvent::Bookmark(_)))) => continue,
                Ok(Some(Ok(WatchEvent::Object { .. }))) => return,
                Ok(Some(Ok(WatchEvent::Error(code)))) => {
                    debug!(code, "watch error event; reading again");
                    return;
                }
                Ok(Some(Err(e))) => {
                    debug!(error = %e, "watch broke; reading again");
                    return;
                }
                Ok(None) | Err(_) => return,
            }
        }
    }
}
