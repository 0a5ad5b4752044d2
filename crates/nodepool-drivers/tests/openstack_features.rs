//! What the OpenStack provider asks of the cloud: server contents, flavor
//! choice, boot-from-volume, floating IPs, port and floating-IP cleanup,
//! `rate`, and clouds.yaml lookup.

mod openstack_support;

use std::time::Duration;

use nodepool_core::provider::{InstanceState, Provider};
use nodepool_drivers::openstack::auth::Credentials;
use nodepool_drivers::openstack::clouds_yaml::load_cloud;
use nodepool_drivers::openstack::OpenStackProvider;
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
async fn rate_spaces_calls_to_one_service() {
    let sim = sim(SimConfig::default()).await;
    let yaml = NODEPOOL_YAML.replace("rate: 0", "rate: 0.2");
    let p = OpenStackProvider::connect(
        openstack_config(&yaml),
        password_cloud(&sim.base, "demo-password"),
    )
    .expect("provider");
    for _ in 0..3 {
        p.quota().await.expect("quota");
    }
    let times: Vec<f64> = sim
        .state
        .request_log()
        .into_iter()
        .filter(|(_, path, _)| path.ends_with("/limits"))
        .map(|(_, _, t)| t)
        .collect();
    assert_eq!(times.len(), 3);
    for pair in times.windows(2) {
        assert!(
            pair[1] - pair[0] >= 0.19,
            "calls {:.3}s apart",
            pair[1] - pair[0]
        );
    }
}

#[tokio::test]
async fn get_of_a_deleted_server_is_none_and_listing_skips_it() {
    let sim = sim(SimConfig::default()).await;
    let p = provider(&sim);
    let inst = p.create_instance(&spec("tiny")).await.expect("create");
    let listed = p.list_instances().await.expect("list");
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
        .list_instances()
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
