//! The `kubernetes` and `openshiftpods` providers against the Kubernetes
//! API simulator (`nodepool-kube-sim`): the conformance suite for namespace
//! and pod labels and for openshiftpods, the objects a node is made of, the
//! node's connection details, and readiness by watch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use nodepool_core::config::load_str;
use nodepool_core::provider::{InstanceState, LaunchSpec, Provider, Quantity};
use nodepool_core::testing::provider::{provider_suite, SuiteConfig};
use nodepool_core::ErrorKind;
use nodepool_drivers::k8s::{kubeconfig, K8sConfig, K8sProvider, KubeClient};
use nodepool_kube_sim::{Sim, SimOptions, Timing};
use serde_json::{json, Value};

const CONFIG: &str = r#"
zookeeper-servers:
  - host: localhost
labels:
  - name: pod-fedora
  - name: kubernetes-namespace
  - name: pod-gpu
providers:
  - name: kubespray
    driver: kubernetes
    context: kube-sim
    pools:
      - name: main
        max-resources: {nvidia.com/gpu: 1}
        labels:
          - name: kubernetes-namespace
            type: namespace
          - name: pod-gpu
            type: pod
            image: docker.io/cuda:12
            gpu: 1.0
            gpu-resource: nvidia.com/gpu
          - name: pod-fedora
            type: pod
            image: docker.io/fedora:28
            cpu: 2
            memory: 512
            env: [{name: FOO, value: hello}]
            labels: {environment: qa}
  - name: openshift
    driver: openshiftpods
    context: kube-sim
    pools:
      - name: myproject
        labels:
          - name: pod-fedora
            image: docker.io/fedora:28
            image-pull-secrets: [{name: registry-secret}]
"#;

async fn sim(ready_delay: Duration) -> Sim {
    Sim::start(SimOptions {
        timing: Timing {
            pod_ready_delay: ready_delay,
            pod_terminate_delay: Duration::from_millis(50),
        },
        ..SimOptions::default()
    })
    .await
    .expect("the simulator starts")
}

/// The provider `index` of [`CONFIG`], with the simulator's kubeconfig.
fn provider(sim: &Sim, index: usize) -> K8sProvider {
    let config = load_str(
        "nodepool.yaml",
        CONFIG,
        &nodepool_drivers::registry::builtin(),
    )
    .expect("the config loads");
    let typed = config.providers[index]
        .driver_config_as::<K8sConfig>()
        .expect("a k8s provider")
        .clone();
    let path = sim.kubeconfig().display().to_string();
    let env = move |k: &str| (k == "KUBECONFIG").then(|| path.clone());
    let creds = kubeconfig::load(
        typed.context.as_deref(),
        &env,
        std::path::Path::new("/nonexistent"),
    )
    .expect("the simulator's kubeconfig");
    K8sProvider::new(Arc::new(typed), KubeClient::new(creds).expect("client"))
}

fn spec(node_id: &str, pool: &str, label: &str, provider: &str) -> LaunchSpec {
    LaunchSpec {
        node_id: node_id.to_string(),
        pool: pool.to_string(),
        label: label.to_string(),
        hostname: format!("np{node_id}"),
        image: None,
        metadata: BTreeMap::from([
            ("nodepool_provider_name".to_string(), provider.to_string()),
            ("nodepool_pool_name".to_string(), pool.to_string()),
            ("nodepool_node_id".to_string(), node_id.to_string()),
            ("groups".to_string(), format!("{provider},,{label}")),
        ]),
        az: None,
        request: Some(json!({"tenant_name": "acme"})),
    }
}

fn suite(label: &str, pool: &str) -> SuiteConfig {
    let mut cfg = SuiteConfig::new(pool, label);
    cfg.boot_timeout = Duration::from_secs(20);
    cfg
}

