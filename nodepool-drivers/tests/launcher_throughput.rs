//! Launcher engine throughput with the fake cloud's defaults (20 instances,
//! 0.1 s boots): clients return each node as `used` as soon as their request
//! is fulfilled.

mod launcher_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use launcher_support::{settings, yaml, Harness, RequestOptions};
use nodepool_core::model::{NodeRequest, NodeState, RequestState};
use nodepool_core::store::{LockOptions, LockTarget, NodeStore, StoreEvent};
use nodepool_drivers::fake::cloud::FakeCloudSettings;

/// Submit, wait for fulfilment (on watch events), take the node, return it.
async fn one_request(store: Arc<dyn NodeStore>) {
    let mut events = store.watch();
    let mut request = NodeRequest::new(["small"]);
    request.state = Some(RequestState::Requested);
    request.reuse = false;
    let id = store.create_request(&request, "100").await.expect("submit");
    let request = loop {
        let current = store.get_request(&id).await.expect("read").expect("exists");
        match current.state {
            Some(RequestState::Fulfilled) => break current,
            Some(RequestState::Failed) => panic!("request {id} failed"),
            _ => {}
        }
        loop {
            match tokio::time::timeout(Duration::from_secs(20), events.recv()).await {
                Err(_) => panic!("request {id} not fulfilled in time"),
                Ok(Ok(StoreEvent::Request { id: got, .. })) if got == id => break,
                Ok(Ok(_)) => continue,
                Ok(Err(_)) => break,
            }
        }
    };
    let node_id = &request.nodes[0];
    let lock = store
        .lock(
            &LockTarget::Node(node_id.clone()),
            &LockOptions::wait(Duration::from_secs(5)),
        )
        .await
        .expect("lock node");
    let mut node = store.get_node(node_id).await.expect("read").expect("node");
    store.delete_request(&id).await.expect("delete request");
    node.set_state(NodeState::InUse);
    store.update_node(&node).await.expect("in-use");
    node.set_state(NodeState::Used);
    store.update_node(&node).await.expect("used");
    store.unlock(&lock).await.expect("unlock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fulfils_requests_concurrently_within_cloud_quota() {
    const REQUESTS: usize = 200;
    const CLIENTS: usize = 40;
    let mut h = Harness::start(&yaml("", ""), FakeCloudSettings::default(), settings());
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let store: Arc<dyn NodeStore> = Arc::new(h.root.session());
        clients.spawn(async move {
            for _ in (c..REQUESTS).step_by(CLIENTS) {
                one_request(store.clone()).await;
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.expect("client task");
    }
    let elapsed = started.elapsed();
    let rate = REQUESTS as f64 / elapsed.as_secs_f64();
    eprintln!("{REQUESTS} requests in {elapsed:?}: {rate:.1} requests/s");
    let counters = h.launcher.counters();
    assert_eq!(counters.requests_fulfilled, REQUESTS as u64);
    // Sequential launches of 0.1 s could never exceed 10/s: this proves
    // launches overlap. (The release-mode benchmark targets 40-100/s.)
    assert!(rate > 15.0, "only {rate:.1} requests/s");
    h.wait_instances("every instance deleted at the end", |n| n == 0)
        .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrelated_settings_do_not_slow_the_hot_path() {
    // The periodic tasks run rarely; events alone must drive the work.
    let mut slow = settings();
    slow.pool_interval = Duration::from_secs(3600);
    slow.delete_interval = Duration::from_secs(3600);
    slow.cleanup_interval = Duration::from_secs(3600);
    let mut h = Harness::start(&yaml("", ""), FakeCloudSettings::default(), slow);
    let started = Instant::now();
    for _ in 0..5 {
        let id = h.submit(&["small"], &RequestOptions::default()).await;
        let held = h.accept(&id).await;
        h.release(held).await;
    }
    h.wait_instances("instances deleted on events", |n| n == 0)
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "event-driven work took {:?}",
        started.elapsed()
    );
    h.stop().await;
}
