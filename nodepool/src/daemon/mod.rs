//! The daemons (`launcher`, `builder`) and what they share: loading the
//! configuration, opening the store, building providers, signals.

pub(crate) mod builder;
pub(crate) mod builder_stats;
pub(crate) mod driver_statsd;
pub(crate) mod launcher;
pub(crate) mod statsd;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nodepool_core::config::{self, Config, ConfigErrors, DriverRegistry};
use nodepool_core::provider::Provider;
use nodepool_core::store::NodeStore;
use tracing::{info, warn};

/// Why a daemon could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DaemonError {
    /// The configuration is invalid.
    #[error("{0}")]
    Config(ConfigErrors),
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(String),
    /// A setting the daemon cannot run with (beyond what config
    /// validation checks), as a sentence.
    #[error("{0}")]
    Setting(String),
    /// A local resource (file, socket, signal handler) failed.
    #[error("cannot {action}: {source}")]
    Io {
        /// What was being done ("listen on 0.0.0.0:8005").
        action: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The engine (launcher or builder) ended while the daemon still ran.
    #[error("the {engine} {how}")]
    Engine {
        /// "launcher" or "builder".
        engine: &'static str,
        /// How it ended ("stopped unexpectedly", "failed: ...").
        how: String,
    },
}

impl DaemonError {
    /// A [`DaemonError::Io`] for `action`.
    pub(crate) fn io(action: impl Into<String>, source: std::io::Error) -> Self {
        DaemonError::Io {
            action: action.into(),
            source,
        }
    }

    /// How the `engine`'s task ended while the daemon still ran: it
    /// returned (`Ok`), failed (`Ok(Err)`), or panicked (`Err`).
    pub(crate) fn engine_ended<E: std::fmt::Display>(
        engine: &'static str,
        ended: Result<Result<(), E>, tokio::task::JoinError>,
    ) -> Self {
        let how = match ended {
            Ok(Ok(())) => "stopped unexpectedly".to_string(),
            Ok(Err(e)) => format!("failed: {e}"),
            Err(e) => format!("task failed: {e}"),
        };
        DaemonError::Engine { engine, how }
    }
}

/// Run a daemon's `main` on `runtime` and turn how it ended into the exit
/// code: 0, or 1 with the reason on standard error (configuration errors as
/// they are, each with its file and line).
pub(crate) fn exit_code(
    daemon: &str,
    runtime: std::io::Result<tokio::runtime::Runtime>,
    main: impl std::future::Future<Output = Result<(), DaemonError>>,
) -> ExitCode {
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nodepool {daemon}: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(DaemonError::Config(errors)) => {
            eprintln!("{errors}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("nodepool {daemon}: {e}");
            ExitCode::from(1)
        }
    }
}

/// The error of a daemon that cannot listen for signals.
pub(crate) fn signal_error(e: std::io::Error) -> DaemonError {
    DaemonError::io("install signal handlers", e)
}

/// Close a stopping daemon's store and log that it stopped.
pub(crate) async fn close_store(store: &dyn NodeStore) {
    if let Err(e) = store.close().await {
        warn!("closing the store: {e}");
    }
    info!("stopped");
}

/// The driver registry with every built-in driver.
pub(crate) fn registry() -> DriverRegistry {
    let mut reg = DriverRegistry::new();
    nodepool_drivers::register_builtin(&mut reg);
    reg
}

/// Load `-c` and `-s`.
pub(crate) fn load_config(
    path: &Path,
    secure: Option<&Path>,
    reg: &DriverRegistry,
) -> Result<Config, DaemonError> {
    let config = config::load(path, secure, reg).map_err(DaemonError::Config)?;
    for w in &config.warnings {
        warn!("{w}");
    }
    Ok(config)
}

/// Build one provider per configured provider. A provider that cannot be
/// built is logged and left out, so the others still run. The engines put
/// each inside core's wrapper stack
/// ([`nodepool_core::provider::stack_all`]).
pub(crate) fn build_providers(
    config: &Config,
    reg: &DriverRegistry,
) -> BTreeMap<String, Arc<dyn Provider>> {
    let mut out = BTreeMap::new();
    for p in &config.providers {
        let Some(driver) = reg.get(&p.driver) else {
            warn!(provider = %p.name, driver = %p.driver, "no such driver");
            continue;
        };
        match driver.create_provider(p) {
            Ok(provider) => {
                out.insert(p.name.clone(), provider);
            }
            Err(e) => warn!(provider = %p.name, "provider not started: {e}"),
        }
    }
    out
}

