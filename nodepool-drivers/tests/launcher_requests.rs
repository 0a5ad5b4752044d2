//! Launcher engine: fulfilling, reusing, declining and ordering requests.

mod launcher_support;

use launcher_support::{in_state, settings, yaml, Harness, RequestOptions};
use nodepool_core::model::{NodeState, RequestState};
use nodepool_core::provider::{META_NODE_ID, META_POOL, META_PROVIDER};
use nodepool_drivers::fake::cloud::FakeCloudSettings;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fulfills_request_with_a_new_node() {
    let mut h = Harness::start(&yaml("", ""), FakeCloudSettings::default(), settings());
    let id = h.submit(&["small"], &RequestOptions::default()).await;
    let request = h.wait_request_state(&id, RequestState::Fulfilled).await;

    assert_eq!(request.nodes.len(), 1);
    let node = h
        .store
        .get_node(&request.nodes[0])
        .await
        .expect("read node")
        .expect("node exists");
    assert_eq!(node.state, Some(NodeState::Ready));
    assert_eq!(node.allocated_to.as_deref(), Some(id.as_str()));
    assert_eq!(node.provider.as_deref(), Some("fake-provider"));
    assert_eq!(node.pool.as_deref(), Some("main"));
    assert_eq!(node.labels, vec!["small".to_string()]);
    assert!(node
        .launcher
        .as_deref()
        .is_some_and(|l| l.contains("fake-provider-main")));
    assert!(node.interface_ip.is_some());
    let external_id = node.external_id.clone().expect("external id recorded");

    let instance = h.cloud.get(&external_id).expect("instance exists");
    assert_eq!(instance.metadata[META_NODE_ID], node.id);
    assert_eq!(instance.metadata[META_PROVIDER], "fake-provider");
    assert_eq!(instance.metadata[META_POOL], "main");
    assert_eq!(
        instance.metadata["groups"],
        "fake-provider,Fake Precise,small"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_node_is_deleted_with_its_instance() {
    let mut h = Harness::start(&yaml("", ""), FakeCloudSettings::default(), settings());
    let id = h.submit(&["small"], &RequestOptions::default()).await;
    let held = h.accept(&id).await;
    let node = held[0].0.clone();
    let external_id = node.external_id.clone().expect("external id");
    assert!(h.cloud.get(&external_id).is_some());
    h.release(held).await;

    h.wait_nodes("used node deleted", |nodes| {
        nodes.iter().all(|n| n.id != node.id)
    })
    .await;
    h.wait_instances("instance deleted", |n| n == 0).await;
    assert!(h.launcher.counters().nodes_deleted >= 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuses_a_ready_node_instead_of_launching() {
    let mut h = Harness::start(&yaml("", ""), FakeCloudSettings::default(), settings());
    // A min-ready-like node: fulfil a request, then drop its allocation.
    let first = h.submit(&["small"], &RequestOptions::default()).await;
    let request = h.wait_request_state(&first, RequestState::Fulfilled).await;
    let ready_id = request.nodes[0].clone();
    h.store
        .delete_request(&first)
        .await
        .expect("delete request");
    // The cleanup sweep deallocates ready nodes of vanished requests.
    h.wait_nodes("node deallocated", |nodes| {
        nodes
            .iter()
            .any(|n| n.id == ready_id && n.allocated_to.is_none())
    })
    .await;

    let second = h.submit(&["small"], &RequestOptions::default()).await;
    let request = h.wait_request_state(&second, RequestState::Fulfilled).await;
    assert_eq!(request.nodes, vec![ready_id]);
    assert_eq!(h.cloud.instances().len(), 1, "no second instance launched");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declines_unknown_label_and_fails_when_it_is_the_only_pool() {
    let mut h = Harness::start(&yaml("", ""), FakeCloudSettings::default(), settings());
    let id = h.submit(&["other"], &RequestOptions::default()).await;
    let request = h.wait_request_state(&id, RequestState::Failed).await;
    assert_eq!(request.declined_by.len(), 1);
    assert!(request.declined_by[0].contains("PoolWorker.fake-provider-main"));
    assert!(h.cloud.instances().is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_whose_min_ram_fits_no_flavor_is_declined_not_left_waiting() {
    // `huge` is in the pool's config (so the launcher registers it) but no
    // flavor has that much RAM: the pool cannot size it and must decline.
    let text = yaml("", "  - name: huge\n").replace(
        "            min-ram: 8192\n",
        "            min-ram: 8192\n          - name: huge\n            cloud-image: Fake Precise\n            min-ram: 999999\n",
    );
    let mut h = Harness::start(&text, FakeCloudSettings::default(), settings());
    let id = h.submit(&["huge"], &RequestOptions::default()).await;
    let request = h.wait_request_state(&id, RequestState::Failed).await;
    assert_eq!(request.declined_by.len(), 1);
    // The pool still serves its other label.
    let ok = h.submit(&["small"], &RequestOptions::default()).await;
    h.wait_request_state(&ok, RequestState::Fulfilled).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_relative_priority_is_served_first_at_quota() {
    // One server at a time: requests are served strictly in order.
    let mut h = Harness::start(
        &yaml("        max-servers: 1\n", ""),
        FakeCloudSettings::default(),
        settings(),
    );
    // Occupy the only slot so that the next requests queue up.
    let blocker = h.submit(&["small"], &RequestOptions::default()).await;
    let held = h.accept(&blocker).await;
    let low = h
        .submit(
            &["small"],
            &RequestOptions {
                relative_priority: 5,
                ..RequestOptions::default()
            },
        )
        .await;
    let high = h
        .submit(
            &["small"],
            &RequestOptions {
                relative_priority: 1,
                ..RequestOptions::default()
            },
        )
        .await;
    // Give the pool a chance to look at both while it is full.
    h.wait_request(&high, "pool waits on the high-priority request", |r| {
        r.state == Some(RequestState::Requested)
    })
    .await;
    h.release(held).await;

    h.wait_request_state(&high, RequestState::Fulfilled).await;
    let low_now = h
        .store
        .get_request(&low)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(
        low_now.state,
        Some(RequestState::Requested),
        "the lower-priority request still waits"
    );
    let nodes = h.store.list_nodes().await.expect("list");
    assert_eq!(in_state(&nodes, NodeState::Ready).len(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_servers_zero_after_reconfig_declines_new_requests() {
    let mut h = Harness::start(&yaml("", ""), FakeCloudSettings::default(), settings());
    let first = h.submit(&["small"], &RequestOptions::default()).await;
    h.wait_request_state(&first, RequestState::Fulfilled).await;

    let disabled = launcher_support::config(&yaml("        max-servers: 0\n", ""));
    h.launcher.update_config(
        disabled.clone(),
        launcher_support::providers(&disabled, &h.cloud),
    );
    let second = h.submit(&["small"], &RequestOptions::default()).await;
    h.wait_request_state(&second, RequestState::Failed).await;
    assert_eq!(
        h.cloud.instances().len(),
        1,
        "nothing launched after reconfig"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_provider_stops_launching_but_its_nodes_are_cleaned_up() {
    let mut h = Harness::start(&yaml("", ""), FakeCloudSettings::default(), settings());
    let first = h.submit(&["small"], &RequestOptions::default()).await;
    let held = h.accept(&first).await;

    let empty = launcher_support::config("labels:\n  - name: small\n");
    h.launcher
        .update_config(empty.clone(), launcher_support::providers(&empty, &h.cloud));
    launcher_support::wait_for(
        "pool worker stopped",
        std::time::Duration::from_secs(5),
        || {
            let pools = h.launcher.status().pools.len();
            async move { (pools == 0).then_some(()) }
        },
    )
    .await;

    h.release(held).await;
    h.wait_nodes("node of the removed provider deleted", |nodes| {
        nodes.is_empty()
    })
    .await;
    h.wait_instances("its instance deleted", |n| n == 0).await;
    h.stop().await;
}
