//! Two of our launcher daemons on one ZooKeeper (TLS, chroot): no node is
//! given to two requests and no request is fulfilled twice; after one is
//! killed with SIGKILL mid-launch, the other finishes its requests and
//! cleans up the nodes it left behind.
//!
//! Needs `NODEPOOL_TEST_ZK_*` (see `zk_support`).

mod zk_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use nodepool_core::model::{NodeRequest, NodeState, RequestState};
use nodepool_core::store::NodeStore;
use zk_support::{env_or_skip, wait_for, wait_registered, Layout, World};

/// Stores `count` one-node requests for `small`; returns their ids.
async fn submit(store: &dyn NodeStore, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..count {
        ids.push(
            store
                .create_request(&NodeRequest::new(["small"]), "100")
                .await
                .expect("storing a request"),
        );
    }
    ids
}

/// Waits until every request in `ids` is fulfilled; returns request → nodes.
async fn wait_fulfilled(
    store: &dyn NodeStore,
    ids: &[String],
    limit: Duration,
) -> BTreeMap<String, Vec<String>> {
    wait_for("every request fulfilled", limit, || async {
        let mut out = BTreeMap::new();
        for id in ids {
            let r = store.get_request(id).await.ok()??;
            assert_ne!(r.state, Some(RequestState::Failed), "request {id} failed");
            if r.state != Some(RequestState::Fulfilled) {
                return None;
            }
            out.insert(id.clone(), r.nodes);
        }
        Some(out)
    })
    .await
}

/// Every node allocated to one of the requests: one node per request, no
/// node twice, and the node records agree (`allocated_to`, `ready`).
async fn check_exclusive(store: &dyn NodeStore, fulfilled: &BTreeMap<String, Vec<String>>) {
    let mut seen = BTreeSet::new();
    for (request, nodes) in fulfilled {
        assert_eq!(nodes.len(), 1, "request {request} got {nodes:?}");
        for id in nodes {
            assert!(seen.insert(id.clone()), "node {id} given to two requests");
            let node = store.get_node(id).await.expect("get").expect("node");
            assert_eq!(node.allocated_to.as_deref(), Some(request.as_str()));
            assert_eq!(node.state, Some(NodeState::Ready), "{node:?}");
        }
    }
    // No request got extra nodes built for it by the other launcher.
    for node in store.list_nodes().await.expect("list") {
        if let Some(to) = &node.allocated_to {
            if let Some(nodes) = fulfilled.get(to) {
                assert!(
                    nodes.contains(&node.id),
                    "node {} allocated to {to}, which was fulfilled with {nodes:?}",
                    node.id
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_launchers_never_give_a_node_to_two_requests() {
    let Some(env) = env_or_skip("two_launchers_exclusive", &[]) else {
        return;
    };
    let layout = Layout {
        max_servers: 20,
        ..Layout::default()
    };
    let world = World::with_layout("two-launchers", env, &layout);
    let store = world.store().await;
    let mut a = world.start_launcher("a");
    let mut b = world.start_launcher("b");
    wait_registered(&world, &store, 2).await;

    let ids = submit(&store, 16).await;
    let fulfilled = wait_fulfilled(&store, &ids, Duration::from_secs(60)).await;
    check_exclusive(&store, &fulfilled).await;

    a.assert_running();
    b.assert_running();
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_launchers_work_is_finished_or_cleaned_up_by_the_other() {
    let Some(env) = env_or_skip("two_launchers_kill9", &[]) else {
        return;
    };
    // Slow boots keep launcher a mid-launch when it is killed; a short
    // session timeout lets ZooKeeper notice its death quickly.
    let layout = Layout {
        max_servers: 20,
        zk_timeout: Some(4.0),
        boot_delay: Some(3.0),
        ..Layout::default()
    };
    let world = World::with_layout("kill9", env, &layout);
    let store = world.store().await;
    let mut a = world.start_launcher("a");
    wait_registered(&world, &store, 1).await;

    let ids = submit(&store, 4).await;
    // Wait until a has created node records for them: it is mid-launch.
    let building: BTreeSet<String> = wait_for(
        "launcher a building nodes",
        Duration::from_secs(30),
        || async {
            let nodes: BTreeSet<String> = store
                .list_nodes()
                .await
                .ok()?
                .into_iter()
                .filter(|n| n.state == Some(NodeState::Building))
                .map(|n| n.id)
                .collect();
            (nodes.len() >= 2).then_some(nodes)
        },
    )
    .await;
    a.kill9().await;
    // Start b once ZooKeeper has ended a's session (its ephemeral pool
    // registration goes with the request locks it held): b's first cleanup
    // pass, at start, then finds a's `pending` requests unlocked and resets
    // them. Started earlier, b would see them locked and wait for its next
    // pass, 60 s later, which a loaded machine can push past the limit.
    wait_for(
        "ZooKeeper to end launcher a's session",
        Duration::from_secs(30),
        || async {
            let pools = store.list_components("pool").await.ok()?;
            pools.is_empty().then_some(())
        },
    )
    .await;

    let mut b = world.start_launcher("b");
    let fulfilled = wait_fulfilled(&store, &ids, Duration::from_secs(90)).await;
    check_exclusive(&store, &fulfilled).await;

    // What a left building is either finished for a request or deleted.
    let used: BTreeSet<String> = fulfilled.values().flatten().cloned().collect();
    wait_for(
        "a's unfinished nodes to be used or deleted",
        Duration::from_secs(60),
        || async {
            for id in &building {
                if used.contains(id) {
                    continue;
                }
                if store.get_node(id).await.ok()?.is_some() {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    // And nothing is left building.
    let stuck: Vec<String> = store
        .list_nodes()
        .await
        .expect("list")
        .into_iter()
        .filter(|n| matches!(n.state, Some(NodeState::Building) | Some(NodeState::Init)))
        .map(|n| n.id)
        .collect();
    assert!(stuck.is_empty(), "nodes left building: {stuck:?}");

    b.assert_running();
    b.stop().await;
}
