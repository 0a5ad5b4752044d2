//! Leaked cloud images: images a provider holds, tagged with its name
//! (`nodepool_provider_name`) and an upload (`nodepool_build_id`,
//! `nodepool_upload_id`), whose upload has no record. An upload killed
//! between creating its image and recording the result leaves one when
//! its record is then removed as stale; so does a record deleted by hand.
//!
//! Upstream's launchers delete such images for the drivers that list them
//! (`cleanupLeakedResources`, not the OpenStack one); here the cleanup
//! worker does it for every provider that uploads images, as upstream's
//! launcher does: an image is deleted when two passes in a row find it
//! without a record. The cloud is listed before the store is read, and an
//! upload's record is written before its image is created, so an image
//! listed without a record is being deleted or leaked.

use std::collections::HashSet;

use super::upload::{META_BUILD_ID, META_UPLOAD_ID};
use super::Builder;
use crate::config::Config;
use crate::provider::META_PROVIDER;
use crate::{Error, Result};

impl Builder {
    /// Delete the images of `config`'s uploading providers that two passes
    /// in a row found without an upload record. Errors are logged.
    pub(crate) async fn cleanup_leaked_images(&self, config: &Config) {
        let providers = self.snapshot().providers;
        let previous = std::mem::take(&mut *self.leak_suspects());
        let mut suspects = HashSet::new();
        for p in &config.providers {
            let Some(provider) = providers.get(&p.name) else {
                continue;
            };
            if !provider.capabilities().image_upload {
                continue;
            }
            let images = match provider.list_images().await {
                Ok(images) => images,
                Err(Error::Unsupported { .. }) => continue,
                Err(e) => {
                    tracing::error!(provider = %p.name, error = %e, "cannot list images to find leaked ones");
                    continue;
                }
            };
            let tagged: Vec<_> = images
                .into_iter()
                .filter_map(|i| {
                    if i.metadata.get(META_PROVIDER) != Some(&p.name) {
                        return None;
                    }
                    let build = i.metadata.get(META_BUILD_ID)?.clone();
                    let upload = i.metadata.get(META_UPLOAD_ID)?.clone();
                    Some((i.external_id, build, upload))
                })
                .collect();
            if tagged.is_empty() {
                continue;
            }
            let known = match self.known_uploads(&p.name).await {
                Ok(k) => k,
                Err(e) => {
                    tracing::error!(provider = %p.name, error = %e, "cannot read uploads to find leaked images");
                    continue;
                }
            };
            for (external_id, build, upload) in tagged {
                if known.contains(&(build.clone(), upload.clone())) {
                    continue;
                }
                let key = (p.name.clone(), external_id.clone());
                if !previous.contains(&key) {
                    suspects.insert(key);
                    continue;
                }
                tracing::warn!(provider = %p.name, %external_id, %build, %upload, "deleting leaked image");
                if let Err(e) = provider.delete_image(&external_id).await {
                    tracing::error!(provider = %p.name, %external_id, error = %e, "unable to delete leaked image");
                    suspects.insert(key);
                }
            }
        }
        *self.leak_suspects() = suspects;
    }

    fn leak_suspects(&self) -> std::sync::MutexGuard<'_, HashSet<(String, String)>> {
        match self.possibly_leaked.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// `(build id, upload id)` of every upload record of `provider`, of
    /// every image and build.
    async fn known_uploads(&self, provider: &str) -> Result<HashSet<(String, String)>> {
        let mut known = HashSet::new();
        for image in self.store.list_images().await? {
            for build in self.store.list_builds(&image).await? {
                for u in self.store.list_uploads(&image, &build.id).await? {
                    if u.provider_name == provider {
                        known.insert((build.id.clone(), u.id));
                    }
                }
            }
        }
        Ok(known)
    }
}
