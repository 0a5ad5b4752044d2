//! Tests of the openstack provider configuration.

use std::collections::BTreeMap;

use nodepool_core::config::{load_str, Config, ConfigError, DriverRegistry, ProviderConfig};
use nodepool_core::Error;

use super::*;

const FILE: &str = "nodepool.yaml";

fn registry() -> DriverRegistry {
    let mut reg = DriverRegistry::new();
    register(&mut reg);
    crate::static_hosts::register(&mut reg);
    reg
}

fn load(text: &str) -> Config {
    match load_str(FILE, text, &registry()) {
        Ok(config) => config,
        Err(errors) => panic!("config should load, got:\n{errors}"),
    }
}

fn errors(text: &str) -> Vec<ConfigError> {
    match load_str(FILE, text, &registry()) {
        Ok(_) => panic!("config should not load"),
        Err(errors) => errors.errors,
    }
}

fn typed(provider: &ProviderConfig) -> &OpenStackConfig {
    provider
        .driver_config
        .as_any()
        .downcast_ref::<OpenStackConfig>()
        .expect("driver_config of an openstack provider is an OpenStackConfig")
}

/// A configuration shaped like upstream's `config_validate/good.yaml`.
const GOOD: &str = r#"
labels:
  - name: trusty
  - name: trusty-2-node
  - name: trusty-external
  - name: windows

diskimages:
  - name: trusty
    elements: [ubuntu]

providers:
  - name: cloud1
    driver: openstack
    cloud: vanilla-cloud
    region-name: 'vanilla'
    boot-timeout: 120
    max-concurrency: 10
    launch-retries: 3
    port-cleanup-interval: 600
    rate: 1
    diskimages:
      - name: trusty
    pools:
      - name: main
        max-servers: 184
        auto-floating-ip: True
        host-key-checking: True
        node-attributes:
          key1: value1
          key2: value2
        networks:
          - public
          - private
        labels:
          - name: trusty
            diskimage: trusty
            min-ram: 8192
            console-log: True
            networks:
              - public
          - name: trusty-2-node
            diskimage: trusty
            min-ram: 8192
            boot-from-volume: True
            volume-size: 100
            instance-properties:
              a_key: a_value
              b_key: b_value
            userdata: |
              #cloud-config
              password: password

  - name: cloud2
    cloud: chocolate-cloud
    region-name: 'chocolate'
    boot-timeout: 120
    rate: 0.001
    port-cleanup-interval: 0
    post-upload-hook: /usr/bin/upload-hook
    launch-timeout: 1500
    priority: 50
    diskimages:
      - name: trusty
        pause: False
        connection-type: ssh
        connection-port: 22
        meta:
          key: value
          count: 2
    cloud-images:
      - name: trusty-unmanaged
        config-drive: true
      - name: windows-unmanaged
        image-id: 1234-abcd
        username: winzuul
        python-path: A:/python3.7.exe
        connection-type: winrm
    pools:
      - name: main
        max-servers: 184
        max-cores: 200
        max-ram: 819200
        max-volumes: 5
        max-volume-gb: 500
        ignore-provider-quota: true
        availability-zones: [az1, az2]
        auto-floating-ip: False
        host-key-checking: False
        security-groups:
          - zuul_sg
        labels:
          - name: trusty
            diskimage: trusty
            min-ram: 8192
          - name: trusty-external
            cloud-image: trusty-unmanaged
            flavor-name: m1.small
            key-name: zuul
            dynamic-instance-properties:
              tenant: "{request.tenant_name}"
          - name: windows
            cloud-image: windows-unmanaged
            flavor-name: win
            min-ram: 4096
            host-key-checking: true
"#;

