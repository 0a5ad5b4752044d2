//! What the OpenStack provider asks of the cloud: server contents, flavor
//! choice, boot-from-volume, floating IPs, port and floating-IP cleanup,
//! `rate` through the wrapper stack, clouds.yaml lookup, and image uploads (properties, formats).

mod openstack_support;

use std::sync::Arc;
use std::time::Duration;

use nodepool_core::builder::upload::upload_metadata;
use nodepool_core::config::{load_str, DriverRegistry};
use nodepool_core::provider::wrappers::ProviderMetrics;
use nodepool_core::provider::{stack, ImageUploadSpec, InstanceState, Provider, ProviderExt};
use nodepool_drivers::openstack::auth::Credentials;
use nodepool_drivers::openstack::clouds_yaml::{image_format, load_cloud};
use nodepool_drivers::openstack::{openstack_provider_view, register, OpenStackProvider};
use nodepool_openstack_sim::SimConfig;
use openstack_support::{
    openstack_config, password_cloud, provider, provider_with, sim, spec, NODEPOOL_YAML,
};

#[tokio::test]
async fn server_carries_flavor_metadata_userdata_key_and_security_groups() {
    let sim = sim(SimConfig::default()).await;
    let p = provider(&sim);
    let s = spec("small");
    let inst = p.create_instance(&s).await.expect("create");
    let server = sim.state.read(|c| c.servers[&inst.external_id].clone());
    // min-ram 1024: the smallest flavor with at least that much RAM.
    assert_eq!(server.flavor_id, "2");
    assert_eq!(server.name, s.hostname);
    assert_eq!(server.key_name.as_deref(), Some("mykey"));
    assert_eq!(server.user_data.as_deref(), Some("I2Nsb3VkLWNvbmZpZwo="));
    assert_eq!(server.security_groups, vec!["default".to_string()]);
    assert_eq!(
        server.metadata.get("team").map(String::as_str),
        Some("infra")
    );
    for (k, v) in &s.metadata {
        assert_eq!(server.metadata.get(k), Some(v));
    }
    assert_eq!(server.image_id.as_deref(), Some("img-cirros"));
    let res = p.label_resources("main", "small").await.expect("resources");
    assert_eq!((res.cores, res.ram), (Some(1), Some(2048)));
    p.delete_instance(&inst.external_id).await.expect("delete");
}

#[tokio::test]
async fn dynamic_instance_properties_are_formatted_from_the_request() {
    let sim = sim(SimConfig::default()).await;
    let p = provider(&sim);
    let mut request = nodepool_core::model::NodeRequest::new(["small"]);
    request.id = "100-0000000042".into();
    request.tenant_name = Some("acme".into());
    request.requestor_data = Some(nodepool_core::model::json::JsonValue::Object(
        [(
            "project".to_string(),
            nodepool_core::model::json::JsonValue::from("infra/zuul"),
        )]
        .into_iter()
        .collect(),
    ));
    let mut s = spec("small");
    s.request = Some(request.safe_attributes());
    let inst = p.create_instance(&s).await.expect("create");
    let server = sim.state.read(|c| c.servers[&inst.external_id].clone());
    assert_eq!(
        server.metadata.get("tenant").map(String::as_str),
        Some("acme")
    );
    assert_eq!(
        server.metadata.get("project").map(String::as_str),
        Some("infra/zuul")
    );
    // A template naming no attribute is left out, as upstream does.
    assert!(!server.metadata.contains_key("broken"));
    // The static properties and nodepool's keys are still there.
    assert_eq!(
        server.metadata.get("team").map(String::as_str),
        Some("infra")
    );
    for (k, v) in &s.metadata {
        assert_eq!(server.metadata.get(k), Some(v));
    }
    // Without a request (min-ready nodes have one too, but a bare spec has
    // none) nothing dynamic is set.
    let bare = p.create_instance(&spec("small")).await.expect("create");
    let server = sim.state.read(|c| c.servers[&bare.external_id].clone());
    assert!(!server.metadata.contains_key("tenant"));
    p.delete_instance(&inst.external_id).await.expect("delete");
    p.delete_instance(&bare.external_id).await.expect("delete");
}

