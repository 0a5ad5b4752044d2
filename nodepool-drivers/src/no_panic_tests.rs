//! No panic on any number in the configuration.
//!
//! One configuration holds every numeric key of the common schema and of
//! each built-in driver (openstack, fake, aws, kubernetes, openshiftpods,
//! static), each on a line of its own. Every such line is rewritten with
//! each of [`EXTREME_YAML_NUMBERS`] (i64/u64 limits and beyond, huge and
//! tiny floats, infinities, NaN, negative, fractional, zero, strings) and
//! the configuration is loaded; when it loads, each provider is built,
//! put inside core's wrapper stack, and the durations the engines derive
//! from its numbers are computed. Loading may fail with a config error and
//! a value may be clamped; nothing may panic.
//!
//! With `NODEPOOL_UPSTREAM_SDIST` set (CI sets it), the numeric lines of
//! upstream's fixture configs for our drivers get the same treatment.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use nodepool_core::config::{load_str, Config, DriverRegistry};
use nodepool_core::provider::wrappers::{ProviderMetrics, StackSettings};
use nodepool_core::provider::{stack_all, ImageRef, LaunchSpec};
use nodepool_core::testing::fuzz::EXTREME_YAML_NUMBERS;

use crate::aws::AwsConfig;
use crate::fake::config::FakeConfig;
use crate::openstack::OpenStackConfig;
use crate::registry::builtin;

/// Every numeric key we read, once (a few twice, at provider and pool
/// level). Each numeric value sits on a line of its own.
const EVERY_NUMBER: &str = r#"
webapp:
  port: 8005
zookeeper-servers:
  - host: zk1
    port: 2181
zookeeper-timeout: 10.0
build-log-retention: 7
max-hold-age: 3600
images-dir: /tmp/nodepool-no-panic-images
labels:
  - name: small
    min-ready: 1
    max-ready-age: 3600
  - name: dib
  - name: aws-small
  - name: pod
  - name: opod
  - name: static
tenant-resource-limits:
  - tenant-name: tenant
    max-cores: 8
    max-ram: 1024
    max-servers: 4
    max-gpus: 2
diskimages:
  - name: dib-image
    rebuild-age: 86400
    build-timeout: 28800
    validation:
      hook: /bin/true
      timeout: 600
      label: dib
providers:
  - name: os
    driver: openstack
    cloud: devstack
    max-concurrency: 10
    priority: 1
    boot-timeout: 120
    launch-timeout: 3600
    launch-retries: 3
    image-upload-timeout: 3600
    rate: 1.0
    port-cleanup-interval: 600
    diskimages:
      - name: dib-image
        connection-port: 22
    cloud-images:
      - name: cloud
        image-name: cirros
        connection-port: 22
    pools:
      - name: main
        max-servers: 10
        max-cores: 100
        max-ram: 10000
        max-volumes: 5
        max-volume-gb: 500
        priority: 100
        labels:
          - name: small
            cloud-image: cloud
            min-ram: 1024
            volume-size: 50
          - name: dib
            diskimage: dib-image
            flavor-name: m1.small
  - name: fk
    driver: fake
    cloud: fake
    rate: 0.0001
    boot-timeout: 60
    fake-settings:
      boot-delay: 0.1
      instances: 100
      cores: 100
      ram: 100000
      cores-per-node: 2
      ram-per-node: 1024
      error-rate: 0.0
      timeout-rate: 0.0
      quota-error-rate: 0.0
      boot-failure-rate: 0.0
      seed: 1
    cloud-images:
      - name: cloud
        image-name: Fake
    pools:
      - name: main
        max-servers: 5
        labels:
          - name: small
            cloud-image: cloud
            min-ram: 1024
  - name: ec2
    driver: aws
    region-name: us-east-1
    rate: 2.0
    boot-timeout: 180
    launch-timeout: 3600
    launch-retries: 3
    max-servers: 30
    max-cores: 300
    max-ram: 100000
    image-import-timeout: 600
    max-resources:
      L-1216C47A: 100
    object-storage:
      bucket-name: images
    cloud-images:
      - name: ubuntu
        image-id: ami-1
        username: ubuntu
        connection-port: 22
    diskimages:
      - name: dib-image
        import-method: ebs-direct
        volume-size: 20
        iops: 1000
        throughput: 125
        connection-port: 22
    pools:
      - name: main
        max-servers: 10
        max-cores: 40
        max-ram: 4096
        priority: 100
        max-resources:
          L-34B43A08: 12
        labels:
          - name: aws-small
            cloud-image: ubuntu
            instance-type: t3.small
            key-name: zuul
            volume-size: 10
            iops: 3000
            throughput: 200
  - name: kube
    driver: kubernetes
    context: admin
    launch-retries: 3
    max-servers: 9
    max-cores: 64
    max-ram: 65536
    max-resources:
      nvidia.com/gpu: 2
    pools:
      - name: main
        max-servers: 4
        max-cores: 8
        max-ram: 8192
        default-label-cpu: 2
        default-label-memory: 1024
        default-label-storage: 10
        default-label-cpu-limit: 4
        default-label-memory-limit: 2048
        default-label-storage-limit: 20
        default-label-extra-resources:
          mygpu: 1
        labels:
          - name: pod
            type: pod
            image: fedora
            cpu: 1
            memory: 512
            storage: 5
            cpu-limit: 2
            memory-limit: 1024
            storage-limit: 10
            gpu: 0.5
            gpu-resource: nvidia.com/gpu
            extra-resources:
              other: 3
  - name: oshift
    driver: openshiftpods
    context: "/host:8443/dev"
    launch-retries: 3
    max-pods: 4
    pools:
      - name: project
        labels:
          - name: opod
            image: fedora
            cpu: 1
            memory: 512
  - name: rack
    driver: static
    pools:
      - name: main
        max-servers: 2
        nodes:
          - name: host.example.com
            labels: static
            timeout: 5
            connection-port: 22022
            max-parallel-jobs: 1
