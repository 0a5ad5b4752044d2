//! The invariants, checked from both sides: the requestor's outcomes, the
//! store's records and the cloud's servers.

use std::collections::{BTreeMap, BTreeSet};

use nodepool_core::model::{Node, NodeState};
use nodepool_core::provider::{META_NODE_ID, META_PROVIDER};
use serde::Serialize;

use crate::procs::CloudServer;
use crate::setup::PROVIDER;
use crate::workload::{Outcome, WorkloadResult};

/// What the requestor's outcomes say.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RequestCheck {
    /// Requests submitted (logical ones; resubmissions not counted).
    pub requests: usize,
    /// Fulfilled.
    pub fulfilled: usize,
    /// Failed, with a reason.
    pub failed_with_reason: usize,
    /// Failed without one.
    pub failed_without_reason: usize,
    /// Neither.
    pub lost: usize,
    /// Node ids delivered to more than one request.
    pub nodes_in_two_requests: Vec<String>,
    /// Instance ids delivered to more than one request.
    pub instances_in_two_requests: Vec<String>,
    /// Nodes delivered.
    pub nodes_delivered: usize,
    /// The first few lost requests' last errors.
    pub lost_examples: Vec<String>,
    /// The distinct failure reasons.
    pub failure_reasons: BTreeSet<String>,
    /// Seconds from submission to fulfilment: median, 99th percentile and
    /// longest.
    pub fulfil_p50_secs: f64,
    /// See `fulfil_p50_secs`.
    pub fulfil_p99_secs: f64,
    /// See `fulfil_p50_secs`.
    pub fulfil_max_secs: f64,
}

impl RequestCheck {
    /// Read the outcomes.
    pub fn of(result: &WorkloadResult) -> Self {
        let mut c = RequestCheck {
            requests: result.outcomes.len(),
            ..Self::default()
        };
        let mut seen_nodes: BTreeMap<&str, usize> = BTreeMap::new();
        let mut seen_instances: BTreeMap<&str, usize> = BTreeMap::new();
        for (id, outcome) in &result.outcomes {
            match outcome {
                Outcome::Fulfilled { nodes } => {
                    c.fulfilled += 1;
                    for (node, instance) in nodes {
                        c.nodes_delivered += 1;
                        *seen_nodes.entry(node).or_default() += 1;
                        if let Some(i) = instance {
                            *seen_instances.entry(i).or_default() += 1;
                        }
                    }
                }
                Outcome::Failed { reason } if reason.is_empty() => c.failed_without_reason += 1,
                Outcome::Failed { reason } => {
                    c.failed_with_reason += 1;
                    c.failure_reasons.insert(reason.clone());
                }
                Outcome::Lost { error } => {
                    c.lost += 1;
                    if c.lost_examples.len() < 5 {
                        c.lost_examples.push(format!("{id}: {error}"));
                    }
                }
            }
        }
        let mut secs = result.fulfil_secs.clone();
        secs.sort_by(f64::total_cmp);
        c.fulfil_p50_secs = quantile(&secs, 0.5);
        c.fulfil_p99_secs = quantile(&secs, 0.99);
        c.fulfil_max_secs = quantile(&secs, 1.0);
        c.nodes_in_two_requests = twice(&seen_nodes);
        c.instances_in_two_requests = twice(&seen_instances);
        c
    }

    /// Whether every request ended well and no node was given twice.
    pub fn holds(&self) -> bool {
        self.lost == 0
            && self.failed_without_reason == 0
            && self.nodes_in_two_requests.is_empty()
            && self.instances_in_two_requests.is_empty()
    }
}

/// The `q` quantile of sorted `values` (nearest rank), in milliseconds'
/// precision; 0 without values.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let rank = (q * values.len() as f64).ceil() as usize;
    (values[rank.clamp(1, values.len()) - 1] * 1000.0).round() / 1000.0
}

fn twice(seen: &BTreeMap<&str, usize>) -> Vec<String> {
    seen.iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| k.to_string())
        .collect()
}

