//! Sessions (ephemeral records, locks dying with their session) and
//! watches.

use std::sync::Arc;

use super::{eventually, next_event, ok, some, unique, StoreHarness, PATIENCE};
use crate::model::{Component, ImageBuild, ImageUpload, Node, NodeRequest, NodeState};
use crate::store::{Change, LockOptions, LockTarget, NodeStore, StoreEvent};
use crate::Error;

fn is_node(id: &str, change: Change) -> impl Fn(&StoreEvent) -> bool + '_ {
    move |e| matches!(e, StoreEvent::Node { id: i, change: c } if i == id && *c == change)
}

fn is_request(id: &str, change: Change) -> impl Fn(&StoreEvent) -> bool + '_ {
    move |e| matches!(e, StoreEvent::Request { id: i, change: c } if i == id && *c == change)
}

fn is_image(image: &str) -> impl Fn(&StoreEvent) -> bool + '_ {
    move |e| matches!(e, StoreEvent::Image { image: i } if i == image)
}

fn is_component(kind: &str) -> impl Fn(&StoreEvent) -> bool + '_ {
    move |e| matches!(e, StoreEvent::Component { kind: k } if k == kind)
}

/// The locks of a session end with it: its held lock passes to a waiter of
/// another session, and its handle is no longer valid.
pub async fn locks_die_with_their_session(harness: &dyn StoreHarness) {
    let a = harness.session().await;
    let b = harness.session().await;
    let node = ok(b.create_node(&Node::default()).await, "create_node");
    let target = LockTarget::Node(node.clone());
    let options = |who: &str| LockOptions {
        identifier: Some(who.to_owned()),
        ..LockOptions::wait(PATIENCE)
    };
    let held = ok(a.lock(&target, &options("a")).await, "a locks");
    let waiter = {
        let b = b.clone();
        let target = target.clone();
        let options = options("b");
        tokio::spawn(async move { b.lock(&target, &options).await })
    };
    eventually("b queueing behind a", || async {
        ok(b.lock_contenders(&target).await, "lock_contenders") == ["a", "b"]
    })
    .await;

    harness.expire(&a).await;
    let got = ok(
        ok(
            tokio::time::timeout(PATIENCE, waiter).await,
            "waiting for b",
        ),
        "b's task",
    );
    let got = ok(got, "b's lock after a expired");
    assert_eq!(
        ok(b.lock_contenders(&target).await, "lock_contenders"),
        vec!["b".to_owned()]
    );
    match a.unlock(&held).await {
        Err(Error::LockLost { .. }) | Err(Error::StoreUnavailable(_)) => {}
        other => panic!("unlock after expiry: expected LockLost, got {other:?}"),
    }
    ok(b.unlock(&got).await, "b unlocks");
    ok(b.delete_node(&node).await, "delete_node");
    ok(b.close().await, "close b");
}

/// Node requests are ephemeral: they vanish (announced) when their session
/// ends; nodes are persistent and stay.
pub async fn ephemeral_requests_die_with_their_session(harness: &dyn StoreHarness) {
    let a = harness.session().await;
    let b = harness.session().await;
    let node = ok(a.create_node(&Node::default()).await, "a creates a node");
    let request = NodeRequest {
        node_types: vec!["label-a".to_owned()],
        requestor: Some(unique("requestor")),
        ..NodeRequest::default()
    };
    let ra = ok(
        a.create_request(&request, "100").await,
        "a creates a request",
    );
    let rb = ok(
        b.create_request(&request, "100").await,
        "b creates a request",
    );
    assert!(
        ok(b.get_request(&ra).await, "get_request").is_some(),
        "b sees a's request"
    );

    let mut events = b.watch();
    harness.expire(&a).await;
    next_event(
        &mut events,
        "a's request vanishing",
        is_request(&ra, Change::Deleted),
    )
    .await;
    assert_eq!(ok(b.get_request(&ra).await, "get_request"), None);
    assert!(
        ok(b.list_requests().await, "list_requests")
            .iter()
            .all(|r| r.id != ra),
        "an ended session's request is not listed"
    );
    assert!(
        ok(b.get_request(&rb).await, "get_request").is_some(),
        "b's own request stays"
    );
    assert!(
        ok(b.get_node(&node).await, "get_node").is_some(),
        "nodes outlive the session that made them"
    );
    ok(b.delete_node(&node).await, "delete_node");
    ok(b.delete_request(&rb).await, "delete_request");
    ok(b.close().await, "close b");
}

