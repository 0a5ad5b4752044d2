//! What a run stands on: the store, the configuration, and the launcher
//! (in this process, a `nodepool launcher` child, or one already running).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodepool_core::config::{load_str, Config, DriverRegistry};
use nodepool_core::launcher::{Launcher, LauncherSettings};
use nodepool_core::provider::Provider;
use nodepool_core::scheduler::DefaultScheduler;
use nodepool_core::store::{MemoryStore, NodeStore};
use nodepool_embedded::EmbeddedStore;
use nodepool_zk::{ZkConfig, ZkStore, ZkTls};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Errors of a run are sentences.
pub(crate) type BenchResult<T> = Result<T, String>;

/// Which store the launcher and the client share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StoreKind {
    /// The in-memory store (in-process runs only).
    Memory,
    /// The embedded SQLite store.
    Embedded,
    /// ZooKeeper, from `NODEPOOL_TEST_ZK_TLS` and friends.
    Zookeeper,
}

impl StoreKind {
    /// The name in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Embedded => "embedded",
            StoreKind::Zookeeper => "zookeeper",
        }
    }
}

/// The ZooKeeper server of the environment (`scripts/zookeeper.sh start DIR`
/// writes these variables to `DIR/env`).
#[derive(Debug, Clone)]
pub(crate) struct ZkServer {
    /// `host:port` of the TLS port (`NODEPOOL_TEST_ZK_TLS`).
    pub(crate) tls_hosts: String,
    /// `host:port` of the plain port (`NODEPOOL_TEST_ZK`), for the
    /// four-letter words.
    pub(crate) plain: Option<String>,
    /// CA, client certificate and key.
    pub(crate) tls: ZkTls,
}

impl ZkServer {
    /// Read the environment.
    pub(crate) fn from_env() -> BenchResult<Self> {
        let var = |name: &str| -> BenchResult<String> {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    format!(
                        "{name} is not set: start a server with `scripts/zookeeper.sh start DIR` \
                     and `source DIR/env`"
                    )
                })
        };
        Ok(Self {
            tls_hosts: var("NODEPOOL_TEST_ZK_TLS")?,
            plain: std::env::var("NODEPOOL_TEST_ZK")
                .ok()
                .filter(|v| !v.is_empty()),
            tls: ZkTls {
                ca: var("NODEPOOL_TEST_ZK_CA")?.into(),
                cert: var("NODEPOOL_TEST_ZK_CERT")?.into(),
                key: var("NODEPOOL_TEST_ZK_KEY")?.into(),
            },
        })
    }

    /// The server's process id, when scripts/zookeeper.sh started it: it
    /// writes `DIR/zookeeper.pid` beside the certificates in `DIR/tls`.
    pub(crate) fn pid(&self) -> Option<u32> {
        let dir = self.tls.ca.parent()?.parent()?;
        let text = std::fs::read_to_string(dir.join("zookeeper.pid")).ok()?;
        text.trim().parse().ok()
    }

    /// A client session under `chroot`.
    pub(crate) async fn connect(&self, chroot: &str) -> BenchResult<ZkStore> {
        let config = ZkConfig::new([self.tls_hosts.clone()])
            .with_chroot(chroot)
            .with_tls(self.tls.clone());
        ZkStore::connect(config)
            .await
            .map_err(|e| format!("cannot connect to ZooKeeper {}: {e}", self.tls_hosts))
    }
}

/// A label of the benchmark configuration.
#[derive(Debug, Clone)]
pub(crate) struct LabelSpec {
    /// Its name.
    pub(crate) name: String,
    /// Its `min-ready`.
    pub(crate) min_ready: u64,
}

/// What the configuration holds: one fake provider, one pool.
#[derive(Debug, Clone)]
pub(crate) struct ConfigSpec {
    /// The labels, all served by the pool.
    pub(crate) labels: Vec<LabelSpec>,
    /// The pool's `max-servers`.
    pub(crate) max_servers: u64,
    /// `fake-settings` (instances, boot delay); `None`: the fake driver's
    /// defaults, which are upstream's fake limits.
    pub(crate) fake: Option<(u64, f64)>,
}

impl ConfigSpec {
    /// The throughput setup: one label, min-ready 0, max-servers 20, the
    /// fake cloud's defaults (20 instances, 0.1 s boots).
    pub(crate) fn throughput(label: &str) -> Self {
        Self {
            labels: vec![LabelSpec {
                name: label.to_string(),
                min_ready: 0,
            }],
            max_servers: 20,
            fake: None,
        }
    }