/// Where the embedded store keeps its database.
pub(crate) fn embedded_path(state_dir: &Path) -> PathBuf {
    state_dir.join("nodepool.sqlite")
}

/// The number of ZooKeeper requests a store has not had answered yet
/// ([`nodepool_zk::ZkStore::outstanding_requests`]).
pub(crate) type OutstandingSource = Arc<dyn Fn() -> usize + Send + Sync>;

/// Open the store the config names: ZooKeeper when `zookeeper-servers` is
/// set, the embedded store in `state_dir` otherwise.
pub(crate) async fn open_store(
    config: &Config,
    state_dir: &Path,
) -> Result<Arc<dyn NodeStore>, DaemonError> {
    Ok(open_store_measured(config, state_dir).await?.0)
}

/// [`open_store`], with the ZooKeeper store's count of requests not
/// answered yet (`None` for the embedded store, which has no ZooKeeper
/// client).
pub(crate) async fn open_store_measured(
    config: &Config,
    state_dir: &Path,
) -> Result<(Arc<dyn NodeStore>, Option<OutstandingSource>), DaemonError> {
    if config.zookeeper_servers.is_empty() {
        std::fs::create_dir_all(state_dir).map_err(|e| {
            DaemonError::Store(format!(
                "cannot create state directory {}: {e}",
                state_dir.display()
            ))
        })?;
        let path = embedded_path(state_dir);
        info!(path = %path.display(), "using the embedded store");
        let store = nodepool_embedded::EmbeddedStore::open(&path)
            .map_err(|e| DaemonError::Store(format!("{}: {e}", path.display())))?;
        return Ok((Arc::new(store), None));
    }
    let hosts: Vec<String> = config
        .zookeeper_servers
        .iter()
        .map(|s| format!("{}:{}", s.host, s.port))
        .collect();
    let chroot = config
        .zookeeper_servers
        .iter()
        .find_map(|s| s.chroot.clone());
    let mut zk = nodepool_zk::ZkConfig::new(hosts.clone())
        .with_session_timeout(session_timeout(config.zookeeper_timeout));
    if let Some(chroot) = chroot {
        zk = zk.with_chroot(chroot);
    }
    if let Some(tls) = &config.zookeeper_tls {
        zk = zk.with_tls(nodepool_zk::ZkTls {
            ca: tls.ca.clone(),
            cert: tls.cert.clone(),
            key: tls.key.clone(),
        });
    }
    info!(hosts = %hosts.join(","), "connecting to ZooKeeper");
    let store = Arc::new(
        nodepool_zk::ZkStore::connect(zk)
            .await
            .map_err(|e| DaemonError::Store(e.to_string()))?,
    );
    let measured = Arc::clone(&store);
    let outstanding: OutstandingSource = Arc::new(move || measured.outstanding_requests());
    Ok((store, Some(outstanding)))
}

/// This host's name.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The modification times of the config files, to notice edits.
pub(crate) fn config_stamp(path: &Path, secure: Option<&Path>) -> Vec<Option<SystemTime>> {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut out = vec![mtime(path)];
    if let Some(s) = secure {
        out.push(mtime(s));
    }
    out
}

/// The ZooKeeper session timeout for `zookeeper-timeout` seconds: at least
/// 1 s and at most an hour (the server caps it far lower, at its
/// `maxSessionTimeout`); upstream's default, 10 s, for a value that is not
/// a number.
fn session_timeout(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs.clamp(1.0, 3600.0)).unwrap_or(Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::session_timeout;
    use std::time::Duration;

    #[test]
    fn session_timeout_takes_any_number_without_panicking() {
        assert_eq!(session_timeout(10.0), Duration::from_secs(10));
        assert_eq!(session_timeout(0.1), Duration::from_secs(1));
        assert_eq!(session_timeout(f64::INFINITY), Duration::from_secs(3600));
        assert_eq!(session_timeout(1.0e30), Duration::from_secs(3600));
        assert_eq!(session_timeout(f64::NAN), Duration::from_secs(10));
        assert_eq!(session_timeout(-5.0), Duration::from_secs(1));
    }
}