/// The store and the cloud compared, at one moment.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CloudCheck {
    /// Node records.
    pub nodes: usize,
    /// Node records by state.
    pub nodes_by_state: BTreeMap<String, usize>,
    /// Nodes in a state that must not outlive cleanup (building, deleting,
    /// used, in-use, failed, init, aborted).
    pub nodes_unsettled: Vec<String>,
    /// Servers in the cloud.
    pub servers: usize,
    /// Servers of our provider whose node record does not exist (leaks).
    pub servers_without_node: Vec<String>,
    /// Servers whose node record names another instance.
    pub servers_with_other_external_id: Vec<String>,
    /// Servers without nodepool metadata.
    pub servers_without_metadata: Vec<String>,
    /// Nodes whose `external_id` names no server.
    pub nodes_without_server: Vec<String>,
    /// Node requests still in the store.
    pub requests_in_store: usize,
}

impl CloudCheck {
    /// Compare `nodes` (the store) with `servers` (the cloud).
    pub fn of(nodes: &[Node], servers: &[CloudServer], requests_in_store: usize) -> Self {
        let mut c = CloudCheck {
            nodes: nodes.len(),
            servers: servers.len(),
            requests_in_store,
            ..Self::default()
        };
        let by_id: BTreeMap<&str, &Node> = nodes.iter().map(|n| (n.id.as_str(), n)).collect();
        let server_ids: BTreeSet<&str> = servers.iter().map(|s| s.id.as_str()).collect();
        for node in nodes {
            let state = node.state.map_or("none".to_string(), |s| format!("{s:?}"));
            *c.nodes_by_state.entry(state.clone()).or_default() += 1;
            if node.state != Some(NodeState::Ready) {
                c.nodes_unsettled.push(format!("{} ({state})", node.id));
            }
            if let Some(ext) = node.external_id.as_deref() {
                if node.provider.as_deref() == Some(PROVIDER) && !server_ids.contains(ext) {
                    c.nodes_without_server.push(format!("{} -> {ext}", node.id));
                }
            }
        }
        for server in servers {
            let (Some(provider), Some(node_id)) = (
                server.metadata.get(META_PROVIDER),
                server.metadata.get(META_NODE_ID),
            ) else {
                c.servers_without_metadata.push(server.id.clone());
                continue;
            };
            if provider != PROVIDER {
                c.servers_without_metadata.push(server.id.clone());
                continue;
            }
            match by_id.get(node_id.as_str()) {
                None => c
                    .servers_without_node
                    .push(format!("{} (node {node_id})", server.id)),
                Some(node) if node.external_id.as_deref() != Some(server.id.as_str()) => c
                    .servers_with_other_external_id
                    .push(format!("{} (node {node_id})", server.id)),
                Some(_) => {}
            }
        }
        c
    }

    /// Whether the two sides agree and nothing is left half done.
    pub fn holds(&self) -> bool {
        self.nodes_unsettled.is_empty()
            && self.servers_without_node.is_empty()
            && self.servers_with_other_external_id.is_empty()
            && self.servers_without_metadata.is_empty()
            && self.nodes_without_server.is_empty()
            && self.requests_in_store == 0
    }
}