#[tokio::test]
async fn kubernetes_pod_and_namespace_labels_pass_the_conformance_suite() {
    let sim = sim(Duration::from_millis(100)).await;
    let provider = provider(&sim, 0);
    for label in ["pod-fedora", "kubernetes-namespace"] {
        let report = provider_suite(&provider, &suite(label, "main")).await;
        assert!(
            report
                .ran
                .contains(&"listed_instances_carry_nodepool_metadata"),
            "{label}: {report:?}"
        );
        assert!(
            report
                .ran
                .contains(&"paged_listing_lists_each_instance_once"),
            "{label}: {report:?}"
        );
    }
}

#[tokio::test]
async fn openshiftpods_passes_the_conformance_suite() {
    let sim = sim(Duration::from_millis(100)).await;
    let provider = provider(&sim, 1);
    create_project(&sim, "myproject").await;
    let report = provider_suite(&provider, &suite("pod-fedora", "myproject")).await;
    assert!(
        report
            .ran
            .contains(&"listed_instances_carry_nodepool_metadata"),
        "{report:?}"
    );
}

async fn create_project(sim: &Sim, name: &str) {
    let path = sim.kubeconfig().display().to_string();
    let env = move |k: &str| (k == "KUBECONFIG").then(|| path.clone());
    let creds = kubeconfig::load(None, &env, std::path::Path::new("/nonexistent")).expect("creds");
    KubeClient::new(creds)
        .expect("client")
        .create(
            "/api/v1/namespaces",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        )
        .await
        .expect("the project is created");
}

