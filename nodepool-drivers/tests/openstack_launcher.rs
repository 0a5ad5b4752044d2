//! The launcher engine with an OpenStack provider on the OpenStack
//! simulator, for what only the engine and the driver together do: the
//! console log of a node whose ready check (upstream's key scan) fails
//! (`console-log`), and boot-from-volume launches held back ahead by a
//! pool's `max-volumes` / `max-volume-gb` and by the cloud's Cinder limits;
//! and the leak pass's cleanup of leaked ports and floating IPs, counted
//! as upstream's `leaked.ports` and `leaked.floatingips`.

mod openstack_support;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nodepool_core::config::{load_str, Config};
use nodepool_core::launcher::{Launcher, LauncherSettings, ReadyHook};
use nodepool_core::model::json::JsonValue;
use nodepool_core::model::{Node, NodeRequest, NodeState, RequestState};
use nodepool_core::provider::{Instance, Provider, Quantity};
use nodepool_core::scheduler::DefaultScheduler;
use nodepool_core::store::{LockHandle, LockOptions, LockTarget, MemoryStore, NodeStore};
use nodepool_core::{Error, ErrorKind};
use nodepool_openstack_sim::{SimConfig, SimVolumeLimits};
use openstack_support::{password_cloud, provider_with, sim, Sim};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

fn yaml(pool_extra: &str) -> String {
    format!(
        r#"
labels:
  - name: small
  - name: bfv
providers:
  - name: sim
    driver: openstack
    cloud: sim
    rate: 0
    boot-timeout: 10
    launch-retries: 1
    cloud-images:
      - name: cirros
    pools:
      - name: main
{pool_extra}
        labels:
          - name: small
            cloud-image: cirros
            flavor-name: m1.tiny
            console-log: true
          - name: bfv
            cloud-image: cirros
            flavor-name: m1.tiny
            boot-from-volume: true
            volume-size: 10
"#
    )
}

/// A ready check that always fails, as a key scan of a host that never
/// answers does.
#[derive(Debug)]
struct NoSsh;

#[async_trait]
impl ReadyHook for NoSsh {
    async fn check(&self, _: &Node, _: &str, _: &Instance) -> nodepool_core::Result<Vec<String>> {
        Err(Error::cloud(
            "sim",
            ErrorKind::Transient,
            "host key scan: connection refused",
        ))
    }
}

struct Harness {
    sim: Sim,
    launcher: Arc<Launcher>,
    provider: Arc<dyn Provider>,
    store: Arc<dyn NodeStore>,
    cancel: CancellationToken,
    task: JoinHandle<nodepool_core::Result<()>>,
}

async fn start(sim_config: SimConfig, text: &str, hook: Option<Arc<dyn ReadyHook>>) -> Harness {
    let sim = sim(sim_config).await;
    let config: Config = load_str(
        "nodepool.yaml",
        text,
        &nodepool_drivers::registry::builtin(),
    )
    .expect("the config loads");
    let provider: Arc<dyn Provider> = Arc::new(provider_with(
        &sim,
        text,
        password_cloud(&sim.base, "demo-password"),
    ));
    let mut settings = LauncherSettings::new("test-launcher");
    settings.delete_interval = Duration::from_millis(200);
    settings.cleanup_interval = Duration::from_millis(300);
    settings.min_ready_interval = Duration::from_millis(200);
    settings.ready_hook = hook;
    let root = MemoryStore::new();
    let launcher = Arc::new(Launcher::new(
        settings,
        Arc::new(root.session()),
        Arc::new(DefaultScheduler),
        config,
        BTreeMap::from([("sim".to_string(), provider.clone())]),
    ));
    let cancel = CancellationToken::new();
    let task = {
        let (launcher, cancel) = (Arc::clone(&launcher), cancel.clone());
        tokio::spawn(async move { launcher.run(cancel).await })
    };
    Harness {
        sim,
        launcher,
        provider,
        store: Arc::new(root.session()),
        cancel,
        task,
    }
}