    /// The configuration file's text.
    pub(crate) fn yaml(&self, zk: Option<(&ZkServer, &str)>, web_port: u16) -> String {
        let mut y = String::new();
        let _ = writeln!(
            y,
            "webapp:\n  port: {web_port}\n  listen_address: 127.0.0.1"
        );
        if let Some((server, chroot)) = zk {
            let (host, port) = server
                .tls_hosts
                .rsplit_once(':')
                .unwrap_or((server.tls_hosts.as_str(), "2281"));
            let _ = writeln!(
                y,
                "zookeeper-servers:\n  - host: {host}\n    port: {port}\n    chroot: {chroot}\n\
                 zookeeper-tls:\n  ca: {}\n  cert: {}\n  key: {}",
                server.tls.ca.display(),
                server.tls.cert.display(),
                server.tls.key.display()
            );
        }
        y.push_str("labels:\n");
        for l in &self.labels {
            let _ = writeln!(y, "  - name: {}\n    min-ready: {}", l.name, l.min_ready);
        }
        y.push_str(
            "providers:\n  - name: fake-provider\n    driver: fake\n    cloud: fake\n    \
             region-name: fake-region\n",
        );
        if let Some((instances, boot_delay)) = self.fake {
            let _ = writeln!(
                y,
                "    fake-settings:\n      instances: {instances}\n      cores: {}\n      \
                 ram: {}\n      boot-delay: {boot_delay}",
                instances * 4,
                instances * 8192
            );
        }
        let _ = writeln!(
            y,
            "    cloud-images:\n      - name: Fake Precise\n    pools:\n      - name: main\n        \
             max-servers: {}\n        labels:",
            self.max_servers
        );
        for l in &self.labels {
            let _ = writeln!(
                y,
                "          - name: {}\n            cloud-image: Fake Precise\n            \
                 min-ram: 8192",
                l.name
            );
        }
        y
    }
}

/// Where the launcher runs.
#[derive(Debug, Clone)]
pub(crate) enum Mode {
    /// A [`Launcher`] in this process.
    InProcess,
    /// `NODEPOOL -c CONFIG --state-dir DIR launcher` as a child.
    Daemon(PathBuf),
    /// A launcher already running, by process id.
    External(u32),
}

/// The running launcher.
#[derive(Debug)]
pub(crate) enum LauncherProc {
    /// In this process.
    InProcess {
        /// Stops it.
        cancel: CancellationToken,
        /// Its run.
        task: JoinHandle<nodepool_core::Result<()>>,
        /// For its counters.
        launcher: Launcher,
    },
    /// Child `nodepool launcher`s (one, or `--launchers N` with one config
    /// on one provider).
    Children(Vec<Child>),
    /// Not ours.
    External(u32),
}

impl LauncherProc {
    /// The process whose memory is measured (the first launcher's).
    pub(crate) fn pid(&self) -> u32 {
        self.pids()
            .first()
            .copied()
            .unwrap_or_else(std::process::id)
    }

    /// Every launcher process (their memory and CPU are summed).
    pub(crate) fn pids(&self) -> Vec<u32> {
        match self {
            LauncherProc::InProcess { .. } => vec![std::process::id()],
            LauncherProc::Children(children) => children.iter().map(Child::id).collect(),
            LauncherProc::External(pid) => vec![*pid],
        }
    }

    /// Whether the launcher is a process of its own (so its RSS excludes
    /// the client's).
    pub(crate) fn separate(&self) -> bool {
        !matches!(self, LauncherProc::InProcess { .. })
    }

