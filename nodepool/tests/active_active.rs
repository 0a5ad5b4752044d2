//! Three launchers with one config serve one provider (issue #20): on one
//! ZooKeeper, and on one embedded store file. A requestor keeps requests
//! coming and uses what it gets, as Zuul does; two of the launchers are
//! killed with SIGKILL along the way. Checked from the cloud's side (the
//! OpenStack simulator runs in this test process, so it outlives every
//! launcher): live servers never exceed the pool's `max-servers`; every
//! request is fulfilled, no node twice; afterwards `min-ready` is held
//! exactly, and the cloud's servers and the node records agree.

mod zk_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodepool_core::model::{NodeRequest, NodeState, RequestState};
use nodepool_core::store::NodeStore;
use nodepool_embedded::EmbeddedStore;
use nodepool_openstack_sim::{SimConfig, SimLimits, SimState};

const MAX_SERVERS: usize = 4;
const MIN_READY: usize = 2;
const REQUESTS: usize = 24;
const IN_FLIGHT: usize = 6;

/// The nodepool.yaml of every launcher; `zookeeper` is the ZooKeeper part
/// (empty: the embedded store).
fn config(zookeeper: &str) -> String {
    format!(
        "{zookeeper}webapp:
  port: 0
labels:
  - name: small
    min-ready: {MIN_READY}
providers:
  - name: sim
    driver: openstack
    cloud: sim
    rate: 0
    boot-timeout: 30
    launch-retries: 5
    cloud-images:
      - name: cirros
    pools:
      - name: main
        max-servers: {MAX_SERVERS}
        labels:
          - name: small
            cloud-image: cirros
            flavor-name: m1.tiny
"
    )
}

fn clouds_yaml(base: &str) -> String {
    format!(
        "clouds:\n  sim:\n    region_name: RegionOne\n    auth:\n      auth_url: \
         {base}/identity/v3\n      username: demo\n      password: demo-password\n      \
         project_name: demo\n      user_domain_name: Default\n      \
         project_domain_name: Default\n"
    )
}

