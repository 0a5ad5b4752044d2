//! `nodepool launcher` as a process with an upstream-style aws provider
//! whose `AWS_ENDPOINT_URL` points at moto: min-ready nodes are running
//! EC2 instances with upstream's tags, `nodepool delete` terminates the
//! instance, and after `kill -9`s of the launcher while nodes come and go,
//! moto's running instances and the node records agree within a cleanup
//! interval, never more than max-servers at once.
//!
//! Needs moto (`NODEPOOL_TEST_MOTO`, see scripts/moto.sh); prints SKIP
//! without it unless `NODEPOOL_TEST_REQUIRE_MOTO=1`.

mod support;

#[path = "../../nodepool-drivers/tests/aws_support/mod.rs"]
mod aws_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nodepool_drivers::aws::client::Params;
use nodepool_drivers::aws::AwsProvider;
use support::{free_port, wait_for, Daemon};

type Tags = BTreeMap<String, String>;

/// Live (pending or running) instances of provider `ec2-test`: id → tags.
async fn live(provider: &AwsProvider) -> BTreeMap<String, Tags> {
    try_live(provider).await.expect("DescribeInstances")
}

async fn try_live(
    provider: &AwsProvider,
) -> Result<BTreeMap<String, Tags>, nodepool_drivers::aws::error::AwsError> {
    let mut p = Params::new();
    p.filter("tag:nodepool_provider_name", &["ec2-test"])
        .filter("instance-state-name", &["pending", "running"]);
    let answer = provider.client().ec2("DescribeInstances", &p).await?;
    let out = answer
        .items("reservationSet")
        .flat_map(|r| r.items("instancesSet"))
        .map(|i| (i.text_at(&["instanceId"]).unwrap_or_default(), i.tags()))
        .collect();
    Ok(out)
}

fn yaml(port: u16, image_id: &str, min_ready: u32) -> String {
    format!(
        "webapp:
  port: {port}
  listen_address: 127.0.0.1
labels:
  - name: ubuntu
    min-ready: {min_ready}
providers:
  - name: ec2-test
    driver: aws
    region-name: us-west-2
    rate: 50
    cloud-images:
      - name: ubuntu
        image-id: {image_id}
        username: ubuntu
    pools:
      - name: main
        max-servers: 3
        host-key-checking: false
        node-attributes:
          key1: value1
        labels:
          - name: ubuntu
            cloud-image: ubuntu
            instance-type: t3.medium
            key-name: zuul
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_keeps_min_ready_in_moto_deletes_and_survives_kill9() {
    let Some(moto) = aws_support::start() else {
        return;
    };
    let (_, probe) = moto.provider(&aws_support::config("ami-x", "x", 3));
    let (image_id, _) = aws_support::stock_image(&probe).await;
    let observer = Arc::new(probe);

    let port = free_port();
    let env = vec![
        ("AWS_ENDPOINT_URL".to_string(), moto.url.clone()),
        ("AWS_ACCESS_KEY_ID".to_string(), "testing".to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), "testing".to_string()),
    ];
    let mut daemon = Daemon::start_with(&yaml(port, &image_id, 2), port, env);
    daemon.wait_ready();

    // Watch moto: never more than max-servers live instances.
    let peak = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (peak, stop, observer) = (peak.clone(), stop.clone(), observer.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(instances) = try_live(&observer).await {
                    peak.fetch_max(instances.len(), Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let wait = Duration::from_secs(60);
    let ready = wait_for("two ready nodes", wait, || {
        let ids = daemon.ids_in_state("ready");
        (ids.len() == 2).then_some(ids)
    });
    let listed = daemon.list();
    let instances = live(&observer).await;
    for id in &ready {
        let node = listed
            .iter()
            .find(|n| n["id"] == id.as_str())
            .expect("listed");
        // Upstream's `list --json` calls the external id `server_id`.
        let external = node["server_id"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no external id in {node}"));
        let tags = instances
            .get(&external)
            .unwrap_or_else(|| panic!("{external} is not running in moto"));
        assert_eq!(tags["nodepool_node_id"], *id);
        assert_eq!(tags["nodepool_pool_name"], "main");
        assert_eq!(tags["nodepool_provider_name"], "ec2-test");
    }

    // `nodepool delete` terminates the instance (and min-ready replaces it).
    let victim = ready[0].clone();
    let victim_instance = instances
        .iter()
        .find(|(_, t)| t["nodepool_node_id"] == victim)
        .map(|(i, _)| i.clone())
        .expect("victim instance");
    let out = daemon.cli(&["delete", &victim]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for _ in 0..600 {
        if !live(&observer).await.contains_key(&victim_instance) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !live(&observer).await.contains_key(&victim_instance),
        "nodepool delete did not terminate {victim_instance}\n{}",
        daemon.logs()
    );

    // Nodes come and go while the launcher is killed: raise min-ready so it
    // launches, kill -9 it mid-launch, lower it again, restart.
    for round in 0..2 {
        daemon.write_config(&yaml(port, &image_id, 3));
        tokio::time::sleep(Duration::from_millis(1500 + 500 * round)).await;
        daemon.kill9();
        daemon.write_config(&yaml(port, &image_id, 1));
        daemon.spawn();
        daemon.wait_ready();
    }

    // Within a cleanup interval and the leak grace (60 s each by default),
    // moto's running instances are exactly those of the node records.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(200);
    loop {
        let listed = daemon.list();
        let recorded: BTreeSet<String> = listed
            .iter()
            .filter_map(|n| n["server_id"].as_str().map(str::to_owned))
            .collect();
        let running: BTreeSet<String> = live(&observer).await.into_keys().collect();
        if !running.is_empty() && running.is_subset(&recorded) && recorded.is_subset(&running) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "moto and the records disagree: running {running:?}, recorded {recorded:?}\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.await;
    let peak = peak.load(Ordering::Relaxed);
    assert!(peak <= 3, "{peak} instances ran at once; max-servers is 3");
}
