//! The builder engine: builds diskimages, uploads them to the providers that
//! use them and cleans up old builds and uploads, sharing the work with
//! other builders through the [`NodeStore`], as upstream's
//! `nodepool-builder` does (`BuildWorker`, `UploadWorker`, `CleanupWorker`).
//!
//! - [`build`]: when an image has no ready build, its newest ready build is
//!   older than `rebuild-age` or lacks a format the config now asks for, or
//!   a build was requested (`nodepool image-build`), one builder takes the
//!   image's build lock and runs the [`ImageBuilder`]. `pause: true` or
//!   `nodepool image-pause` stop builds of the image.
//! - [`upload`]: the newest ready build is uploaded to every provider that
//!   lists the image, by the builder that has its files; a failed upload is
//!   retried on a later pass.
//! - [`cleanup`]: keeps the two newest ready builds of each image, deletes
//!   older builds in every provider, in the store and on disk; deletes the
//!   uploads of providers that no longer list the image; removes the records
//!   of builds and uploads whose builder died.
//!
//! - [`recover`]: when a builder starts, the builds and uploads its
//!   previous run left in progress (it died: SIGKILL, OOM) are failed and
//!   removed at once, with their files and cloud images.
//!
//! [`Builder::run`] recovers, then drives the three, woken by image events
//! of the store and by timers.
//!
//! ```no_run
//! # use std::collections::BTreeMap;
//! # use std::sync::Arc;
//! # use nodepool_core::builder::{Builder, BuilderSettings};
//! # use nodepool_core::config::Config;
//! # use nodepool_core::image_builder::ImageBuilder;
//! # use nodepool_core::store::MemoryStore;
//! # async fn demo(image_builder: Arc<dyn ImageBuilder>, config: Config) {
//! let store = Arc::new(MemoryStore::new());
//! let settings = BuilderSettings::new("builder01.example.com", "0b6c5c1c-builder-id");
//! let builder = Arc::new(Builder::new(store, image_builder, Arc::new(config), BTreeMap::new(), settings));
//! let cancel = tokio_util::sync::CancellationToken::new();
//! builder.run(cancel).await;
//! # }
//! ```

pub mod admin;
pub mod build;
pub mod cleanup;
pub mod files;
mod leaked;
pub mod recover;
mod stats;
pub mod upload;

#[cfg(test)]
mod recover_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod workers_tests;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{Config, DiskImage};
use crate::image_builder::ImageBuilder;
use crate::model::{ImageUpload, UploadState};
use crate::provider::wrappers::ProviderMetrics;
use crate::provider::Provider;
use crate::store::{NodeStore, StoreEvent};
use crate::tasks::{TaskExt, TaskRegistry};

pub use stats::{
    BuildResult, BuilderStatsSnapshot, ImageStatus, UploadTotals, STATUS_BUILDING, STATUS_IDLE,
    STATUS_PAUSED, STATUS_UPLOADING,
};

/// Most build workers a builder runs (`--build-workers` beyond it is
/// clamped).
pub const MAX_BUILD_WORKERS: usize = 64;

/// A worker's wait while it checks its images.
const RUNNING_PASS: &str = "checking images";
/// A worker's wait between passes.
const WAITING_FOR_EVENT: &str = "waiting for an image event or the interval";

/// Upstream's default `image-name-format`.
pub const DEFAULT_IMAGE_NAME_FORMAT: &str = "{image_name}-{timestamp}";

/// How a builder runs. [`BuilderSettings::new`] gives upstream's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct BuilderSettings {
    /// This host's name, written as the builds' `builder`.
    pub hostname: String,
    /// This builder's unique id (upstream keeps it in
    /// `<images-dir>/builder_id.txt`), written as the builds' `builder_id`.
    pub builder_id: String,
    /// Uploads in flight at once (upstream: 4 upload workers).
    pub upload_workers: usize,
    /// Longest wait between two build checks (upstream: 10 s).
    pub build_interval: Duration,
    /// Longest wait between two upload checks (upstream: 10 s).
    pub upload_interval: Duration,
    /// Longest wait between two cleanups (upstream: 60 s).
    pub cleanup_interval: Duration,
    /// Shortest wait between two passes woken by store events, so a burst of
    /// events makes one pass.
    pub debounce: Duration,
    /// `image-name-format` per provider name; providers not listed use
    /// [`DEFAULT_IMAGE_NAME_FORMAT`].
    pub image_name_formats: BTreeMap<String, String>,
    /// How long [`Builder::run`] waits, in all, for the locks of what a
    /// previous run left in progress ([`Builder::recover`]); a dead
    /// ZooKeeper session holds them until it expires.
    pub recovery_wait: Duration,
    /// Builds run at once (`--build-workers`; upstream: 1). Each build
    /// worker checks every diskimage and builds one that no other worker
    /// (here or on another builder) is building.
    pub build_workers: usize,
    /// Where the builder's workers and each build and upload say what
    /// they wait on (for the daemon's SIGUSR2 dump).
    pub tasks: TaskRegistry,
}

