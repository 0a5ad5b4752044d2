//! Tests of the aws provider configuration.

use nodepool_core::config::{load_str, Config, ConfigError, DriverRegistry, ProviderConfig};

use super::config::{IamInstanceProfile, ImageSource, ImportMethod, InstanceSpec, LabelImage};
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

fn errors(text: &str) -> Vec<ConfigError> {
    match load_str(FILE, text, &registry()) {
        Ok(_) => panic!("config should not load"),
        Err(errors) => errors.errors,
    }
}

fn typed(provider: &ProviderConfig) -> &AwsConfig {
    provider
        .driver_config
        .as_any()
        .downcast_ref::<AwsConfig>()
        .expect("driver_config of an aws provider is an AwsConfig")
}

/// Shaped like upstream's `fixtures/aws/aws.yaml` and `aws-fleet.yaml`.
const GOOD: &str = r#"
labels:
  - name: ubuntu
  - name: ubuntu-filters
  - name: ubuntu-fleet
  - name: ubuntu-dib
  - name: ubuntu-tags

diskimages:
  - name: ubuntu-dib
    elements: [ubuntu]

providers:
  - name: ec2-us-west-2
    driver: aws
    region-name: us-west-2
    profile-name: ci
    rate: 5
    boot-timeout: 240
    max-servers: 30
    max-resources:
      L-1216C47A: 100
    object-storage:
      bucket-name: nodepool-images
    image-format: vhd
    image-import-timeout: 600
    cloud-images:
      - name: ubuntu
        image-id: ami-1e749f67
        username: ubuntu
      - name: ubuntu-filters
        image-filters:
          - name: name
            values: [ubuntu*]
          - Name: architecture
            Values: [x86_64]
        username: ubuntu
        connection-type: winrm
        shell-type: csh
    diskimages:
      - name: ubuntu-dib
        import-method: ebs-direct
        imds-support: v2.0
        volume-size: 20
        iops: 1000
        tags:
          team: ci
          count: 3
          public: true
    pools:
      - name: main
        max-servers: 10
        max-resources:
          L-34B43A08: 12
        subnet-id: subnet-1
        security-group-id: sg-1
        public-ip-address: false
        availability-zone: us-west-2a
        node-attributes:
          key1: value1
        labels:
          - name: ubuntu
            cloud-image: ubuntu
            instance-type: t3.medium
            key-name: zuul
            userdata: fake-user-data
            iam-instance-profile:
              arn: arn:aws:iam::123:instance-profile/x
            imdsv2: required
            use-spot: true
          - name: ubuntu-filters
            cloud-image: ubuntu-filters
            instance-type: t3.medium
            key-name: zuul
            dedicated-host: true
          - name: ubuntu-fleet
            cloud-image: ubuntu
            fleet:
              instance-types: [t3.nano, t3.micro]
              allocation-strategy: price-capacity-optimized
            key-name: zuul
            volume-type: gp3
            volume-size: 40
            throughput: 200
          - name: ubuntu-dib
            diskimage: ubuntu-dib
            instance-type: t3.small
            key-name: zuul
          - name: ubuntu-tags
            cloud-image: ubuntu
            instance-type: t3.medium
            key-name: zuul
            tags:
              has-tags: true
              Name: ignored-name
            dynamic-tags:
              dynamic-tenant: "Tenant is {request.tenant_name}"
      - name: other
        public-ipv6: true
        host-key-checking: false
        labels:
          - name: ubuntu
            cloud-image: ubuntu
            instance-type: t3.large
            key-name: zuul
"#;

