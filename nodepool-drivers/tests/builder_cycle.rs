//! The builder engine end to end: `nodepool-dib` running
//! `scripts/fake-dib-cmd`, fake providers on a fake cloud, a memory store.
//! Passes are driven one at a time (`build_pass`, `upload_all`,
//! `cleanup_pass`) so each behaviour is checked deterministically; the
//! last test runs the whole `Builder::run` loop.
#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nodepool_core::builder::{admin, newest_ready_upload_in, Builder, BuilderSettings};
use nodepool_core::config::{load_str, Config, DriverRegistry};
use nodepool_core::model::{BuildState, ImageBuild, UploadState};
use nodepool_core::provider::Provider;
use nodepool_core::store::{LockOptions, LockTarget, MemoryStore, NodeStore};
use nodepool_dib::DibImageBuilder;
use nodepool_drivers::fake::cloud::{FakeCloud, FakeCloudSettings, FaultSettings};
use nodepool_drivers::fake::config::FakeConfig;
use nodepool_drivers::fake::provider::FakeProvider;
use tokio_util::sync::CancellationToken;

fn fake_dib_cmd() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/fake-dib-cmd")
        .display()
        .to_string()
}

/// A config with providers `fake-provider` and `fake-provider2` both
/// listing `fake-image` unless `provider2_images` says otherwise.
fn yaml(dir: &Path, provider2_images: &str, image_extra: &str) -> String {
    format!(
        "images-dir: {images}
build-log-dir: {logs}
labels:
  - name: small
providers:
  - name: fake-provider
    cloud: fake
    diskimages:
      - name: fake-image
        meta:
          key: value
    pools:
      - name: main
        labels:
          - name: small
            diskimage: fake-image
            min-ram: 8192
  - name: fake-provider2
    cloud: fake
    diskimages: {provider2_images}
    pools:
      - name: main
        labels: []
diskimages:
  - name: fake-image
    dib-cmd: {cmd}
    elements:
      - fedora
      - vm
    release: 21
    username: zuul
{image_extra}
",
        images = dir.join("images").display(),
        logs = dir.join("logs").display(),
        cmd = fake_dib_cmd(),
    )
}

fn config(text: &str) -> Config {
    let mut reg = DriverRegistry::new();
    nodepool_drivers::fake::config::register(&mut reg);
    match load_str("nodepool.yaml", text, &reg) {
        Ok(c) => c,
        Err(e) => panic!("config does not load: {e}\n{text}"),
    }
}

fn providers(config: &Config, cloud: &FakeCloud) -> BTreeMap<String, Arc<dyn Provider>> {
    let mut out: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
    for p in &config.providers {
        let fake = p
            .driver_config
            .as_any()
            .downcast_ref::<FakeConfig>()
            .expect("a fake provider config");
        out.insert(
            p.name.clone(),
            Arc::new(FakeProvider::from_config(
                p.name.clone(),
                fake,
                cloud.clone(),
            )),
        );
    }
    out
}

struct Env {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    store: MemoryStore,
    cloud: FakeCloud,
}

impl Env {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        Self {
            _tmp: tmp,
            dir,
            store: MemoryStore::new(),
            cloud: FakeCloud::new(FakeCloudSettings::default()),
        }
    }

    fn config(&self, provider2_images: &str, image_extra: &str) -> Config {
        config(&yaml(&self.dir, provider2_images, image_extra))
    }

    /// A builder on its own store session, for host `host`.
    fn builder(&self, host: &str, config: Config) -> Arc<Builder> {
        let providers = providers(&config, &self.cloud);
        Arc::new(Builder::new(
            Arc::new(self.store.session()),
            Arc::new(DibImageBuilder::default()),
            Arc::new(config),
            providers,
            BuilderSettings::new(host, format!("{host}-id")),
        ))
    }

    fn default_builder(&self) -> Arc<Builder> {
        self.builder("builder1", self.config("\n      - name: fake-image", ""))
    }

    async fn builds(&self) -> Vec<ImageBuild> {
        let mut b = self.store.list_builds("fake-image").await.unwrap();
        b.sort_by(|x, y| x.state_time.partial_cmp(&y.state_time).unwrap());
        b
    }

    fn local_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.join("images"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn cloud_image_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .cloud
            .images()
            .into_iter()
            .filter(|i| i.metadata.contains_key("nodepool_build_id"))
            .map(|i| i.name)
            .collect();
        names.sort();
        names
    }

    /// Make the build look `age` seconds old.
    async fn age_build(&self, build: &ImageBuild, age: f64) {
        let mut b = build.clone();
        b.state_time = Some(b.state_time.unwrap() - age);
        self.store.update_build("fake-image", &b).await.unwrap();
    }
}

