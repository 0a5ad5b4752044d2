//! Upload workers (upstream's `UploadWorker`): the newest ready build of
//! each diskimage goes to every provider that lists it.
//!
//! Only the builder that has the build's files uploads it. For each
//! (provider, image) pair, under [`LockTarget::ProviderUploads`] of the
//! build, a record is created `uploading`, the provider uploads the file of
//! the format it needs, and the record becomes `ready` (with the cloud's id
//! and name) or `failed`. A failed upload is tried again on a later pass
//! with a new record; the cleanup removes the failed one.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::build::newest_build;
use super::files::{local_image_files, LocalImageFile};
use super::{format_image_name, Builder, Snapshot};
use crate::config::{DiskImage, ProviderConfig, ProviderDiskImage};
use crate::model::{BuildState, ImageBuild, ImageUpload, UploadState};
use crate::provider::{ImageUploadSpec, Provider};
use crate::store::{LockOptions, LockTarget};
use crate::tasks::{during, TaskExt};
use crate::{Error, Result};

/// Image metadata key: the build id of an uploaded image.
pub const META_BUILD_ID: &str = "nodepool_build_id";
/// Image metadata key: the upload id of an uploaded image.
pub const META_UPLOAD_ID: &str = "nodepool_upload_id";

/// What an upload attempt did.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadOutcome {
    /// The image.
    pub image: String,
    /// The build uploaded.
    pub build_id: String,
    /// The provider.
    pub provider: String,
    /// The upload record's id.
    pub upload_id: String,
    /// `ready` or `failed`.
    pub state: UploadState,
}

/// Uploads in flight, bounded by the number of upload workers, at most one
/// per (provider, image).
#[derive(Debug)]
pub(crate) struct UploadPool {
    permits: Arc<Semaphore>,
    in_flight: Arc<Mutex<HashSet<(String, String)>>>,
    tasks: Mutex<JoinSet<()>>,
}

