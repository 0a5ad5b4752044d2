//! The real launcher engine fulfils a request on the process driver, and a
//! requestor (core's `Client`) uses and releases the node.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use nodepool_core::client::{Client, RequestOptions};
use nodepool_core::config::{load_str, DriverRegistry};
use nodepool_core::launcher::{Launcher, LauncherSettings};
use nodepool_core::model::NodeState;
use nodepool_core::provider::Provider;
use nodepool_core::scheduler::DefaultScheduler;
use nodepool_core::store::{MemoryStore, NodeStore};
use nodepool_example_process_driver::provider::INSTANCE_FILE;
use nodepool_example_process_driver::register;
use tokio_util::sync::CancellationToken;

/// Poll `check` until it holds, failing after 20 s.
async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launcher_fulfils_a_request_with_a_sandbox_and_deletes_it_after_use() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut registry = DriverRegistry::new();
    register(&mut registry);
    let text = format!(
        "labels:
  - name: sandbox
providers:
  - name: local
    driver: process
    root: {}
    command: [sleep, '300']
    pools:
      - name: main
        max-servers: 2
        labels:
          - name: sandbox
",
        root.path().display()
    );
    let config = load_str("nodepool.yaml", &text, &registry)
        .unwrap_or_else(|e| panic!("config does not load: {e}"));
    let mut providers: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
    for p in &config.providers {
        let driver = registry.get(&p.driver).expect("registered");
        providers.insert(p.name.clone(), driver.create_provider(p).expect("provider"));
    }

    let backend = MemoryStore::new();
    let mut settings = LauncherSettings::new("process-launcher");
    settings.delete_interval = Duration::from_millis(100);
    settings.cleanup_interval = Duration::from_millis(300);
    let launcher = Launcher::new(
        settings,
        Arc::new(backend.session()),
        Arc::new(DefaultScheduler),
        config,
        providers,
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let launcher = launcher.clone();
        let cancel = cancel.clone();
        async move { launcher.run(cancel).await }
    });

    let requestor: Arc<dyn NodeStore> = Arc::new(backend.session());
    let client = Client::new(requestor.clone(), "process-test");
    let request = client
        .submit(&["sandbox"], &RequestOptions::default())
        .await
        .expect("submit");
    let nodes = client
        .wait_fulfilled(&request, Duration::from_secs(30))
        .await
        .expect("fulfilled");
    let node = nodes.nodes().next().expect("one node").clone();
    assert_eq!(node.state, Some(NodeState::InUse));
    assert_eq!(node.provider.as_deref(), Some("local"));
    assert_eq!(node.interface_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(node.username.as_deref(), Some("zuul"));
    let external_id = node.external_id.clone().expect("external id");
    let sandbox = root.path().join("local").join(&external_id);
    let record = std::fs::read_to_string(sandbox.join(INSTANCE_FILE)).expect("instance.json");
    assert!(
        record.contains(&format!("\"nodepool_node_id\": \"{}\"", node.id)),
        "{record}"
    );

    client.release(nodes).await.expect("release");
    wait_until("the used node's sandbox to be removed", || {
        !sandbox.exists()
    })
    .await;
    let store = requestor.clone();
    let id = node.id.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.get_node(&id).await.expect("read").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node record not deleted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("launcher drains")
        .expect("launcher task")
        .expect("launcher run");
}
