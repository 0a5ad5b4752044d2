//! The suite of [`RegisteredHosts`]: a provider of pre-registered hosts
//! keeps one ready record per free host slot in the store, hands back
//! `used` records, vouches for its live hosts and counts its capacity.
//!
//! Run against a store the suite may fill (a fresh
//! [`MemoryStore`](crate::store::MemoryStore)) and a provider whose hosts
//! answer (a scripted network, or real sshd).

use crate::model::{Node, NodeState};
use crate::provider::{Provider, RegisteredHosts};
use crate::store::NodeStore;

use super::provider::SuiteReport;

/// What the suite expects of the provider's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredSuiteConfig {
    /// A pool of the provider.
    pub pool: String,
    /// A label of that pool with at least one host slot.
    pub label: String,
}

impl RegisteredSuiteConfig {
    /// Expect slots of `label` in `pool`.
    pub fn new(pool: impl Into<String>, label: impl Into<String>) -> Self {
        Self {
            pool: pool.into(),
            label: label.into(),
        }
    }
}

fn hosts_of(provider: &dyn Provider) -> &dyn RegisteredHosts {
    provider.registered().unwrap_or_else(|| {
        panic!(
            "{}: registered() is None; not a provider of pre-registered hosts",
            provider.name()
        )
    })
}

async fn records(provider: &dyn Provider, store: &dyn NodeStore) -> Vec<Node> {
    let mut nodes: Vec<Node> = store
        .list_nodes()
        .await
        .unwrap_or_else(|e| panic!("cannot list the store's nodes: {e}"))
        .into_iter()
        .filter(|n| n.provider.as_deref() == Some(provider.name()))
        .collect();
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    nodes
}

async fn sync(provider: &dyn Provider, store: &dyn NodeStore, full: bool) {
    if let Err(e) = hosts_of(provider).sync_registered(store, full).await {
        panic!(
            "{}: sync_registered(full: {full}) failed: {e}",
            provider.name()
        );
    }
}

fn ready_of<'a>(nodes: &'a [Node], cfg: &RegisteredSuiteConfig) -> Vec<&'a Node> {
    nodes
        .iter()
        .filter(|n| {
            n.state == Some(NodeState::Ready)
                && n.pool.as_deref() == Some(cfg.pool.as_str())
                && n.labels.contains(&cfg.label)
        })
        .collect()
}

/// A full pass registers ready records of the label in the pool, with an
/// address; running it again (full, then periodic) changes nothing.
pub async fn full_sync_registers_ready_records_once(
    provider: &dyn Provider,
    store: &dyn NodeStore,
    cfg: &RegisteredSuiteConfig,
) {
    sync(provider, store, true).await;
    let first = records(provider, store).await;
    let ready = ready_of(&first, cfg);
    assert!(
        !ready.is_empty(),
        "{}: a full pass registered no ready {} record in pool {}",
        provider.name(),
        cfg.label,
        cfg.pool
    );
    for node in &ready {
        assert!(
            node.interface_ip.is_some() || node.hostname.is_some(),
            "{}: registered record {} has no address",
            provider.name(),
            node.id
        );
    }
    sync(provider, store, true).await;
    sync(provider, store, false).await;
    let ids = |nodes: &[Node]| nodes.iter().map(|n| n.id.clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(&records(provider, store).await),
        ids(&first),
        "{}: passes over unchanged hosts changed the records",
        provider.name()
    );
}

/// `label_capacity` counts the free records it is given, per label.
pub async fn label_capacity_counts_free_records(
    provider: &dyn Provider,
    store: &dyn NodeStore,
    cfg: &RegisteredSuiteConfig,
) {
    let nodes = records(provider, store).await;
    let free = ready_of(&nodes, cfg).len() as u64;
    let capacity = hosts_of(provider).label_capacity(&nodes);
    let of_label = capacity.get(&cfg.label).copied().unwrap_or(u64::MAX);
    assert!(
        of_label >= 1 && (of_label == u64::MAX || of_label <= free),
        "{}: capacity of {} is {of_label} with {free} free records",
        provider.name(),
        cfg.label
    );
}

/// `node_alive` vouches for a freshly registered record of a live host.
pub async fn node_alive_vouches_for_a_registered_record(
    provider: &dyn Provider,
    store: &dyn NodeStore,
    cfg: &RegisteredSuiteConfig,
) {
    let nodes = records(provider, store).await;
    let Some(node) = ready_of(&nodes, cfg).into_iter().next().cloned() else {
        panic!("{}: no ready record to check", provider.name());
    };
    match hosts_of(provider).node_alive(store, &node).await {
        Ok(true) => {}
        other => panic!(
            "{}: node_alive of fresh record {} answered {other:?}",
            provider.name(),
            node.id
        ),
    }
}

/// A record handed back `used` is replaced by a fresh ready one for its
/// slot on the next pass.
pub async fn used_record_is_replaced(
    provider: &dyn Provider,
    store: &dyn NodeStore,
    cfg: &RegisteredSuiteConfig,
) {
    let before = records(provider, store).await;
    let Some(mut node) = ready_of(&before, cfg).into_iter().next().cloned() else {
        panic!("{}: no ready record to use", provider.name());
    };
    node.set_state(NodeState::Used);
    if let Err(e) = store.update_node(&node).await {
        panic!("cannot mark {} used: {e}", node.id);
    }
    sync(provider, store, false).await;
    let after = records(provider, store).await;
    assert!(
        after.iter().all(|n| n.id != node.id),
        "{}: used record {} is still there",
        provider.name(),
        node.id
    );
    assert_eq!(
        ready_of(&after, cfg).len(),
        ready_of(&before, cfg).len(),
        "{}: the used slot was not registered again",
        provider.name()
    );
}

/// Runs every test of the suite in order (each builds on the records of
/// the one before). A failing test panics.
pub async fn registered_suite(
    provider: &dyn Provider,
    store: &dyn NodeStore,
    cfg: &RegisteredSuiteConfig,
) -> SuiteReport {
    let mut report = SuiteReport::default();
    let mut ran = |name: &'static str| {
        println!("registered suite: {name} ... ok");
        report.ran.push(name);
    };
    full_sync_registers_ready_records_once(provider, store, cfg).await;
    ran("full_sync_registers_ready_records_once");
    label_capacity_counts_free_records(provider, store, cfg).await;
    ran("label_capacity_counts_free_records");
    node_alive_vouches_for_a_registered_record(provider, store, cfg).await;
    ran("node_alive_vouches_for_a_registered_record");
    used_record_is_replaced(provider, store, cfg).await;
    ran("used_record_is_replaced");
    report
}
