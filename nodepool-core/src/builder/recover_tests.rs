//! Tests of what a builder does after a crash: [`Builder::recover`] and
//! the leaked-image cleanup, on a memory store and a cloud of images.
#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::any::Any;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::upload::{META_BUILD_ID, META_UPLOAD_ID};
use super::{Builder, BuilderSettings};
use crate::config::{Config, DiskImage, DriverConfig, Location, ProviderCommon, ProviderDiskImage};
use crate::image_builder::{BuildSpec, BuiltFile, ImageBuilder};
use crate::model::{BuildState, ImageBuild, ImageUpload, UploadState};
use crate::provider::{
    CloudImage, ImageUploadSpec, Instance, InstancePage, LaunchSpec, Provider,
    ProviderCapabilities, Resources, META_PROVIDER,
};
use crate::store::{LockOptions, LockTarget, MemoryStore, NodeStore};
use crate::{Error, Result};

const ME: &str = "builder-me";

#[derive(Debug)]
struct NoDriverConfig;

impl DriverConfig for NoDriverConfig {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The images of one cloud, shared by the providers on it.
#[derive(Debug, Clone, Default)]
struct Images(Arc<Mutex<BTreeMap<String, CloudImage>>>);

impl Images {
    fn add(&self, id: &str, meta: &[(&str, &str)]) {
        let metadata = meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.0.lock().unwrap().insert(
            id.to_string(),
            CloudImage {
                external_id: id.to_string(),
                name: id.to_string(),
                metadata,
            },
        );
    }

    fn ids(&self) -> Vec<String> {
        self.0.lock().unwrap().keys().cloned().collect()
    }
}

/// A provider that only lists and deletes images.
#[derive(Debug)]
struct ImageCloud {
    name: String,
    images: Images,
}

fn unsupported<T>(p: &ImageCloud, operation: &'static str) -> Result<T> {
    Err(Error::Unsupported {
        provider: p.name.clone(),
        operation,
    })
}

#[async_trait]
impl Provider for ImageCloud {
    fn name(&self) -> &str {
        &self.name
    }
    fn capabilities(&self) -> ProviderCapabilities {
        ProviderCapabilities {
            image_upload: true,
            ..ProviderCapabilities::default()
        }
    }
    async fn label_resources(&self, _pool: &str, _label: &str) -> Result<Resources> {
        unsupported(self, "label_resources")
    }
    async fn create_instance(&self, _spec: &LaunchSpec) -> Result<Instance> {
        unsupported(self, "create_instance")
    }
    async fn get_instance(&self, _id: &str) -> Result<Option<Instance>> {
        unsupported(self, "get_instance")
    }
    async fn delete_instance(&self, _id: &str) -> Result<()> {
        unsupported(self, "delete_instance")
    }
    async fn list_instances_page(
        &self,
        _marker: Option<&str>,
        _limit: usize,
    ) -> Result<InstancePage> {
        unsupported(self, "list_instances_page")
    }
    async fn upload_image(&self, _spec: &ImageUploadSpec) -> Result<String> {
        unsupported(self, "upload_image")
    }
    async fn delete_image(&self, id: &str) -> Result<()> {
        self.images.0.lock().unwrap().remove(id);
        Ok(())
    }
    async fn list_images(&self) -> Result<Vec<CloudImage>> {
        Ok(self.images.0.lock().unwrap().values().cloned().collect())
    }
}

#[derive(Debug)]
struct NeverBuilds;

#[async_trait]
impl ImageBuilder for NeverBuilds {
    async fn build(&self, _spec: &BuildSpec, _cancel: CancellationToken) -> Result<Vec<BuiltFile>> {
        Err(Error::InvalidInput {
            message: "no builds in these tests".into(),
        })
    }
}

/// A scratch directory, removed on drop.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Env {
    _tmp: Scratch,
    images_dir: std::path::PathBuf,
    store: Arc<MemoryStore>,
    cloud: Images,
    builder: Builder,
}

impl Env {
    fn new() -> Self {
        let tmp = Scratch(
            std::env::temp_dir().join(format!("np-recover-{}", uuid::Uuid::new_v4().simple())),
        );
        let images_dir = tmp.0.join("images");
        std::fs::create_dir_all(&images_dir).unwrap();
        let provider = |name: &str| {
            let mut p = ProviderCommon {
                name: name.to_string(),
                driver: "test".to_string(),
                location: Location::default(),
                max_concurrency: -1,
                priority: None,
            }
            .into_config(Arc::new(NoDriverConfig));
            p.diskimages = vec![ProviderDiskImage {
                name: "img".to_string(),
                format: "qcow2".to_string(),
                pause: false,
                meta: BTreeMap::new(),
            }];
            p
        };
        let config = Config {
            images_dir: Some(images_dir.clone()),
            providers: vec![provider("p1"), provider("p2")],
            diskimages: vec![DiskImage {
                name: "img".to_string(),
                ..DiskImage::default()
            }],
            ..Config::default()
        };
        let cloud = Images::default();
        let mut providers: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
        for name in ["p1", "p2"] {
            providers.insert(
                name.to_string(),
                Arc::new(ImageCloud {
                    name: name.to_string(),
                    images: cloud.clone(),
                }),
            );
        }
        let store = Arc::new(MemoryStore::new());
        let builder = Builder::new(
            Arc::clone(&store) as Arc<dyn NodeStore>,
            Arc::new(NeverBuilds),
            Arc::new(config),
            providers,
            BuilderSettings::new("host", ME),
        );
        Self {
            _tmp: tmp,
            images_dir,
            store,
            cloud,
            builder,
        }
    }