impl BuilderSettings {
    /// Upstream's defaults for a builder on `hostname` with id `builder_id`.
    pub fn new(hostname: impl Into<String>, builder_id: impl Into<String>) -> Self {
        Self {
            hostname: hostname.into(),
            builder_id: builder_id.into(),
            upload_workers: 4,
            build_interval: Duration::from_secs(10),
            upload_interval: Duration::from_secs(10),
            cleanup_interval: Duration::from_secs(60),
            debounce: Duration::from_millis(200),
            image_name_formats: BTreeMap::new(),
            recovery_wait: Duration::from_secs(30),
            build_workers: 1,
            tasks: TaskRegistry::new(),
        }
    }

    /// The `image-name-format` of `provider`.
    pub fn image_name_format(&self, provider: &str) -> &str {
        self.image_name_formats
            .get(provider)
            .map(String::as_str)
            .unwrap_or(DEFAULT_IMAGE_NAME_FORMAT)
    }
}

/// The configuration a builder works from; replaced as a whole on reload.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) config: Arc<Config>,
    pub(crate) providers: BTreeMap<String, Arc<dyn Provider>>,
}

/// The builder engine. See the module documentation.
pub struct Builder {
    pub(crate) store: Arc<dyn NodeStore>,
    pub(crate) image_builder: Arc<dyn ImageBuilder>,
    pub(crate) settings: BuilderSettings,
    snapshot: RwLock<Snapshot>,
    /// Cloud images (provider, id) the last cleanup pass found without an
    /// upload record; deleted when the next pass finds them again.
    pub(crate) possibly_leaked: Mutex<HashSet<(String, String)>>,
    /// The task metrics of the providers' wrapper stacks.
    tasks: Arc<ProviderMetrics>,
    /// Builds and uploads finished, for metrics.
    pub(crate) stats: stats::BuilderStats,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("store", &self.store.backend())
            .field("hostname", &self.settings.hostname)
            .field("builder_id", &self.settings.builder_id)
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// A builder working on `store` with `config` and the drivers'
    /// providers built from it (by provider name), each put inside core's
    /// wrapper stack from its config
    /// ([`stack_all`](crate::provider::stack_all)).
    pub fn new(
        store: Arc<dyn NodeStore>,
        image_builder: Arc<dyn ImageBuilder>,
        config: Arc<Config>,
        providers: BTreeMap<String, Arc<dyn Provider>>,
        settings: BuilderSettings,
    ) -> Self {
        let tasks = Arc::new(ProviderMetrics::new());
        let providers = crate::provider::stack_all(&config, providers, &tasks);
        Self {
            store,
            image_builder,
            settings,
            snapshot: RwLock::new(Snapshot { config, providers }),
            possibly_leaked: Mutex::new(HashSet::new()),
            tasks,
            stats: stats::BuilderStats::default(),
        }
    }

    /// Calls, errors and time of every provider operation so far (upload,
    /// image deletes and listings), across config reloads.
    pub fn task_metrics(&self) -> Arc<ProviderMetrics> {
        Arc::clone(&self.tasks)
    }

    /// The last build of each image and the uploads that became ready
    /// (upstream's `nodepool.dib_image_build.*` and
    /// `nodepool.image_update.*` metrics).
    pub fn stats(&self) -> BuilderStatsSnapshot {
        self.stats.snapshot()
    }

