//! Config tests of the `kubernetes` and `openshiftpods` drivers.

use std::path::PathBuf;

use nodepool_core::config::{load_str, Config};
use nodepool_core::provider::Quantity;

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
    assert_eq!(ns.extra_resources.get("mygpu"), Some(Quantity::Int(1)));
    let pod = &pool.labels[1];
    assert_eq!(pod.kind, LabelType::Pod);
    assert_eq!((pod.cpu, pod.cpu_limit), (Some(2), Some(4)));
    assert_eq!((pod.memory, pod.memory_limit), (Some(512), Some(1024)));
    assert_eq!(pod.gpu, Some(0.5));
    assert_eq!(pod.env[0].value, "hello");
    assert_eq!(pod.extra_resources.iter().count(), 2);
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

mod credentials {
    use std::path::Path;

    use super::super::kubeconfig::{self, Credentials};
    use super::super::KubeError;
    use nodepool_core::ErrorKind;

    fn write(dir: &Path, name: &str, text: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    }

    const FIRST: &str = r#"apiVersion: v1
kind: Config
current-context: one
clusters:
- name: c1
  cluster:
    server: https://one.example:6443/
    certificate-authority: ca.pem
users:
- name: u1
  user:
    tokenFile: token.txt
contexts:
- name: one
  context: {cluster: c1, user: u1, namespace: jobs}
"#;

    const SECOND: &str = r#"current-context: two
clusters:
- name: c1
  cluster: {server: "https://shadowed.example"}
- name: c2
  cluster: {server: "http://two.example:8080", insecure-skip-tls-verify: true}
users:
- name: u2
  user: {token: "s3cret-token"}
- name: u3
  user: {exec: {command: aws}}
contexts:
- name: two
  context: {cluster: c2, user: u2}
- name: plugin
  context: {cluster: c2, user: u3}
"#;

    fn load(dir: &Path, context: Option<&str>, list: &str) -> Result<Credentials, KubeError> {
        let list = list.to_string();
        let env = move |k: &str| (k == "KUBECONFIG").then(|| list.clone());
        kubeconfig::load(context, &env, &dir.join("no-sa"))
    }

    #[test]
    fn kubeconfig_list_first_file_wins_and_paths_are_relative_to_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.pem"), "PEM").expect("ca");
        std::fs::write(dir.path().join("token.txt"), "file-token\n").expect("token");
        let a = write(dir.path(), "a.yaml", FIRST);
        let b = write(dir.path(), "b.yaml", SECOND);
        let creds = load(dir.path(), None, &format!("{a}:{b}")).expect("current context");
        assert_eq!(creds.server, "https://one.example:6443");
        assert_eq!(creds.ca_pem.as_deref(), Some("PEM"));
        assert_eq!(creds.token.as_ref().map(|t| t.expose()), Some("file-token"));
        assert_eq!(creds.namespace.as_deref(), Some("jobs"));
        assert_eq!(creds.ca_base64().as_deref(), Some("UEVN"));
        let two = load(dir.path(), Some("two"), &format!("{a}:{b}")).expect("context two");
        assert_eq!(two.server, "http://two.example:8080");
        assert!(two.insecure);
        assert!(!format!("{two:?}").contains("s3cret"), "no token in Debug");
        let err = load(dir.path(), Some("plugin"), &b).expect_err("exec is not supported");
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("\"exec\""), "{err}");
        let err = load(dir.path(), Some("nope"), &b).expect_err("unknown context");
        assert!(err.to_string().contains("context \"nope\""), "{err}");
    }

    #[test]
    fn without_a_kubeconfig_the_service_account_is_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sa = dir.path().join("sa");
        std::fs::create_dir(&sa).expect("sa dir");
        std::fs::write(sa.join("token"), "pod-token").expect("token");
        std::fs::write(sa.join("ca.crt"), "CA").expect("ca");
        let missing = dir.path().join("missing").display().to_string();
        let env = move |k: &str| match k {
            "KUBECONFIG" => Some(missing.clone()),
            "KUBERNETES_SERVICE_HOST" => Some("fd00::1".into()),
            "KUBERNETES_SERVICE_PORT" => Some("443".into()),
            _ => None,
        };
        let creds = kubeconfig::load(None, &env, &sa).expect("in-cluster");
        assert_eq!(creds.server, "https://[fd00::1]:443");
        assert_eq!(creds.token.as_ref().map(|t| t.expose()), Some("pod-token"));
        let none = |_: &str| None;
        let err = kubeconfig::load(None, &none, &sa).expect_err("neither");
        assert!(err.to_string().contains("not in a cluster"), "{err}");
    }

    #[test]
    fn status_codes_say_whether_a_retry_can_help() {
        let status = |code: u16, message: &str| KubeError::Status {
            method: "POST".into(),
            path: "/api/v1/namespaces".into(),
            code,
            reason: String::new(),
            message: message.into(),
        };
        assert_eq!(status(404, "").kind(), ErrorKind::NotFound);
        assert_eq!(status(409, "already exists").kind(), ErrorKind::Conflict);
        assert_eq!(status(422, "invalid").kind(), ErrorKind::Permanent);
        assert_eq!(status(403, "forbidden").kind(), ErrorKind::Permanent);
        assert_eq!(
            status(
                403,
                "pods \"x\" is forbidden: exceeded quota: q, requested: cpu=2"
            )
            .kind(),
            ErrorKind::Quota
        );
        assert_eq!(status(429, "").kind(), ErrorKind::Transient);
        assert_eq!(status(503, "").kind(), ErrorKind::Transient);
    }
}
