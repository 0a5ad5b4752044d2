//! `build_workers`: with two workers two images build at once, with one
//! they build one after the other. An image builder that holds every build
//! until the test releases it shows what is `building` at a time.
#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{Builder, BuilderSettings};
use crate::config::{Config, DiskImage};
use crate::image_builder::{BuildSpec, BuiltFile, ImageBuilder};
use crate::model::BuildState;
use crate::store::{MemoryStore, NodeStore};
use crate::Result;

/// Holds each build until a permit is released; counts builds at once.
#[derive(Debug)]
struct HeldBuilds {
    release: Arc<Semaphore>,
    running: AtomicUsize,
    most: AtomicUsize,
}

#[async_trait]
impl ImageBuilder for HeldBuilds {
    async fn build(&self, spec: &BuildSpec, _cancel: CancellationToken) -> Result<Vec<BuiltFile>> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        let permit = self.release.acquire().await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        permit
            .map(|p| p.forget())
            .map_err(|_| crate::Error::InvalidInput {
                message: "the test dropped its gate".into(),
            })?;
        let path = spec.output_base.with_extension("qcow2");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| crate::Error::io("make the image dir", e))?;
        }
        std::fs::write(&path, b"image").map_err(|e| crate::Error::io("write the image", e))?;
        Ok(vec![BuiltFile {
            format: "qcow2".into(),
            path,
            size: 5,
        }])
    }
}

/// A scratch directory, removed on drop.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Images whose newest build is `building` now.
async fn building(store: &dyn NodeStore) -> Vec<String> {
    let mut out = Vec::new();
    for image in ["one", "two"] {
        let builds = store.list_builds(image).await.unwrap();
        if builds.iter().any(|b| b.state == Some(BuildState::Building)) {
            out.push(image.to_string());
        }
    }
    out
}

async fn ready(store: &dyn NodeStore) -> usize {
    let mut n = 0;
    for image in ["one", "two"] {
        let builds = store.list_builds(image).await.unwrap();
        n += builds
            .iter()
            .filter(|b| b.state == Some(BuildState::Ready))
            .count();
    }
    n
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Run a builder with `workers` build workers over images `one` and `two`;
/// returns the most builds seen at once by the image builder and by the
/// store, and the builder's task dump while the first build was held.
async fn run_with(workers: usize) -> (usize, usize, String) {
    let tmp =
        Scratch(std::env::temp_dir().join(format!("np-workers-{}", uuid::Uuid::new_v4().simple())));
    let image = |name: &str| DiskImage {
        name: name.into(),
        formats: vec!["qcow2".into()],
        build_timeout: 3600,
        rebuild_age: 86400,
        ..DiskImage::default()
    };
    let config = Config {
        images_dir: Some(tmp.0.join("images")),
        build_log_dir: Some(tmp.0.join("logs")),
        diskimages: vec![image("one"), image("two")],
        ..Config::default()
    };
    let store = Arc::new(MemoryStore::new());
    let held = Arc::new(HeldBuilds {
        release: Arc::new(Semaphore::new(0)),
        running: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
    });
    let mut settings = BuilderSettings::new("host", "builder-id");
    settings.build_workers = workers;
    settings.build_interval = Duration::from_millis(50);
    settings.debounce = Duration::from_millis(10);
    let registry = settings.tasks.clone();
    let builder = Arc::new(Builder::new(
        Arc::clone(&store) as Arc<dyn NodeStore>,
        Arc::clone(&held) as Arc<dyn ImageBuilder>,
        Arc::new(config),
        BTreeMap::new(),
        settings,
    ));
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let (builder, cancel) = (Arc::clone(&builder), cancel.clone());
        async move { builder.run(cancel).await }
    });

    wait_until("a build to start", || async {
        !building(&*store).await.is_empty()
    })
    .await;
    wait_until("the image builder to run", || async {
        held.running.load(Ordering::SeqCst) > 0
    })
    .await;
    let dump = registry.dump();
    let mut most_in_store = building(&*store).await.len();
    if workers > 1 {
        wait_until("both builds to run", || async {
            building(&*store).await.len() == 2
        })
        .await;
        most_in_store = 2;
    } else {
        // The only worker is inside the held build: for many of its
        // intervals no other build can start.
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(25)).await;
            most_in_store = most_in_store.max(building(&*store).await.len());
        }
    }
    // Release the builds one by one; both images end up built.
    held.release.add_permits(1);
    wait_until("the first build to finish", || async {
        ready(&*store).await >= 1
    })
    .await;
    held.release.add_permits(1);
    wait_until("both builds to finish", || async {
        ready(&*store).await == 2
    })
    .await;
    cancel.cancel();
    run.await.unwrap();
    (held.most.load(Ordering::SeqCst), most_in_store, dump)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_build_workers_build_two_images_at_once() {
    let (most, most_in_store, dump) = run_with(2).await;
    assert_eq!(most, 2, "the image builder ran two builds at once");
    assert_eq!(most_in_store, 2, "both images were `building` at once");
    assert!(dump.contains("build worker 1, "), "{dump}");
    assert!(dump.contains("build worker 2, "), "{dump}");
    assert!(dump.contains("image builder: image "), "{dump}");
    assert!(dump.contains("upload worker, "), "{dump}");
    assert!(dump.contains("builder cleanup worker, "), "{dump}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_build_worker_builds_one_image_at_a_time() {
    let (most, most_in_store, dump) = run_with(1).await;
    assert_eq!(most, 1, "the image builder never ran two builds at once");
    assert_eq!(most_in_store, 1, "never two images `building` at once");
    assert!(dump.contains("build worker 1, "), "{dump}");
    assert!(!dump.contains("build worker 2"), "{dump}");
}