"#;

/// The lines of `text` whose value is a plain number: `(index, prefix)`
/// where `prefix` is the line up to and including `": "`.
fn numeric_lines(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let (key, value) = line.split_once(": ")?;
            let value = value.trim();
            let number = !value.is_empty()
                && value.parse::<f64>().is_ok()
                && !value.starts_with(['"', '\'']);
            let plain_key = key
                .trim_start()
                .trim_start_matches("- ")
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
            (number && plain_key).then(|| (i, format!("{key}: ")))
        })
        .collect()
}

/// `text` with line `index` set to `prefix` + `value`.
fn with_line(text: &str, index: usize, prefix: &str, value: &str) -> String {
    let mut out = String::with_capacity(text.len() + 32);
    for (i, line) in text.lines().enumerate() {
        if i == index {
            out.push_str(prefix);
            out.push_str(value);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Everything the engines derive from a loaded config's numbers without
/// talking to a cloud: each provider built by its driver (an error is
/// fine: no credentials here), put inside the wrapper stack, its
/// durations, and the fake cloud's quota and label resources.
fn use_config(config: &Config, registry: &DriverRegistry, runtime: &tokio::runtime::Runtime) {
    let mut providers = BTreeMap::new();
    for provider in &config.providers {
        let _ = StackSettings::from_config(provider);
        let any = provider.driver_config.as_any();
        if let Some(os) = any.downcast_ref::<OpenStackConfig>() {
            let _ = (os.boot_timeout(), os.launch_timeout());
            let _ = (os.image_upload_timeout(), os.port_cleanup_interval());
        }
        if let Some(fake) = any.downcast_ref::<FakeConfig>() {
            let _ = fake.openstack.boot_timeout();
        }
        if let Some(aws) = any.downcast_ref::<AwsConfig>() {
            let _ = aws.boot_timeout();
        }
        let Some(driver) = registry.get(&provider.driver) else {
            continue;
        };
        if let Ok(built) = driver.create_provider(provider) {
            providers.insert(provider.name.clone(), built);
        }
    }
    let metrics = Arc::new(ProviderMetrics::new());
    let stacked = stack_all(config, providers, &metrics);
    runtime.block_on(async {
        for (name, provider) in &stacked {
            let Some(cfg) = config.provider(name) else {
                continue;
            };
            if cfg.driver != "fake" && cfg.driver != "static" {
                continue;
            }
            let _ = provider.quota().await;
            for pool in &cfg.pools {
                for label in &pool.labels {
                    let _ = provider.label_resources(&pool.name, &label.name).await;
                    if cfg.driver != "fake" {
                        continue;
                    }
                    // Two launches: usage adds up past any limit.
                    for n in 0..2 {
                        let spec = LaunchSpec {
                            node_id: format!("000000000{n}"),
                            pool: pool.name.clone(),
                            label: label.name.clone(),
                            hostname: format!("np000000000{n}"),
                            image: label.cloud_image.clone().map(ImageRef::Cloud),
                            metadata: BTreeMap::new(),
                            az: None,
                            request: None,
                        };
                        if let Ok(created) = provider.create_instance(&spec).await {
                            let _ = provider.delete_instance(&created.external_id).await;
                        }
                    }
                }
            }
        }
    });
}

/// Load `text` and use what loads; the panic message if anything panics.
fn try_config(
    text: &str,
    registry: &DriverRegistry,
    runtime: &tokio::runtime::Runtime,
) -> Option<String> {
    let run = || {
        if let Ok(config) = load_str("nodepool.yaml", text, registry) {
            use_config(&config, registry, runtime);
        }
    };
    catch_unwind(AssertUnwindSafe(run)).err().map(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".to_string())
    })
}

/// Every numeric line of `text` set to every extreme value; the failures.
fn every_number_of(
    name: &str,
    text: &str,
    values: &[&str],
    registry: &DriverRegistry,
    runtime: &tokio::runtime::Runtime,
) -> (usize, Vec<String>) {
    let mut tried = 0;
    let mut failures = Vec::new();
    for (index, prefix) in numeric_lines(text) {
        for value in values {
            let edited = with_line(text, index, &prefix, value);
            tried += 1;
            if let Some(panic) = try_config(&edited, registry, runtime) {
                failures.push(format!(
                    "{name} line {}: `{}{value}` panicked: {panic}",
                    index + 1,
                    prefix.trim_start()
                ));
            }
        }
    }
    (tried, failures)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a test runtime")
}

#[test]
fn the_base_config_loads_with_every_driver() {
    let config = load_str("nodepool.yaml", EVERY_NUMBER, &builtin())
        .unwrap_or_else(|e| panic!("the base config must load:\n{e}"));
    assert_eq!(config.providers.len(), 6);
    assert!(
        numeric_lines(EVERY_NUMBER).len() > 80,
        "every numeric key is on a line of its own"
    );
}

/// The parsers whose numeric getters must all be covered above.
const PARSERS: &[&str] = &[
    include_str!("../../nodepool-core/src/config/loader.rs"),
    include_str!("../../nodepool-core/src/config/driver.rs"),
    include_str!("../../nodepool-core/src/config/diskimage.rs"),
    include_str!("openstack/parse.rs"),
    include_str!("aws/parse.rs"),
    include_str!("k8s/parse.rs"),
    include_str!("static_hosts/parse.rs"),
    include_str!("fake/config.rs"),
];

#[test]
fn every_numeric_key_the_parsers_read_is_in_the_base_config() {
    let covered: std::collections::BTreeSet<String> = numeric_lines(EVERY_NUMBER)
        .into_iter()
        .map(|(_, prefix)| {
            prefix
                .trim()
                .trim_start_matches("- ")
                .trim_end_matches(':')
                .to_string()
        })
        .collect();
    let mut missing = Vec::new();
    let mut found = std::collections::BTreeSet::new();
    for source in PARSERS {
        for getter in ["i64(\"", "i64_or(\"", "f64(\"", "f64_or(\""] {
            for (at, _) in source.match_indices(getter) {
                let rest = &source[at + getter.len()..];
                let Some(end) = rest.find('"') else {
                    continue;
                };
                let key = &rest[..end];
                found.insert(key.to_string());
                if !covered.contains(key) && !missing.contains(&key.to_string()) {
                    missing.push(key.to_string());
                }
            }
        }
    }
    assert!(found.len() > 40, "the scan finds the getters: {found:?}");
    assert!(
        missing.is_empty(),
        "numeric keys read by a parser but not tried by the property test: {missing:?}"
    );
}

#[test]
fn no_number_in_the_config_makes_loading_or_building_panic() {
    let registry = builtin();
    let runtime = runtime();
    let (tried, failures) = every_number_of(
        "every-number",
        EVERY_NUMBER,
        EXTREME_YAML_NUMBERS,
        &registry,
        &runtime,
    );
    assert!(tried > 2000, "tried {tried} configs");
    assert!(
        failures.is_empty(),
        "{} of {tried} configs panicked:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn no_number_in_upstreams_fixtures_makes_loading_panic() {
    let Ok(sdist) = std::env::var("NODEPOOL_UPSTREAM_SDIST") else {
        eprintln!("NODEPOOL_UPSTREAM_SDIST is not set: upstream's fixtures are not tried");
        return;
    };
    let dir = std::path::Path::new(&sdist).join("nodepool/tests/fixtures");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    entries.sort();
    let drivers = [
        "driver: openstack",
        "driver: aws",
        "driver: kubernetes",
        "driver: openshiftpods",
        "driver: static",
    ];
    // A few values per line: fixtures are many.
    let values = [
        "9223372036854775807",
        "-9223372036854775808",
        "1.0e+30",
        ".inf",
        ".nan",
        "-1",
        "0",
        "0.5",
    ];
    let registry = builtin();
    let runtime = runtime();
    let (mut tried, mut failures, mut files) = (0, Vec::new(), 0);
    for path in entries {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if !drivers.iter().any(|d| text.contains(d)) {
            continue;
        }
        files += 1;
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let (n, f) = every_number_of(&name, &text, &values, &registry, &runtime);
        tried += n;
        failures.extend(f);
    }
    assert!(
        files > 20,
        "found {files} fixtures of our drivers in {}",
        dir.display()
    );
    assert!(
        failures.is_empty(),
        "{} of {tried} fixture edits panicked:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
