//! The launcher's view of the store's node requests: one small summary per
//! request, kept current from store events (see [`super::cache`]) instead
//! of every pool pass listing and decoding every request. While `min-ready`
//! has thousands of requests outstanding, that listing was most of the
//! launcher's memory and much of its CPU.
//!
//! Readers look at the summaries under a short lock ([`RequestCache::with`]);
//! nothing awaits while holding it.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::Arc;

use async_trait::async_trait;

use super::cache::{Cache, Kind, Names, Shaped, Summaries};
use crate::model::{NodeRequest, RequestState};
use crate::scheduler::RequestInfo;
use crate::store::{NodeStore, StoreEvent};
use crate::Result;

/// What the launcher's decisions read of a request (~40 bytes plus its id):
/// what many requests share is one [`RequestShape`] behind an `Arc`, read
/// through `Deref`.
#[derive(Debug, Clone)]
pub(crate) struct RequestSummary {
    pub(crate) state: Option<RequestState>,
    pub(crate) relative_priority: i64,
    pub(crate) declined_by: Box<[Arc<str>]>,
    shape: Arc<RequestShape>,
}

/// What the requests of one requestor for the same labels have in common.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct RequestShape {
    pub(crate) node_types: Box<[Arc<str>]>,
    pub(crate) requestor: Option<Arc<str>>,
    pub(crate) tenant_name: Option<Arc<str>>,
    pub(crate) provider: Option<Arc<str>>,
    pub(crate) reuse: bool,
}

impl Shaped for RequestSummary {
    type Shape = RequestShape;

    fn shape(&self) -> &Arc<RequestShape> {
        &self.shape
    }
}

impl Deref for RequestSummary {
    type Target = RequestShape;

    fn deref(&self) -> &RequestShape {
        &self.shape
    }
}

impl RequestSummary {
    /// Whether pool `launcher_id` declined it.
    pub(crate) fn declined_by(&self, launcher_id: &str) -> bool {
        self.declined_by.iter().any(|d| &**d == launcher_id)
    }

    /// The scheduler's view of request `id`.
    pub(crate) fn info(&self, id: &str, waiting: bool) -> RequestInfo {
        let owned = |s: &Option<Arc<str>>| s.as_deref().map(str::to_string);
        RequestInfo {
            id: id.to_string(),
            labels: self.node_types.iter().map(|l| l.to_string()).collect(),
            reuse: self.reuse,
            tenant: owned(&self.tenant_name),
            requestor: owned(&self.requestor),
            declined_by: self.declined_by.iter().map(|d| d.to_string()).collect(),
            provider: owned(&self.provider),
            waiting,
        }
    }
}

/// Request id → summary.
pub(crate) type RequestMap = BTreeMap<String, RequestSummary>;

/// The request cache's records.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    summaries: Summaries<RequestSummary>,
}

impl Requests {
    fn summarize(&mut self, names: &mut Names, request: &NodeRequest) -> RequestSummary {
        let shape = RequestShape {
            node_types: request.node_types.iter().map(|l| names.intern(l)).collect(),
            requestor: names.intern_opt(request.requestor.as_deref()),
            tenant_name: names.intern_opt(request.tenant_name.as_deref()),
            provider: names.intern_opt(request.provider.as_deref()),
            reuse: request.reuse,
        };
        let shape = self.summaries.shapes.intern(shape);
        RequestSummary {
            state: request.state,
            relative_priority: request.relative_priority,
            declined_by: request
                .declined_by
                .iter()
                .map(|d| names.intern(d))
                .collect(),
            shape,
        }
    }
}

#[async_trait]
impl Kind for Requests {
    type Record = NodeRequest;
    type Map = RequestMap;
    const WHAT: &'static str = "request";

    fn event_id(event: &StoreEvent) -> Option<&str> {
        match event {
            StoreEvent::Request { id, .. } => Some(id),
            _ => None,
        }
    }

    async fn list(store: &dyn NodeStore) -> Result<Vec<NodeRequest>> {
        store.list_requests().await
    }

    async fn get(store: &dyn NodeStore, id: &str) -> Result<Option<NodeRequest>> {
        store.get_request(id).await
    }

    fn put(&mut self, names: &mut Names, request: NodeRequest) {
        let summary = self.summarize(names, &request);
        self.summaries.put(request.id, summary);
    }

    fn remove(&mut self, id: &str) {
        self.summaries.remove(id);
    }

    fn clear(&mut self) {
        self.summaries.clear();
    }

    fn map(&self) -> &RequestMap {
        &self.summaries.map
    }
}

/// The launcher's request cache; see the module doc.
pub(crate) type RequestCache = Cache<Requests>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NodeRequest;
    use crate::store::MemoryStore;

    fn request(label: &str) -> NodeRequest {
        NodeRequest {
            state: Some(RequestState::Requested),
            node_types: vec![label.to_string()],
            requestor: Some("zuul".to_string()),
            ..NodeRequest::default()
        }
    }

    fn states(cache: &RequestCache) -> Vec<(String, Option<RequestState>)> {
        cache.with(|r| r.iter().map(|(id, s)| (id.clone(), s.state)).collect())
    }

    #[tokio::test]
    async fn follows_the_stores_requests_from_events() {
        let store = MemoryStore::new();
        let before = store
            .create_request(&request("small"), "100")
            .await
            .expect("create");
        let cache = RequestCache::default();
        cache.sync(&store).await.expect("first sync lists");
        assert_eq!(
            states(&cache),
            [(before.clone(), Some(RequestState::Requested))]
        );

        let after = store
            .create_request(&request("small"), "200")
            .await
            .expect("create");
        let mut pending = store
            .get_request(&before)
            .await
            .expect("get")
            .expect("there");
        pending.state = Some(RequestState::Pending);
        pending.declined_by = vec!["pool-a".to_string()];
        store.update_request(&pending).await.expect("update");
        cache.sync(&store).await.expect("sync");
        assert_eq!(
            states(&cache),
            [
                (before.clone(), Some(RequestState::Pending)),
                (after.clone(), Some(RequestState::Requested))
            ]
        );
        assert!(cache.with(|r| r[&before].declined_by("pool-a")));

        store.delete_request(&before).await.expect("delete");
        cache.sync(&store).await.expect("sync");
        assert_eq!(states(&cache), [(after, Some(RequestState::Requested))]);
    }

    #[tokio::test]
    async fn requests_alike_share_one_shape_until_the_last_goes() {
        let store = MemoryStore::new();
        let cache = RequestCache::default();
        cache.sync(&store).await.expect("sync");
        let a = store
            .create_request(&request("small"), "100")
            .await
            .expect("create");
        let b = store
            .create_request(&request("small"), "100")
            .await
            .expect("create");
        let c = store
            .create_request(&request("large"), "100")
            .await
            .expect("create");
        cache.sync(&store).await.expect("sync");
        cache.with(|r| {
            assert!(Arc::ptr_eq(&r[&a].shape, &r[&b].shape));
            assert!(!Arc::ptr_eq(&r[&a].shape, &r[&c].shape));
            let info = r[&c].info(&c, true);
            assert_eq!(info.labels, ["large"]);
            assert_eq!(info.requestor.as_deref(), Some("zuul"));
            assert!(info.waiting);
        });
        for id in [&a, &b, &c] {
            store.delete_request(id).await.expect("delete");
        }
        cache.sync(&store).await.expect("sync");
        cache.records(|r| {
            assert!(r.summaries.map.is_empty());
            assert!(
                r.summaries.shapes.is_empty(),
                "no shape outlives its requests"
            );
        });
    }
}