/// A `nodepool launcher` process.
struct Launcher {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Launcher {
    fn start(name: &str, dir: &Path, state_dir: &Path, clouds: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let err = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_nodepool"))
            .arg("-c")
            .arg(dir.join("nodepool.yaml"))
            .arg("--state-dir")
            .arg(state_dir)
            .arg("launcher")
            .env("OS_CLIENT_CONFIG_FILE", clouds)
            .env("RUST_LOG", "info")
            .env_remove("STATSD_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("start nodepool launcher");
        Self {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{} exited with {status}:\n{}", self.name, self.logs());
            }
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn all_logs(launchers: &[Launcher]) -> String {
    launchers
        .iter()
        .map(|l| format!("--- {} ---\n{}", l.name, l.logs()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Servers the cloud runs now, deleting ones included until their delete
/// finishes (what counts against a quota).
fn live_servers(sim: &SimState) -> usize {
    let delay = sim.read(|c| c.config.delete_delay_secs);
    let t = nodepool_openstack_sim::state::now();
    sim.read(|c| {
        c.servers
            .values()
            .filter(|s| s.deleted_at.map_or(true, |d| t < d + delay))
            .count()
    })
}

/// The cloud's servers, for a failure message: id, node id, created,
/// deleted (seconds since the epoch).
fn describe_servers(sim: &SimState) -> String {
    let t = nodepool_openstack_sim::state::now();
    sim.read(|c| {
        let lines: Vec<String> = c
            .servers
            .values()
            .map(|s| {
                format!(
                    "server {} node {:?} created {:.3} deleted {:?}",
                    s.id,
                    s.metadata.get("nodepool_node_id"),
                    s.created,
                    s.deleted_at
                )
            })
            .collect();
        format!("at {t:.3}:\n{}", lines.join("\n"))
    })
}

/// What one run saw.
struct Run {
    /// Longest wait of a request from submission to fulfilment.
    longest: Duration,
    /// Every request's wait, sorted.
    waits: Vec<Duration>,
}

/// The scenario, on `store` (the requestor's session) with launchers
/// started by `start(name)`.
async fn three_launchers_through_two_kills(
    store: Arc<dyn NodeStore>,
    sim: SimState,
    mut start: impl FnMut(&str) -> Launcher,
) -> Run {
    let peak = Arc::new(AtomicUsize::new(0));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    // The first moment over the limit, as the cloud saw it.
    let over = Arc::new(std::sync::Mutex::new(None::<String>));
    let sampler = {
        let (sim, peak, sampling, over) =
            (sim.clone(), peak.clone(), sampling.clone(), over.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                let live = live_servers(&sim);
                peak.fetch_max(live, Ordering::Relaxed);
                if live > MAX_SERVERS {
                    if let Ok(mut over) = over.lock() {
                        if over.is_none() {
                            *over = Some(describe_servers(&sim));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    let mut launchers: Vec<Launcher> = ["a", "b", "c"].iter().map(|n| start(n)).collect();
    wait(
        "three pools registered",
        Duration::from_secs(60),
        &launchers,
        || {
            let store = store.clone();
            async move {
                let n = store.list_components("pool").await.ok()?.len();
                (n >= 3).then_some(())
            }
        },
    )
    .await;

    let deadline = Instant::now() + Duration::from_secs(240);
    let mut submitted: BTreeMap<String, Instant> = BTreeMap::new();
    let mut done = 0usize;
    let mut given: BTreeSet<String> = BTreeSet::new();
    let mut waits = Vec::new();
    let mut kills = 0;
    while done < REQUESTS {
        assert!(
            Instant::now() < deadline,
            "{done} of {REQUESTS} requests fulfilled in time; open: {:?}\n{}",
            submitted.keys().collect::<Vec<_>>(),
            all_logs(&launchers)
        );
        while submitted.len() < IN_FLIGHT && done + submitted.len() < REQUESTS {
            let id = store
                .create_request(&NodeRequest::new(["small"]), "100")
                .await
                .expect("submit a request");
            submitted.insert(id, Instant::now());
        }
        // Two kills, at a third and at two thirds of the way.
        if kills < 2 && done >= (kills + 1) * REQUESTS / 3 {
            launchers[kills].kill9();
            kills += 1;
        }
        for l in launchers.iter_mut().skip(kills) {
            l.assert_running();
        }
        let ids: Vec<String> = submitted.keys().cloned().collect();
        for id in ids {
            let Ok(Some(request)) = store.get_request(&id).await else {
                continue;
            };
            assert_ne!(
                request.state,
                Some(RequestState::Failed),
                "request {id} failed\n{}",
                all_logs(&launchers)
            );
            if request.state != Some(RequestState::Fulfilled) {
                continue;
            }
            assert_eq!(request.nodes.len(), 1, "{request:?}");
            for node_id in &request.nodes {
                assert!(given.insert(node_id.clone()), "node {node_id} given twice");
                // Use it and hand it back, as Zuul does.
                let mut node = store
                    .get_node(node_id)
                    .await
                    .expect("read node")
                    .expect("the node of a fulfilled request exists");
                assert_eq!(node.allocated_to.as_deref(), Some(id.as_str()));
                node.state = Some(NodeState::Used);
                store.update_node(&node).await.expect("mark node used");
            }
            store.delete_request(&id).await.expect("delete request");
            if let Some(at) = submitted.remove(&id) {
                waits.push(at.elapsed());
            }
            done += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Afterwards: min-ready exactly, nothing building, cloud and records
    // agree, and that holds for a while.
    let last_seen = Arc::new(std::sync::Mutex::new(String::new()));
    let seen = last_seen.clone();
    let settle = wait_quietly(Duration::from_secs(200), || {
        let (store, sim, seen) = (store.clone(), sim.clone(), seen.clone());
        async move {
            let nodes = store.list_nodes().await.ok()?;
            let requests = store.list_requests().await.ok()?;
            let ready = nodes
                .iter()
                .filter(|n| n.state == Some(NodeState::Ready) && n.allocated_to.is_none())
                .count();
            let other = nodes.len() - ready;
            let live = live_servers(&sim);
            if let Ok(mut s) = seen.lock() {
                *s = format!(
                    "nodes: {:?}\nrequests: {:?}\nlive servers: {live}",
                    nodes
                        .iter()
                        .map(|n| (&n.id, n.state, &n.allocated_to, &n.external_id))
                        .collect::<Vec<_>>(),
                    requests
                        .iter()
                        .map(|r| (&r.id, r.state, &r.requestor))
                        .collect::<Vec<_>>(),
                );
            }
            (ready == MIN_READY && other == 0 && live == MIN_READY).then_some(())
        }
    })
    .await;
    if settle.is_none() {
        panic!(
            "min-ready not held exactly, or the cloud disagrees, 200 s after the workload\n{}\n{}",
            last_seen.lock().map(|s| s.clone()).unwrap_or_default(),
            all_logs(&launchers)
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let nodes = store.list_nodes().await.expect("nodes");
    assert_eq!(
        nodes.len(),
        MIN_READY,
        "min-ready stays exact: {nodes:?}\n{}",
        all_logs(&launchers)
    );
    assert_eq!(live_servers(&sim), MIN_READY, "the cloud agrees");

    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    let peak = peak.load(Ordering::Relaxed);
    assert!(
        peak <= MAX_SERVERS,
        "the cloud ran {peak} servers of a pool with max-servers {MAX_SERVERS}\n{}\n{}",
        over.lock().ok().and_then(|o| o.clone()).unwrap_or_default(),
        all_logs(&launchers)
    );
    assert!(peak >= 2, "the launchers did work: peak {peak}");
    launchers[2].assert_running();
    waits.sort();
    Run {
        longest: waits.last().copied().unwrap_or_default(),
        waits,
    }
}

/// Polls `check` until `Some`; `None` after `limit`.
async fn wait_quietly<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if start.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `check` until `Some`, or panics after `limit` with the logs.
async fn wait<T, F, Fut>(what: &str, limit: Duration, launchers: &[Launcher], mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}\n{}",
            all_logs(launchers)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sim() -> SimState {
    SimState::new(SimConfig {
        limits: SimLimits {
            max_instances: 100,
            max_cores: 1000,
            max_ram: 1_000_000,
        },
        boot_delay_secs: 0.4,
        delete_delay_secs: 0.3,
        ..SimConfig::default()
    })
}

fn report(what: &str, run: &Run) {
    let p = |q: f64| {
        let i = ((run.waits.len() as f64 - 1.0) * q).round() as usize;
        run.waits.get(i).copied().unwrap_or_default()
    };
    println!(
        "{what}: {} requests, wait p50 {:?}, p99 {:?}, longest {:?}",
        run.waits.len(),
        p(0.5),
        p(0.99),
        run.longest
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_launchers_on_zookeeper_share_one_provider_through_two_kills() {
    let Some(env) = zk_support::env_or_skip("active_active_zk", &[]) else {
        return;
    };
    let sim = sim();
    let (base, _serving) = nodepool_openstack_sim::start(sim.clone())
        .await
        .expect("start the simulator");
    let world = zk_support::World::new("active-active", env);
    let (host, port) = world.env.zk_hosts.rsplit_once(':').expect("host:port");
    let zookeeper = format!(
        "zookeeper-servers:\n  - host: {host}\n    port: {port}\n    chroot: {chroot}\n\
         zookeeper-tls:\n  ca: {ca}\n  cert: {cert}\n  key: {key}\n\
         zookeeper-timeout: 4\n",
        chroot = world.chroot,
        ca = world.env.tls.ca.display(),
        cert = world.env.tls.cert.display(),
        key = world.env.tls.key.display(),
    );
    let dir = world.dir.path().to_path_buf();
    std::fs::write(dir.join("nodepool.yaml"), config(&zookeeper)).expect("config");
    let clouds = dir.join("sim-clouds.yaml");
    std::fs::write(&clouds, clouds_yaml(&base)).expect("clouds.yaml");
    let store: Arc<dyn NodeStore> = Arc::new(world.store().await);
    let run = three_launchers_through_two_kills(store, sim, |name| {
        Launcher::start(name, &dir, &dir.join(format!("{name}-state")), &clouds)
    })
    .await;
    report("zookeeper", &run);
    // A killed launcher's request is taken over when its session ends
    // (4 s here), not at the next 60 s cleanup.
    assert!(
        run.longest < Duration::from_secs(40),
        "a request waited {:?}",
        run.longest
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_launchers_on_one_embedded_store_share_one_provider_through_two_kills() {
    let sim = sim();
    let (base, _serving) = nodepool_openstack_sim::start(sim.clone())
        .await
        .expect("start the simulator");
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().to_path_buf();
    std::fs::write(dir.join("nodepool.yaml"), config("")).expect("config");
    let clouds = dir.join("sim-clouds.yaml");
    std::fs::write(&clouds, clouds_yaml(&base)).expect("clouds.yaml");
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let store: Arc<dyn NodeStore> = Arc::new(
        EmbeddedStore::open(state.join("nodepool.sqlite")).expect("open the embedded store"),
    );
    let run = three_launchers_through_two_kills(store, sim, |name| {
        Launcher::start(name, &dir, &state, &clouds)
    })
    .await;
    report("embedded", &run);
    assert!(
        run.longest < Duration::from_secs(40),
        "a request waited {:?}",
        run.longest
    );
}
