//! Tests of the static provider configuration.

use nodepool_core::config::{load_str, Config, ConfigError, DriverRegistry, ProviderConfig};

use super::*;

const FILE: &str = "nodepool.yaml";

fn registry() -> DriverRegistry {
    let mut reg = DriverRegistry::new();
    register(&mut reg);
    reg
}

fn load(text: &str) -> Config {
    match load_str(FILE, text, &registry()) {
        Ok(config) => config,
        Err(errors) => panic!("config should load, got:\n{errors}"),
    }
}

fn single_error(text: &str) -> ConfigError {
    match load_str(FILE, text, &registry()) {
        Ok(_) => panic!("config should not load"),
        Err(errors) => {
            assert_eq!(
                errors.errors.len(),
                1,
                "expected one error, got {errors:#?}"
            );
            errors.errors.into_iter().next().expect("one error")
        }
    }
}

fn typed(provider: &ProviderConfig) -> &StaticConfig {
    provider
        .driver_config
        .as_any()
        .downcast_ref::<StaticConfig>()
        .expect("driver_config of a static provider is a StaticConfig")
}

/// Upstream's `config_validate/good.yaml` static provider, plus a second
/// pool using every node key.
const GOOD: &str = r#"
labels:
  - name: trusty-static
  - name: winrm
  - name: winssh
  - name: multi-a
  - name: multi-b

providers:
  - name: static-rack
    driver: static
    priority: 20
    pools:
      - name: main
        nodes:
          - name: trusty.example.com
            labels: trusty-static
            host-key: fake-key
            timeout: 13
            connection-port: 22022
            username: zuul
            max-parallel-jobs: 1
          - name: windows.example.com
            labels: winrm
            username: zuul
            connection-type: winrm
            connection-port: 5986
          - name: windows-ssh.example.com
            labels: winssh
            username: zuul
            shell-type: cmd
      - name: second
        max-servers: 4
        priority: 10
        node-attributes:
          rack: b
        nodes:
          - name: 192.0.2.1
            labels: [multi-a, multi-b]
            host-key: [ssh-rsa AAA, ssh-ed25519 BBB]
            host-key-checking: false
            max-parallel-jobs: 3
            python-path: /usr/bin/python3
          - name: 192.0.2.2
            labels: multi-a  multi-b
"#;

#[test]
fn upstream_shaped_config_loads_with_upstream_defaults() {
    let config = load(GOOD);
    let provider = config.provider("static-rack").expect("static-rack");
    assert_eq!(provider.driver, STATIC);
    let st = typed(provider);
    let main = st.pool("main").expect("main");
    assert_eq!(main.max_servers, None);
    assert_eq!(main.nodes.len(), 3);

    let trusty = &main.nodes[0];
    assert_eq!(trusty.name, "trusty.example.com");
    assert_eq!(trusty.labels, vec!["trusty-static"]);
    assert_eq!(trusty.host_keys, vec!["fake-key"]);
    assert_eq!(trusty.timeout, 13);
    assert_eq!(trusty.connection_port, 22022);
    assert_eq!(trusty.key(), ("trusty.example.com", "zuul", 22022));

    let winssh = &main.nodes[2];
    assert_eq!(winssh.username, "zuul");
    assert_eq!(winssh.timeout, 5);
    assert_eq!(winssh.connection_port, 22);
    assert_eq!(winssh.connection_type, "ssh");
    assert_eq!(winssh.shell_type.as_deref(), Some("cmd"));
    assert_eq!(winssh.max_parallel_jobs, 1);
    assert_eq!(winssh.python_path, "auto");
    assert!(winssh.host_key_checking);
    assert!(winssh.host_keys.is_empty());

    let second = st.pool("second").expect("second");
    let multi = &second.nodes[0];
    assert_eq!(multi.labels, vec!["multi-a", "multi-b"]);
    assert_eq!(multi.host_keys, vec!["ssh-rsa AAA", "ssh-ed25519 BBB"]);
    assert!(!multi.host_key_checking);
    assert_eq!(multi.max_parallel_jobs, 3);
    assert_eq!(multi.python_path, "/usr/bin/python3");
    assert_eq!(
        second.nodes[1].labels,
        vec!["multi-a", "multi-b"],
        "a label string holds several labels separated by blanks"
    );
}

