//! The store conformance suite of nodepool-core against a real ZooKeeper
//! over TLS, and what only the ZooKeeper store does (session expiry,
//! records written by others).

mod common;

use std::time::Duration;

use common::{server_or_skip, unique_chroot, ZkHarness};
use nodepool_core::store::{NodeStore, StoreEvent};
use nodepool_core::testing::store::store_suite;
use nodepool_core::Error;
use tokio::sync::broadcast::error::RecvError;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_suite_passes_over_tls() {
    let Some(server) = server_or_skip("store_suite_passes_over_tls") else {
        return;
    };
    let harness = ZkHarness::new(server, unique_chroot("suite"));
    let report = store_suite(&harness).await;
    assert!(
        report.skipped.is_empty(),
        "the ZooKeeper store supports every behaviour; skipped: {:?}",
        report.skipped
    );
}

/// Waits for `wanted` on `events`, skipping other events.
async fn wait_for(events: &mut tokio::sync::broadcast::Receiver<StoreEvent>, wanted: StoreEvent) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => panic!("no {wanted:?} within 30 s"),
            Ok(Err(RecvError::Closed)) => panic!("watch closed while waiting for {wanted:?}"),
            Ok(Err(RecvError::Lagged(_))) => {}
            Ok(Ok(event)) if event == wanted => return,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_session_is_replaced_and_announced_as_resync() {
    let Some(server) = server_or_skip("expired_session_is_replaced_and_announced_as_resync") else {
        return;
    };
    let store = server.store(&unique_chroot("expiry")).await;
    let mut events = store.watch();
    let before = store.session_id().expect("session id");
    let request = store
        .create_request(&Default::default(), "100")
        .await
        .expect("create_request");

    store.expire_session().await.expect("expire_session");
    wait_for(&mut events, StoreEvent::Resync).await;
    assert_ne!(
        store.session_id().expect("session id"),
        before,
        "a new session"
    );
    assert_eq!(
        store.get_request(&request).await.expect("get_request"),
        None,
        "the old session's ephemeral request is gone"
    );

    // The new session works and is watched again.
    let node = store
        .create_node(&Default::default())
        .await
        .expect("create_node on the new session");
    wait_for(
        &mut events,
        StoreEvent::Node {
            id: node.clone(),
            change: nodepool_core::store::Change::Put,
        },
    )
    .await;
    store.delete_node(&node).await.expect("delete_node");
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_records_are_corrupt_on_get_and_skipped_in_listings() {
    let Some(server) =
        server_or_skip("undecodable_records_are_corrupt_on_get_and_skipped_in_listings")
    else {
        return;
    };
    let chroot = unique_chroot("corrupt");
    let store = server.store(&chroot).await;
    let good = store
        .create_node(&Default::default())
        .await
        .expect("create_node");
    let bad = store
        .create_node(&Default::default())
        .await
        .expect("create_node");

    // Another writer puts garbage into the second node.
    let raw = zookeeper_client::Client::connector()
        .with_tls(
            zookeeper_client::TlsOptions::new()
                .with_pem_ca(&std::fs::read_to_string(&server.tls.ca).expect("read CA"))
                .expect("CA")
                .with_pem_identity(
                    &std::fs::read_to_string(&server.tls.cert).expect("read cert"),
                    &std::fs::read_to_string(&server.tls.key).expect("read key"),
                )
                .expect("identity"),
        )
        .secure_connect(&format!("{}{chroot}", server.hosts))
        .await
        .expect("raw client");
    raw.set_data(&format!("/nodepool/nodes/{bad}"), b"{not json", None)
        .await
        .expect("set garbage");

    match store.get_node(&bad).await {
        Err(Error::Corrupt { path, .. }) => assert_eq!(path, format!("/nodepool/nodes/{bad}")),
        other => panic!("get_node of garbage: expected Corrupt, got {other:?}"),
    }
    let ids: Vec<String> = store
        .list_nodes()
        .await
        .expect("list_nodes")
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(ids, vec![good.clone()], "the undecodable node is skipped");

    store
        .delete_node(&bad)
        .await
        .expect("deleting a corrupt node");
    assert_eq!(store.get_node(&bad).await.expect("get_node"), None);
    store.delete_node(&good).await.expect("delete_node");
    store.close().await.expect("close");
}

#[tokio::test]
async fn connect_names_the_unreadable_tls_file() {
    let config = nodepool_zk::ZkConfig::new(["127.0.0.1:1"]).with_tls(nodepool_zk::ZkTls {
        ca: "/nonexistent/ca.pem".into(),
        cert: "/nonexistent/cert.pem".into(),
        key: "/nonexistent/key.pem".into(),
    });
    match nodepool_zk::ZkStore::connect(config).await {
        Err(e @ nodepool_zk::Error::Tls { .. }) => {
            assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        }
        other => panic!("expected a TLS file error, got {other:?}"),
    }
}

#[tokio::test]
async fn connect_without_hosts_fails() {
    let config = nodepool_zk::ZkConfig::new(Vec::<String>::new());
    assert!(matches!(
        nodepool_zk::ZkStore::connect(config).await,
        Err(nodepool_zk::Error::NoHosts)
    ));
}
