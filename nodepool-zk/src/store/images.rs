//! Image builds and uploads.

use zookeeper_client::CreateMode;

use super::{corrupt, skip_corrupt, ZkStore};
use crate::error::store_error;
use crate::{ops, paths};
use nodepool_core::model::{ImageBuild, ImageUpload};
use nodepool_core::{Error, Result};

/// The child every lockable directory may hold besides its records.
const LOCK_CHILD: &str = "lock";

impl ZkStore {
    pub(super) async fn list_images_impl(&self) -> Result<Vec<String>> {
        ops::children(&self.client()?, paths::IMAGE_ROOT).await
    }

    /// A new build under a fresh uuid4 hex id, as upstream's `storeBuild`.
    pub(super) async fn create_build_impl(
        &self,
        image: &str,
        build: &ImageBuild,
    ) -> Result<String> {
        let client = self.client()?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let path = paths::build(image, &id);
        ops::create(&client, &path, &build.to_json(), CreateMode::Persistent)
            .await
            .map_err(|e| store_error("create", &path, e))?;
        Ok(id)
    }

    pub(super) async fn get_build_impl(
        &self,
        image: &str,
        build_id: &str,
    ) -> Result<Option<ImageBuild>> {
        let path = paths::build(image, build_id);
        match ops::get(&self.client()?, &path).await? {
            None => Ok(None),
            Some((data, _)) => ImageBuild::from_json_at(image, build_id, &data)
                .map(Some)
                .map_err(|e| corrupt(&path, e)),
        }
    }

    pub(super) async fn update_build_impl(&self, image: &str, build: &ImageBuild) -> Result<()> {
        let path = paths::build(image, &build.id);
        if ops::set(&self.client()?, &path, &build.to_json()).await? {
            Ok(())
        } else {
            Err(Error::NotFound {
                kind: "image build",
                id: path,
            })
        }
    }

    pub(super) async fn delete_build_impl(&self, image: &str, build_id: &str) -> Result<()> {
        let deleted =
            ops::delete_recursive(&self.client()?, &paths::build(image, build_id)).await?;
        self.held.forget_deleted(&deleted);
        Ok(())
    }

    pub(super) async fn list_builds_impl(&self, image: &str) -> Result<Vec<ImageBuild>> {
        let client = self.client()?;
        let mut builds = Vec::new();
        for id in ops::children(&client, &paths::builds(image)).await? {
            if id == LOCK_CHILD {
                continue;
            }
            let path = paths::build(image, &id);
            let Some((data, _)) = ops::get(&client, &path).await? else {
                continue;
            };
            match ImageBuild::from_json_at(image, &id, &data) {
                Ok(build) => builds.push(build),
                Err(e) => skip_corrupt(&path, &e),
            }
        }
        Ok(builds)
    }

    /// A new upload under the next sequence of (image, build, provider), as
    /// upstream's `storeImageUpload`; the build must exist.
    pub(super) async fn create_upload_impl(
        &self,
        image: &str,
        build_id: &str,
        provider: &str,
        upload: &ImageUpload,
    ) -> Result<String> {
        let client = self.client()?;
        let build = paths::build(image, build_id);
        if !ops::exists(&client, &build).await? {
            return Err(Error::NotFound {
                kind: "image build",
                id: build,
            });
        }
        let prefix = format!("{}/", paths::uploads(image, build_id, provider));
        ops::create(
            &client,
            &prefix,
            &upload.to_json(),
            CreateMode::PersistentSequential,
        )
        .await
        .map_err(|e| store_error("create", &prefix, e))
    }

    pub(super) async fn update_upload_impl(&self, upload: &ImageUpload) -> Result<()> {
        let path = paths::upload(
            &upload.image_name,
            &upload.build_id,
            &upload.provider_name,
            &upload.id,
        );
        if ops::set(&self.client()?, &path, &upload.to_json()).await? {
            Ok(())
        } else {
            Err(Error::NotFound {
                kind: "image upload",
                id: path,
            })
        }
    }

    pub(super) async fn delete_upload_impl(
        &self,
        image: &str,
        build_id: &str,
        provider: &str,
        upload_id: &str,
    ) -> Result<()> {
        let path = paths::upload(image, build_id, provider, upload_id);
        let deleted = ops::delete_recursive(&self.client()?, &path).await?;
        self.held.forget_deleted(&deleted);
        Ok(())
    }

    /// Uploads of a build, by provider, then id.
    pub(super) async fn list_uploads_impl(
        &self,
        image: &str,
        build_id: &str,
    ) -> Result<Vec<ImageUpload>> {
        let client = self.client()?;
        let mut uploads = Vec::new();
        for provider in ops::children(&client, &paths::build_providers(image, build_id)).await? {
            let dir = paths::uploads(image, build_id, &provider);
            for id in ops::children(&client, &dir).await? {
                if id == LOCK_CHILD {
                    continue;
                }
                let path = paths::upload(image, build_id, &provider, &id);
                let Some((data, _)) = ops::get(&client, &path).await? else {
                    continue;
                };
                match ImageUpload::from_json_at(image, build_id, &provider, &id, &data) {
                    Ok(upload) => uploads.push(upload),
                    Err(e) => skip_corrupt(&path, &e),
                }
            }
        }
        Ok(uploads)
    }
}
