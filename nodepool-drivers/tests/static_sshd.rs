//! The static driver against real OpenSSH servers: each test starts its own
//! `sshd` processes on free loopback ports, with their own host keys in a
//! temporary directory, and registers them through [`StaticProvider`] with
//! the real `ssh-keyscan` scanner and the memory store.
//!
//! Without `/usr/sbin/sshd` (install it with `scripts/sshd.sh install`)
//! each test prints a skip line and passes, unless
//! `NODEPOOL_TEST_REQUIRE_SSHD=1` is set (CI sets it), then it fails.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodepool_core::model::{Node, NodeState};
use nodepool_core::store::{MemoryStore, NodeStore};
use nodepool_core::testing::provider::{provider_suite, SuiteConfig};
use nodepool_drivers::static_hosts::config::{DEFAULT_PYTHON_PATH, DEFAULT_USERNAME};
use nodepool_drivers::static_hosts::{
    HostError, HostId, StaticConfig, StaticNode, StaticPool, StaticProvider, SyncMode,
};

const SSHD: &str = "/usr/sbin/sshd";
const REQUIRE_ENV: &str = "NODEPOOL_TEST_REQUIRE_SSHD";

/// Whether sshd can be run here; prints the skip line when not.
fn sshd_available(test: &str) -> bool {
    if Path::new(SSHD).exists() {
        return true;
    }
    if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
        panic!("{test}: {SSHD} is missing and {REQUIRE_ENV}=1 (run scripts/sshd.sh install)");
    }
    eprintln!("SKIP {test}: {SSHD} is missing (scripts/sshd.sh install; set {REQUIRE_ENV}=1 to fail instead)");
    false
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("nodepool-sshd-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A socket bound to 127.0.0.1:`port` that does not listen.
fn reserve(port: u16) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(([127, 0, 0, 1], port).into())?;
    Ok(socket)
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// An `sshd` on 127.0.0.1 with its own ed25519 host key; killed on drop.
struct Sshd {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
    /// While stopped: a socket bound to the port without listening, so no
    /// other process on the machine takes the port and connections to it
    /// are refused.
    reserved: Option<tokio::net::TcpSocket>,
}

impl Sshd {
    fn start(tag: &str) -> Self {
        let dir = TempDir::new(tag);
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "nodepool-test", "-f"])
            .arg(dir.0.join("hostkey"))
            .status()
            .expect("run ssh-keygen");
        assert!(status.success(), "ssh-keygen failed");
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/hostkey\nPidFile {dir}/sshd.pid\n\
             UsePAM no\nStrictModes no\nPasswordAuthentication no\nAuthorizedKeysFile {dir}/authorized_keys\n",
            port = 0,
            dir = dir.0.display()
        );
        fs::write(dir.0.join("sshd_config.in"), config).expect("write config template");
        let mut sshd = Self {
            dir,
            port: free_port(),
            child: None,
            reserved: None,
        };
        sshd.resume();
        sshd
    }

    /// The host key as the scan reports it: `"ssh-ed25519 <base64>"`.
    fn host_key(&self) -> String {
        let public = fs::read_to_string(self.dir.0.join("hostkey.pub")).expect("read public key");
        public
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Start (again) on the same port with the same key; wait until it answers.
    fn resume(&mut self) {
        fs::create_dir_all("/run/sshd").expect("create /run/sshd (run as root)");
        self.reserved = None;
        let template =
            fs::read_to_string(self.dir.0.join("sshd_config.in")).expect("read template");
        let config = template.replacen("Port 0", &format!("Port {}", self.port), 1);
        let config_path = self.dir.0.join("sshd_config");
        fs::write(&config_path, config).expect("write sshd_config");
        let log = fs::File::create(self.dir.0.join("sshd.log")).expect("create log");
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sshd");
        self.child = Some(child);
        // Our sshd, not another process that took the port, must answer:
        // wait for its own "listening" line.
        let listening = format!("Server listening on 127.0.0.1 port {}.", self.port);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = fs::read_to_string(self.dir.0.join("sshd.log")).unwrap_or_default();
            if log.contains(&listening) {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("sshd exited at start ({status}): {log}");
            }
            assert!(
                Instant::now() < deadline,
                "sshd on port {} did not listen within 20 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill the server and reserve its port. A session child forked just
    /// before the kill may hold the listening socket for a moment (and the
    /// kernel completes handshakes for it): the reservation succeeds once
    /// nothing listens any more.
    fn stop(&mut self) {
        if !self.kill() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match reserve(self.port) {
                Ok(socket) => {
                    self.reserved = Some(socket);
                    return;
                }
                Err(e) if Instant::now() >= deadline => {
                    panic!("port {} still busy after sshd stopped: {e}", self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Sshd {
    /// Kill the server, if it runs; whether it did.
    fn kill(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = child.kill();
        let _ = child.wait();
        true
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn host(sshd: &Sshd, labels: &[&str], slots: i64) -> StaticNode {
    StaticNode {
        name: "127.0.0.1".to_string(),
        labels: labels.iter().map(ToString::to_string).collect(),
        username: DEFAULT_USERNAME.to_string(),
        timeout: 2,
        host_key_checking: true,
        host_keys: Vec::new(),
        connection_port: i64::from(sshd.port),
        connection_type: "ssh".to_string(),
        shell_type: None,
        max_parallel_jobs: slots,
        python_path: DEFAULT_PYTHON_PATH.to_string(),
    }
}

fn provider(hosts: Vec<StaticNode>) -> StaticProvider {
    StaticProvider::new(Arc::new(StaticConfig {
        name: "static-rack".to_string(),
        max_concurrency: -1,
        priority: None,
        pools: vec![StaticPool {
            name: "main".to_string(),
            max_servers: None,
            priority: None,
            node_attributes: None,
            nodes: hosts,
        }],
    }))
}

async fn ready_on(store: &MemoryStore, sshd: &Sshd) -> Vec<Node> {
    store
        .list_nodes()
        .await
        .expect("list nodes")
        .into_iter()
        .filter(|n| n.connection_port == i64::from(sshd.port) && n.state == Some(NodeState::Ready))
        .collect()
}

#[tokio::test]
async fn registers_each_slot_of_a_host_with_its_scanned_key() {
    if !sshd_available("registers_each_slot_of_a_host_with_its_scanned_key") {
        return;
    }
    let sshd = Sshd::start("register");
    let provider = provider(vec![host(&sshd, &["small"], 2)]);
    let store = MemoryStore::new();

    let report = provider.sync(&store).await.expect("sync");

    assert!(report.is_clean(), "{report:?}");
    let ready = ready_on(&store, &sshd).await;
    assert_eq!(ready.len(), 2, "max-parallel-jobs 2 gives two records");
    let mut slots: Vec<i64> = ready.iter().filter_map(|n| n.slot).collect();
    slots.sort_unstable();
    assert_eq!(slots, vec![0, 1]);
    for node in &ready {
        assert_eq!(node.host_keys, vec![sshd.host_key()]);
        assert_eq!(node.public_ipv4.as_deref(), Some("127.0.0.1"));
        assert_eq!(node.labels, vec!["small"]);
    }
}

#[tokio::test]
async fn host_offering_another_key_than_configured_is_rejected() {
    if !sshd_available("host_offering_another_key_than_configured_is_rejected") {
        return;
    }
    let sshd = Sshd::start("mismatch");
    let other = Sshd::start("mismatch-other");
    let mut wrong = host(&sshd, &["small"], 1);
    wrong.host_keys = vec![other.host_key()];
    let store = MemoryStore::new();

    let report = provider(vec![wrong.clone()])
        .sync(&store)
        .await
        .expect("sync");

    assert!(ready_on(&store, &sshd).await.is_empty());
    match report.failure_of(&HostId::of_config(&wrong)) {
        Some(HostError::KeyMismatch { offered, .. }) => assert_eq!(offered, &vec![sshd.host_key()]),
        other => panic!("expected a key mismatch, got {other:?}"),
    }

    let mut right = wrong;
    right.host_keys = vec![sshd.host_key()];
    let report = provider(vec![right]).sync(&store).await.expect("sync");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(ready_on(&store, &sshd).await.len(), 1);
}

#[tokio::test]
async fn used_node_is_registered_again_after_a_fresh_scan() {
    if !sshd_available("used_node_is_registered_again_after_a_fresh_scan") {
        return;
    }
    let sshd = Sshd::start("reuse");
    let provider = provider(vec![host(&sshd, &["small"], 1)]);
    let store = MemoryStore::new();
    let first = provider.sync(&store).await.expect("sync").registered;
    let mut node = store
        .get_node(&first[0])
        .await
        .expect("get")
        .expect("exists");
    node.set_state(NodeState::Used);
    store.update_node(&node).await.expect("update");

    let report = provider.sync(&store).await.expect("sync");

    assert_eq!(report.recycled, first);
    let ready = ready_on(&store, &sshd).await;
    assert_eq!(ready.len(), 1);
    assert_ne!(ready[0].id, first[0]);
    assert_eq!(ready[0].slot, Some(0));
    assert_eq!(ready[0].host_keys, vec![sshd.host_key()]);
}

#[tokio::test]
async fn config_changes_add_and_remove_hosts() {
    if !sshd_available("config_changes_add_and_remove_hosts") {
        return;
    }
    let a = Sshd::start("config-a");
    let b = Sshd::start("config-b");
    let store = MemoryStore::new();
    provider(vec![host(&a, &["small"], 1)])
        .sync(&store)
        .await
        .expect("sync");
    let a_id = ready_on(&store, &a).await[0].id.clone();

    // A new config (a new provider) adds b; a's record stays as it is.
    let report = provider(vec![host(&a, &["small"], 1), host(&b, &["big"], 1)])
        .sync(&store)
        .await
        .expect("sync");
    assert_eq!(report.registered.len(), 1, "{report:?}");
    assert_eq!(ready_on(&store, &a).await[0].id, a_id);
    assert_eq!(ready_on(&store, &b).await[0].host_keys, vec![b.host_key()]);

    // Another one drops a: its free record is deleted.
    let report = provider(vec![host(&b, &["big"], 1)])
        .sync(&store)
        .await
        .expect("sync");
    assert_eq!(report.deregistered, vec![a_id]);
    assert!(ready_on(&store, &a).await.is_empty());
    assert_eq!(ready_on(&store, &b).await.len(), 1);
}

#[tokio::test]
async fn host_that_goes_down_is_reported_retried_and_registered_when_back() {
    if !sshd_available("host_that_goes_down_is_reported_retried_and_registered_when_back") {
        return;
    }
    let up = Sshd::start("down-up");
    let mut down = Sshd::start("down-down");
    let down_host = host(&down, &["small"], 1);
    let provider = provider(vec![host(&up, &["small"], 1), down_host.clone()]);
    let store = MemoryStore::new();
    down.stop();

    let start = Instant::now();
    let report = provider.sync(&store).await.expect("sync");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "bounded by the host's timeout"
    );
    assert_eq!(
        ready_on(&store, &up).await.len(),
        1,
        "the other host is registered"
    );
    assert!(matches!(
        report.failure_of(&HostId::of_config(&down_host)),
        Some(HostError::Probe(_))
    ));

    let report = provider.sync(&store).await.expect("sync");
    assert!(
        report.failure_of(&HostId::of_config(&down_host)).is_some(),
        "retried, still down"
    );

    down.resume();
    let report = provider.sync(&store).await.expect("sync");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(
        ready_on(&store, &down).await[0].host_keys,
        vec![down.host_key()]
    );
}

#[tokio::test]
async fn liveness_check_deregisters_the_node_of_a_stopped_host() {
    if !sshd_available("liveness_check_deregisters_the_node_of_a_stopped_host") {
        return;
    }
    let mut sshd = Sshd::start("liveness");
    let provider = provider(vec![host(&sshd, &["small"], 1)]);
    let store = MemoryStore::new();
    provider.sync(&store).await.expect("sync");
    let node = ready_on(&store, &sshd).await.remove(0);
    assert!(provider
        .check_node_liveness(&store, &node)
        .await
        .expect("check"));

    sshd.stop();

    assert!(!provider
        .check_node_liveness(&store, &node)
        .await
        .expect("check"));
    assert!(store.get_node(&node.id).await.expect("get").is_none());
}

#[tokio::test]
async fn provider_shows_the_suite_behaviours_of_preregistered_nodes_on_sshd() {
    if !sshd_available("provider_shows_the_suite_behaviours_of_preregistered_nodes_on_sshd") {
        return;
    }
    let sshd = Sshd::start("suite");
    let provider = provider(vec![host(&sshd, &["small"], 1)]);
    let cfg = SuiteConfig::new("main", "small");

    let report = provider_suite(&provider, &cfg).await;
    for name in [
        "label_resources_are_known",
        "create_then_get_then_delete",
        "delete_missing_instance_succeeds",
        "wait_active_reaches_active",
    ] {
        assert!(report.ran.contains(&name), "{name} did not run: {report:?}");
    }
    let store = MemoryStore::new();
    let report = provider
        .sync_with(&store, SyncMode::Full)
        .await
        .expect("sync");
    assert!(report.is_clean(), "{report:?}");
}
