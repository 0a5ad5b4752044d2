//! The web app: upstream's status endpoints (`/node-list`, `/request-list`,
//! `/label-list`, `/image-list`, `/dib-image-list`, `/image-status`,
//! `/ready`), plus `/healthz`, `/metrics`, and a small write API for
//! requesting nodes without Zuul (`/api/v1/...`).
//!
//! The write API is disabled unless an API token is configured: without
//! one every `/api/v1` call answers 403; with one, calls without
//! `Authorization: Bearer <token>` answer 401. The token is never logged.

mod accept;
mod api;
mod journal;
mod listings;
mod metrics;

pub use metrics::{launcher_census, CensusSource, Metrics};

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use nodepool_core::config::Config;
use nodepool_core::store::NodeStore;

/// What the web app serves from.
pub struct WebState {
    store: Arc<dyn NodeStore>,
    config: RwLock<Arc<Config>>,
    ready: AtomicBool,
    metrics: Arc<Metrics>,
    api_token: Option<String>,
    request_timeout: Duration,
    cache: Mutex<listings::Cache>,
    requests: Mutex<HashMap<String, api::Tracked>>,
    /// Where the API's requests are recorded to survive a restart.
    journal: Option<journal::Journal>,
    /// Held while the journal is written, so writes never cross.
    journal_writes: Mutex<()>,
}

impl fmt::Debug for WebState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebState")
            .field("store", &self.store.backend())
            .field("ready", &self.is_ready())
            .field("api_token", &self.api_token.as_ref().map(|_| "<redacted>"))
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl WebState {
    /// A state serving `store` with `config`, not ready yet, with fresh
    /// metrics and the write API enabled only if `api_token` is set.
    pub fn new(store: Arc<dyn NodeStore>, config: Config, api_token: Option<String>) -> Self {
        Self {
            store,
            config: RwLock::new(Arc::new(config)),
            ready: AtomicBool::new(false),
            metrics: Arc::new(Metrics::new()),
            api_token: api_token.filter(|t| !t.is_empty()),
            request_timeout: Duration::from_secs(3600),
            cache: Mutex::new(listings::Cache::default()),
            requests: Mutex::new(HashMap::new()),
            journal: None,
            journal_writes: Mutex::new(()),
        }
    }

    /// Record the write API's node requests in `state_dir`, so that they
    /// survive a restart of the daemon ([`WebState::resume_requests`]).
    pub fn with_journal(mut self, state_dir: &std::path::Path) -> Self {
        self.journal = Some(journal::Journal::in_dir(state_dir));
        self
    }

    /// Take up the write API's node requests recorded before a restart:
    /// follow the waiting ones (writing them again if their record died
    /// with the old session) and lock the nodes of fulfilled ones again.
    /// Call before the launcher runs, so it does not clean those nodes up.
    pub async fn resume_requests(self: &Arc<Self>) {
        api::resume(Arc::clone(self)).await;
    }

    /// Use these metrics (shared with the launcher) instead of fresh ones.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Mark the daemon ready (every provider started) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether `/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Replace the configuration after a reload.
    pub fn set_config(&self, config: Config) {
        let mut guard = self
            .config
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = Arc::new(config);
    }

    /// The current configuration.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(
            &self
                .config
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn cache(&self) -> MutexGuard<'_, listings::Cache> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn requests(&self) -> MutexGuard<'_, HashMap<String, api::Tracked>> {
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn journal(&self) -> Option<&journal::Journal> {
        self.journal.as_ref()
    }

    /// Write every API request to the journal (when there is one).
    fn persist_requests(&self) {
        let Some(journal) = &self.journal else {
            return;
        };
        let _writing = self
            .journal_writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entries = api::journal_entries(&self.requests());
        journal.save(&entries, nodepool_core::model::now());
    }
}

/// The web app's routes.
pub fn router(state: Arc<WebState>) -> Router {
    let api = Router::new()
        .route("/api/v1/requests", post(api::submit))
        .route("/api/v1/requests/{id}", get(api::show))
        .route("/api/v1/nodes/{id}/release", post(api::release))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            api::require_token,
        ));
    Router::new()
        .route("/node-list", get(listings::listing))
        .route("/request-list", get(listings::listing))
        .route("/label-list", get(listings::listing))
        .route("/image-list", get(listings::listing))
        .route("/dib-image-list", get(listings::listing))
        .route("/image-status", get(listings::listing))
        .route("/ready", get(listings::ready))
        .route("/healthz", get(listings::healthz))
        .route("/metrics", get(listings::metrics))
        .merge(api)
        .fallback(listings::not_found)
        .with_state(state)
}

#[cfg(test)]
mod tests;