    /// What the builder is doing with each image the store knows
    /// (upstream's `nodepool.builder.<host>.image.*` gauges): building,
    /// uploading, paused, and whether a build was requested.
    pub async fn image_status(&self) -> crate::Result<Vec<ImageStatus>> {
        let config = self.config();
        let mut out = Vec::new();
        for name in self.store.list_images().await? {
            let paused = config.diskimages.iter().any(|d| d.name == name && d.pause)
                || self.store.image_paused(&name).await?;
            let build_state = if self.stats.is_busy(&name, None) {
                STATUS_BUILDING
            } else if paused {
                STATUS_PAUSED
            } else {
                STATUS_IDLE
            };
            let mut uploads = Vec::new();
            for provider in &config.providers {
                let Some(image) = provider.diskimages.iter().find(|d| d.name == name) else {
                    continue;
                };
                let state = if self.stats.is_busy(&name, Some(&provider.name)) {
                    STATUS_UPLOADING
                } else if image.pause {
                    STATUS_PAUSED
                } else {
                    STATUS_IDLE
                };
                uploads.push((provider.name.clone(), state));
            }
            let build_requested = self.store.build_requested(&name).await?;
            out.push(ImageStatus {
                name,
                build_state,
                uploads,
                build_requested,
            });
        }
        Ok(out)
    }

    /// Replace the configuration and providers (config reload). Work in
    /// progress finishes with the old ones; the next pass uses the new.
    pub fn reconfigure(&self, config: Arc<Config>, providers: BTreeMap<String, Arc<dyn Provider>>) {
        let providers = crate::provider::stack_all(&config, providers, &self.tasks);
        let mut guard = match self.snapshot.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Snapshot { config, providers };
    }

    /// The current configuration.
    pub fn config(&self) -> Arc<Config> {
        self.snapshot().config
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        match self.snapshot.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Run until `cancel` fires: first [`recover`](Self::recover) what a
    /// previous run left in progress, then `build_workers` build workers,
    /// the upload workers and the cleanup worker, each woken by image
    /// events and by its timer, each a task of `settings.tasks`.
    /// On cancel a running build is stopped (its record marked failed),
    /// uploads in flight are abandoned and marked failed, and locks are
    /// released.
    pub async fn run(self: &Arc<Self>, cancel: CancellationToken) {
        tokio::select! {
            _ = cancel.cancelled() => return,
            done = self.recover(self.settings.recovery_wait) => {
                if done != recover::Recovery::default() {
                    tracing::info!(
                        builds_failed = done.builds_failed.len(),
                        uploads_removed = done.uploads_removed.len(),
                        images_deleted = done.images_deleted.len(),
                        skipped = done.skipped.len(),
                        "recovered what the previous run left in progress"
                    );
                }
            }
        }
        let mut tasks = JoinSet::new();
        let registry = &self.settings.tasks;
        let build_workers = self.settings.build_workers.clamp(1, MAX_BUILD_WORKERS);
        for n in 1..=build_workers {
            // Each worker checks every image; the image's build lock
            // (exclusive within this builder too) sends the next worker on
            // to another image, as upstream's build worker threads.
            let me = Arc::clone(self);
            let c = cancel.clone();
            let worker = async move {
                let interval = me.settings.build_interval;
                me.worker_loop("build", interval, c.clone(), |b, c| async move {
                    b.build_pass(&c).await;
                })
                .instrument(tracing::info_span!("builder_worker", worker = "build", n))
                .await;
            };
            tasks.spawn(worker.in_task(registry, format!("build worker {n}")));
        }
        let me = Arc::clone(self);
        let c = cancel.clone();
        tasks.spawn(
            async move {
                let interval = me.settings.upload_interval;
                let pool = Arc::new(upload::UploadPool::new(me.settings.upload_workers));
                let drain = Arc::clone(&pool);
                me.worker_loop("upload", interval, c.clone(), move |b, c| {
                    let pool = Arc::clone(&pool);
                    async move {
                        b.upload_pass(&pool, &c).await;
                    }
                })
                .instrument(tracing::info_span!("builder_worker", worker = "upload"))
                .await;
                drain.drain().await;
            }
            .in_task(registry, "upload worker"),
        );
        let me = Arc::clone(self);
        let c = cancel.clone();
        tasks.spawn(
            async move {
                let interval = me.settings.cleanup_interval;
                me.worker_loop("cleanup", interval, c.clone(), |b, _c| async move {
                    b.cleanup_pass().await;
                })
                .instrument(tracing::info_span!("builder_worker", worker = "cleanup"))
                .await;
            }
            .in_task(registry, "builder cleanup worker"),
        );
        while let Some(result) = tasks.join_next().await {
            if let Err(e) = result {
                tracing::error!(error = %e, "builder worker ended abnormally");
            }
        }
    }

    /// Call `pass` now, then whenever an image event arrives (debounced) or
    /// `interval` passes, until `cancel` fires.
    async fn worker_loop<F, Fut>(
        self: Arc<Self>,
        name: &'static str,
        interval: Duration,
        cancel: CancellationToken,
        pass: F,
    ) where
        F: Fn(Arc<Self>, CancellationToken) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut events = self.store.watch();
        loop {
            if cancel.is_cancelled() {
                break;
            }
            crate::tasks::waiting_on(RUNNING_PASS);
            pass(Arc::clone(&self), cancel.clone()).await;
            // Wait for a reason to look again.
            crate::tasks::waiting_on(WAITING_FOR_EVENT);
            let woke = tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(interval) => false,
                woke = wait_image_event(&mut events) => woke,
            };
            if woke {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(self.settings.debounce) => {}
                }
                // Drain what arrived during the debounce.
                while events.try_recv().is_ok() {}
            }
        }
        tracing::debug!(worker = name, "builder worker stopped");
    }
}