#[tokio::test]
async fn first_pass_builds_then_uploads_with_upstreams_records() {
    let env = Env::new();
    let builder = env.default_builder();
    let cancel = CancellationToken::new();

    let built = builder.build_pass(&cancel).await;
    assert_eq!(built.len(), 1);
    assert_eq!(built[0].state, BuildState::Ready);
    let build = env
        .store
        .get_build("fake-image", &built[0].build_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(build.builder.as_deref(), Some("builder1"));
    assert_eq!(build.builder_id.as_deref(), Some("builder1-id"));
    assert_eq!(build.formats, ["qcow2"]);
    assert_eq!(build.username.as_deref(), Some("zuul"));
    assert_eq!(build.python_path.as_deref(), Some("auto"));
    assert_eq!(build.id.len(), 32, "a uuid hex build id");
    let base = format!("fake-image-{}", build.id);
    assert!(env.local_files().contains(&format!("{base}.qcow2")));
    let log = std::fs::read_to_string(env.dir.join(format!("logs/{base}.log"))).unwrap();
    assert!(log.ends_with("Exit code: 0\n"), "{log}");

    let uploads = builder.upload_all(&cancel).await;
    let mut providers: Vec<&str> = uploads.iter().map(|u| u.provider.as_str()).collect();
    providers.sort();
    assert_eq!(providers, ["fake-provider", "fake-provider2"]);
    assert!(uploads.iter().all(|u| u.state == UploadState::Ready));

    let upload = newest_ready_upload_in(&env.store, "fake-image", "fake-provider")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(upload.build_id, build.id);
    assert_eq!(upload.format.as_deref(), Some("qcow2"));
    assert_eq!(upload.username.as_deref(), Some("zuul"));
    let name = upload.external_name.clone().unwrap();
    let ts = name.strip_prefix("fake-image-").unwrap();
    assert!(
        ts.parse::<u64>().is_ok(),
        "image-name-format {{image_name}}-{{timestamp}}: {name}"
    );
    let cloud_image = env
        .cloud
        .images()
        .into_iter()
        .find(|i| Some(&i.external_id) == upload.external_id.as_ref())
        .expect("the upload is in the cloud");
    assert_eq!(cloud_image.metadata["nodepool_build_id"], build.id);
    assert_eq!(cloud_image.metadata["nodepool_upload_id"], upload.id);
    assert_eq!(cloud_image.metadata["key"], "value");

    // Nothing more to do.
    assert!(builder.build_pass(&cancel).await.is_empty());
    assert!(builder.upload_all(&cancel).await.is_empty());
}

#[tokio::test]
async fn rebuilds_once_rebuild_age_has_passed() {
    let env = Env::new();
    let builder = env.default_builder();
    let cancel = CancellationToken::new();
    assert_eq!(builder.build_pass(&cancel).await.len(), 1);
    let first = env.builds().await.pop().unwrap();
    env.age_build(&first, 3600.0).await;
    assert!(builder.build_pass(&cancel).await.is_empty(), "1 h < 24 h");
    env.age_build(&first, 86400.0).await;
    let again = builder.build_pass(&cancel).await;
    assert_eq!(again.len(), 1);
    assert!(matches!(
        again[0].reason,
        nodepool_core::builder::build::BuildReason::Aged { .. }
    ));
}

#[tokio::test]
async fn paused_images_are_not_built_and_requests_are_honoured_once() {
    let env = Env::new();
    let paused_cfg = env.builder("b", env.config("[]", "    pause: true"));
    let cancel = CancellationToken::new();
    assert!(
        paused_cfg.build_pass(&cancel).await.is_empty(),
        "pause: true"
    );
    let err = admin::request_build(&env.store, &paused_cfg.config(), "fake-image")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Skipping build request for image fake-image; paused"
    );

    let builder = env.default_builder();
    admin::set_paused(&env.store, "fake-image", true)
        .await
        .unwrap();
    assert!(builder.build_pass(&cancel).await.is_empty(), "image-pause");
    admin::set_paused(&env.store, "fake-image", false)
        .await
        .unwrap();
    assert_eq!(builder.build_pass(&cancel).await.len(), 1);

    admin::request_build(&env.store, &builder.config(), "fake-image")
        .await
        .unwrap();
    let status = admin::image_status(&env.store).await.unwrap();
    assert!(status[0].build_request.as_ref().unwrap().pending);
    let built = builder.build_pass(&cancel).await;
    assert_eq!(built.len(), 1);
    assert_eq!(
        built[0].reason,
        nodepool_core::builder::build::BuildReason::Requested
    );
    assert!(!env.store.build_requested("fake-image").await.unwrap());
    assert!(builder.build_pass(&cancel).await.is_empty());
    let err = admin::request_build(&env.store, &builder.config(), "nope")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Trying to build a non disk-image-builder image: nope"
    );
}

