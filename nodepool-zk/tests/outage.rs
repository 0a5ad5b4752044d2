//! A server restart shorter than the session timeout: the session
//! survives, and watchers are told to resync because ZooKeeper may have
//! dropped events meanwhile. Runs its own server with
//! `scripts/zookeeper.sh` (the shared one must not be restarted), when the
//! environment has a ZooKeeper (`NODEPOOL_TEST_ZK_TLS` set).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{server_or_skip, unique_chroot, TestServer};
use nodepool_core::store::{LockOptions, LockTarget, NodeStore, StoreEvent};
use nodepool_zk::{ZkConfig, ZkStore, ZkTls};
use tokio::sync::broadcast::error::RecvError;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/zookeeper.sh")
}

fn run_script(command: &str, dir: &Path) {
    let status = Command::new("bash")
        .arg(script())
        .arg(command)
        .arg(dir)
        .status()
        .unwrap_or_else(|e| panic!("running zookeeper.sh {command}: {e}"));
    assert!(
        status.success(),
        "zookeeper.sh {command} {} failed",
        dir.display()
    );
}

/// A private server, stopped when dropped.
struct PrivateServer {
    dir: PathBuf,
}

impl PrivateServer {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(unique_chroot("zk").replace('/', "_"));
        run_script("start", &dir);
        Self { dir }
    }

    /// The TLS address and files from the `env` file the script wrote.
    fn server(&self) -> TestServer {
        let env = std::fs::read_to_string(self.dir.join("env")).expect("reading the server's env");
        let var = |name: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("{name} in the server's env"))
                .to_owned()
        };
        TestServer {
            hosts: var("NODEPOOL_TEST_ZK_TLS"),
            tls: ZkTls {
                ca: var("NODEPOOL_TEST_ZK_CA").into(),
                cert: var("NODEPOOL_TEST_ZK_CERT").into(),
                key: var("NODEPOOL_TEST_ZK_KEY").into(),
            },
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_keeps_the_session_and_announces_resync() {
    if server_or_skip("server_restart_keeps_the_session_and_announces_resync").is_none() {
        return;
    }
    let private = PrivateServer::start();
    let server = private.server();
    // Long enough to survive a restart on a busy machine (the server's
    // default maximum is 40 s).
    let config: ZkConfig = server
        .config(&unique_chroot("outage"))
        .with_session_timeout(Duration::from_secs(40));
    let store = ZkStore::connect(config).await.expect("connect");
    let session = store.session_id().expect("session id");
    let request = store
        .create_request(&Default::default(), "100")
        .await
        .expect("create_request");
    let mut events = store.watch();

    let dir = private.dir.clone();
    tokio::task::spawn_blocking(move || run_script("restart", &dir))
        .await
        .expect("restart task");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => panic!("no Resync within 60 s of the restart"),
            Ok(Ok(StoreEvent::Resync)) => break,
            Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => {}
            Ok(Err(RecvError::Closed)) => panic!("watch closed"),
        }
    }
    assert_eq!(
        store.session_id().expect("session id"),
        session,
        "the session survived the restart"
    );
    assert!(
        store
            .get_request(&request)
            .await
            .expect("get_request")
            .is_some(),
        "the session's ephemeral request survived"
    );
    let node = store
        .create_node(&Default::default())
        .await
        .expect("create_node after the restart");
    store.delete_node(&node).await.expect("delete_node");
    store.close().await.expect("close");
}

/// Waits up to `within` for an event `wanted` accepts; panics naming
/// `what` otherwise.
async fn wait_for(
    events: &mut tokio::sync::broadcast::Receiver<StoreEvent>,
    within: Duration,
    what: &str,
    wanted: impl Fn(&StoreEvent) -> bool,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => panic!("no {what} within {within:?}"),
            Ok(Ok(event)) if wanted(&event) => return,
            Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => {}
            Ok(Err(RecvError::Closed)) => panic!("watch closed while waiting for {what}"),
        }
    }
}

