//! The `process` driver's configuration, loaded by core's loader through a
//! registry where the driver registered itself.

use nodepool_core::config::{load_str, Config, ConfigErrors, DriverRegistry};
use nodepool_example_process_driver::{register, ProcessConfig, PROCESS};

fn registry() -> DriverRegistry {
    let mut registry = DriverRegistry::new();
    register(&mut registry);
    registry
}

fn load(text: &str) -> Result<Config, ConfigErrors> {
    load_str("nodepool.yaml", text, &registry())
}

const GOOD: &str = "labels:
  - name: sandbox
  - name: big
providers:
  - name: local
    driver: process
    root: /tmp/np-sandboxes
    command: [sleep, '300']
    instances: 8
    launch-retries: 5
    pools:
      - name: main
        max-servers: 4
        priority: 50
        labels:
          - name: sandbox
          - name: big
            cores: 4
            ram: 2048
            username: ci
";

#[test]
fn registers_under_driver_process() {
    assert_eq!(registry().names(), vec![PROCESS]);
}

#[test]
fn reads_its_keys_and_the_common_view() {
    let config = load(GOOD).unwrap_or_else(|e| panic!("does not load: {e}"));
    let provider = config.provider("local").expect("provider local");
    assert_eq!(provider.driver, "process");
    assert_eq!(provider.launch_retries, 5);
    assert_eq!(provider.boot_timeout, 60.0);
    let pool = &provider.pools[0];
    assert_eq!(pool.name, "main");
    assert_eq!(pool.max_servers, Some(4));
    assert_eq!(pool.priority, 50);
    let labels: Vec<&str> = pool.labels.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(labels, ["sandbox", "big"]);
    assert_eq!(pool.labels[1].username.as_deref(), Some("ci"));

    let typed = provider
        .driver_config
        .as_any()
        .downcast_ref::<ProcessConfig>()
        .expect("a process config");
    assert_eq!(typed.root.to_str(), Some("/tmp/np-sandboxes"));
    assert_eq!(typed.command, ["sleep", "300"]);
    assert_eq!(typed.instances, Some(8));
    let small = typed.label("main", "sandbox").expect("label sandbox");
    assert_eq!(
        (small.cores, small.ram, small.username.as_str()),
        (1, 0, "zuul")
    );
    let big = typed.label("main", "big").expect("label big");
    assert_eq!((big.cores, big.ram), (4, 2048));
}

#[test]
fn unknown_keys_are_reported_with_file_and_line() {
    let text = "labels:
  - name: sandbox
providers:
  - name: local
    driver: process
    root: /tmp/np-sandboxes
    colour: blue
    pools:
      - name: main
        labels:
          - name: sandbox
            flavour: large
";
    let err = load(text).expect_err("unknown keys are errors");
    let text = err.to_string();
    assert!(
        text.contains("nodepool.yaml:7:5: providers[0].colour: unknown key"),
        "{text}"
    );
    assert!(
        text.contains("nodepool.yaml:12:13: providers[0].pools[0].labels[0].flavour: unknown key"),
        "{text}"
    );
    assert_eq!(err.errors.len(), 2, "{text}");
}

#[test]
fn bad_values_are_reported_at_the_value() {
    let text = "labels:
  - name: sandbox
providers:
  - name: local
    driver: process
    root: relative/dir
    command: []
    instances: -1
    pools: []
";
    let err = load(text).expect_err("bad values");
    let text = err.to_string();
    assert!(
        text.contains("nodepool.yaml:6:11: providers[0].root: expected an absolute directory"),
        "{text}"
    );
    assert!(
        text.contains("nodepool.yaml:7:14: providers[0].command: expected a non-empty list"),
        "{text}"
    );
    assert!(
        text.contains(
            "nodepool.yaml:8:16: providers[0].instances: expected a non-negative integer, found -1"
        ),
        "{text}"
    );
}

#[test]
fn missing_root_is_reported() {
    let text = "labels: []
providers:
  - name: local
    driver: process
";
    let err = load(text).expect_err("root is required");
    assert!(
        err.to_string()
            .contains("nodepool.yaml:3:5: providers[0]: missing required key \"root\""),
        "{err}"
    );
}

#[test]
fn pool_labels_must_be_top_level_labels() {
    let text = "labels: []
providers:
  - name: local
    driver: process
    root: /tmp/x
    pools:
      - name: main
        labels:
          - name: sandbox
";
    let err = load(text).expect_err("label not defined");
    assert!(
        err.to_string()
            .contains("label \"sandbox\" in provider \"local\""),
        "{err}"
    );
}

#[test]
fn without_registration_the_driver_is_unknown() {
    let err = load_str("nodepool.yaml", GOOD, &DriverRegistry::new()).expect_err("unregistered");
    assert!(
        err.to_string()
            .contains("nodepool.yaml:6:13: providers[0].driver: unknown driver \"process\""),
        "{err}"
    );
}