/// Wait for an event that concerns images (or a resync); `false` if the
/// watch ended, in which case the caller relies on its timer.
async fn wait_image_event(events: &mut tokio::sync::broadcast::Receiver<StoreEvent>) -> bool {
    loop {
        match events.recv().await {
            Ok(StoreEvent::Image { .. }) | Ok(StoreEvent::Resync) => return true,
            Ok(_) => continue,
            Err(RecvError::Lagged(_)) => return true,
            Err(RecvError::Closed) => {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The formats a diskimage is built in (upstream's `image_types`): its own
/// `formats` plus the format of every provider that lists it, sorted.
pub fn image_formats(config: &Config, diskimage: &DiskImage) -> Vec<String> {
    let mut formats: Vec<String> = diskimage.formats.clone();
    for provider in &config.providers {
        for image in &provider.diskimages {
            if image.name == diskimage.name {
                formats.push(image.format.clone());
            }
        }
    }
    formats.sort();
    formats.dedup();
    formats
}

/// The cloud name of an upload: `format` with `{image_name}`,
/// `{upload_id}` and `{timestamp}` substituted (Python's `str.format` with
/// those keywords; `{{` and `}}` are literal braces).
pub fn format_image_name(
    format: &str,
    image_name: &str,
    upload_id: &str,
    timestamp: u64,
) -> String {
    let mut out = String::with_capacity(format.len() + image_name.len());
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let mut key = String::new();
                for k in chars.by_ref() {
                    if k == '}' {
                        break;
                    }
                    key.push(k);
                }
                match key.as_str() {
                    "image_name" => out.push_str(image_name),
                    "upload_id" => out.push_str(upload_id),
                    "timestamp" => out.push_str(&timestamp.to_string()),
                    other => {
                        out.push('{');
                        out.push_str(other);
                        out.push('}');
                    }
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// The upload a launcher boots for `image` on `provider`: the ready upload
/// with the newest `state_time` among `uploads`, of any build (upstream's
/// `getMostRecentImageUpload`). When the newest build's upload is deleting,
/// failed or gone, the previous build's ready upload is the answer.
pub fn newest_ready_upload<'a>(
    uploads: &'a [ImageUpload],
    image: &str,
    provider: &str,
) -> Option<&'a ImageUpload> {
    uploads
        .iter()
        .filter(|u| {
            u.image_name == image
                && u.provider_name == provider
                && u.state == Some(UploadState::Ready)
        })
        .fold(None, |best: Option<&ImageUpload>, u| match best {
            Some(b) if b.state_time.unwrap_or(0.0) >= u.state_time.unwrap_or(0.0) => Some(b),
            _ => Some(u),
        })
}

/// Read every upload of `image` from `store` and pick the one a launcher
/// boots on `provider` (see [`newest_ready_upload`]).
pub async fn newest_ready_upload_in(
    store: &dyn NodeStore,
    image: &str,
    provider: &str,
) -> crate::Result<Option<ImageUpload>> {
    let mut uploads = Vec::new();
    for build in store.list_builds(image).await? {
        uploads.extend(store.list_uploads(image, &build.id).await?);
    }
    Ok(newest_ready_upload(&uploads, image, provider).cloned())
}

/// Seconds since the epoch, as upstream's `time.time()`.
pub(crate) fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
