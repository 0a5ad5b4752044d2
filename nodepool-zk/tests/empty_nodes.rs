//! Empty node znodes: a lock on a deleted node must not make one, and
//! those others make (kazoo's lock recipe makes the path, so upstream's
//! CLI or Zuul locking a node just deleted does) are purged, as upstream's
//! `_cleanupEmptyNodes` does.

mod common;

use std::time::Duration;

use common::{server_or_skip, unique_chroot};
use nodepool_core::model::Node;
use nodepool_core::store::{LockOptions, LockTarget, NodeStore};
use nodepool_core::Error;
use zookeeper_client::{Acls, CreateMode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locking_a_deleted_node_fails_and_leaves_no_znode() {
    let Some(server) = server_or_skip("locking_a_deleted_node_fails_and_leaves_no_znode") else {
        return;
    };
    let chroot = unique_chroot("lock-deleted");
    let store = server.store(&chroot).await;
    let raw = server.raw(&chroot).await;
    let id = store
        .create_node(&Node::default())
        .await
        .expect("create_node");
    store.delete_node(&id).await.expect("delete_node");
    let target = LockTarget::Node(id.clone());

    for options in [
        LockOptions::try_once(),
        LockOptions::wait(Duration::from_secs(2)),
    ] {
        match store.lock(&target, &options).await {
            Err(Error::NodeNotFound { id: missing }) => assert_eq!(missing, id),
            other => {
                panic!("locking a deleted node ({options:?}): expected NodeNotFound, got {other:?}")
            }
        }
        let path = format!("/nodepool/nodes/{id}");
        assert_eq!(
            raw.check_stat(&path).await.expect("stat"),
            None,
            "no {path} made by the lock ({options:?})"
        );
    }
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_empty_node_znodes_and_keeps_records() {
    let Some(server) = server_or_skip("purge_removes_empty_node_znodes_and_keeps_records") else {
        return;
    };
    let chroot = unique_chroot("purge-empty");
    let store = server.store(&chroot).await;
    let holder = server.store(&chroot).await;
    let raw = server.raw(&chroot).await;
    let dir = CreateMode::Persistent.with_acls(Acls::anyone_all());
    let kept = store
        .create_node(&Node::default())
        .await
        .expect("create_node");
    // What kazoo leaves when it locks a deleted node: the node znode,
    // empty, with a `lock` child; and a bare empty one.
    let with_lock = "0000099998";
    let bare = "0000099999";
    raw.mkdir(&format!("/nodepool/nodes/{with_lock}/lock"), &dir)
        .await
        .expect("make an empty node with a lock path");
    raw.create(&format!("/nodepool/nodes/{bare}"), b"", &dir)
        .await
        .expect("make an empty node");
    // One empty node somebody holds a lock on is left alone.
    let held = "0000099997";
    raw.create(&format!("/nodepool/nodes/{held}"), b"", &dir)
        .await
        .expect("make a held empty node");
    let handle = holder
        .lock(&LockTarget::Node(held.to_owned()), &LockOptions::try_once())
        .await
        .expect("holding the empty node's lock");

    assert_eq!(
        store
            .get_node(bare)
            .await
            .expect("get_node of an empty znode"),
        None,
        "an empty node znode is no record"
    );
    let listed: Vec<String> = store
        .list_nodes()
        .await
        .expect("list_nodes")
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(listed, vec![kept.clone()], "listings skip empty znodes");

    assert_eq!(store.purge_empty_nodes().await.expect("purge"), 2);
    for gone in [with_lock, bare] {
        let path = format!("/nodepool/nodes/{gone}");
        assert_eq!(
            raw.check_stat(&path).await.expect("stat"),
            None,
            "{path} purged"
        );
    }
    assert!(
        raw.check_stat(&format!("/nodepool/nodes/{held}"))
            .await
            .expect("stat")
            .is_some(),
        "a held empty node is left alone"
    );
    assert!(
        store.get_node(&kept).await.expect("get_node").is_some(),
        "a record is kept"
    );

    holder.unlock(&handle).await.expect("unlock");
    assert_eq!(store.purge_empty_nodes().await.expect("purge"), 1);
    assert_eq!(store.purge_empty_nodes().await.expect("purge"), 0);
    store.close().await.expect("close");
    holder.close().await.expect("close");
}