#[test]
fn common_view_lists_the_labels_of_the_nodes() {
    let config = load(GOOD);
    let provider = config.provider("static-rack").expect("static-rack");
    assert_eq!(provider.rate, 0.0);
    assert!(provider.diskimages.is_empty());
    let main = &provider.pools[0];
    assert_eq!(main.priority, 20, "falls back to the provider's priority");
    let names: Vec<&str> = main.labels.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, vec!["trusty-static", "winrm", "winssh"]);
    let winrm = &main.labels[1];
    assert_eq!(winrm.connection_type.as_deref(), Some("winrm"));
    assert_eq!(winrm.connection_port, Some(5986));
    assert_eq!(winrm.username.as_deref(), Some("zuul"));
    assert!(winrm.host_key_checking);

    let second = &provider.pools[1];
    assert_eq!((second.priority, second.max_servers), (10, Some(4)));
    assert_eq!(
        second.node_attributes,
        Some(serde_json::json!({"rack": "b"}))
    );
    let multi_a = second
        .labels
        .iter()
        .find(|l| l.name == "multi-a")
        .expect("multi-a");
    assert_eq!(
        multi_a.python_path, None,
        "nodes carrying multi-a disagree on python-path"
    );
    assert_eq!(multi_a.connection_port, Some(22));
    assert!(
        multi_a.host_key_checking,
        "one of its nodes checks host keys"
    );
}

#[test]
fn same_host_with_another_username_is_allowed() {
    let config = load(
        "labels:\n  - name: a\n  - name: b\nproviders:\n  - name: s\n    driver: static\n    \
         pools:\n      - name: main\n        nodes:\n          - name: h\n            labels: a\n          \
         - name: h\n            labels: b\n            username: zuul-2\n",
    );
    let st = typed(config.provider("s").expect("s"));
    assert_eq!(st.nodes().count(), 2);
}

#[test]
fn same_host_twice_in_a_provider_keeps_the_first_and_warns() {
    let config = load(
        "labels:\n  - name: a\nproviders:\n  - name: s\n    driver: static\n    pools:\n      \
         - name: one\n        nodes:\n          - name: h\n            labels: a\n      \
         - name: two\n        nodes:\n          - name: h\n            labels: a\n",
    );
    let st = typed(config.provider("s").expect("s"));
    assert_eq!(st.nodes().count(), 1);
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(
        config.warnings[0]
            .starts_with("nodepool.yaml:13:13: providers[0].pools[1].nodes[0]: host \"h\""),
        "{:?}",
        config.warnings
    );
    assert!(config.warnings[0].contains("only its first entry is used"));
}

#[test]
fn missing_labels_are_reported_with_position() {
    let err = single_error(
        "providers:\n  - name: s\n    driver: static\n    pools:\n      - name: main\n        \
         nodes:\n          - name: h\n",
    );
    assert_eq!(
        err.to_string(),
        "nodepool.yaml:7:13: providers[0].pools[0].nodes[0]: missing required key \"labels\""
    );
}

#[test]
fn wrong_type_names_the_key_path() {
    let err = single_error(
        "labels:\n  - name: a\nproviders:\n  - name: s\n    driver: static\n    pools:\n      \
         - name: main\n        nodes:\n          - name: h\n            labels: a\n            \
         timeout: 13s\n",
    );
    assert_eq!(err.path, "providers[0].pools[0].nodes[0].timeout");
    assert_eq!((err.line, err.column), (11, 22));
    assert_eq!(err.message, "expected an integer, found string \"13s\"");
}

#[test]
fn unknown_node_key_is_rejected() {
    let err = single_error(
        "labels:\n  - name: a\nproviders:\n  - name: s\n    driver: static\n    pools:\n      \
         - name: main\n        labels: [a]\n        nodes: []\n",
    );
    assert_eq!(err.path, "providers[0].pools[0].labels");
    assert_eq!(err.message, "unknown key");
}

#[test]
fn legacy_ssh_port_is_read_with_a_warning() {
    let config = load(
        "labels:\n  - name: a\nproviders:\n  - name: s\n    driver: static\n    pools:\n      \
         - name: main\n        nodes:\n          - name: h\n            labels: a\n            \
         ssh-port: 2222\n",
    );
    let st = typed(config.provider("s").expect("s"));
    assert_eq!(st.pools[0].nodes[0].connection_port, 2222);
    assert!(
        config.warnings.iter().any(|w| w.contains("ssh-port")),
        "{:?}",
        config.warnings
    );
}

#[test]
fn register_adds_the_static_driver() {
    let reg = registry();
    assert_eq!(reg.names(), vec![STATIC]);
    assert_eq!(reg.get(STATIC).expect("registered").name(), "static");
}

#[test]
fn create_provider_builds_a_provider_of_preregistered_nodes() {
    let config = load(GOOD);
    let provider = StaticDriver
        .create_provider(config.provider("static-rack").expect("static-rack"))
        .expect("the static driver creates its provider");
    assert_eq!(provider.name(), "static-rack");
    let caps = provider.capabilities();
    assert!(provider.registered().is_some());
    assert!(!caps.image_upload && !caps.quota_query && !caps.instance_listing);
}
