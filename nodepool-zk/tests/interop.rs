//! Interoperation with upstream nodepool 11 on one ZooKeeper: kazoo's lock
//! recipe and our locks exclude each other, and each side reads the nodes
//! and requests the other wrote. The upstream side is `upstream_peer.py`,
//! run by the Python of `NODEPOOL_TEST_UPSTREAM_PYTHON`.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{server_or_skip, unique_chroot, upstream_python_or_skip, TestServer};
use nodepool_core::model::{Node, NodeRequest, NodeState, RequestState};
use nodepool_core::store::{Change, LockOptions, LockTarget, NodeStore, StoreEvent};
use nodepool_core::Error;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long one command of the peer may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Upstream nodepool's `ZooKeeper` class in a Python process.
struct UpstreamPeer {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl UpstreamPeer {
    async fn start(python: &str, server: &TestServer, chroot: &str) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/upstream_peer.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(format!("{}{chroot}", server.hosts))
            .arg(&server.tls.ca)
            .arg(&server.tls.cert)
            .arg(&server.tls.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {python} {script}: {e}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut peer = Self {
            child,
            stdin,
            stdout,
        };
        let hello = peer.read().await;
        assert_eq!(hello, json!({"ready": true}), "the peer connected");
        peer
    }

    async fn read(&mut self) -> Value {
        let line = tokio::time::timeout(REPLY_TIMEOUT, self.stdout.next_line())
            .await
            .expect("the peer answers in time")
            .expect("reading the peer's answer")
            .expect("the peer is still running");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("peer said {line:?}: {e}"))
    }

    /// Sends one command and returns the answer; panics on a peer error.
    async fn call(&mut self, command: Value) -> Value {
        let mut line = command.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("writing to the peer");
        let reply = self.read().await;
        assert!(
            reply.get("error").is_none(),
            "the peer failed {command}: {reply}"
        );
        reply
    }

    async fn quit(mut self) {
        let _ = self.stdin.write_all(b"{\"op\": \"quit\"}\n").await;
        let _ = tokio::time::timeout(REPLY_TIMEOUT, self.child.wait()).await;
    }
}

/// The server, the upstream Python and a chroot, or `None` to skip.
fn setup(test: &str) -> Option<(TestServer, String, String)> {
    let server = server_or_skip(test)?;
    let python = upstream_python_or_skip(test)?;
    Some((server, python, unique_chroot(test)))
}

