//! Shared harness of the launcher integration tests: a memory store, a fake
//! cloud, a launcher started on its own store session, and deadline-bound
//! waits on store conditions.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use nodepool_core::config::{load_str, Config, DriverRegistry};
use nodepool_core::launcher::{Launcher, LauncherSettings};
use nodepool_core::model::{Node, NodeRequest, NodeState, RequestState};
use nodepool_core::provider::Provider;
use nodepool_core::scheduler::DefaultScheduler;
use nodepool_core::store::{LockHandle, LockOptions, LockTarget, MemoryStore, NodeStore};
use nodepool_drivers::fake::cloud::{FakeCloud, FakeCloudSettings};
use nodepool_drivers::fake::config::FakeConfig;
use nodepool_drivers::fake::provider::FakeProvider;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A config with one fake provider `fake-provider`, pool `main`, label
/// `small` (cloud image), and whatever `pool_extra` adds to the pool and
/// `top_extra` to the top level.
pub fn yaml(pool_extra: &str, top_extra: &str) -> String {
    format!(
        "labels:
  - name: small
  - name: other
{top_extra}
providers:
  - name: fake-provider
    cloud: fake
    launch-retries: 2
    cloud-images:
      - name: Fake Precise
    pools:
      - name: main
{pool_extra}
        labels:
          - name: small
            cloud-image: Fake Precise
            min-ram: 8192
"
    )
}

/// Parse a config with the fake driver registered.
pub fn config(text: &str) -> Config {
    let mut reg = DriverRegistry::new();
    nodepool_drivers::fake::config::register(&mut reg);
    match load_str("nodepool.yaml", text, &reg) {
        Ok(c) => c,
        Err(e) => panic!("config does not load: {e}\n{text}"),
    }
}

/// The providers of `config`, all on `cloud`.
pub fn providers(config: &Config, cloud: &FakeCloud) -> BTreeMap<String, Arc<dyn Provider>> {
    let mut out: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
    for p in &config.providers {
        let fake = p
            .driver_config
            .as_any()
            .downcast_ref::<FakeConfig>()
            .expect("a fake provider config");
        out.insert(
            p.name.clone(),
            Arc::new(FakeProvider::from_config(
                p.name.clone(),
                fake,
                cloud.clone(),
            )),
        );
    }
    out
}

/// How to submit a request.
#[derive(Debug, Clone)]
pub struct RequestOptions {
    pub priority: String,
    pub relative_priority: i64,
    pub reuse: bool,
    pub tenant: Option<String>,
}

impl Default for RequestOptions {
    fn default() -> Self {
        Self {
            priority: "100".to_string(),
            relative_priority: 0,
            reuse: true,
            tenant: None,
        }
    }
}

/// Fast settings for tests.
pub fn settings() -> LauncherSettings {
    let mut s = LauncherSettings::new("test-launcher");
    s.delete_interval = Duration::from_millis(200);
    s.cleanup_interval = Duration::from_millis(300);
    s.min_ready_interval = Duration::from_millis(200);
    s.leak_grace = Duration::from_millis(500);
    s
}

/// A running launcher and what it runs on.
pub struct Harness {
    /// The root store (any session sees the same data).
    pub root: MemoryStore,
    /// The launcher's session.
    pub launcher_store: Arc<MemoryStore>,
    /// A requestor's session.
    pub store: Arc<dyn NodeStore>,
    pub cloud: FakeCloud,
    pub config: Config,
    pub launcher: Launcher,
    cancel: CancellationToken,
    task: Option<JoinHandle<nodepool_core::Result<()>>>,
}

impl Harness {
    /// Start a launcher for `text` on a fresh store and cloud.
    pub fn start(text: &str, cloud: FakeCloudSettings, settings: LauncherSettings) -> Self {
        let root = MemoryStore::new();
        let cloud = FakeCloud::new(cloud);
        Self::start_on(root, cloud, text, settings)
    }

