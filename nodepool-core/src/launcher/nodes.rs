//! The launcher's view of the store's nodes: one small summary per node
//! (~64 bytes plus its id; what many nodes have in common is kept once),
//! kept current from store events instead of listing every node on every
//! pass (see [`super::cache`] for how).
//!
//! Readers look at the summaries under a short lock ([`NodeCache::with`]);
//! nothing awaits while holding it.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use async_trait::async_trait;

use super::cache::{Cache, Kind, Names, Shaped, Summaries};
use crate::model::json::JsonObject;
use crate::model::{Node, NodeState};
use crate::provider::Resources;
use crate::store::{NodeStore, StoreEvent};
use crate::Result;

/// What the launcher's decisions read of a node. What the nodes of one
/// label in one pool have in common is one [`NodeShape`] behind an `Arc`,
/// read through `Deref` (`summary.provider`).
#[derive(Debug, Clone)]
pub(crate) struct NodeSummary {
    pub(crate) state: Option<NodeState>,
    pub(crate) state_time: Option<f64>,
    pub(crate) allocated_to: Option<Box<str>>,
    pub(crate) hold_expiration: Option<i64>,
    shape: Arc<NodeShape>,
}

impl Shaped for NodeSummary {
    type Shape = NodeShape;

    fn shape(&self) -> &Arc<NodeShape> {
        &self.shape
    }
}

impl Deref for NodeSummary {
    type Target = NodeShape;

    fn deref(&self) -> &NodeShape {
        &self.shape
    }
}

/// The part of a [`NodeSummary`] that many nodes share.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NodeShape {
    pub(crate) provider: Option<Arc<str>>,
    pub(crate) pool: Option<Arc<str>>,
    pub(crate) labels: Box<[Arc<str>]>,
    pub(crate) az: Option<Arc<str>>,
    pub(crate) tenant_name: Option<Arc<str>>,
    /// Only kept for `init` nodes (the sweep deletes those of gone pools).
    pub(crate) launcher: Option<Arc<str>>,
    pub(crate) resources: Option<Resources>,
}

impl Hash for NodeShape {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.provider.hash(state);
        self.pool.hash(state);
        self.labels.hash(state);
        self.az.hash(state);
        self.tenant_name.hash(state);
        self.launcher.hash(state);
        self.resources.hash(state);
    }
}

impl NodeShape {
    pub(crate) fn provider_is(&self, name: &str) -> bool {
        self.provider.as_deref() == Some(name)
    }

    pub(crate) fn pool_is(&self, name: &str) -> bool {
        self.pool.as_deref() == Some(name)
    }

    pub(crate) fn has_label(&self, label: &str) -> bool {
        self.labels.iter().any(|l| &**l == label)
    }
}

/// The resources a node record says it uses.
pub(crate) fn node_resources(node: &Node) -> Option<Resources> {
    node.resources.as_ref().map(Resources::from_node_json)
}

/// Resources as upstream writes them on a node.
pub(crate) fn resources_json(r: &Resources) -> JsonObject {
    r.to_node_json()
}

/// Node id → summary.
pub(crate) type NodeMap = BTreeMap<String, NodeSummary>;

/// The node cache's records.
#[derive(Debug, Default)]
pub(crate) struct Nodes {
    summaries: Summaries<NodeSummary>,
}

impl Nodes {
    fn summarize(&mut self, names: &mut Names, node: &Node) -> NodeSummary {
        let shape = NodeShape {
            provider: names.intern_opt(node.provider.as_deref()),
            pool: names.intern_opt(node.pool.as_deref()),
            labels: node.labels.iter().map(|l| names.intern(l)).collect(),
            az: names.intern_opt(node.az.as_deref()),
            tenant_name: names.intern_opt(node.tenant_name.as_deref()),
            launcher: if node.state == Some(NodeState::Init) {
                names.intern_opt(node.launcher.as_deref())
            } else {
                None
            },
            resources: node_resources(node),
        };
        let shape = self.summaries.shapes.intern(shape);
        NodeSummary {
            state: node.state,
            state_time: node.state_time,
            allocated_to: node.allocated_to.as_deref().map(Box::from),
            hold_expiration: node.hold_expiration,
            shape,
        }
    }
}

#[async_trait]
impl Kind for Nodes {
    type Record = Node;
    type Map = NodeMap;
    const WHAT: &'static str = "node";

    fn event_id(event: &StoreEvent) -> Option<&str> {
        match event {
            StoreEvent::Node { id, .. } => Some(id),
            _ => None,
        }
    }

