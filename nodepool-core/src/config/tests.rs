use std::any::Any;
use std::sync::Arc;

use super::*;

/// A minimal driver: pools with `name`, the common pool keys and labels of
/// `name` and optional `diskimage`; provider `diskimages` of `name`.
#[derive(Debug)]
struct TestDriver;

#[derive(Debug)]
struct TestConfig;

impl DriverConfig for TestConfig {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Driver for TestDriver {
    fn name(&self) -> &'static str {
        "test"
    }

    fn parse_provider(
        &self,
        provider: &mut MapReader<'_>,
        common: ProviderCommon,
    ) -> Option<ProviderConfig> {
        let mut pools = Vec::new();
        for mut pool in provider.seq_of_maps("pools") {
            let name = pool.required_str("name").unwrap_or_default();
            let mut p = PoolCommon::read(&mut pool).into_pool(name, &common);
            for mut label in pool.seq_of_maps("labels") {
                p.labels.push(PoolLabel {
                    name: label.required_str("name").unwrap_or_default(),
                    diskimage: label.opt_str("diskimage"),
                    ..PoolLabel::default()
                });
                label.finish();
            }
            pool.finish();
            pools.push(p);
        }
        let mut images = Vec::new();
        for mut image in provider.seq_of_maps("diskimages") {
            images.push(ProviderDiskImage {
                name: image.required_str("name").unwrap_or_default(),
                format: "qcow2".to_string(),
                pause: false,
                meta: Default::default(),
            });
            image.finish();
        }
        let mut config = common.into_config(Arc::new(TestConfig));
        config.pools = pools;
        config.diskimages = images;
        Some(config)
    }
}

fn registry() -> DriverRegistry {
    let mut reg = DriverRegistry::new();
    reg.register(TestDriver);
    reg
}

fn load_ok(text: &str) -> Config {
    match load_str("nodepool.yaml", text, &registry()) {
        Ok(c) => c,
        Err(e) => panic!("expected the config to load, got:\n{e}"),
    }
}

