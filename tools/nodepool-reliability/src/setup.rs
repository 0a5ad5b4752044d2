//! What a run writes and opens: the simulator's offer, `clouds.yaml`,
//! one `nodepool.yaml` per launcher, and the requestor's store session.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nodepool_core::store::NodeStore;
use nodepool_embedded::EmbeddedStore;
use nodepool_zk::{ZkConfig, ZkStore, ZkTls};
use serde_json::{json, Value};

use crate::procs::LauncherCommand;
use crate::ChaosError;

/// The provider name in every configuration of the suite.
pub const PROVIDER: &str = "sim";
/// The label every request asks for.
pub const LABEL: &str = "small";
/// The cloud's name in `clouds.yaml`.
pub const CLOUD: &str = "chaos";

/// Where the nodes' records live.
#[derive(Debug, Clone)]
pub enum StoreSpec {
    /// The embedded SQLite store in `state_dir` (shared by every process).
    Embedded {
        /// The launchers' `--state-dir`.
        state_dir: PathBuf,
    },
    /// ZooKeeper over TLS under a chroot of this run.
    Zookeeper {
        /// `host:port` of the TLS port.
        hosts: String,
        /// The run's chroot.
        chroot: String,
        /// CA, certificate, key.
        tls: (PathBuf, PathBuf, PathBuf),
        /// Session timeout, seconds (`zookeeper-timeout`).
        session_timeout: f64,
    },
}

impl StoreSpec {
    /// Appends the config's ZooKeeper keys (servers, chroot, timeout, TLS)
    /// to `y`; nothing for the embedded store.
    pub(crate) fn write_zookeeper_yaml(&self, y: &mut String) {
        if let StoreSpec::Zookeeper {
            hosts,
            chroot,
            tls,
            session_timeout,
        } = self
        {
            let (host, port) = hosts.rsplit_once(':').unwrap_or((hosts.as_str(), "2281"));
            let _ = writeln!(
                y,
                "zookeeper-servers:\n  - host: {host}\n    port: {port}\n    chroot: {chroot}\n\
                 zookeeper-timeout: {session_timeout}\n\
                 zookeeper-tls:\n  ca: {}\n  cert: {}\n  key: {}",
                tls.0.display(),
                tls.1.display(),
                tls.2.display()
            );
        }
    }

    /// The backend's name in reports.
    pub fn name(&self) -> &'static str {
        match self {
            StoreSpec::Embedded { .. } => "embedded",
            StoreSpec::Zookeeper { .. } => "zookeeper",
        }
    }

    /// Open a session of our own (the requestor's).
    pub async fn open(&self) -> Result<Arc<dyn NodeStore>, ChaosError> {
        match self {
            StoreSpec::Embedded { state_dir } => {
                std::fs::create_dir_all(state_dir)
                    .map_err(|e| ChaosError::Setup(format!("{}: {e}", state_dir.display())))?;
                let path = state_dir.join("nodepool.sqlite");
                let store = EmbeddedStore::open(&path)
                    .map_err(|e| ChaosError::Store(format!("{}: {e}", path.display())))?;
                Ok(Arc::new(store))
            }
            StoreSpec::Zookeeper {
                hosts,
                chroot,
                tls,
                session_timeout,
            } => {
                let config = ZkConfig::new([hosts.clone()])
                    .with_chroot(chroot.clone())
                    .with_session_timeout(Duration::from_secs_f64(*session_timeout))
                    .with_tls(ZkTls {
                        ca: tls.0.clone(),
                        cert: tls.1.clone(),
                        key: tls.2.clone(),
                    });
                let store = ZkStore::connect(config)
                    .await
                    .map_err(|e| ChaosError::Store(format!("ZooKeeper {hosts}: {e}")))?;
                Ok(Arc::new(store))
            }
        }
    }
}

/// The simulator's offer: fast boots, room for `max_instances`.
pub fn sim_config(max_instances: i64, boot_delay: f64, password: &str, app_secret: &str) -> Value {
    json!({
        "boot_delay_secs": boot_delay,
        "limits": {
            "max_instances": max_instances,
            "max_cores": max_instances * 8,
            "max_ram": max_instances * 16384,
        },
        "users": [{
            "id": "u-demo", "name": "demo", "password": password, "domain": "Default",
            "project": "demo", "project_id": "p-demo", "project_domain": "Default",
        }],
        "app_credentials": [{
            "id": "ac-nodepool", "name": "nodepool", "secret": app_secret, "user": "demo",
        }],
    })
}

/// `clouds.yaml` with password auth to the simulator at `base`.
pub fn clouds_yaml(base: &str, password: &str) -> String {
    format!(
        "clouds:\n  {CLOUD}:\n    region_name: RegionOne\n    auth:\n      auth_url: \
         {base}/identity/v3\n      username: demo\n      password: \"{password}\"\n      \
         project_name: demo\n      user_domain_name: Default\n      project_domain_name: \
         Default\n"
    )
}

/// One launcher's `nodepool.yaml` with `provider` (one item of the
/// `providers:` list, indented by two) and the label [`LABEL`] with its
/// `min-ready`.
pub fn nodepool_yaml_with(
    store: &StoreSpec,
    provider: &str,
    web_port: u16,
    min_ready: u64,
) -> String {
    let mut y = String::new();
    let _ = writeln!(
        y,
        "webapp:\n  port: {web_port}\n  listen_address: 127.0.0.1"
    );
    store.write_zookeeper_yaml(&mut y);
    let _ = writeln!(
        y,
        "labels:\n  - name: {LABEL}\n    min-ready: {min_ready}\nproviders:"
    );
    y.push_str(provider);
    y
}