    async fn build(&self, state: BuildState, builder_id: &str) -> String {
        let mut b = ImageBuild::new("img", state);
        b.builder_id = Some(builder_id.to_string());
        b.formats = vec!["qcow2".to_string()];
        self.store.create_build("img", &b).await.unwrap()
    }

    async fn upload(&self, build: &str, provider: &str, state: UploadState) -> String {
        let u = ImageUpload::new("img", build, provider, state);
        self.store
            .create_upload("img", build, provider, &u)
            .await
            .unwrap()
    }

    fn write_files(&self, build: &str) {
        for name in ["qcow2", "qcow2.md5", "raw"] {
            std::fs::write(self.images_dir.join(format!("img-{build}.{name}")), "x").unwrap();
        }
        std::fs::create_dir_all(self.images_dir.join(format!("img-{build}.d"))).unwrap();
    }

    fn files(&self, build: &str) -> Vec<String> {
        files_of(&self.images_dir, build)
    }

    async fn state(&self, build: &str) -> Option<BuildState> {
        self.store
            .get_build("img", build)
            .await
            .unwrap()
            .and_then(|b| b.state)
    }
}

fn files_of(dir: &Path, build: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&format!("img-{build}.")))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn recovery_fails_this_builders_interrupted_builds_and_removes_their_files() {
    let env = Env::new();
    let mine = env.build(BuildState::Building, ME).await;
    let theirs = env.build(BuildState::Building, "other-builder").await;
    let ready = env.build(BuildState::Ready, ME).await;
    for b in [&mine, &theirs, &ready] {
        env.write_files(b);
    }
    // A checksum file whose image is gone is removed too.
    std::fs::remove_file(env.images_dir.join(format!("img-{mine}.qcow2"))).unwrap();

    let done = env.builder.recover(Duration::from_secs(5)).await;

    assert_eq!(done.builds_failed, vec![("img".to_string(), mine.clone())]);
    assert!(done.skipped.is_empty(), "{done:?}");
    assert_eq!(env.state(&mine).await, Some(BuildState::Failed));
    assert!(env.files(&mine).is_empty());
    assert_eq!(env.state(&theirs).await, Some(BuildState::Building));
    assert_eq!(env.files(&theirs).len(), 4);
    assert_eq!(env.state(&ready).await, Some(BuildState::Ready));
    assert_eq!(env.files(&ready).len(), 4);
}

#[tokio::test]
async fn recovery_waits_for_the_lock_a_dead_session_still_holds() {
    let env = Env::new();
    let mine = env.build(BuildState::Building, ME).await;
    let dead = env.store.session();
    dead.lock(
        &LockTarget::ImageBuilds("img".into()),
        &LockOptions::try_once(),
    )
    .await
    .unwrap();
    let expire = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        dead.close().await.unwrap();
    });

    let done = env.builder.recover(Duration::from_secs(10)).await;
    expire.await.unwrap();
    assert_eq!(done.builds_failed.len(), 1, "{done:?}");
    assert_eq!(env.state(&mine).await, Some(BuildState::Failed));
}

#[tokio::test]
async fn recovery_leaves_what_stays_locked_to_the_cleanup() {
    let env = Env::new();
    let mine = env.build(BuildState::Building, ME).await;
    let alive = env.store.session();
    alive
        .lock(
            &LockTarget::ImageBuilds("img".into()),
            &LockOptions::try_once(),
        )
        .await
        .unwrap();

    let done = env.builder.recover(Duration::from_millis(200)).await;
    assert!(done.builds_failed.is_empty());
    assert_eq!(done.skipped.len(), 1, "{done:?}");
    assert_eq!(env.state(&mine).await, Some(BuildState::Building));
}

