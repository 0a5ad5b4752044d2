//! `nodepool builder`: the builder daemon (upstream's `nodepool-builder`).
//!
//! It runs [`nodepool_core::builder::Builder`] with
//! [`nodepool_dib::DibImageBuilder`] and the configured providers until
//! SIGINT or SIGTERM, re-reading the configuration when its files change.
//!
//! - `images-dir` is required (upstream: "No images-dir specified in
//!   config."); the builder's id is kept in `<images-dir>/builder_id.txt`
//!   and reused across restarts, as upstream does.
//! - `%p` in a diskimage's `dib-cmd` is the directory of the `nodepool`
//!   executable (upstream: the directory of its Python package).
//! - The builder registers itself as a `builder` component while it runs.
//! - On SIGINT or SIGTERM a running build is stopped (its process group
//!   gets SIGTERM, then SIGKILL after 30 s), its record marked failed and
//!   its files removed; a second signal exits at once.
//! - After a crash (SIGKILL, OOM), the next start first stops the
//!   diskimage-builder processes the dead run left building into
//!   `images-dir` (they run in their own process group, so the kill did
//!   not reach them), then fails the builds and removes the uploads that
//!   run left in progress, with their files and cloud images
//!   ([`Builder::recover`]), waiting up to twice `zookeeper-timeout` (at
//!   least 30 s) for the dead session's locks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nodepool_core::builder::{Builder, BuilderSettings, MAX_BUILD_WORKERS};
use nodepool_core::config::{Config, DriverRegistry};
use nodepool_core::image_builder::{BuildSpec, BuiltFile, ImageBuilder};
use nodepool_core::model::{Component, ComponentState, BUILDER};
use nodepool_core::provider::{
    CloudImage, ImageUploadSpec, Instance, InstancePage, LaunchSpec, LeakedResources, Provider,
    ProviderCapabilities, RegisteredHosts, Resources,
};
use nodepool_dib::{DibImageBuilder, DibSettings};
use nodepool_drivers::fake::config::FakeConfig;
use nodepool_drivers::openstack::OpenStackConfig;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{
    build_providers, close_store, config_stamp, hostname, load_config, open_store, registry,
    signal_error, DaemonError,
};

/// How long an orphaned diskimage-builder may take to exit after SIGTERM
/// (as a stopped build: `DibSettings::kill_grace`).
const ORPHAN_GRACE: Duration = Duration::from_secs(30);

/// The file, in `images-dir`, that keeps this builder's id.
pub(crate) const BUILDER_ID_FILE: &str = "builder_id.txt";

/// What `nodepool builder` was asked to do.
#[derive(Debug, Clone)]
pub(crate) struct BuilderOptions {
    /// `-c`.
    pub(crate) config: PathBuf,
    /// `-s`.
    pub(crate) secure: Option<PathBuf>,
    /// Where the embedded store lives.
    pub(crate) state_dir: PathBuf,
    /// How often the config files are checked for changes.
    pub(crate) reload_interval: Duration,
    /// Uploads in flight at once (`--upload-workers`).
    pub(crate) upload_workers: usize,
    /// Builds at once (`--build-workers`).
    pub(crate) build_workers: usize,
}

/// Run the builder until SIGINT or SIGTERM; the exit code says how it ended.
pub(crate) fn run(options: BuilderOptions) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    super::exit_code("builder", runtime, builder_main(options))
}

/// The `images-dir` of `config`, which a builder cannot do without.
fn images_dir(config: &Config) -> Result<PathBuf, DaemonError> {
    config
        .images_dir
        .clone()
        .ok_or_else(|| DaemonError::Setting("No images-dir specified in config.".to_string()))
}

/// This builder's id: the content of `<images_dir>/builder_id.txt`, or a
/// new UUID written there when the file is missing or empty.
pub(crate) fn builder_id(images_dir: &Path) -> Result<String, DaemonError> {
    let path = images_dir.join(BUILDER_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(DaemonError::io(
                format!("read the builder id from {}", path.display()),
                e,
            ))
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    std::fs::write(&path, &id)
        .map_err(|e| DaemonError::io(format!("write the builder id to {}", path.display()), e))?;
    info!(path = %path.display(), builder_id = %id, "created a new builder id");
    Ok(id)
}

/// `image-name-format` of every OpenStack (and fake) provider.
pub(crate) fn image_name_formats(config: &Config) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for p in &config.providers {
        let any = p.driver_config.as_any();
        let format = any
            .downcast_ref::<OpenStackConfig>()
            .map(|c| c.image_name_format.clone())
            .or_else(|| {
                any.downcast_ref::<FakeConfig>()
                    .map(|c| c.openstack.image_name_format.clone())
            });
        if let Some(format) = format {
            out.insert(p.name.clone(), format);
        }
    }
    out
}

