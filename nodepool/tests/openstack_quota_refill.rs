//! A pool at its cloud's limit refills without hammering it: with a
//! 3-server Nova quota, `min-ready: 5` and deletes that the cloud takes a
//! second to finish, each `nodepool delete` draws at most one quota refusal
//! (issue #19, point 8). The OpenStack simulator runs in this process (it
//! outlives nothing here, the launcher is never killed); the launcher is the
//! `nodepool` daemon.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use nodepool_core::model::{Node, NodeState};
use nodepool_openstack_sim::{SimConfig, SimLimits, SimState};
use support::{free_port, Daemon};

const WAIT: Duration = Duration::from_secs(60);

fn config(port: u16) -> String {
    format!(
        "webapp:
  port: {port}
  listen_address: 127.0.0.1
labels:
  - name: small
    min-ready: 5
providers:
  - name: sim
    driver: openstack
    cloud: sim
    rate: 0
    boot-timeout: 10
    cloud-images:
      - name: cirros
    pools:
      - name: main
        max-servers: 10
        labels:
          - name: small
            cloud-image: cirros
            flavor-name: m1.tiny
"
    )
}

/// Server creations the cloud was asked for, and servers it ever had.
struct Counter {
    seen: BTreeSet<String>,
}

impl Counter {
    fn sample(&mut self, sim: &SimState) {
        sim.read(|c| self.seen.extend(c.servers.keys().cloned()));
    }

    fn refusals(&self, sim: &SimState) -> usize {
        let posts = sim
            .request_log()
            .iter()
            .filter(|(method, path, _)| method == "POST" && path.ends_with("/servers"))
            .count();
        posts.saturating_sub(self.seen.len())
    }
}

async fn ready(daemon: &Daemon) -> Vec<Node> {
    daemon
        .store()
        .list_nodes()
        .await
        .expect("nodes")
        .into_iter()
        .filter(|n| n.state == Some(NodeState::Ready))
        .collect()
}

/// Sample the cloud until `count` nodes are ready (and stay so for 3 s).
async fn settle(daemon: &Daemon, sim: &SimState, counter: &mut Counter, count: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut stable_since: Option<tokio::time::Instant> = None;
    loop {
        counter.sample(sim);
        let n = ready(daemon).await.len();
        if n == count {
            let since = *stable_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() >= Duration::from_secs(3) {
                return;
            }
        } else {
            stable_since = None;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {count} ready nodes (have {n})\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_delete_at_the_cloud_limit_draws_at_most_one_quota_refusal() {
    let sim = SimState::new(SimConfig {
        limits: SimLimits {
            max_instances: 3,
            max_cores: 40,
            max_ram: 51200,
        },
        boot_delay_secs: 0.2,
        delete_delay_secs: 1.0,
        ..SimConfig::default()
    });
    let (base, _serving) = nodepool_openstack_sim::start(sim.clone())
        .await
        .expect("start the simulator");
    let port = free_port();
    let mut daemon = Daemon::prepare(&config(port), port);
    let clouds = daemon.state_dir().join("clouds.yaml");
    std::fs::write(
        &clouds,
        format!(
            "clouds:\n  sim:\n    region_name: RegionOne\n    auth:\n      auth_url: \
             {base}/identity/v3\n      username: demo\n      password: demo-password\n      \
             project_name: demo\n      user_domain_name: Default\n      \
             project_domain_name: Default\n"
        ),
    )
    .expect("clouds.yaml");
    daemon.env = vec![(
        "OS_CLIENT_CONFIG_FILE".to_string(),
        clouds.display().to_string(),
    )];
    daemon.spawn();
    let mut counter = Counter {
        seen: BTreeSet::new(),
    };
    settle(&daemon, &sim, &mut counter, 3).await;
    let at_start = counter.refusals(&sim);
    assert_eq!(
        at_start,
        0,
        "the cloud's quota is read ahead\n{}",
        daemon.logs()
    );

    for round in 1..=2 {
        let victim = ready(&daemon).await[0].id.clone();
        let out = daemon.cli(&["delete", &victim]);
        assert!(out.status.success(), "{out:?}");
        settle(&daemon, &sim, &mut counter, 3).await;
        let refusals = counter.refusals(&sim);
        assert!(
            refusals <= round,
            "{refusals} quota refusals after {round} deletes\n{}",
            daemon.logs()
        );
        assert!(
            !ready(&daemon).await.iter().any(|n| n.id == victim),
            "the deleted node is gone"
        );
    }
    assert!(sim.read(|c| c.servers.len()) <= 3);
    daemon.kill9();
}