/// The openstack provider [`PROVIDER`] on the simulator: one pool of
/// `max_servers`.
pub fn openstack_provider(max_servers: u64) -> String {
    let lines = [
        format!("  - name: {PROVIDER}"),
        "    driver: openstack".to_string(),
        format!("    cloud: {CLOUD}"),
        "    rate: 0".to_string(),
        "    boot-timeout: 10".to_string(),
        "    launch-retries: 3".to_string(),
        "    cloud-images:".to_string(),
        "      - name: cirros".to_string(),
        "    pools:".to_string(),
        "      - name: main".to_string(),
        format!("        max-servers: {max_servers}"),
        "        labels:".to_string(),
        format!("          - name: {LABEL}"),
        "            cloud-image: cirros".to_string(),
        "            flavor-name: m1.tiny".to_string(),
    ];
    let mut y = String::new();
    for line in lines {
        let _ = writeln!(y, "{line}");
    }
    y
}

/// Which launcher runs in the killed processes.
#[derive(Debug, Clone)]
pub enum LauncherKind {
    /// `nodepool -c CONF --state-dir DIR launcher`: the daemon as shipped,
    /// with its fixed cleanup interval and leak grace (60 s each).
    Daemon {
        /// The `nodepool` binary.
        bin: PathBuf,
    },
    /// `nodepool-chaos run-launcher`: the same engine, drivers and stores
    /// with short cleanup intervals, so a short run can wait them out.
    Engine {
        /// This binary.
        bin: PathBuf,
        /// Cleanup interval and leak grace, seconds.
        cleanup_interval: f64,
    },
}

impl LauncherKind {
    /// How long to wait, at most, for cleanup to converge after the last
    /// kill: two cleanup passes and the leak grace, plus slack.
    pub fn converge_budget(&self) -> Duration {
        match self {
            LauncherKind::Daemon { .. } => Duration::from_secs(200),
            LauncherKind::Engine {
                cleanup_interval, ..
            } => Duration::from_secs_f64((cleanup_interval * 4.0).max(5.0) + 30.0),
        }
    }

    /// The name in reports.
    pub fn name(&self) -> &'static str {
        match self {
            LauncherKind::Daemon { .. } => "nodepool launcher (daemon)",
            LauncherKind::Engine { .. } => "nodepool-chaos run-launcher (engine)",
        }
    }

    /// The command of launcher `index` with config `config`.
    pub fn command(
        &self,
        index: usize,
        config: &Path,
        state_dir: &Path,
        clouds: &Path,
        run_id: &str,
    ) -> LauncherCommand {
        let mut env = vec![
            (
                "OS_CLIENT_CONFIG_FILE".to_string(),
                clouds.display().to_string(),
            ),
            (
                "RUST_LOG".to_string(),
                std::env::var("CHAOS_LAUNCHER_LOG").unwrap_or_else(|_| "info".to_string()),
            ),
        ];
        let common = vec![
            "-c".to_string(),
            config.display().to_string(),
            "--state-dir".to_string(),
            state_dir.display().to_string(),
        ];
        match self {
            LauncherKind::Daemon { bin } => {
                let mut args = common;
                args.push("launcher".to_string());
                env.push(("NODEPOOL_STATE_DIR".into(), state_dir.display().to_string()));
                LauncherCommand {
                    program: bin.clone(),
                    args,
                    env,
                }
            }
            LauncherKind::Engine {
                bin,
                cleanup_interval,
            } => {
                let mut args = vec!["run-launcher".to_string()];
                args.extend(common);
                args.extend([
                    "--hostname".to_string(),
                    format!("chaos-{run_id}-{index}"),
                    "--cleanup-interval".to_string(),
                    cleanup_interval.to_string(),
                ]);
                LauncherCommand {
                    program: bin.clone(),
                    args,
                    env,
                }
            }
        }
    }
}

/// A run's working directory: the one asked for (created if missing) or a
/// new temporary one, removed at the end unless [`WorkDir::finish`] is told
/// the run failed.
pub(crate) struct WorkDir {
    temp: Option<tempfile::TempDir>,
    /// Where the run writes its state and logs.
    pub(crate) path: PathBuf,
    /// A short random id naming this run's chroots and resources.
    pub(crate) run_id: String,
}

impl WorkDir {
    /// `chosen`, or a temporary directory named `<prefix>XXXX`.
    pub(crate) fn new(prefix: &str, chosen: Option<&Path>) -> Result<Self, ChaosError> {
        let (temp, path) = match chosen {
            Some(d) => {
                std::fs::create_dir_all(d)
                    .map_err(|e| ChaosError::Setup(format!("{}: {e}", d.display())))?;
                (None, d.to_path_buf())
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix(prefix)
                    .tempdir()
                    .map_err(|e| ChaosError::Setup(format!("temporary directory: {e}")))?;
                let path = temp.path().to_path_buf();
                (Some(temp), path)
            }
        };
        let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        Ok(Self { temp, path, run_id })
    }

    /// End the run: a temporary directory is removed if the run `held`,
    /// kept (with the logs) if not.
    pub(crate) fn finish(self, held: bool) {
        if let (Some(temp), false) = (self.temp, held) {
            let _ = temp.keep();
        }
    }
}