/// What replaces `%p` in `dib-cmd`: the directory of this executable.
fn script_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
}

/// The providers, each wrapped to log its uploads (the builder engine puts
/// them inside core's wrapper stack). The builder daemon reports no task
/// metrics.
fn upload_providers(config: &Config, reg: &DriverRegistry) -> BTreeMap<String, Arc<dyn Provider>> {
    build_providers(config, reg)
        .into_iter()
        .map(|(name, p)| {
            let logged: Arc<dyn Provider> = Arc::new(LoggedUploads { inner: p });
            (name, logged)
        })
        .collect()
}

async fn builder_main(options: BuilderOptions) -> Result<(), DaemonError> {
    // Before anything starts, so no signal finds the default handler.
    let mut sigint = signal(SignalKind::interrupt()).map_err(signal_error)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(signal_error)?;
    let mut sigusr2 = signal(SignalKind::user_defined2()).map_err(signal_error)?;
    let reg = registry();
    let config = load_config(&options.config, options.secure.as_deref(), &reg)?;
    let dir = images_dir(&config)?;
    if options.build_workers > MAX_BUILD_WORKERS {
        warn!(
            build_workers = options.build_workers,
            "more build workers than {MAX_BUILD_WORKERS}; running {MAX_BUILD_WORKERS}"
        );
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| DaemonError::io(format!("create images-dir {}", dir.display()), e))?;
    let id = builder_id(&dir)?;
    // Before anything builds: a dib left running by a killed run of this
    // builder would write files again after they are cleaned up.
    let orphans = nodepool_dib::stop_orphaned_builds(&dir, ORPHAN_GRACE).await;
    if !orphans.is_empty() {
        warn!(pids = ?orphans, "stopped diskimage-builder processes left by a previous run");
    }
    let store = open_store(&config, &options.state_dir).await?;
    let host = hostname();

    let mut settings = BuilderSettings::new(host.clone(), id.clone());
    settings.upload_workers = options.upload_workers.max(1);
    settings.build_workers = options.build_workers.clamp(1, MAX_BUILD_WORKERS);
    let tasks = settings.tasks.clone();
    let recovery_wait = (config.zookeeper_timeout * 2.0).clamp(30.0, 3600.0);
    settings.recovery_wait =
        Duration::try_from_secs_f64(recovery_wait).unwrap_or(Duration::from_secs(30));
    let started_formats = image_name_formats(&config);
    settings.image_name_formats = started_formats.clone();
    let image_builder: Arc<dyn ImageBuilder> =
        Arc::new(LoggedImageBuilder::new(DibImageBuilder::new(DibSettings {
            script_dir: script_dir(),
            ..DibSettings::default()
        })));
    let providers = upload_providers(&config, &reg);
    info!(
        builder_id = %id,
        images_dir = %dir.display(),
        providers = providers.len(),
        diskimages = config.diskimages.len(),
        store = store.backend(),
        "starting the builder"
    );
    let builder = Arc::new(Builder::new(
        Arc::clone(&store),
        image_builder,
        Arc::new(config),
        providers,
        settings,
    ));

    let component_name = format!("{host}-{}", uuid::Uuid::new_v4());
    let mut component = Component::new(BUILDER, host.clone());
    component.state = ComponentState::Running;
    component.version = Some(env!("CARGO_PKG_VERSION").to_string());
    if let Err(e) = store
        .register_component(BUILDER, &component_name, &component)
        .await
    {
        warn!(error = %e, "cannot register the builder component");
    }

    let cancel = CancellationToken::new();
    // The drivers' own metrics (openstacksdk's per-call ones of uploads),
    // to the statsd server their configuration names.
    super::driver_statsd::spawn(Arc::clone(reg.metrics()), cancel.clone());
    if let Some(settings) = super::statsd::StatsdSettings::from_env() {
        let (stats_of, status_of) = (Arc::clone(&builder), Arc::clone(&builder));
        let source = super::builder_stats::BuilderStatsSource {
            stats: Arc::new(move || stats_of.stats()),
            status: Arc::new(move || {
                let builder = Arc::clone(&status_of);
                Box::pin(async move { builder.image_status().await })
            }),
            hostname: host.clone(),
        };
        super::builder_stats::spawn(settings, source, cancel.clone());
    }
    let run_builder = Arc::clone(&builder);
    let run_cancel = cancel.clone();
    let mut run_task = tokio::spawn(async move { run_builder.run(run_cancel).await });

    let mut reload = tokio::time::interval(options.reload_interval);
    let mut stamp = config_stamp(&options.config, options.secure.as_deref());
    let mut cleanup_now: Option<tokio::task::JoinHandle<()>> = None;

    let outcome = loop {
        tokio::select! {
            _ = sigint.recv() => { info!("SIGINT: stopping"); break Ok(()); }
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break Ok(()); }
            _ = sigusr2.recv() => info!("SIGUSR2 task dump: {}", tasks.dump()),
            _ = reload.tick() => {
                let now = config_stamp(&options.config, options.secure.as_deref());
                if now != stamp {
                    stamp = now;
                    let reloaded = reload_config(&options, &reg, &builder, &started_formats);
                    let idle = cleanup_now.as_ref().map_or(true, |t| t.is_finished());
                    if reloaded && idle {
                        // Removed providers and images are cleaned up now,
                        // not at the cleanup worker's next 60 s tick.
                        let b = Arc::clone(&builder);
                        cleanup_now = Some(tokio::spawn(async move { b.cleanup_pass().await }));
                    }
                }
            }
            ended = &mut run_task => {
                break Err(DaemonError::engine_ended(
                    "builder",
                    ended.map(Ok::<(), std::convert::Infallible>),
                ));
            }
        }
    };

    cancel.cancel();
    if let Some(task) = cleanup_now {
        task.abort();
    }
    if !run_task.is_finished() {
        info!("waiting for the builder workers to stop");
        tokio::select! {
            ended = &mut run_task => {
                if let Err(e) = ended {
                    warn!("builder task failed: {e}");
                }
            }
            _ = sigint.recv() => warn!("second signal: exiting without waiting"),
            _ = sigterm.recv() => warn!("second signal: exiting without waiting"),
        }
    }
    if let Err(e) = store.unregister_component(BUILDER, &component_name).await {
        warn!(error = %e, "cannot unregister the builder component");
    }
    close_store(&*store).await;
    outcome
}

