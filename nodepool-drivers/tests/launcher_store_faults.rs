//! A launcher whose store fails midway through a request (a lost ZooKeeper
//! connection): the request is handled again and no node is left `init`
//! for good. The launcher's store session is a memory store wrapped to fail
//! chosen calls once.

mod launcher_support;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use launcher_support::{config, providers, settings, wait_for, yaml, RequestOptions};
use nodepool_core::launcher::Launcher;
use nodepool_core::model::{
    Component, ImageBuild, ImageUpload, Node, NodeRequest, NodeState, RequestState,
};
use nodepool_core::scheduler::DefaultScheduler;
use nodepool_core::store::{
    AdmissionToken, LockHandle, LockOptions, LockTarget, MemoryStore, NodeStore, StoreEvent,
};
use nodepool_core::{Error, Result};
use nodepool_drivers::fake::cloud::{FakeCloud, FakeCloudSettings};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// A store session that fails chosen calls a given number of times.
#[derive(Debug)]
struct FlakyStore {
    inner: MemoryStore,
    /// Node locks to fail (before taking them).
    node_locks: AtomicUsize,
    /// Node creates to fail after the node was created (a lost reply).
    node_creates: AtomicUsize,
    /// Milliseconds each admission takes before it reaches the store (a
    /// ZooKeeper commit's round trip).
    admit_delay_ms: AtomicU64,
    /// Admissions that reached the store.
    admit_calls: AtomicUsize,
    /// The most node records in the store right after an admission.
    most_nodes: AtomicUsize,
}

impl FlakyStore {
    fn new(inner: MemoryStore) -> Self {
        Self {
            inner,
            node_locks: AtomicUsize::new(0),
            node_creates: AtomicUsize::new(0),
            admit_delay_ms: AtomicU64::new(0),
            admit_calls: AtomicUsize::new(0),
            most_nodes: AtomicUsize::new(0),
        }
    }
}