#[tokio::test]
async fn keeps_the_two_newest_ready_builds_and_deletes_older_ones_everywhere() {
    let env = Env::new();
    let builder = env.default_builder();
    let cancel = CancellationToken::new();
    for _ in 0..3 {
        env.store
            .set_build_requested("fake-image", true)
            .await
            .unwrap();
        assert_eq!(builder.build_pass(&cancel).await.len(), 1);
        assert_eq!(builder.upload_all(&cancel).await.len(), 2);
    }
    let builds = env.builds().await;
    assert_eq!(builds.len(), 3);
    assert_eq!(env.cloud_image_names().len(), 6);

    builder.cleanup_pass().await;

    let left: Vec<String> = env.builds().await.into_iter().map(|b| b.id).collect();
    assert_eq!(left, [builds[1].id.clone(), builds[2].id.clone()]);
    assert_eq!(
        env.cloud_image_names().len(),
        4,
        "old uploads deleted in every provider"
    );
    let oldest = format!("fake-image-{}", builds[0].id);
    assert!(
        !env.local_files().iter().any(|f| f.starts_with(&oldest)),
        "{:?}",
        env.local_files()
    );
    let newest = format!("fake-image-{}.qcow2", builds[2].id);
    assert!(env.local_files().contains(&newest));
}

#[tokio::test]
async fn a_failed_build_is_recorded_failed_and_cleaned_up() {
    let env = Env::new();
    let builder = env.builder(
        "b",
        env.config("[]", "    env-vars:\n      FAKE_DIB_FAIL: '1'"),
    );
    let cancel = CancellationToken::new();
    let built = builder.build_pass(&cancel).await;
    assert_eq!(built[0].state, BuildState::Failed);
    assert_eq!(env.builds().await[0].state, Some(BuildState::Failed));
    assert!(
        !env.local_files()
            .iter()
            .any(|f| f.contains(&built[0].build_id)),
        "partial outputs removed: {:?}",
        env.local_files()
    );
    assert!(builder.upload_all(&cancel).await.is_empty());
    builder.cleanup_pass().await;
    assert!(env.builds().await.is_empty(), "failed builds are not kept");
}

