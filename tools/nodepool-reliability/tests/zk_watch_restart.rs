//! A ZooKeeper restart must not leave a session's watch deaf: the
//! requestor (and the launcher) wait on store events.
//!
//! Starts a private server with `scripts/zookeeper.sh start DIR` (so the
//! shared one is never restarted); skipped when ZooKeeper is not installed
//! (`NODEPOOL_TEST_ZK_TLS` unset: CI sets it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nodepool_core::model::{NodeRequest, RequestState};
use nodepool_core::store::{NodeStore, StoreEvent};
use nodepool_zk::{ZkConfig, ZkStore, ZkTls};

struct Server {
    dir: tempfile::TempDir,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/zookeeper.sh")
}

impl Server {
    fn zk(&self, verb: &str) {
        let out = Command::new("bash")
            .arg(script())
            .arg(verb)
            .arg(self.dir.path())
            .output()
            .expect("zookeeper.sh runs");
        assert!(
            out.status.success(),
            "zookeeper.sh {verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn var(&self, name: &str) -> String {
        let env = std::fs::read_to_string(self.dir.path().join("env")).expect("env file");
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .unwrap_or_else(|| panic!("{name} in env"))
            .to_string()
    }

    async fn connect(&self) -> ZkStore {
        let config = ZkConfig::new([self.var("NODEPOOL_TEST_ZK_TLS")])
            .with_chroot("/watch-restart")
            .with_session_timeout(Duration::from_secs(30))
            .with_tls(ZkTls {
                ca: self.var("NODEPOOL_TEST_ZK_CA").into(),
                cert: self.var("NODEPOOL_TEST_ZK_CERT").into(),
                key: self.var("NODEPOOL_TEST_ZK_KEY").into(),
            });
        ZkStore::connect(config).await.expect("connects")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

fn request() -> NodeRequest {
    NodeRequest {
        state: Some(RequestState::Requested),
        node_types: vec!["small".into()],
        requestor: Some("watch-test".into()),
        ..NodeRequest::default()
    }
}

/// Wait up to `within` for an event about request `id`.
async fn event_for(
    events: &mut tokio::sync::broadcast::Receiver<StoreEvent>,
    id: &str,
    within: Duration,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => return Err(format!("no event for request {id} within {within:?}")),
            Ok(Ok(StoreEvent::Request { id: got, .. })) if got == id => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("watch ended: {e}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_delivers_request_events_after_zookeeper_restart() {
    if std::env::var("NODEPOOL_TEST_ZK_TLS").map_or(true, |v| v.is_empty()) {
        eprintln!("NODEPOOL_TEST_ZK_TLS is not set (no ZooKeeper install): skipped");
        return;
    }
    let server = Server {
        dir: tempfile::tempdir().expect("tempdir"),
    };
    server.zk("start");
    let watcher = server.connect().await;
    let writer = server.connect().await;
    let mut events = watcher.watch();

    let before = writer
        .create_request(&request(), "100")
        .await
        .expect("create");
    event_for(&mut events, &before, Duration::from_secs(10))
        .await
        .expect("an event before the restart");

    server.zk("restart");
    // The watcher announces its re-established watches with a Resync; a
    // change made before that is covered by the Resync's re-read, not by an
    // event (ZooKeeper replays nothing to a persistent watch added again).
    let resync_deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout_at(resync_deadline, events.recv()).await {
            Err(_) => panic!("no Resync within 60 s of the restart"),
            Ok(Ok(StoreEvent::Resync)) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("watch ended: {e}"),
        }
    }
    // Both sessions outlive the restart (30 s timeout); wait until the
    // writer can write again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let after = loop {
        match writer.create_request(&request(), "100").await {
            Ok(id) => break id,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("no write after restart: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let seen = watcher.get_request(&after).await;
    assert!(
        matches!(seen, Ok(Some(_))),
        "the watcher's session reads the new request: {seen:?}"
    );
    event_for(&mut events, &after, Duration::from_secs(20))
        .await
        .expect("the watch still delivers events after a ZooKeeper restart");
}
