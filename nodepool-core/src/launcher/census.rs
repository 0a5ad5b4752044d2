//! Nodes and requests counted by what metrics report (state, provider,
//! labels), read from the launcher's caches ([`Launcher::census`]) so that
//! statsd and `/metrics` do not list and decode every record of the store
//! on each report (10,000 reads a report on ZooKeeper at 10,000 nodes).
//!
//! [`Launcher::census`]: super::Launcher::census

use std::collections::BTreeMap;

use super::context::Context;
use crate::model::{Node, NodeRequest, NodeState, RequestState};
use crate::store::NodeStore;
use crate::Result;

/// What nodes of one group have in common.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeGroup {
    /// The nodes' state (`None`: a record without one).
    pub state: Option<NodeState>,
    /// Their provider.
    pub provider: Option<String>,
    /// Their labels.
    pub labels: Vec<String>,
}

/// What requests of one group have in common.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestGroup {
    /// The requests' state.
    pub state: Option<RequestState>,
    /// The labels they ask for (`node_types`, in order, repeats kept).
    pub labels: Vec<String>,
}

/// Nodes and requests counted by group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    /// How many nodes each group has.
    pub nodes: BTreeMap<NodeGroup, u64>,
    /// How many requests each group has.
    pub requests: BTreeMap<RequestGroup, u64>,
}

impl Census {
    /// Count full records (a reader without a launcher, e.g. a web app
    /// beside a builder, lists them).
    pub fn from_records(nodes: &[Node], requests: &[NodeRequest]) -> Self {
        let mut census = Self::default();
        for node in nodes {
            let group = NodeGroup {
                state: node.state,
                provider: node.provider.clone(),
                labels: node.labels.clone(),
            };
            *census.nodes.entry(group).or_default() += 1;
        }
        for request in requests {
            let group = RequestGroup {
                state: request.state,
                labels: request.node_types.clone(),
            };
            *census.requests.entry(group).or_default() += 1;
        }
        census
    }

    /// List every node and request of `store` and count them.
    pub async fn read(store: &dyn NodeStore) -> Result<Self> {
        let nodes = store.list_nodes().await?;
        let requests = store.list_requests().await?;
        Ok(Self::from_records(&nodes, &requests))
    }

    /// Nodes in each state.
    pub fn nodes_by_state(&self) -> BTreeMap<Option<NodeState>, u64> {
        let mut out = BTreeMap::new();
        for (group, n) in &self.nodes {
            *out.entry(group.state).or_default() += n;
        }
        out
    }

    /// Requests in each state.
    pub fn requests_by_state(&self) -> BTreeMap<Option<RequestState>, u64> {
        let mut out = BTreeMap::new();
        for (group, n) in &self.requests {
            *out.entry(group.state).or_default() += n;
        }
        out
    }
}

/// A node group on borrowed names: state, provider, labels.
type NodeKey<'a> = (Option<NodeState>, Option<&'a str>, Vec<&'a str>);

/// The census of the caches, synced first.
pub(crate) async fn take(ctx: &Context) -> Result<Census> {
    ctx.nodes.sync(&*ctx.store).await?;
    ctx.requests.sync(&*ctx.store).await?;
    // Group on borrowed names first (few distinct groups), then own each
    // group's names once.
    let mut census = Census::default();
    ctx.nodes.with(|nodes| {
        let mut groups: BTreeMap<NodeKey<'_>, u64> = BTreeMap::new();
        for node in nodes.values() {
            let key = (
                node.state,
                node.provider.as_deref(),
                node.labels.iter().map(|l| &**l).collect(),
            );
            *groups.entry(key).or_default() += 1;
        }
        for ((state, provider, labels), n) in groups {
            let group = NodeGroup {
                state,
                provider: provider.map(str::to_string),
                labels: labels.into_iter().map(str::to_string).collect(),
            };
            census.nodes.insert(group, n);
        }
    });
    ctx.requests.with(|requests| {
        let mut groups: BTreeMap<(Option<RequestState>, Vec<&str>), u64> = BTreeMap::new();
        for request in requests.values() {
            let key = (
                request.state,
                request.node_types.iter().map(|l| &**l).collect(),
            );
            *groups.entry(key).or_default() += 1;
        }
        for ((state, labels), n) in groups {
            let group = RequestGroup {
                state,
                labels: labels.into_iter().map(str::to_string).collect(),
            };
            census.requests.insert(group, n);
        }
    });
    Ok(census)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::launcher::{Launcher, LauncherSettings};
    use crate::scheduler::DefaultScheduler;
    use crate::store::MemoryStore;

    fn node(provider: &str, labels: &[&str], state: NodeState) -> Node {
        Node {
            provider: Some(provider.to_string()),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            state: Some(state),
            ..Node::default()
        }
    }

    async fn listed(store: &dyn NodeStore) -> Census {
        Census::read(store).await.expect("listing")
    }

    #[tokio::test]
    async fn the_caches_count_what_a_listing_counts() {
        let root = MemoryStore::new();
        let store: Arc<dyn NodeStore> = Arc::new(root.session());
        for n in [
            node("a", &["small"], NodeState::Ready),
            node("a", &["small"], NodeState::Ready),
            node("a", &["small", "big"], NodeState::InUse),
            node("b", &["big"], NodeState::Building),
            Node::default(),
        ] {
            store.create_node(&n).await.expect("node");
        }
        for (labels, state) in [
            (vec!["small"], RequestState::Requested),
            (vec!["small"], RequestState::Requested),
            (vec!["small", "big"], RequestState::Fulfilled),
        ] {
            let mut r = NodeRequest::new(labels);
            r.state = Some(state);
            store.create_request(&r, "100").await.expect("request");
        }
        let launcher = Launcher::new(
            LauncherSettings::new("census-test"),
            Arc::new(root.session()),
            Arc::new(DefaultScheduler),
            Config::default(),
            BTreeMap::new(),
        );
        let census = launcher.census().await.expect("census");
        assert_eq!(census, listed(&*store).await);
        let ready = NodeGroup {
            state: Some(NodeState::Ready),
            provider: Some("a".to_string()),
            labels: vec!["small".to_string()],
        };
        assert_eq!(census.nodes[&ready], 2);
        assert_eq!(
            census.requests_by_state()[&Some(RequestState::Requested)],
            2
        );

        // Later changes are counted from the store's events.
        let mut gone = store.list_nodes().await.expect("nodes");
        gone.retain(|n| n.state == Some(NodeState::Ready));
        store.delete_node(&gone[0].id).await.expect("delete");
        store
            .create_node(&node("b", &["big"], NodeState::Used))
            .await
            .expect("node");
        let census = launcher.census().await.expect("census");
        assert_eq!(census, listed(&*store).await);
        assert_eq!(census.nodes[&ready], 1);
    }
}
