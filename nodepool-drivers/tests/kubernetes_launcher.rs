//! The launcher engine with `kubernetes` providers on the Kubernetes API
//! simulator: min-ready pod and namespace nodes, a request served and its
//! nodes deleted with their namespaces, a leaked labelled namespace deleted
//! after the grace period, a pool's `max-servers` and `max-resources`,
//! `tenant-resource-limits` of an extra resource, launcher crashes, and
//! the same for an `openshiftpods` provider's pods.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use nodepool_core::config::{load_str, Config};
use nodepool_core::launcher::{Launcher, LauncherSettings};
use nodepool_core::model::json::JsonValue;
use nodepool_core::model::{Node, NodeRequest, NodeState, RequestState};
use nodepool_core::provider::Provider;
use nodepool_core::scheduler::DefaultScheduler;
use nodepool_core::store::{LockHandle, LockOptions, LockTarget, MemoryStore, NodeStore};
use nodepool_drivers::k8s::{kubeconfig, Flavor, K8sConfig, K8sProvider, KubeClient};
use nodepool_kube_sim::{Sim, SimOptions, Timing};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

fn yaml(min_ready: u32, pool_extra: &str) -> String {
    format!(
        r#"labels:
  - name: pod-fedora
    min-ready: {min_ready}
  - name: kubernetes-namespace
    min-ready: {min_ready}
providers:
  - name: kubespray
    driver: kubernetes
    context: kube-sim
    pools:
      - name: main
{pool_extra}
        labels:
          - name: kubernetes-namespace
            type: namespace
          - name: pod-fedora
            type: pod
            image: docker.io/fedora:28
            cpu: 1
            memory: 256
"#
    )
}

struct Harness {
    sim: Sim,
    root: MemoryStore,
    config: Config,
    provider: Arc<dyn Provider>,
    store: Arc<dyn NodeStore>,
    client: KubeClient,
    launcher_store: Arc<MemoryStore>,
    cancel: CancellationToken,
    task: Option<JoinHandle<nodepool_core::Result<()>>>,
}

async fn start(text: &str) -> Harness {
    start_with(text, Duration::from_millis(100)).await
}

async fn start_with(text: &str, pod_ready_delay: Duration) -> Harness {
    let sim = Sim::start(SimOptions {
        timing: Timing {
            pod_ready_delay,
            pod_terminate_delay: Duration::from_millis(50),
        },
        ..SimOptions::default()
    })
    .await
    .expect("the simulator starts");
    let config: Config = load_str(
        "nodepool.yaml",
        text,
        &nodepool_drivers::registry::builtin(),
    )
    .expect("the config loads");
    let path = sim.kubeconfig().display().to_string();
    let env = move |k: &str| (k == "KUBECONFIG").then(|| path.clone());
    let creds = kubeconfig::load(Some("kube-sim"), &env, std::path::Path::new("/nonexistent"))
        .expect("credentials");
    let client = KubeClient::new(creds).expect("client");
    let typed = config.providers[0]
        .driver_config_as::<K8sConfig>()
        .expect("k8s")
        .clone();
    let typed_flavor = typed.flavor;
    let provider: Arc<dyn Provider> = Arc::new(K8sProvider::new(Arc::new(typed), client.clone()));
    let root = MemoryStore::new();
    let launcher_store = Arc::new(root.session());
    let mut h = Harness {
        store: Arc::new(root.session()),
        sim,
        root,
        config,
        provider,
        client,
        launcher_store,
        cancel: CancellationToken::new(),
        task: None,
    };
    // openshiftpods: the pools' projects exist before the launcher.
    if typed_flavor == Flavor::OpenshiftPods {
        for pool in &h.config.providers[0].pools {
            h.client
                .create(
                    "/api/v1/namespaces",
                    &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": pool.name}}),
                )
                .await
                .expect("the project is created");
        }
    }
    h.run_launcher();
    h
}