async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Harness {
    async fn submit(&self, label: &str) -> String {
        let mut request = NodeRequest::new([label]);
        request.state = Some(RequestState::Requested);
        request.requestor = Some("test-requestor".to_string());
        self.store
            .create_request(&request, "100")
            .await
            .expect("submit")
    }

    async fn wait_state(&self, id: &str, state: RequestState) -> NodeRequest {
        wait_for("the request's state", || async {
            self.store
                .get_request(id)
                .await
                .ok()
                .flatten()
                .filter(|r| r.state == Some(state))
        })
        .await
    }

    /// Take a fulfilled request's node as Zuul does.
    async fn accept(&self, id: &str) -> (Node, LockHandle) {
        let request = self.wait_state(id, RequestState::Fulfilled).await;
        let node_id = &request.nodes[0];
        let lock = self
            .store
            .lock(
                &LockTarget::Node(node_id.clone()),
                &LockOptions::wait(Duration::from_secs(5)),
            )
            .await
            .expect("lock");
        let mut node = self
            .store
            .get_node(node_id)
            .await
            .expect("read")
            .expect("exists");
        node.set_state(NodeState::InUse);
        self.store.update_node(&node).await.expect("in-use");
        self.store.delete_request(id).await.expect("delete request");
        (node, lock)
    }

    async fn release(&self, (mut node, lock): (Node, LockHandle)) {
        node.set_state(NodeState::Used);
        self.store.update_node(&node).await.expect("used");
        self.store.unlock(&lock).await.expect("unlock");
    }

    fn live_servers(&self) -> usize {
        self.sim.state.read(|c| {
            c.servers
                .values()
                .filter(|s| s.deleted_at.is_none())
                .count()
        })
    }

    /// The second of two boot-from-volume requests waits while the first
    /// node lives (no second server is made), and is served once it goes.
    async fn second_bfv_waits_for_the_first(&self) {
        let first = self.submit("bfv").await;
        let held = self.accept(&first).await;
        let resources = held.0.resources.clone().expect("resources");
        assert_eq!(
            JsonValue::Object(resources).to_python_json(false),
            r#"{"cores": 1, "instances": 1, "ram": 512, "volumes": 1, "volume-gb": 10}"#,
            "the node record counts its boot volume as upstream's does"
        );
        let second = self.submit("bfv").await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let waiting = self
            .store
            .get_request(&second)
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(waiting.state, Some(RequestState::Requested), "waits");
        assert_eq!(self.live_servers(), 1, "no server for the second request");
        self.release(held).await;
        self.wait_state(&second, RequestState::Fulfilled).await;
    }

    async fn stop(self) {
        self.cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_ready_check_reads_the_console_of_a_console_log_label() {
    let h = start(SimConfig::default(), &yaml(""), Some(Arc::new(NoSsh))).await;
    let id = h.submit("small").await;
    h.wait_state(&id, RequestState::Failed).await;
    let actions: Vec<String> = h
        .sim
        .state
        .request_log()
        .into_iter()
        .filter(|(method, path, _)| method == "POST" && path.ends_with("/action"))
        .map(|(_, path, _)| path)
        .collect();
    assert_eq!(
        actions.len(),
        1,
        "one console read per failed attempt: {actions:?}"
    );

    // What it reads: the server's console output; nothing for a label
    // without console-log.
    let server = h
        .provider
        .create_instance(&openstack_support::spec("small"))
        .await
        .expect("a server");
    let console = h
        .provider
        .console_log("main", "small", &server.external_id)
        .await
        .expect("read");
    assert!(
        console.as_deref().is_some_and(|c| c.contains("login:")),
        "{console:?}"
    );
    let none = h
        .provider
        .console_log("main", "bfv", &server.external_id)
        .await
        .expect("read");
    assert_eq!(none, None, "bfv does not set console-log");
    h.provider
        .delete_instance(&server.external_id)
        .await
        .expect("deleted");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pools_max_volumes_holds_a_boot_from_volume_launch_ahead() {
    let h = start(SimConfig::default(), &yaml("        max-volumes: 1"), None).await;
    h.second_bfv_waits_for_the_first().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pools_max_volume_gb_holds_a_boot_from_volume_launch_ahead() {
    let h = start(
        SimConfig::default(),
        &yaml("        max-volume-gb: 15"),
        None,
    )
    .await;
    h.second_bfv_waits_for_the_first().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clouds_cinder_limits_hold_a_boot_from_volume_launch_ahead() {
    let sim_config = SimConfig {
        volume_limits: Some(SimVolumeLimits {
            max_volumes: -1,
            max_gigabytes: 15,
        }),
        ..SimConfig::default()
    };
    let h = start(sim_config, &yaml(""), None).await;
    let quota = h.provider.quota().await.expect("quota");
    assert_eq!(quota.other.get("volume-gb"), Some(Quantity::Int(15)));
    assert_eq!(quota.other.get("volumes"), None, "-1 is unlimited");
    h.second_bfv_waits_for_the_first().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_servers_count_their_attached_volumes_from_cinder() {
    let sim_config = SimConfig {
        volume_limits: Some(SimVolumeLimits {
            max_volumes: 10,
            max_gigabytes: 100,
        }),
        ..SimConfig::default()
    };
    let h = start(sim_config, &yaml(""), None).await;
    let id = h.submit("bfv").await;
    let held = h.accept(&id).await;
    let page = h
        .provider
        .list_instances_page(None, 100)
        .await
        .expect("list");
    let instance = page
        .instances
        .iter()
        .find(|i| Some(i.external_id.as_str()) == held.0.external_id.as_deref())
        .expect("the node's server is listed");
    assert_eq!(
        instance.resources.other.get("volumes"),
        Some(Quantity::Int(1))
    );
    assert_eq!(
        instance.resources.other.get("volume-gb"),
        Some(Quantity::Int(10))
    );
    h.release(held).await;
    h.stop().await;
}

/// The leak pass asks the driver to clean what leaks without metadata:
/// a compute port still DOWN more than `port-cleanup-interval` after it was
/// first seen, and (`clean-floating-ips`) an unattached floating IP. The
/// launcher counts them per provider and kind, the counts upstream sends as
/// `nodepool.provider.sim.leaked.ports` and `.leaked.floatingips`; a DHCP
/// port and an attached floating IP stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leak_pass_counts_the_leaked_ports_and_floating_ips_it_deletes() {
    use nodepool_openstack_sim::state::{FloatingIp, Port};
    let text = yaml("").replace(
        "    launch-retries: 1\n",
        "    launch-retries: 1\n    port-cleanup-interval: 1\n    clean-floating-ips: true\n",
    );
    let sim_config = SimConfig::default();
    let h = start(sim_config, &text, None).await;
    let port = |id: &str, owner: &str| Port {
        id: id.to_string(),
        network_id: "net-private".to_string(),
        device_id: String::new(),
        device_owner: owner.to_string(),
        status: "DOWN".to_string(),
        ip: "10.0.0.200".to_string(),
        mac: "fa:16:3e:00:00:01".to_string(),
    };
    let fip = |id: &str, address: &str, port_id: Option<&str>| FloatingIp {
        id: id.to_string(),
        address: address.to_string(),
        network_id: "net-public".to_string(),
        port_id: port_id.map(str::to_string),
        status: "DOWN".to_string(),
    };
    h.sim.state.update(|c| {
        c.ports
            .insert("leaked-port".into(), port("leaked-port", ""));
        c.ports
            .insert("dhcp-port".into(), port("dhcp-port", "network:dhcp"));
        let free = fip("fip-free", "203.0.113.7", None);
        let used = fip("fip-used", "203.0.113.8", Some("dhcp-port"));
        c.floating_ips.insert("fip-free".into(), free);
        c.floating_ips.insert("fip-used".into(), used);
    });
    let counts = wait_for("the leaked port and floating IP counted", || async {
        let keyed = h.launcher.keyed_counts();
        let ports = keyed
            .leaked_resources
            .iter()
            .any(|(p, k, n)| p == "sim" && *k == "ports" && *n == 1);
        let fips = keyed
            .leaked_resources
            .iter()
            .any(|(p, k, n)| p == "sim" && *k == "floatingips" && *n == 1);
        (ports && fips).then_some(keyed.leaked_resources)
    })
    .await;
    assert_eq!(
        counts,
        [
            ("sim".to_string(), "floatingips", 1),
            ("sim".to_string(), "ports", 1)
        ]
    );
    let (ports, fips) = h.sim.state.read(|c| {
        (
            c.ports.keys().cloned().collect::<Vec<_>>(),
            c.floating_ips.keys().cloned().collect::<Vec<_>>(),
        )
    });
    assert!(!ports.contains(&"leaked-port".to_string()), "{ports:?}");
    assert!(ports.contains(&"dhcp-port".to_string()), "{ports:?}");
    assert_eq!(fips, ["fip-used"]);
    // Nothing more leaks: later passes count nothing more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(h.launcher.keyed_counts().leaked_resources, counts);
    h.stop().await;
}