fn load_err(text: &str) -> String {
    match load_str("nodepool.yaml", text, &registry()) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

const LABELS: &str = "labels:\n  - name: small\n  - name: big\n";

#[test]
fn wrong_type_names_file_line_column_and_key_path() {
    let text = format!(
        "{LABELS}providers:\n  - name: p1\n    driver: test\n    pools:\n      - name: a\n      - name: b\n        max-servers: ten\n"
    );
    let err = load_err(&text);
    assert_eq!(
        err,
        "nodepool.yaml:10:22: providers[0].pools[1].max-servers: expected an integer, found string \"ten\""
    );
}

#[test]
fn unknown_keys_are_errors_at_every_level() {
    let text = format!(
        "{LABELS}colour: blue\nproviders:\n  - name: p1\n    driver: test\n    flavour: x\n    pools:\n      - name: a\n        lables: []\n"
    );
    let err = load_err(&text);
    assert!(
        err.contains("nodepool.yaml:4:1: colour: unknown key"),
        "{err}"
    );
    assert!(
        err.contains("nodepool.yaml:8:5: providers[0].flavour: unknown key"),
        "{err}"
    );
    assert!(
        err.contains("nodepool.yaml:11:9: providers[0].pools[0].lables: unknown key"),
        "{err}"
    );
}

#[test]
fn missing_required_key_is_reported_at_the_mapping() {
    let err = load_err("diskimages:\n  - elements: [a]\n");
    assert_eq!(
        err,
        "nodepool.yaml:2:5: diskimages[0]: missing required key \"name\""
    );
}

#[test]
fn unknown_driver_names_the_registered_drivers() {
    let err = load_err("providers:\n  - name: p1\n    driver: nimbus\n");
    assert_eq!(
        err,
        "nodepool.yaml:3:13: providers[0].driver: unknown driver \"nimbus\"; registered drivers: test"
    );
}

#[test]
fn provider_named_fake_uses_the_fake_driver_even_without_driver_key() {
    let err = load_err("providers:\n  - name: fake-provider\n");
    assert!(err.contains("unknown driver \"fake\""), "{err}");
}

#[test]
fn provider_without_driver_defaults_to_openstack() {
    let err = load_err("providers:\n  - name: cloud1\n");
    assert!(err.contains("unknown driver \"openstack\""), "{err}");
}

#[test]
fn every_error_is_reported_not_only_the_first() {
    let err = load_err(
        "labels:\n  - name: a\n    min-ready: many\nwebapp:\n  port: http\nimages-dir: 5\n",
    );
    assert_eq!(err.lines().count(), 3, "{err}");
    assert!(
        err.contains("labels[0].min-ready: expected an integer"),
        "{err}"
    );
    assert!(err.contains("webapp.port: expected an integer"), "{err}");
    assert!(
        err.contains("images-dir: expected a string, found integer 5"),
        "{err}"
    );
}

#[test]
fn common_keys_are_read_with_upstream_defaults() {
    let c = load_ok(
        "zookeeper-servers:\n  - host: zk1\n  - host: zk2\n    port: 2181\n    chroot: /np\n",
    );
    assert_eq!(c.zookeeper_servers[0].port, DEFAULT_ZOOKEEPER_PORT);
    assert_eq!(c.zookeeper_servers[1].chroot.as_deref(), Some("/np"));
    assert_eq!(c.zookeeper_timeout, 10.0);
    assert_eq!(c.build_log_retention, 7);
    assert_eq!(c.webapp, WebApp::default());
    assert_eq!(c.max_hold_age, None);
}

#[test]
fn all_top_level_keys_are_read() {
    let c = load_ok(
        "webapp:\n  port: 9000\n  listen_address: 127.0.0.1\nelements-dir: /e\nimages-dir: /i\n\
         build-log-dir: /l\nbuild-log-retention: 3\nzookeeper-tls:\n  ca: /ca\n  cert: /c\n  key: /k\n\
         zookeeper-timeout: 30\nmax-hold-age: 3600\nlabels:\n  - name: l\n    min-ready: 2\n    max-ready-age: 60\n\
         tenant-resource-limits:\n  - tenant-name: t\n    max-cores: 8\n    max-gpus: 2\n",
    );
    assert_eq!(c.webapp.port, 9000);
    assert_eq!(c.webapp.listen_address, "127.0.0.1");
    assert_eq!(c.images_dir.as_deref(), Some(std::path::Path::new("/i")));
    assert_eq!(c.build_log_retention, 3);
    assert_eq!(
        c.zookeeper_tls.as_ref().map(|t| t.key.clone()),
        Some("/k".into())
    );
    assert_eq!(c.zookeeper_timeout, 30.0);
    assert_eq!(c.max_hold_age, Some(3600));
    assert_eq!(c.labels[0].min_ready, 2);
    assert_eq!(c.labels[0].max_ready_age, 60);
    let t = &c.tenant_resource_limits[0];
    assert_eq!((t.max_cores, t.max_servers), (Some(8), None));
    assert_eq!(t.other.get("max-gpus"), Some(&2));
}

#[test]
fn zero_max_hold_age_means_unlimited() {
    assert_eq!(load_ok("max-hold-age: 0\n").max_hold_age, None);
}

#[test]
fn repeated_key_keeps_the_last_value_with_a_warning() {
    let c = load_ok("labels:\n  - name: l\n    min-ready: 1\n    min-ready: 4\n");
    assert_eq!(c.labels[0].min_ready, 4);
    assert_eq!(c.warnings.len(), 1);
    assert!(
        c.warnings[0].starts_with("nodepool.yaml:4:5:"),
        "{}",
        c.warnings[0]
    );
}

#[test]
fn anchors_and_merge_keys_work_across_providers() {
    let text = format!(
        "{LABELS}providers:\n  - name: p1\n    driver: test\n    pools:\n      - &pool\n        name: main\n        max-servers: 5\n        labels:\n          - name: small\n  - name: p2\n    driver: test\n    pools:\n      - <<: *pool\n        max-servers: 7\n"
    );
    let c = load_ok(&text);
    assert_eq!(c.providers[0].pools[0].max_servers, Some(5));
    assert_eq!(c.providers[1].pools[0].max_servers, Some(7));
    assert_eq!(c.providers[1].pools[0].labels[0].name, "small");
}

#[test]
fn pool_priority_falls_back_to_provider_priority() {
    let text = format!(
        "{LABELS}providers:\n  - name: p1\n    driver: test\n    priority: 5\n    max-concurrency: 10\n    pools:\n      - name: a\n      - name: b\n        priority: 1\n"
    );
    let c = load_ok(&text);
    assert_eq!(c.providers[0].max_concurrency, 10);
    assert_eq!(c.providers[0].pools[0].priority, 5);
    assert_eq!(c.providers[0].pools[1].priority, 1);
}

#[test]
fn nodepool_env_vars_are_substituted_before_parsing() {
    std::env::set_var("NODEPOOL_CONFIG_TEST_ZK_HOST", "zk.example.org");
    let c = load_ok("zookeeper-servers:\n  - host: %(NODEPOOL_CONFIG_TEST_ZK_HOST)\n");
    assert_eq!(c.zookeeper_servers[0].host, "zk.example.org");
}

#[test]
fn pool_label_must_be_a_top_level_label() {
    let err = load_err(
        "providers:\n  - name: p1\n    driver: test\n    pools:\n      - name: a\n        labels:\n          - name: tiny\n",
    );
    assert_eq!(
        err,
        "nodepool.yaml:7:13: providers[0]: label \"tiny\" in provider \"p1\" is not in the top-level labels"
    );
}

#[test]
fn diskimages_used_by_providers_and_labels_must_exist() {
    let text = format!(
        "{LABELS}providers:\n  - name: p1\n    driver: test\n    diskimages:\n      - name: ghost\n    pools:\n      - name: a\n        labels:\n          - name: small\n            diskimage: phantom\n"
    );
    let err = load_err(&text);
    assert!(
        err.contains("diskimage \"ghost\" in provider \"p1\" is not defined"),
        "{err}"
    );
    assert!(err.contains("uses diskimage \"phantom\""), "{err}");
}

const IMAGES: &str = "\
diskimages:
  - name: base
    abstract: true
    elements: [vm, simple-init]
    env-vars:
      TMPDIR: /opt/tmp
      DIB_CHECKSUM: '1'
    rebuild-age: 3600
    metadata: {owner: base}
  - name: ubuntu-base
    parent: base
    abstract: true
    elements: [ubuntu-minimal]
    env-vars:
      DIB_DISTRIBUTION_MIRROR: http://mirror
  - name: ubuntu-noble
    parent: ubuntu-base
    release: 24
    formats: [qcow2, raw, qcow2]
    env-vars:
      TMPDIR: /var/tmp
";

#[test]
fn diskimage_inheritance_follows_upstream_merge_rules() {
    let c = load_ok(IMAGES);
    assert_eq!(c.diskimages.len(), 1, "abstract images are not built");
    let d = &c.diskimages[0];
    assert_eq!(d.elements, vec!["vm", "simple-init", "ubuntu-minimal"]);
    assert_eq!(
        d.env_vars.get("TMPDIR").map(String::as_str),
        Some("/var/tmp")
    );
    assert_eq!(d.env_vars.len(), 3);
    assert_eq!(d.rebuild_age, 3600);
    assert_eq!(d.release.as_deref(), Some("24"));
    assert_eq!(d.formats, vec!["qcow2", "raw"]);
    assert!(d.metadata.is_empty(), "metadata is not inherited");
    assert_eq!(d.username, "zuul");
    assert_eq!(d.build_timeout, 8 * 3600);
    assert_eq!(d.parent.as_deref(), Some("ubuntu-base"));
}

#[test]
fn diskimage_with_missing_parent_or_cycle_or_repeated_name_is_an_error() {
    let err = load_err(
        "diskimages:\n  - name: a\n    parent: nowhere\n  - name: b\n    parent: c\n  - name: c\n    parent: b\n  - name: c\n",
    );
    assert!(err.contains("nodepool.yaml:3:13: diskimages[0].parent: diskimage \"a\" has non-existent parent \"nowhere\""), "{err}");
    assert!(err.contains("inheritance cycle"), "{err}");
    assert!(
        err.contains("diskimages[3].name: diskimage \"c\" already defined"),
        "{err}"
    );
}

#[test]
fn secure_file_overrides_zookeeper_and_merges_diskimage_env() {
    let main = format!("zookeeper-servers:\n  - host: public\n{IMAGES}");
    let secure = "zookeeper-servers:\n  - host: secret-zk\n    port: 2281\nzookeeper-tls:\n  ca: /s/ca\n  cert: /s/c\n  key: /s/k\ndiskimages:\n  - name: ubuntu-noble\n    env-vars:\n      REG_PASSWORD: hunter2\n";
    let c = load_str_with_secure(
        "nodepool.yaml",
        &main,
        Some(("secure.conf", secure)),
        &registry(),
    )
    .expect("loads");
    assert_eq!(c.zookeeper_servers.len(), 1);
    assert_eq!(c.zookeeper_servers[0].host, "secret-zk");
    assert!(c.zookeeper_tls.is_some());
    let env = &c.diskimages[0].env_vars;
    assert_eq!(env.get("REG_PASSWORD").map(String::as_str), Some("hunter2"));
    assert_eq!(env.get("TMPDIR").map(String::as_str), Some("/var/tmp"));
}

#[test]
fn secure_file_errors_name_the_secure_file() {
    let secure = "diskimages:\n  - name: nope\n    env-vars: {A: b}\nproviders: []\n";
    let err = load_str_with_secure(
        "nodepool.yaml",
        IMAGES,
        Some(("secure.conf", secure)),
        &registry(),
    )
    .expect_err("invalid");
    let text = err.to_string();
    assert!(
        text.contains("secure.conf:2:11: diskimages[0].name: unknown diskimage \"nope\""),
        "{text}"
    );
    assert!(
        text.contains("secure.conf:4:1: providers: unknown key"),
        "{text}"
    );
}

#[test]
fn empty_secure_file_changes_nothing() {
    let c = load_str_with_secure(
        "nodepool.yaml",
        IMAGES,
        Some(("secure.conf", "")),
        &registry(),
    )
    .expect("loads");
    assert_eq!(c.diskimages.len(), 1);
}

#[test]
fn yaml_syntax_error_is_a_config_error_with_position() {
    let err = load_err("labels:\n  - name: [a\n");
    assert!(err.starts_with("nodepool.yaml:"), "{err}");
    assert!(err.contains("YAML syntax error"), "{err}");
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let err = load(
        std::path::Path::new("/nonexistent/nodepool.yaml"),
        None,
        &registry(),
    )
    .expect_err("missing");
    assert!(
        err.to_string().contains("/nonexistent/nodepool.yaml"),
        "{err}"
    );
}

#[test]
fn an_unreadable_file_is_named_without_a_position() {
    let missing = std::path::Path::new("/nonexistent/nodepool.yaml");
    let err = load(missing, None, &registry()).expect_err("no such file");
    let text = err.to_string();
    assert!(
        text.starts_with("/nonexistent/nodepool.yaml: cannot read the file: "),
        "{text}"
    );
    assert!(!text.contains(":0:0"), "{text}");
}

#[test]
fn chroot_on_an_earlier_of_several_zookeeper_servers_warns() {
    let text = "zookeeper-servers:\n  - host: zk1\n    chroot: /np\n  - host: zk2\n    chroot: /np\nlabels: []\nproviders: []\n";
    let config = load_ok(text);
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(
        config.warnings[0].starts_with("nodepool.yaml:2:5: zookeeper-servers[0]: with several zookeeper-servers, give chroot on the last entry only"),
        "{:?}",
        config.warnings
    );

    let last_only = "zookeeper-servers:\n  - host: zk1\n  - host: zk2\n    chroot: /np\nlabels: []\nproviders: []\n";
    let config = load_ok(last_only);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert_eq!(config.zookeeper_servers[1].chroot.as_deref(), Some("/np"));
}

#[test]
fn diskimage_release_is_a_string_or_an_integer_as_upstream_says() {
    let with = |release: &str| {
        format!("diskimages:\n  - name: d\n    release: {release}\nlabels: []\nproviders: []\n")
    };
    assert_eq!(
        load_ok(&with("noble")).diskimages[0].release.as_deref(),
        Some("noble")
    );
    assert_eq!(
        load_ok(&with("24")).diskimages[0].release.as_deref(),
        Some("24")
    );
    let err = load_err(&with("1.5"));
    assert!(
        err.contains("diskimages[0].release: expected a string or an integer"),
        "{err}"
    );
}

#[test]
fn diskimage_validation_reads_hook_timeout_and_label_and_is_inherited() {
    let text = format!(
        "{LABELS}providers:\n  - name: p1\n    driver: test\n    diskimages:\n      - name: img\n    pools:\n      - name: a\n        labels:\n          - name: small\n            diskimage: img\n          - name: big\n            diskimage: checked\n\
diskimages:\n  - name: base\n    abstract: true\n    validation:\n      hook: /etc/nodepool/validate.sh\n  - name: img\n    parent: base\n  - name: checked\n    validation:\n      hook: /bin/true\n      timeout: 30\n      label: big\n    elements: [vm]\n"
    );
    let c = load_ok(&text);
    let img = c.diskimage("img").expect("img");
    let v = img.validation.as_ref().expect("inherited validation");
    assert_eq!(v.hook, "/etc/nodepool/validate.sh");
    assert_eq!(v.timeout, VALIDATION_TIMEOUT);
    assert_eq!(v.label, None);
    let checked = c
        .diskimage("checked")
        .and_then(|d| d.validation.clone())
        .expect("checked's validation");
    assert_eq!(
        checked,
        ImageValidation {
            hook: "/bin/true".into(),
            timeout: 30.0,
            label: Some("big".into()),
        }
    );
}

#[test]
fn diskimage_validation_errors_name_the_line_and_key() {
    let text = format!(
        "{LABELS}providers:\n  - name: p1\n    driver: test\n    diskimages:\n      - name: img\n    pools:\n      - name: a\n        labels:\n          - name: small\n            diskimage: img\n\
diskimages:\n  - name: img\n    validation:\n      timeout: -4\n      labels: small\n  - name: other\n    validation:\n      hook: /bin/true\n      label: small\n"
    );
    let err = load_err(&text);
    assert!(
        err.contains("nodepool.yaml:17:7: diskimages[0].validation: missing required key \"hook\""),
        "{err}"
    );
    assert!(
        err.contains("diskimages[0].validation.timeout: validation timeout must be a positive"),
        "{err}"
    );
    assert!(
        err.contains("diskimages[0].validation.labels: unknown key"),
        "{err}"
    );
    assert!(
        err.contains("validation label \"small\" of diskimage \"other\" is not a pool label"),
        "{err}"
    );
}

#[test]
fn absurd_min_ready_is_clamped_with_a_warning() {
    let c = load_ok(
        "labels:\n  - name: a\n    min-ready: 9223372036854775807\n  - name: b\n    min-ready: 3\n",
    );
    assert_eq!(c.label("a").map(|l| l.min_ready), Some(MAX_MIN_READY));
    assert_eq!(c.label("b").map(|l| l.min_ready), Some(3));
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(
        c.warnings[0].contains("labels[0].min-ready: min-ready 9223372036854775807 is more nodes"),
        "{:?}",
        c.warnings
    );
}
