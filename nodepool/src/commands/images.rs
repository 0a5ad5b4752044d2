//! Image commands, as upstream's `nodepool` has them: `image-build`,
//! `dib-image-list`, `image-list`, `image-status`, `dib-image-delete`,
//! `image-delete`, `image-pause`, `image-unpause`, `alien-image-list`.
//!
//! The store work is [`nodepool_core::builder::admin`]'s; this module
//! prints. Exit codes as in [`super::nodes`]: 0 on success and for what
//! upstream only reports (`Build X not found`, `Cannot delete a build in
//! progress`, `Image upload not found`, `Cannot delete because image upload
//! in progress`), 1 when the command could not do what was asked (not a
//! diskimage, paused in the config, store unreachable, invalid config).

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::Arc;

use nodepool_core::builder::admin::{self, AdminError};
use nodepool_core::config::{Config, ProviderConfig};
use nodepool_core::model::json::JsonValue;
use nodepool_core::model::{now, UploadState};
use nodepool_core::provider::Provider;
use nodepool_core::status::{self, Listing};
use nodepool_core::store::NodeStore;
use tracing::{debug, warn};

use super::nodes::Format;
use super::session::{with_store, CmdError, Session};

/// The metadata key that marks a cloud image as nodepool's (upstream's
/// `alien-image-list` considers only images carrying it).
pub(crate) const BUILD_ID_METADATA: &str = "nodepool_build_id";

/// The columns of `alien-image-list`.
const ALIEN_IMAGE_LIST_COLUMNS: &[(&str, &str)] = &[
    ("provider", "Provider"),
    ("name", "Name"),
    ("id", "Image ID"),
];

/// One upload, as `image-delete` names it.
#[derive(Debug, Clone)]
pub(crate) struct UploadRef {
    /// `--provider`.
    pub(crate) provider: String,
    /// `--image`.
    pub(crate) image: String,
    /// `--build-id`.
    pub(crate) build_id: String,
    /// `--upload-id`.
    pub(crate) upload_id: String,
}

/// Upstream prints some refusals and exits 0; the rest fail the command.
fn report(result: Result<(), AdminError>) -> Result<(), CmdError> {
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.is_notice() => {
            super::out::print_result(e);
            Ok(())
        }
        Err(AdminError::Store(e)) => Err(CmdError::from(e)),
        Err(e) => Err(CmdError::Failed(e.to_string())),
    }
}

fn admin_failed(e: AdminError) -> CmdError {
    match e {
        AdminError::Store(e) => CmdError::from(e),
        other => CmdError::Failed(other.to_string()),
    }
}

fn print_listing(listing: &Listing, format: Format) {
    match format {
        Format::Json => super::out::print_result(listing.to_json()),
        Format::Table => super::out::print_result(listing.to_text::<&str>(None, now())),
    }
}

/// `nodepool image-build IMAGE`: ask the builders for a build of IMAGE.
pub(crate) fn image_build(session: &Session, image: String) -> ExitCode {
    with_store(session, |store, session| async move {
        let config = session.config()?;
        report(admin::request_build(store.as_ref(), &config, &image).await)
    })
}

/// `nodepool dib-image-list [--json]`: every build of every image.
pub(crate) fn dib_image_list(session: &Session, format: Format) -> ExitCode {
    with_store(session, |store, _| async move {
        let (builds, paused) = admin::builds(store.as_ref()).await.map_err(admin_failed)?;
        print_listing(&status::dib_image_list(&builds, &paused), format);
        Ok(())
    })
}

/// `nodepool image-list [--json]`: every upload of every build.
pub(crate) fn image_list(session: &Session, format: Format) -> ExitCode {
    with_store(session, |store, _| async move {
        let uploads = admin::uploads(store.as_ref()).await.map_err(admin_failed)?;
        print_listing(&status::image_list(&uploads), format);
        Ok(())
    })
}

/// `nodepool image-status [--json]`: paused images and build requests.
pub(crate) fn image_status(session: &Session, format: Format) -> ExitCode {
    with_store(session, |store, _| async move {
        let images = admin::image_status(store.as_ref())
            .await
            .map_err(admin_failed)?;
        print_listing(&status::image_status(&images), format);
        Ok(())
    })
}

/// `nodepool dib-image-delete <image>-<build id>`: mark the build deleting;
/// the builders delete its uploads, files and record.
pub(crate) fn dib_image_delete(session: &Session, id: String) -> ExitCode {
    with_store(session, |store, _| async move {
        report(admin::delete_build(store.as_ref(), &id).await)
    })
}

