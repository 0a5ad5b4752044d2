//! What the image commands of the CLI read and write in the store, with
//! upstream's semantics (`nodepool/cmd/nodepoolcmd.py`, `nodepool/status.py`):
//! `image-build`, `dib-image-list`, `image-list`, `image-status`,
//! `dib-image-delete`, `image-delete`, `image-pause`, `image-unpause`.
//! Printing is the CLI's job (see [`crate::status`]).

use std::collections::HashSet;

use crate::config::Config;
use crate::model::{BuildState, ImageBuild, ImageUpload, UploadState};
use crate::status::{BuildRequestStatus, ImageStatus};
use crate::store::{LockTarget, NodeStore};

/// Why an image command did nothing.
///
/// Upstream raises for [`UnknownDiskImage`](Self::UnknownDiskImage) and
/// [`Paused`](Self::Paused) (exit status 1); for the others it prints the
/// message and exits 0 ([`AdminError::is_notice`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// `image-build` of a name that is not a diskimage of the config.
    #[error("Trying to build a non disk-image-builder image: {image}")]
    UnknownDiskImage {
        /// The name given.
        image: String,
    },
    /// `image-build` of a diskimage with `pause: true` in the config.
    #[error("Skipping build request for image {image}; paused")]
    Paused {
        /// The image.
        image: String,
    },
    /// `dib-image-delete` of a build the store does not hold.
    #[error("Build {id} not found")]
    BuildNotFound {
        /// The `<image>-<build id>` given.
        id: String,
    },
    /// `dib-image-delete` of a build that is being built.
    #[error("Cannot delete a build in progress")]
    BuildInProgress {
        /// The `<image>-<build id>` given.
        id: String,
    },
    /// `image-delete` of an upload the store does not hold.
    #[error("Image upload not found")]
    UploadNotFound,
    /// `image-delete` of an upload in progress.
    #[error("Cannot delete because image upload in progress")]
    UploadInProgress,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::Error),
}

impl AdminError {
    /// Whether upstream prints this and exits successfully (rather than
    /// failing).
    pub fn is_notice(&self) -> bool {
        matches!(
            self,
            AdminError::BuildNotFound { .. }
                | AdminError::BuildInProgress { .. }
                | AdminError::UploadNotFound
                | AdminError::UploadInProgress
        )
    }
}

/// `nodepool image-build IMAGE`: ask the builders for a build.
pub async fn request_build(
    store: &dyn NodeStore,
    config: &Config,
    image: &str,
) -> Result<(), AdminError> {
    let Some(diskimage) = config.diskimage(image) else {
        return Err(AdminError::UnknownDiskImage {
            image: image.to_string(),
        });
    };
    if diskimage.pause {
        return Err(AdminError::Paused {
            image: image.to_string(),
        });
    }
    store.set_build_requested(image, true).await?;
    Ok(())
}

/// `nodepool image-pause` / `image-unpause`.
pub async fn set_paused(
    store: &dyn NodeStore,
    image: &str,
    paused: bool,
) -> Result<(), AdminError> {
    store.set_image_paused(image, paused).await?;
    Ok(())
}

/// What `dib-image-list` shows: every build of every image (images in name
/// order, builds in the store's order) and the paused images.
pub async fn builds(
    store: &dyn NodeStore,
) -> Result<(Vec<ImageBuild>, HashSet<String>), AdminError> {
    let mut images = store.list_images().await?;
    images.sort();
    let mut builds = Vec::new();
    let mut paused = HashSet::new();
    for image in images {
        if store.image_paused(&image).await? {
            paused.insert(image.clone());
        }
        builds.extend(store.list_builds(&image).await?);
    }
    Ok((builds, paused))
}

/// What `image-list` shows: every upload of every build of every image.
pub async fn uploads(store: &dyn NodeStore) -> Result<Vec<ImageUpload>, AdminError> {
    let mut images = store.list_images().await?;
    images.sort();
    let mut out = Vec::new();
    for image in images {
        for build in store.list_builds(&image).await? {
            out.extend(store.list_uploads(&image, &build.id).await?);
        }
    }
    Ok(out)
}

