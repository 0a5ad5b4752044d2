//! Runs the `request-nodes` example as a process against a launcher running
//! in this test process on the quickstart config (the fake cloud), both on
//! the same embedded store file. Needs no outside service.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use nodepool_core::config::DriverRegistry;
use nodepool_core::launcher::{Launcher, LauncherSettings};
use nodepool_core::provider::Provider;
use nodepool_core::scheduler::DefaultScheduler;
use nodepool_core::store::NodeStore;
use nodepool_embedded::EmbeddedStore;
use tokio_util::sync::CancellationToken;

fn quickstart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../quickstart.yaml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_gets_a_node_uses_it_and_the_launcher_deletes_it() {
    let dir = tempfile::tempdir().expect("state dir");
    let store: Arc<dyn NodeStore> =
        Arc::new(EmbeddedStore::open(dir.path().join("nodepool.sqlite")).expect("open store"));
    let mut reg = DriverRegistry::new();
    nodepool_drivers::register_builtin(&mut reg);
    let config = nodepool_core::config::load(&quickstart(), None, &reg)
        .unwrap_or_else(|e| panic!("the quickstart config loads: {e}"));
    let mut providers: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
    for p in &config.providers {
        let driver = reg.get(&p.driver).expect("a registered driver");
        providers.insert(
            p.name.clone(),
            driver.create_provider(p).expect("the provider starts"),
        );
    }
    let launcher = Arc::new(Launcher::new(
        LauncherSettings::new("example-test"),
        Arc::clone(&store),
        Arc::new(DefaultScheduler),
        config,
        providers,
    ));
    let cancel = CancellationToken::new();
    let running = {
        let (launcher, cancel) = (Arc::clone(&launcher), cancel.clone());
        tokio::spawn(async move { launcher.run(cancel).await })
    };

    let out = tokio::task::spawn_blocking({
        let state_dir = dir.path().to_path_buf();
        move || {
            Command::new(env!("CARGO_BIN_EXE_request-nodes"))
                .arg("--state-dir")
                .arg(state_dir)
                .args(["--timeout", "60", "ubuntu-noble"])
                .output()
                .expect("run the example")
        }
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the example failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let node_id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("node "))
        .and_then(|l| l.split(':').next())
        .unwrap_or_else(|| panic!("the example names its node: {stdout}"))
        .to_string();
    assert!(stdout.contains(&format!("released {node_id}")), "{stdout}");

    // Released means used: the launcher deletes the node.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while store.get_node(&node_id).await.expect("read").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {node_id} was not deleted after its release"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    running
        .await
        .expect("join")
        .expect("the launcher stops cleanly");
}

#[test]
fn example_without_a_store_says_which_file_is_missing() {
    let dir = tempfile::tempdir().expect("dir");
    let out = Command::new(env!("CARGO_BIN_EXE_request-nodes"))
        .arg("--state-dir")
        .arg(dir.path())
        .arg("ubuntu-noble")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nodepool.sqlite does not exist"),
        "{stderr}"
    );
}