#[tokio::test]
async fn boot_from_volume_sends_a_volume_block_device() {
    let sim = sim(SimConfig::default()).await;
    let p = provider(&sim);
    let inst = p.create_instance(&spec("bfv")).await.expect("create");
    let server = sim.state.read(|c| c.servers[&inst.external_id].clone());
    let volume = server.boot_volume.expect("booted from a volume");
    assert_eq!(volume.size, 10);
    assert!(volume.delete_on_termination);
    assert_eq!(server.image_id, None);
    assert_eq!(server.flavor_id, "1");
    p.delete_instance(&inst.external_id).await.expect("delete");
}

#[tokio::test]
async fn active_server_gets_a_floating_ip_that_is_deleted_with_it() {
    let sim = sim(SimConfig {
        boot_delay_secs: 0.0,
        ..SimConfig::default()
    })
    .await;
    let p = provider(&sim);
    let inst = p.create_instance(&spec("tiny")).await.expect("create");
    let active = p
        .wait_active(&inst.external_id, Duration::from_secs(5))
        .await
        .expect("active");
    let fip = sim
        .state
        .read(|c| c.floating_ips.values().next().cloned())
        .expect("a floating IP");
    assert_eq!(active.interface_ip.as_deref(), Some(fip.address.as_str()));
    assert_eq!(active.public_ipv4.as_deref(), Some(fip.address.as_str()));
    assert!(active
        .private_ipv4
        .as_deref()
        .is_some_and(|a| a.starts_with("10.0.0.")));
    // A second poll does not add another one.
    p.get_instance(&inst.external_id).await.expect("get");
    assert_eq!(sim.state.read(|c| c.floating_ips.len()), 1);
    p.delete_instance(&inst.external_id).await.expect("delete");
    assert_eq!(sim.state.read(|c| c.floating_ips.len()), 0);
}

#[tokio::test]
async fn private_cloud_uses_the_private_address_without_floating_ip() {
    let sim = sim(SimConfig {
        boot_delay_secs: 0.0,
        ..SimConfig::default()
    })
    .await;
    let mut cloud = password_cloud(&sim.base, "demo-password");
    cloud.private = true;
    let p = provider_with(&sim, NODEPOOL_YAML, cloud);
    let inst = p.create_instance(&spec("tiny")).await.expect("create");
    let active = p
        .wait_active(&inst.external_id, Duration::from_secs(5))
        .await
        .expect("active");
    assert!(active
        .interface_ip
        .as_deref()
        .is_some_and(|a| a.starts_with("10.0.0.")));
    assert_eq!(sim.state.read(|c| c.floating_ips.len()), 0);
    p.delete_instance(&inst.external_id).await.expect("delete");
}

#[tokio::test]
async fn down_ports_seen_twice_are_deleted_and_others_kept() {
    let sim = sim(SimConfig::default()).await;
    let p = provider(&sim);
    let leaked = sim.state.update(|c| {
        let id = "leaked-port".to_string();
        let mut port = nodepool_openstack_sim::state::Port {
            id: id.clone(),
            network_id: "net-private".to_string(),
            device_id: String::new(),
            device_owner: String::new(),
            status: "DOWN".to_string(),
            ip: "10.0.0.200".to_string(),
            mac: "fa:16:3e:00:00:01".to_string(),
        };
        c.ports.insert(id.clone(), port.clone());
        port.id = "dhcp-port".to_string();
        port.device_owner = "network:dhcp".to_string();
        c.ports.insert(port.id.clone(), port);
        id
    });
    assert_eq!(p.cleanup_leaked_ports(true).await.expect("first pass"), 0);
    assert_eq!(p.cleanup_leaked_ports(true).await.expect("second pass"), 1);
    let (gone, dhcp) = sim.state.read(|c| {
        (
            !c.ports.contains_key(&leaked),
            c.ports.contains_key("dhcp-port"),
        )
    });
    assert!(gone && dhcp);
}

