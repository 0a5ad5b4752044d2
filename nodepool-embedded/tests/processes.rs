//! Several processes on one database file: a `kill -9` loses nothing
//! acknowledged and frees the dead process's locks and ephemeral records;
//! one process's writes reach another's watch; locks hand over across
//! processes.
//!
//! The other process is this test binary run again with
//! `NODEPOOL_EMBEDDED_CHILD` naming what it should do: each test checks the
//! variable first and, in the child, plays its part instead.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use nodepool_core::model::{Node, NodeRequest};
use nodepool_core::store::{Change, LockOptions, LockTarget, NodeStore, StoreEvent};
use nodepool_embedded::EmbeddedStore;
use tokio::sync::broadcast::error::RecvError;

const CHILD: &str = "NODEPOOL_EMBEDDED_CHILD";
const DB: &str = "NODEPOOL_EMBEDDED_DB";
const PATIENCE: Duration = Duration::from_secs(15);

/// A child process, killed if the test fails before it ends.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for ChildGuard {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// Runs this test binary again as a child playing `role` in `test`.
fn spawn_child(test: &str, role: &str, db: &Path) -> ChildGuard {
    let exe = std::env::current_exe().expect("the test binary's path");
    let child = Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, role)
        .env(DB, db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child process");
    ChildGuard(child)
}

/// The child's role, if this process is a child.
fn child_role() -> Option<(String, std::path::PathBuf)> {
    let role = std::env::var(CHILD).ok()?;
    let db = std::env::var(DB).expect("the child is told the database path");
    Some((role, db.into()))
}

/// Prints a line for the parent and flushes it.
fn tell_parent(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").expect("write to the parent");
    out.flush().expect("flush to the parent");
}

/// Reads the child's lines until one starts with `prefix`; returns the rest.
fn expect_line(lines: &mut impl Iterator<Item = std::io::Result<String>>, prefix: &str) -> String {
    for line in lines {
        let line = line.expect("read the child's output");
        // libtest may have printed "test name ... " on the same line.
        if let Some(at) = line.find(prefix) {
            return line[at + prefix.len()..].trim().to_string();
        }
    }
    panic!("the child ended before printing {prefix:?}");
}

fn child_lines(child: &mut Child) -> std::io::Lines<BufReader<ChildStdout>> {
    BufReader::new(child.stdout.take().expect("the child's stdout")).lines()
}

fn crash_node(n: usize) -> Node {
    Node {
        provider: Some("crash-child".to_string()),
        external_id: Some(format!("server-{n}")),
        ..Node::default()
    }
}

