//! `ZkStore::outstanding_requests`, upstream's `zk.client.connection_queue`
//! gauge: the requests of the store's operations handed to the ZooKeeper
//! client and not answered yet.

mod common;

use common::{server_or_skip, unique_chroot};
use nodepool_core::model::Node;
use nodepool_core::store::NodeStore;

/// On a current-thread runtime the client's connection task cannot answer
/// while the test runs, so after one poll of twenty reads all twenty are
/// handed over and unanswered; once they are answered, none is.
#[tokio::test]
async fn reads_count_as_outstanding_until_they_are_answered() {
    let test = "reads_count_as_outstanding_until_they_are_answered";
    let Some(server) = server_or_skip(test) else {
        return;
    };
    let store = server.store(&unique_chroot("outstanding")).await;
    let id = store
        .create_node(&Node::default())
        .await
        .expect("create_node");
    assert_eq!(store.outstanding_requests(), 0);

    let reads = futures::future::join_all((0..20).map(|_| store.get_node(&id)));
    tokio::pin!(reads);
    assert!(futures::poll!(reads.as_mut()).is_pending());
    assert_eq!(store.outstanding_requests(), 20);
    for read in reads.await {
        assert!(read.expect("get_node").is_some());
    }
    assert_eq!(store.outstanding_requests(), 0);

    // A read given up (its future dropped) is no longer counted.
    {
        let read = store.get_node(&id);
        tokio::pin!(read);
        assert!(futures::poll!(read.as_mut()).is_pending());
        assert_eq!(store.outstanding_requests(), 1);
    }
    assert_eq!(store.outstanding_requests(), 0);
}