/// The live servers of `servers` that belong to the pool now: of our
/// provider, with a node record in `nodes` (a leak is not counted, as the
/// launcher does not count it against max-servers); each as
/// `SERVER (node ID, STATE)`.
pub fn live_of_pool(servers: &[CloudServer], nodes: &[Node]) -> Vec<String> {
    let by_id: BTreeMap<&str, &Node> = nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    servers
        .iter()
        .filter(|s| s.live)
        .filter(|s| s.metadata.get(META_PROVIDER).map(String::as_str) == Some(PROVIDER))
        .filter_map(|s| {
            let node = by_id.get(s.metadata.get(META_NODE_ID)?.as_str())?;
            let state = node
                .state
                .map_or("none".to_string(), |st| format!("{st:?}"));
            Some(format!("{} (node {}, {state})", s.id, node.id))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Outcome;

    fn node(id: &str, state: NodeState, external_id: Option<&str>) -> Node {
        let mut n = Node {
            id: id.to_string(),
            provider: Some(PROVIDER.to_string()),
            external_id: external_id.map(str::to_string),
            ..Node::default()
        };
        n.set_state(state);
        n
    }

    fn server(id: &str, node_id: Option<&str>) -> CloudServer {
        let mut metadata = BTreeMap::new();
        if let Some(n) = node_id {
            metadata.insert(META_PROVIDER.to_string(), PROVIDER.to_string());
            metadata.insert(META_NODE_ID.to_string(), n.to_string());
        }
        CloudServer {
            id: id.to_string(),
            metadata,
            live: true,
        }
    }

    #[test]
    fn agreeing_sides_hold() {
        let c = CloudCheck::of(
            &[node("1", NodeState::Ready, Some("s1"))],
            &[server("s1", Some("1"))],
            0,
        );
        assert!(c.holds(), "{c:?}");
    }

    #[test]
    fn server_without_node_record_is_a_leak() {
        let c = CloudCheck::of(&[], &[server("s9", Some("9"))], 0);
        assert_eq!(c.servers_without_node, vec!["s9 (node 9)".to_string()]);
        assert!(!c.holds());
    }

    #[test]
    fn second_server_behind_one_node_is_reported() {
        let c = CloudCheck::of(
            &[node("1", NodeState::Ready, Some("s1"))],
            &[server("s1", Some("1")), server("s2", Some("1"))],
            0,
        );
        assert_eq!(c.servers_with_other_external_id.len(), 1);
        assert!(!c.holds());
    }

    #[test]
    fn node_whose_server_is_gone_and_unsettled_nodes_break_it() {
        let c = CloudCheck::of(
            &[
                node("1", NodeState::Ready, Some("gone")),
                node("2", NodeState::Building, None),
            ],
            &[server("x", None)],
            1,
        );
        assert_eq!(c.nodes_without_server, vec!["1 -> gone".to_string()]);
        assert_eq!(c.nodes_unsettled.len(), 1);
        assert_eq!(c.servers_without_metadata, vec!["x".to_string()]);
        assert!(!c.holds());
    }

    #[test]
    fn node_given_to_two_requests_and_lost_requests_break_it() {
        let fulfilled = |n: &str| Outcome::Fulfilled {
            nodes: vec![(n.to_string(), Some(format!("s{n}")))],
        };
        let result = WorkloadResult {
            outcomes: vec![
                ("r1".into(), fulfilled("1")),
                ("r2".into(), fulfilled("1")),
                (
                    "r3".into(),
                    Outcome::Failed {
                        reason: String::new(),
                    },
                ),
                (
                    "r4".into(),
                    Outcome::Lost {
                        error: "gone".into(),
                    },
                ),
                (
                    "r5".into(),
                    Outcome::Failed {
                        reason: "declined by p".into(),
                    },
                ),
            ],
            ..WorkloadResult::default()
        };
        let c = RequestCheck::of(&result);
        assert_eq!(c.nodes_in_two_requests, vec!["1".to_string()]);
        assert_eq!(c.instances_in_two_requests, vec!["s1".to_string()]);
        assert_eq!(
            (
                c.fulfilled,
                c.failed_without_reason,
                c.lost,
                c.failed_with_reason
            ),
            (2, 1, 1, 1)
        );
        assert!(!c.holds());
    }

    #[test]
    fn quantiles_take_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[], 0.99), 0.0);
    }

    #[test]
    fn the_pool_counts_live_servers_with_a_record() {
        let nodes = [node("1", NodeState::Ready, Some("s1"))];
        let mut gone = server("s3", Some("1"));
        gone.live = false;
        let servers = [server("s1", Some("1")), server("s2", Some("2")), gone];
        assert_eq!(live_of_pool(&servers, &nodes), ["s1 (node 1, Ready)"]);
    }
}