    async fn list(store: &dyn NodeStore) -> Result<Vec<Node>> {
        store.list_nodes().await
    }

    async fn get(store: &dyn NodeStore, id: &str) -> Result<Option<Node>> {
        store.get_node(id).await
    }

    fn put(&mut self, names: &mut Names, node: Node) {
        let summary = self.summarize(names, &node);
        self.summaries.put(node.id, summary);
    }

    fn remove(&mut self, id: &str) {
        self.summaries.remove(id);
    }

    fn clear(&mut self) {
        self.summaries.clear();
    }

    fn map(&self) -> &NodeMap {
        &self.summaries.map
    }
}

/// The launcher's node cache; see the module doc.
pub(crate) type NodeCache = Cache<Nodes>;

impl NodeCache {
    /// Whether the store held node `id` at the last sync.
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.with(|nodes| nodes.contains_key(id))
    }

    /// Bring the cache up to date with the store itself, not only with the
    /// events received so far: the ids in the store now are read (one
    /// listing of names), and the records the cache lacks or holds beyond
    /// them are read again. After it, every node created before the call
    /// began is in the cache (see `admission.rs`).
    pub(crate) async fn sync_fresh(&self, store: &dyn NodeStore) -> Result<()> {
        let ids: BTreeSet<String> = store.node_ids().await?.into_iter().collect();
        let stale: Vec<String> = self.with(|nodes| {
            let missing = ids.iter().filter(|id| !nodes.contains_key(id.as_str()));
            let gone = nodes.keys().filter(|id| !ids.contains(id.as_str()));
            missing.chain(gone).cloned().collect()
        });
        self.sync_with(store, stale).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn node(label: &str, state: NodeState) -> Node {
        Node {
            state: Some(state),
            provider: Some("cloud".to_string()),
            pool: Some("main".to_string()),
            labels: vec![label.to_string()],
            launcher: Some("launcher-1".to_string()),
            ..Node::default()
        }
    }

    #[tokio::test]
    async fn nodes_alike_share_one_shape_and_read_through_it() {
        let store = MemoryStore::new();
        let cache = NodeCache::default();
        let a = store
            .create_node(&node("small", NodeState::Ready))
            .await
            .expect("create");
        let b = store
            .create_node(&node("small", NodeState::Ready))
            .await
            .expect("create");
        let building = store
            .create_node(&node("small", NodeState::Init))
            .await
            .expect("create");
        cache.sync(&store).await.expect("sync");
        cache.with(|nodes| {
            assert!(Arc::ptr_eq(&nodes[&a].shape, &nodes[&b].shape));
            assert!(nodes[&a].provider_is("cloud") && nodes[&a].pool_is("main"));
            assert!(nodes[&a].has_label("small"));
            assert_eq!(nodes[&a].launcher, None, "kept for init nodes only");
            assert_eq!(nodes[&building].launcher.as_deref(), Some("launcher-1"));
        });
        for id in [&a, &b, &building] {
            store.delete_node(id).await.expect("delete");
        }
        cache.sync(&store).await.expect("sync");
        assert!(!cache.contains(&a));
        cache.records(|r| assert!(r.summaries.shapes.is_empty(), "no shape outlives its nodes"));
    }

    /// The queues upstream's tree cache reports: events received and not
    /// taken in (`event_queue`), records whose re-read is pending
    /// (`playback_queue`); both empty after a sync.
    #[tokio::test]
    async fn queues_count_events_waiting_and_records_to_read_again() {
        use super::super::cache::CacheQueues;
        let store = MemoryStore::new();
        let cache = NodeCache::default();
        assert_eq!(cache.queues(), CacheQueues::default());
        cache.sync(&store).await.expect("first sync subscribes");
        let a = store
            .create_node(&node("small", NodeState::Ready))
            .await
            .expect("create");
        let mut node_a = store.get_node(&a).await.expect("read").expect("exists");
        node_a.set_state(NodeState::Used);
        store.update_node(&node_a).await.expect("update");
        let b = store
            .create_node(&node("small", NodeState::Ready))
            .await
            .expect("create");
        let waiting = cache.queues();
        assert!(
            waiting.events >= 3,
            "three node events at least: {waiting:?}"
        );
        assert_eq!(waiting.playback, 0);
        // Taken in: two records to read again (a's two events count once).
        cache.drain();
        assert_eq!(
            cache.queues(),
            CacheQueues {
                events: 0,
                playback: 2
            }
        );
        cache.sync(&store).await.expect("sync");
        assert_eq!(cache.queues(), CacheQueues::default());
        assert!(cache.contains(&a) && cache.contains(&b));
    }
}