/// Takes one failure from `counter` if any is left.
fn take(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

fn unavailable(what: &str) -> Error {
    Error::StoreUnavailable(format!("injected: {what}: Connection reset by peer"))
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl NodeStore for FlakyStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn create_node(&self, node: &Node) -> Result<String> {
        let id = self.inner.create_node(node).await?;
        if take(&self.node_creates) {
            return Err(unavailable("create node"));
        }
        Ok(id)
    }
    async fn node_ids(&self) -> Result<Vec<String>> {
        self.inner.node_ids().await
    }
    async fn admission_token(&self, key: &str) -> Result<AdmissionToken> {
        self.inner.admission_token(key).await
    }
    async fn create_nodes_admitted(
        &self,
        nodes: &[Node],
        tokens: &[AdmissionToken],
    ) -> Result<Vec<String>> {
        let delay = self.admit_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let ids = self.inner.create_nodes_admitted(nodes, tokens).await?;
        self.admit_calls.fetch_add(1, Ordering::SeqCst);
        let count = self.inner.node_ids().await?.len();
        self.most_nodes.fetch_max(count, Ordering::SeqCst);
        if take(&self.node_creates) {
            return Err(unavailable("create node"));
        }
        Ok(ids)
    }
    async fn get_node(&self, id: &str) -> Result<Option<Node>> {
        self.inner.get_node(id).await
    }
    async fn update_node(&self, node: &Node) -> Result<()> {
        self.inner.update_node(node).await
    }
    async fn delete_node(&self, id: &str) -> Result<()> {
        self.inner.delete_node(id).await
    }
    async fn list_nodes(&self) -> Result<Vec<Node>> {
        self.inner.list_nodes().await
    }
    async fn purge_empty_nodes(&self) -> Result<usize> {
        self.inner.purge_empty_nodes().await
    }
    async fn purge_stale_request_locks(&self, min_age: Duration) -> Result<usize> {
        self.inner.purge_stale_request_locks(min_age).await
    }
    async fn create_request(&self, request: &NodeRequest, priority: &str) -> Result<String> {
        self.inner.create_request(request, priority).await
    }
    async fn get_request(&self, id: &str) -> Result<Option<NodeRequest>> {
        self.inner.get_request(id).await
    }
    async fn update_request(&self, request: &NodeRequest) -> Result<()> {
        self.inner.update_request(request).await
    }
    async fn delete_request(&self, id: &str) -> Result<()> {
        self.inner.delete_request(id).await
    }
    async fn list_requests(&self) -> Result<Vec<NodeRequest>> {
        self.inner.list_requests().await
    }
    async fn list_images(&self) -> Result<Vec<String>> {
        self.inner.list_images().await
    }
    async fn create_build(&self, image: &str, build: &ImageBuild) -> Result<String> {
        self.inner.create_build(image, build).await
    }
    async fn get_build(&self, image: &str, build_id: &str) -> Result<Option<ImageBuild>> {
        self.inner.get_build(image, build_id).await
    }
    async fn update_build(&self, image: &str, build: &ImageBuild) -> Result<()> {
        self.inner.update_build(image, build).await
    }
    async fn delete_build(&self, image: &str, build_id: &str) -> Result<()> {
        self.inner.delete_build(image, build_id).await
    }
    async fn list_builds(&self, image: &str) -> Result<Vec<ImageBuild>> {
        self.inner.list_builds(image).await
    }
    async fn create_upload(
        &self,
        image: &str,
        build_id: &str,
        provider: &str,
        upload: &ImageUpload,
    ) -> Result<String> {
        self.inner
            .create_upload(image, build_id, provider, upload)
            .await
    }
    async fn update_upload(&self, upload: &ImageUpload) -> Result<()> {
        self.inner.update_upload(upload).await
    }
    async fn delete_upload(
        &self,
        image: &str,
        build_id: &str,
        provider: &str,
        upload_id: &str,
    ) -> Result<()> {
        self.inner
            .delete_upload(image, build_id, provider, upload_id)
            .await
    }
    async fn list_uploads(&self, image: &str, build_id: &str) -> Result<Vec<ImageUpload>> {
        self.inner.list_uploads(image, build_id).await
    }
    async fn set_image_paused(&self, image: &str, paused: bool) -> Result<()> {
        self.inner.set_image_paused(image, paused).await
    }
    async fn image_paused(&self, image: &str) -> Result<bool> {
        self.inner.image_paused(image).await
    }
    async fn set_build_requested(&self, image: &str, requested: bool) -> Result<()> {
        self.inner.set_build_requested(image, requested).await
    }
    async fn build_requested(&self, image: &str) -> Result<bool> {
        self.inner.build_requested(image).await
    }
    async fn register_component(
        &self,
        kind: &str,
        name: &str,
        component: &Component,
    ) -> Result<()> {
        self.inner.register_component(kind, name, component).await
    }
    async fn unregister_component(&self, kind: &str, name: &str) -> Result<()> {
        self.inner.unregister_component(kind, name).await
    }
    async fn list_components(&self, kind: &str) -> Result<Vec<Component>> {
        self.inner.list_components(kind).await
    }
    async fn lock(&self, target: &LockTarget, options: &LockOptions) -> Result<LockHandle> {
        if matches!(target, LockTarget::Node(_)) && take(&self.node_locks) {
            return Err(unavailable("lock node"));
        }
        self.inner.lock(target, options).await
    }
    async fn unlock(&self, handle: &LockHandle) -> Result<()> {
        self.inner.unlock(handle).await
    }
    async fn lock_contenders(&self, target: &LockTarget) -> Result<Vec<String>> {
        self.inner.lock_contenders(target).await
    }
    fn watch(&self) -> broadcast::Receiver<StoreEvent> {
        self.inner.watch()
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

/// A launcher on `flaky` (a session of `root`), a requestor session, and
/// the cancel token of the launcher.
struct Setup {
    requestor: Arc<dyn NodeStore>,
    cancel: CancellationToken,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn start(root: &MemoryStore, flaky: Arc<FlakyStore>) -> Setup {
    start_with(root, flaky, "")
}

fn start_with(root: &MemoryStore, flaky: Arc<FlakyStore>, pool_extra: &str) -> Setup {
    let config = config(&yaml(pool_extra, ""));
    let cloud = FakeCloud::new(FakeCloudSettings::default());
    let launcher = Launcher::new(
        settings(),
        flaky,
        Arc::new(DefaultScheduler),
        config.clone(),
        providers(&config, &cloud),
    );
    let cancel = CancellationToken::new();
    let run = cancel.clone();
    tokio::spawn(async move { launcher.run(run).await });
    Setup {
        requestor: Arc::new(root.session()),
        cancel,
    }
}

async fn submit(store: &dyn NodeStore) -> String {
    let options = RequestOptions::default();
    let mut request = NodeRequest::new(["small"]);
    request.state = Some(RequestState::Requested);
    request.requestor = Some("test-requestor".into());
    store
        .create_request(&request, &options.priority)
        .await
        .expect("submit request")
}

/// Waits until the request is fulfilled and no node is `init` or
/// `deleting` any more; returns the fulfilled request's node ids.
async fn fulfilled_and_settled(store: &Arc<dyn NodeStore>, id: &str) -> Vec<String> {
    wait_for(
        "the request fulfilled and every other node gone",
        Duration::from_secs(30),
        || {
            let store = store.clone();
            let id = id.to_owned();
            async move {
                let request = store.get_request(&id).await.ok()??;
                if request.state != Some(RequestState::Fulfilled) {
                    return None;
                }
                let nodes = store.list_nodes().await.ok()?;
                let settled = nodes.iter().all(|n| request.nodes.contains(&n.id));
                settled.then_some(request.nodes)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_created_but_not_locked_is_deleted_and_the_request_handled_again() {
    let root = MemoryStore::new();
    let flaky = Arc::new(FlakyStore::new(root.session()));
    flaky.node_locks.store(1, Ordering::SeqCst);
    let setup = start(&root, flaky.clone());
    let id = submit(&*setup.requestor).await;
    let nodes = fulfilled_and_settled(&setup.requestor, &id).await;
    assert_eq!(nodes.len(), 1);
    assert_eq!(
        flaky.node_locks.load(Ordering::SeqCst),
        0,
        "the fault was hit"
    );
    assert_ne!(
        nodes[0], "0000000000",
        "the first node, created but never locked, was not handed out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_whose_create_reply_was_lost_is_found_and_deleted() {
    let root = MemoryStore::new();
    let flaky = Arc::new(FlakyStore::new(root.session()));
    flaky.node_creates.store(1, Ordering::SeqCst);
    let setup = start(&root, flaky.clone());
    let id = submit(&*setup.requestor).await;
    let nodes = fulfilled_and_settled(&setup.requestor, &id).await;
    assert_eq!(nodes.len(), 1);
    assert_eq!(
        flaky.node_creates.load(Ordering::SeqCst),
        0,
        "the fault was hit"
    );
    assert_ne!(nodes[0], "0000000000");
}

/// An unlocked `init` node whose request is gone is deleted even though
/// its launcher is alive (nothing else would ever take it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_node_of_a_gone_request_is_deleted() {
    let root = MemoryStore::new();
    let flaky = Arc::new(FlakyStore::new(root.session()));
    let setup = start(&root, flaky);
    let store = setup.requestor.clone();
    let pool_id = wait_for("the pool registered", Duration::from_secs(10), || {
        let store = store.clone();
        async move {
            let pools = store.list_components("pool").await.ok()?;
            pools.into_iter().find_map(|c| c.id)
        }
    })
    .await;
    let mut node = Node::new(NodeState::Init);
    node.provider = Some("fake-provider".into());
    node.pool = Some("main".into());
    node.labels = vec!["small".into()];
    node.launcher = Some(pool_id);
    node.allocated_to = Some("100-0000009999".into());
    let orphan = store.create_node(&node).await.expect("create_node");
    wait_for(
        "the orphaned init node deleted",
        Duration::from_secs(30),
        || {
            let store = store.clone();
            let orphan = orphan.clone();
            async move {
                match store.get_node(&orphan).await {
                    Ok(None) => Some(()),
                    _ => None,
                }
            }
        },
    )
    .await;
}

/// Requests that reach admission while another admission's store call is
/// under way are created together, in one store call, and the grouped
/// admissions never take the pool past its limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admissions_waiting_behind_one_are_created_together_within_the_limit() {
    let root = MemoryStore::new();
    let flaky = Arc::new(FlakyStore::new(root.session()));
    flaky.admit_delay_ms.store(100, Ordering::SeqCst);
    let setup = start_with(&root, flaky.clone(), "        max-servers: 6");
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(submit(&*setup.requestor).await);
    }
    for id in &ids {
        wait_for("the request fulfilled", Duration::from_secs(30), || {
            let store = setup.requestor.clone();
            let id = id.clone();
            async move {
                let r = store.get_request(&id).await.ok()??;
                (r.state == Some(RequestState::Fulfilled)).then_some(())
            }
        })
        .await;
    }
    let calls = flaky.admit_calls.load(Ordering::SeqCst);
    assert!(
        calls < 6,
        "6 requests made at once took {calls} admissions: none were grouped"
    );
    // Six more than the pool holds: they wait for room, and the grouped
    // admissions never create past max-servers.
    let mut more = Vec::new();
    for _ in 0..6 {
        more.push(submit(&*setup.requestor).await);
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        flaky.admit_calls.load(Ordering::SeqCst),
        calls,
        "no node admitted past max-servers"
    );
    let most = flaky.most_nodes.load(Ordering::SeqCst);
    assert!(most <= 6, "{most} node records for max-servers 6");
}
