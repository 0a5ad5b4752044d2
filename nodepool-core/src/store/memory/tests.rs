#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast::error::RecvError;

use super::MemoryStore;
use crate::model::{ImageBuild, ImageUpload, Node, NodeRequest};
use crate::store::{LockOptions, LockTarget, NodeStore};
use crate::testing::store::{store_suite, StoreHarness};
use crate::Error;

/// Sessions on one memory backend; expiry is a close.
struct MemoryHarness {
    backend: MemoryStore,
}

#[async_trait]
impl StoreHarness for MemoryHarness {
    async fn session(&self) -> Arc<dyn NodeStore> {
        Arc::new(self.backend.session())
    }

    async fn expire(&self, session: &Arc<dyn NodeStore>) {
        session.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_the_store_suite() {
    let harness = MemoryHarness {
        backend: MemoryStore::new(),
    };
    let report = store_suite(&harness).await;
    assert!(report.skipped.is_empty(), "skipped: {:?}", report.skipped);
    assert!(report.ran.contains(&"concurrent_lockers_never_overlap"));
    assert!(report.ran.len() >= 20, "ran only {:?}", report.ran);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_suite_can_run_twice_on_one_backend() {
    let harness = MemoryHarness {
        backend: MemoryStore::new(),
    };
    let first = store_suite(&harness).await;
    let second = store_suite(&harness).await;
    assert_eq!(first, second);
}

#[tokio::test]
async fn sequences_start_at_zero_like_zookeeper() {
    let store = MemoryStore::new();
    assert_eq!(
        store.create_node(&Node::default()).await.unwrap(),
        "0000000000"
    );
    assert_eq!(
        store.create_node(&Node::default()).await.unwrap(),
        "0000000001"
    );
    let request = NodeRequest::default();
    assert_eq!(
        store.create_request(&request, "200").await.unwrap(),
        "200-0000000000"
    );
    assert_eq!(
        store.create_request(&request, "100").await.unwrap(),
        "100-0000000001"
    );
    let build = store
        .create_build("img", &ImageBuild::default())
        .await
        .unwrap();
    let upload = ImageUpload::default();
    let ids = [
        store
            .create_upload("img", &build, "p1", &upload)
            .await
            .unwrap(),
        store
            .create_upload("img", &build, "p2", &upload)
            .await
            .unwrap(),
        store
            .create_upload("img", &build, "p1", &upload)
            .await
            .unwrap(),
    ];
    assert_eq!(ids, ["0000000000", "0000000000", "0000000001"]);
}

#[tokio::test]
async fn request_priority_must_be_digits() {
    let store = MemoryStore::new();
    let err = store
        .create_request(&NodeRequest::default(), "1/0")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
}

#[tokio::test]
async fn upload_of_a_missing_build_fails() {
    let store = MemoryStore::new();
    let err = store
        .create_upload("img", "nope", "p1", &ImageUpload::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotFound {
                kind: "image build",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn closed_session_refuses_operations_but_others_go_on() {
    let store = MemoryStore::new();
    let other = store.session();
    store.close().await.unwrap();
    store.close().await.unwrap();
    let err = store.create_node(&Node::default()).await.unwrap_err();
    assert!(matches!(err, Error::StoreUnavailable(_)), "{err:?}");
    assert!(err.is_retryable());
    other.create_node(&Node::default()).await.unwrap();
}

#[tokio::test]
async fn dropping_a_session_closes_it() {
    let store = MemoryStore::new();
    let doomed = store.session();
    let id = doomed
        .create_request(&NodeRequest::default(), "100")
        .await
        .unwrap();
    let target = LockTarget::Request(id.clone());
    doomed
        .lock(&target, &LockOptions::try_once())
        .await
        .unwrap();
    drop(doomed);
    assert_eq!(store.get_request(&id).await.unwrap(), None);
    store.lock(&target, &LockOptions::try_once()).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn blocking_lock_times_out_with_lock_held() {
    let a = MemoryStore::new();
    let b = a.session();
    let target = LockTarget::ImageBuilds("img".into());
    a.lock(&target, &LockOptions::try_once()).await.unwrap();
    let start = tokio::time::Instant::now();
    let err = b
        .lock(&target, &LockOptions::wait(Duration::from_secs(30)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LockHeld { .. }), "{err:?}");
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    assert_eq!(
        a.lock_contenders(&target).await.unwrap(),
        vec![String::new()]
    );
}

#[tokio::test]
async fn cancelled_waiter_leaves_the_queue() {
    let a = MemoryStore::new();
    let b = a.session();
    let target = LockTarget::Node("n".into());
    let held = a.lock(&target, &LockOptions::try_once()).await.unwrap();
    let options = LockOptions::wait(Duration::from_secs(60));
    {
        let mut waiting = Box::pin(b.lock(&target, &options));
        assert!(futures::poll!(&mut waiting).is_pending());
        assert_eq!(a.lock_contenders(&target).await.unwrap().len(), 2);
    }
    assert_eq!(a.lock_contenders(&target).await.unwrap().len(), 1);
    a.unlock(&held).await.unwrap();
    assert!(a.lock_contenders(&target).await.unwrap().is_empty());
}

#[tokio::test]
async fn waiter_cancelled_after_being_handed_the_lock_passes_it_on() {
    let a = MemoryStore::new();
    let b = a.session();
    let c = a.session();
    let target = LockTarget::Node("n".into());
    let held = a.lock(&target, &LockOptions::try_once()).await.unwrap();
    let options = LockOptions::wait(Duration::from_secs(60));
    let mut waiting = Box::pin(b.lock(&target, &options));
    assert!(futures::poll!(&mut waiting).is_pending());
    // The lock passes to b's waiter, which is dropped before it notices.
    a.unlock(&held).await.unwrap();
    drop(waiting);
    c.lock(&target, &LockOptions::try_once()).await.unwrap();
}

#[tokio::test]
async fn waiter_fails_when_its_session_closes() {
    let a = MemoryStore::new();
    let b = Arc::new(a.session());
    let target = LockTarget::Node("n".into());
    a.lock(&target, &LockOptions::try_once()).await.unwrap();
    let waiter = {
        let b = Arc::clone(&b);
        let target = target.clone();
        tokio::spawn(async move {
            b.lock(&target, &LockOptions::wait(Duration::from_secs(60)))
                .await
        })
    };
    while a.lock_contenders(&target).await.unwrap().len() < 2 {
        tokio::task::yield_now().await;
    }
    b.close().await.unwrap();
    let err = waiter.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::StoreUnavailable(_)), "{err:?}");
    assert_eq!(a.lock_contenders(&target).await.unwrap().len(), 1);
}

#[tokio::test]
async fn deleting_a_node_fails_its_lock_waiters_and_loses_the_holder() {
    let a = MemoryStore::new();
    let b = Arc::new(a.session());
    let id = a.create_node(&Node::default()).await.unwrap();
    let target = LockTarget::Node(id.clone());
    let held = a.lock(&target, &LockOptions::try_once()).await.unwrap();
    let waiter = {
        let b = Arc::clone(&b);
        let target = target.clone();
        tokio::spawn(async move {
            b.lock(&target, &LockOptions::wait(Duration::from_secs(60)))
                .await
        })
    };
    while a.lock_contenders(&target).await.unwrap().len() < 2 {
        tokio::task::yield_now().await;
    }
    a.delete_node(&id).await.unwrap();
    let err = waiter.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::LockLost { .. }), "{err:?}");
    let err = a.unlock(&held).await.unwrap_err();
    assert!(matches!(err, Error::LockLost { .. }), "{err:?}");
}

#[tokio::test]
async fn deleting_a_build_deletes_the_locks_under_it() {
    let store = MemoryStore::new();
    let build = store
        .create_build("img", &ImageBuild::default())
        .await
        .unwrap();
    let under = LockTarget::ProviderUploads {
        image: "img".into(),
        build: build.clone(),
        provider: "p1".into(),
    };
    let beside = LockTarget::ImageBuilds("img".into());
    let under_handle = store.lock(&under, &LockOptions::try_once()).await.unwrap();
    let beside_handle = store.lock(&beside, &LockOptions::try_once()).await.unwrap();
    store.delete_build("img", &build).await.unwrap();
    assert!(matches!(
        store.unlock(&under_handle).await,
        Err(Error::LockLost { .. })
    ));
    store.unlock(&beside_handle).await.unwrap();
}

#[tokio::test]
async fn lagging_watcher_is_told_it_lagged() {
    let store = MemoryStore::with_event_capacity(4);
    let mut events = store.watch();
    for _ in 0..10 {
        store.create_node(&Node::default()).await.unwrap();
    }
    assert!(matches!(events.recv().await, Err(RecvError::Lagged(6))));
}

#[tokio::test]
async fn flags_on_an_unknown_image_do_not_list_it_until_set() {
    let store = MemoryStore::new();
    store.set_image_paused("img", false).await.unwrap();
    store.set_build_requested("img", false).await.unwrap();
    assert!(store.list_images().await.unwrap().is_empty());
    store.set_build_requested("img", true).await.unwrap();
    assert_eq!(store.list_images().await.unwrap(), vec!["img".to_owned()]);
}
