//! The typed configuration of `kubernetes` and `openshiftpods` providers,
//! with upstream's defaults. [`parse_k8s_provider`](super::parse_k8s_provider)
//! fills it from a `providers` entry.

use std::any::Any;
use std::collections::BTreeMap;

use nodepool_core::config::DriverConfig;
use nodepool_core::provider::OtherResources;

/// `launch-retries` when not set.
pub const DEFAULT_LAUNCH_RETRIES: i64 = 3;
/// `image-pull` of a label when not set.
pub const DEFAULT_IMAGE_PULL: &str = "IfNotPresent";
/// `python-path` of a label when not set.
pub const DEFAULT_PYTHON_PATH: &str = "auto";
/// The user (ServiceAccount) a node's credentials belong to.
pub const WORKER_USER: &str = "zuul-worker";

/// Which of upstream's two drivers a provider is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `driver: kubernetes`: a namespace per node (with a pod for `pod`
    /// labels).
    Kubernetes,
    /// `driver: openshiftpods`: pods in an existing project per pool.
    OpenshiftPods,
}

/// A provider of either driver.
#[derive(Debug, Clone, PartialEq)]
pub struct K8sConfig {
    /// `name`.
    pub name: String,
    /// Which driver read it.
    pub flavor: Flavor,
    /// `context`: the kubeconfig context (required for openshiftpods;
    /// kubernetes falls back to the current context, then to in-cluster
    /// credentials).
    pub context: Option<String>,
    /// `launch-retries` (default 3).
    pub launch_retries: i64,
    /// `max-servers` (kubernetes) or `max-pods` (openshiftpods): nodes of
    /// the whole provider (`None`: unlimited).
    pub max_servers: Option<i64>,
    /// `max-cores` of the whole provider.
    pub max_cores: Option<i64>,
    /// `max-ram` (MiB) of the whole provider.
    pub max_ram: Option<i64>,
    /// `max-resources` of the whole provider (extra resource names).
    pub max_resources: BTreeMap<String, i64>,
    /// `max-concurrency` (core's common key).
    pub max_concurrency: i64,
    /// `pools`.
    pub pools: Vec<K8sPool>,
}

impl DriverConfig for K8sConfig {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl K8sConfig {
    /// The pool named `name`.
    pub fn pool(&self, name: &str) -> Option<&K8sPool> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// The label `label` of pool `pool`.
    pub fn label(&self, pool: &str, label: &str) -> Option<&K8sLabel> {
        self.pool(pool)?.labels.iter().find(|l| l.name == label)
    }
}

/// One pool. For openshiftpods its `name` is the project the pods go in.
#[derive(Debug, Clone, PartialEq)]
pub struct K8sPool {
    /// `name`.
    pub name: String,
    /// `max-servers` (common pool key).
    pub max_servers: Option<i64>,
    /// `priority` (common pool key).
    pub priority: Option<i64>,
    /// `node-attributes` (common pool key).
    pub node_attributes: Option<serde_json::Value>,
    /// `max-cores` (default: the provider's).
    pub max_cores: Option<i64>,
    /// `max-ram` in MiB (default: the provider's).
    pub max_ram: Option<i64>,
    /// `max-resources`: the provider's, updated by the pool's.
    pub max_resources: BTreeMap<String, i64>,
    /// `labels`.
    pub labels: Vec<K8sLabel>,
}

/// What a label's node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelType {
    /// A namespace with a service account that may do most things in it.
    Namespace,
    /// One pod (in its own namespace for kubernetes).
    Pod,
}

/// An `env` entry of a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    /// `name`.
    pub name: String,
    /// `value`.
    pub value: String,
}

/// One label of a pool, with the pool's `default-label-*` applied.
#[derive(Debug, Clone, PartialEq)]
pub struct K8sLabel {
    /// `name`: also the pod's (kubernetes) or the pod name's prefix
    /// (openshiftpods).
    pub name: String,
    /// `type` (`namespace` or `pod`; openshiftpods: always `pod`).
    pub kind: LabelType,
    /// `spec`: a pod spec used verbatim (then the container keys below are
    /// not allowed).
    pub spec: Option<serde_json::Value>,
    /// `image`.
    pub image: Option<String>,
    /// `image-pull` (default `IfNotPresent`).
    pub image_pull: String,
    /// `image-pull-secrets` (openshiftpods): the pod's `imagePullSecrets`.
    pub image_pull_secrets: Vec<serde_json::Value>,
    /// `python-path` (default `auto`).
    pub python_path: String,
    /// `shell-type`.
    pub shell_type: Option<String>,
    /// `cpu` request (default: the pool's `default-label-cpu`).
    pub cpu: Option<i64>,
    /// `memory` request in MiB.
    pub memory: Option<i64>,
    /// `storage` (ephemeral-storage) request in MB.
    pub storage: Option<i64>,
    /// `cpu-limit` (default: pool's `default-label-cpu-limit`, else `cpu`).
    pub cpu_limit: Option<i64>,
    /// `memory-limit` in MiB.
    pub memory_limit: Option<i64>,
    /// `storage-limit` in MB.
    pub storage_limit: Option<i64>,
    /// `extra-resources`: the pool's `default-label-extra-resources`,
    /// updated by the label's, in the order written; counted for quota
    /// only (nothing is written into the pod).
    pub extra_resources: OtherResources,
    /// `gpu`: amount of `gpu-resource` requested and limited.
    pub gpu: Option<f64>,
    /// `gpu-resource`: the resource name of the GPU (`nvidia.com/gpu`).
    pub gpu_resource: Option<String>,
    /// `env` of the container.
    pub env: Vec<EnvVar>,
    /// `node-selector` of the pod.
    pub node_selector: Option<serde_json::Value>,
    /// `scheduler-name` of the pod.
    pub scheduler_name: Option<String>,
    /// `privileged`: the container's `securityContext.privileged`.
    pub privileged: Option<bool>,
    /// `volumes` of the pod.
    pub volumes: Option<serde_json::Value>,
    /// `volume-mounts` of the container.
    pub volume_mounts: Option<serde_json::Value>,
    /// `labels`: Kubernetes labels of the namespace and pod.
    pub labels: BTreeMap<String, serde_json::Value>,
    /// `dynamic-labels`: labels formatted from the request
    /// (`{request.project}`...).
    pub dynamic_labels: BTreeMap<String, String>,
    /// `annotations` of the pod.
    pub annotations: BTreeMap<String, serde_json::Value>,
}