fn try_once(identifier: &str) -> LockOptions {
    LockOptions {
        identifier: Some(identifier.to_owned()),
        ..LockOptions::try_once()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kazoo_node_lock_excludes_ours_and_hands_over_to_our_waiter() {
    let Some((server, python, chroot)) =
        setup("kazoo_node_lock_excludes_ours_and_hands_over_to_our_waiter")
    else {
        return;
    };
    let store = server.store(&chroot).await;
    let mut peer = UpstreamPeer::start(&python, &server, &chroot).await;
    let id = store
        .create_node(&Node::new(NodeState::Ready))
        .await
        .expect("create_node");
    let target = LockTarget::Node(id.clone());

    let reply = peer
        .call(json!({"op": "lock_node", "id": id, "identifier": "upstream-launcher"}))
        .await;
    assert_eq!(reply["locked"], json!(true), "kazoo takes the free lock");
    match store.lock(&target, &try_once("rust")).await {
        Err(Error::LockHeld { .. }) => {}
        other => {
            panic!("our try_once while kazoo holds the lock: expected LockHeld, got {other:?}")
        }
    }
    assert_eq!(
        store
            .lock_contenders(&target)
            .await
            .expect("lock_contenders"),
        vec!["upstream-launcher".to_owned()],
        "we read kazoo's identifier"
    );

    // Our blocking attempt queues behind kazoo's and wins when it lets go.
    let waiter = {
        let store = store.clone();
        let target = target.clone();
        tokio::spawn(async move {
            let options = LockOptions {
                identifier: Some("rust-waiter".to_owned()),
                ..LockOptions::wait(Duration::from_secs(30))
            };
            store.lock(&target, &options).await
        })
    };
    let reply = loop {
        let reply = peer
            .call(json!({"op": "node_lock_contenders", "id": id}))
            .await;
        if reply["contenders"].as_array().map(Vec::len) == Some(2) {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        reply["contenders"],
        json!(["upstream-launcher", "rust-waiter"]),
        "kazoo sees our contender queued behind its own"
    );
    assert!(!waiter.is_finished(), "we wait while kazoo holds the lock");
    peer.call(json!({"op": "unlock_node", "id": id})).await;
    let handle = waiter
        .await
        .expect("waiter task")
        .expect("our lock after kazoo released it");
    store.unlock(&handle).await.expect("unlock");

    store.delete_node(&id).await.expect("delete_node");
    peer.quit().await;
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_locks_exclude_kazoo_on_nodes_and_requests() {
    let Some((server, python, chroot)) = setup("our_locks_exclude_kazoo_on_nodes_and_requests")
    else {
        return;
    };
    let store = server.store(&chroot).await;
    let mut peer = UpstreamPeer::start(&python, &server, &chroot).await;

    let id = store
        .create_node(&Node::new(NodeState::Ready))
        .await
        .expect("create_node");
    let held = store
        .lock(&LockTarget::Node(id.clone()), &try_once("rust-launcher"))
        .await
        .expect("our lock");
    let reply = peer.call(json!({"op": "lock_node", "id": id})).await;
    assert_eq!(
        reply["locked"],
        json!(false),
        "kazoo cannot take our node lock"
    );
    let reply = peer
        .call(json!({"op": "node_lock_contenders", "id": id}))
        .await;
    assert_eq!(reply["contenders"], json!(["rust-launcher"]));
    store.unlock(&held).await.expect("unlock");
    let reply = peer.call(json!({"op": "lock_node", "id": id})).await;
    assert_eq!(
        reply["locked"],
        json!(true),
        "kazoo takes it once we let go"
    );
    peer.call(json!({"op": "unlock_node", "id": id})).await;

    // Request locks live at /nodepool/requests-lock/<id>.
    let reply = peer
        .call(json!({"op": "store_request", "priority": "100",
                     "request": {"node_types": ["label-a"], "state": "requested"}}))
        .await;
    let request = reply["id"].as_str().expect("request id").to_owned();
    let held = store
        .lock(
            &LockTarget::Request(request.clone()),
            &try_once("rust-launcher"),
        )
        .await
        .expect("our request lock");
    let reply = peer
        .call(json!({"op": "lock_request", "id": request}))
        .await;
    assert_eq!(
        reply["locked"],
        json!(false),
        "kazoo cannot take our request lock"
    );
    store.unlock(&held).await.expect("unlock");
    let reply = peer
        .call(json!({"op": "lock_request", "id": request}))
        .await;
    assert_eq!(
        reply["locked"],
        json!(true),
        "kazoo takes the request lock once free"
    );
    match store
        .lock(
            &LockTarget::Request(request.clone()),
            &try_once("rust-launcher"),
        )
        .await
    {
        Err(Error::LockHeld { .. }) => {}
        other => panic!("our try_once on kazoo's request lock: expected LockHeld, got {other:?}"),
    }
    peer.call(json!({"op": "unlock_request", "id": request}))
        .await;

    store.delete_node(&id).await.expect("delete_node");
    peer.quit().await;
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reads_the_node_and_request_we_wrote() {
    let Some((server, python, chroot)) = setup("upstream_reads_the_node_and_request_we_wrote")
    else {
        return;
    };
    let store = server.store(&chroot).await;
    let mut peer = UpstreamPeer::start(&python, &server, &chroot).await;

    let mut node = Node::new(NodeState::Ready);
    node.provider = Some("cloud-a".to_owned());
    node.pool = Some("main".to_owned());
    node.labels = vec!["label-a".to_owned()];
    node.external_id = Some("server-1".to_owned());
    node.interface_ip = Some("192.0.2.10".to_owned());
    let id = store.create_node(&node).await.expect("create_node");

    let request = NodeRequest {
        state: Some(RequestState::Requested),
        node_types: vec!["label-a".to_owned(), "label-b".to_owned()],
        requestor: Some("zuul-scheduler".to_owned()),
        relative_priority: 2,
        ..NodeRequest::default()
    };
    let request_id = store
        .create_request(&request, "200")
        .await
        .expect("create_request");

    let reply = peer.call(json!({"op": "get_node", "id": id})).await;
    assert_eq!(reply["id"], json!(id), "upstream finds the node");
    let theirs = &reply["node"];
    assert_eq!(theirs["state"], json!("ready"));
    assert_eq!(theirs["provider"], json!("cloud-a"));
    assert_eq!(theirs["pool"], json!("main"));
    assert_eq!(theirs["type"], json!(["label-a"]));
    assert_eq!(theirs["external_id"], json!("server-1"));
    assert_eq!(theirs["interface_ip"], json!("192.0.2.10"));
    assert_eq!(theirs["state_time"], json!(node.state_time));

    let reply = peer
        .call(json!({"op": "get_request", "id": request_id}))
        .await;
    assert_eq!(reply["id"], json!(request_id), "upstream finds the request");
    assert!(request_id.starts_with("200-"), "{request_id}");
    let theirs = &reply["request"];
    assert_eq!(theirs["state"], json!("requested"));
    assert_eq!(theirs["node_types"], json!(["label-a", "label-b"]));
    assert_eq!(theirs["requestor"], json!("zuul-scheduler"));
    assert_eq!(theirs["relative_priority"], json!(2));

    store.delete_node(&id).await.expect("delete_node");
    store
        .delete_request(&request_id)
        .await
        .expect("delete_request");
    peer.quit().await;
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_read_and_watch_the_node_and_request_upstream_wrote() {
    let Some((server, python, chroot)) =
        setup("we_read_and_watch_the_node_and_request_upstream_wrote")
    else {
        return;
    };
    let store = server.store(&chroot).await;
    let mut events = store.watch();
    let mut peer = UpstreamPeer::start(&python, &server, &chroot).await;

    let reply = peer
        .call(json!({"op": "store_node", "node": {
            "state": "ready", "provider": "cloud-b", "pool": "main",
            "type": ["label-b"], "external_id": "server-2",
            "allocated_to": "100-0000000123"}}))
        .await;
    let id = reply["id"].as_str().expect("node id").to_owned();
    let reply = peer
        .call(
            json!({"op": "store_request", "priority": "100", "request": {
            "state": "requested", "node_types": ["label-b"],
            "requestor": "upstream-cli", "relative_priority": 1}}),
        )
        .await;
    let request_id = reply["id"].as_str().expect("request id").to_owned();

    let node = store
        .get_node(&id)
        .await
        .expect("get_node")
        .expect("upstream's node is found");
    assert_eq!(node.id, id);
    assert_eq!(node.state, Some(NodeState::Ready));
    assert_eq!(node.provider.as_deref(), Some("cloud-b"));
    assert_eq!(node.labels, vec!["label-b".to_owned()]);
    assert_eq!(node.external_id.as_deref(), Some("server-2"));
    assert_eq!(node.allocated_to.as_deref(), Some("100-0000000123"));
    assert!(
        store
            .list_nodes()
            .await
            .expect("list_nodes")
            .iter()
            .any(|n| n.id == id),
        "upstream's node is listed"
    );

    let request = store
        .get_request(&request_id)
        .await
        .expect("get_request")
        .expect("upstream's request is found");
    assert_eq!(request.state, Some(RequestState::Requested));
    assert_eq!(request.node_types, vec!["label-b".to_owned()]);
    assert_eq!(request.requestor.as_deref(), Some("upstream-cli"));
    assert_eq!(request.relative_priority, 1);

    let mut seen_node = false;
    let mut seen_request = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !(seen_node && seen_request) {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("watch events for upstream's writes within 30 s")
            .expect("watch open");
        seen_node |= event
            == StoreEvent::Node {
                id: id.clone(),
                change: Change::Put,
            };
        seen_request |= event
            == StoreEvent::Request {
                id: request_id.clone(),
                change: Change::Put,
            };
    }

    // Upstream's request is ephemeral to its session: it goes with it.
    peer.quit().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("the request's deletion is announced within 30 s")
            .expect("watch open");
        if event
            == (StoreEvent::Request {
                id: request_id.clone(),
                change: Change::Deleted,
            })
        {
            break;
        }
    }
    assert_eq!(
        store.get_request(&request_id).await.expect("get_request"),
        None
    );
    store.delete_node(&id).await.expect("delete_node");
    store.close().await.expect("close");
}