#[test]
fn every_upstream_key_is_read_with_its_value() {
    let config = load(GOOD);
    let provider = &config.providers[0];
    assert_eq!(provider.driver, "aws");
    let aws = typed(provider);
    assert_eq!(aws.region_name, "us-west-2");
    assert_eq!(aws.profile_name.as_deref(), Some("ci"));
    assert_eq!(aws.rate, 5.0);
    assert!(
        (provider.rate - 0.2).abs() < 1e-9,
        "core's rate is seconds between calls"
    );
    assert_eq!(aws.boot_timeout, 240);
    assert_eq!(provider.boot_timeout, 240.0);
    assert_eq!(aws.bucket_name.as_deref(), Some("nodepool-images"));
    assert_eq!(aws.image_format, "vhd");
    assert_eq!(provider.diskimages[0].format, "vhd");
    assert_eq!(aws.image_import_timeout, Some(600));

    let filters = aws.cloud_image("ubuntu-filters").expect("cloud image");
    match &filters.source {
        ImageSource::Filters(f) => {
            assert_eq!(f.len(), 2);
            assert_eq!(f[0].name, "name");
            assert_eq!(f[1].name, "architecture", "capitalised keys are read too");
            assert_eq!(f[1].values, vec!["x86_64"]);
        }
        other => panic!("expected filters, got {other:?}"),
    }
    assert_eq!(filters.connection_port, 5986);
    let dib = aws.diskimage("ubuntu-dib").expect("diskimage");
    assert_eq!(dib.import_method, ImportMethod::EbsDirect);
    assert_eq!(dib.imds_support.as_deref(), Some("v2.0"));
    assert_eq!(dib.volume_type, "gp3");
    assert_eq!(dib.architecture, "x86_64");
    assert!(dib.ena_support);
    assert_eq!(dib.tags["count"], "3");
    assert_eq!(dib.tags["public"], "True", "as Python's str(True)");

    let main = aws.pool("main").expect("pool");
    assert_eq!(main.max_servers, Some(10));
    assert_eq!(main.max_resources["L-1216C47A"], 100, "inherited");
    assert_eq!(main.max_resources["L-34B43A08"], 12);
    assert!(!main.public_ipv4, "public-ip-address: false");
    assert_eq!(main.availability_zone.as_deref(), Some("us-west-2a"));
    let ubuntu = main.label("ubuntu").expect("label");
    assert!(ubuntu.use_spot);
    assert_eq!(ubuntu.imdsv2.as_deref(), Some("required"));
    assert_eq!(
        ubuntu.iam_instance_profile,
        Some(IamInstanceProfile::Arn(
            "arn:aws:iam::123:instance-profile/x".into()
        ))
    );
    assert_eq!(ubuntu.instance, InstanceSpec::Type("t3.medium".into()));
    let fleet = main.label("ubuntu-fleet").expect("fleet label");
    assert_eq!(fleet.instance_types(), vec!["t3.nano", "t3.micro"]);
    assert_eq!(
        main.label("ubuntu-dib").map(|l| &l.image),
        Some(&LabelImage::DiskImage("ubuntu-dib".into()))
    );
    let tags = main.label("ubuntu-tags").expect("tags label");
    assert_eq!(tags.tags["has-tags"], "True");
    assert_eq!(
        tags.dynamic_tags["dynamic-tenant"],
        "Tenant is {request.tenant_name}"
    );

    let other = aws.pool("other").expect("pool");
    assert_eq!(other.max_servers, Some(30), "the provider's max-servers");
    assert!(other.public_ipv4);
    assert!(other.public_ipv6);
    assert!(!other.labels[0].host_key_checking);

    let view = &provider.pools[0];
    let label = &view.labels[0];
    assert_eq!(label.username.as_deref(), Some("ubuntu"));
    assert_eq!(label.cloud_image.as_deref(), Some("ubuntu"));
}

