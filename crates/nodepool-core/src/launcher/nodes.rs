//! The launcher's view of the store's nodes: one small summary per node,
//! kept current from store events instead of listing every node on every
//! pass (kube-runtime's reflector).
//!
//! The cache has its own watch receiver, subscribed before the first full
//! listing. [`NodeCache::sync`] drains it, re-reads each node named by an
//! event since the last sync (once, however many events it had) and lists
//! everything again only at start and after missed events. A store
//! announces a change before it answers the next call of the same process,
//! so a sync that starts after a write of ours has returned sees it; changes
//! made by other processes arrive as their events do, as with a listing
//! taken a moment earlier.
//!
//! Readers look at the summaries under a short lock ([`NodeCache::with`]);
//! nothing awaits while holding it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast::error::TryRecvError;
use tokio::sync::broadcast::Receiver;
use tracing::{debug, info};

use super::input::node_resources;
use super::shared::lock;
use crate::model::{Node, NodeState};
use crate::provider::Resources;
use crate::store::{NodeStore, StoreEvent};
use crate::{Error, Result};

/// What the launcher's decisions read of a node.
#[derive(Debug, Clone)]
pub(crate) struct NodeSummary {
    pub(crate) state: Option<NodeState>,
    pub(crate) state_time: Option<f64>,
    pub(crate) provider: Option<Arc<str>>,
    pub(crate) pool: Option<Arc<str>>,
    pub(crate) labels: Box<[Arc<str>]>,
    pub(crate) allocated_to: Option<Box<str>>,
    pub(crate) az: Option<Arc<str>>,
    pub(crate) tenant_name: Option<Arc<str>>,
    /// Only kept for `init` nodes (the sweep deletes those of gone pools).
    pub(crate) launcher: Option<Arc<str>>,
    pub(crate) resources: Option<Resources>,
    pub(crate) hold_expiration: Option<i64>,
}

impl NodeSummary {
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

/// Node id → summary.
pub(crate) type NodeMap = BTreeMap<String, NodeSummary>;

#[derive(Debug, Default)]
struct View {
    nodes: NodeMap,
    /// Provider, pool, label, AZ, tenant and launcher names: few distinct
    /// values shared by thousands of nodes.
    names: HashSet<Arc<str>>,
}

impl View {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(found) = self.names.get(s) {
            return found.clone();
        }
        let new: Arc<str> = Arc::from(s);
        self.names.insert(new.clone());
        new
    }

    fn intern_opt(&mut self, s: Option<&str>) -> Option<Arc<str>> {
        s.map(|s| self.intern(s))
    }

    fn summarize(&mut self, node: &Node) -> NodeSummary {
        NodeSummary {
            state: node.state,
            state_time: node.state_time,
            provider: self.intern_opt(node.provider.as_deref()),
            pool: self.intern_opt(node.pool.as_deref()),
            labels: node.labels.iter().map(|l| self.intern(l)).collect(),
            allocated_to: node.allocated_to.as_deref().map(Box::from),
            az: self.intern_opt(node.az.as_deref()),
            tenant_name: self.intern_opt(node.tenant_name.as_deref()),
            launcher: if node.state == Some(NodeState::Init) {
                self.intern_opt(node.launcher.as_deref())
            } else {
                None
            },
            resources: node_resources(node),
            hold_expiration: node.hold_expiration,
        }
    }

    fn put(&mut self, node: &Node) {
        let summary = self.summarize(node);
        match self.nodes.get_mut(&node.id) {
            Some(slot) => *slot = summary,
            None => {
                self.nodes.insert(node.id.clone(), summary);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Refresh {
    events: Option<Receiver<StoreEvent>>,
    /// A full listing is due (start, missed events).
    relist: bool,
    /// Nodes changed since their last read.
    dirty: BTreeSet<String>,
}

impl Refresh {
    /// Move the waiting events into `dirty`; missed ones ask for a listing.
    fn drain(&mut self) {
        let Some(events) = self.events.as_mut() else {
            self.relist = true;
            return;
        };
        loop {
            match events.try_recv() {
                Ok(StoreEvent::Node { id, .. }) => {
                    self.dirty.insert(id);
                }
                Ok(StoreEvent::Resync) | Err(TryRecvError::Lagged(_)) => self.relist = true,
                Ok(_) => {}
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Closed) => {
                    self.events = None;
                    self.relist = true;
                    return;
                }
            }
        }
    }
}

/// The launcher's node cache; see the module doc.
#[derive(Debug, Default)]
pub(crate) struct NodeCache {
    view: Mutex<View>,
    refresh: tokio::sync::Mutex<Refresh>,
}

impl NodeCache {
    /// Collect the events waiting, without reading the store (keeps the
    /// receiver from lagging between syncs). Skipped while a sync runs.
    pub(crate) fn drain(&self) {
        if let Ok(mut refresh) = self.refresh.try_lock() {
            refresh.drain();
        }
    }

    /// Bring the cache up to date with every change announced so far.
    pub(crate) async fn sync(&self, store: &dyn NodeStore) -> Result<()> {
        let mut refresh = self.refresh.lock().await;
        if refresh.events.is_none() {
            refresh.events = Some(store.watch());
            refresh.relist = true;
        }
        refresh.drain();
        if refresh.relist {
            // Whatever the listing misses is announced after subscribing.
            let listed = store.list_nodes().await?;
            info!(nodes = listed.len(), "node cache: listing every node");
            let mut view = lock(&self.view);
            let view = &mut *view;
            let mut fresh = NodeMap::new();
            for node in listed {
                let summary = view.summarize(&node);
                fresh.insert(node.id, summary);
            }
            view.nodes = fresh;
            view.names.retain(|name| Arc::strong_count(name) > 1);
            refresh.relist = false;
            refresh.dirty.clear();
            refresh.drain();
        }
        while let Some(id) = refresh.dirty.pop_first() {
            match store.get_node(&id).await {
                Ok(Some(node)) => lock(&self.view).put(&node),
                Ok(None) => {
                    lock(&self.view).nodes.remove(&id);
                }
                // Garbage or an empty znode (a lock taken on a node just
                // deleted recreates it empty, as kazoo's does): not a node;
                // skip it like listings do, never fail the pass on it.
                Err(Error::Corrupt { path, message }) => {
                    debug!(%path, %message, "skipping a node record that cannot be decoded");
                    lock(&self.view).nodes.remove(&id);
                }
                Err(e) => {
                    refresh.dirty.insert(id);
                    return Err(e);
                }
            }
            // Keep the receiver from lagging behind a long sync.
            refresh.drain();
        }
        Ok(())
    }

    /// Read the summaries (no await inside `f`).
    pub(crate) fn with<T>(&self, f: impl FnOnce(&NodeMap) -> T) -> T {
        f(&lock(&self.view).nodes)
    }

    /// Whether the store held node `id` at the last sync.
    pub(crate) fn contains(&self, id: &str) -> bool {
        lock(&self.view).nodes.contains_key(id)
    }
}