    /// Start a launcher on an existing store and cloud.
    pub fn start_on(
        root: MemoryStore,
        cloud: FakeCloud,
        text: &str,
        settings: LauncherSettings,
    ) -> Self {
        let config = config(text);
        let launcher_store = Arc::new(root.session());
        let store: Arc<dyn NodeStore> = Arc::new(root.session());
        let launcher = Launcher::new(
            settings,
            launcher_store.clone(),
            Arc::new(DefaultScheduler),
            config.clone(),
            providers(&config, &cloud),
        );
        let cancel = CancellationToken::new();
        let task = {
            let launcher = launcher.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move { launcher.run(cancel).await })
        };
        Self {
            root,
            launcher_store,
            store,
            cloud,
            config,
            launcher,
            cancel,
            task: Some(task),
        }
    }

    /// Submit a request for `labels` (precedence "100").
    pub async fn submit(&self, labels: &[&str], options: &RequestOptions) -> String {
        let mut request = NodeRequest::new(labels.iter().copied());
        request.state = Some(RequestState::Requested);
        request.reuse = options.reuse;
        request.relative_priority = options.relative_priority;
        request.requestor = Some("test-requestor".to_string());
        request.tenant_name = options.tenant.clone();
        self.store
            .create_request(&request, &options.priority)
            .await
            .expect("submit request")
    }

    /// Take a fulfilled request's nodes as Zuul does: lock them, delete the
    /// request, mark them in-use.
    pub async fn accept(&self, id: &str) -> Vec<(Node, LockHandle)> {
        let request = self.wait_request_state(id, RequestState::Fulfilled).await;
        let mut held = Vec::new();
        for node_id in &request.nodes {
            let lock = self
                .store
                .lock(
                    &LockTarget::Node(node_id.clone()),
                    &LockOptions::wait(Duration::from_secs(5)),
                )
                .await
                .expect("lock node");
            let mut node = self
                .store
                .get_node(node_id)
                .await
                .expect("read node")
                .expect("node exists");
            assert_eq!(node.allocated_to.as_deref(), Some(id));
            node.set_state(NodeState::InUse);
            self.store.update_node(&node).await.expect("in-use");
            held.push((node, lock));
        }
        self.store.delete_request(id).await.expect("delete request");
        held
    }

    /// Return nodes as used and unlock them.
    pub async fn release(&self, held: Vec<(Node, LockHandle)>) {
        for (mut node, lock) in held {
            node.set_state(NodeState::Used);
            self.store.update_node(&node).await.expect("used");
            self.store.unlock(&lock).await.expect("unlock");
        }
    }

    /// Cancel the launcher and wait for its drain.
    pub async fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("launcher drains within 10 s")
                .expect("launcher task")
                .expect("launcher run");
        }
    }

    /// Simulate a crash: the launcher task dies without draining and its
    /// store session ends.
    pub async fn crash(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        self.launcher_store.close().await.expect("close session");
    }

    /// The request, waiting until `pred` holds.
    pub async fn wait_request(
        &self,
        id: &str,
        what: &str,
        pred: impl Fn(&NodeRequest) -> bool,
    ) -> NodeRequest {
        let store = self.store.clone();
        let id = id.to_string();
        wait_for(what, Duration::from_secs(30), || {
            let store = store.clone();
            let id = id.clone();
            let pred = &pred;
            async move {
                store
                    .get_request(&id)
                    .await
                    .ok()
                    .flatten()
                    .filter(|r| pred(r))
            }
        })
        .await
    }

    /// Wait until the request is in `state`.
    pub async fn wait_request_state(&self, id: &str, state: RequestState) -> NodeRequest {
        self.wait_request(id, &format!("request {id} {state:?}"), |r| {
            r.state == Some(state)
        })
        .await
    }

    /// Wait until the node list satisfies `pred`, return it.
    pub async fn wait_nodes(&self, what: &str, pred: impl Fn(&[Node]) -> bool) -> Vec<Node> {
        let store = self.store.clone();
        wait_for(what, Duration::from_secs(30), || {
            let store = store.clone();
            let pred = &pred;
            async move {
                let nodes = store.list_nodes().await.ok()?;
                pred(&nodes).then_some(nodes)
            }
        })
        .await
    }

    /// Wait until the cloud's instances satisfy `pred`.
    pub async fn wait_instances(&self, what: &str, pred: impl Fn(usize) -> bool) {
        let cloud = self.cloud.clone();
        let pred = &pred;
        wait_for(what, Duration::from_secs(30), || {
            let n = cloud.instances().len();
            async move { pred(n).then_some(()) }
        })
        .await
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Poll `check` every 20 ms until it yields `Some`, failing after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Nodes in `state`.
pub fn in_state(nodes: &[Node], state: NodeState) -> Vec<&Node> {
    nodes.iter().filter(|n| n.state == Some(state)).collect()
}
