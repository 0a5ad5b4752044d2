//! Calls the connection breaks under. `zookeeper-client` fails the calls in
//! flight with the transport's error ("Connection reset by peer"), and the
//! session survives the reconnection: a lock release must still happen (an
//! ephemeral contender of a live session holds the lock for good), a
//! contender or request whose create went through must be found, not
//! made twice. A proxy between store and server holds one direction of
//! the traffic while a call is sent, then resets the connection.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::proxy::Proxy;
use common::{server_or_skip, unique_chroot, TestServer};
use nodepool_core::store::{LockOptions, LockTarget, NodeStore};
use nodepool_zk::{ZkConfig, ZkStore};

/// A store that reaches `server` through `proxy`.
async fn store_behind(proxy: &Proxy, server: &TestServer, chroot: &str) -> ZkStore {
    let config = ZkConfig::new([proxy.hosts.clone()])
        .with_chroot(chroot)
        .with_tls(server.tls.clone())
        .with_session_timeout(Duration::from_secs(20));
    ZkStore::connect(config)
        .await
        .unwrap_or_else(|e| panic!("connecting through the proxy: {e}"))
}

/// Holds one direction, runs `call` in the background, resets the
/// connection once the call is surely sent, and returns its result.
async fn cut_under<T: Send + 'static>(
    proxy: &Proxy,
    hold_up: bool,
    call: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    proxy.hold(hold_up, !hold_up);
    let task = tokio::spawn(call);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !task.is_finished(),
        "the call was answered through a held proxy"
    );
    proxy.cut();
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the call ends within 60 s of the reset")
        .expect("call task")
}

/// Another session can take the lock at once: nobody's contender is left.
async fn assert_free(other: &ZkStore, target: &LockTarget) {
    assert_eq!(
        other
            .lock_contenders(target)
            .await
            .expect("lock_contenders"),
        Vec::<String>::new(),
        "no contender left on {target}"
    );
    let handle = other
        .lock(target, &LockOptions::try_once())
        .await
        .unwrap_or_else(|e| panic!("another session locks {target}: {e}"));
    other.unlock(&handle).await.expect("unlock");
}

async fn unlock_cut_off(test: &str, hold_up: bool) {
    let Some(server) = server_or_skip(test) else {
        return;
    };
    let chroot = unique_chroot(test);
    let proxy = Proxy::start(&server.hosts).await;
    let store = Arc::new(store_behind(&proxy, &server, &chroot).await);
    let other = server.store(&chroot).await;
    let node = store
        .create_node(&Default::default())
        .await
        .expect("create_node");
    let target = LockTarget::Node(node);
    let handle = store
        .lock(&target, &LockOptions::try_once())
        .await
        .expect("lock");

    let unlocking = store.clone();
    let released = cut_under(
        &proxy,
        hold_up,
        async move { unlocking.unlock(&handle).await },
    )
    .await;
    released.expect("the unlock succeeds once reconnected");
    assert_free(&other, &target).await;
    store.close().await.expect("close");
    other.close().await.expect("close");
}

/// The delete of the contender never reached the server: it is sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlock_whose_delete_was_cut_off_is_made_again() {
    unlock_cut_off("unlock_whose_delete_was_cut_off_is_made_again", true).await;
}

/// The delete went through but its reply was lost: the `NoNode` of the
/// second attempt means done, not "lock lost".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlock_whose_reply_was_lost_succeeds() {
    unlock_cut_off("unlock_whose_reply_was_lost_succeeds", false).await;
}

/// The contender was created but the reply lost: it is found by its
/// unique prefix, the lock is held, and releasing it leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_whose_contender_reply_was_lost_is_held_and_released_cleanly() {
    let test = "lock_whose_contender_reply_was_lost_is_held_and_released_cleanly";
    let Some(server) = server_or_skip(test) else {
        return;
    };
    let chroot = unique_chroot("contender-reply");
    let proxy = Proxy::start(&server.hosts).await;
    let store = Arc::new(store_behind(&proxy, &server, &chroot).await);
    let other = server.store(&chroot).await;
    let node = store
        .create_node(&Default::default())
        .await
        .expect("create_node");
    let target = LockTarget::Node(node);

    // A blocking attempt creates its contender straight away.
    let locking = store.clone();
    let wanted = target.clone();
    let handle = cut_under(&proxy, false, async move {
        locking
            .lock(&wanted, &LockOptions::wait(Duration::from_secs(30)))
            .await
    })
    .await
    .expect("the lock is taken once reconnected");
    assert_eq!(
        other
            .lock_contenders(&target)
            .await
            .expect("lock_contenders")
            .len(),
        1,
        "one contender, ours"
    );
    store.unlock(&handle).await.expect("unlock");
    assert_free(&other, &target).await;
    store.close().await.expect("close");
    other.close().await.expect("close");
}

/// A request whose create went through but whose reply was lost is found
/// among the session's ephemerals: one request, not two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_whose_create_reply_was_lost_is_written_once() {
    let test = "request_whose_create_reply_was_lost_is_written_once";
    let Some(server) = server_or_skip(test) else {
        return;
    };
    let chroot = unique_chroot("request-reply");
    let proxy = Proxy::start(&server.hosts).await;
    let store = Arc::new(store_behind(&proxy, &server, &chroot).await);
    let creating = store.clone();
    let id = cut_under(&proxy, false, async move {
        creating.create_request(&Default::default(), "100").await
    })
    .await
    .expect("create_request succeeds once reconnected");
    let ids: Vec<String> = store
        .list_requests()
        .await
        .expect("list_requests")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, vec![id], "exactly the one request");
    store.close().await.expect("close");
}

/// A write whose reply was lost is made again on the same session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_whose_reply_was_lost_succeeds() {
    let test = "update_whose_reply_was_lost_succeeds";
    let Some(server) = server_or_skip(test) else {
        return;
    };
    let chroot = unique_chroot("update-reply");
    let proxy = Proxy::start(&server.hosts).await;
    let store = Arc::new(store_behind(&proxy, &server, &chroot).await);
    let id = store
        .create_node(&Default::default())
        .await
        .expect("create_node");
    let mut node = store
        .get_node(&id)
        .await
        .expect("get_node")
        .expect("the node");
    node.hostname = Some("after-the-cut".into());
    let updating = store.clone();
    let written = node.clone();
    cut_under(&proxy, false, async move {
        updating.update_node(&written).await
    })
    .await
    .expect("update_node succeeds once reconnected");
    let read = store
        .get_node(&id)
        .await
        .expect("get_node")
        .expect("the node");
    assert_eq!(read.hostname.as_deref(), Some("after-the-cut"));
    store.close().await.expect("close");
}
