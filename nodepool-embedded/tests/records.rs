//! Behaviour of the embedded store beyond the shared suite: corrupt rows,
//! reopening, schema versions, session renewal.

use std::time::Duration;

use nodepool_core::model::{Component, ImageBuild, ImageUpload, Node, NodeRequest};
use nodepool_core::store::{LockOptions, LockTarget, NodeStore, StoreEvent};
use nodepool_core::Error;
use nodepool_embedded::{EmbeddedStore, Error as EmbeddedError};
use rusqlite::{params, Connection};

fn temp_db() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = dir.path().join("nodepool.db");
    (dir, db)
}

fn node(provider: &str) -> Node {
    Node {
        provider: Some(provider.to_string()),
        ..Node::default()
    }
}

fn assert_corrupt<T: std::fmt::Debug>(result: nodepool_core::Result<T>, path: &str) {
    match result {
        Err(Error::Corrupt { path: at, .. }) => assert_eq!(at, path),
        other => panic!("expected Corrupt at {path}, got {other:?}"),
    }
}

#[tokio::test]
async fn corrupt_rows_are_skipped_in_listings_and_reads_fail_with_corrupt() {
    let (_dir, db) = temp_db();
    let store = EmbeddedStore::open(&db).expect("open");
    let good = store.create_node(&node("p")).await.expect("create");
    let bad = store.create_node(&node("p")).await.expect("create");
    let good_request = store
        .create_request(&NodeRequest::default(), "100")
        .await
        .expect("create");
    let bad_request = store
        .create_request(&NodeRequest::default(), "100")
        .await
        .expect("create");
    let build = store
        .create_build("img", &ImageBuild::default())
        .await
        .expect("build");
    let bad_build = store
        .create_build("img", &ImageBuild::default())
        .await
        .expect("build");
    let upload = store
        .create_upload("img", &build, "cloud", &ImageUpload::default())
        .await
        .expect("upload");
    let bad_upload = store
        .create_upload("img", &build, "cloud", &ImageUpload::default())
        .await
        .expect("upload");
    let component = Component::new("launcher", "host-1");
    store
        .register_component("launcher", "good", &component)
        .await
        .expect("register");
    store
        .register_component("launcher", "bad", &component)
        .await
        .expect("register");

    // Another writer (a bug, a disk error, a hand edit) breaks some rows.
    let raw = Connection::open(&db).expect("raw connection");
    let broken = "{\"state\": ";
    let bad_seq: i64 = bad.parse().expect("numeric id");
    raw.execute(
        "UPDATE nodes SET data = ?1 WHERE id = ?2",
        params![broken, bad_seq],
    )
    .expect("break a node");
    raw.execute(
        "UPDATE requests SET data = ?1 WHERE id = ?2",
        params!["[1, 2]", bad_request],
    )
    .expect("break a request");
    raw.execute(
        "UPDATE builds SET data = ?1 WHERE id = ?2",
        params![broken, bad_build],
    )
    .expect("break a build");
    raw.execute(
        "UPDATE uploads SET data = ?1 WHERE build = ?2 AND id = ?3",
        params![broken, build, bad_upload],
    )
    .expect("break an upload");
    raw.execute(
        "UPDATE components SET data = ?1 WHERE name = 'bad'",
        params![broken],
    )
    .expect("break a component");

    let nodes: Vec<String> = store
        .list_nodes()
        .await
        .expect("list")
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(nodes, vec![good.clone()], "the corrupt node is skipped");
    assert_corrupt(
        store.get_node(&bad).await,
        &format!("/nodepool/nodes/{bad}"),
    );
    assert!(store.get_node(&good).await.expect("get").is_some());

    let requests: Vec<String> = store
        .list_requests()
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        requests,
        vec![good_request],
        "the corrupt request is skipped"
    );
    assert_corrupt(
        store.get_request(&bad_request).await,
        &format!("/nodepool/requests/{bad_request}"),
    );

    let builds: Vec<String> = store
        .list_builds("img")
        .await
        .expect("list")
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(builds, vec![build.clone()], "the corrupt build is skipped");
    assert_corrupt(
        store.get_build("img", &bad_build).await,
        &format!("/nodepool/images/img/builds/{bad_build}"),
    );

    let uploads: Vec<String> = store
        .list_uploads("img", &build)
        .await
        .expect("list")
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(uploads, vec![upload], "the corrupt upload is skipped");

    let components: Vec<String> = store
        .list_components("launcher")
        .await
        .expect("list")
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(
        components,
        vec!["good".to_string()],
        "the corrupt component is skipped"
    );
    store.close().await.expect("close");
}