#[test]
fn upstream_shaped_config_loads_with_upstream_defaults() {
    let config = load(GOOD);
    let cloud1 = config.provider("cloud1").expect("cloud1");
    let os1 = typed(cloud1);
    assert_eq!(cloud1.driver, OPENSTACK);
    assert_eq!(os1.cloud, "vanilla-cloud");
    assert_eq!(os1.region_name.as_deref(), Some("vanilla"));
    assert_eq!(os1.boot_timeout, 120);
    assert_eq!(os1.launch_timeout, 3600);
    assert_eq!(os1.image_upload_timeout, 3600);
    assert_eq!(os1.rate, 1.0);
    assert_eq!(os1.image_name_format, "{image_name}-{timestamp}");
    assert_eq!(os1.clean_floating_ips, None);
    assert_eq!(os1.post_upload_hook, None);
    assert_eq!(os1.image_format, "qcow2");
    assert_eq!(os1.max_concurrency, 10);
    assert_eq!(cloud1.max_concurrency, 10);

    let image = os1.diskimage("trusty").expect("trusty");
    assert!(!image.pause);
    assert_eq!(image.config_drive, None);
    assert_eq!(
        (image.connection_type.as_str(), image.connection_port),
        ("ssh", 22)
    );
    assert!(image.meta.is_empty());

    let pool = os1.pool("main").expect("main pool");
    assert_eq!(pool.max_servers, Some(184));
    assert_eq!((pool.max_cores, pool.max_ram), (None, None));
    assert_eq!((pool.max_volumes, pool.max_volume_gb), (None, None));
    assert!(pool.auto_floating_ip && pool.host_key_checking);
    assert!(!pool.ignore_provider_quota);
    assert!(pool.availability_zones.is_empty() && pool.security_groups.is_empty());

    let trusty = pool.label("trusty").expect("trusty label");
    assert_eq!(trusty.diskimage(), Some("trusty"));
    assert_eq!(trusty.min_ram, 8192);
    assert!(trusty.console_log);
    assert_eq!(trusty.networks, vec!["public"]);
    assert!(!trusty.boot_from_volume);
    assert_eq!(trusty.volume_size, 50);
    assert!(trusty.instance_properties.is_empty());
    assert_eq!(trusty.userdata, None);

    let two = pool.label("trusty-2-node").expect("trusty-2-node label");
    assert_eq!(
        two.networks,
        vec!["public", "private"],
        "inherits pool networks"
    );
    assert!(two.boot_from_volume);
    assert_eq!(two.volume_size, 100);
    assert_eq!(two.instance_properties["a_key"], "a_value");
    assert!(two
        .userdata
        .as_deref()
        .is_some_and(|u| u.starts_with("#cloud-config\n")));
    assert!(two.host_key_checking, "inherits pool host-key-checking");
}

#[test]
fn second_provider_reads_every_optional_key() {
    let config = load(GOOD);
    let cloud2 = config.provider("cloud2").expect("cloud2");
    let os2 = typed(cloud2);
    assert_eq!(cloud2.driver, OPENSTACK, "openstack is the default driver");
    assert_eq!(os2.rate, 0.001);
    assert_eq!(os2.port_cleanup_interval, 0);
    assert_eq!(os2.port_cleanup_interval(), None);
    assert_eq!(os2.launch_timeout, 1500);
    assert_eq!(
        os2.post_upload_hook.as_deref(),
        Some("/usr/bin/upload-hook")
    );

    let meta: BTreeMap<_, _> = os2.diskimage("trusty").expect("trusty").meta.clone();
    assert_eq!(meta["count"], 2);

    let unmanaged = os2
        .cloud_image("trusty-unmanaged")
        .expect("trusty-unmanaged");
    assert_eq!(unmanaged.config_drive, Some(true));
    assert_eq!(unmanaged.python_path, "auto");
    assert_eq!(unmanaged.username, None);
    assert_eq!(unmanaged.external_name(), "trusty-unmanaged");
    let windows = os2
        .cloud_image("windows-unmanaged")
        .expect("windows-unmanaged");
    assert_eq!(windows.connection_type, "winrm");
    assert_eq!(windows.connection_port, 5986, "winrm defaults to port 5986");
    assert_eq!(windows.external_name(), "1234-abcd");

    let pool = os2.pool("main").expect("main");
    assert_eq!((pool.max_cores, pool.max_ram), (Some(200), Some(819200)));
    assert_eq!((pool.max_volumes, pool.max_volume_gb), (Some(5), Some(500)));
    assert!(pool.ignore_provider_quota && !pool.auto_floating_ip);
    assert_eq!(pool.availability_zones, vec!["az1", "az2"]);
    assert_eq!(pool.security_groups, vec!["zuul_sg"]);
    let external = pool.label("trusty-external").expect("trusty-external");
    assert_eq!(external.cloud_image(), Some("trusty-unmanaged"));
    assert_eq!(external.min_ram, 0);
    assert_eq!(external.flavor_name.as_deref(), Some("m1.small"));
    assert_eq!(external.key_name.as_deref(), Some("zuul"));
    assert_eq!(
        external.dynamic_instance_properties["tenant"],
        "{request.tenant_name}"
    );
    assert!(
        !external.host_key_checking,
        "inherits pool host-key-checking"
    );
    assert!(pool.label("windows").expect("windows").host_key_checking);
}