/// `nodepool image-delete --provider --image --build-id --upload-id`: mark
/// the upload deleting; the builders delete it in the cloud and the store.
pub(crate) fn image_delete(session: &Session, upload: UploadRef) -> ExitCode {
    with_store(session, |store, _| async move {
        report(
            admin::delete_upload(
                store.as_ref(),
                &upload.provider,
                &upload.image,
                &upload.build_id,
                &upload.upload_id,
            )
            .await,
        )
    })
}

/// `nodepool image-validate IMAGE [--provider P]`: the newest upload goes
/// back to `testing`; a launcher validates it again.
pub(crate) fn image_validate(
    session: &Session,
    image: String,
    provider: Option<String>,
) -> ExitCode {
    with_store(session, |store, _| async move {
        match admin::revalidate(store.as_ref(), &image, provider.as_deref()).await {
            Ok(uploads) => {
                for u in uploads {
                    println!(
                        "Upload {} of {} build {} to {} will be validated again",
                        u.id, u.image_name, u.build_id, u.provider_name
                    );
                }
                Ok(())
            }
            Err(e) => report(Err(e)),
        }
    })
}

/// `nodepool image-pause IMAGE` / `image-unpause IMAGE`.
pub(crate) fn set_paused(session: &Session, image: String, paused: bool) -> ExitCode {
    with_store(session, |store, _| async move {
        report(admin::set_paused(store.as_ref(), &image, paused).await)
    })
}

/// `nodepool alien-image-list [PROVIDER] [--json]`.
pub(crate) fn alien_image_list(
    session: &Session,
    provider: Option<String>,
    format: Format,
) -> ExitCode {
    with_store(session, |store, session| async move {
        let config = session.config()?;
        let reg = crate::daemon::registry();
        let listing = alien_images(store.as_ref(), &config, provider.as_deref(), |p| {
            let driver = reg
                .get(&p.driver)
                .ok_or_else(|| format!("no driver {}", p.driver))?;
            driver.create_provider(p).map_err(|e| e.to_string())
        })
        .await?;
        print_listing(&listing, format);
        Ok(())
    })
}

/// The images in each provider's cloud (only `only`, if given) that carry
/// [`BUILD_ID_METADATA`] but are no `ready` upload in the store of an image
/// the provider lists, as upstream computes them. A provider that cannot be
/// built or listed is logged and shows nothing.
pub(crate) async fn alien_images<F>(
    store: &dyn NodeStore,
    config: &Config,
    only: Option<&str>,
    make_provider: F,
) -> Result<Listing, CmdError>
where
    F: Fn(&ProviderConfig) -> Result<Arc<dyn Provider>, String>,
{
    let mut listing = Listing::new(ALIEN_IMAGE_LIST_COLUMNS);
    for provider_cfg in &config.providers {
        if only.is_some_and(|name| name != provider_cfg.name) {
            continue;
        }
        let cloud_images = match cloud_images(provider_cfg, &make_provider).await {
            Ok(images) => images,
            Err(e) => {
                warn!(
                    "Exception listing alien images for {}: {e}",
                    provider_cfg.name
                );
                Vec::new()
            }
        };
        let known = ready_upload_ids(store, provider_cfg).await?;
        for image in cloud_images {
            if !known.contains(&image.external_id) {
                listing.rows.push(vec![
                    JsonValue::from(provider_cfg.name.as_str()),
                    JsonValue::from(image.name.as_str()),
                    JsonValue::from(image.external_id.as_str()),
                ]);
            }
        }
    }
    Ok(listing)
}

/// The provider's images that carry nodepool's metadata.
async fn cloud_images<F>(
    provider_cfg: &ProviderConfig,
    make_provider: &F,
) -> Result<Vec<nodepool_core::provider::CloudImage>, String>
where
    F: Fn(&ProviderConfig) -> Result<Arc<dyn Provider>, String>,
{
    let provider = make_provider(provider_cfg)?;
    if !provider.capabilities().image_upload {
        debug!(provider = %provider_cfg.name, "provider has no images");
        return Ok(Vec::new());
    }
    let images = provider.list_images().await.map_err(|e| e.to_string())?;
    Ok(images
        .into_iter()
        .filter(|i| i.metadata.contains_key(BUILD_ID_METADATA))
        .collect())
}

