//! Tests of the sync pass, against a scripted network and the memory store.

use std::time::Duration;

use nodepool_core::model::{Node, NodeState};
use nodepool_core::store::{LockOptions, LockTarget, MemoryStore, NodeStore};

use super::*;
use crate::static_hosts::config::{DEFAULT_PYTHON_PATH, DEFAULT_USERNAME};
use crate::static_hosts::record::label_capacity;
use crate::static_hosts::ScriptedScanner;

const KEY_A: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA";
const KEY_B: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ";

pub(crate) fn host(name: &str, port: i64, labels: &[&str], slots: i64) -> StaticNode {
    StaticNode {
        name: name.to_string(),
        labels: labels.iter().map(ToString::to_string).collect(),
        username: DEFAULT_USERNAME.to_string(),
        timeout: 1,
        host_key_checking: true,
        host_keys: Vec::new(),
        connection_port: port,
        connection_type: "ssh".to_string(),
        shell_type: None,
        max_parallel_jobs: slots,
        python_path: DEFAULT_PYTHON_PATH.to_string(),
    }
}

pub(crate) fn config(hosts: Vec<StaticNode>) -> StaticConfig {
    StaticConfig {
        name: "static-rack".to_string(),
        max_concurrency: -1,
        priority: None,
        pools: vec![StaticPool {
            name: "main".to_string(),
            max_servers: None,
            priority: None,
            node_attributes: Some(serde_json::json!({"rack": "r1"})),
            nodes: hosts,
        }],
    }
}

async fn pass(
    cfg: &StaticConfig,
    net: &ScriptedScanner,
    store: &MemoryStore,
    mode: SyncMode,
) -> SyncReport {
    StaticSync::new(cfg, net, store)
        .run(mode)
        .await
        .expect("the records can be listed")
}

async fn records(store: &MemoryStore) -> Vec<Node> {
    store.list_nodes().await.expect("list nodes")
}

async fn ready_of(store: &MemoryStore, hostname: &str) -> Vec<Node> {
    records(store)
        .await
        .into_iter()
        .filter(|n| n.hostname.as_deref() == Some(hostname) && n.state == Some(NodeState::Ready))
        .collect()
}

async fn set_state(store: &MemoryStore, id: &str, state: NodeState) {
    let mut node = store.get_node(id).await.expect("get").expect("exists");
    node.set_state(state);
    store.update_node(&node).await.expect("update");
}

#[tokio::test]
async fn registers_one_ready_record_per_slot_with_upstream_fields() {
    let net = ScriptedScanner::new();
    net.up("h1.example", 22, &[KEY_A, KEY_B]);
    let mut h1 = host("h1.example", 22, &["small", "large"], 2);
    h1.shell_type = Some("bash".to_string());
    let cfg = config(vec![h1]);
    let store = MemoryStore::new();

    let report = pass(&cfg, &net, &store, SyncMode::Full).await;

    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.registered.len(), 2);
    let nodes = records(&store).await;
    assert_eq!(nodes.len(), 2);
    let mut slots: Vec<i64> = nodes.iter().filter_map(|n| n.slot).collect();
    slots.sort_unstable();
    assert_eq!(slots, vec![0, 1]);
    for node in nodes {
        assert_eq!(node.state, Some(NodeState::Ready));
        assert_eq!(node.provider.as_deref(), Some("static-rack"));
        assert_eq!(node.pool.as_deref(), Some("main"));
        assert_eq!(node.launcher.as_deref(), Some("static driver"));
        assert_eq!(node.labels, vec!["small", "large"]);
        assert_eq!(node.hostname.as_deref(), Some("h1.example"));
        assert_eq!(node.external_id.as_deref(), Some("h1.example"));
        assert_eq!(node.interface_ip.as_deref(), Some("h1.example"));
        assert_eq!(node.public_ipv4.as_deref(), Some("127.0.0.1"));
        assert_eq!(node.username.as_deref(), Some("zuul"));
        assert_eq!(node.connection_port, 22);
        assert_eq!(node.connection_type.as_deref(), Some("ssh"));
        assert_eq!(node.shell_type.as_deref(), Some("bash"));
        assert_eq!(node.python_path.as_deref(), Some("auto"));
        assert_eq!(node.host_keys, vec![KEY_A, KEY_B]);
        assert_eq!(node.created_time, node.state_time);
        let attributes = node.attributes.expect("pool node-attributes");
        assert_eq!(attributes.get("rack").and_then(|v| v.as_str()), Some("r1"));
    }
}