#[tokio::test]
async fn a_pod_node_is_upstreams_namespace_objects_and_pod_with_kubectl_details() {
    let sim = sim(Duration::from_millis(300)).await;
    let provider = provider(&sim, 0);
    let created = provider
        .create_instance(&spec("0000000001", "main", "pod-fedora", "kubespray"))
        .await
        .expect("created");
    assert_eq!(created.external_id, "main-0000000001");
    assert_eq!(created.state, Some(InstanceState::Building));
    let ns = "main-0000000001";
    let namespace = sim.get("namespaces", "", ns).expect("namespace");
    let labels = &namespace["metadata"]["labels"];
    assert_eq!(labels["nodepool_node_id"], "0000000001");
    assert_eq!(labels["nodepool_provider_name"], "kubespray");
    assert_eq!(labels["nodepool_pool_name"], "main");
    assert_eq!(labels["nodepool_node_label"], "pod-fedora");
    assert_eq!(labels["environment"], "qa");
    assert!(labels.get("groups").is_none(), "commas make no label");
    assert!(sim.get("serviceaccounts", ns, "zuul-worker").is_some());
    let role = sim
        .get("roles", ns, "zuul-restricted")
        .expect("restricted role");
    assert_eq!(role["rules"][0]["verbs"], json!(["get", "list"]));
    let binding = sim.get("rolebindings", ns, "zuul-role").expect("binding");
    assert_eq!(binding["roleRef"]["name"], "zuul-restricted");
    assert_eq!(binding["subjects"][0]["namespace"], ns);
    let pod = sim.get("pods", ns, "pod-fedora").expect("pod");
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["image"], "docker.io/fedora:28");
    assert_eq!(
        container["resources"]["requests"],
        json!({"cpu": 2, "memory": "512Mi"})
    );
    assert_eq!(
        container["resources"]["limits"],
        json!({"cpu": 2, "memory": "512Mi"})
    );
    assert_eq!(container["env"], json!([{"name": "FOO", "value": "hello"}]));

    let ready = provider
        .wait_active(ns, Duration::from_secs(20))
        .await
        .expect("the pod runs");
    assert_eq!(ready.state, Some(InstanceState::Active));
    assert_eq!(ready.connection_type.as_deref(), Some("kubectl"));
    assert_eq!(ready.interface_ip.as_deref(), Some("pod-fedora"));
    assert_eq!(ready.cloud.as_deref(), Some("kube-sim"));
    let details = ready.connection_details.expect("details").to_serde();
    let keys: Vec<&str> = details.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "name",
            "namespace",
            "host",
            "skiptls",
            "token",
            "user",
            "ca_crt",
            "pod"
        ]
    );
    assert_eq!(details["host"], Value::from(sim.url()));
    assert_eq!(details["user"], "zuul-worker");
    assert_eq!(details["skiptls"], false);
    let secret = sim.get("secrets", ns, "zuul-worker").expect("token secret");
    assert_eq!(details["ca_crt"], secret["data"]["ca.crt"]);
    assert!(details["token"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(
        !format!("{:?}", provider).contains(sim.token()),
        "no token in Debug"
    );

    provider.delete_instance(ns).await.expect("deleted");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sim.get("namespaces", "", ns).is_some() {
        assert!(tokio::time::Instant::now() < deadline, "the namespace goes");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_namespace_node_gets_the_full_role_and_namespace_details() {
    let sim = sim(Duration::from_millis(100)).await;
    let provider = provider(&sim, 0);
    let created = provider
        .create_instance(&spec(
            "0000000002",
            "main",
            "kubernetes-namespace",
            "kubespray",
        ))
        .await
        .expect("created");
    let ns = created.external_id.as_str();
    let role = sim.get("roles", ns, "zuul").expect("role zuul");
    assert_eq!(role["rules"][0]["resources"][0], "pods");
    assert!(
        sim.list("pods", Some(ns)).is_empty(),
        "no pod for a namespace node"
    );
    let ready = provider
        .wait_active(ns, Duration::from_secs(20))
        .await
        .expect("ready");
    assert_eq!(ready.connection_type.as_deref(), Some("namespace"));
    assert_eq!(ready.interface_ip, None);
    let details = ready.connection_details.expect("details").to_serde();
    assert!(details.get("pod").is_none());
    assert_eq!(details["namespace"], ns);
}

#[tokio::test]
async fn a_failed_pod_fails_the_wait_and_a_pending_one_times_out() {
    let sim = sim(Duration::from_millis(100)).await;
    let provider = provider(&sim, 0);
    sim.set_pod_outcome("Failed");
    let created = provider
        .create_instance(&spec("0000000003", "main", "pod-fedora", "kubespray"))
        .await
        .expect("created");
    let err = provider
        .wait_active(&created.external_id, Duration::from_secs(20))
        .await
        .expect_err("a failed pod is no node");
    assert_eq!(err.kind(), ErrorKind::Permanent, "{err}");
    assert!(err.to_string().contains("Failed"), "{err}");

    let slow = self::sim(Duration::from_secs(3600)).await;
    let provider = self::provider(&slow, 0);
    let created = provider
        .create_instance(&spec("0000000004", "main", "pod-fedora", "kubespray"))
        .await
        .expect("created");
    let started = std::time::Instant::now();
    let err = provider
        .wait_active(&created.external_id, Duration::from_secs(1))
        .await
        .expect_err("still pending");
    assert!(err.kind().is_retryable(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the boot timeout bounds the wait"
    );
}

#[tokio::test]
async fn openshiftpods_node_is_a_pod_in_the_project_with_the_providers_token() {
    let sim = sim(Duration::from_millis(100)).await;
    let provider = provider(&sim, 1);
    create_project(&sim, "myproject").await;
    let created = provider
        .create_instance(&spec("0000000005", "myproject", "pod-fedora", "openshift"))
        .await
        .expect("created");
    assert_eq!(created.external_id, "myproject-pod-fedora-0000000005");
    let pod = sim
        .get("pods", "myproject", "pod-fedora-0000000005")
        .expect("pod");
    assert_eq!(
        pod["spec"]["imagePullSecrets"],
        json!([{"name": "registry-secret"}])
    );
    let ready = provider
        .wait_active(&created.external_id, Duration::from_secs(20))
        .await
        .expect("ready");
    let details = ready.connection_details.expect("details").to_serde();
    assert_eq!(details["pod"], "pod-fedora-0000000005");
    assert_eq!(details["namespace"], "myproject");
    assert_eq!(details["token"], sim.token());
    assert_eq!(ready.interface_ip.as_deref(), Some("pod-fedora-0000000005"));
    provider
        .delete_instance(&created.external_id)
        .await
        .expect("deleted");
}

#[tokio::test]
async fn kubernetes_passes_the_conformance_suite_through_the_wrapper_stack() {
    let sim = sim(Duration::from_millis(100)).await;
    let provider: Arc<dyn Provider> = Arc::new(provider(&sim, 0));
    let report = nodepool_core::testing::wrappers::stacked_provider_suite(
        provider,
        &suite("pod-fedora", "main"),
    )
    .await;
    assert!(
        report.ran.contains(&"wait_active_reaches_active"),
        "{report:?}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !sim.list("namespaces", None).iter().all(|n| {
        n["metadata"]["labels"]
            .get("nodepool_provider_name")
            .is_none()
    }) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the suite cleans up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A GPU label's pod asks for the GPU, and the provider counts it (with
/// the other resources) in what a node uses, so the launcher's scheduler
/// can hold `max-resources` ahead (nodepool-drivers/tests/kubernetes_launcher.rs).
#[tokio::test]
async fn a_gpu_pod_asks_for_its_gpu_and_counts_it_in_its_resources() {
    let sim = sim(Duration::from_millis(50)).await;
    let provider = provider(&sim, 0);
    let first = provider
        .create_instance(&spec("0000000011", "main", "pod-gpu", "kubespray"))
        .await
        .expect("created");
    let pod = sim.get("pods", &first.external_id, "pod-gpu").expect("pod");
    assert_eq!(
        pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"],
        "1.00"
    );
    let r = provider
        .label_resources("main", "pod-gpu")
        .await
        .expect("resources");
    assert_eq!(r.other.get("nvidia.com/gpu"), Some(Quantity::Float(1.0)));
    assert_eq!((r.instances, r.cores, r.ram), (Some(1), Some(0), Some(0)));
    let limits = provider.quota().await.expect("quota");
    assert!(
        limits.other.is_empty(),
        "the pool's max-resources is no provider limit"
    );
    provider
        .delete_instance(&first.external_id)
        .await
        .expect("deleted");
}

/// The wait for a pod survives the API server going away: the watch
/// breaks, the provider reads the objects again once the server is back
/// (a re-list) and watches from there until the pod runs. Uses the
/// `kube-sim` binary (`cargo build -p nodepool-kube-sim`), killed with
/// SIGKILL and restarted on the same port and state file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wait_survives_a_broken_watch_and_re_lists() {
    use nodepool_kube_sim::{ProcessOptions, SimProcess};
    let bin = match SimProcess::find_binary() {
        Ok(bin) => bin,
        Err(e) => {
            println!("SKIP: {e}");
            return;
        }
    };
    let dir = tempfile::tempdir().expect("dir");
    let mut opts = ProcessOptions::in_dir(dir.path());
    opts.pod_ready_delay_ms = 1500;
    let mut sim = SimProcess::spawn(&bin, &opts).expect("kube-sim starts");
    opts.port = sim.port();
    let config = load_str(
        "nodepool.yaml",
        CONFIG,
        &nodepool_drivers::registry::builtin(),
    )
    .expect("the config loads");
    let typed = config.providers[0]
        .driver_config_as::<K8sConfig>()
        .expect("k8s")
        .clone();
    let path = sim.kubeconfig().display().to_string();
    let env = move |k: &str| (k == "KUBECONFIG").then(|| path.clone());
    let creds = kubeconfig::load(Some("kube-sim"), &env, std::path::Path::new("/nonexistent"))
        .expect("credentials");
    let provider = Arc::new(K8sProvider::new(
        Arc::new(typed),
        KubeClient::new(creds).expect("client"),
    ));
    let created = provider
        .create_instance(&spec("0000000021", "main", "pod-fedora", "kubespray"))
        .await
        .expect("created");
    let waiter = {
        let provider = provider.clone();
        let id = created.external_id.clone();
        tokio::spawn(async move { provider.wait_active(&id, Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    sim.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _sim = SimProcess::spawn(&bin, &opts).expect("kube-sim restarts");
    let ready = waiter
        .await
        .expect("the waiter")
        .expect("the pod is found running after the restart");
    assert_eq!(ready.state, Some(InstanceState::Active));
    assert_eq!(ready.interface_ip.as_deref(), Some("pod-fedora"));
}

/// The launcher deletes a failed attempt's namespace and retries the same
/// node at once: the new attempt waits for the old namespace to go instead
/// of failing on "already exists".
#[tokio::test]
async fn a_retry_waits_for_the_failed_attempts_namespace_to_go() {
    let sim = Sim::start(SimOptions {
        timing: Timing {
            pod_ready_delay: Duration::from_millis(50),
            pod_terminate_delay: Duration::from_millis(700),
        },
        ..SimOptions::default()
    })
    .await
    .expect("sim");
    let provider = provider(&sim, 0);
    let first = provider
        .create_instance(&spec("0000000031", "main", "pod-fedora", "kubespray"))
        .await
        .expect("first attempt");
    provider
        .delete_instance(&first.external_id)
        .await
        .expect("deleted");
    assert!(
        sim.get("namespaces", "", &first.external_id).is_some(),
        "still terminating"
    );
    let again = provider
        .create_instance(&spec("0000000031", "main", "pod-fedora", "kubespray"))
        .await
        .expect("the retry waits for the old namespace");
    assert_eq!(again.external_id, first.external_id);
    provider
        .wait_active(&again.external_id, Duration::from_secs(20))
        .await
        .expect("ready");
    // A namespace of that name that is not going away is a conflict.
    let other = provider
        .create_instance(&spec("0000000031", "main", "pod-fedora", "kubespray"))
        .await
        .expect_err("exists and is not going");
    assert_eq!(other.kind(), ErrorKind::Conflict, "{other}");
}

/// API errors decide what happens: a refused pod (422) fails the attempt
/// for good and its namespace is deleted; a 503 while waiting is retried.
#[tokio::test]
async fn status_errors_from_the_api_fail_or_are_retried_and_a_half_made_node_is_removed() {
    use nodepool_kube_sim::Fault;
    let sim = sim(Duration::from_millis(100)).await;
    let provider = provider(&sim, 0);
    sim.add_fault(Fault::new("POST", "/pods", 422, Some(1)));
    let err = provider
        .create_instance(&spec("0000000041", "main", "pod-fedora", "kubespray"))
        .await
        .expect_err("the pod is refused");
    assert_eq!(err.kind(), ErrorKind::Permanent, "{err}");
    assert!(err.to_string().contains("HTTP 422"), "{err}");
    assert!(
        sim.get("namespaces", "", "main-0000000041").is_none(),
        "the half-made namespace is deleted"
    );

    let created = provider
        .create_instance(&spec("0000000042", "main", "pod-fedora", "kubespray"))
        .await
        .expect("created");
    sim.add_fault(Fault::new("GET", "/secrets/zuul-worker", 503, Some(2)));
    let ready = provider
        .wait_active(&created.external_id, Duration::from_secs(20))
        .await
        .expect("a passing 503 is retried");
    assert_eq!(ready.state, Some(InstanceState::Active));

    sim.add_fault(Fault::new("POST", "/api/v1/namespaces", 500, Some(1)));
    let err = provider
        .create_instance(&spec("0000000043", "main", "pod-fedora", "kubespray"))
        .await
        .expect_err("a 500");
    assert!(err.kind().is_retryable(), "{err}");
}
