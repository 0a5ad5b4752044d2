//! `nodepool launcher`: the launcher daemon with its web app.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use nodepool_core::launcher::{Launcher, LauncherCacheQueues, LauncherSettings};
use nodepool_core::scheduler::DefaultScheduler;
use nodepool_core::tasks::TaskRegistry;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{
    build_providers, close_store, config_stamp, hostname, load_config, open_store_measured,
    registry, signal_error, DaemonError,
};
use crate::web::{launcher_census, router, Metrics, WebState};

/// What `nodepool launcher` was asked to do.
#[derive(Debug, Clone)]
pub(crate) struct LauncherOptions {
    /// `-c`.
    pub(crate) config: PathBuf,
    /// `-s`.
    pub(crate) secure: Option<PathBuf>,
    /// Where the embedded store lives.
    pub(crate) state_dir: PathBuf,
    /// How often the config files are checked for changes.
    pub(crate) reload_interval: Duration,
}

/// Most threads of the runtime's blocking pool (decoding long store
/// listings, file system calls, name lookups).
const MAX_BLOCKING_THREADS: usize = 4;

/// Run the launcher until SIGINT or SIGTERM; the exit code says how it ended.
///
/// The launcher runs on a single-threaded runtime. Its work is waiting on
/// the store and the clouds: at ~2 ms of CPU per request one thread serves
/// hundreds of requests a second, and the embedded store's SQLite calls run
/// on the store's own thread anyway. Every thread that allocates gets its
/// own glibc malloc arena, each holding its own high-water mark: one
/// runtime thread instead of one per core (plus idle blocking threads)
/// kept the launcher at 10,000 nodes ~9 MB smaller (see
/// doc/benchmarks.md, scale run).
pub(crate) fn run(options: LauncherOptions) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .enable_all()
        .build();
    super::exit_code("launcher", runtime, launcher_main(options))
}