#[test]
fn defaults_are_upstreams() {
    let config = load(
        r#"
labels:
  - name: small
providers:
  - name: ec2
    driver: aws
    region-name: us-east-1
    cloud-images:
      - name: img
        image-id: ami-1
        username: zuul
    pools:
      - name: main
        labels:
          - name: small
            cloud-image: img
            instance-type: t3.small
            key-name: zuul
"#,
    );
    let provider = &config.providers[0];
    let aws = typed(provider);
    assert_eq!(aws.rate, 2.0);
    assert_eq!(aws.boot_timeout, 180);
    assert_eq!(aws.launch_timeout, 3600);
    assert_eq!(aws.launch_retries, 3);
    assert_eq!(aws.image_format, "raw");
    let pool = &aws.pools[0];
    assert!(pool.public_ipv4);
    assert!(!pool.public_ipv6);
    assert!(pool.host_key_checking);
    assert_eq!(pool.max_servers, None);
    let label = &pool.labels[0];
    assert!(!label.use_spot && !label.ebs_optimized && !label.dedicated_host);
    assert_eq!(aws.cloud_images[0].python_path, "auto");
    assert_eq!(aws.cloud_images[0].connection_port, 22);
}

fn messages(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn bad(provider_body: &str) -> String {
    let text = format!(
        "labels:\n  - name: small\nproviders:\n  - name: ec2\n    driver: aws\n{provider_body}"
    );
    messages(&errors(&text))
}

#[test]
fn mistakes_name_the_key_and_line() {
    let m = bad(r#"    region-name: us-east-1
    cloud-images:
      - name: img
        image-id: ami-1
        image-filters:
          - name: name
            values: [x]
        username: zuul
    pools:
      - name: main
        labels:
          - name: small
            cloud-image: img
            instance-type: t3.small
            fleet:
              instance-types: [t3.small]
              allocation-strategy: cheapest
            key-name: zuul
"#);
    assert!(m.contains("image-filters"), "{m}");
    assert!(
        m.contains("only one of \"image-id\" and \"image-filters\""),
        "{m}"
    );
    assert!(
        m.contains("only one of \"instance-type\" and \"fleet\""),
        "{m}"
    );
    assert!(m.contains("nodepool.yaml:"), "{m}");

    let m = bad(r#"    region-name: us-east-1
    cloud-images:
      - name: img
        username: zuul
    pools:
      - name: main
        use-internal-ip: true
        labels:
          - name: small
            cloud-image: nope
            instance-type: t3.small
            dedicated-host: true
            use-spot: true
"#);
    assert!(
        m.contains("Provide either \"image-filters\", or \"image-id\" keys"),
        "{m}"
    );
    assert!(m.contains("use-internal-ip"), "{m}");
    assert!(m.contains("cloud-image nope does not exist"), "{m}");
    assert!(m.contains("missing required key \"key-name\""), "{m}");
    assert!(
        m.contains("Spot instances can not be used on dedicated hosts"),
        "{m}"
    );
    assert!(
        m.contains("Availability-zone is required for dedicated hosts"),
        "{m}"
    );

    let m = bad(r#"    cloud: nope
    image-format: qcow2
    diskimages:
      - name: d
        import-method: image
        imds-support: v2.0
    pools: []
"#);
    assert!(m.contains("missing required key \"region-name\""), "{m}");
    assert!(m.contains("providers[0].cloud: unknown key"), "{m}");
    assert!(m.contains("\"qcow2\" is not one of"), "{m}");
    assert!(
        m.contains("IMDSv2 requires 'snapshot' or 'ebs-direct'"),
        "{m}"
    );
}

#[test]
fn every_import_method_is_built_and_loads_without_a_warning() {
    let config = load(
        r#"
labels:
  - name: small
diskimages:
  - name: ubuntu
    elements: [ubuntu-minimal]
  - name: debian
    elements: [debian-minimal]
providers:
  - name: ec2
    driver: aws
    region-name: us-east-1
    diskimages:
      - name: ubuntu
        import-method: image
      - name: debian
    pools:
      - name: main
        labels:
          - name: small
            diskimage: ubuntu
            instance-type: t3.small
            key-name: zuul
"#,
    );
    let warnings = config.warnings.join("\n");
    assert!(
        !config.warnings.iter().any(|w| w.contains("import-method")),
        "{warnings}"
    );
}
