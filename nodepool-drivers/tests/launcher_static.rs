//! Launcher engine with static pools: registered hosts are handed out,
//! handed back and registered again, never launched or deleted; config
//! changes add and remove hosts while the launcher runs. Hosts answer from
//! a [`ScriptedScanner`] table, so no sshd is needed.

mod launcher_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use launcher_support::{settings, wait_for, RequestOptions};
use nodepool_core::config::{load_str, Config, DriverRegistry};
use nodepool_core::launcher::Launcher;
use nodepool_core::model::{Node, NodeRequest, NodeState, RequestState};
use nodepool_core::provider::Provider;
use nodepool_core::scheduler::DefaultScheduler;
use nodepool_core::store::{LockHandle, LockOptions, LockTarget, MemoryStore, NodeStore};
use nodepool_drivers::static_hosts::{ScriptedScanner, StaticConfig, StaticProvider};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA";
const PROVIDER: &str = "static-rack";

/// One configured host: name, labels, `max-parallel-jobs`.
struct Host(&'static str, &'static str, u32);

/// A config with one static provider, pool `main`, holding `hosts`; the
/// labels `static-a`, `static-b` and `cloud-only` (served by no pool).
fn yaml(hosts: &[Host]) -> String {
    let mut nodes = String::new();
    for Host(name, labels, slots) in hosts {
        nodes.push_str(&format!(
            "          - name: {name}
            labels: [{labels}]
            host-key: {KEY}
            max-parallel-jobs: {slots}
"
        ));
    }
    format!(
        "labels:
  - name: static-a
  - name: static-b
  - name: cloud-only
providers:
  - name: {PROVIDER}
    driver: static
    pools:
      - name: main
        nodes:
{nodes}"
    )
}

fn config(text: &str) -> Config {
    let mut reg = DriverRegistry::new();
    nodepool_drivers::static_hosts::register(&mut reg);
    match load_str("nodepool.yaml", text, &reg) {
        Ok(c) => c,
        Err(e) => panic!("config does not load: {e}\n{text}"),
    }
}

/// Static providers for `config`, probing `net`.
fn providers(config: &Config, net: &Arc<ScriptedScanner>) -> BTreeMap<String, Arc<dyn Provider>> {
    let mut out: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
    for p in &config.providers {
        let typed = p
            .driver_config
            .as_any()
            .downcast_ref::<StaticConfig>()
            .expect("a static provider config");
        out.insert(
            p.name.clone(),
            Arc::new(StaticProvider::with_scanner(
                Arc::new(typed.clone()),
                net.clone(),
            )),
        );
    }
    out
}

/// A launcher over static hosts on a memory store.
struct StaticHarness {
    /// A requestor's session.
    store: Arc<dyn NodeStore>,
    net: Arc<ScriptedScanner>,
    launcher: Launcher,
    cancel: CancellationToken,
    task: Option<JoinHandle<nodepool_core::Result<()>>>,
}

impl StaticHarness {
    /// Start a launcher for `hosts`; every host answers with [`KEY`].
    fn start(hosts: &[Host]) -> Self {
        let net = Arc::new(ScriptedScanner::new());
        for Host(name, _, _) in hosts {
            net.up(name, 22, &[KEY]);
        }
        let root = MemoryStore::new();
        let config = config(&yaml(hosts));
        let launcher = Launcher::new(
            settings(),
            Arc::new(root.session()),
            Arc::new(DefaultScheduler),
            config.clone(),
            providers(&config, &net),
        );
        let cancel = CancellationToken::new();
        let task = {
            let launcher = launcher.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move { launcher.run(cancel).await })
        };
        Self {
            store: Arc::new(root.session()),
            net,
            launcher,
            cancel,
            task: Some(task),
        }
    }

    /// Apply a new host list to the running launcher (new provider objects,
    /// as the daemon builds them on a config change).
    fn reconfigure(&self, hosts: &[Host]) {
        for Host(name, _, _) in hosts {
            self.net.up(name, 22, &[KEY]);
        }
        let config = config(&yaml(hosts));
        let providers = providers(&config, &self.net);
        self.launcher.update_config(config, providers);
    }

    async fn submit(&self, labels: &[&str]) -> String {
        let options = RequestOptions::default();
        let mut request = NodeRequest::new(labels.iter().copied());
        request.state = Some(RequestState::Requested);
        request.reuse = options.reuse;
        request.requestor = Some("test-requestor".to_string());
        self.store
            .create_request(&request, &options.priority)
            .await
            .expect("submit request")
    }

    async fn request(&self, id: &str) -> NodeRequest {
        self.store
            .get_request(id)
            .await
            .expect("read request")
            .expect("request exists")
    }

    async fn wait_request_state(&self, id: &str, state: RequestState) -> NodeRequest {
        let store = self.store.clone();
        wait_for(
            &format!("request {id} {state:?}"),
            Duration::from_secs(30),
            || {
                let store = store.clone();
                async move {
                    store
                        .get_request(id)
                        .await
                        .ok()
                        .flatten()
                        .filter(|r| r.state == Some(state))
                }
            },
        )
        .await
    }

    /// Wait until the node records satisfy `pred`, return them.
    async fn wait_nodes(&self, what: &str, pred: impl Fn(&[Node]) -> bool) -> Vec<Node> {
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

    /// Take a fulfilled request's nodes as Zuul does: lock, delete the
    /// request, mark them in-use.
    async fn accept(&self, id: &str) -> Vec<(Node, LockHandle)> {
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
            node.set_state(NodeState::InUse);
            self.store.update_node(&node).await.expect("in-use");
            held.push((node, lock));
        }
        self.store.delete_request(id).await.expect("delete request");
        held
    }

    /// Return nodes as used and unlock them.
    async fn release(&self, held: Vec<(Node, LockHandle)>) {
        for (mut node, lock) in held {
            node.set_state(NodeState::Used);
            self.store.update_node(&node).await.expect("used");
            self.store.unlock(&lock).await.expect("unlock");
        }
    }

    async fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("launcher drains within 10 s")
                .expect("launcher task")
                .expect("launcher run");
        }
    }
}