/// Re-read the configuration; a bad one (or one without `images-dir`) is
/// reported and the old one kept. Returns whether the builder got the new
/// one.
fn reload_config(
    options: &BuilderOptions,
    reg: &DriverRegistry,
    builder: &Builder,
    started_formats: &BTreeMap<String, String>,
) -> bool {
    let config = match load_config(&options.config, options.secure.as_deref(), reg) {
        Ok(config) => config,
        Err(e) => {
            error!("configuration change ignored, the file is invalid:\n{e}");
            return false;
        }
    };
    let new_dir = match images_dir(&config) {
        Ok(dir) => dir,
        Err(e) => {
            error!("configuration change ignored: {e}");
            return false;
        }
    };
    if builder.config().images_dir.as_deref() != Some(new_dir.as_path()) {
        warn!(
            images_dir = %new_dir.display(),
            "images-dir changed: new builds go there, the builder id stays"
        );
    }
    if &image_name_formats(&config) != started_formats {
        warn!("image-name-format changes take effect when the builder restarts");
    }
    let providers = upload_providers(&config, reg);
    info!(
        providers = providers.len(),
        diskimages = config.diskimages.len(),
        "configuration reloaded"
    );
    builder.reconfigure(Arc::new(config), providers);
    true
}

/// An [`ImageBuilder`] that logs each build's start, end and duration.
#[derive(Debug)]
struct LoggedImageBuilder<B> {
    inner: B,
}

impl<B> LoggedImageBuilder<B> {
    fn new(inner: B) -> Self {
        Self { inner }
    }
}

#[async_trait]
impl<B: ImageBuilder> ImageBuilder for LoggedImageBuilder<B> {
    async fn build(
        &self,
        spec: &BuildSpec,
        cancel: CancellationToken,
    ) -> nodepool_core::Result<Vec<BuiltFile>> {
        let started = Instant::now();
        info!(
            image = %spec.diskimage,
            build = %spec.build_id,
            formats = %spec.formats.join(","),
            log = ?spec.log_path,
            "build started"
        );
        let result = self.inner.build(spec, cancel).await;
        let took = started.elapsed();
        match &result {
            Ok(files) => {
                let sizes: Vec<String> = files
                    .iter()
                    .map(|f| format!("{}={}", f.format, f.size))
                    .collect();
                info!(
                    image = %spec.diskimage,
                    build = %spec.build_id,
                    seconds = took.as_secs_f64(),
                    sizes = %sizes.join(","),
                    "build finished in {:.1}s",
                    took.as_secs_f64()
                );
            }
            Err(e) => error!(
                image = %spec.diskimage,
                build = %spec.build_id,
                seconds = took.as_secs_f64(),
                error = %e,
                "build failed after {:.1}s",
                took.as_secs_f64()
            ),
        }
        result
    }
}