#[tokio::test]
async fn periodic_pass_with_every_slot_taken_contacts_no_host() {
    let net = ScriptedScanner::new();
    net.up("h1", 22, &[KEY_A]);
    let cfg = config(vec![host("h1", 22, &["small"], 1)]);
    let store = MemoryStore::new();
    pass(&cfg, &net, &store, SyncMode::Full).await;
    let probes = net.probes("h1", 22);

    let report = pass(&cfg, &net, &store, SyncMode::Periodic).await;

    assert!(
        report.registered.is_empty() && report.is_clean(),
        "{report:?}"
    );
    assert_eq!(net.probes("h1", 22), probes);
    assert_eq!(records(&store).await.len(), 1);
}

#[tokio::test]
async fn used_record_is_deleted_and_its_slot_registered_again() {
    let net = ScriptedScanner::new();
    net.up("h1", 22, &[KEY_A]);
    let cfg = config(vec![host("h1", 22, &["small"], 1)]);
    let store = MemoryStore::new();
    let first = pass(&cfg, &net, &store, SyncMode::Full).await;
    let old = first.registered[0].clone();
    set_state(&store, &old, NodeState::Used).await;

    let report = pass(&cfg, &net, &store, SyncMode::Periodic).await;

    assert_eq!(report.recycled, vec![old.clone()]);
    assert_eq!(report.registered.len(), 1);
    assert!(store.get_node(&old).await.expect("get").is_none());
    let ready = ready_of(&store, "h1").await;
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0].slot, Some(0));
    assert_ne!(ready[0].id, old);
}

#[tokio::test]
async fn used_record_locked_by_someone_else_is_left_alone() {
    let net = ScriptedScanner::new();
    net.up("h1", 22, &[KEY_A]);
    let cfg = config(vec![host("h1", 22, &["small"], 1)]);
    let store = MemoryStore::new();
    let id = pass(&cfg, &net, &store, SyncMode::Full).await.registered[0].clone();
    set_state(&store, &id, NodeState::Used).await;
    let other = store.session();
    let _held = other
        .lock(&LockTarget::Node(id.clone()), &LockOptions::try_once())
        .await
        .expect("lock");

    let report = pass(&cfg, &net, &store, SyncMode::Periodic).await;

    assert!(
        report.recycled.is_empty() && report.registered.is_empty(),
        "{report:?}"
    );
    let node = store.get_node(&id).await.expect("get").expect("kept");
    assert_eq!(node.state, Some(NodeState::Used));
}

