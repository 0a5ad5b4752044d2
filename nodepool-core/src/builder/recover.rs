//! What a builder does first when it starts: finish what its previous run
//! left half done when it died without cleaning up (SIGKILL, the OOM
//! killer, a power cut).
//!
//! - A build `building` under this builder's id was interrupted: nothing
//!   else builds under that id. Under the image's build lock (waited for:
//!   the dead run's ZooKeeper session may hold it until it expires) its
//!   files are removed and it is marked `failed`; the cleanup worker then
//!   removes the record. Its diskimage-builder process must be stopped
//!   before (the daemon does it, `nodepool_dib::stop_orphaned_builds`),
//!   or it writes files again.
//! - An upload `uploading` of a build whose files are in this builder's
//!   `images-dir` was this builder's (only the builder with the files
//!   uploads): under the upload lock, the images the provider holds for it
//!   (tagged `nodepool_provider_name`, `nodepool_build_id`,
//!   `nodepool_upload_id`) are deleted, then the record. The upload worker
//!   uploads again.
//!
//! Without this, upstream's cleanup gets there too, but later: a
//! `building` record is removed once its lock is free, the orphaned dib
//! process keeps writing files that the next cleanup pass removes again,
//! and the image of an interrupted upload stays in the cloud.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::files::{delete_local_build, local_image_files};
use super::upload::{META_BUILD_ID, META_UPLOAD_ID};
use super::Builder;
use crate::model::{BuildState, ImageBuild, ImageUpload, UploadState};
use crate::provider::META_PROVIDER;
use crate::store::{LockHandle, LockOptions, LockTarget};
use crate::{Error, Result};

/// What [`Builder::recover`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// `(image, build)` of the interrupted builds marked `failed`.
    pub builds_failed: Vec<(String, String)>,
    /// `(image, build, provider, upload)` of the interrupted uploads
    /// removed.
    pub uploads_removed: Vec<(String, String, String, String)>,
    /// `(provider, image id)` of the cloud images of those uploads deleted.
    pub images_deleted: Vec<(String, String)>,
    /// What was left to the cleanup worker, and why.
    pub skipped: Vec<String>,
}

impl Builder {
    /// Deal with the builds and uploads a previous run of this builder
    /// left in progress (see the module documentation). Locks are waited
    /// for until `wait` has passed in all; what is still locked then is
    /// skipped. Errors are logged and skipped.
    pub async fn recover(&self, wait: Duration) -> Recovery {
        let deadline = Instant::now() + wait;
        let mut done = Recovery::default();
        let images = match self.store.list_images().await {
            Ok(images) => images,
            Err(e) => {
                done.skipped.push(format!("cannot list images: {e}"));
                return done;
            }
        };
        for image in images {
            let builds = match self.store.list_builds(&image).await {
                Ok(b) => b,
                Err(e) => {
                    done.skipped
                        .push(format!("cannot list builds of {image}: {e}"));
                    continue;
                }
            };
            if let Err(e) = self
                .recover_builds(&image, &builds, deadline, &mut done)
                .await
            {
                done.skipped.push(format!("builds of {image}: {e}"));
            }
            for build in &builds {
                if let Err(e) = self
                    .recover_uploads(&image, build, deadline, &mut done)
                    .await
                {
                    done.skipped
                        .push(format!("uploads of build {image}-{}: {e}", build.id));
                }
            }
        }
        for why in &done.skipped {
            tracing::warn!(reason = %why, "left to the cleanup worker");
        }
        done
    }

    fn is_ours_building(&self, build: &ImageBuild) -> bool {
        build.state == Some(BuildState::Building)
            && build.builder_id.as_deref() == Some(self.settings.builder_id.as_str())
    }

    async fn recover_builds(
        &self,
        image: &str,
        builds: &[ImageBuild],
        deadline: Instant,
        done: &mut Recovery,
    ) -> Result<()> {
        if !builds.iter().any(|b| self.is_ours_building(b)) {
            return Ok(());
        }
        let lock = self
            .lock_until(&LockTarget::ImageBuilds(image.to_string()), deadline)
            .await?;
        let result = async {
            let images_dir = self.snapshot().config.images_dir.clone();
            for build in self.store.list_builds(image).await? {
                if !self.is_ours_building(&build) {
                    continue;
                }
                tracing::warn!(%image, build = %build.id, "failing a build interrupted by a crash");
                if let Some(dir) = &images_dir {
                    delete_local_build(dir, image, &build.id).map_err(|e| {
                        Error::io(format!("remove the files of build {}", build.id), e)
                    })?;
                }
                let mut failed = build.clone();
                failed.set_state(BuildState::Failed);
                self.store.update_build(image, &failed).await?;
                done.builds_failed
                    .push((image.to_string(), build.id.clone()));
            }
            Ok(())
        }
        .await;
        let _ = self.store.unlock(&lock).await;
        result
    }

