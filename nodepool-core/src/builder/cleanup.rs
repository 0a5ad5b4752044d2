//! The cleanup worker (upstream's `CleanupWorker`).
//!
//! For every image in the store:
//! - the two newest ready builds are kept (none when the diskimage left the
//!   config); of those, stale `uploading` records (no upload lock held),
//!   `failed` and `deleting` uploads are removed (not an upload a
//!   validation rejected: that one stays while its build is kept);
//! - uploads to a provider that no longer lists the image are deleted,
//!   whatever the build's state;
//! - every other build that is not being built is deleted: its uploads
//!   except the two most recent per provider are deleted in the cloud and
//!   in the store; once none remain, or all are `deleting`, the build is
//!   marked `deleting`, and once none remain its record is removed;
//! - a `building` record whose image build lock is free (its builder died)
//!   is deleted the same way, so a half build never becomes ready.
//!
//! Then leaked images: images a provider holds for uploads that have no
//! record, deleted when two passes in a row find them (see `leaked.rs`).
//!
//! Then local files: builds in `images-dir` whose record is gone or
//! `deleting` are removed; formats of ready builds are pruned when the
//! diskimage has `delete-after-upload`.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use super::files::{delete_local_build, local_builds, local_image_files, remove_image_file};
use super::Builder;
use crate::config::Config;
use crate::model::{BuildState, ImageBuild, ImageUpload, UploadState};
use crate::store::{LockOptions, LockTarget};
use crate::{Error, Result};

/// `(build id, upload id)` pairs of the two most recent ready uploads of
/// each (image, provider).
type RecencyTable = BTreeMap<(String, String), Vec<(String, String)>>;

/// Ready uploads per (image, provider): `(build id, upload id, state time)`.
type ReadyUploads = BTreeMap<(String, String), Vec<(String, String, f64)>>;

fn by_time_desc<T>(items: &mut [T], time: impl Fn(&T) -> f64) {
    items.sort_by(|a, b| time(b).total_cmp(&time(a)));
}

/// The builds to keep: the two newest ready ones.
pub fn builds_to_keep(builds: &[ImageBuild]) -> HashSet<String> {
    let mut ready: Vec<&ImageBuild> = builds
        .iter()
        .filter(|b| b.state == Some(BuildState::Ready))
        .collect();
    by_time_desc(&mut ready, |b| b.state_time.unwrap_or(0.0));
    ready.into_iter().take(2).map(|b| b.id.clone()).collect()
}