#[tokio::test]
async fn removed_host_loses_free_records_and_keeps_busy_ones_until_handed_back() {
    let net = ScriptedScanner::new();
    net.up("h1", 22, &[KEY_A]);
    net.up("h2", 22, &[KEY_B]);
    let both = config(vec![
        host("h1", 22, &["small"], 1),
        host("h2", 22, &["small"], 2),
    ]);
    let store = MemoryStore::new();
    pass(&both, &net, &store, SyncMode::Full).await;
    let h2 = ready_of(&store, "h2").await;
    set_state(&store, &h2[0].id, NodeState::InUse).await;
    let only_h1 = config(vec![host("h1", 22, &["small"], 1)]);

    let report = pass(&only_h1, &net, &store, SyncMode::Full).await;

    assert_eq!(report.deregistered, vec![h2[1].id.clone()]);
    assert_eq!(report.deferred, vec![h2[0].id.clone()]);
    assert!(store.get_node(&h2[1].id).await.expect("get").is_none());

    // Handed back: the used record is deleted and nothing replaces it.
    set_state(&store, &h2[0].id, NodeState::Used).await;
    let report = pass(&only_h1, &net, &store, SyncMode::Periodic).await;
    assert_eq!(report.recycled, vec![h2[0].id.clone()]);
    assert!(report.registered.is_empty(), "{report:?}");
    let left: Vec<String> = records(&store)
        .await
        .into_iter()
        .filter_map(|n| n.hostname)
        .collect();
    assert_eq!(left, vec!["h1"]);
}

#[tokio::test]
async fn added_host_is_registered_without_touching_the_others() {
    let net = ScriptedScanner::new();
    net.up("h1", 22, &[KEY_A]);
    net.up("h2", 2222, &[KEY_B]);
    let store = MemoryStore::new();
    let before = pass(
        &config(vec![host("h1", 22, &["small"], 1)]),
        &net,
        &store,
        SyncMode::Full,
    )
    .await;
    let grown = config(vec![
        host("h1", 22, &["small"], 1),
        host("h2", 2222, &["big"], 1),
    ]);

    let report = pass(&grown, &net, &store, SyncMode::Full).await;

    assert_eq!(report.registered.len(), 1, "{report:?}");
    assert!(report.deregistered.is_empty() && report.updated.is_empty());
    assert_eq!(ready_of(&store, "h1").await[0].id, before.registered[0]);
    let h2 = ready_of(&store, "h2").await;
    assert_eq!(
        (h2[0].connection_port, h2[0].labels.clone()),
        (2222, vec!["big".to_string()])
    );
}

#[tokio::test]
async fn lowering_max_parallel_jobs_deregisters_the_excess_slots() {
    let net = ScriptedScanner::new();
    net.up("h1", 22, &[KEY_A]);
    let store = MemoryStore::new();
    pass(
        &config(vec![host("h1", 22, &["small"], 3)]),
        &net,
        &store,
        SyncMode::Full,
    )
    .await;

    let report = pass(
        &config(vec![host("h1", 22, &["small"], 1)]),
        &net,
        &store,
        SyncMode::Full,
    )
    .await;

    assert_eq!(report.deregistered.len(), 2, "{report:?}");
    let ready = ready_of(&store, "h1").await;
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0].slot, Some(0));
}

