//! `nodepool-chaos run-launcher`: the launcher engine wired as the
//! `nodepool launcher` daemon wires it (config, drivers, store), but with
//! the cleanup interval and leak grace on the command line, which the
//! daemon does not offer. It is what short runs kill.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nodepool_core::config::{self, Config, DriverRegistry};
use nodepool_core::launcher::{Launcher, LauncherSettings};
use nodepool_core::provider::Provider;
use nodepool_core::scheduler::DefaultScheduler;
use nodepool_core::store::NodeStore;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::ChaosError;

/// The engine's options.
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// nodepool.yaml.
    #[arg(short = 'c')]
    pub config: PathBuf,
    /// The embedded store's directory.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// This launcher's hostname (component and pool worker names).
    #[arg(long)]
    pub hostname: String,
    /// Cleanup interval and leak grace, seconds.
    #[arg(long, default_value_t = 2.0)]
    pub cleanup_interval: f64,
}

/// Run until SIGTERM or SIGINT.
pub async fn run(args: EngineArgs) -> Result<(), ChaosError> {
    let mut reg = DriverRegistry::new();
    nodepool_drivers::register_builtin(&mut reg);
    let config =
        config::load(&args.config, None, &reg).map_err(|e| ChaosError::Setup(e.to_string()))?;
    let store = open_store(&config, &args).await?;
    let providers = build_providers(&config, &reg);
    let interval = Duration::from_secs_f64(args.cleanup_interval.max(0.1));
    let mut settings = LauncherSettings::new(args.hostname.clone());
    settings.cleanup_interval = interval;
    settings.leak_grace = interval;
    settings.delete_interval = interval;
    settings.pool_interval = interval;
    let launcher = Launcher::new(
        settings,
        Arc::clone(&store),
        Arc::new(DefaultScheduler),
        config,
        providers,
    );
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| ChaosError::Setup(format!("signals: {e}")))?;
    tokio::spawn(async move {
        let _ = term.recv().await;
        stop.cancel();
    });
    info!(hostname = %args.hostname, "engine launcher starting");
    let outcome = launcher.run(cancel).await;
    let _ = store.close().await;
    outcome.map_err(|e| ChaosError::Store(format!("the launcher failed: {e}")))
}

fn build_providers(config: &Config, reg: &DriverRegistry) -> BTreeMap<String, Arc<dyn Provider>> {
    let mut out = BTreeMap::new();
    for p in &config.providers {
        match reg.get(&p.driver).map(|d| d.create_provider(p)) {
            Some(Ok(provider)) => {
                out.insert(p.name.clone(), provider);
            }
            Some(Err(e)) => warn!(provider = %p.name, "provider not started: {e}"),
            None => warn!(provider = %p.name, "no such driver"),
        }
    }
    out
}

async fn open_store(config: &Config, args: &EngineArgs) -> Result<Arc<dyn NodeStore>, ChaosError> {
    let Some(first) = config.zookeeper_servers.first() else {
        let spec = crate::setup::StoreSpec::Embedded {
            state_dir: args.state_dir.clone(),
        };
        return spec.open().await;
    };
    let tls = config
        .zookeeper_tls
        .as_ref()
        .ok_or_else(|| ChaosError::Setup("zookeeper-tls is required".into()))?;
    let spec = crate::setup::StoreSpec::Zookeeper {
        hosts: format!("{}:{}", first.host, first.port),
        chroot: first.chroot.clone().unwrap_or_else(|| "/".into()),
        tls: (tls.ca.clone(), tls.cert.clone(), tls.key.clone()),
        session_timeout: config.zookeeper_timeout.max(1.0),
    };
    spec.open().await
}