#[tokio::test]
async fn reopening_keeps_persistent_records_and_live_sessions_requests() {
    let (_dir, db) = temp_db();
    // A client with its own worker, as another process, owns a request.
    let client = EmbeddedStore::open(&db).expect("open client");
    let request = client
        .create_request(&NodeRequest::default(), "100")
        .await
        .expect("request");

    let daemon = EmbeddedStore::open(&db).expect("open daemon");
    let id = daemon.create_node(&node("p")).await.expect("node");
    let build = daemon
        .create_build("img", &ImageBuild::default())
        .await
        .expect("build");
    daemon.set_image_paused("img", true).await.expect("pause");
    let target = LockTarget::Node(id.clone());
    let _held = daemon
        .lock(&target, &LockOptions::try_once())
        .await
        .expect("lock");
    drop(daemon);

    let daemon = EmbeddedStore::open(&db).expect("reopen daemon");
    assert!(daemon.get_node(&id).await.expect("get").is_some());
    assert!(daemon
        .get_build("img", &build)
        .await
        .expect("get")
        .is_some());
    assert!(daemon.image_paused("img").await.expect("paused"));
    assert!(
        daemon.get_request(&request).await.expect("get").is_some(),
        "the live client's request survives the daemon's restart"
    );
    // The dropped session's lock went with it.
    let handle = daemon
        .lock(&target, &LockOptions::wait(Duration::from_secs(5)))
        .await
        .expect("the old session's lock was released");
    daemon.unlock(&handle).await.expect("unlock");
    // New ids continue the sequence.
    let next = daemon.create_node(&node("p")).await.expect("node");
    assert!(next > id, "{next} follows {id}");
    daemon.close().await.expect("close");
    client.close().await.expect("close");
}

#[test]
fn a_database_from_a_newer_version_is_refused() {
    let (_dir, db) = temp_db();
    drop(EmbeddedStore::open(&db).expect("create"));
    let raw = Connection::open(&db).expect("raw connection");
    raw.execute_batch("PRAGMA user_version = 99")
        .expect("bump the version");
    match EmbeddedStore::open(&db) {
        Err(EmbeddedError::SchemaTooNew { found: 99, .. }) => {}
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[tokio::test]
async fn an_expired_session_is_renewed_and_watchers_resync() {
    let (_dir, db) = temp_db();
    let store = EmbeddedStore::open(&db).expect("open");
    let mut events = store.watch();
    let old = store.session_id();
    let request = store
        .create_request(&NodeRequest::default(), "100")
        .await
        .expect("request");
    store.expire().await.expect("expire");
    assert_eq!(store.get_request(&request).await.expect("get"), None);

    // The next write that needs the session gets a new one.
    let again = store
        .create_request(&NodeRequest::default(), "100")
        .await
        .expect("request after expiry");
    assert_ne!(store.session_id(), old, "a new session");
    assert!(store.get_request(&again).await.expect("get").is_some());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(StoreEvent::Resync)) => break,
            Ok(Ok(_)) => {}
            other => panic!("expected a Resync event, got {other:?}"),
        }
    }
    store.close().await.expect("close");
}

#[tokio::test]
async fn a_closed_session_refuses_work() {
    let (_dir, db) = temp_db();
    let store = EmbeddedStore::open(&db).expect("open");
    let other = store.session().await.expect("session");
    other.close().await.expect("close");
    match other.create_node(&node("p")).await {
        Err(Error::StoreUnavailable(_)) => {}
        result => panic!("expected StoreUnavailable, got {result:?}"),
    }
    assert!(store
        .list_nodes()
        .await
        .expect("the first session still works")
        .is_empty());
    store.close().await.expect("close");
}

#[tokio::test]
async fn a_write_has_announced_its_events_when_it_returns() {
    let (_dir, db) = temp_db();
    let store = EmbeddedStore::open(&db).expect("open");
    let mut events = store.watch();
    for _ in 0..20 {
        let id = store.create_node(&node("p")).await.expect("create");
        // No await between the write returning and the look: a cache that
        // drains its receiver right after its own write sees the write.
        match events.try_recv() {
            Ok(StoreEvent::Node { id: seen, .. }) => assert_eq!(seen, id),
            other => panic!("expected the node's event at once, got {other:?}"),
        }
        let request = store
            .create_request(&NodeRequest::default(), "100")
            .await
            .expect("create request");
        match events.try_recv() {
            Ok(StoreEvent::Request { id: seen, .. }) => assert_eq!(seen, request),
            other => panic!("expected the request's event at once, got {other:?}"),
        }
    }
}
