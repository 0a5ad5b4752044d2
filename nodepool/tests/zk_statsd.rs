//! Upstream's per-launcher gauges of its ZooKeeper client (`reportStats`,
//! every ten seconds from every launcher) sent by our launcher on
//! ZooKeeper: `nodepool.launcher.<hostname>.zk.client.connection_queue`
//! and the `event_queue` and `playback_queue` of the node and request
//! caches, under the host name as it is, as whole-number gauges; the image
//! cache's, which have no counterpart here, are not sent.
//!
//! Needs `NODEPOOL_TEST_ZK_*` (see `zk_support`).

mod zk_support;

use std::collections::BTreeMap;
use std::time::Duration;

use nodepool_core::model::{NodeRequest, RequestState};
use nodepool_core::store::NodeStore;
use tokio::net::UdpSocket;
use zk_support::{env_or_skip, wait_for, wait_registered, World};

/// This host's name as the daemon reads it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launcher_on_zookeeper_sends_upstreams_zk_gauges() {
    let test = "a_launcher_on_zookeeper_sends_upstreams_zk_gauges";
    let Some(env) = env_or_skip(test, &[]) else {
        return;
    };
    let receiver = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let statsd_port = receiver.local_addr().expect("addr").port().to_string();
    let world = World::new("zk-statsd", env);
    let mut daemon = world.start_launcher_with_env(
        "launcher",
        &[("STATSD_HOST", "127.0.0.1"), ("STATSD_PORT", &statsd_port)],
    );
    let store = world.store().await;
    wait_registered(&world, &store, 1).await;

    // Some work for the store and the caches.
    let id = store
        .create_request(&NodeRequest::new(["small"]), "100")
        .await
        .expect("storing a request");
    wait_for("the request fulfilled", Duration::from_secs(60), || async {
        let r = store.get_request(&id).await.ok()??;
        (r.state == Some(RequestState::Fulfilled)).then_some(())
    })
    .await;

    let root = format!("nodepool.launcher.{}.zk", hostname());
    let names: Vec<String> = [
        "client.connection_queue",
        "node_cache.event_queue",
        "node_cache.playback_queue",
        "request_cache.event_queue",
        "request_cache.playback_queue",
    ]
    .iter()
    .map(|n| format!("{root}.{n}"))
    .collect();
    // name → (value, type) of the last line received.
    let mut seen: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut all = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut buf = vec![0u8; 65536];
    while !names.iter().all(|n| seen.contains_key(n)) {
        let n = match tokio::time::timeout_at(deadline, receiver.recv(&mut buf)).await {
            Ok(received) => received.expect("recv"),
            Err(_) => panic!(
                "not every zk gauge arrived: {seen:#?}\nlines: {all:#?}\n{}",
                daemon.log_text()
            ),
        };
        for line in String::from_utf8_lossy(&buf[..n]).lines() {
            all.push(line.to_owned());
            let Some((name, rest)) = line.split_once(':') else {
                panic!("no ':' in statsd line {line:?}");
            };
            if name.starts_with(&root) {
                let (value, kind) = rest.split_once('|').expect("a type");
                seen.insert(name.to_owned(), (value.to_owned(), kind.to_owned()));
            }
        }
    }
    for name in &names {
        let (value, kind) = &seen[name];
        assert_eq!(kind, "g", "{name} is a gauge");
        value
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("{name}: a whole number, not {value:?}"));
    }
    assert!(
        !seen.keys().any(|n| n.contains("image_cache")),
        "no image cache to measure: {seen:#?}"
    );
    daemon.stop().await;
}