/// The child of the crash test: takes a lock, makes an ephemeral request,
/// then writes nodes as fast as it can, acknowledging each, until killed.
async fn crash_child(db: &Path) {
    let store = EmbeddedStore::open(db).expect("child opens the store");
    let lock_node = store.create_node(&Node::default()).await.expect("create");
    let target = LockTarget::Node(lock_node.clone());
    store
        .lock(&target, &LockOptions::try_once())
        .await
        .expect("child takes the lock");
    let request = store
        .create_request(&NodeRequest::default(), "100")
        .await
        .expect("child makes a request");
    tell_parent(&format!("LOCKED {lock_node} {request}"));
    for n in 0..1_000_000 {
        let id = store.create_node(&crash_node(n)).await.expect("create");
        tell_parent(&format!("ACK {n} {id}"));
    }
    panic!("the parent did not kill the child");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_write_and_frees_the_dead_session() {
    if let Some((_, db)) = child_role() {
        return crash_child(&db).await;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = dir.path().join("nodepool.db");
    // The parent's session watches while the child runs.
    let watcher = EmbeddedStore::open(&db).expect("open the store");
    let mut events = watcher.watch();

    let mut child = spawn_child(
        "kill_9_loses_no_acknowledged_write_and_frees_the_dead_session",
        "crash",
        &db,
    );
    let mut lines = child_lines(&mut child);
    let locked = expect_line(&mut lines, "LOCKED ");
    let (lock_node, request) = locked.split_once(' ').expect("node and request ids");
    let target = LockTarget::Node(lock_node.to_string());
    assert!(
        watcher.get_request(request).await.expect("get").is_some(),
        "the child's request is visible while it lives"
    );

    // Let it write for a while, then kill -9 it in the middle of writing.
    let mut acked = Vec::new();
    while acked.len() < 300 {
        let line = expect_line(&mut lines, "ACK ");
        let (_, id) = line.split_once(' ').expect("ACK n id");
        acked.push(id.to_string());
    }
    child.kill().expect("SIGKILL the child");
    // Every line it printed before dying was acknowledged.
    for line in lines {
        let line = line.expect("read the child's output");
        if let Some(at) = line.find("ACK ") {
            let (_, id) = line[at + 4..].split_once(' ').expect("ACK n id");
            acked.push(id.to_string());
        }
    }
    child.wait().expect("reap the child");

    // A fresh open (a new worker and connection, as a restarted daemon)
    // sees every acknowledged node.
    let store = EmbeddedStore::open(&db).expect("reopen the store");
    let stored: std::collections::BTreeSet<String> = store
        .list_nodes()
        .await
        .expect("list")
        .into_iter()
        .filter(|n| n.provider.as_deref() == Some("crash-child"))
        .map(|n| n.id)
        .collect();
    let missing: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    println!(
        "child acknowledged {} nodes before SIGKILL, all {} stored",
        acked.len(),
        stored.len()
    );

    // The dead child's lock and request go once its session is found dead
    // (by pid, at once: no need to wait for the heartbeat timeout).
    let start = Instant::now();
    let handle = store
        .lock(&target, &LockOptions::wait(PATIENCE))
        .await
        .expect("the dead child's lock is released");
    println!("dead child's lock taken after {:?}", start.elapsed());
    assert_eq!(store.get_request(request).await.expect("get"), None);
    store.unlock(&handle).await.expect("unlock");

    // The watcher saw the request vanish.
    loop {
        match tokio::time::timeout(PATIENCE, events.recv()).await {
            Err(_) => panic!("no event for the dead child's request within {PATIENCE:?}"),
            Ok(Err(RecvError::Closed)) => panic!("watch closed"),
            Ok(Err(RecvError::Lagged(_))) => {}
            Ok(Ok(StoreEvent::Request {
                id,
                change: Change::Deleted,
            })) if id == request => break,
            Ok(Ok(_)) => {}
        }
    }
    store.close().await.expect("close");
    watcher.close().await.expect("close");
}

/// The child of the watch test: creates a node, then waits for a lock the
/// parent holds.
async fn writer_child(db: &Path) {
    let store = EmbeddedStore::open(db).expect("child opens the store");
    let id = store
        .create_node(&Node {
            provider: Some("writer-child".to_string()),
            ..Node::default()
        })
        .await
        .expect("create");
    tell_parent(&format!("CREATED {id}"));
    let mut go = String::new();
    std::io::stdin()
        .read_line(&mut go)
        .expect("wait for the parent");
    let target = LockTarget::Node(id);
    let options = LockOptions {
        identifier: Some("child".to_string()),
        ..LockOptions::wait(PATIENCE)
    };
    let wait_start = Instant::now();
    let handle = store.lock(&target, &options).await.expect("child's lock");
    tell_parent(&format!("LOCKED after {:?}", wait_start.elapsed()));
    store.unlock(&handle).await.expect("unlock");
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_processes_write_reaches_the_watch_and_locks_hand_over() {
    if let Some((_, db)) = child_role() {
        return writer_child(&db).await;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = dir.path().join("nodepool.db");
    let store = EmbeddedStore::open(&db).expect("open the store");
    let mut events = store.watch();
    let mut child = spawn_child(
        "another_processes_write_reaches_the_watch_and_locks_hand_over",
        "writer",
        &db,
    );

    // The child's node arrives on this process's watch.
    let started = Instant::now();
    let id = loop {
        match tokio::time::timeout(PATIENCE, events.recv()).await {
            Err(_) => panic!("no event from the child within {PATIENCE:?}"),
            Ok(Err(RecvError::Lagged(n))) => panic!("lagged by {n}"),
            Ok(Err(RecvError::Closed)) => panic!("watch closed"),
            Ok(Ok(StoreEvent::Node {
                id,
                change: Change::Put,
            })) => break id,
            Ok(Ok(_)) => {}
        }
    };
    let seen_at = started.elapsed();
    let mut lines = child_lines(&mut child);
    let created = expect_line(&mut lines, "CREATED ");
    assert_eq!(id, created, "the event names the child's node");
    // From the child's spawn: its start-up plus at most one 50 ms poll;
    // a loaded machine gets slack, but not the whole patience.
    let line_at = started.elapsed();
    println!("child's write seen after {seen_at:?} (its line read after {line_at:?})");
    assert!(
        seen_at < Duration::from_secs(5),
        "another process's write took {seen_at:?} to reach the watch"
    );

    // Hold the node's lock; the child waits for it in its own process.
    let target = LockTarget::Node(id.clone());
    let held = store
        .lock(
            &target,
            &LockOptions {
                identifier: Some("parent".to_string()),
                ..LockOptions::try_once()
            },
        )
        .await;
    let held = held.expect("the parent takes the lock first");
    let mut stdin = child.stdin.take().expect("the child's stdin");
    writeln!(stdin, "GO").expect("tell the child to lock");
    let deadline = Instant::now() + PATIENCE;
    while store.lock_contenders(&target).await.expect("contenders") != ["parent", "child"] {
        assert!(
            Instant::now() < deadline,
            "the child never queued for the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let released = Instant::now();
    store.unlock(&held).await.expect("unlock");
    let locked = expect_line(&mut lines, "LOCKED ");
    let handover = released.elapsed();
    println!("child's lock after the parent's unlock: {handover:?} ({locked})");
    assert!(
        handover < Duration::from_secs(5),
        "a cross-process lock hand-over took {handover:?}"
    );
    let status = child.wait().expect("the child ends");
    assert!(status.success(), "the child failed: {status}");
    store.delete_node(&id).await.expect("delete");
    store.close().await.expect("close");
}
