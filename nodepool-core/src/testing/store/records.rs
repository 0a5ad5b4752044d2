//! Nodes and node requests: CRUD, ids, concurrent writers.

use std::collections::BTreeSet;

use super::{node_fields, ok, request_fields, some, unique, StoreHarness};
use crate::model::{Node, NodeRequest, NodeState, RequestState};
use crate::store::NodeStore;
use crate::Error;

/// Whether `id` looks like a ZooKeeper sequence number: ten digits.
fn is_sequence(id: &str) -> bool {
    id.len() == 10 && id.bytes().all(|b| b.is_ascii_digit())
}

/// The sequence part of a request id, `"100-0000000042"` -> 42.
fn request_sequence(id: &str) -> u64 {
    let (_, seq) = id
        .split_once('-')
        .unwrap_or_else(|| panic!("request id {id:?} has no '-'"));
    assert!(is_sequence(seq), "request id {id:?}: bad sequence part");
    ok(seq.parse::<u64>(), "parsing a request sequence")
}

fn sample_node(provider: &str) -> Node {
    Node {
        state: Some(NodeState::Building),
        state_time: Some(1_700_000_000.5),
        provider: Some(provider.to_owned()),
        pool: Some("main".to_owned()),
        labels: vec!["label-a".to_owned(), "label-b".to_owned()],
        launcher: Some("suite-launcher".to_owned()),
        ..Node::default()
    }
}

/// Create, read, update, list and delete a node.
pub async fn node_crud(store: &dyn NodeStore) {
    let provider = unique("provider");
    let node = sample_node(&provider);
    let id = ok(store.create_node(&node).await, "create_node");
    assert!(
        is_sequence(&id),
        "node id {id:?} is not a ten-digit sequence"
    );

    let stored = some(
        ok(store.get_node(&id).await, "get_node"),
        "the new node is stored",
    );
    let expected = Node {
        id: id.clone(),
        ..node.clone()
    };
    assert_eq!(node_fields(&stored), node_fields(&expected));

    let mut updated = stored.clone();
    updated.state = Some(NodeState::Ready);
    updated.external_id = Some(unique("server"));
    updated.allocated_to = Some("100-0000000000".to_owned());
    ok(store.update_node(&updated).await, "update_node");
    let stored = some(
        ok(store.get_node(&id).await, "get_node"),
        "the node is still stored",
    );
    assert_eq!(node_fields(&stored), node_fields(&updated));

    let listed = ok(store.list_nodes().await, "list_nodes");
    let mine: Vec<_> = listed
        .iter()
        .filter(|n| n.id == id)
        .map(node_fields)
        .collect();
    assert_eq!(
        mine,
        vec![node_fields(&updated)],
        "list_nodes holds the node once"
    );
    let ids: Vec<&str> = listed.iter().map(|n| n.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "list_nodes is in id order");

    ok(store.delete_node(&id).await, "delete_node");
    assert!(ok(store.get_node(&id).await, "get_node").is_none());
    let listed = ok(store.list_nodes().await, "list_nodes");
    assert!(
        listed.iter().all(|n| n.id != id),
        "a deleted node is not listed"
    );
}

/// Node ids are ten-digit sequence numbers that grow with each create.
pub async fn node_ids_follow_a_sequence(store: &dyn NodeStore) {
    let node = sample_node(&unique("provider"));
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(ok(store.create_node(&node).await, "create_node"));
    }
    for id in &ids {
        assert!(
            is_sequence(id),
            "node id {id:?} is not a ten-digit sequence"
        );
    }
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "node ids grow: {ids:?}"
    );
    for id in &ids {
        ok(store.delete_node(id).await, "delete_node");
    }
}

/// Create, read, update, list and delete a node request.
pub async fn request_crud(store: &dyn NodeStore) {
    let request = NodeRequest {
        state: Some(RequestState::Requested),
        state_time: Some(1_700_000_001.25),
        node_types: vec!["label-a".to_owned(), "label-a".to_owned()],
        reuse: false,
        requestor: Some(unique("requestor")),
        relative_priority: 3,
        ..NodeRequest::default()
    };
    let id = ok(
        store.create_request(&request, "100").await,
        "create_request",
    );
    assert!(
        id.starts_with("100-"),
        "request id {id:?} starts with its priority"
    );
    request_sequence(&id);

    let stored = some(
        ok(store.get_request(&id).await, "get_request"),
        "the request is stored",
    );
    let expected = NodeRequest {
        id: id.clone(),
        ..request.clone()
    };
    assert_eq!(request_fields(&stored), request_fields(&expected));

    let mut updated = stored;
    updated.state = Some(RequestState::Pending);
    updated.declined_by = vec!["other-launcher".to_owned()];
    updated.nodes = vec!["0000000007".to_owned()];
    ok(store.update_request(&updated).await, "update_request");
    let stored = some(
        ok(store.get_request(&id).await, "get_request"),
        "still stored",
    );
    assert_eq!(request_fields(&stored), request_fields(&updated));

    let listed = ok(store.list_requests().await, "list_requests");
    let mine: Vec<_> = listed
        .iter()
        .filter(|r| r.id == id)
        .map(request_fields)
        .collect();
    assert_eq!(
        mine,
        vec![request_fields(&updated)],
        "list_requests holds the request once"
    );

    ok(store.delete_request(&id).await, "delete_request");
    assert!(ok(store.get_request(&id).await, "get_request").is_none());
    let listed = ok(store.list_requests().await, "list_requests");
    assert!(
        listed.iter().all(|r| r.id != id),
        "a deleted request is not listed"
    );
}