/// What `image-status` shows: per image, paused and its build request. A
/// request is `building` (not pending) while a builder holds the image's
/// build lock and a `building` record exists, as upstream tells from the
/// lock and the newest build; the store does not keep the request's
/// creation time, so `requested_at` is `None`.
pub async fn image_status(store: &dyn NodeStore) -> Result<Vec<ImageStatus>, AdminError> {
    let mut images = store.list_images().await?;
    images.sort();
    let mut out = Vec::new();
    for image in images {
        let paused = store.image_paused(&image).await?;
        let build_request = if store.build_requested(&image).await? {
            let locked = !store
                .lock_contenders(&LockTarget::ImageBuilds(image.clone()))
                .await?
                .is_empty();
            let building = locked
                && store
                    .list_builds(&image)
                    .await?
                    .iter()
                    .any(|b| b.state == Some(BuildState::Building));
            Some(BuildRequestStatus {
                pending: !building,
                requested_at: None,
            })
        } else {
            None
        };
        out.push(ImageStatus {
            image,
            paused,
            build_request,
        });
    }
    Ok(out)
}

/// `nodepool dib-image-delete <image>-<build id>`: mark the build
/// `deleting`; the builders' cleanup deletes its uploads, files and record.
/// Any build but one in progress can be deleted, the newest included.
pub async fn delete_build(store: &dyn NodeStore, id: &str) -> Result<(), AdminError> {
    let not_found = || AdminError::BuildNotFound { id: id.to_string() };
    let (image, build_id) = id.rsplit_once('-').ok_or_else(not_found)?;
    let Some(mut build) = store.get_build(image, build_id).await? else {
        return Err(not_found());
    };
    if build.state == Some(BuildState::Building) {
        return Err(AdminError::BuildInProgress { id: id.to_string() });
    }
    build.id = build_id.to_string();
    build.image_name = image.to_string();
    build.set_state(BuildState::Deleting);
    store.update_build(image, &build).await?;
    Ok(())
}

/// `nodepool image-delete --provider P --image I --build-id B --upload-id U`:
/// mark the upload `deleting`; the builders' cleanup deletes it in the
/// cloud and then its record.
pub async fn delete_upload(
    store: &dyn NodeStore,
    provider: &str,
    image: &str,
    build_id: &str,
    upload_id: &str,
) -> Result<(), AdminError> {
    let found = store
        .list_uploads(image, build_id)
        .await?
        .into_iter()
        .find(|u| u.provider_name == provider && u.id == upload_id);
    let Some(mut upload) = found else {
        return Err(AdminError::UploadNotFound);
    };
    if upload.state == Some(UploadState::Uploading) {
        return Err(AdminError::UploadInProgress);
    }
    upload.set_state(UploadState::Deleting);
    store.update_upload(&upload).await?;
    Ok(())
}

/// `image-validate IMAGE [--provider P]`: put the newest upload of `image`
/// to each provider (or to `provider`) back in the `testing` state, so that
/// a launcher validates it again (see doc/images.md). Meanwhile nodes boot
/// from the previous ready upload. Returns the uploads changed.
pub async fn revalidate(
    store: &dyn NodeStore,
    image: &str,
    provider: Option<&str>,
) -> Result<Vec<ImageUpload>, AdminError> {
    // Per provider: the upload of the newest build (by the build's time;
    // build ids are not ordered in every store), then the newest upload.
    let mut newest: std::collections::BTreeMap<String, ((f64, f64), ImageUpload)> =
        Default::default();
    for build in store.list_builds(image).await? {
        if build.state != Some(BuildState::Ready) {
            continue;
        }
        let built = build.state_time.unwrap_or(0.0);
        for upload in store.list_uploads(image, &build.id).await? {
            let candidate = matches!(
                upload.state,
                Some(UploadState::Ready | UploadState::Testing)
            ) || upload.failed_validation();
            if !candidate || provider.is_some_and(|p| p != upload.provider_name) {
                continue;
            }
            let key = (built, upload.state_time.unwrap_or(0.0));
            let newer = match newest.get(&upload.provider_name) {
                None => true,
                Some((k, _)) => key > *k,
            };
            if newer {
                newest.insert(upload.provider_name.clone(), (key, upload));
            }
        }
    }
    if newest.is_empty() {
        return Err(AdminError::UploadNotFound);
    }
    let mut out = Vec::new();
    for (_, (_, mut upload)) in newest {
        upload.extra.remove(crate::model::VALIDATION_KEY);
        upload.set_state(UploadState::Testing);
        store.update_upload(&upload).await?;
        out.push(upload);
    }
    Ok(out)
}