/// A [`Provider`] that logs each image upload's start, end and duration
/// and passes every call to the provider it wraps.
#[derive(Debug)]
struct LoggedUploads {
    inner: Arc<dyn Provider>,
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Provider for LoggedUploads {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> ProviderCapabilities {
        self.inner.capabilities()
    }

    async fn label_resources(&self, pool: &str, label: &str) -> nodepool_core::Result<Resources> {
        self.inner.label_resources(pool, label).await
    }

    async fn create_instance(&self, spec: &LaunchSpec) -> nodepool_core::Result<Instance> {
        self.inner.create_instance(spec).await
    }

    async fn get_instance(&self, external_id: &str) -> nodepool_core::Result<Option<Instance>> {
        self.inner.get_instance(external_id).await
    }

    async fn delete_instance(&self, external_id: &str) -> nodepool_core::Result<()> {
        self.inner.delete_instance(external_id).await
    }

    async fn wait_active(
        &self,
        external_id: &str,
        timeout: Duration,
    ) -> nodepool_core::Result<Instance> {
        self.inner.wait_active(external_id, timeout).await
    }

    async fn list_instances_page(
        &self,
        marker: Option<&str>,
        limit: usize,
    ) -> nodepool_core::Result<InstancePage> {
        self.inner.list_instances_page(marker, limit).await
    }

    async fn quota(&self) -> nodepool_core::Result<Resources> {
        self.inner.quota().await
    }

    async fn upload_image(&self, spec: &ImageUploadSpec) -> nodepool_core::Result<String> {
        let size = tokio::fs::metadata(&spec.path).await.map(|m| m.len()).ok();
        info!(
            provider = %self.inner.name(),
            image = %spec.diskimage,
            build = %spec.build_id,
            upload = %spec.upload_id,
            name = %spec.external_name,
            path = %spec.path.display(),
            bytes = ?size,
            "upload started"
        );
        let started = Instant::now();
        let result = self.inner.upload_image(spec).await;
        let took = started.elapsed().as_secs_f64();
        match &result {
            Ok(external_id) => info!(
                provider = %self.inner.name(),
                image = %spec.diskimage,
                build = %spec.build_id,
                upload = %spec.upload_id,
                %external_id,
                seconds = took,
                "upload finished in {took:.1}s"
            ),
            Err(e) => error!(
                provider = %self.inner.name(),
                image = %spec.diskimage,
                build = %spec.build_id,
                upload = %spec.upload_id,
                seconds = took,
                error = %e,
                "upload failed after {took:.1}s"
            ),
        }
        result
    }

    async fn delete_image(&self, external_id: &str) -> nodepool_core::Result<()> {
        info!(provider = %self.inner.name(), %external_id, "deleting image");
        self.inner.delete_image(external_id).await
    }

    async fn list_images(&self) -> nodepool_core::Result<Vec<CloudImage>> {
        self.inner.list_images().await
    }

    async fn console_log(
        &self,
        pool: &str,
        label: &str,
        external_id: &str,
    ) -> nodepool_core::Result<Option<String>> {
        self.inner.console_log(pool, label, external_id).await
    }

    async fn cleanup_leaked_resources(&self) -> nodepool_core::Result<LeakedResources> {
        self.inner.cleanup_leaked_resources().await
    }

    fn registered(&self) -> Option<&dyn RegisteredHosts> {
        self.inner.registered()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_id_is_created_once_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = builder_id(dir.path()).expect("created");
        assert_eq!(first.len(), 36, "a UUID: {first}");
        let stored = std::fs::read_to_string(dir.path().join(BUILDER_ID_FILE)).expect("file");
        assert_eq!(stored, first);
        assert_eq!(builder_id(dir.path()).expect("read"), first);
    }

    #[test]
    fn builder_id_keeps_an_existing_file_without_its_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(BUILDER_ID_FILE), "my-builder\n").expect("write");
        assert_eq!(builder_id(dir.path()).expect("read"), "my-builder");
    }

    #[test]
    fn image_name_formats_come_from_openstack_and_fake_providers() {
        let yaml = "labels: []
providers:
  - name: fake-one
    cloud: fake
    image-name-format: 'np-{image_name}-{upload_id}'
  - name: fake-two
    cloud: fake
  - name: static-one
    driver: static
    pools: []
";
        let config = nodepool_core::config::load_str("nodepool.yaml", yaml, &registry())
            .expect("config loads");
        let formats = image_name_formats(&config);
        assert_eq!(
            formats.get("fake-one").map(String::as_str),
            Some("np-{image_name}-{upload_id}")
        );
        assert_eq!(
            formats.get("fake-two").map(String::as_str),
            Some(nodepool_core::builder::DEFAULT_IMAGE_NAME_FORMAT)
        );
        assert!(!formats.contains_key("static-one"));
    }

    #[test]
    fn a_config_without_images_dir_is_refused() {
        let config = nodepool_core::config::load_str("nodepool.yaml", "labels: []\n", &registry())
            .expect("config loads");
        let err = images_dir(&config).expect_err("no images-dir");
        assert_eq!(err.to_string(), "No images-dir specified in config.");
    }
}
