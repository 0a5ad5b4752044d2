//! Config tests of the `kubernetes` and `openshiftpods` drivers.

use std::path::PathBuf;

use nodepool_core::config::{load_str, Config};

use super::*;
use crate::registry::builtin;

const HEAD: &str = "zookeeper-servers:\n  - host: localhost\nlabels:\n  - name: pod-fedora\n  - name: kubernetes-namespace\n";

fn load(providers: &str) -> Result<Config, String> {
    load_str("nodepool.yaml", &format!("{HEAD}{providers}"), &builtin()).map_err(|e| e.to_string())
}

fn k8s(config: &Config) -> &K8sConfig {
    config.providers[0]
        .driver_config_as::<K8sConfig>()
        .expect("a k8s config")
}

#[test]
fn kubernetes_keys_and_upstream_defaults() {
    let config = load(
        r#"providers:
  - name: kubespray
    driver: kubernetes
    context: admin-cluster.local
    max-servers: 9
    max-resources: {nvidia.com/gpu: 2}
    pools:
      - name: main
        max-cores: 8
        default-label-cpu: 2
        default-label-memory-limit: 1024
        default-label-extra-resources: {mygpu: 1}
        node-attributes: {key1: value1}
        labels:
          - name: kubernetes-namespace
            type: namespace
            dynamic-labels: {tenant: "{request.tenant_name}"}
          - name: pod-fedora
            type: pod
            image: docker.io/fedora:28
            memory: 512
            cpu-limit: 4
            gpu: 0.5
            gpu-resource: nvidia.com/gpu
            env: [{name: FOO, value: hello}]
            node-selector: {storageType: ssd}
            privileged: true
            scheduler-name: niftyScheduler
            volumes: [{name: v, emptyDir: {}}]
            volume-mounts: [{mountPath: /data, name: v}]
            labels: {environment: qa}
            annotations: {a: b}
            extra-resources: {other: 3}
"#,
    )
    .expect("loads");
    let c = k8s(&config);
    assert_eq!(c.flavor, Flavor::Kubernetes);
    assert_eq!(c.context.as_deref(), Some("admin-cluster.local"));
    assert_eq!(c.launch_retries, 3);
    assert_eq!(c.max_servers, Some(9));
    let pool = &c.pools[0];
    assert_eq!(pool.max_cores, Some(8));
    assert_eq!(pool.max_ram, None);
    assert_eq!(pool.max_resources.get("nvidia.com/gpu"), Some(&2));
    let ns = &pool.labels[0];
    assert_eq!(ns.kind, LabelType::Namespace);
    assert_eq!(ns.image_pull, "IfNotPresent");
    assert_eq!(ns.python_path, "auto");
    assert_eq!((ns.cpu, ns.cpu_limit), (Some(2), Some(2)));
    assert_eq!(ns.memory_limit, Some(1024));
    assert_eq!(ns.extra_resources.get("mygpu"), Some(&1));
    let pod = &pool.labels[1];
    assert_eq!(pod.kind, LabelType::Pod);
    assert_eq!((pod.cpu, pod.cpu_limit), (Some(2), Some(4)));
    assert_eq!((pod.memory, pod.memory_limit), (Some(512), Some(1024)));
    assert_eq!(pod.gpu, Some(0.5));
    assert_eq!(pod.env[0].value, "hello");
    assert_eq!(pod.extra_resources.len(), 2);
    assert_eq!(pod.privileged, Some(true));
    let view = &config.providers[0].pools[0];
    assert_eq!(view.labels[0].connection_type.as_deref(), Some("namespace"));
    assert_eq!(view.labels[1].connection_type.as_deref(), Some("kubectl"));
    assert_eq!(view.labels[1].python_path.as_deref(), Some("auto"));
}

#[test]
fn a_spec_label_takes_no_container_keys() {
    let err = load(
        r#"providers:
  - name: kubespray
    driver: kubernetes
    pools:
      - name: main
        labels:
          - name: pod-fedora
            type: pod
            spec: {containers: []}
            image: docker.io/fedora:28
"#,
    )
    .expect_err("image with spec is rejected");
    assert!(err.contains("nodepool.yaml:"), "{err}");
    assert!(
        err.contains("\"image\" is not allowed in a label with \"spec\""),
        "{err}"
    );
}

#[test]
fn bad_values_name_file_line_and_key() {
    let err = load(
        r#"providers:
  - name: kubespray
    driver: kubernetes
    pools:
      - name: main
        labels:
          - name: pod-fedora
            type: vm
            cpu: lots
"#,
    )
    .expect_err("rejected");
    assert!(err.contains("unknown label type \"vm\""), "{err}");
    assert!(err.contains("labels[0].cpu"), "{err}");
    assert!(err.contains(":14:"), "line of cpu in {err}");
}

#[test]
fn openshiftpods_needs_context_and_image_and_has_no_type() {
    let config = load(
        r#"providers:
  - name: openshift
    driver: openshiftpods
    context: "/hostname:8443/developer"
    max-pods: 4
    pools:
      - name: myproject
        labels:
          - name: pod-fedora
            image: docker.io/fedora:28
            image-pull-secrets: [{name: registry-secret}]
"#,
    )
    .expect("loads");
    let c = k8s(&config);
    assert_eq!(c.flavor, Flavor::OpenshiftPods);
    assert_eq!(c.max_servers, Some(4));
    let label = &c.pools[0].labels[0];
    assert_eq!(label.kind, LabelType::Pod);
    assert_eq!(label.image_pull_secrets.len(), 1);

    let err = load(
        r#"providers:
  - name: openshift
    driver: openshiftpods
    pools:
      - name: myproject
        labels:
          - name: pod-fedora
            type: pod
"#,
    )
    .expect_err("rejected");
    assert!(err.contains("missing required key \"context\""), "{err}");
    assert!(err.contains("missing required key \"image\""), "{err}");
    assert!(err.contains("labels[0].type: unknown key"), "{err}");
}

/// The unpacked sdist of upstream nodepool 11.0.0, when this machine has it.
fn upstream_fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("NODEPOOL_UPSTREAM_SDIST")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/nodepool-rs/nodepool-11.0.0"))
        })?
        .join("nodepool/tests/fixtures");
    dir.is_dir().then_some(dir)
}

#[test]
fn upstream_kubernetes_and_openshiftpods_fixtures_load() {
    let Some(dir) = upstream_fixtures() else {
        println!("SKIP: upstream's sdist is not unpacked here (NODEPOOL_UPSTREAM_SDIST)");
        return;
    };
    let mut loaded = 0;
    for entry in std::fs::read_dir(&dir).expect("fixtures dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !(name.starts_with("kubernetes") || name.starts_with("openshiftpods")) {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .expect("readable")
            .replace("{images_dir}", "/tmp/images")
            .replace("{build_log_dir}", "/tmp/logs")
            .replace("{zookeeper_host}", "localhost")
            .replace("{zookeeper_port}", "2181")
            .replace("{zookeeper_chroot}", "/t")
            .replace("{zookeeper_ca}", "/tmp/ca")
            .replace("{zookeeper_cert}", "/tmp/cert")
            .replace("{zookeeper_key}", "/tmp/key");
        let config =
            load_str(name, &text, &builtin()).unwrap_or_else(|e| panic!("{name} must load:\n{e}"));
        assert!(
            config
                .providers
                .iter()
                .any(|p| p.driver_config_as::<K8sConfig>().is_ok()),
            "{name} has a kubernetes or openshiftpods provider"
        );
        loaded += 1;
    }
    assert!(
        loaded >= 20,
        "only {loaded} fixtures found in {}",
        dir.display()
    );
}