#[tokio::test]
async fn unattached_floating_ips_are_cleaned() {
    let sim = sim(SimConfig::default()).await;
    let p = provider(&sim);
    sim.state.update(|c| {
        c.floating_ips.insert(
            "fip-1".to_string(),
            nodepool_openstack_sim::state::FloatingIp {
                id: "fip-1".to_string(),
                address: "203.0.113.77".to_string(),
                network_id: "net-public".to_string(),
                port_id: None,
                status: "DOWN".to_string(),
            },
        )
    });
    assert_eq!(p.cleanup_floating_ips().await.expect("cleanup"), 1);
    assert!(sim.state.read(|c| c.floating_ips.is_empty()));
}

#[tokio::test]
async fn rate_from_the_config_spaces_calls_through_the_stack() {
    let sim = sim(SimConfig::default()).await;
    let yaml = NODEPOOL_YAML.replace("rate: 0", "rate: 0.2");
    let mut reg = DriverRegistry::new();
    register(&mut reg);
    let config = load_str("nodepool.yaml", &yaml, &reg).unwrap_or_else(|e| panic!("config: {e}"));
    let driver = OpenStackProvider::connect(
        openstack_config(&yaml),
        password_cloud(&sim.base, "demo-password"),
    )
    .expect("provider");
    // The wrapper spaces the starts of provider calls; fetch the token
    // first so the first call's request is not later than its start.
    let driver = Arc::new(driver);
    driver.quota().await.expect("warm-up quota");
    let metrics = Arc::new(ProviderMetrics::new());
    let p = stack(driver, &config.providers[0], &metrics);
    for _ in 0..3 {
        p.quota().await.expect("quota");
    }
    let times: Vec<f64> = sim
        .state
        .request_log()
        .into_iter()
        .filter(|(_, path, _)| path.ends_with("/limits"))
        .map(|(_, _, t)| t)
        .skip(1)
        .collect();
    assert_eq!(times.len(), 3);
    for pair in times.windows(2) {
        assert!(
            pair[1] - pair[0] >= 0.19,
            "calls {:.3}s apart",
            pair[1] - pair[0]
        );
    }
    let quota = metrics.get(p.name(), "quota").expect("timed");
    assert_eq!((quota.calls, quota.errors), (3, 0));
}

#[tokio::test]
async fn get_of_a_deleted_server_is_none_and_listing_skips_it() {
    let sim = sim(SimConfig::default()).await;
    let p = provider(&sim);
    let inst = p.create_instance(&spec("tiny")).await.expect("create");
    let listed = p.list_all_instances().await.expect("list");
    assert!(listed
        .iter()
        .any(|i| i.external_id == inst.external_id && i.state == Some(InstanceState::Building)));
    p.delete_instance(&inst.external_id).await.expect("delete");
    assert!(p
        .get_instance(&inst.external_id)
        .await
        .expect("get")
        .is_none());
    assert!(p
        .list_all_instances()
        .await
        .expect("list")
        .iter()
        .all(|i| i.external_id != inst.external_id));
}

