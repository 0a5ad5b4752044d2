//! The launcher engine on the aws driver against moto: min-ready nodes
//! are running EC2 instances with upstream's tags, a request is served,
//! a returned node's instance is terminated, a tagged instance without a
//! node is terminated after the grace period, and the pool never runs
//! more than max-servers instances.

mod aws_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use nodepool_core::launcher::{Launcher, LauncherSettings};
use nodepool_core::model::{NodeRequest, NodeState, RequestState};
use nodepool_core::provider::Provider;
use nodepool_core::scheduler::DefaultScheduler;
use nodepool_core::store::{LockOptions, LockTarget, MemoryStore, NodeStore};
use nodepool_drivers::aws::client::Params;
use nodepool_drivers::aws::AwsProvider;
use tokio_util::sync::CancellationToken;

/// Live instances of provider `ec2-test` in moto: id → tags.
async fn live(provider: &AwsProvider) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut p = Params::new();
    p.filter("tag:nodepool_provider_name", &["ec2-test"])
        .filter("instance-state-name", &["pending", "running"]);
    let answer = provider
        .client()
        .ec2("DescribeInstances", &p)
        .await
        .expect("DescribeInstances");
    let out = answer
        .items("reservationSet")
        .flat_map(|r| r.items("instancesSet"))
        .map(|i| (i.text_at(&["instanceId"]).unwrap_or_default(), i.tags()))
        .collect();
    out
}