/// Request ids are `<priority>-<sequence>` with one sequence shared by all
/// priorities, and requests are listed by priority, then sequence.
pub async fn request_ids_follow_priority_then_sequence(store: &dyn NodeStore) {
    let request = NodeRequest {
        node_types: vec!["label-a".to_owned()],
        requestor: Some(unique("requestor")),
        ..NodeRequest::default()
    };
    let mut ids = Vec::new();
    for priority in ["200", "100", "300", "100", "200"] {
        let id = ok(
            store.create_request(&request, priority).await,
            "create_request",
        );
        assert!(
            id.starts_with(&format!("{priority}-")),
            "request id {id:?} starts with priority {priority}"
        );
        ids.push(id);
    }
    let sequences: Vec<u64> = ids.iter().map(|id| request_sequence(id)).collect();
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]),
        "one sequence shared by all priorities grows: {ids:?}"
    );

    let mine: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let listed: Vec<String> = ok(store.list_requests().await, "list_requests")
        .into_iter()
        .map(|r| r.id)
        .filter(|id| mine.contains(id.as_str()))
        .collect();
    let expected = vec![
        ids[1].clone(),
        ids[3].clone(),
        ids[0].clone(),
        ids[4].clone(),
        ids[2].clone(),
    ];
    assert_eq!(
        listed, expected,
        "requests are listed by priority, then sequence"
    );

    for id in &ids {
        ok(store.delete_request(id).await, "delete_request");
    }
}

/// Updating a missing record fails with a not-found error; deleting one
/// succeeds.
pub async fn update_missing_fails_delete_missing_succeeds(store: &dyn NodeStore) {
    let id = ok(store.create_node(&Node::default()).await, "create_node");
    ok(store.delete_node(&id).await, "delete_node");
    let gone = Node {
        id: id.clone(),
        ..Node::default()
    };
    match store.update_node(&gone).await {
        Err(Error::NodeNotFound { id: missing }) => assert_eq!(missing, id),
        other => panic!("update_node of a deleted node: expected NodeNotFound, got {other:?}"),
    }
    ok(store.delete_node(&id).await, "deleting a missing node");

    let id = ok(
        store.create_request(&NodeRequest::default(), "100").await,
        "create_request",
    );
    ok(store.delete_request(&id).await, "delete_request");
    let gone = NodeRequest {
        id: id.clone(),
        ..NodeRequest::default()
    };
    match store.update_request(&gone).await {
        Err(Error::RequestNotFound { id: missing }) => assert_eq!(missing, id),
        other => {
            panic!("update_request of a deleted request: expected RequestNotFound, got {other:?}")
        }
    }
    ok(
        store.delete_request(&id).await,
        "deleting a missing request",
    );

    let image = unique("image");
    let build = crate::model::ImageBuild {
        id: "0123456789abcdef0123456789abcdef".to_owned(),
        ..Default::default()
    };
    match store.update_build(&image, &build).await {
        Err(Error::NotFound { .. }) => {}
        other => panic!("update_build of a missing build: expected NotFound, got {other:?}"),
    }
    ok(
        store.delete_build(&image, &build.id).await,
        "deleting a missing build",
    );
    ok(
        store
            .delete_upload(&image, &build.id, "provider", "0000000000")
            .await,
        "deleting a missing upload",
    );
    ok(
        store
            .unregister_component("launcher", &unique("missing"))
            .await,
        "unregistering a missing component",
    );
}

/// 8 tasks on two sessions create 50 nodes each: 400 distinct ids, all
/// listed.
pub async fn concurrent_writers_get_distinct_ids(harness: &dyn StoreHarness) {
    const TASKS: usize = 8;
    const PER_TASK: usize = 50;
    let sessions = [harness.session().await, harness.session().await];
    let provider = unique("provider");
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let store = sessions[task % sessions.len()].clone();
        let node = sample_node(&provider);
        tasks.spawn(async move {
            let mut ids = Vec::with_capacity(PER_TASK);
            for _ in 0..PER_TASK {
                ids.push(ok(store.create_node(&node).await, "create_node"));
            }
            ids
        });
    }
    let mut created = Vec::new();
    while let Some(ids) = tasks.join_next().await {
        let ids = ok(ids, "a writer task");
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "one writer's ids grow: {ids:?}"
        );
        created.extend(ids);
    }
    let distinct: BTreeSet<String> = created.iter().cloned().collect();
    assert_eq!(
        distinct.len(),
        TASKS * PER_TASK,
        "every create got its own id"
    );

    let listed: BTreeSet<String> = ok(sessions[0].list_nodes().await, "list_nodes")
        .into_iter()
        .filter(|n| n.provider.as_deref() == Some(provider.as_str()))
        .map(|n| n.id)
        .collect();
    assert_eq!(listed, distinct, "every created node is listed");

    for id in &distinct {
        ok(sessions[0].delete_node(id).await, "delete_node");
    }
    for session in &sessions {
        ok(session.close().await, "close");
    }
}