#[test]
fn clouds_yaml_is_found_through_os_client_config_file_and_merged_with_secure_yaml() {
    let dir = std::env::temp_dir().join(format!("np-clouds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let clouds = dir.join("my-clouds.yaml");
    std::fs::write(
        &clouds,
        "clouds:\n  sim:\n    region_name: RegionOne\n    image_format: raw\n    auth:\n      auth_url: http://127.0.0.1:5000/v3\n      username: demo\n      project_name: demo\n      domain_name: Default\n",
    )
    .expect("clouds.yaml");
    std::fs::write(
        dir.join("secure.yaml"),
        "clouds:\n  sim:\n    auth:\n      password: s3cret\n",
    )
    .expect("secure");
    let env = |k: &str| (k == "OS_CLIENT_CONFIG_FILE").then(|| clouds.display().to_string());
    let cloud = load_cloud("sim", Some("RegionTwo"), &env, &dir).expect("cloud");
    assert_eq!(cloud.region_name.as_deref(), Some("RegionTwo"));
    assert_eq!(cloud.image_format, "raw");
    match &cloud.credentials {
        Credentials::Password {
            password,
            user_domain_name,
            project_domain_name,
            ..
        } => {
            assert_eq!(password.expose(), "s3cret");
            assert_eq!(user_domain_name.as_deref(), Some("Default"));
            assert_eq!(project_domain_name.as_deref(), Some("Default"));
        }
        other => panic!("expected password credentials, got {other:?}"),
    }
    let missing = load_cloud("other", None, &env, &dir).expect_err("no such cloud");
    assert!(
        missing.to_string().contains("no cloud named other"),
        "{missing}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// openstacksdk's statsd settings: `metrics: statsd:` at the top of
/// clouds.yaml (the secure file merged in), the cloud's own overriding it
/// key by key, the environment before the top; nothing without a host or
/// a port.
#[test]
fn clouds_yaml_metrics_statsd_decides_where_per_call_metrics_go() {
    use nodepool_drivers::openstack::api_metrics::ApiStatsd;
    let dir = std::env::temp_dir().join(format!("np-clouds-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let clouds = dir.join("clouds.yaml");
    let cloud = |name: &str, extra: &str| {
        format!(
            "  {name}:\n{extra}    auth:\n      auth_url: http://127.0.0.1:5000/v3\n      \
             username: demo\n      password: p\n      project_name: demo\n"
        )
    };
    std::fs::write(
        &clouds,
        format!(
            "metrics:\n  statsd:\n    host: stats.example.org\nclouds:\n{}{}",
            cloud("plain", ""),
            cloud(
                "own",
                "    metrics:\n      statsd:\n        prefix: sdk.own\n"
            ),
        ),
    )
    .expect("clouds.yaml");
    std::fs::write(
        dir.join("secure.yaml"),
        "metrics:\n  statsd:\n    port: 9125\n",
    )
    .expect("secure");
    let file = clouds.display().to_string();
    let settings = |name: &str, vars: &[(&str, &str)]| {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = |k: &str| {
            if k == "OS_CLIENT_CONFIG_FILE" {
                return Some(file.clone());
            }
            vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        };
        load_cloud(name, None, &env, &dir)
            .expect("cloud")
            .api_statsd
    };
    let want = |target: &str, prefix: &str| {
        Some(ApiStatsd {
            target: target.into(),
            prefix: prefix.into(),
        })
    };
    assert_eq!(
        settings("plain", &[]),
        want("stats.example.org:9125", "openstack.api")
    );
    assert_eq!(
        settings("own", &[("STATSD_PREFIX", "env")]),
        want("stats.example.org:9125", "sdk.own")
    );
    assert_eq!(
        settings(
            "plain",
            &[("STATSD_HOST", "127.0.0.1"), ("STATSD_PREFIX", "env")]
        ),
        want("127.0.0.1:9125", "env")
    );
    std::fs::write(
        &clouds,
        cloud("bare", "").replacen("  bare", "clouds:\n  bare", 1),
    )
    .expect("clouds.yaml");
    std::fs::remove_file(dir.join("secure.yaml")).expect("no secure file");
    assert_eq!(settings("bare", &[]), None);
    let _ = std::fs::remove_dir_all(dir);
}

/// A provider uploading diskimage `ubuntu`, whose top-level `metadata` and
/// provider `meta` mix strings, a bool, an int and a Glance attribute.
const IMAGES_YAML: &str = r##"
labels:
  - name: small
diskimages:
  - name: ubuntu
    metadata:
      os_distro: ubuntu
      owner_team: ci
providers:
  - name: sim
    driver: openstack
    cloud: sim
    rate: 0
    image-upload-timeout: 10
    diskimages:
      - name: ubuntu
        meta:
          owner_team: infra
          hw_qemu_guest_agent: true
          min_ram: 1024
    pools:
      - name: main
        labels:
          - name: small
            diskimage: ubuntu
            min-ram: 1024
"##;

/// An image file of `format` with diskimage-builder's checksum files.
fn image_file(tag: &str, format: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("np-os-img-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(format!("ubuntu-0000000001.{format}"));
    std::fs::write(&path, vec![3u8; 70_000]).expect("image");
    std::fs::write(
        format!("{}.md5", path.display()),
        "0123456789abcdef0123456789abcdef  ubuntu.qcow2\n",
    )
    .expect("md5");
    std::fs::write(
        format!("{}.sha256", path.display()),
        format!("{}\n", "a".repeat(64)),
    )
    .expect("sha256");
    path
}

fn upload_spec(yaml: &str, path: std::path::PathBuf, format: &str) -> ImageUploadSpec {
    let mut reg = DriverRegistry::new();
    register(&mut reg);
    let config = load_str("nodepool.yaml", yaml, &reg).unwrap_or_else(|e| panic!("config: {e}"));
    let image = &config.providers[0].diskimages[0];
    ImageUploadSpec {
        diskimage: "ubuntu".to_string(),
        build_id: "b1".to_string(),
        upload_id: "0000000001".to_string(),
        external_name: "ubuntu-1700000000".to_string(),
        path,
        format: format.to_string(),
        metadata: upload_metadata(config.diskimage("ubuntu"), image, "b1", "0000000001"),
    }
}

#[tokio::test]
async fn upload_sets_upstreams_image_properties() {
    let sim = sim(SimConfig::default()).await;
    let p = provider_with(
        &sim,
        IMAGES_YAML,
        password_cloud(&sim.base, "demo-password"),
    );
    let file = image_file("props", "qcow2");
    let spec = upload_spec(IMAGES_YAML, file.clone(), "qcow2");
    let id = p.upload_image(&spec).await.expect("upload");
    let image = sim
        .state
        .read(|c| c.images.get(&id).cloned())
        .expect("image in glance");
    assert_eq!(image.name, "ubuntu-1700000000");
    assert_eq!(image.status, "active");
    assert_eq!(image.disk_format.as_deref(), Some("qcow2"));
    assert_eq!(image.container_format.as_deref(), Some("bare"));
    assert_eq!(image.visibility, "private");
    assert_eq!(image.size, Some(70_000));
    // `min_ram` of the meta is the Glance attribute, as an integer.
    assert_eq!(image.min_ram, 1024);
    let prop = |k: &str| {
        image
            .properties
            .get(k)
            .and_then(|v| v.as_str().map(str::to_string))
    };
    assert_eq!(prop("nodepool_build_id").as_deref(), Some("b1"));
    assert_eq!(prop("nodepool_upload_id").as_deref(), Some("0000000001"));
    assert_eq!(prop("nodepool_provider_name").as_deref(), Some("sim"));
    assert_eq!(prop("os_distro").as_deref(), Some("ubuntu"));
    // The provider's meta wins over the diskimage's metadata.
    assert_eq!(prop("owner_team").as_deref(), Some("infra"));
    // Python's str(True), as upstream sends a YAML bool.
    assert_eq!(prop("hw_qemu_guest_agent").as_deref(), Some("True"));
    assert_eq!(
        prop("owner_specified.openstack.md5").as_deref(),
        Some("0123456789abcdef0123456789abcdef")
    );
    assert_eq!(
        prop("owner_specified.openstack.sha256"),
        Some("a".repeat(64))
    );
    assert_eq!(
        prop("owner_specified.openstack.object").as_deref(),
        Some("images/ubuntu-1700000000")
    );
    // list_images reports the nodepool properties back.
    let listed = p.list_images().await.expect("list");
    let mine = listed.iter().find(|i| i.external_id == id).expect("listed");
    assert_eq!(
        mine.metadata
            .get("nodepool_provider_name")
            .map(String::as_str),
        Some("sim")
    );
    p.delete_image(&id).await.expect("delete");
    let _ = std::fs::remove_dir_all(file.parent().expect("dir"));
}

#[tokio::test]
async fn upload_in_a_format_glance_does_not_accept_fails_before_creating_the_image() {
    let sim = sim(SimConfig {
        disk_formats: vec!["raw".to_string()],
        ..SimConfig::default()
    })
    .await;
    let mut cloud = password_cloud(&sim.base, "demo-password");
    cloud.image_format = "raw".to_string();
    let p = provider_with(&sim, IMAGES_YAML, cloud);
    let file = image_file("refused", "qcow2");
    let err = p
        .upload_image(&upload_spec(IMAGES_YAML, file.clone(), "qcow2"))
        .await
        .expect_err("qcow2 refused");
    assert!(!err.is_retryable(), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("does not accept disk_format qcow2") && text.contains("accepts raw"),
        "{text}"
    );
    assert!(sim
        .state
        .read(|c| c.images.values().all(|i| i.name != "ubuntu-1700000000")));
    let _ = std::fs::remove_dir_all(file.parent().expect("dir"));
}

#[tokio::test]
async fn upload_without_a_format_uses_the_clouds_image_format() {
    let sim = sim(SimConfig::default()).await;
    let mut cloud = password_cloud(&sim.base, "demo-password");
    cloud.image_format = "raw".to_string();
    let p = provider_with(&sim, IMAGES_YAML, cloud);
    let file = image_file("cloudfmt", "raw");
    let id = p
        .upload_image(&upload_spec(IMAGES_YAML, file.clone(), ""))
        .await
        .expect("upload");
    let format = sim
        .state
        .read(|c| c.images.get(&id).and_then(|i| i.disk_format.clone()));
    assert_eq!(format.as_deref(), Some("raw"));
    p.delete_image(&id).await.expect("delete");
    let _ = std::fs::remove_dir_all(file.parent().expect("dir"));
}

#[test]
fn clouds_yaml_image_format_decides_the_build_format_of_the_view() {
    let dir = std::env::temp_dir().join(format!("np-clouds-fmt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("clouds.yaml"),
        "clouds:\n  vhdcloud:\n    image_format: vhd\n  plain:\n    auth: {}\n",
    )
    .expect("clouds.yaml");
    let env = |_: &str| None;
    assert_eq!(image_format("vhdcloud", &env, &dir), "vhd");
    assert_eq!(image_format("plain", &env, &dir), "qcow2");
    assert_eq!(image_format("missing", &env, &dir), "qcow2");
    // The view the builder reads takes the format the config carries.
    let mut typed = (*openstack_config(IMAGES_YAML)).clone();
    typed.image_format = image_format("vhdcloud", &env, &dir);
    let common = nodepool_core::config::ProviderCommon {
        name: typed.name.clone(),
        driver: "openstack".to_string(),
        location: Default::default(),
        max_concurrency: -1,
        priority: None,
    };
    let typed = std::sync::Arc::new(typed);
    let view = openstack_provider_view(common, &typed, typed.clone());
    assert_eq!(view.diskimages[0].format, "vhd");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn pool_availability_zones_place_every_node_of_a_request_in_one_of_them() {
    let sim = sim(SimConfig {
        availability_zones: vec!["az1".into(), "az2".into(), "az3".into()],
        ..SimConfig::default()
    })
    .await;
    let yaml = NODEPOOL_YAML.replace(
        "        security-groups: [default]\n",
        "        security-groups: [default]\n        availability-zones: [az2, az3]\n",
    );
    let p = provider_with(&sim, &yaml, password_cloud(&sim.base, "demo-password"));
    let mut zones = std::collections::BTreeSet::new();
    for n in 0..12 {
        let request_id = format!("100-00000000{n:02}");
        let mut per_request = std::collections::BTreeSet::new();
        for _ in 0..2 {
            let mut s = spec("tiny");
            s.request = Some(serde_json::json!({ "id": request_id }));
            let inst = p.create_instance(&s).await.expect("create");
            let az = sim.state.read(|c| c.servers[&inst.external_id].az.clone());
            per_request.insert(az.clone());
            zones.insert(az);
            p.delete_instance(&inst.external_id).await.expect("delete");
        }
        assert_eq!(
            per_request.len(),
            1,
            "the nodes of {request_id} share a zone"
        );
    }
    let expected: std::collections::BTreeSet<String> = ["az2", "az3"].map(String::from).into();
    assert_eq!(zones, expected, "only the pool's zones, both used");

    // A zone the engine asks for wins; no pool zones leave it to Nova.
    let mut s = spec("tiny");
    s.az = Some("az1".into());
    let inst = p.create_instance(&s).await.expect("create in az1");
    assert_eq!(
        sim.state.read(|c| c.servers[&inst.external_id].az.clone()),
        "az1"
    );
    let plain = provider(&sim);
    let inst = plain.create_instance(&spec("tiny")).await.expect("create");
    assert_eq!(
        sim.state.read(|c| c.servers[&inst.external_id].az.clone()),
        "az1",
        "the simulator's default zone"
    );
}
