//! Launcher engine: quota, min-ready, failures, hold, leaks and restarts.

mod launcher_support;

use std::collections::BTreeMap;
use std::time::Duration;

use launcher_support::{in_state, settings, yaml, Harness, RequestOptions};
use nodepool_core::model::{
    BuildState, ImageBuild, ImageUpload, NodeState, RequestState, UploadState,
};
use nodepool_core::provider::{Resources, META_NODE_ID, META_PROVIDER};
use nodepool_core::store::{LockOptions, LockTarget, NodeStore};
use nodepool_drivers::fake::cloud::{CreateRequest, FakeCloudSettings, FaultSettings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pauses_at_max_servers_and_resumes_when_a_node_is_returned() {
    let mut h = Harness::start(
        &yaml("        max-servers: 2\n", ""),
        FakeCloudSettings::default(),
        settings(),
    );
    let a = h.submit(&["small"], &RequestOptions::default()).await;
    let b = h.submit(&["small"], &RequestOptions::default()).await;
    let c = h.submit(&["small"], &RequestOptions::default()).await;
    let held_a = h.accept(&a).await;
    let _held_b = h.accept(&b).await;

    // The third waits (the pool pauses instead of failing it).
    let status = launcher_support::wait_for("pool paused", Duration::from_secs(5), || {
        let s = h.launcher.status();
        async move { s.pools.iter().any(|p| p.paused).then_some(s) }
    })
    .await;
    assert!(status.pools[0].waiting_requests.contains(&c));
    let now = h
        .store
        .get_request(&c)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(now.state, Some(RequestState::Requested));
    assert_eq!(h.cloud.instances().len(), 2);

    h.release(held_a).await;
    h.wait_request_state(&c, RequestState::Fulfilled).await;
    assert!(
        h.cloud.instances().len() <= 2,
        "max-servers is never exceeded"
    );
    h.stop().await;
}

/// A pool at quota declines min-ready requests (as upstream's does); the
/// label is then requested again at the min-ready interval, not as fast as
/// store events wake the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_ready_at_quota_retries_at_the_interval() {
    let text = yaml("        max-servers: 1\n", "").replacen(
        "  - name: small\n",
        "  - name: small\n    min-ready: 3\n",
        1,
    );
    let s = settings();
    let interval = s.min_ready_interval;
    let mut h = Harness::start(&text, FakeCloudSettings::default(), s);
    h.wait_nodes("one ready node", |nodes| {
        nodes
            .iter()
            .filter(|n| n.state == Some(NodeState::Ready))
            .count()
            == 1
    })
    .await;
    let window = Duration::from_secs(2);
    let before = h.launcher.counters().min_ready_requests;
    tokio::time::sleep(window).await;
    let submitted = h.launcher.counters().min_ready_requests - before;
    // Two nodes are missing: at most two requests per interval (plus one
    // interval's slack at each end of the window).
    let passes = (window.as_millis() / interval.as_millis()) as u64 + 2;
    assert!(
        submitted <= 2 * passes,
        "{submitted} min-ready requests in {window:?} (at most {} expected)",
        2 * passes
    );
    assert!(submitted > 0, "min-ready gave up instead of retrying");
    let ready = h
        .store
        .list_nodes()
        .await
        .expect("nodes")
        .into_iter()
        .filter(|n| n.state == Some(NodeState::Ready))
        .count();
    assert_eq!(ready, 1, "max-servers holds");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_ready_keeps_ready_unallocated_nodes() {
    let text = yaml("", "").replacen(
        "  - name: small\n",
        "  - name: small\n    min-ready: 2\n",
        1,
    );
    let mut h = Harness::start(&text, FakeCloudSettings::default(), settings());
    let nodes = h
        .wait_nodes("two ready unallocated nodes", |nodes| {
            nodes
                .iter()
                .filter(|n| n.state == Some(NodeState::Ready) && n.allocated_to.is_none())
                .count()
                == 2
        })
        .await;
    assert!(nodes.iter().all(|n| n.labels == vec!["small".to_string()]));
    // The min-ready requests are settled (deleted) once fulfilled.
    launcher_support::wait_for("min-ready requests deleted", Duration::from_secs(5), || {
        let store = h.store.clone();
        async move {
            let requests = store.list_requests().await.ok()?;
            requests.is_empty().then_some(())
        }
    })
    .await;

    // Taking one makes the launcher build a replacement.
    let id = h.submit(&["small"], &RequestOptions::default()).await;
    let taken = h.accept(&id).await;
    assert!(
        nodes.iter().any(|n| n.id == taken[0].0.id),
        "a ready node is reused"
    );
    h.wait_nodes("back to two ready nodes", |nodes| {
        nodes
            .iter()
            .filter(|n| n.state == Some(NodeState::Ready) && n.allocated_to.is_none())
            .count()
            == 2
    })
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_failure_after_retries_fails_request_and_deletes_node() {
    let cloud = FakeCloudSettings {
        faults: FaultSettings {
            boot_failure_rate: 1.0,
            ..FaultSettings::default()
        },
        ..FakeCloudSettings::default()
    };
    let mut h = Harness::start(&yaml("", ""), cloud, settings());
    let id = h.submit(&["small"], &RequestOptions::default()).await;
    let request = h.wait_request_state(&id, RequestState::Failed).await;
    assert_eq!(request.declined_by.len(), 1);
    h.wait_nodes("failed node deleted", |nodes| nodes.is_empty())
        .await;
    h.wait_instances("failed instances deleted", |n| n == 0)
        .await;
    let counters = h.launcher.counters();
    assert_eq!(counters.launches_failed, 1);
    assert_eq!(counters.launches_ready, 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_node_is_deleted_after_its_hold_expiration() {
    let mut h = Harness::start(&yaml("", ""), FakeCloudSettings::default(), settings());
    let id = h.submit(&["small"], &RequestOptions::default()).await;
    let mut held = h.accept(&id).await;
    let (mut node, lock) = held.remove(0);
    node.set_state(NodeState::Hold);
    node.hold_expiration = Some(1);
    h.store.update_node(&node).await.expect("hold");
    h.store.unlock(&lock).await.expect("unlock");

    // Still there shortly after: a hold is honoured until it expires.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let still = h.store.get_node(&node.id).await.expect("read");
    assert_eq!(still.map(|n| n.state), Some(Some(NodeState::Hold)));

    h.wait_nodes("expired hold deleted", |nodes| nodes.is_empty())
        .await;
    h.wait_instances("held instance deleted", |n| n == 0).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_node_is_deleted_after_max_hold_age() {
    let mut h = Harness::start(
        &yaml("", "max-hold-age: 1\n"),
        FakeCloudSettings::default(),
        settings(),
    );
    let id = h.submit(&["small"], &RequestOptions::default()).await;
    let mut held = h.accept(&id).await;
    let (mut node, lock) = held.remove(0);
    node.set_state(NodeState::Hold);
    h.store.update_node(&node).await.expect("hold");
    h.store.unlock(&lock).await.expect("unlock");
    h.wait_nodes("held node past max-hold-age deleted", |nodes| {
        nodes.is_empty()
    })
    .await;
    h.stop().await;
}

/// A node another client marks `deleting` under its lock (upstream's
/// `nodepool delete`) is still there right after the client unlocks it, for
/// the client's closing listing, and is deleted a moment later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_marked_deleting_by_a_client_is_deleted_after_a_moment() {
    let mut h = Harness::start(&yaml("", ""), FakeCloudSettings::default(), settings());
    let id = h.submit(&["small"], &RequestOptions::default()).await;
    let mut held = h.accept(&id).await;
    let (mut node, lock) = held.remove(0);
    h.store.delete_request(&id).await.expect("delete request");
    node.set_state(NodeState::Deleting);
    h.store.update_node(&node).await.expect("mark deleting");
    h.store.unlock(&lock).await.expect("unlock");
    let marked = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let still = h.store.get_node(&node.id).await.expect("read");
    assert_eq!(
        still.and_then(|n| n.state),
        Some(NodeState::Deleting),
        "the node outlives the client's listing"
    );
    launcher_support::wait_for("node deleted", Duration::from_secs(10), || {
        let store = h.store.clone();
        let id = node.id.clone();
        async move { store.get_node(&id).await.ok()?.is_none().then_some(()) }
    })
    .await;
    assert!(
        marked.elapsed() >= Duration::from_millis(900),
        "deleted after {:?}",
        marked.elapsed()
    );
    assert_eq!(h.cloud.instances().len(), 0, "its instance is gone too");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaked_instance_is_deleted_after_the_grace_period() {
    let mut h = Harness::start(&yaml("", ""), FakeCloudSettings::default(), settings());
    let meta = BTreeMap::from([
        (META_PROVIDER.to_string(), "fake-provider".to_string()),
        (META_NODE_ID.to_string(), "0000009999".to_string()),
    ]);
    let leaked = h
        .cloud
        .create(CreateRequest {
            provider: "fake-provider".into(),
            name: "np0000009999".into(),
            image: None,
            resources: Resources {
                instances: Some(1),
                cores: Some(1),
                ram: Some(1),
                ..Resources::default()
            },
            metadata: meta,
            az: None,
        })
        .expect("create leaked instance");
    // An unmanaged instance (no nodepool metadata) must survive.
    let unmanaged = h
        .cloud
        .create(CreateRequest {
            provider: "fake-provider".into(),
            name: "someone-else".into(),
            image: None,
            resources: Resources::default(),
            metadata: BTreeMap::new(),
            az: None,
        })
        .expect("create unmanaged instance");

    launcher_support::wait_for("leaked instance deleted", Duration::from_secs(10), || {
        let gone = h.cloud.get(&leaked.external_id).is_none();
        async move { gone.then_some(()) }
    })
    .await;
    assert!(h.cloud.get(&unmanaged.external_id).is_some());
    assert_eq!(h.launcher.counters().leaked_instances_deleted, 1);
    h.stop().await;
}

/// The leak pass walks the cloud a page at a time
/// ([`nodepool_core::provider::INSTANCE_PAGE_SIZE`]): leaked instances on the
/// first, a middle and the last page are all found, and the unmanaged
/// instances around them survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaked_instances_on_every_page_are_deleted() {
    let cloud = FakeCloudSettings {
        max_instances: 2_000,
        max_cores: 1_000_000,
        max_ram: 1_000_000_000,
        ..FakeCloudSettings::default()
    };
    let mut h = Harness::start(&yaml("", ""), cloud, settings());
    let create = |name: String, metadata: BTreeMap<String, String>| {
        h.cloud
            .create(CreateRequest {
                provider: "fake-provider".into(),
                name,
                image: None,
                resources: Resources::default(),
                metadata,
                az: None,
            })
            .expect("create instance")
    };
    let total = 2 * nodepool_core::provider::INSTANCE_PAGE_SIZE + 50;
    let mut leaked = Vec::new();
    let mut unmanaged = Vec::new();
    for i in 0..total {
        if i == 0 || i == total / 2 || i == total - 1 {
            let node_id = format!("{:010}", 900_000 + i);
            let meta = BTreeMap::from([
                (META_PROVIDER.to_string(), "fake-provider".to_string()),
                (META_NODE_ID.to_string(), node_id.clone()),
            ]);
            leaked.push(create(format!("np{node_id}"), meta).external_id);
        } else {
            unmanaged.push(create(format!("other-{i}"), BTreeMap::new()).external_id);
        }
    }
    launcher_support::wait_for("leaked instances deleted", Duration::from_secs(20), || {
        let gone = leaked.iter().all(|id| h.cloud.get(id).is_none());
        async move { gone.then_some(()) }
    })
    .await;
    assert!(unmanaged.iter().all(|id| h.cloud.get(id).is_some()));
    assert_eq!(h.launcher.counters().leaked_instances_deleted, 3);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_drain_finishes_the_request_without_leaking() {
    let slow = FakeCloudSettings {
        boot_delay: Duration::from_millis(1500),
        ..FakeCloudSettings::default()
    };
    let text = yaml("", "");
    let mut first = Harness::start(&text, slow, settings());
    let id = first.submit(&["small"], &RequestOptions::default()).await;
    first
        .wait_nodes("a building node with an instance", |nodes| {
            nodes
                .iter()
                .any(|n| n.state == Some(NodeState::Building) && n.external_id.is_some())
        })
        .await;
    first.stop().await;
    // Drained: the request is given back, nothing is left locked.
    let request = first
        .store
        .get_request(&id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(request.state, Some(RequestState::Requested));
    for node in first.store.list_nodes().await.expect("list") {
        let lock = first
            .store
            .lock(&LockTarget::Node(node.id.clone()), &LockOptions::try_once())
            .await
            .expect("node is unlocked after drain");
        first.store.unlock(&lock).await.expect("unlock");
    }

    let mut second =
        Harness::start_on(first.root.session(), first.cloud.clone(), &text, settings());
    let request = second
        .wait_request_state(&id, RequestState::Fulfilled)
        .await;
    second
        .wait_nodes("only the fulfilled node remains", |nodes| {
            nodes.len() == 1 && nodes[0].id == request.nodes[0]
        })
        .await;
    second
        .wait_instances("only one instance remains", |n| n == 1)
        .await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_launch_is_recovered_by_the_next_launcher() {
    let slow = FakeCloudSettings {
        boot_delay: Duration::from_millis(1500),
        ..FakeCloudSettings::default()
    };
    let text = yaml("", "");
    let mut first = Harness::start(&text, slow, settings());
    let id = first.submit(&["small"], &RequestOptions::default()).await;
    first
        .wait_nodes("a building node with an instance", |nodes| {
            nodes
                .iter()
                .any(|n| n.state == Some(NodeState::Building) && n.external_id.is_some())
        })
        .await;
    // Crash: the task dies and its session ends (locks and registrations go).
    first.crash().await;
    let request = first
        .store
        .get_request(&id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(
        request.state,
        Some(RequestState::Pending),
        "left pending by the crash"
    );

    let mut second =
        Harness::start_on(first.root.session(), first.cloud.clone(), &text, settings());
    let request = second
        .wait_request_state(&id, RequestState::Fulfilled)
        .await;
    let nodes = second
        .wait_nodes("the orphaned building node is deleted", |nodes| {
            nodes.len() == 1
        })
        .await;
    assert_eq!(nodes[0].id, request.nodes[0]);
    assert_eq!(in_state(&nodes, NodeState::Ready).len(), 1);
    second
        .wait_instances("the orphaned instance is deleted", |n| n == 1)
        .await;
    second.stop().await;
}

/// `create_instance` calls the launcher's wrapper stack counted.
fn creates(h: &Harness) -> u64 {
    h.launcher
        .task_metrics()
        .get("fake-provider", "create_instance")
        .map_or(0, |s| s.calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_launch_failures_are_retried_up_to_launch_retries() {
    // Every server ends in ERROR: a transient fault, retried.
    let cloud = FakeCloudSettings {
        faults: FaultSettings {
            boot_failure_rate: 1.0,
            ..FaultSettings::default()
        },
        ..FakeCloudSettings::default()
    };
    let mut h = Harness::start(&yaml("", ""), cloud, settings());
    let id = h.submit(&["small"], &RequestOptions::default()).await;
    h.wait_request_state(&id, RequestState::Failed).await;
    // launch-retries: 2 in the harness's config.
    assert_eq!(creates(&h), 2);
    assert_eq!(h.launcher.counters().launches_failed, 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_launch_failures_fail_at_once() {
    // The newest upload names an image the cloud does not have: the cloud
    // says not found, retrying cannot help, so one attempt is all.
    let text = "labels:
  - name: small
providers:
  - name: fake-provider
    cloud: fake
    launch-retries: 3
    diskimages:
      - name: img
    pools:
      - name: main
        labels:
          - name: small
            diskimage: img
            min-ram: 8192
diskimages:
  - name: img
";
    let root = nodepool_core::store::MemoryStore::new();
    let store = root.session();
    let build = store
        .create_build("img", &ImageBuild::new("img", BuildState::Ready))
        .await
        .expect("build");
    let mut upload = ImageUpload::new("img", &build, "fake-provider", UploadState::Ready);
    upload.external_id = Some("no-such-image".to_string());
    store
        .create_upload("img", &build, "fake-provider", &upload)
        .await
        .expect("upload");
    let cloud = nodepool_drivers::fake::cloud::FakeCloud::new(FakeCloudSettings::default());
    let mut h = Harness::start_on(root, cloud, text, settings());
    let id = h.submit(&["small"], &RequestOptions::default()).await;
    h.wait_request_state(&id, RequestState::Failed).await;
    assert_eq!(creates(&h), 1);
    assert_eq!(h.launcher.counters().launches_failed, 1);
    h.stop().await;
}

/// A cloud at its instance quota still counts a server that is being
/// deleted: the node's record stays (counted) until the cloud no longer
/// has the server, so the refill draws no quota refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refill_after_a_delete_waits_for_the_cloud_to_forget_the_server() {
    let text = yaml("", "").replacen(
        "  - name: small\n",
        "  - name: small\n    min-ready: 3\n",
        1,
    );
    let cloud = FakeCloudSettings {
        max_instances: 3,
        delete_delay: Duration::from_millis(1500),
        ..FakeCloudSettings::default()
    };
    let mut h = Harness::start(&text, cloud, settings());
    let ready = |nodes: &[nodepool_core::model::Node]| {
        nodes
            .iter()
            .filter(|n| n.state == Some(NodeState::Ready) && n.allocated_to.is_none())
            .count()
    };
    h.wait_nodes("three ready nodes", |nodes| ready(nodes) == 3)
        .await;
    // Take one: min-ready wants a fourth, which the quota (3) does not
    // allow; the request for it waits.
    let id = h.submit(&["small"], &RequestOptions::default()).await;
    let held = h.accept(&id).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Hand it back: its server is `Deleting` for 1.5 s, still counted.
    h.release(held).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    h.wait_nodes("three ready, the used one gone", |nodes| {
        ready(nodes) == 3 && nodes.len() == 3
    })
    .await;
    assert_eq!(
        h.launcher.counters().launches_aborted,
        0,
        "a launch was refused for quota while the cloud still counted the deleted server"
    );
    h.stop().await;
}