/// Admission counters: a node is created under tokens only if none moved
/// since they were read; a stale token creates nothing; two tokens move
/// together; `node_ids` lists what exists now.
pub async fn admission_tokens_admit_one_writer_per_version(harness: &dyn StoreHarness) {
    let a = harness.session().await;
    let b = harness.session().await;
    let provider = unique("provider");
    let key = format!("provider:{provider}");
    let tenant = format!("tenant:{}", unique("tenant"));

    let first_a = ok(a.admission_token(&key).await, "admission_token");
    let first_b = ok(b.admission_token(&key).await, "admission_token");
    assert_eq!(first_a, first_b, "two sessions read the same version");
    assert_eq!(first_a.key, key);

    let node = sample_node(&provider);
    let ids = ok(
        a.create_nodes_admitted(
            &[node.clone(), node.clone()],
            std::slice::from_ref(&first_a),
        )
        .await,
        "create_nodes_admitted with a fresh token",
    );
    assert_eq!(ids.len(), 2, "one id per node");
    assert!(ids[0] < ids[1], "ids in the order of the nodes: {ids:?}");
    let (id, id0) = (ids[0].clone(), ids[1].clone());
    assert!(is_sequence(&id), "admitted node id {id:?} is a sequence");
    let listed = ok(b.node_ids().await, "node_ids");
    assert!(listed.contains(&id), "node_ids lists the admitted node");

    match b
        .create_nodes_admitted(std::slice::from_ref(&node), std::slice::from_ref(&first_b))
        .await
    {
        Err(Error::VersionConflict { .. }) => {}
        other => panic!("a stale token must fail with VersionConflict, got {other:?}"),
    }
    let after: BTreeSet<String> = ok(b.list_nodes().await, "list_nodes")
        .into_iter()
        .filter(|n| n.provider.as_deref() == Some(provider.as_str()))
        .map(|n| n.id)
        .collect();
    assert_eq!(
        after,
        BTreeSet::from([id.clone(), id0.clone()]),
        "the refused admission created nothing"
    );

    let second = ok(b.admission_token(&key).await, "admission_token");
    assert_ne!(
        second.version, first_b.version,
        "the admission moved the counter"
    );
    let tenant_token = ok(b.admission_token(&tenant).await, "admission_token");
    let both = [second.clone(), tenant_token.clone()];
    let id2 = ok(
        b.create_nodes_admitted(std::slice::from_ref(&node), &both)
            .await,
        "create_nodes_admitted with two tokens",
    )
    .remove(0);
    // The tenant counter moved too: a token read before is stale now.
    match a
        .create_nodes_admitted(
            std::slice::from_ref(&node),
            std::slice::from_ref(&tenant_token),
        )
        .await
    {
        Err(Error::VersionConflict { .. }) => {}
        other => panic!("both counters move with one admission, got {other:?}"),
    }
    // An unrelated counter is not touched.
    let other = ok(a.admission_token(&unique("provider:other")).await, "token");
    let id3 = ok(
        a.create_nodes_admitted(std::slice::from_ref(&node), std::slice::from_ref(&other))
            .await,
        "create_nodes_admitted on another key",
    )
    .remove(0);

    for id in [&id, &id0, &id2, &id3] {
        ok(a.delete_node(id).await, "delete_node");
    }
    let listed = ok(a.node_ids().await, "node_ids");
    assert!(
        !listed.contains(&id) && !listed.contains(&id2),
        "node_ids forgets deleted nodes"
    );
    for s in [a, b] {
        ok(s.close().await, "close");
    }
}

/// Writers racing on one admission counter: of each round of concurrent
/// attempts with the same version, exactly one creates its node.
pub async fn concurrent_admissions_never_share_a_version(harness: &dyn StoreHarness) {
    const WRITERS: usize = 4;
    const ROUNDS: usize = 10;
    let sessions = [harness.session().await, harness.session().await];
    let provider = unique("provider");
    let key = format!("provider:{provider}");
    let mut created = Vec::new();
    for _ in 0..ROUNDS {
        let token = ok(sessions[0].admission_token(&key).await, "admission_token");
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..WRITERS {
            let store = sessions[w % sessions.len()].clone();
            let token = token.clone();
            let node = sample_node(&provider);
            tasks.spawn(async move { store.create_nodes_admitted(&[node], &[token]).await });
        }
        let mut won = 0;
        while let Some(result) = tasks.join_next().await {
            match ok(result, "an admission task") {
                Ok(ids) => {
                    won += 1;
                    created.extend(ids);
                }
                Err(Error::VersionConflict { .. }) => {}
                Err(e) => panic!("admission failed: {e}"),
            }
        }
        assert_eq!(won, 1, "one writer per version");
    }
    for id in &created {
        ok(sessions[0].delete_node(id).await, "delete_node");
    }
    for s in sessions {
        ok(s.close().await, "close");
    }
}