async fn launcher_main(options: LauncherOptions) -> Result<(), DaemonError> {
    let reg = registry();
    let config = load_config(&options.config, options.secure.as_deref(), &reg)?;
    let (store, zk_outstanding) = open_store_measured(&config, &options.state_dir).await?;
    let providers = build_providers(&config, &reg);
    info!(
        providers = providers.len(),
        store = store.backend(),
        "starting the launcher"
    );

    let settings = LauncherSettings {
        validation_log_dir: Some(options.state_dir.join("validation-logs")),
        ..LauncherSettings::new(hostname())
    };
    let running = settings.tasks.clone();
    let launcher = Arc::new(Launcher::new(
        settings,
        Arc::clone(&store),
        Arc::new(DefaultScheduler),
        config.clone(),
        providers,
    ));
    let tasks = launcher.task_metrics();
    let counters_of = Arc::clone(&launcher);
    let census = launcher_census(Arc::clone(&launcher));
    let keyed_of = Arc::clone(&launcher);
    let queues_of = Arc::clone(&launcher);
    let queues: Arc<dyn Fn() -> LauncherCacheQueues + Send + Sync> =
        Arc::new(move || queues_of.cache_queues());
    let metrics = Metrics::from_source(Arc::new(move || counters_of.counters()))
        .with_keyed(Arc::new(move || keyed_of.keyed_counts()))
        .with_census(Arc::clone(&census))
        .with_tasks(Arc::clone(&tasks))
        .with_queues(Arc::clone(&queues), zk_outstanding.clone())
        .with_driver_metrics(Arc::clone(reg.metrics()));
    let web = Arc::new(
        WebState::new(
            Arc::clone(&store),
            config.clone(),
            config.api_token.as_ref().map(|t| t.expose().to_string()),
        )
        .with_metrics(Arc::new(metrics))
        .with_journal(&options.state_dir),
    );

    let cancel = CancellationToken::new();
    let addr: SocketAddr = format!("{}:{}", config.webapp.listen_address, config.webapp.port)
        .parse()
        .map_err(|e| {
            DaemonError::Setting(format!(
                "webapp listen address {}:{}: {e}",
                config.webapp.listen_address, config.webapp.port
            ))
        })?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| DaemonError::io(format!("listen on {addr}"), e))?;
    info!(%addr, "web app listening");
    let web_cancel = cancel.clone();
    let app = router(Arc::clone(&web));
    let web_task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(web_cancel.cancelled_owned())
            .await;
        if let Err(e) = served {
            error!("web app stopped: {e}");
        }
    });

    // The drivers' own metrics (openstacksdk's per-call ones), to the
    // statsd server their configuration names.
    super::driver_statsd::spawn(Arc::clone(reg.metrics()), cancel.clone());
    if let Some(settings) = super::statsd::StatsdSettings::from_env() {
        let (counters_of, config_of) = (Arc::clone(&launcher), Arc::clone(&web));
        let keyed_of = Arc::clone(&launcher);
        let sources = super::statsd::StatsSources {
            store: Arc::clone(&store),
            census: Arc::clone(&census),
            counters: Arc::new(move || counters_of.counters()),
            keyed: Arc::new(move || keyed_of.keyed_counts()),
            config: Arc::new(move || config_of.config()),
            hostname: hostname(),
            tasks: Arc::clone(&tasks),
            queues,
            zk_outstanding,
        };
        super::statsd::spawn(settings, sources, cancel.clone());
    }

    // Before the launcher runs: it would clean up the nodes of a request the
    // API held before a restart, which are unlocked until taken up again.
    if config.api_token.is_some() {
        if let Err(e) = std::fs::create_dir_all(&options.state_dir) {
            warn!(dir = %options.state_dir.display(), error = %e, "cannot make the state directory");
        }
        web.resume_requests().await;
    }

    let run_launcher = Arc::clone(&launcher);
    let run_cancel = cancel.clone();
    let mut run_task = tokio::spawn(async move { run_launcher.run(run_cancel).await });

    // `/ready` answers 200 once every pool worker has registered.
    let expected_pools: usize = config.providers.iter().map(|p| p.pools.len()).sum();
    let ready_web = Arc::clone(&web);
    let ready_store = Arc::clone(&store);
    let ready_host = hostname();
    tokio::spawn(async move {
        loop {
            let mine = ready_store
                .list_components("pool")
                .await
                .map(|c| {
                    c.iter()
                        .filter(|c| c.hostname.as_deref() == Some(ready_host.as_str()))
                        .count()
                })
                .unwrap_or(0);
            if mine >= expected_pools {
                ready_web.set_ready(true);
                info!("every provider has started");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    let mut sigint = signal(SignalKind::interrupt()).map_err(signal_error)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(signal_error)?;
    let mut sigusr2 = signal(SignalKind::user_defined2()).map_err(signal_error)?;
    let mut reload = tokio::time::interval(options.reload_interval);
    let mut stamp = config_stamp(&options.config, options.secure.as_deref());

    let outcome = loop {
        tokio::select! {
            _ = sigint.recv() => { info!("SIGINT: stopping"); break Ok(()); }
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break Ok(()); }
            _ = sigusr2.recv() => info!("SIGUSR2 task dump: {}", dump(&running, &launcher)),
            _ = reload.tick() => {
                let now = config_stamp(&options.config, options.secure.as_deref());
                if now != stamp {
                    stamp = now;
                    reload_config(&options, &reg, &launcher, &web);
                }
            }
            ended = &mut run_task => {
                break Err(DaemonError::engine_ended("launcher", ended));
            }
        }
    };

    web.set_ready(false);
    cancel.cancel();
    if !run_task.is_finished() {
        match run_task.await {
            Ok(Err(e)) => warn!("launcher stopped with an error: {e}"),
            Err(e) => warn!("launcher task failed: {e}"),
            Ok(Ok(())) => {}
        }
    }
    let _ = web_task.await;
    close_store(&*store).await;
    outcome
}

/// Re-read the configuration; a bad one is reported and the old one kept.
fn reload_config(
    options: &LauncherOptions,
    reg: &nodepool_core::config::DriverRegistry,
    launcher: &Launcher,
    web: &WebState,
) {
    match load_config(&options.config, options.secure.as_deref(), reg) {
        Ok(config) => {
            let providers = build_providers(&config, reg);
            info!(providers = providers.len(), "configuration reloaded");
            launcher.update_config(config.clone(), providers);
            web.set_config(config);
        }
        Err(e) => error!("configuration change ignored, the file is invalid:\n{e}"),
    }
}

/// SIGUSR2: a line per task and what it waits on, then a line per pool
/// (paused or not, requests in hand and waiting, launches in flight).
fn dump(tasks: &TaskRegistry, launcher: &Launcher) -> String {
    let mut out = tasks.dump();
    for pool in launcher.status().pools {
        out.push_str(&format!(
            "\n  pool {}/{}: {}, {} requests in hand, {} waiting at a limit, {} launches",
            pool.provider,
            pool.pool,
            if pool.paused { "paused" } else { "running" },
            pool.active_requests.len(),
            pool.waiting_requests.len(),
            pool.launching
        ));
    }
    out
}

/// Resolve `--state-dir`.
pub(crate) fn state_dir(arg: Option<&Path>) -> PathBuf {
    arg.map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/var/lib/nodepool"))
}