impl Builder {
    /// One cleanup pass over the store, the providers and `images-dir`.
    /// Errors are logged and the pass goes on with the next item.
    pub async fn cleanup_pass(&self) {
        let config = self.snapshot().config;
        let images = match self.store.list_images().await {
            Ok(images) => images,
            Err(e) => {
                tracing::error!(error = %e, "cleanup cannot list images");
                return;
            }
        };
        let table = match self.recency_table(&images).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cleanup cannot read uploads");
                return;
            }
        };
        for image in &images {
            if let Err(e) = self.cleanup_image(&config, &table, image).await {
                tracing::error!(%image, error = %e, "cleaning up image failed");
            }
        }
        self.cleanup_leaked_images(&config).await;
        if let Some(dir) = config.images_dir.as_deref() {
            if let Err(e) = self.cleanup_local(&config, dir).await {
                tracing::error!(error = %e, "cleaning up local builds failed");
            }
        }
    }

    async fn recency_table(&self, images: &[String]) -> Result<RecencyTable> {
        let mut table = ReadyUploads::new();
        for image in images {
            for build in self.store.list_builds(image).await? {
                if build.state != Some(BuildState::Ready) {
                    continue;
                }
                let mut by_provider: BTreeMap<String, Vec<ImageUpload>> = BTreeMap::new();
                for u in self.store.list_uploads(image, &build.id).await? {
                    if u.state == Some(UploadState::Ready) {
                        by_provider
                            .entry(u.provider_name.clone())
                            .or_default()
                            .push(u);
                    }
                }
                for (provider, mut uploads) in by_provider {
                    by_time_desc(&mut uploads, |u| u.state_time.unwrap_or(0.0));
                    let entry = table.entry((image.clone(), provider)).or_default();
                    for u in uploads.into_iter().take(2) {
                        entry.push((build.id.clone(), u.id.clone(), u.state_time.unwrap_or(0.0)));
                    }
                }
            }
        }
        Ok(table
            .into_iter()
            .map(|(k, mut v)| {
                by_time_desc(&mut v, |x| x.2);
                (k, v.into_iter().take(2).map(|(b, u, _)| (b, u)).collect())
            })
            .collect())
    }

    async fn cleanup_image(
        &self,
        config: &Config,
        table: &RecencyTable,
        image: &str,
    ) -> Result<()> {
        let builds = self.store.list_builds(image).await?;
        let keep = if config.diskimage(image).is_some() {
            builds_to_keep(&builds)
        } else {
            // The diskimage left the config: delete everything.
            HashSet::new()
        };
        let managing: Vec<_> = config
            .providers
            .iter()
            .filter(|p| {
                self.snapshot()
                    .providers
                    .get(&p.name)
                    .is_some_and(|prov| prov.capabilities().image_upload)
            })
            .collect();
        for build in &builds {
            for provider in &managing {
                let result = async {
                    if !provider.diskimages.iter().any(|d| d.name == image) {
                        let uploads = self.store.list_uploads(image, &build.id).await?;
                        for u in uploads.iter().filter(|u| u.provider_name == provider.name) {
                            tracing::debug!(%image, build = %build.id, upload = %u.id, provider = %provider.name, "deleting obsolete image upload");
                            self.delete_upload(u).await?;
                        }
                    }
                    if keep.contains(&build.id) {
                        let uploads = self.store.list_uploads(image, &build.id).await?;
                        self.cleanup_current_uploads(&uploads, &provider.name).await?;
                    }
                    Ok::<(), Error>(())
                }
                .await;
                if let Err(e) = result {
                    tracing::error!(%image, build = %build.id, provider = %provider.name, error = %e, "cleaning up uploads failed");
                }
            }

            if build.state != Some(BuildState::Deleting)
                && (keep.contains(&build.id) || self.build_in_progress(build, image).await?)
            {
                continue;
            }

            let uploads = self.store.list_uploads(image, &build.id).await?;
            for provider in &managing {
                let recent = table.get(&(image.to_string(), provider.name.clone()));
                for u in uploads.iter().filter(|u| u.provider_name == provider.name) {
                    let is_recent = recent
                        .is_some_and(|r| r.iter().any(|(b, id)| *b == build.id && *id == u.id));
                    if !is_recent {
                        tracing::debug!(%image, build = %build.id, upload = %u.id, "deleting non-recent image upload");
                        if let Err(e) = self.delete_upload(u).await {
                            tracing::error!(provider = %provider.name, error = %e, "deleting upload failed");
                        }
                    }
                }
            }

            let remaining = self.store.list_uploads(image, &build.id).await?;
            let all_deleting = remaining
                .iter()
                .all(|u| u.state == Some(UploadState::Deleting));
            if all_deleting && build.state != Some(BuildState::Deleting) {
                let target = LockTarget::Build {
                    image: image.to_string(),
                    build: build.id.clone(),
                };
                match self.store.lock(&target, &LockOptions::try_once()).await {
                    Ok(lock) => {
                        let mut b = build.clone();
                        b.set_state(BuildState::Deleting);
                        let stored = self.store.update_build(image, &b).await;
                        let _ = self.store.unlock(&lock).await;
                        stored?;
                    }
                    Err(Error::LockHeld { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
            if remaining.is_empty() {
                tracing::info!(%image, build = %build.id, "deleting build record");
                self.store.delete_build(image, &build.id).await?;
            }
        }
        Ok(())
    }

    /// Upstream's `_inProgressBuild`: a `building` record counts as in
    /// progress while the image build lock is held, or if it changed state
    /// meanwhile (it is checked again next pass).
    async fn build_in_progress(&self, build: &ImageBuild, image: &str) -> Result<bool> {
        if build.state != Some(BuildState::Building) {
            return Ok(false);
        }
        let target = LockTarget::ImageBuilds(image.to_string());
        match self.store.lock(&target, &LockOptions::try_once()).await {
            Ok(lock) => {
                let now = self.store.get_build(image, &build.id).await;
                let _ = self.store.unlock(&lock).await;
                match now? {
                    Some(b) if b.state != Some(BuildState::Building) => Ok(true),
                    _ => {
                        tracing::info!(%image, build = %build.id, "found a build whose builder is gone");
                        Ok(false)
                    }
                }
            }
            Err(Error::LockHeld { .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Upstream's `_inProgressUpload`: `uploading` and the provider upload
    /// lock of its build is held.
    async fn upload_in_progress(&self, upload: &ImageUpload) -> Result<bool> {
        if upload.state != Some(UploadState::Uploading) {
            return Ok(false);
        }
        let target = LockTarget::ProviderUploads {
            image: upload.image_name.clone(),
            build: upload.build_id.clone(),
            provider: upload.provider_name.clone(),
        };
        match self.store.lock(&target, &LockOptions::try_once()).await {
            Ok(lock) => {
                let _ = self.store.unlock(&lock).await;
                Ok(false)
            }
            Err(Error::LockHeld { .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Upstream's `_cleanupCurrentProviderUploads` for one provider.
    async fn cleanup_current_uploads(&self, uploads: &[ImageUpload], provider: &str) -> Result<()> {
        for u in uploads.iter().filter(|u| u.provider_name == provider) {
            match u.state {
                Some(UploadState::Uploading) => {
                    if self.upload_in_progress(u).await? {
                        continue;
                    }
                    // The record may have changed since it was listed.
                    let current = self
                        .store
                        .list_uploads(&u.image_name, &u.build_id)
                        .await?
                        .into_iter()
                        .find(|x| x.provider_name == u.provider_name && x.id == u.id);
                    if current.is_some_and(|c| c.state == u.state) {
                        tracing::debug!(upload = %u.id, "removing failed upload record");
                        self.store
                            .delete_upload(&u.image_name, &u.build_id, &u.provider_name, &u.id)
                            .await?;
                    }
                }
                // A validation's rejection is kept while its build is
                // current, so that the build is not uploaded again.
                Some(UploadState::Failed) if u.failed_validation() => {}
                Some(UploadState::Deleting) | Some(UploadState::Failed) => {
                    self.delete_upload(u).await?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Upstream's `_deleteUpload`: mark it `deleting` under its upload lock,
    /// delete the image in the cloud, then remove the record.
    async fn delete_upload(&self, upload: &ImageUpload) -> Result<()> {
        let target = LockTarget::Upload {
            image: upload.image_name.clone(),
            build: upload.build_id.clone(),
            provider: upload.provider_name.clone(),
            upload: upload.id.clone(),
        };
        let mut upload = upload.clone();
        if upload.state != Some(UploadState::Deleting) {
            if self.upload_in_progress(&upload).await? {
                return Ok(());
            }
            match self.store.lock(&target, &LockOptions::try_once()).await {
                Ok(lock) => {
                    upload.set_state(UploadState::Deleting);
                    let stored = self.store.update_upload(&upload).await;
                    let _ = self.store.unlock(&lock).await;
                    stored?;
                }
                Err(Error::LockHeld { .. }) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        let Some(provider) = self
            .snapshot()
            .providers
            .get(&upload.provider_name)
            .cloned()
        else {
            tracing::warn!(provider = %upload.provider_name, "cannot delete an upload of an unknown provider");
            return Ok(());
        };
        if let Some(external_id) = &upload.external_id {
            tracing::info!(image = %upload.image_name, build = %upload.build_id, provider = %upload.provider_name, %external_id, "deleting image upload from provider");
            if let Err(e) = provider.delete_image(external_id).await {
                tracing::error!(provider = %upload.provider_name, error = %e, "unable to delete image");
                return Ok(());
            }
        }
        match self.store.lock(&target, &LockOptions::try_once()).await {
            Ok(lock) => {
                let deleted = self
                    .store
                    .delete_upload(
                        &upload.image_name,
                        &upload.build_id,
                        &upload.provider_name,
                        &upload.id,
                    )
                    .await;
                // Deleting the record deletes its lock; a lost handle is fine.
                let _ = self.store.unlock(&lock).await;
                deleted
            }
            Err(Error::LockHeld { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn cleanup_local(&self, config: &Config, images_dir: &Path) -> Result<()> {
        let local = local_builds(images_dir)
            .map_err(|e| Error::io(format!("scan {}", images_dir.display()), e))?;
        for (image, build_id) in local {
            let build = match self.store.get_build(&image, &build_id).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(%image, build = %build_id, error = %e, "cannot read build");
                    continue;
                }
            };
            let state = build.as_ref().and_then(|b| b.state);
            if build.is_none() || state == Some(BuildState::Deleting) {
                tracing::info!(%image, build = %build_id, "deleting on-disk build");
                if let Err(e) = delete_local_build(images_dir, &image, &build_id) {
                    tracing::error!(%image, build = %build_id, error = %e, "deleting on-disk build failed");
                }
            } else if state == Some(BuildState::Ready) {
                if let Err(e) = self
                    .prune_local_formats(config, images_dir, &image, &build_id)
                    .await
                {
                    tracing::error!(%image, build = %build_id, error = %e, "pruning local formats failed");
                }
            }
        }
        Ok(())
    }

    /// Upstream's `_pruneLocalBuildFormats`: with `delete-after-upload`,
    /// remove each format that every provider using it has uploaded and
    /// that `keep-formats` does not keep.
    async fn prune_local_formats(
        &self,
        config: &Config,
        images_dir: &Path,
        image: &str,
        build_id: &str,
    ) -> Result<()> {
        let Some(diskimage) = config.diskimage(image) else {
            return Ok(());
        };
        if !diskimage.delete_after_upload {
            return Ok(());
        }
        let mut keep: HashSet<String> = diskimage.keep_formats.iter().cloned().collect();
        let uploads = self.store.list_uploads(image, build_id).await?;
        let providers = self.snapshot().providers;
        for p in &config.providers {
            if !providers
                .get(&p.name)
                .is_some_and(|x| x.capabilities().image_upload)
            {
                continue;
            }
            let Some(entry) = p.diskimages.iter().find(|d| d.name == image) else {
                continue;
            };
            let uploaded = uploads.iter().any(|u| {
                u.provider_name == p.name
                    && matches!(u.state, Some(UploadState::Ready | UploadState::Testing))
            });
            if !uploaded {
                keep.insert(entry.format.clone());
            }
        }
        let files = local_image_files(images_dir, image, build_id)
            .map_err(|e| Error::io(format!("list {}", images_dir.display()), e))?;
        for f in files.iter().filter(|f| !keep.contains(&f.format)) {
            remove_image_file(f)
                .map_err(|e| Error::io(format!("remove {}", f.path.display()), e))?;
        }
        Ok(())
    }
}
