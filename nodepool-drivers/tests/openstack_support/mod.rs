//! Shared setup of the OpenStack driver tests: a simulator on loopback and
//! providers configured against it.
#![allow(dead_code)]

use std::sync::Arc;

use nodepool_core::config::{load_str, DriverRegistry};
use nodepool_drivers::openstack::auth::{Credentials, Secret};
use nodepool_drivers::openstack::clouds_yaml::CloudConfig;
use nodepool_drivers::openstack::{register, OpenStackConfig, OpenStackProvider};
use nodepool_openstack_sim::{start, SimConfig, SimState};

/// A pool `main` with labels `small` (min-ram, metadata, userdata),
/// `tiny` (flavor by name) and `bfv` (boot from volume); `rate: 0`.
pub const NODEPOOL_YAML: &str = r##"
labels:
  - name: small
  - name: tiny
  - name: bfv
providers:
  - name: sim
    driver: openstack
    cloud: sim
    rate: 0
    boot-timeout: 10
    port-cleanup-interval: 600
    cloud-images:
      - name: cirros
    pools:
      - name: main
        security-groups: [default]
        labels:
          - name: small
            cloud-image: cirros
            min-ram: 1024
            key-name: mykey
            userdata: "#cloud-config\n"
            instance-properties:
              team: infra
            dynamic-instance-properties:
              tenant: "{request.tenant_name}"
              project: "{request.requestor_data[project]}"
              broken: "{request.no_such_attribute}"
          - name: tiny
            cloud-image: cirros
            flavor-name: m1.tiny
          - name: bfv
            cloud-image: cirros
            flavor-name: m1.tiny
            boot-from-volume: true
            volume-size: 10
"##;

/// A running simulator.
pub struct Sim {
    pub base: String,
    pub state: SimState,
}

pub async fn sim(config: SimConfig) -> Sim {
    let state = SimState::new(config);
    let (base, _task) = start(state.clone()).await.expect("simulator starts");
    Sim { base, state }
}

pub fn openstack_config(yaml: &str) -> Arc<OpenStackConfig> {
    let mut reg = DriverRegistry::new();
    register(&mut reg);
    let config = load_str("nodepool.yaml", yaml, &reg).unwrap_or_else(|e| panic!("config: {e}"));
    let typed = config.providers[0]
        .driver_config
        .as_any()
        .downcast_ref::<OpenStackConfig>()
        .expect("an openstack config")
        .clone();
    Arc::new(typed)
}

pub fn password_cloud(base: &str, password: &str) -> CloudConfig {
    CloudConfig {
        name: "sim".to_string(),
        region_name: Some("RegionOne".to_string()),
        auth_url: format!("{base}/identity/v3"),
        credentials: Credentials::Password {
            username: Some("demo".to_string()),
            user_id: None,
            password: Secret::new(password),
            user_domain_name: Some("Default".to_string()),
            user_domain_id: None,
            project_name: Some("demo".to_string()),
            project_id: None,
            project_domain_name: Some("Default".to_string()),
            project_domain_id: None,
        },
        interface: "public".to_string(),
        image_format: "qcow2".to_string(),
        private: false,
        floating_ips: true,
        verify: true,
        cacert: None,
        use_image_import: false,
        api_statsd: None,
    }
}

pub fn provider_with(sim: &Sim, yaml: &str, cloud: CloudConfig) -> OpenStackProvider {
    let _ = &sim.base;
    OpenStackProvider::connect(openstack_config(yaml), cloud).expect("provider")
}

pub fn provider(sim: &Sim) -> OpenStackProvider {
    provider_with(
        sim,
        NODEPOOL_YAML,
        password_cloud(&sim.base, "demo-password"),
    )
}

/// A launch spec of `label` in pool `main` with the nodepool metadata.
pub fn spec(label: &str) -> nodepool_core::provider::LaunchSpec {
    use nodepool_core::provider::*;
    let node_id = format!("{:010}", rand_id());
    nodepool_core::provider::LaunchSpec {
        hostname: format!("np{node_id}"),
        pool: "main".to_string(),
        label: label.to_string(),
        image: None,
        metadata: [
            (META_PROVIDER.to_string(), "sim".to_string()),
            (META_POOL.to_string(), "main".to_string()),
            (META_NODE_ID.to_string(), node_id.clone()),
            (META_GROUPS.to_string(), format!("sim,cirros,{label}")),
        ]
        .into_iter()
        .collect(),
        node_id,
        az: None,
        request: None,
    }
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}