impl UploadPool {
    pub(crate) fn new(workers: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(workers.clamp(1, Semaphore::MAX_PERMITS))),
            in_flight: Arc::new(Mutex::new(HashSet::new())),
            tasks: Mutex::new(JoinSet::new()),
        }
    }

    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<(String, String)>> {
        match self.in_flight.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, JoinSet<()>> {
        match self.tasks.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Wait for every upload in flight to end.
    pub(crate) async fn drain(&self) {
        let mut tasks = std::mem::take(&mut *self.lock_tasks());
        while let Some(result) = tasks.join_next().await {
            if let Err(e) = result {
                tracing::error!(error = %e, "upload task ended abnormally");
            }
        }
    }
}

impl Builder {
    /// Start an upload task for every (provider, image) pair that is not
    /// already being handled by this builder; returns at once.
    pub(crate) async fn upload_pass(
        self: &Arc<Self>,
        pool: &UploadPool,
        cancel: &CancellationToken,
    ) {
        {
            let mut tasks = pool.lock_tasks();
            while let Some(result) = tasks.try_join_next() {
                if let Err(e) = result {
                    tracing::error!(error = %e, "upload task ended abnormally");
                }
            }
        }
        let snapshot = self.snapshot();
        for (provider_cfg, image) in upload_pairs(&snapshot) {
            let key = (provider_cfg.name.clone(), image.name.clone());
            if !pool.lock_in_flight().insert(key.clone()) {
                continue;
            }
            let me = Arc::clone(self);
            let snapshot = snapshot.clone();
            let cancel = cancel.clone();
            let permits = Arc::clone(&pool.permits);
            let in_flight = Arc::clone(&pool.in_flight);
            let span = tracing::info_span!("image_upload", provider = %key.0, image = %key.1);
            let task = format!("upload of image {} to {}", key.1, key.0);
            let registry = self.settings.tasks.clone();
            pool.lock_tasks().spawn(
                async move {
                    crate::tasks::waiting_on("a free upload worker");
                    if let Ok(_permit) = permits.acquire_owned().await {
                        crate::tasks::waiting_on(crate::tasks::RUNNING);
                        if !cancel.is_cancelled() {
                            if let Err(e) = me
                                .upload_one(&snapshot, &provider_cfg, &image, &cancel)
                                .await
                            {
                                tracing::error!(error = %e, "upload check failed");
                            }
                        }
                    }
                    match in_flight.lock() {
                        Ok(mut g) => g.remove(&key),
                        Err(p) => p.into_inner().remove(&key),
                    };
                }
                .instrument(span)
                .in_task(&registry, task),
            );
        }
    }

    /// Check every (provider, image) pair once and upload where needed, one
    /// after the other; returns the uploads attempted. (The daemon uses
    /// parallel upload workers; this is the same work, sequential.)
    pub async fn upload_all(&self, cancel: &CancellationToken) -> Vec<UploadOutcome> {
        let snapshot = self.snapshot();
        let mut out = Vec::new();
        for (provider_cfg, image) in upload_pairs(&snapshot) {
            let span = tracing::info_span!("image_upload", provider = %provider_cfg.name, image = %image.name);
            match self
                .upload_one(&snapshot, &provider_cfg, &image, cancel)
                .instrument(span)
                .await
            {
                Ok(Some(o)) => out.push(o),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(provider = %provider_cfg.name, image = %image.name, error = %e, "upload check failed")
                }
            }
        }
        out
    }

    /// Upstream's `_checkProviderImageUpload` for one pair.
    async fn upload_one(
        &self,
        snapshot: &Snapshot,
        provider_cfg: &ProviderConfig,
        image: &ProviderDiskImage,
        cancel: &CancellationToken,
    ) -> Result<Option<UploadOutcome>> {
        let Some(provider) = snapshot.providers.get(&provider_cfg.name) else {
            return Ok(None);
        };
        if !provider.capabilities().image_upload || image.pause {
            return Ok(None);
        }
        let Some(images_dir) = snapshot.config.images_dir.as_deref() else {
            return Ok(None);
        };
        let builds = self.store.list_builds(&image.name).await?;
        let Some(build) = newest_build(&builds, BuildState::Ready).cloned() else {
            return Ok(None);
        };
        let files = local_image_files(images_dir, &image.name, &build.id)
            .map_err(|e| Error::io(format!("list {}", images_dir.display()), e))?;
        if files.is_empty() {
            // Built on another host: that builder uploads it.
            return Ok(None);
        }
        if self
            .has_ready_upload(&image.name, &build.id, &provider_cfg.name)
            .await?
        {
            return Ok(None);
        }
        if !build.formats.contains(&image.format) {
            return Ok(None);
        }
        let target = LockTarget::ProviderUploads {
            image: image.name.clone(),
            build: build.id.clone(),
            provider: provider_cfg.name.clone(),
        };
        let options = LockOptions {
            identifier: Some(self.settings.hostname.clone()),
            ..LockOptions::try_once()
        };
        let lock = match during(
            format!("lock {}", target.path()),
            self.store.lock(&target, &options),
        )
        .await
        {
            Ok(lock) => lock,
            Err(Error::LockHeld { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let result = self
            .upload_locked(
                snapshot,
                provider.as_ref(),
                provider_cfg,
                image,
                &build,
                &files,
                cancel,
            )
            .await;
        if let Err(e) = self.store.unlock(&lock).await {
            tracing::warn!(error = %e, "releasing the upload lock failed");
        }
        result
    }

    /// Whether the build needs no upload to `provider`: one is ready, or
    /// waits for its validation, or was rejected by one (a build that
    /// failed its validation is not uploaded again).
    async fn has_ready_upload(&self, image: &str, build_id: &str, provider: &str) -> Result<bool> {
        Ok(self
            .store
            .list_uploads(image, build_id)
            .await?
            .iter()
            .any(|u| {
                u.provider_name == provider
                    && (matches!(u.state, Some(UploadState::Ready | UploadState::Testing))
                        || u.failed_validation())
            }))
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_locked(
        &self,
        snapshot: &Snapshot,
        provider: &dyn Provider,
        provider_cfg: &ProviderConfig,
        image: &ProviderDiskImage,
        build: &ImageBuild,
        files: &[LocalImageFile],
        cancel: &CancellationToken,
    ) -> Result<Option<UploadOutcome>> {
        if self
            .has_ready_upload(&image.name, &build.id, &provider_cfg.name)
            .await?
        {
            return Ok(None);
        }
        // A cleanup may be deleting this build.
        match self.store.get_build(&image.name, &build.id).await? {
            Some(b) if b.state != Some(BuildState::Deleting) => {}
            _ => return Ok(None),
        }
        let mut record = ImageUpload::new(
            image.name.clone(),
            build.id.clone(),
            provider_cfg.name.clone(),
            UploadState::Uploading,
        );
        record.username = build.username.clone();
        record.python_path = build.python_path.clone();
        record.shell_type = build.shell_type.clone();
        let upload_id = self
            .store
            .create_upload(&image.name, &build.id, &provider_cfg.name, &record)
            .await?;

        let started = std::time::Instant::now();
        let _busy = self.stats.busy(&image.name, Some(&provider_cfg.name));
        let attempt = self.do_upload(
            snapshot,
            provider,
            provider_cfg,
            image,
            build,
            &upload_id,
            files,
        );
        let uploaded = tokio::select! {
            r = attempt => r,
            _ = cancel.cancelled() => Err(Error::cancelled("the upload (the builder is stopping)")),
        };
        let mut result = ImageUpload::new(
            image.name.clone(),
            build.id.clone(),
            provider_cfg.name.clone(),
            UploadState::Failed,
        );
        result.id = upload_id.clone();
        match uploaded {
            Ok((external_id, external_name, format)) => {
                tracing::info!(build = %build.id, %external_id, "image upload is ready");
                self.stats
                    .upload_ready(&image.name, &provider_cfg.name, started.elapsed());
                // A diskimage with `validation` serves nodes only once a
                // launcher validated the upload.
                let validated = snapshot
                    .config
                    .diskimage(&image.name)
                    .is_some_and(|d| d.validation.is_some());
                if validated {
                    tracing::info!(build = %build.id, "the upload waits for its validation");
                    result.set_state(UploadState::Testing);
                } else {
                    result.set_state(UploadState::Ready);
                }
                result.external_id = Some(external_id);
                result.external_name = Some(external_name);
                result.format = Some(format);
                result.username = build.username.clone();
                result.python_path = build.python_path.clone();
                result.shell_type = build.shell_type.clone();
            }
            Err(e) => {
                tracing::error!(build = %build.id, error = %e, "image upload failed");
            }
        }
        self.store.update_upload(&result).await?;
        Ok(Some(UploadOutcome {
            image: image.name.clone(),
            build_id: build.id.clone(),
            provider: provider_cfg.name.clone(),
            upload_id,
            state: result.state.unwrap_or(UploadState::Failed),
        }))
    }

    /// Upstream's `_uploadImage`: returns the cloud's id, name and the
    /// format uploaded.
    #[allow(clippy::too_many_arguments)]
    async fn do_upload(
        &self,
        snapshot: &Snapshot,
        provider: &dyn Provider,
        provider_cfg: &ProviderConfig,
        image: &ProviderDiskImage,
        build: &ImageBuild,
        upload_id: &str,
        files: &[LocalImageFile],
    ) -> Result<(String, String, String)> {
        let Some(file) = files.iter().find(|f| f.format == image.format) else {
            return Err(Error::NotFound {
                kind: "image file to upload",
                id: format!("of type {} for build {}", image.format, build.id),
            });
        };
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let external_name = format_image_name(
            self.settings.image_name_format(&provider_cfg.name),
            &image.name,
            upload_id,
            timestamp,
        );
        let metadata = upload_metadata(
            snapshot.config.diskimage(&image.name),
            image,
            &build.id,
            upload_id,
        );
        let spec = ImageUploadSpec {
            diskimage: image.name.clone(),
            build_id: build.id.clone(),
            upload_id: upload_id.to_string(),
            external_name: external_name.clone(),
            path: file.path.clone(),
            format: file.format.clone(),
            metadata,
        };
        tracing::info!(build = %build.id, path = %file.path.display(), "uploading image");
        let external_id = during(
            format!(
                "provider upload_image {} build {} upload {upload_id}",
                provider_cfg.name, build.id
            ),
            provider.upload_image(&spec),
        )
        .await?;
        if let Some(hook) = &provider_cfg.post_upload_hook {
            let ran = run_post_upload_hook(hook, &provider_cfg.name, &external_id, &file.path);
            if let Err(e) = ran.await {
                // As upstream: the upload fails and the image goes.
                if let Err(d) = provider.delete_image(&external_id).await {
                    tracing::warn!(%external_id, error = %d, "cannot delete the image whose post-upload hook failed");
                }
                return Err(e);
            }
        }
        Ok((external_id, external_name, file.format.clone()))
    }
}

/// Run upstream's `post-upload-hook`: `HOOK PROVIDER EXTERNAL_ID FILE`,
/// with the builder's environment. A non-zero exit fails the upload; its
/// output is logged either way.
async fn run_post_upload_hook(
    hook: &str,
    provider: &str,
    external_id: &str,
    file: &std::path::Path,
) -> Result<()> {
    tracing::info!(%hook, %provider, %external_id, file = %file.display(), "running the post-upload hook");
    let output = tokio::process::Command::new(hook)
        .arg(provider)
        .arg(external_id)
        .arg(file)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| Error::io(format!("run the post-upload hook {hook}"), e))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        tracing::info!(%hook, %stdout, %stderr, "post-upload hook succeeded");
        return Ok(());
    }
    tracing::error!(%hook, status = %output.status, %stdout, %stderr, "post-upload hook failed");
    Err(Error::Backend {
        backend: "post-upload-hook",
        kind: crate::ErrorKind::Permanent,
        message: format!("post-upload hook {hook} failed ({})", output.status),
        source: None,
    })
}

/// The metadata set on an uploaded image: the diskimage's `metadata`
/// (non-string values as JSON text), the provider image's `meta`, then
/// `nodepool_build_id` and `nodepool_upload_id`.
pub fn upload_metadata(
    diskimage: Option<&DiskImage>,
    image: &ProviderDiskImage,
    build_id: &str,
    upload_id: &str,
) -> BTreeMap<String, String> {
    let mut meta = BTreeMap::new();
    if let Some(d) = diskimage {
        for (k, v) in &d.metadata {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            meta.insert(k.clone(), text);
        }
    }
    meta.extend(image.meta.iter().map(|(k, v)| (k.clone(), v.clone())));
    meta.insert(META_BUILD_ID.to_string(), build_id.to_string());
    meta.insert(META_UPLOAD_ID.to_string(), upload_id.to_string());
    meta
}

/// Every (provider, diskimage entry) of the config, in config order.
fn upload_pairs(snapshot: &Snapshot) -> Vec<(ProviderConfig, ProviderDiskImage)> {
    snapshot
        .config
        .providers
        .iter()
        .flat_map(|p| p.diskimages.iter().map(move |d| (p.clone(), d.clone())))
        .collect()
}