#[tokio::test]
async fn key_mismatch_is_reported_and_the_host_not_registered() {
    let net = ScriptedScanner::new();
    net.up("h1", 22, &[KEY_B]);
    let mut h1 = host("h1", 22, &["small"], 1);
    h1.host_keys = vec![KEY_A.to_string()];
    let cfg = config(vec![h1.clone()]);
    let store = MemoryStore::new();

    let report = pass(&cfg, &net, &store, SyncMode::Full).await;

    assert!(records(&store).await.is_empty());
    match report.failure_of(&HostId::of_config(&h1)) {
        Some(HostError::KeyMismatch {
            expected, offered, ..
        }) => {
            assert_eq!(expected, &vec![KEY_A.to_string()]);
            assert_eq!(offered, &vec![KEY_B.to_string()]);
        }
        other => panic!("expected a key mismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn configured_key_among_offered_ones_registers_with_all_offered_keys() {
    let net = ScriptedScanner::new();
    net.up("h1", 22, &[KEY_A, KEY_B]);
    let mut h1 = host("h1", 22, &["small"], 1);
    h1.host_keys = vec![KEY_B.to_string()];
    let store = MemoryStore::new();

    let report = pass(&config(vec![h1]), &net, &store, SyncMode::Full).await;

    assert!(report.is_clean(), "{report:?}");
    assert_eq!(
        ready_of(&store, "h1").await[0].host_keys,
        vec![KEY_A, KEY_B]
    );
}

#[tokio::test]
async fn unreachable_host_is_reported_retried_and_registered_once_it_answers() {
    let net = ScriptedScanner::new();
    net.up("h1", 22, &[KEY_A]);
    net.down("h2", 22);
    let h2 = host("h2", 22, &["small"], 1);
    let cfg = config(vec![host("h1", 22, &["small"], 1), h2.clone()]);
    let store = MemoryStore::new();

    let report = pass(&cfg, &net, &store, SyncMode::Full).await;
    assert_eq!(
        ready_of(&store, "h1").await.len(),
        1,
        "h1 is not held up by h2"
    );
    assert!(matches!(
        report.failure_of(&HostId::of_config(&h2)),
        Some(HostError::Probe(_))
    ));

    let report = pass(&cfg, &net, &store, SyncMode::Periodic).await;
    assert!(report.failure_of(&HostId::of_config(&h2)).is_some());
    assert_eq!(net.probes("h2", 22), 2, "retried on the next pass");

    net.up("h2", 22, &[KEY_B]);
    let report = pass(&cfg, &net, &store, SyncMode::Periodic).await;
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(ready_of(&store, "h2").await[0].host_keys, vec![KEY_B]);
}

#[tokio::test(start_paused = true)]
async fn a_host_that_never_answers_is_cut_off_at_its_timeout() {
    let net = ScriptedScanner::new();
    net.up("h1", 22, &[KEY_A]);
    net.hang("h2", 22);
    let h2 = host("h2", 22, &["small"], 1);
    let cfg = config(vec![host("h1", 22, &["small"], 1), h2.clone()]);
    let store = MemoryStore::new();
    let start = tokio::time::Instant::now();

    let report = pass(&cfg, &net, &store, SyncMode::Full).await;

    assert!(start.elapsed() <= h2.timeout() + Duration::from_secs(6));
    assert!(report.failure_of(&HostId::of_config(&h2)).is_some());
    assert_eq!(ready_of(&store, "h1").await.len(), 1);
}

#[tokio::test]
async fn host_key_checking_off_records_configured_keys_without_contact() {
    let net = ScriptedScanner::new();
    net.up("h1", 22, &[KEY_B]);
    let mut h1 = host("h1", 22, &["small"], 1);
    h1.host_key_checking = false;
    h1.host_keys = vec![KEY_A.to_string()];
    let store = MemoryStore::new();

    let report = pass(&config(vec![h1]), &net, &store, SyncMode::Full).await;

    assert!(report.is_clean(), "{report:?}");
    assert_eq!(net.probes("h1", 22), 0);
    assert_eq!(ready_of(&store, "h1").await[0].host_keys, vec![KEY_A]);
}

#[tokio::test]
async fn winrm_host_gets_a_port_check_and_no_keys() {
    let net = ScriptedScanner::new();
    net.up("win", 5986, &[KEY_A]);
    let mut win = host("win", 5986, &["windows"], 1);
    win.connection_type = "winrm".to_string();
    let store = MemoryStore::new();

    let report = pass(&config(vec![win]), &net, &store, SyncMode::Full).await;

    assert!(report.is_clean(), "{report:?}");
    assert_eq!(net.probes("win", 5986), 1);
    let node = &ready_of(&store, "win").await[0];
    assert!(node.host_keys.is_empty());
    assert_eq!(node.connection_type.as_deref(), Some("winrm"));
}

#[tokio::test]
async fn full_pass_updates_free_records_from_the_config() {
    let net = ScriptedScanner::new();
    net.up("h1", 22, &[KEY_A]);
    let store = MemoryStore::new();
    pass(
        &config(vec![host("h1", 22, &["small"], 2)]),
        &net,
        &store,
        SyncMode::Full,
    )
    .await;
    let busy = ready_of(&store, "h1").await[0].id.clone();
    set_state(&store, &busy, NodeState::InUse).await;
    let mut relabelled = host("h1", 22, &["small", "gpu"], 2);
    relabelled.python_path = "/usr/bin/python3".to_string();

    let report = pass(&config(vec![relabelled]), &net, &store, SyncMode::Full).await;

    assert_eq!(report.updated.len(), 1, "{report:?}");
    let updated = store
        .get_node(&report.updated[0])
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(updated.labels, vec!["small", "gpu"]);
    assert_eq!(updated.python_path.as_deref(), Some("/usr/bin/python3"));
    let untouched = store.get_node(&busy).await.expect("get").expect("exists");
    assert_eq!(
        untouched.labels,
        vec!["small"],
        "a node in use is not rewritten"
    );
}

#[tokio::test]
async fn full_pass_deregisters_free_records_of_a_host_that_fails_its_check() {
    let net = ScriptedScanner::new();
    net.up("h1", 22, &[KEY_A]);
    let cfg = config(vec![host("h1", 22, &["small"], 1)]);
    let store = MemoryStore::new();
    let id = pass(&cfg, &net, &store, SyncMode::Full).await.registered[0].clone();
    net.down("h1", 22);

    let report = pass(&cfg, &net, &store, SyncMode::Full).await;

    assert_eq!(report.deregistered, vec![id]);
    assert_eq!(report.failures.len(), 1);
    assert!(records(&store).await.is_empty());
}

#[tokio::test]
async fn records_of_other_providers_are_not_touched() {
    let net = ScriptedScanner::new();
    net.up("h1", 22, &[KEY_A]);
    let store = MemoryStore::new();
    let mut foreign = Node::new(NodeState::Used);
    foreign.provider = Some("cloud".to_string());
    foreign.hostname = Some("h1".to_string());
    let foreign_id = store.create_node(&foreign).await.expect("create");

    let report = pass(
        &config(vec![host("h1", 22, &["small"], 1)]),
        &net,
        &store,
        SyncMode::Full,
    )
    .await;

    assert_eq!(report.registered.len(), 1);
    assert!(report.recycled.is_empty());
    assert!(store.get_node(&foreign_id).await.expect("get").is_some());
}

#[tokio::test]
async fn record_without_slot_takes_a_free_slot_instead_of_a_new_registration() {
    let net = ScriptedScanner::new();
    net.up("h1", 22, &[KEY_A]);
    let store = MemoryStore::new();
    let mut legacy = Node::new(NodeState::Ready);
    legacy.provider = Some("static-rack".to_string());
    legacy.hostname = Some("h1".to_string());
    legacy.username = Some("zuul".to_string());
    legacy.connection_port = 22;
    store.create_node(&legacy).await.expect("create");

    let report = pass(
        &config(vec![host("h1", 22, &["small"], 2)]),
        &net,
        &store,
        SyncMode::Periodic,
    )
    .await;

    assert_eq!(
        report.registered.len(),
        1,
        "one slot was already taken: {report:?}"
    );
    assert_eq!(records(&store).await.len(), 2);
}

#[tokio::test]
async fn label_capacity_counts_free_records_per_label() {
    let net = ScriptedScanner::new();
    net.up("h1", 22, &[KEY_A]);
    net.up("h2", 22, &[KEY_A]);
    let cfg = config(vec![
        host("h1", 22, &["small"], 2),
        host("h2", 22, &["small", "big"], 1),
    ]);
    let store = MemoryStore::new();
    pass(&cfg, &net, &store, SyncMode::Full).await;
    let h2 = ready_of(&store, "h2").await[0].id.clone();
    set_state(&store, &h2, NodeState::InUse).await;

    let capacity = label_capacity(&cfg, &records(&store).await);

    assert_eq!(capacity.get("small"), Some(&2));
    assert_eq!(capacity.get("big"), Some(&0));
}