/// The external ids of the provider's `ready` uploads of the images it
/// lists.
async fn ready_upload_ids(
    store: &dyn NodeStore,
    provider_cfg: &ProviderConfig,
) -> Result<HashSet<String>, CmdError> {
    let mut known = HashSet::new();
    for image in &provider_cfg.diskimages {
        for build in store.list_builds(&image.name).await? {
            for upload in store.list_uploads(&image.name, &build.id).await? {
                if upload.provider_name == provider_cfg.name
                    && upload.state == Some(UploadState::Ready)
                {
                    if let Some(id) = upload.external_id {
                        known.insert(id);
                    }
                }
            }
        }
    }
    Ok(known)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use nodepool_core::model::{BuildState, ImageBuild, ImageUpload};
    use nodepool_core::provider::ImageUploadSpec;
    use nodepool_core::store::MemoryStore;
    use nodepool_drivers::fake::cloud::{FakeCloud, FakeCloudSettings};
    use nodepool_drivers::fake::provider::FakeProvider;

    use super::*;

    const CONFIG: &str = "labels: []
providers:
  - name: fake-provider
    cloud: fake
    diskimages:
      - name: fake-image
  - name: fake-other
    cloud: fake
    diskimages: []
diskimages:
  - name: fake-image
";

    async fn upload(
        provider: &FakeProvider,
        file: &std::path::Path,
        name: &str,
        build_id: Option<&str>,
    ) -> String {
        let mut metadata = BTreeMap::new();
        if let Some(id) = build_id {
            metadata.insert(BUILD_ID_METADATA.to_string(), id.to_string());
        }
        provider
            .upload_image(&ImageUploadSpec {
                diskimage: "fake-image".into(),
                build_id: build_id.unwrap_or_default().into(),
                upload_id: "0000000001".into(),
                external_name: name.into(),
                path: file.to_path_buf(),
                format: "qcow2".into(),
                metadata,
            })
            .await
            .expect("upload")
    }

    #[tokio::test]
    async fn alien_images_are_nodepool_images_no_ready_upload_knows() {
        let config =
            nodepool_core::config::load_str("nodepool.yaml", CONFIG, &crate::daemon::registry())
                .expect("config loads");
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("fake-image-0000000001.qcow2");
        std::fs::write(&file, b"image").expect("write");
        let provider = FakeProvider::new(
            "fake-provider",
            FakeCloud::new(FakeCloudSettings::default()),
            BTreeMap::new(),
        );
        let known = upload(&provider, &file, "known", Some("0000000001")).await;
        let deleting = upload(&provider, &file, "deleting", Some("0000000001")).await;
        let alien = upload(&provider, &file, "alien", Some("0000000009")).await;
        upload(&provider, &file, "cloud-own", None).await;

        let store = MemoryStore::new();
        let build_id = store
            .create_build(
                "fake-image",
                &ImageBuild::new("fake-image", BuildState::Ready),
            )
            .await
            .expect("build");
        for (external, state) in [
            (&known, UploadState::Ready),
            (&deleting, UploadState::Deleting),
        ] {
            let mut u = ImageUpload::new("fake-image", &build_id, "fake-provider", state);
            u.external_id = Some(external.clone());
            store
                .create_upload("fake-image", &build_id, "fake-provider", &u)
                .await
                .expect("upload record");
        }

        let provider: Arc<dyn Provider> = Arc::new(provider);
        let make = |p: &ProviderConfig| -> Result<Arc<dyn Provider>, String> {
            if p.name == "fake-provider" {
                Ok(Arc::clone(&provider))
            } else {
                Err("unreachable cloud".to_string())
            }
        };
        let listing = alien_images(&store, &config, None, make)
            .await
            .expect("listing");
        let ids: Vec<String> = listing
            .rows
            .iter()
            .map(|r| r[2].as_str().unwrap_or_default().to_string())
            .collect();
        let mut expected = vec![deleting.clone(), alien.clone()];
        expected.sort();
        let mut got = ids.clone();
        got.sort();
        assert_eq!(got, expected, "rows: {:?}", listing.rows);
        assert!(listing
            .rows
            .iter()
            .all(|r| r[0].as_str() == Some("fake-provider")));

        let only_other = alien_images(&store, &config, Some("fake-other"), make)
            .await
            .expect("listing");
        assert!(only_other.rows.is_empty());
        let text = only_other.to_text::<&str>(None, 0.0);
        assert!(text.contains("| Provider | Name | Image ID |"), "{text}");
    }
}
