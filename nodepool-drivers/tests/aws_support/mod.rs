//! A moto server for the aws tests: its own process on a free port, so
//! instances outlive the code under test, stopped when dropped.
//!
//! `NODEPOOL_TEST_MOTO` names moto's `moto_server` (scripts/moto.sh
//! installs it); without it the tests print SKIP and pass, unless
//! `NODEPOOL_TEST_REQUIRE_MOTO=1` (scripts/test.sh sets both).

#![allow(dead_code)] // Each test file uses a different part.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodepool_core::config::{load_str, ProviderConfig};
use nodepool_drivers::aws::client::{Params, Xml};
use nodepool_drivers::aws::{AwsConfig, AwsProvider};

/// A running moto server.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start moto, or `None` after printing why the test is skipped.
pub fn start() -> Option<Moto> {
    let Some(bin) = std::env::var_os("NODEPOOL_TEST_MOTO") else {
        if std::env::var("NODEPOOL_TEST_REQUIRE_MOTO").as_deref() == Ok("1") {
            panic!("NODEPOOL_TEST_REQUIRE_MOTO=1 but NODEPOOL_TEST_MOTO is not set");
        }
        println!("SKIP: NODEPOOL_TEST_MOTO is not set; run scripts/moto.sh install");
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin:?}: {e}"));
    let moto = Moto {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(moto)
}

impl Moto {
    /// The environment an AWS SDK would see pointed at this server.
    pub fn env(&self) -> impl Fn(&str) -> Option<String> {
        let url = self.url.clone();
        move |k: &str| match k {
            "AWS_ENDPOINT_URL" => Some(url.clone()),
            "AWS_ACCESS_KEY_ID" => Some("testing".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("testing".to_string()),
            _ => None,
        }
    }

    /// A provider of `yaml` (a whole nodepool.yaml) talking to moto.
    pub fn provider(&self, yaml: &str) -> (ProviderConfig, AwsProvider) {
        self.provider_with(yaml, Vec::new())
    }

    /// [`Moto::provider`] with more environment (endpoint overrides).
    pub fn provider_with(
        &self,
        yaml: &str,
        extra: Vec<(&'static str, String)>,
    ) -> (ProviderConfig, AwsProvider) {
        let base = self.env();
        let env = move |k: &str| {
            extra
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.clone())
                .or_else(|| base(k))
        };
        let config = match load_str(
            "nodepool.yaml",
            yaml,
            &nodepool_drivers::registry::builtin(),
        ) {
            Ok(c) => c,
            Err(e) => panic!("config should load:\n{e}"),
        };
        let provider_cfg = config.providers[0].clone();
        let typed = provider_cfg
            .driver_config
            .as_any()
            .downcast_ref::<AwsConfig>()
            .expect("an aws provider")
            .clone();
        let provider = AwsProvider::from_env(Arc::new(typed), &env).expect("provider from env");
        (provider_cfg, provider)
    }
}

/// The id and name of one of moto's stock Amazon images.
pub async fn stock_image(provider: &AwsProvider) -> (String, String) {
    let mut p = Params::new();
    p.set("Owner.1", "amazon");
    let answer = provider
        .client()
        .ec2("DescribeImages", &p)
        .await
        .expect("DescribeImages");
    let image = answer
        .items("imagesSet")
        .find(|i| i.text_at(&["name"]).is_some_and(|n| n.starts_with("amzn")))
        .or_else(|| answer.items("imagesSet").next())
        .expect("moto has stock images");
    (
        image.text_at(&["imageId"]).expect("id"),
        image.text_at(&["name"]).expect("name"),
    )
}

/// DescribeInstances of one id, as moto holds it.
pub async fn describe(provider: &AwsProvider, id: &str) -> Xml {
    let mut p = Params::new();
    p.set("InstanceId.1", id);
    let answer = provider
        .client()
        .ec2("DescribeInstances", &p)
        .await
        .expect("DescribeInstances");
    let item = answer
        .items("reservationSet")
        .flat_map(|r| r.items("instancesSet"))
        .next()
        .cloned();
    item.expect("instance in moto")
}

/// A nodepool.yaml with one aws provider booting `image_id`.
pub fn config(image_id: &str, image_name: &str, max_servers: u32) -> String {
    format!(
        r##"
labels:
  - name: small
  - name: tagged
  - name: spot
  - name: by-filters
  - name: fleet
  - name: from-dib
  - name: dedicated

diskimages:
  - name: suite
    elements: [ubuntu-minimal]
  - name: snap
    elements: [ubuntu-minimal]
  - name: imported
    elements: [ubuntu-minimal]

providers:
  - name: ec2-test
    driver: aws
    region-name: us-west-2
    rate: 100
    object-storage:
      bucket-name: nodepool-images
    cloud-images:
      - name: stock
        image-id: {image_id}
        username: ec2-user
      - name: stock-by-name
        image-filters:
          - name: name
            values: ["{image_name}"]
        username: ec2-user
    diskimages:
      - name: suite
        import-method: ebs-direct
        imds-support: v2.0
        volume-size: 4
        tags:
          built-by: nodepool-rs
      - name: snap
      - name: imported
        import-method: image
        architecture: x86_64
    pools:
      - name: main
        max-servers: {max_servers}
        labels:
          - name: small
            cloud-image: stock
            instance-type: t3.medium
            key-name: zuul
          - name: tagged
            cloud-image: stock
            instance-type: t3.medium
            key-name: zuul
            userdata: "#!/bin/sh\necho hello"
            imdsv2: required
            volume-size: 20
            volume-type: gp3
            tags:
              has-tags: true
              Name: ignored-name
            dynamic-tags:
              dynamic-tenant: "Tenant is {{request.tenant_name}}"
          - name: spot
            cloud-image: stock
            instance-type: t3.small
            key-name: zuul
            use-spot: true
          - name: by-filters
            cloud-image: stock-by-name
            instance-type: t3.micro
            key-name: zuul
          - name: fleet
            cloud-image: stock
            fleet:
              instance-types: [t3.nano, t3.micro]
              allocation-strategy: prioritized
            key-name: zuul
          - name: from-dib
            diskimage: suite
            instance-type: t3.micro
            key-name: zuul
      - name: hosts
        availability-zone: us-west-2b
        labels:
          - name: dedicated
            cloud-image: stock
            instance-type: m5.large
            key-name: zuul
            dedicated-host: true
"##
    )
}
