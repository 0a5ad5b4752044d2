//! Stale request locks: `/nodepool/requests-lock/<id>` znodes outlive their
//! requests (Zuul deletes only the request; an ephemeral request goes with
//! its session) and are purged, as upstream's `_cleanupNodeRequestLocks`
//! does, once old enough and held by nobody.

mod common;

use std::time::Duration;

use common::{server_or_skip, unique_chroot};
use nodepool_core::model::NodeRequest;
use nodepool_core::store::{LockOptions, LockTarget, NodeStore};
use zookeeper_client::{Acls, CreateMode};

const LOCK_ROOT: &str = "/nodepool/requests-lock";

async fn lock_ids(raw: &zookeeper_client::Client) -> Vec<String> {
    let mut ids = raw.list_children(LOCK_ROOT).await.expect("list locks");
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_locks_of_gone_requests_once_old_and_free() {
    let Some(server) = server_or_skip("purge_removes_locks_of_gone_requests_once_old_and_free")
    else {
        return;
    };
    let chroot = unique_chroot("request-locks");
    let store = server.store(&chroot).await;
    let requestor = server.store(&chroot).await;
    let holder = server.store(&chroot).await;
    let raw = server.raw(&chroot).await;
    let once = LockOptions::try_once();

    // A live request whose lock was taken and given back: kept.
    let live = store
        .create_request(&NodeRequest::default(), "100")
        .await
        .expect("create live request");
    let handle = store
        .lock(&LockTarget::Request(live.clone()), &once)
        .await
        .expect("lock live request");
    store.unlock(&handle).await.expect("unlock live request");

    // A request deleted as Zuul deletes it (the request znode only).
    let deleted = store
        .create_request(&NodeRequest::default(), "100")
        .await
        .expect("create deleted request");
    let handle = store
        .lock(&LockTarget::Request(deleted.clone()), &once)
        .await
        .expect("lock deleted request");
    store.unlock(&handle).await.expect("unlock deleted request");
    raw.delete(&format!("/nodepool/requests/{deleted}"), None)
        .await
        .expect("delete the request znode only");

    // A request gone with its requestor's session.
    let ephemeral = requestor
        .create_request(&NodeRequest::default(), "200")
        .await
        .expect("create ephemeral request");
    let handle = store
        .lock(&LockTarget::Request(ephemeral.clone()), &once)
        .await
        .expect("lock ephemeral request");
    store
        .unlock(&handle)
        .await
        .expect("unlock ephemeral request");
    requestor.close().await.expect("close requestor");

    // A bare lock znode of a request never seen.
    let bare = "100-0000099999";
    raw.create(
        &format!("{LOCK_ROOT}/{bare}"),
        b"",
        &CreateMode::Persistent.with_acls(Acls::anyone_all()),
    )
    .await
    .expect("make a bare request lock");

    // A gone request whose lock somebody still holds: kept while held.
    let held = "100-0000099998";
    let held_handle = holder
        .lock(&LockTarget::Request(held.to_owned()), &once)
        .await
        .expect("hold a gone request's lock");

    let mut all = vec![
        live.clone(),
        deleted.clone(),
        ephemeral.clone(),
        bare.to_owned(),
        held.to_owned(),
    ];
    all.sort();
    assert_eq!(lock_ids(&raw).await, all, "every lock znode is there");

    // Younger than the age asked for: nothing goes.
    assert_eq!(
        store
            .purge_stale_request_locks(Duration::from_secs(3600))
            .await
            .expect("purge young"),
        0
    );
    assert_eq!(lock_ids(&raw).await, all, "young locks are kept");

    // Old enough: the free locks of gone requests go.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let min_age = Duration::from_millis(1);
    assert_eq!(
        store
            .purge_stale_request_locks(min_age)
            .await
            .expect("purge old"),
        3
    );
    let mut kept = vec![live.clone(), held.to_owned()];
    kept.sort();
    assert_eq!(
        lock_ids(&raw).await,
        kept,
        "a live request's lock and a held lock are kept"
    );
    assert!(
        store
            .get_request(&live)
            .await
            .expect("get live request")
            .is_some(),
        "the live request is untouched"
    );

    // Once let go, the held one goes too; then nothing is left to do.
    holder.unlock(&held_handle).await.expect("unlock held");
    assert_eq!(
        store
            .purge_stale_request_locks(min_age)
            .await
            .expect("purge released"),
        1
    );
    assert_eq!(lock_ids(&raw).await, vec![live.clone()]);
    assert_eq!(
        store
            .purge_stale_request_locks(min_age)
            .await
            .expect("purge again"),
        0
    );

    // The live request can still be locked, and its lock goes with it.
    let handle = store
        .lock(&LockTarget::Request(live.clone()), &once)
        .await
        .expect("lock live request again");
    store.delete_request(&live).await.expect("delete_request");
    assert!(store.unlock(&handle).await.is_err(), "lock went with it");
    assert!(lock_ids(&raw).await.is_empty(), "no lock znode left");

    store.close().await.expect("close");
    holder.close().await.expect("close holder");
}
