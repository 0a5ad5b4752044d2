//! Image builds, uploads and image flags.

use super::{build_fields, ok, some, unique, upload_fields};
use crate::model::{BuildState, ImageBuild, ImageUpload, UploadState};
use crate::store::NodeStore;
use crate::Error;

fn is_build_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn is_sequence(id: &str) -> bool {
    id.len() == 10 && id.bytes().all(|b| b.is_ascii_digit())
}

/// Create, read, update, list and delete builds and uploads; deleting a
/// build deletes its uploads.
pub async fn image_builds_and_uploads_crud(store: &dyn NodeStore) {
    let image = unique("image");
    let build = ImageBuild {
        state: Some(BuildState::Building),
        state_time: Some(1_700_000_002.0),
        ..ImageBuild::default()
    };
    let build_id = ok(store.create_build(&image, &build).await, "create_build");
    assert!(
        is_build_id(&build_id),
        "build id {build_id:?} is a uuid4 hex"
    );
    let stored = some(
        ok(store.get_build(&image, &build_id).await, "get_build"),
        "the build",
    );
    let expected = ImageBuild {
        id: build_id.clone(),
        image_name: image.clone(),
        ..build.clone()
    };
    assert_eq!(build_fields(&stored), build_fields(&expected));
    let images = ok(store.list_images().await, "list_images");
    assert!(images.contains(&image), "an image with a build is listed");

    let mut updated = stored;
    updated.state = Some(BuildState::Ready);
    ok(store.update_build(&image, &updated).await, "update_build");
    let builds = ok(store.list_builds(&image).await, "list_builds");
    assert_eq!(
        builds.iter().map(build_fields).collect::<Vec<_>>(),
        vec![build_fields(&updated)]
    );

    let upload = ImageUpload {
        state: Some(UploadState::Uploading),
        state_time: Some(1_700_000_003.0),
        ..ImageUpload::default()
    };
    let first = ok(
        store.create_upload(&image, &build_id, "p1", &upload).await,
        "create_upload",
    );
    let second = ok(
        store.create_upload(&image, &build_id, "p2", &upload).await,
        "create_upload",
    );
    let uploads = ok(store.list_uploads(&image, &build_id).await, "list_uploads");
    assert_eq!(uploads.len(), 2, "two uploads listed: {uploads:?}");
    let mut stored = uploads
        .iter()
        .find(|u| upload_is(u, &image, &build_id, "p1", &first))
        .cloned()
        .unwrap_or_else(|| panic!("upload p1/{first} is listed with its location: {uploads:?}"));
    assert!(
        uploads
            .iter()
            .any(|u| upload_is(u, &image, &build_id, "p2", &second)),
        "upload p2/{second} is listed with its location: {uploads:?}"
    );
    assert_eq!(stored.state, Some(UploadState::Uploading));
    assert_eq!(stored.state_time, upload.state_time);

    stored.state = Some(UploadState::Ready);
    stored.external_id = Some(unique("cloud-image"));
    ok(store.update_upload(&stored).await, "update_upload");
    let uploads = ok(store.list_uploads(&image, &build_id).await, "list_uploads");
    assert!(
        uploads
            .iter()
            .any(|u| upload_fields(u) == upload_fields(&stored)),
        "the updated upload is listed: {uploads:?}"
    );

    ok(
        store.delete_upload(&image, &build_id, "p2", &second).await,
        "delete_upload",
    );
    let uploads = ok(store.list_uploads(&image, &build_id).await, "list_uploads");
    assert_eq!(
        uploads.iter().map(upload_fields).collect::<Vec<_>>(),
        vec![upload_fields(&stored)]
    );

    ok(store.delete_build(&image, &build_id).await, "delete_build");
    assert_eq!(
        ok(store.get_build(&image, &build_id).await, "get_build"),
        None
    );
    assert!(ok(store.list_builds(&image).await, "list_builds").is_empty());
    assert!(
        ok(store.list_uploads(&image, &build_id).await, "list_uploads").is_empty(),
        "deleting a build deletes its uploads"
    );
    match store.update_upload(&stored).await {
        Err(Error::NotFound { .. }) => {}
        other => panic!("update_upload of a deleted upload: expected NotFound, got {other:?}"),
    }
}

/// Whether `upload` is the one at image/build/provider/id.
fn upload_is(upload: &ImageUpload, image: &str, build: &str, provider: &str, id: &str) -> bool {
    upload.id == id
        && upload.image_name == image
        && upload.build_id == build
        && upload.provider_name == provider
}

/// Upload ids are ten-digit sequences that grow per (image, build,
/// provider).
pub async fn upload_ids_follow_a_sequence_per_provider(store: &dyn NodeStore) {
    let image = unique("image");
    let build_id = ok(
        store.create_build(&image, &ImageBuild::default()).await,
        "create_build",
    );
    let mut p1 = Vec::new();
    let mut p2 = Vec::new();
    for _ in 0..3 {
        for (provider, ids) in [("p1", &mut p1), ("p2", &mut p2)] {
            let id = ok(
                store
                    .create_upload(&image, &build_id, provider, &ImageUpload::default())
                    .await,
                "create_upload",
            );
            assert!(is_sequence(&id), "upload id {id:?} is a ten-digit sequence");
            ids.push(id);
        }
    }
    for ids in [&p1, &p2] {
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "upload ids grow: {ids:?}"
        );
    }
    let listed = ok(store.list_uploads(&image, &build_id).await, "list_uploads");
    assert_eq!(listed.len(), 6, "every upload is listed: {listed:?}");
    ok(store.delete_build(&image, &build_id).await, "delete_build");
}

/// The pause flag and the build request of an image are set, read and
/// cleared independently.
pub async fn image_pause_and_build_request_flags(store: &dyn NodeStore) {
    let image = unique("image");
    assert!(!ok(store.image_paused(&image).await, "image_paused"));
    assert!(!ok(store.build_requested(&image).await, "build_requested"));

    ok(
        store.set_image_paused(&image, true).await,
        "set_image_paused",
    );
    assert!(ok(store.image_paused(&image).await, "image_paused"));
    assert!(
        !ok(store.build_requested(&image).await, "build_requested"),
        "pausing does not request a build"
    );
    assert!(
        ok(store.list_images().await, "list_images").contains(&image),
        "a paused image is listed"
    );

    ok(
        store.set_build_requested(&image, true).await,
        "set_build_requested",
    );
    ok(
        store.set_build_requested(&image, true).await,
        "requesting twice",
    );
    assert!(ok(store.build_requested(&image).await, "build_requested"));

    ok(
        store.set_image_paused(&image, false).await,
        "set_image_paused",
    );
    assert!(!ok(store.image_paused(&image).await, "image_paused"));
    assert!(
        ok(store.build_requested(&image).await, "build_requested"),
        "unpausing keeps the build request"
    );
    ok(
        store.set_image_paused(&image, false).await,
        "unpausing twice",
    );

    ok(
        store.set_build_requested(&image, false).await,
        "set_build_requested",
    );
    assert!(!ok(store.build_requested(&image).await, "build_requested"));
    ok(
        store.set_build_requested(&image, false).await,
        "withdrawing a missing build request",
    );
}