    /// Stop what we started.
    pub(crate) async fn stop(self) -> BenchResult<()> {
        match self {
            LauncherProc::InProcess { cancel, task, .. } => {
                cancel.cancel();
                match tokio::time::timeout(Duration::from_secs(30), task).await {
                    Ok(Ok(Ok(()))) => Ok(()),
                    Ok(Ok(Err(e))) => Err(format!("the launcher failed: {e}")),
                    Ok(Err(e)) => Err(format!("the launcher task failed: {e}")),
                    Err(_) => Err("the launcher did not stop within 30 s".into()),
                }
            }
            LauncherProc::Children(mut children) => {
                for child in &mut children {
                    terminate(child);
                }
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut outcome = Ok(());
                for child in &mut children {
                    loop {
                        match child.try_wait() {
                            Ok(Some(_)) => break,
                            Ok(None) if Instant::now() < deadline => {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            _ => {
                                let _ = child.kill();
                                let _ = child.wait();
                                outcome = Err(format!(
                                    "launcher pid {} did not stop within 30 s of SIGTERM",
                                    child.id()
                                ));
                                break;
                            }
                        }
                    }
                }
                outcome
            }
            LauncherProc::External(_) => Ok(()),
        }
    }
}

fn terminate(child: &mut Child) {
    let pid = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    match pid {
        Some(pid) => {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        None => {
            let _ = child.kill();
        }
    }
}

/// A started benchmark environment.
#[derive(Debug)]
pub(crate) struct Env {
    /// The client's store session.
    pub(crate) store: Arc<dyn NodeStore>,
    /// The launcher.
    pub(crate) launcher: LauncherProc,
    /// ZooKeeper server and chroot, if on ZooKeeper.
    pub(crate) zk: Option<(ZkServer, String)>,
    /// Config, state directory and logs (removed at the end).
    pub(crate) dir: TempDir,
    /// The configuration file in `dir`.
    pub(crate) config_path: PathBuf,
    /// The embedded store's directory in `dir`.
    pub(crate) state_dir: PathBuf,
    /// From start to every pool registered.
    pub(crate) startup: Duration,
}

impl Env {
    /// The (first) launcher child's log, if any.
    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.path().join("launcher.log")
    }

    /// Launcher child `i`'s log: `launcher.log`, then `launcher-1.log`...
    fn log_path_of(&self, i: usize) -> PathBuf {
        self.dir.path().join(log_name(i))
    }
}

/// The log file of launcher child `i`.
fn log_name(i: usize) -> String {
    match i {
        0 => "launcher.log".to_string(),
        i => format!("launcher-{i}.log"),
    }
}

/// Set up the store, write the config, start the launcher (`launchers`
/// `nodepool launcher` children in [`Mode::Daemon`], each with the same
/// configuration but its own web port, and its own state directory on
/// ZooKeeper) and wait until every pool is registered.
pub(crate) async fn start(
    kind: StoreKind,
    mode: &Mode,
    spec: &ConfigSpec,
    chroot: Option<&str>,
    launchers: usize,
) -> BenchResult<Env> {
    let launchers = launchers.max(1);
    if launchers > 1 && !matches!(mode, Mode::Daemon(_)) {
        return Err("--launchers above 1 needs --daemon NODEPOOL".into());
    }
    let dir = tempfile::Builder::new()
        .prefix("nodepool-bench.")
        .tempdir()
        .map_err(|e| format!("cannot make a temp dir: {e}"))?;
    let state_dir = dir.path().join("state");
    std::fs::create_dir_all(&state_dir)
        .map_err(|e| format!("cannot make {}: {e}", state_dir.display()))?;
    let zk = match kind {
        StoreKind::Zookeeper => {
            let server = ZkServer::from_env()?;
            let chroot = chroot.map(str::to_string).unwrap_or_else(|| {
                format!(
                    "/nodepool-bench-{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                )
            });
            Some((server, chroot))
        }
        _ => None,
    };
    if matches!(mode, Mode::External(_)) && kind != StoreKind::Zookeeper {
        return Err("--external-pid needs --store zookeeper and --chroot".into());
    }
    if kind == StoreKind::Memory && !matches!(mode, Mode::InProcess) {
        return Err("the memory store works only in-process (leave out --daemon)".into());
    }
    let web_port = free_port()?;
    let text = spec.yaml(zk.as_ref().map(|(s, c)| (s, c.as_str())), web_port);
    let config_path = dir.path().join("nodepool.yaml");
    std::fs::write(&config_path, &text)
        .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;

    let started = Instant::now();
    // The client's session first: it creates the embedded file and the
    // ZooKeeper chroot before the launcher opens them.
    let (store, launcher_store): (Arc<dyn NodeStore>, Option<Arc<dyn NodeStore>>) =
        match (kind, &zk) {
            (StoreKind::Memory, _) => {
                let root = MemoryStore::new();
                (Arc::new(root.session()), Some(Arc::new(root.session())))
            }
            (StoreKind::Embedded, _) => {
                let path = state_dir.join("nodepool.sqlite");
                let client = EmbeddedStore::open(&path)
                    .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
                let launcher: Option<Arc<dyn NodeStore>> = match mode {
                    Mode::InProcess => Some(Arc::new(
                        client
                            .session()
                            .await
                            .map_err(|e| format!("cannot open a session: {e}"))?,
                    )),
                    _ => None,
                };
                (Arc::new(client), launcher)
            }
            (StoreKind::Zookeeper, Some((server, chroot))) => {
                let client = server.connect(chroot).await?;
                let launcher: Option<Arc<dyn NodeStore>> = match mode {
                    Mode::InProcess => Some(Arc::new(server.connect(chroot).await?)),
                    _ => None,
                };
                (Arc::new(client), launcher)
            }
            (StoreKind::Zookeeper, None) => return Err("no ZooKeeper server".into()),
        };

    let launcher = match mode {
        Mode::InProcess => {
            let config = parse(&text)?;
            let providers = providers(&config)?;
            let launcher = Launcher::new(
                LauncherSettings::new("nodepool-bench"),
                launcher_store.ok_or("no launcher session")?,
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
            LauncherProc::InProcess {
                cancel,
                task,
                launcher,
            }
        }
        Mode::Daemon(binary) => {
            let mut children = Vec::with_capacity(launchers);
            for i in 0..launchers {
                // The same configuration; only the web port differs. On
                // ZooKeeper each has its own state directory, as on its own
                // host; the embedded store is one file they all share.
                let (config, state) = match i {
                    0 => (config_path.clone(), state_dir.clone()),
                    i => {
                        let config = dir.path().join(format!("nodepool-{i}.yaml"));
                        let text =
                            spec.yaml(zk.as_ref().map(|(s, c)| (s, c.as_str())), free_port()?);
                        std::fs::write(&config, text)
                            .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
                        let state = match kind {
                            StoreKind::Embedded => state_dir.clone(),
                            _ => dir.path().join(format!("state-{i}")),
                        };
                        std::fs::create_dir_all(&state)
                            .map_err(|e| format!("cannot make {}: {e}", state.display()))?;
                        (config, state)
                    }
                };
                let log_path = dir.path().join(log_name(i));
                let log = std::fs::File::create(&log_path)
                    .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
                let child = Command::new(binary)
                    .arg("-c")
                    .arg(&config)
                    .arg("--state-dir")
                    .arg(&state)
                    .arg("launcher")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
                children.push(child);
            }
            LauncherProc::Children(children)
        }
        Mode::External(pid) => LauncherProc::External(*pid),
    };
    let mut env = Env {
        store,
        launcher,
        zk,
        dir,
        config_path,
        state_dir,
        startup: Duration::ZERO,
    };
    wait_registered(&mut env, launchers).await?;
    env.startup = started.elapsed();
    Ok(env)
}

/// Wait until `launchers` pool components are registered (every launcher
/// is serving).
async fn wait_registered(env: &mut Env, launchers: usize) -> BenchResult<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let LauncherProc::Children(children) = &mut env.launcher {
            for (i, child) in children.iter_mut().enumerate() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "launcher {i} exited during start-up ({status}):\n{}",
                        tail(&env.log_path_of(i), 30)
                    ));
                }
            }
        }
        let pools = env.store.list_components("pool").await.unwrap_or_default();
        if pools.len() >= launchers {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} of {launchers} pools registered within 120 s\n{}",
                pools.len(),
                tail(&env.log_path(), 30)
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last `lines` lines of a file.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn parse(text: &str) -> BenchResult<Config> {
    load_str("nodepool.yaml", text, &registry())
        .map_err(|e| format!("the benchmark config does not load: {e}\n{text}"))
}

fn registry() -> DriverRegistry {
    let mut reg = DriverRegistry::new();
    nodepool_drivers::register_builtin(&mut reg);
    reg
}

fn providers(config: &Config) -> BenchResult<BTreeMap<String, Arc<dyn Provider>>> {
    let reg = registry();
    let mut out = BTreeMap::new();
    for p in &config.providers {
        let driver = reg
            .get(&p.driver)
            .ok_or_else(|| format!("no driver {}", p.driver))?;
        let provider = driver
            .create_provider(p)
            .map_err(|e| format!("provider {}: {e}", p.name))?;
        out.insert(p.name.clone(), provider);
    }
    Ok(out)
}

/// A TCP port nobody listens on now.
fn free_port() -> BenchResult<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}