    async fn recover_uploads(
        &self,
        image: &str,
        build: &ImageBuild,
        deadline: Instant,
        done: &mut Recovery,
    ) -> Result<()> {
        let Some(images_dir) = self.snapshot().config.images_dir.clone() else {
            return Ok(());
        };
        let uploads = self.store.list_uploads(image, &build.id).await?;
        let mut stale: BTreeMap<String, Vec<ImageUpload>> = BTreeMap::new();
        for u in uploads
            .into_iter()
            .filter(|u| u.state == Some(UploadState::Uploading))
        {
            stale.entry(u.provider_name.clone()).or_default().push(u);
        }
        if stale.is_empty() {
            return Ok(());
        }
        let files = local_image_files(&images_dir, image, &build.id)
            .map_err(|e| Error::io(format!("list {}", images_dir.display()), e))?;
        if files.is_empty() {
            // Another builder's build: that builder recovers its uploads.
            return Ok(());
        }
        for (provider, uploads) in stale {
            let target = LockTarget::ProviderUploads {
                image: image.to_string(),
                build: build.id.clone(),
                provider: provider.clone(),
            };
            let lock = match self.lock_until(&target, deadline).await {
                Ok(lock) => lock,
                Err(e) => {
                    done.skipped.push(format!(
                        "uploads of build {image}-{} to {provider}: {e}",
                        build.id
                    ));
                    continue;
                }
            };
            let result = self
                .remove_interrupted(image, &build.id, &provider, &uploads, done)
                .await;
            let _ = self.store.unlock(&lock).await;
            if let Err(e) = result {
                done.skipped.push(format!(
                    "uploads of build {image}-{} to {provider}: {e}",
                    build.id
                ));
            }
        }
        Ok(())
    }

    /// Under the provider upload lock: delete the cloud images of the
    /// uploads still `uploading`, then their records.
    async fn remove_interrupted(
        &self,
        image: &str,
        build_id: &str,
        provider_name: &str,
        uploads: &[ImageUpload],
        done: &mut Recovery,
    ) -> Result<()> {
        let current = self.store.list_uploads(image, build_id).await?;
        let provider = self.snapshot().providers.get(provider_name).cloned();
        let cloud = match &provider {
            Some(p) if p.capabilities().image_upload => p.list_images().await?,
            _ => Vec::new(),
        };
        for u in uploads {
            let still = current.iter().any(|c| {
                c.provider_name == u.provider_name
                    && c.id == u.id
                    && c.state == Some(UploadState::Uploading)
            });
            if !still {
                continue;
            }
            tracing::warn!(%image, build = %build_id, provider = %provider_name, upload = %u.id, "removing an upload interrupted by a crash");
            let tagged = cloud.iter().filter(|i| {
                i.metadata.get(META_PROVIDER).map(String::as_str) == Some(provider_name)
                    && i.metadata.get(META_BUILD_ID).map(String::as_str) == Some(build_id)
                    && i.metadata.get(META_UPLOAD_ID).map(String::as_str) == Some(u.id.as_str())
            });
            if let Some(p) = &provider {
                for i in tagged {
                    tracing::info!(provider = %provider_name, external_id = %i.external_id, "deleting the image of an interrupted upload");
                    p.delete_image(&i.external_id).await?;
                    done.images_deleted
                        .push((provider_name.to_string(), i.external_id.clone()));
                }
            }
            self.store
                .delete_upload(image, build_id, provider_name, &u.id)
                .await?;
            done.uploads_removed.push((
                image.to_string(),
                build_id.to_string(),
                provider_name.to_string(),
                u.id.clone(),
            ));
        }
        Ok(())
    }

    /// Take `target`, waiting until `deadline` at most.
    async fn lock_until(&self, target: &LockTarget, deadline: Instant) -> Result<LockHandle> {
        let left = deadline.saturating_duration_since(Instant::now());
        let options = LockOptions {
            identifier: Some(self.settings.hostname.clone()),
            ..LockOptions::wait(left.max(Duration::from_millis(1)))
        };
        self.store.lock(target, &options).await
    }
}