#[tokio::test]
async fn a_failed_upload_is_retried_and_its_record_removed() {
    let env = Env::new();
    let builder = env.default_builder();
    let cancel = CancellationToken::new();
    builder.build_pass(&cancel).await;
    env.cloud.set_faults(FaultSettings {
        error_rate: 1.0,
        ..FaultSettings::default()
    });
    let failed = builder.upload_all(&cancel).await;
    assert!(
        failed.iter().all(|u| u.state == UploadState::Failed),
        "{failed:?}"
    );
    env.cloud.set_faults(FaultSettings::default());
    let retried = builder.upload_all(&cancel).await;
    assert_eq!(retried.len(), 2);
    assert!(retried.iter().all(|u| u.state == UploadState::Ready));

    builder.cleanup_pass().await;
    let build = env.builds().await.pop().unwrap();
    let states: Vec<_> = env
        .store
        .list_uploads("fake-image", &build.id)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.state)
        .collect();
    assert_eq!(states, [Some(UploadState::Ready), Some(UploadState::Ready)]);
}

#[tokio::test]
async fn uploads_to_a_provider_that_drops_the_image_are_deleted() {
    let env = Env::new();
    let builder = env.default_builder();
    let cancel = CancellationToken::new();
    builder.build_pass(&cancel).await;
    builder.upload_all(&cancel).await;
    assert_eq!(env.cloud_image_names().len(), 2);

    let config = env.config("[]", "");
    let providers = providers(&config, &env.cloud);
    builder.reconfigure(Arc::new(config), providers);
    builder.cleanup_pass().await;

    let build = env.builds().await.pop().unwrap();
    let uploads = env
        .store
        .list_uploads("fake-image", &build.id)
        .await
        .unwrap();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].provider_name, "fake-provider");
    assert_eq!(env.cloud_image_names().len(), 1);
}

#[tokio::test]
async fn a_build_left_building_by_a_dead_builder_is_removed_with_its_files() {
    let env = Env::new();
    let builder = env.default_builder();
    // A builder on another session starts a build, then dies.
    let dead = env.store.session();
    dead.lock(
        &LockTarget::ImageBuilds("fake-image".into()),
        &LockOptions::try_once(),
    )
    .await
    .unwrap();
    let id = dead
        .create_build(
            "fake-image",
            &ImageBuild::new("fake-image", BuildState::Building),
        )
        .await
        .unwrap();
    std::fs::create_dir_all(env.dir.join("images")).unwrap();
    std::fs::write(
        env.dir.join(format!("images/fake-image-{id}.qcow2")),
        b"half",
    )
    .unwrap();

    builder.cleanup_pass().await;
    assert_eq!(
        env.builds().await.len(),
        1,
        "in progress while its lock is held"
    );

    dead.close().await.unwrap();
    builder.cleanup_pass().await;
    assert!(env.builds().await.is_empty());
    assert!(env.local_files().is_empty(), "{:?}", env.local_files());
}

#[tokio::test]
async fn two_builders_share_the_work_without_duplicates() {
    let env = Env::new();
    let cfg = |env: &Env| {
        env.config(
            "\n      - name: fake-image",
            "    env-vars:\n      FAKE_DIB_SLEEP: '0.3'",
        )
    };
    let a = env.builder("host-a", cfg(&env));
    let b = env.builder("host-b", cfg(&env));
    let cancel = CancellationToken::new();
    let (ra, rb) = tokio::join!(a.build_pass(&cancel), b.build_pass(&cancel));
    assert_eq!(ra.len() + rb.len(), 1, "{ra:?} {rb:?}");
    assert_eq!(env.builds().await.len(), 1);

    let (ua, ub) = tokio::join!(a.upload_all(&cancel), b.upload_all(&cancel));
    assert_eq!(
        ua.len() + ub.len(),
        2,
        "one upload per provider: {ua:?} {ub:?}"
    );
    let build = env.builds().await.pop().unwrap();
    assert_eq!(
        env.store
            .list_uploads("fake-image", &build.id)
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn dib_image_delete_marks_the_build_and_cleanup_removes_it() {
    let env = Env::new();
    let builder = env.default_builder();
    let cancel = CancellationToken::new();
    builder.build_pass(&cancel).await;
    builder.upload_all(&cancel).await;
    let build = env.builds().await.pop().unwrap();

    let err = admin::delete_build(&env.store, "fake-image-nope")
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "Build fake-image-nope not found");
    assert!(err.is_notice());
    admin::delete_build(&env.store, &format!("fake-image-{}", build.id))
        .await
        .unwrap();
    let (builds, _) = admin::builds(&env.store).await.unwrap();
    assert_eq!(builds[0].state, Some(BuildState::Deleting));

    builder.cleanup_pass().await;
    assert!(env.builds().await.is_empty());
    assert!(env.cloud_image_names().is_empty());
    assert!(env.local_files().is_empty(), "{:?}", env.local_files());
}

#[tokio::test]
async fn image_delete_deletes_one_upload_which_is_then_uploaded_again() {
    let env = Env::new();
    let builder = env.default_builder();
    let cancel = CancellationToken::new();
    builder.build_pass(&cancel).await;
    builder.upload_all(&cancel).await;
    let uploads = admin::uploads(&env.store).await.unwrap();
    let u = uploads
        .iter()
        .find(|u| u.provider_name == "fake-provider")
        .unwrap();
    admin::delete_upload(
        &env.store,
        "fake-provider",
        "fake-image",
        &u.build_id,
        &u.id,
    )
    .await
    .unwrap();
    builder.cleanup_pass().await;
    assert_eq!(admin::uploads(&env.store).await.unwrap().len(), 1);
    let again = builder.upload_all(&cancel).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].provider, "fake-provider");
}