/// Components register (and re-register) under a kind and vanish with
/// their session; they are listed with their kind and name.
pub async fn components_register_and_die_with_session(harness: &dyn StoreHarness) {
    const KIND: &str = "launcher";
    let a = harness.session().await;
    let b = harness.session().await;
    let (name_a, name_b) = (unique("host-a"), unique("host-b"));
    // (name, kind, hostname) of this test's registrations, by name.
    let mine = |store: Arc<dyn NodeStore>| {
        let names = [name_a.clone(), name_b.clone()];
        async move {
            let mut found: Vec<(String, String, Option<String>)> =
                ok(store.list_components(KIND).await, "list_components")
                    .into_iter()
                    .filter(|c| names.contains(&c.name))
                    .map(|c| (c.name, c.kind, c.hostname))
                    .collect();
            found.sort();
            found
        }
    };
    let entry = |name: &str, host: &str| (name.to_owned(), KIND.to_owned(), Some(host.to_owned()));

    let register = |store: &Arc<dyn NodeStore>, name: &str, host: &str| {
        let (store, name, component) = (store.clone(), name.to_owned(), Component::new(KIND, host));
        async move {
            ok(
                store.register_component(KIND, &name, &component).await,
                "register",
            )
        }
    };
    register(&a, &name_a, "host-1").await;
    register(&b, &name_b, "host-2").await;
    assert_eq!(
        mine(b.clone()).await,
        vec![entry(&name_a, "host-1"), entry(&name_b, "host-2")]
    );

    register(&a, &name_a, "host-3").await;
    assert_eq!(
        mine(b.clone()).await,
        vec![entry(&name_a, "host-3"), entry(&name_b, "host-2")],
        "re-registering replaces the record"
    );

    let mut events = b.watch();
    harness.expire(&a).await;
    next_event(
        &mut events,
        "a's registration vanishing",
        is_component(KIND),
    )
    .await;
    let only_b = vec![entry(&name_b, "host-2")];
    eventually("a's registration vanishing", || async {
        mine(b.clone()).await == only_b
    })
    .await;

    ok(b.unregister_component(KIND, &name_b).await, "unregister b");
    assert!(
        mine(b.clone()).await.is_empty(),
        "unregistered components are not listed"
    );
    ok(b.close().await, "close b");
}

/// Node and request changes of one session are announced to the watchers
/// of another, after they are applied.
pub async fn watch_fires_on_node_and_request_changes(harness: &dyn StoreHarness) {
    let writer = harness.session().await;
    let watcher = harness.session().await;
    let mut events = watcher.watch();

    let mut node = Node {
        state: Some(NodeState::Building),
        ..Node::default()
    };
    node.id = ok(writer.create_node(&node).await, "create_node");
    next_event(&mut events, "node created", is_node(&node.id, Change::Put)).await;
    assert!(
        ok(watcher.get_node(&node.id).await, "get_node").is_some(),
        "a create is applied before it is announced"
    );
    node.state = Some(NodeState::Ready);
    ok(writer.update_node(&node).await, "update_node");
    next_event(&mut events, "node updated", is_node(&node.id, Change::Put)).await;
    let seen = some(ok(watcher.get_node(&node.id).await, "get_node"), "the node");
    assert_eq!(
        seen.state,
        Some(NodeState::Ready),
        "an update is applied before it is announced"
    );
    ok(writer.delete_node(&node.id).await, "delete_node");
    next_event(
        &mut events,
        "node deleted",
        is_node(&node.id, Change::Deleted),
    )
    .await;
    assert_eq!(ok(watcher.get_node(&node.id).await, "get_node"), None);

    let mut request = NodeRequest::default();
    request.id = ok(
        writer.create_request(&request, "100").await,
        "create_request",
    );
    next_event(
        &mut events,
        "request created",
        is_request(&request.id, Change::Put),
    )
    .await;
    assert!(ok(watcher.get_request(&request.id).await, "get_request").is_some());
    request.declined_by.push("somebody".to_owned());
    ok(writer.update_request(&request).await, "update_request");
    next_event(
        &mut events,
        "request updated",
        is_request(&request.id, Change::Put),
    )
    .await;
    let seen = some(
        ok(watcher.get_request(&request.id).await, "get_request"),
        "the request",
    );
    assert_eq!(seen.declined_by, request.declined_by);
    ok(writer.delete_request(&request.id).await, "delete_request");
    next_event(
        &mut events,
        "request deleted",
        is_request(&request.id, Change::Deleted),
    )
    .await;

    ok(writer.close().await, "close writer");
    ok(watcher.close().await, "close watcher");
}

/// Image changes (builds, uploads, flags) and component registrations are
/// announced.
pub async fn watch_fires_on_image_and_component_changes(store: &dyn NodeStore) {
    let mut events = store.watch();
    let image = unique("image");
    let build = ok(
        store.create_build(&image, &ImageBuild::default()).await,
        "create_build",
    );
    next_event(&mut events, "build created", is_image(&image)).await;
    let upload = ImageUpload::default();
    ok(
        store.create_upload(&image, &build, "p1", &upload).await,
        "create_upload",
    );
    next_event(&mut events, "upload created", is_image(&image)).await;
    ok(
        store.set_image_paused(&image, true).await,
        "set_image_paused",
    );
    next_event(&mut events, "image paused", is_image(&image)).await;
    ok(
        store.set_build_requested(&image, true).await,
        "set_build_requested",
    );
    next_event(&mut events, "build requested", is_image(&image)).await;
    ok(store.delete_build(&image, &build).await, "delete_build");
    next_event(&mut events, "build deleted", is_image(&image)).await;
    ok(store.set_image_paused(&image, false).await, "unpause");
    ok(
        store.set_build_requested(&image, false).await,
        "withdraw build request",
    );

    let name = unique("host");
    let component = Component::new("builder", name.clone());
    ok(
        store.register_component("builder", &name, &component).await,
        "register",
    );
    next_event(&mut events, "component registered", is_component("builder")).await;
    ok(
        store.unregister_component("builder", &name).await,
        "unregister",
    );
    next_event(
        &mut events,
        "component unregistered",
        is_component("builder"),
    )
    .await;
}