async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Harness {
    /// Start a launcher on the launcher session.
    fn run_launcher(&mut self) {
        let mut settings = LauncherSettings::new("test-launcher");
        settings.delete_interval = Duration::from_millis(200);
        settings.cleanup_interval = Duration::from_millis(300);
        settings.min_ready_interval = Duration::from_millis(200);
        settings.leak_grace = Duration::from_millis(500);
        let providers = BTreeMap::from([(self.provider.name().to_string(), self.provider.clone())]);
        let launcher = Launcher::new(
            settings,
            self.launcher_store.clone(),
            Arc::new(DefaultScheduler),
            self.config.clone(),
            providers,
        );
        self.cancel = CancellationToken::new();
        let cancel = self.cancel.clone();
        self.task = Some(tokio::spawn(async move { launcher.run(cancel).await }));
    }

    /// kill -9 the launcher: its task dies without draining and its store
    /// session ends; then a new launcher starts on a new session.
    async fn crash_and_restart(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        self.launcher_store.close().await.expect("close session");
        self.launcher_store = Arc::new(self.root.session());
        self.run_launcher();
    }

    async fn nodes_where(&self, what: &str, pred: impl Fn(&[Node]) -> bool) -> Vec<Node> {
        wait_for(what, || async {
            let nodes = self.store.list_nodes().await.ok()?;
            pred(&nodes).then_some(nodes)
        })
        .await
    }

    async fn namespaces_where(&self, what: &str, pred: impl Fn(&[String]) -> bool) {
        wait_for(what, || async {
            let names: Vec<String> = self
                .sim
                .list("namespaces", None)
                .iter()
                .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
                .collect();
            pred(&names).then_some(())
        })
        .await
    }

    async fn submit(&self, labels: &[&str]) -> String {
        let mut request = NodeRequest::new(labels.iter().copied());
        request.state = Some(RequestState::Requested);
        request.requestor = Some("test-requestor".to_string());
        self.store
            .create_request(&request, "100")
            .await
            .expect("submit")
    }

    async fn fulfilled(&self, id: &str) -> NodeRequest {
        wait_for("the request is fulfilled", || async {
            self.store
                .get_request(id)
                .await
                .ok()
                .flatten()
                .filter(|r| r.state == Some(RequestState::Fulfilled))
        })
        .await
    }

    /// Take a fulfilled request's nodes as Zuul does.
    async fn accept(&self, id: &str) -> Vec<(Node, LockHandle)> {
        let request = self.fulfilled(id).await;
        let mut held = Vec::new();
        for node_id in &request.nodes {
            let lock = self
                .store
                .lock(
                    &LockTarget::Node(node_id.clone()),
                    &LockOptions::wait(Duration::from_secs(5)),
                )
                .await
                .expect("lock");
            let mut node = self
                .store
                .get_node(node_id)
                .await
                .expect("read")
                .expect("exists");
            node.set_state(NodeState::InUse);
            self.store.update_node(&node).await.expect("in-use");
            held.push((node, lock));
        }
        self.store.delete_request(id).await.expect("delete request");
        held
    }

    async fn release(&self, held: Vec<(Node, LockHandle)>) {
        for (mut node, lock) in held {
            node.set_state(NodeState::Used);
            self.store.update_node(&node).await.expect("used");
            self.store.unlock(&lock).await.expect("unlock");
        }
    }

    async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        self.sim.shutdown().await;
    }
}