#[tokio::test]
async fn run_builds_and_uploads_then_stops_on_cancel() {
    let env = Env::new();
    let builder = env.default_builder();
    let cancel = CancellationToken::new();
    let task = {
        let builder = Arc::clone(&builder);
        let cancel = cancel.clone();
        tokio::spawn(async move { builder.run(cancel).await })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if admin::uploads(&env.store)
            .await
            .unwrap()
            .iter()
            .filter(|u| u.state == Some(UploadState::Ready))
            .count()
            == 2
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no uploads in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("run stops on cancel")
        .unwrap();
}

/// A shell script `name` in the test's directory.
fn script(env: &Env, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = env.dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The config with `post-upload-hook: hook` on `fake-provider`.
fn config_with_hook(env: &Env, hook: &Path) -> Config {
    let text = yaml(&env.dir, "[]", "").replacen(
        "  - name: fake-provider\n    cloud: fake\n",
        &format!(
            "  - name: fake-provider\n    cloud: fake\n    post-upload-hook: {}\n",
            hook.display()
        ),
        1,
    );
    config(&text)
}

#[tokio::test]
async fn post_upload_hook_runs_with_upstreams_arguments() {
    let env = Env::new();
    let seen = env.dir.join("hook-args");
    let hook = script(
        &env,
        "ok-hook",
        &format!("echo \"$@\" > {}", seen.display()),
    );
    let builder = env.builder("builder1", config_with_hook(&env, &hook));
    let cancel = CancellationToken::new();
    builder.build_pass(&cancel).await;
    let uploads = builder.upload_all(&cancel).await;
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].state, UploadState::Ready);
    let upload = newest_ready_upload_in(&env.store, "fake-image", "fake-provider")
        .await
        .unwrap()
        .unwrap();
    let build = env.builds().await.pop().unwrap();
    // HOOK PROVIDER EXTERNAL_ID FILE, as upstream's builder runs it.
    let args = std::fs::read_to_string(&seen).expect("the hook ran");
    assert_eq!(
        args.trim(),
        format!(
            "fake-provider {} {}",
            upload.external_id.unwrap(),
            env.dir
                .join(format!("images/fake-image-{}.qcow2", build.id))
                .display()
        )
    );
}

#[tokio::test]
async fn a_failing_post_upload_hook_fails_the_upload_and_deletes_the_image() {
    let env = Env::new();
    let hook = script(&env, "bad-hook", "echo checking; exit 3");
    let builder = env.builder("builder1", config_with_hook(&env, &hook));
    let cancel = CancellationToken::new();
    builder.build_pass(&cancel).await;
    let uploads = builder.upload_all(&cancel).await;
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].state, UploadState::Failed);
    assert!(
        env.cloud_image_names().is_empty(),
        "the image the hook refused is deleted: {:?}",
        env.cloud_image_names()
    );
}
