//! The store conformance suite of nodepool-core, run against the embedded
//! store (a temporary database file per test).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use nodepool_core::store::NodeStore;
use nodepool_core::testing::store::{store_suite, StoreHarness};
use nodepool_embedded::EmbeddedStore;

struct Harness {
    store: EmbeddedStore,
    /// Every session handed out, to find the `EmbeddedStore` behind an
    /// `Arc<dyn NodeStore>` again (the trait has no downcast).
    sessions: Mutex<Vec<(Arc<dyn NodeStore>, EmbeddedStore)>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = EmbeddedStore::open(dir.path().join("nodepool.db")).expect("open the store");
        Self {
            store,
            sessions: Mutex::new(Vec::new()),
            _dir: dir,
        }
    }
}

#[async_trait]
impl StoreHarness for Harness {
    async fn session(&self) -> Arc<dyn NodeStore> {
        let store = self.store.session().await.expect("open a session");
        let shared: Arc<dyn NodeStore> = Arc::new(store.clone());
        self.sessions
            .lock()
            .expect("sessions mutex")
            .push((Arc::clone(&shared), store));
        shared
    }

    async fn expire(&self, session: &Arc<dyn NodeStore>) {
        let store = self
            .sessions
            .lock()
            .expect("sessions mutex")
            .iter()
            .find(|(handed, _)| Arc::ptr_eq(handed, session))
            .map(|(_, store)| store.clone())
            .expect("the harness made this session");
        store.expire().await.expect("expire the session");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_passes_the_store_suite() {
    let harness = Harness::new();
    let report = store_suite(&harness).await;
    assert!(report.skipped.is_empty(), "skipped: {:?}", report.skipped);
    assert!(!report.ran.is_empty(), "the suite ran tests");
}