#[test]
fn common_view_carries_limits_images_and_label_connections() {
    let config = load(GOOD);
    let cloud2 = config.provider("cloud2").expect("cloud2");
    assert_eq!(cloud2.boot_timeout, 120.0);
    assert_eq!(cloud2.launch_timeout, 1500.0);
    assert_eq!(cloud2.launch_retries, 3);
    assert_eq!(cloud2.rate, 0.001);
    assert_eq!(cloud2.diskimages.len(), 1);
    assert_eq!(cloud2.diskimages[0].format, "qcow2");
    assert_eq!(cloud2.diskimages[0].meta["key"], "value");
    assert_eq!(cloud2.diskimages[0].meta["count"], "2");

    let pool = &cloud2.pools[0];
    assert_eq!(
        pool.priority, 50,
        "pool priority falls back to the provider's"
    );
    assert_eq!((pool.max_servers, pool.max_cores), (Some(184), Some(200)));
    assert!(pool.ignore_provider_quota);
    let windows = pool
        .labels
        .iter()
        .find(|l| l.name == "windows")
        .expect("windows");
    assert_eq!(windows.cloud_image.as_deref(), Some("windows-unmanaged"));
    assert_eq!(windows.username.as_deref(), Some("winzuul"));
    assert_eq!(windows.python_path.as_deref(), Some("A:/python3.7.exe"));
    assert_eq!(windows.connection_type.as_deref(), Some("winrm"));
    assert_eq!(windows.connection_port, Some(5986));
    let trusty = pool
        .labels
        .iter()
        .find(|l| l.name == "trusty")
        .expect("trusty");
    assert_eq!(trusty.diskimage.as_deref(), Some("trusty"));
    assert_eq!(trusty.connection_port, Some(22));
    assert!(!trusty.host_key_checking);

    let cloud1 = config.provider("cloud1").expect("cloud1");
    assert_eq!(cloud1.pools[0].priority, 100);
    assert_eq!(
        cloud1.pools[0].node_attributes,
        Some(serde_json::json!({"key1": "value1", "key2": "value2"}))
    );
}

/// A minimal config with one label (line 11, column 13) in one pool;
/// `extra` holds its further keys (from line 12, indented by 12).
fn with_label_lines(extra: &str) -> String {
    format!(
        "labels:\n  - name: small\n\
         providers:\n  - name: cloud\n    cloud: c\n    cloud-images:\n      - name: img\n    \
         pools:\n      - name: main\n        labels:\n          - name: small\n{extra}"
    )
}

fn single_error(text: &str) -> ConfigError {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    errs.into_iter().next().expect("one error")
}

#[test]
fn wrong_type_names_file_line_column_and_key_path() {
    let text =
        "providers:\n  - name: cloud\n    cloud: c\n    pools:\n      - name: main\n        \
                max-servers: ten\n";
    let err = single_error(text);
    assert_eq!(
        err.to_string(),
        "nodepool.yaml:6:22: providers[0].pools[0].max-servers: expected an integer, found \
         string \"ten\""
    );
}

#[test]
fn unknown_label_key_is_rejected() {
    let err = single_error(&with_label_lines(
        "            cloud-image: img\n            min-ram: 1\n            flavour-name: x\n",
    ));
    assert_eq!(err.path, "providers[0].pools[0].labels[0].flavour-name");
    assert_eq!((err.line, err.column), (14, 13));
    assert_eq!(err.message, "unknown key");
}

#[test]
fn unknown_provider_key_is_rejected() {
    let err = single_error("providers:\n  - name: cloud\n    cloud: c\n    hostname-format: x\n");
    assert_eq!(err.path, "providers[0].hostname-format");
    assert_eq!((err.line, err.column), (4, 5));
}

#[test]
fn missing_cloud_is_reported_at_the_provider() {
    let err = single_error("providers:\n  - name: cloud\n    rate: 2\n");
    assert_eq!(err.path, "providers[0]");
    assert_eq!((err.line, err.column), (2, 5));
    assert_eq!(err.message, "missing required key \"cloud\"");
}

#[test]
fn label_with_both_images_is_rejected_at_the_second() {
    let text = "labels:\n  - name: small\ndiskimages:\n  - name: d\n\
                providers:\n  - name: cloud\n    cloud: c\n    diskimages:\n      - name: d\n    \
                cloud-images:\n      - name: img\n    pools:\n      - name: main\n        \
                labels:\n          - name: small\n            diskimage: d\n            \
                cloud-image: img\n            min-ram: 1\n";
    let err = single_error(text);
    assert_eq!(err.path, "providers[0].pools[0].labels[0].cloud-image");
    assert_eq!(err.line, 17);
    assert!(err.message.contains("only one of"), "{}", err.message);
}

#[test]
fn label_without_image_is_rejected() {
    let err = single_error(&with_label_lines("            min-ram: 1\n"));
    assert_eq!(err.path, "providers[0].pools[0].labels[0]");
    assert_eq!((err.line, err.column), (11, 13));
    assert!(err.message.contains("\"diskimage\" or \"cloud-image\""));
}

#[test]
fn label_without_flavor_or_min_ram_is_rejected() {
    let err = single_error(&with_label_lines("            cloud-image: img\n"));
    assert_eq!(err.path, "providers[0].pools[0].labels[0]");
    assert!(err.message.contains("\"min-ram\" or \"flavor-name\""));
}

