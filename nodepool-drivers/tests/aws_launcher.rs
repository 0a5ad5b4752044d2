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
        // Upstream's node_properties of an aws node.
        let props = node
            .node_properties
            .as_ref()
            .map(|p| nodepool_core::model::json::JsonValue::Object(p.clone()).to_python_json(false))
            .expect("node_properties");
        assert_eq!(props, r#"{"fleet": false, "spot": false}"#);
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

/// An error the stand-in EC2 answers RunInstances with, `remaining`
/// times.
#[derive(Debug, Clone)]
struct Fault {
    code: &'static str,
    status: u16,
    remaining: usize,
    /// RunInstances calls seen.
    calls: usize,
}

/// A stand-in EC2 in front of moto that answers RunInstances with the
/// fault while it has `remaining` answers left, and passes every other
/// call through. Returns its URL.
async fn fault_proxy(moto: String, fault: Arc<std::sync::Mutex<Fault>>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let http = reqwest::Client::new();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let http = http.clone();
            let moto = moto.clone();
            let fault = fault.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let (head, body) = loop {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let len = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0usize);
                    if buf.len() >= end + 4 + len {
                        break (head, buf[end + 4..end + 4 + len].to_vec());
                    }
                };
                let text = String::from_utf8_lossy(&body).to_string();
                let injected = if text.contains("Action=RunInstances") {
                    let mut f = fault.lock().expect("fault");
                    f.calls += 1;
                    if f.remaining > 0 {
                        f.remaining -= 1;
                        Some((f.status, f.code))
                    } else {
                        None
                    }
                } else {
                    None
                };
                let (status, answer) = if let Some((status, code)) = injected {
                    (
                        status,
                        format!(
                            "<Response><Errors><Error><Code>{code}</Code>\
                             <Message>injected by the test</Message></Error></Errors>\
                             <RequestID>r</RequestID></Response>"
                        )
                        .into_bytes(),
                    )
                } else {
                    let mut req = http.post(&moto).body(body);
                    for line in head.lines().skip(1) {
                        if let Some((k, v)) = line.split_once(':') {
                            let k = k.trim();
                            if !k.eq_ignore_ascii_case("host")
                                && !k.eq_ignore_ascii_case("content-length")
                            {
                                req = req.header(k, v.trim());
                            }
                        }
                    }
                    match req.send().await {
                        Ok(resp) => (
                            resp.status().as_u16(),
                            resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
                        ),
                        Err(_) => (502, Vec::new()),
                    }
                };
                let mut out = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: text/xml\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n",
                    answer.len()
                )
                .into_bytes();
                out.extend(answer);
                let _ = stream.write_all(&out).await;
            });
        }
    });
    url
}

/// `InsufficientInstanceCapacity` pauses the pool: the request waits
/// (it is not failed) and is served once capacity is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_errors_pause_the_pool_instead_of_failing_requests() {
    let Some(moto) = aws_support::start() else {
        return;
    };
    let (_, probe) = moto.provider(&aws_support::config("ami-x", "x", 3));
    let (image_id, image_name) = aws_support::stock_image(&probe).await;
    let text = aws_support::config(&image_id, &image_name, 3).replace(
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
    let fault = Arc::new(std::sync::Mutex::new(Fault {
        code: "InsufficientInstanceCapacity",
        status: 400,
        remaining: usize::MAX,
        calls: 0,
    }));
    let proxy = fault_proxy(moto.url.clone(), fault.clone()).await;
    let (_, provider) = moto.provider_with(&text, vec![("AWS_ENDPOINT_URL_EC2", proxy)]);
    let mut settings = LauncherSettings::new("aws-capacity-launcher");
    settings.delete_interval = Duration::from_millis(200);
    settings.cleanup_interval = Duration::from_millis(500);
    settings.min_ready_interval = Duration::from_millis(200);
    let root = MemoryStore::new();
    let store: Arc<dyn NodeStore> = Arc::new(root.session());
    let providers: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::from([(
        "ec2-test".to_string(),
        Arc::new(provider) as Arc<dyn Provider>,
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

    let mut request = NodeRequest::new(["small"]);
    request.state = Some(RequestState::Requested);
    request.requestor = Some("test".to_string());
    let rid = store.create_request(&request, "100").await.expect("submit");
    wait("the pool pauses on the capacity error", || {
        let status = launcher.status();
        async move {
            status
                .pools
                .iter()
                .any(|p| p.pool == "main" && p.paused)
                .then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = store
        .get_request(&rid)
        .await
        .expect("read")
        .expect("request");
    assert_ne!(
        now.state,
        Some(RequestState::Failed),
        "not failed while paused"
    );
    assert_ne!(now.state, Some(RequestState::Fulfilled));

    // Capacity is back: the request is served.
    fault.lock().expect("fault").remaining = 0;
    wait("request fulfilled after capacity returns", || {
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
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("launcher drains")
        .expect("task")
        .expect("run");
}

/// `RequestLimitExceeded` (EC2's throttling, HTTP 503) is retried with
/// backoff: the launch succeeds without the request failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_launches_are_retried() {
    let Some(moto) = aws_support::start() else {
        return;
    };
    let (_, probe) = moto.provider(&aws_support::config("ami-x", "x", 3));
    let (image_id, image_name) = aws_support::stock_image(&probe).await;
    let text = aws_support::config(&image_id, &image_name, 3).replace(
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
    // More throttled answers than launch-retries (3): only a retry that
    // does not count them as failed attempts gets through.
    let fault = Arc::new(std::sync::Mutex::new(Fault {
        code: "RequestLimitExceeded",
        status: 503,
        remaining: 4,
        calls: 0,
    }));
    let proxy = fault_proxy(moto.url.clone(), fault.clone()).await;
    let (_, provider) = moto.provider_with(&text, vec![("AWS_ENDPOINT_URL_EC2", proxy)]);
    let root = MemoryStore::new();
    let store: Arc<dyn NodeStore> = Arc::new(root.session());
    let providers: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::from([(
        "ec2-test".to_string(),
        Arc::new(provider) as Arc<dyn Provider>,
    )]);
    let launcher = Launcher::new(
        LauncherSettings::new("aws-throttle-launcher"),
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
    let mut request = NodeRequest::new(["small"]);
    request.state = Some(RequestState::Requested);
    request.requestor = Some("test".to_string());
    let rid = store.create_request(&request, "100").await.expect("submit");
    let done = wait("request settled", || {
        let store = store.clone();
        let rid = rid.clone();
        async move {
            store.get_request(&rid).await.ok().flatten().filter(|r| {
                matches!(
                    r.state,
                    Some(RequestState::Fulfilled) | Some(RequestState::Failed)
                )
            })
        }
    })
    .await;
    let calls = fault.lock().expect("fault").calls;
    assert_eq!(
        done.state,
        Some(RequestState::Fulfilled),
        "throttling failed the request after {calls} RunInstances calls"
    );
    assert!(
        calls >= 5,
        "4 throttled calls, then one that went through: {calls}"
    );
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("launcher drains")
        .expect("task")
        .expect("run");
}