#[tokio::test]
async fn recovery_removes_interrupted_uploads_of_local_builds_with_their_images() {
    let env = Env::new();
    let local = env.build(BuildState::Ready, ME).await;
    env.write_files(&local);
    let interrupted = env.upload(&local, "p1", UploadState::Uploading).await;
    let done_upload = env.upload(&local, "p2", UploadState::Ready).await;
    // Another builder's build: not ours to recover.
    let remote = env.build(BuildState::Ready, "other-builder").await;
    let remote_upload = env.upload(&remote, "p1", UploadState::Uploading).await;

    let tag = |provider, build: &str, upload: &str| {
        vec![
            (META_PROVIDER, provider),
            (META_BUILD_ID, build),
            (META_UPLOAD_ID, upload),
        ]
        .into_iter()
        .map(|(k, v): (&str, &str)| (k.to_string(), v.to_string()))
        .collect::<Vec<_>>()
    };
    let add = |id: &str, meta: Vec<(String, String)>| {
        let pairs: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.cloud.add(id, &pairs);
    };
    add("half-uploaded", tag("p1", &local, &interrupted));
    // Same build and upload ids, another provider: upload ids repeat.
    add("p2-image", tag("p2", &local, &interrupted));
    add("remote-image", tag("p1", &remote, &remote_upload));
    add("untagged", Vec::new());

    let done = env.builder.recover(Duration::from_secs(5)).await;

    assert_eq!(
        done.uploads_removed,
        vec![(
            "img".into(),
            local.clone(),
            "p1".into(),
            interrupted.clone()
        )]
    );
    assert_eq!(
        done.images_deleted,
        vec![("p1".into(), "half-uploaded".into())]
    );
    let left: Vec<String> = env
        .store
        .list_uploads("img", &local)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(left, vec![done_upload]);
    assert_eq!(
        env.store.list_uploads("img", &remote).await.unwrap().len(),
        1
    );
    assert_eq!(
        env.cloud.ids(),
        vec!["p2-image", "remote-image", "untagged"]
    );
}

#[tokio::test]
async fn a_tagged_image_without_an_upload_record_is_deleted_when_seen_twice() {
    let env = Env::new();
    let build = env.build(BuildState::Ready, ME).await;
    let recorded = env.upload(&build, "p1", UploadState::Ready).await;
    let tags = |provider: &str, upload: &str| {
        vec![
            (META_PROVIDER.to_string(), provider.to_string()),
            (META_BUILD_ID.to_string(), build.clone()),
            (META_UPLOAD_ID.to_string(), upload.to_string()),
        ]
    };
    let add = |id: &str, meta: Vec<(String, String)>| {
        let pairs: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.cloud.add(id, &pairs);
    };
    add("recorded", tags("p1", &recorded));
    add("leaked", tags("p1", "0000000099"));
    add("other-nodepool", tags("elsewhere", "0000000099"));
    add("untagged", Vec::new());
    let config = env.builder.config();

    env.builder.cleanup_leaked_images(&config).await;
    assert_eq!(env.cloud.ids().len(), 4, "a first sighting deletes nothing");
    env.builder.cleanup_leaked_images(&config).await;
    assert_eq!(
        env.cloud.ids(),
        vec!["other-nodepool", "recorded", "untagged"]
    );
}

#[tokio::test]
async fn cleanup_keeps_the_last_validated_upload_while_newer_builds_test_or_failed() {
    let env = Env::new();
    let store = &env.store;
    let mut ids = Vec::new();
    for t in [1000.0, 2000.0, 3000.0] {
        let mut b = ImageBuild::new("img", BuildState::Ready);
        b.builder_id = Some(ME.to_string());
        b.formats = vec!["qcow2".to_string()];
        b.state_time = Some(t);
        ids.push(store.create_build("img", &b).await.unwrap());
    }
    let (validated, rejected, testing) = (&ids[0], &ids[1], &ids[2]);
    env.upload(validated, "p1", UploadState::Ready).await;
    let mut failed = ImageUpload::new("img", rejected.as_str(), "p1", UploadState::Failed);
    failed.set_validation(&crate::model::Validation {
        result: crate::model::VALIDATION_FAILED.to_string(),
        log: None,
        reason: Some("the hook ended with exit status: 3".to_string()),
    });
    store
        .create_upload("img", rejected, "p1", &failed)
        .await
        .unwrap();
    env.upload(testing, "p1", UploadState::Testing).await;
    // A plain failed upload (no validation) of a kept build goes, as upstream.
    env.upload(testing, "p2", UploadState::Failed).await;

    env.builder.cleanup_pass().await;

    let states = |build: &str| {
        let build = build.to_string();
        async move {
            let mut s: Vec<(String, Option<UploadState>)> = store
                .list_uploads("img", &build)
                .await
                .unwrap()
                .into_iter()
                .map(|u| (u.provider_name, u.state))
                .collect();
            s.sort();
            s
        }
    };
    assert_eq!(
        states(validated).await,
        vec![("p1".to_string(), Some(UploadState::Ready))],
        "the last validated upload still serves"
    );
    assert_eq!(
        states(rejected).await,
        vec![("p1".to_string(), Some(UploadState::Failed))],
        "the rejection is kept, so the build is not uploaded again"
    );
    assert_eq!(
        states(testing).await,
        vec![("p1".to_string(), Some(UploadState::Testing))]
    );
    assert_eq!(env.state(validated).await, Some(BuildState::Ready));
}