async fn wait<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launcher_keeps_min_ready_serves_deletes_and_cleans_leaks_in_moto() {
    let Some(moto) = aws_support::start() else {
        return;
    };
    let (_, probe) = moto.provider(&aws_support::config("ami-x", "x", 3));
    let (image_id, image_name) = aws_support::stock_image(&probe).await;
    let text = aws_support::config(&image_id, &image_name, 3)
        .replacen(
            "  - name: small\n",
            "  - name: small\n    min-ready: 2\n",
            1,
        )
        .replace(
            "        max-servers: 3\n",
            "        max-servers: 3\n        host-key-checking: false\n",
        );
    let config = match nodepool_core::config::load_str(
        "nodepool.yaml",
        &text,
        &nodepool_drivers::registry::builtin(),
    ) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let (_, provider) = moto.provider(&text);
    let provider = Arc::new(provider);
    let (_, observer) = moto.provider(&text);

    let mut settings = LauncherSettings::new("aws-test-launcher");
    settings.delete_interval = Duration::from_millis(200);
    settings.cleanup_interval = Duration::from_millis(500);
    settings.min_ready_interval = Duration::from_millis(200);
    settings.leak_grace = Duration::from_secs(1);
    let root = MemoryStore::new();
    let store: Arc<dyn NodeStore> = Arc::new(root.session());
    let providers: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::from([(
        "ec2-test".to_string(),
        provider.clone() as Arc<dyn Provider>,
    )]);
    let launcher = Launcher::new(
        settings,
        Arc::new(root.session()),
        Arc::new(DefaultScheduler),
        config,
        providers,
    );
    let cancel = CancellationToken::new();
    let task = {
        let launcher = launcher.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move { launcher.run(cancel).await })
    };

    // A watcher: moto never holds more live instances than max-servers.
    let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watch_cancel = CancellationToken::new();
    let watcher = {
        let peak = peak.clone();
        let cancel = watch_cancel.clone();
        let (_, watcher_provider) = moto.provider(&text);
        tokio::spawn(async move {
            while !cancel.is_cancelled() {
                // Our hand-made leak is not the launcher's.
                let n = live(&watcher_provider)
                    .await
                    .values()
                    .filter(|tags| tags["nodepool_node_id"] != "0999999999")
                    .count();
                peak.fetch_max(n, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // min-ready: two ready nodes, each a running instance with our tags.
    let ready = wait("two ready nodes", || {
        let store = store.clone();
        async move {
            let nodes = store.list_nodes().await.ok()?;
            let ready: Vec<_> = nodes
                .into_iter()
                .filter(|n| n.state == Some(NodeState::Ready))
                .collect();
            (ready.len() == 2).then_some(ready)
        }
    })
    .await;
    let instances = live(&observer).await;
    for node in &ready {
        let id = node.external_id.clone().expect("external id");
        let tags = instances
            .get(&id)
            .unwrap_or_else(|| panic!("{id} not running"));
        assert_eq!(tags["nodepool_node_id"], node.id);
        assert_eq!(tags["nodepool_pool_name"], "main");
        assert_eq!(tags["nodepool_provider_name"], "ec2-test");
        assert_eq!(Some(&tags["Name"]), node.hostname.as_ref());
        assert_eq!(node.cloud.as_deref(), Some("AWS"));
        assert_eq!(node.region.as_deref(), Some("us-west-2"));
        assert!(node.interface_ip.is_some());
        assert_eq!(node.username.as_deref(), Some("ec2-user"));
    }

    // A request is served; the node, once used, is deleted with its instance.
    let mut request = NodeRequest::new(["small"]);
    request.state = Some(RequestState::Requested);
    request.requestor = Some("test".to_string());
    let rid = store.create_request(&request, "100").await.expect("submit");
    let fulfilled = wait("request fulfilled", || {
        let store = store.clone();
        let rid = rid.clone();
        async move {
            store
                .get_request(&rid)
                .await
                .ok()
                .flatten()
                .filter(|r| r.state == Some(RequestState::Fulfilled))
        }
    })
    .await;
    let node_id = fulfilled.nodes[0].clone();
    let lock = store
        .lock(
            &LockTarget::Node(node_id.clone()),
            &LockOptions::wait(Duration::from_secs(5)),
        )
        .await
        .expect("lock");
    let mut node = store.get_node(&node_id).await.expect("read").expect("node");
    let used_instance = node.external_id.clone().expect("external id");
    node.set_state(NodeState::Used);
    store.update_node(&node).await.expect("used");
    store.unlock(&lock).await.expect("unlock");
    store.delete_request(&rid).await.expect("delete request");
    wait("used node's instance terminated", || {
        let observer = &observer;
        let used_instance = used_instance.clone();
        async move { (!live(observer).await.contains_key(&used_instance)).then_some(()) }
    })
    .await;

    // A tagged instance without a node record is a leak: terminated.
    let leak_tags = BTreeMap::from([
        ("nodepool_provider_name".to_string(), "ec2-test".to_string()),
        ("nodepool_pool_name".to_string(), "main".to_string()),
        ("nodepool_node_id".to_string(), "0999999999".to_string()),
    ]);
    let mut p = Params::new();
    p.set("ImageId", &image_id)
        .set("MinCount", 1)
        .set("MaxCount", 1)
        .set("InstanceType", "t3.micro")
        .set("TagSpecification.1.ResourceType", "instance");
    p.tags("TagSpecification.1.Tag", &leak_tags);
    let answer = observer
        .client()
        .ec2("RunInstances", &p)
        .await
        .expect("RunInstances");
    let leaked = answer
        .items("instancesSet")
        .next()
        .and_then(|i| i.text_at(&["instanceId"]))
        .expect("leaked id");
    wait("leaked instance terminated", || {
        let observer = &observer;
        let leaked = leaked.clone();
        async move { (!live(observer).await.contains_key(&leaked)).then_some(()) }
    })
    .await;

    // The records and moto agree: every live instance has a node.
    wait("records and moto agree", || {
        let store = store.clone();
        let observer = &observer;
        async move {
            let nodes = store.list_nodes().await.ok()?;
            let ids: Vec<String> = nodes.iter().filter_map(|n| n.external_id.clone()).collect();
            let running = live(observer).await;
            (running.len() == 2 && running.keys().all(|id| ids.contains(id))).then_some(())
        }
    })
    .await;

    watch_cancel.cancel();
    let _ = watcher.await;
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        (2..=3).contains(&peak),
        "the launcher ran {peak} instances at once; max-servers is 3"
    );
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("launcher drains")
        .expect("task")
        .expect("run");
}