#[test]
fn flavor_name_alone_is_enough() {
    let config = load(&with_label_lines(
        "            cloud-image: img\n            flavor-name: m1\n",
    ));
    let os = typed(config.provider("cloud").expect("cloud"));
    let label = &os.pools[0].labels[0];
    assert_eq!(
        (label.min_ram, label.flavor_name.as_deref()),
        (0, Some("m1"))
    );
}

#[test]
fn undeclared_cloud_image_is_rejected() {
    let err = single_error(&with_label_lines(
        "            cloud-image: other\n            min-ram: 1\n",
    ));
    assert_eq!(err.path, "providers[0].pools[0].labels[0].cloud-image");
    assert_eq!((err.line, err.column), (12, 26));
    assert!(err.message.contains("not in this provider's cloud-images"));
}

#[test]
fn diskimage_not_uploaded_to_the_provider_loads_with_a_warning() {
    // A provider being drained lists `diskimages: []` and keeps its labels;
    // upstream loads that, so we do too.
    let text = "labels:\n  - name: small\ndiskimages:\n  - name: d\n\
                providers:\n  - name: cloud\n    cloud: c\n    diskimages: []\n    pools:\n      \
                - name: main\n        max-servers: 0\n        labels:\n          - name: small\n            \
                diskimage: d\n            min-ram: 1\n";
    let config = load(text);
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(
        config.warnings[0].contains(
            "providers[0].pools[0].labels[0].diskimage: diskimage \"d\" is not in this provider's \
             diskimages"
        ),
        "{:?}",
        config.warnings
    );
}

#[test]
fn cloud_image_with_id_and_name_is_rejected() {
    let err = single_error(
        "providers:\n  - name: cloud\n    cloud: c\n    cloud-images:\n      - name: img\n        \
         image-id: a\n        image-name: b\n",
    );
    assert_eq!(err.path, "providers[0].cloud-images[0].image-name");
    assert_eq!((err.line, err.column), (7, 21));
}

#[test]
fn repeated_pool_name_keeps_the_last_pool_and_warns() {
    let config = load(
        "providers:\n  - name: cloud\n    cloud: c\n    pools:\n      - name: main\n        \
         max-servers: 1\n      - name: main\n        max-servers: 2\n",
    );
    let pools = &config.provider("cloud").expect("cloud").pools;
    assert_eq!(pools.len(), 1);
    assert_eq!(pools[0].max_servers, Some(2));
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(
        config.warnings[0].starts_with(
            "nodepool.yaml:5:9: providers[0].pools[0]: \"main\" appears again later in pools"
        ),
        "{:?}",
        config.warnings
    );
}

#[test]
fn rate_accepts_numbers_and_numeric_strings_only() {
    let config = load("providers:\n  - name: cloud\n    cloud: c\n    rate: '0.5'\n");
    assert_eq!(typed(config.provider("cloud").expect("cloud")).rate, 0.5);
    let err = single_error("providers:\n  - name: cloud\n    cloud: c\n    rate: fast\n");
    assert_eq!(err.path, "providers[0].rate");
    assert_eq!((err.line, err.column), (4, 11));
}

#[test]
fn every_error_of_a_provider_is_reported() {
    let errs = errors(
        "providers:\n  - name: cloud\n    boot-timeout: soon\n    pools:\n      - name: main\n        \
         max-cores: many\n        auto-floating-ip: maybe\n",
    );
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"providers[0]"), "missing cloud: {paths:?}");
    assert!(paths.contains(&"providers[0].boot-timeout"), "{paths:?}");
    assert!(
        paths.contains(&"providers[0].pools[0].max-cores"),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"providers[0].pools[0].auto-floating-ip"),
        "{paths:?}"
    );
}

#[test]
fn register_adds_the_openstack_driver() {
    let mut reg = DriverRegistry::new();
    register(&mut reg);
    assert_eq!(reg.names(), vec![OPENSTACK]);
    let driver = reg.get(OPENSTACK).expect("registered");
    assert_eq!(driver.name(), "openstack");
}

#[test]
fn create_provider_names_a_cloud_missing_from_clouds_yaml() {
    let config = load("providers:\n  - name: cloud\n    cloud: no-such-cloud-anywhere\n");
    let provider = config.provider("cloud").expect("cloud");
    match OpenStackDriver::default().create_provider(provider) {
        Err(Error::Cloud {
            provider,
            message,
            kind,
            ..
        }) => {
            assert_eq!(provider, "cloud");
            assert_eq!(kind, nodepool_core::ErrorKind::Config);
            assert!(
                message.contains("no-such-cloud-anywhere") || message.contains("no clouds.yaml"),
                "{message}"
            );
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
}