impl Drop for StaticHarness {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The records of `host`.
fn of_host<'a>(nodes: &'a [Node], host: &str) -> Vec<&'a Node> {
    nodes
        .iter()
        .filter(|n| n.hostname.as_deref() == Some(host))
        .collect()
}

/// Whether `host` has exactly `n` records, all ready and free.
fn free_records(nodes: &[Node], host: &str, n: usize) -> bool {
    let mine = of_host(nodes, host);
    mine.len() == n
        && mine
            .iter()
            .all(|r| r.state == Some(NodeState::Ready) && r.allocated_to.is_none())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_request_is_fulfilled_with_the_registered_node() {
    let mut h = StaticHarness::start(&[Host("h1", "static-a", 1)]);
    let nodes = h
        .wait_nodes("h1 registered", |n| free_records(n, "h1", 1))
        .await;
    let registered = of_host(&nodes, "h1")[0].clone();
    assert_eq!(registered.provider.as_deref(), Some(PROVIDER));
    assert_eq!(registered.host_keys, vec![KEY.to_string()]);

    let id = h.submit(&["static-a"]).await;
    let request = h.wait_request_state(&id, RequestState::Fulfilled).await;

    assert_eq!(request.nodes, vec![registered.id.clone()]);
    let node = h
        .store
        .get_node(&registered.id)
        .await
        .expect("read node")
        .expect("node exists");
    assert_eq!(node.state, Some(NodeState::Ready));
    assert_eq!(node.allocated_to.as_deref(), Some(id.as_str()));
    let all = h.store.list_nodes().await.expect("list nodes");
    assert_eq!(all.len(), 1, "nothing was launched: {all:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_static_node_is_registered_again_and_reused() {
    let mut h = StaticHarness::start(&[Host("h1", "static-a", 1)]);
    h.wait_nodes("h1 registered", |n| free_records(n, "h1", 1))
        .await;
    let first = h.submit(&["static-a"]).await;
    let held = h.accept(&first).await;
    let used_id = held[0].0.id.clone();
    h.release(held).await;

    let nodes = h
        .wait_nodes("h1 registered again", |n| {
            n.iter().all(|r| r.id != used_id) && free_records(n, "h1", 1)
        })
        .await;
    let fresh = of_host(&nodes, "h1")[0].clone();
    assert_ne!(fresh.id, used_id);
    assert_eq!(fresh.slot, Some(0));

    let second = h.submit(&["static-a"]).await;
    let request = h.wait_request_state(&second, RequestState::Fulfilled).await;
    assert_eq!(request.nodes, vec![fresh.id]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_parallel_jobs_two_serves_two_requests_and_a_third_waits() {
    let mut h = StaticHarness::start(&[Host("h1", "static-a", 2)]);
    h.wait_nodes("h1 registered twice", |n| free_records(n, "h1", 2))
        .await;
    let a = h.submit(&["static-a"]).await;
    let b = h.submit(&["static-a"]).await;
    let held_a = h.accept(&a).await;
    let held_b = h.accept(&b).await;
    assert_ne!(held_a[0].0.id, held_b[0].0.id);
    let c = h.submit(&["static-a"]).await;

    // Both slots are in use: the third request is neither served nor
    // declined, and the pool does not pause for it. A later request the
    // pool must decline marks a pass that saw the third one too.
    let marker = h.submit(&["cloud-only"]).await;
    h.wait_request_state(&marker, RequestState::Failed).await;
    let status = h.launcher.status();
    assert!(status.pools.iter().all(|p| !p.active_requests.contains(&c)));
    assert!(status.pools.iter().all(|p| !p.paused));
    let waiting = h.request(&c).await;
    assert_eq!(waiting.state, Some(RequestState::Requested));
    assert!(waiting.declined_by.is_empty());
    assert_eq!(
        h.store.list_nodes().await.expect("list").len(),
        2,
        "no node was launched for the third request"
    );

    h.release(held_a).await;
    let request = h.wait_request_state(&c, RequestState::Fulfilled).await;
    let node = h
        .store
        .get_node(&request.nodes[0])
        .await
        .expect("read node")
        .expect("node exists");
    assert_eq!(node.hostname.as_deref(), Some("h1"));
    h.release(held_b).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_for_a_label_no_static_pool_serves_fails() {
    let mut h = StaticHarness::start(&[Host("h1", "static-a", 1)]);
    h.wait_nodes("h1 registered", |n| free_records(n, "h1", 1))
        .await;
    let id = h.submit(&["cloud-only"]).await;
    let request = h.wait_request_state(&id, RequestState::Failed).await;
    assert_eq!(request.declined_by.len(), 1);
    let nodes = h.store.list_nodes().await.expect("list nodes");
    assert!(free_records(&nodes, "h1", 1), "{nodes:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_update_adds_hosts_and_removes_free_ones_and_in_use_ones_when_freed() {
    let mut h = StaticHarness::start(&[
        Host("h1", "static-a", 1),
        Host("h2", "static-b", 1),
        Host("h4", "static-a", 1),
    ]);
    let nodes = h
        .wait_nodes("three hosts registered", |n| {
            ["h1", "h2", "h4"]
                .iter()
                .all(|host| free_records(n, host, 1))
        })
        .await;
    let h1_id = of_host(&nodes, "h1")[0].id.clone();
    let id = h.submit(&["static-b"]).await;
    let held = h.accept(&id).await;
    assert_eq!(held[0].0.hostname.as_deref(), Some("h2"));

    // h2 (in use) and h4 (free) leave the config, h3 joins.
    h.reconfigure(&[Host("h1", "static-a", 1), Host("h3", "static-b", 1)]);
    let nodes = h
        .wait_nodes("h3 registered, h4 deregistered", |n| {
            free_records(n, "h3", 1) && of_host(n, "h4").is_empty()
        })
        .await;
    let h2 = of_host(&nodes, "h2");
    assert_eq!(h2.len(), 1, "the in-use record stays until freed");
    assert_eq!(h2[0].state, Some(NodeState::InUse));
    assert_eq!(of_host(&nodes, "h1")[0].id, h1_id, "h1 is kept as it was");

    h.release(held).await;
    let nodes = h
        .wait_nodes("h2 deregistered once freed", |n| {
            of_host(n, "h2").is_empty()
        })
        .await;
    assert!(free_records(&nodes, "h1", 1) && free_records(&nodes, "h3", 1));
    assert_eq!(nodes.len(), 2, "{nodes:?}");

    let next = h.submit(&["static-b"]).await;
    let request = h.wait_request_state(&next, RequestState::Fulfilled).await;
    let node = h
        .store
        .get_node(&request.nodes[0])
        .await
        .expect("read node")
        .expect("node exists");
    assert_eq!(node.hostname.as_deref(), Some("h3"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_static_host_is_dropped_and_the_request_waits_for_it_to_return() {
    let mut h = StaticHarness::start(&[Host("h1", "static-a", 1)]);
    let nodes = h
        .wait_nodes("h1 registered", |n| free_records(n, "h1", 1))
        .await;
    let stale_id = of_host(&nodes, "h1")[0].id.clone();
    h.net.down("h1", 22);

    let id = h.submit(&["static-a"]).await;
    h.wait_nodes("the dead host's record dropped", |n| {
        n.iter().all(|r| r.id != stale_id)
    })
    .await;
    let waiting = h.request(&id).await;
    assert_ne!(waiting.state, Some(RequestState::Fulfilled));
    assert_ne!(waiting.state, Some(RequestState::Failed));

    h.net.up("h1", 22, &[KEY]);
    let request = h.wait_request_state(&id, RequestState::Fulfilled).await;
    assert_ne!(request.nodes[0], stale_id);
    let node = h
        .store
        .get_node(&request.nodes[0])
        .await
        .expect("read node")
        .expect("node exists");
    assert_eq!(node.hostname.as_deref(), Some("h1"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_use_static_node_left_unlocked_is_registered_again() {
    let mut h = StaticHarness::start(&[Host("h1", "static-a", 1)]);
    h.wait_nodes("h1 registered", |n| free_records(n, "h1", 1))
        .await;
    let id = h.submit(&["static-a"]).await;
    let held = h.accept(&id).await;
    let lost_id = held[0].0.id.clone();
    // The requestor goes away without handing the node back.
    for (_, lock) in held {
        h.store.unlock(&lock).await.expect("unlock");
    }

    let nodes = h
        .wait_nodes("h1 registered again", |n| {
            n.iter().all(|r| r.id != lost_id) && free_records(n, "h1", 1)
        })
        .await;
    assert_eq!(of_host(&nodes, "h1")[0].slot, Some(0));
    h.stop().await;
}