fn ready(nodes: &[Node], label: &str) -> usize {
    nodes
        .iter()
        .filter(|n| n.state == Some(NodeState::Ready) && n.labels.iter().any(|l| l == label))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_ready_keeps_pod_and_namespace_nodes_as_upstream_records_them() {
    let h = start(&yaml(1, "")).await;
    let nodes = h
        .nodes_where("a ready node of each label", |nodes| {
            ready(nodes, "pod-fedora") == 1 && ready(nodes, "kubernetes-namespace") == 1
        })
        .await;
    for node in nodes.iter().filter(|n| n.state == Some(NodeState::Ready)) {
        let ns = format!("main-{}", node.id);
        assert_eq!(node.external_id.as_deref(), Some(ns.as_str()));
        assert_eq!(node.cloud.as_deref(), Some("kube-sim"));
        assert_eq!(node.python_path.as_deref(), Some("auto"));
        let details = node
            .connection_details
            .as_ref()
            .expect("connection details");
        assert_eq!(
            details.get("namespace").and_then(JsonValue::as_str),
            Some(ns.as_str())
        );
        assert_eq!(
            details.get("user").and_then(JsonValue::as_str),
            Some("zuul-worker")
        );
        let namespace = h
            .sim
            .get("namespaces", "", &ns)
            .expect("the namespace exists");
        assert_eq!(
            namespace["metadata"]["labels"]["nodepool_node_id"],
            json!(node.id)
        );
        let written = String::from_utf8(node.to_json()).expect("utf-8");
        assert!(
            written.contains(r#""connection_port": {"name": "main-"#),
            "{written}"
        );
        if node.labels[0] == "pod-fedora" {
            assert_eq!(node.connection_type.as_deref(), Some("kubectl"));
            assert_eq!(node.interface_ip.as_deref(), Some("pod-fedora"));
            assert_eq!(
                details.get("pod").and_then(JsonValue::as_str),
                Some("pod-fedora")
            );
            assert!(h.sim.get("pods", &ns, "pod-fedora").is_some());
        } else {
            assert_eq!(node.connection_type.as_deref(), Some("namespace"));
            assert_eq!(node.interface_ip, None);
        }
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_node_is_deleted_with_its_namespace() {
    let h = start(&yaml(0, "")).await;
    let id = h.submit(&["pod-fedora", "kubernetes-namespace"]).await;
    let held = h.accept(&id).await;
    assert_eq!(held.len(), 2);
    let names: Vec<String> = held.iter().map(|(n, _)| format!("main-{}", n.id)).collect();
    for ns in &names {
        assert!(h.sim.get("namespaces", "", ns).is_some(), "{ns} exists");
    }
    h.release(held).await;
    h.namespaces_where("the used nodes' namespaces are gone", |all| {
        names.iter().all(|n| !all.contains(n))
    })
    .await;
    h.nodes_where("the node records are gone", |nodes| nodes.is_empty())
        .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_labelled_namespace_without_a_node_record_is_deleted_as_a_leak() {
    let h = start(&yaml(0, "")).await;
    let labels = json!({
        "nodepool_node_id": "0000009999",
        "nodepool_provider_name": "kubespray",
        "nodepool_pool_name": "main",
        "nodepool_node_label": "kubernetes-namespace",
    });
    for (name, labels) in [
        ("main-0000009999", labels),
        ("someone-elses", json!({"app": "web"})),
    ] {
        h.client
            .create(
                "/api/v1/namespaces",
                &json!({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": name, "labels": labels}}),
            )
            .await
            .expect("created");
    }
    h.namespaces_where("the leaked namespace is deleted", |all| {
        !all.iter().any(|n| n == "main-0000009999")
    })
    .await;
    assert!(
        h.sim.get("namespaces", "", "someone-elses").is_some(),
        "a namespace without our labels is left alone"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_at_max_servers_waits_for_a_node_to_be_returned() {
    let h = start(&yaml(0, "        max-servers: 1\n")).await;
    let a = h.submit(&["pod-fedora"]).await;
    let held = h.accept(&a).await;
    let b = h.submit(&["pod-fedora"]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let waiting = h
        .store
        .get_request(&b)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(waiting.state, Some(RequestState::Requested), "b waits");
    assert_eq!(
        h.sim
            .list("namespaces", None)
            .iter()
            .filter(|n| n["metadata"]["labels"]["nodepool_provider_name"] == "kubespray")
            .count(),
        1,
        "one namespace at max-servers 1"
    );
    h.release(held).await;
    h.fulfilled(&b).await;
    h.stop().await;
}

/// A config with a GPU label (`gpu: 1.0` of `nvidia.com/gpu`, ephemeral
/// storage and two extra resources) and `extra` at the top level.
fn gpu_yaml(pool_extra: &str, extra: &str) -> String {
    format!(
        r#"labels:
  - name: pod-gpu
providers:
  - name: kubespray
    driver: kubernetes
    context: kube-sim
    pools:
      - name: main
{pool_extra}
        labels:
          - name: pod-gpu
            type: pod
            image: docker.io/cuda:12
            cpu: 2
            storage: 100
            gpu: 1.0
            gpu-resource: nvidia.com/gpu
            extra-resources: {{zeta: 2, alpha: 1}}
{extra}"#
    )
}

/// The pods of our namespaces that ask for a GPU.
fn gpu_pods(sim: &Sim) -> usize {
    sim.list("pods", None)
        .iter()
        .filter(|p| {
            p["spec"]["containers"][0]["resources"]["limits"]
                .get("nvidia.com/gpu")
                .is_some()
        })
        .count()
}

impl Harness {
    async fn submit_for(&self, labels: &[&str], tenant: &str) -> String {
        let mut request = NodeRequest::new(labels.iter().copied());
        request.state = Some(RequestState::Requested);
        request.requestor = Some("test-requestor".to_string());
        request.tenant_name = Some(tenant.to_string());
        self.store
            .create_request(&request, "100")
            .await
            .expect("submit")
    }

    async fn state_of(&self, id: &str) -> Option<RequestState> {
        self.store
            .get_request(id)
            .await
            .expect("read")
            .expect("exists")
            .state
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pools_gpu_limit_holds_the_second_gpu_pod_back_before_any_pod_is_made() {
    let h = start(&gpu_yaml("        max-resources: {nvidia.com/gpu: 1}", "")).await;
    let a = h.submit(&["pod-gpu"]).await;
    let held = h.accept(&a).await;
    // The node record counts what upstream's records count.
    let resources = held[0].0.resources.clone().expect("resources");
    assert_eq!(
        JsonValue::Object(resources).to_python_json(false),
        r#"{"cores": 2, "instances": 1, "ram": 0, "ephemeral-storage": 100, "nvidia.com/gpu": 1.0, "zeta": 2, "alpha": 1}"#
    );
    let b = h.submit(&["pod-gpu"]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        h.state_of(&b).await,
        Some(RequestState::Requested),
        "b waits"
    );
    assert_eq!(gpu_pods(&h.sim), 1, "no second GPU pod is created");
    let nodes = h.store.list_nodes().await.expect("nodes");
    assert_eq!(nodes.len(), 1, "no node is launched for b: {nodes:?}");
    h.release(held).await;
    h.fulfilled(&b).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_requests_made_at_once_get_one_pod_for_the_last_gpu() {
    let h = start(&gpu_yaml("        max-resources: {nvidia.com/gpu: 1}", "")).await;
    let ids = [
        h.submit(&["pod-gpu"]).await,
        h.submit(&["pod-gpu"]).await,
        h.submit(&["pod-gpu"]).await,
    ];
    let nodes = h
        .nodes_where("a node for one of them", |nodes| !nodes.is_empty())
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(gpu_pods(&h.sim), 1, "one GPU pod, never two");
    assert_eq!(
        h.store.list_nodes().await.expect("nodes").len(),
        1,
        "one node: {nodes:?}"
    );
    let mut fulfilled = 0;
    for id in &ids {
        if h.state_of(id).await == Some(RequestState::Fulfilled) {
            fulfilled += 1;
        }
    }
    assert_eq!(fulfilled, 1, "the other two wait");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_extra_resource_limit_holds_its_requests_and_not_others() {
    let h = start(&gpu_yaml(
        "",
        "tenant-resource-limits:\n  - tenant-name: tenant-one\n    zeta: 3\n",
    ))
    .await;
    let a = h.submit_for(&["pod-gpu"], "tenant-one").await;
    let held = h.accept(&a).await;
    // zeta: 2 of 3 used; another node of tenant-one would make 4.
    let b = h.submit_for(&["pod-gpu"], "tenant-one").await;
    let c = h.submit_for(&["pod-gpu"], "tenant-two").await;
    let held_c = h.accept(&c).await;
    assert_eq!(
        h.state_of(&b).await,
        Some(RequestState::Requested),
        "b waits"
    );
    assert_eq!(gpu_pods(&h.sim), 2, "a's and c's pods only");
    h.release(held).await;
    h.fulfilled(&b).await;
    h.release(held_c).await;
    h.stop().await;
}

/// Our namespaces (by label) and the node ids they belong to.
fn our_namespaces(sim: &Sim) -> Vec<(String, String)> {
    sim.list("namespaces", None)
        .iter()
        .filter(|n| n["metadata"]["labels"]["nodepool_provider_name"] == "kubespray")
        .filter(|n| n["metadata"].get("deletionTimestamp").is_none())
        .filter_map(|n| {
            Some((
                n["metadata"]["name"].as_str()?.to_string(),
                n["metadata"]["labels"]["nodepool_node_id"]
                    .as_str()?
                    .to_string(),
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_launcher_crashes_namespaces_and_node_records_agree() {
    let mut h = start_with(&yaml(2, ""), Duration::from_millis(400)).await;
    for pause in [150, 250, 350] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        h.crash_and_restart().await;
    }
    h.nodes_where("two ready nodes of each label, and no others", |nodes| {
        ready(nodes, "pod-fedora") == 2
            && ready(nodes, "kubernetes-namespace") == 2
            && nodes.len() == 4
    })
    .await;
    // Within a cleanup pass or two, every namespace of ours belongs to a
    // node record and every node record's namespace exists.
    wait_for(
        "the simulator's namespaces match the node records",
        || async {
            let nodes = h.store.list_nodes().await.ok()?;
            let ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
            let namespaces = our_namespaces(&h.sim);
            let every_namespace_has_a_record =
                namespaces.iter().all(|(_, id)| ids.contains(&id.as_str()));
            let every_record_has_a_namespace = nodes.iter().all(|n| {
                n.external_id
                    .as_ref()
                    .is_some_and(|x| namespaces.iter().any(|(name, _)| name == x))
            });
            (every_namespace_has_a_record && every_record_has_a_namespace && namespaces.len() == 4)
                .then_some(())
        },
    )
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openshiftpods_keeps_min_ready_pods_deletes_used_ones_and_leaks() {
    let h = start(
        r#"labels:
  - name: openshift-pod
    min-ready: 1
providers:
  - name: openshift
    driver: openshiftpods
    context: kube-sim
    pools:
      - name: myproject
        labels:
          - name: openshift-pod
            image: docker.io/fedora:28
"#,
    )
    .await;
    let nodes = h
        .nodes_where("a ready pod", |nodes| ready(nodes, "openshift-pod") == 1)
        .await;
    let node = nodes
        .iter()
        .find(|n| n.state == Some(NodeState::Ready))
        .expect("ready");
    let pod_name = format!("openshift-pod-{}", node.id);
    assert_eq!(
        node.external_id.as_deref(),
        Some(format!("myproject-{pod_name}").as_str())
    );
    assert_eq!(node.interface_ip.as_deref(), Some(pod_name.as_str()));
    assert_eq!(node.connection_type.as_deref(), Some("kubectl"));
    assert!(h.sim.get("pods", "myproject", &pod_name).is_some());

    // A labelled pod without a record is a leak; an unlabelled one is not ours.
    for (name, labels) in [
        (
            "openshift-pod-0000009999",
            json!({"nodepool_provider_name": "openshift", "nodepool_node_id": "0000009999",
                   "nodepool_pool_name": "myproject", "nodepool_node_label": "openshift-pod"}),
        ),
        ("web", json!({"app": "web"})),
    ] {
        h.client
            .create(
                "/api/v1/namespaces/myproject/pods",
                &json!({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": name, "labels": labels},
                        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
            )
            .await
            .expect("pod created");
    }
    wait_for("the leaked pod is deleted", || async {
        h.sim
            .get("pods", "myproject", "openshift-pod-0000009999")
            .is_none()
            .then_some(())
    })
    .await;
    assert!(h.sim.get("pods", "myproject", "web").is_some());

    let id = h.submit(&["openshift-pod"]).await;
    let held = h.accept(&id).await;
    let used = format!("openshift-pod-{}", held[0].0.id);
    h.release(held).await;
    wait_for("the used node's pod is deleted", || async {
        h.sim
            .get("pods", "myproject", &used)
            .is_none()
            .then_some(())
    })
    .await;
    h.stop().await;
}