/// The server forgets a connection's watches and `zookeeper-client` 0.11
/// does not set persistent ones again when the session reconnects: the
/// store must, or its watch goes deaf while reads still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_delivers_another_clients_changes_after_a_server_restart() {
    if server_or_skip("watch_delivers_another_clients_changes_after_a_server_restart").is_none() {
        return;
    }
    let private = PrivateServer::start();
    let server = private.server();
    let chroot = unique_chroot("outage-watch");
    let config = || {
        server
            .config(&chroot)
            .with_session_timeout(Duration::from_secs(40))
    };
    let watcher = ZkStore::connect(config()).await.expect("connect watcher");
    let writer = ZkStore::connect(config()).await.expect("connect writer");
    let session = watcher.session_id().expect("session id");
    let mut events = watcher.watch();

    let before = writer
        .create_node(&Default::default())
        .await
        .expect("create_node before the restart");
    wait_for(
        &mut events,
        Duration::from_secs(10),
        "event before the restart",
        |e| matches!(e, StoreEvent::Node { id, .. } if *id == before),
    )
    .await;

    let dir = private.dir.clone();
    tokio::task::spawn_blocking(move || run_script("restart", &dir))
        .await
        .expect("restart task");
    // Changes made before the watches are back are what Resync covers;
    // changes made after it must arrive as events.
    wait_for(
        &mut events,
        Duration::from_secs(60),
        "Resync after the restart",
        |e| matches!(e, StoreEvent::Resync),
    )
    .await;
    assert_eq!(
        watcher.session_id().expect("session id"),
        session,
        "the watcher's session survived the restart"
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let after = loop {
        match writer.create_node(&Default::default()).await {
            Ok(id) => break id,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("the writer cannot write 60 s after the restart: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    wait_for(
        &mut events,
        Duration::from_secs(20),
        "event for a node created after the restart",
        |e| matches!(e, StoreEvent::Node { id, .. } if *id == after),
    )
    .await;

    writer.delete_node(&before).await.expect("delete_node");
    writer.delete_node(&after).await.expect("delete_node");
    writer.close().await.expect("close writer");
    watcher.close().await.expect("close watcher");
}

/// Locks taken before a server restart and released while it happens
/// (some releases cut off in flight, some sent while the server is down)
/// all end: no contender of the surviving session is left to hold a lock
/// for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_released_across_a_server_restart_leave_no_contender() {
    if server_or_skip("locks_released_across_a_server_restart_leave_no_contender").is_none() {
        return;
    }
    let private = PrivateServer::start();
    let server = private.server();
    let chroot = unique_chroot("outage-unlock");
    let config = server
        .config(&chroot)
        .with_session_timeout(Duration::from_secs(40));
    let store = ZkStore::connect(config).await.expect("connect");
    let session = store.session_id().expect("session id");
    let mut handles = Vec::new();
    for _ in 0..30 {
        let id = store
            .create_node(&Default::default())
            .await
            .expect("create_node");
        let target = LockTarget::Node(id);
        let handle = store
            .lock(&target, &LockOptions::try_once())
            .await
            .expect("lock");
        handles.push(handle);
    }

    let dir = private.dir.clone();
    let restart = tokio::task::spawn_blocking(move || run_script("restart", &dir));
    // Spread over the restart: before the stop, during it, while down.
    let releasing = store.clone();
    let releases = tokio::spawn(async move {
        let mut pending = Vec::new();
        for handle in handles {
            let store = releasing.clone();
            pending.push(tokio::spawn(async move {
                let result = store.unlock(&handle).await;
                (handle, result)
            }));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let mut done = Vec::new();
        for task in pending {
            done.push(task.await.expect("unlock task"));
        }
        done
    });
    restart.await.expect("restart task");
    let released = tokio::time::timeout(Duration::from_secs(90), releases)
        .await
        .expect("every unlock ends within 90 s")
        .expect("releases task");
    assert_eq!(
        store.session_id().expect("session id"),
        session,
        "the session survived the restart"
    );

    let other = ZkStore::connect(server.config(&chroot))
        .await
        .expect("connect after the restart");
    for (handle, result) in released {
        if let Err(e) = result {
            panic!("unlocking {} across the restart: {e}", handle.target);
        }
        assert_eq!(
            other
                .lock_contenders(&handle.target)
                .await
                .expect("lock_contenders"),
            Vec::<String>::new(),
            "no contender left on {}",
            handle.target
        );
    }
    other.close().await.expect("close other");
    store.close().await.expect("close");
}
