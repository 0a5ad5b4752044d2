//! The store conformance suite: one async fn per behaviour of
//! [`NodeStore`], and [`store_suite`] that runs them all.
//!
//! Every test makes its own records with unique names and compares sets of
//! ids it created, so the suite can run against a shared, long-lived
//! backend (a ZooKeeper server with records of other runs). Tests clean up
//! the persistent records they make.
//!
//! A backend runs it from its tests through a [`StoreHarness`] that opens
//! sessions and makes them expire:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use async_trait::async_trait;
//! # use nodepool_core::store::{MemoryStore, NodeStore};
//! # use nodepool_core::testing::store::{store_suite, StoreHarness};
//! struct Harness(MemoryStore);
//!
//! #[async_trait]
//! impl StoreHarness for Harness {
//!     async fn session(&self) -> Arc<dyn NodeStore> {
//!         Arc::new(self.0.session())
//!     }
//!     async fn expire(&self, session: &Arc<dyn NodeStore>) {
//!         session.close().await.unwrap();
//!     }
//! }
//! # async fn run() {
//! let report = store_suite(&Harness(MemoryStore::new())).await;
//! assert!(report.skipped.is_empty());
//! # }
//! ```

mod images;
mod locks;
mod records;
mod sessions;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::model::{
    BuildState, ImageBuild, ImageUpload, Node, NodeRequest, NodeState, RequestState, UploadState,
};
use crate::store::{NodeStore, StoreEvent};

pub use self::images::{
    image_builds_and_uploads_crud, image_pause_and_build_request_flags,
    upload_ids_follow_a_sequence_per_provider,
};
pub use self::locks::{
    blocking_lock_acquired_after_release, blocking_lock_waits_then_times_out,
    concurrent_lockers_never_overlap, deleting_a_node_frees_its_lock,
    lock_contenders_list_holder_first, lock_try_once_fails_when_held, locks_exclude_each_other,
    unlock_twice_fails_with_lock_lost, watch_fires_on_lock_changes,
};
pub use self::records::{
    admission_tokens_admit_one_writer_per_version, concurrent_admissions_never_share_a_version,
    concurrent_writers_get_distinct_ids, node_crud, node_ids_follow_a_sequence, request_crud,
    request_ids_follow_priority_then_sequence, update_missing_fails_delete_missing_succeeds,
};
pub use self::sessions::{
    components_register_and_die_with_session, ephemeral_requests_die_with_their_session,
    locks_die_with_their_session, watch_fires_on_image_and_component_changes,
    watch_fires_on_node_and_request_changes,
};

/// How long a test waits for something that should happen promptly.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// Opens sessions on the backend under test.
#[async_trait]
pub trait StoreHarness: Send + Sync {
    /// A new session (a new client of the same backend).
    async fn session(&self) -> Arc<dyn NodeStore>;

    /// Ends `session` without a clean close, as a ZooKeeper session expiry
    /// does. A backend without expiry may close it.
    async fn expire(&self, session: &Arc<dyn NodeStore>);

    /// Whether the backend announces lock changes ([`StoreEvent::Lock`]).
    fn watches_locks(&self) -> bool {
        true
    }
}

/// What [`store_suite`] ran.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SuiteReport {
    /// The tests that ran (and passed: a failure panics).
    pub ran: Vec<&'static str>,
    /// The tests left out, with the reason.
    pub skipped: Vec<(&'static str, String)>,
}

impl SuiteReport {
    fn ran(&mut self, name: &'static str) {
        println!("store suite: {name} ... ok");
        self.ran.push(name);
    }

    fn skip(&mut self, name: &'static str, reason: &str) {
        println!("store suite: {name} ... skipped ({reason})");
        self.skipped.push((name, reason.to_owned()));
    }
}

/// Runs every test of the suite against the harness's backend. A failing
/// test panics; the report lists what ran and what was skipped, and why.
pub async fn store_suite(harness: &dyn StoreHarness) -> SuiteReport {
    let mut report = SuiteReport::default();
    let session = harness.session().await;
    let store: &dyn NodeStore = session.as_ref();

    node_crud(store).await;
    report.ran("node_crud");
    node_ids_follow_a_sequence(store).await;
    report.ran("node_ids_follow_a_sequence");
    request_crud(store).await;
    report.ran("request_crud");
    request_ids_follow_priority_then_sequence(store).await;
    report.ran("request_ids_follow_priority_then_sequence");
    update_missing_fails_delete_missing_succeeds(store).await;
    report.ran("update_missing_fails_delete_missing_succeeds");
    image_builds_and_uploads_crud(store).await;
    report.ran("image_builds_and_uploads_crud");
    upload_ids_follow_a_sequence_per_provider(store).await;
    report.ran("upload_ids_follow_a_sequence_per_provider");
    image_pause_and_build_request_flags(store).await;
    report.ran("image_pause_and_build_request_flags");

    lock_try_once_fails_when_held(store).await;
    report.ran("lock_try_once_fails_when_held");
    unlock_twice_fails_with_lock_lost(store).await;
    report.ran("unlock_twice_fails_with_lock_lost");
    locks_exclude_each_other(harness).await;
    report.ran("locks_exclude_each_other");
    blocking_lock_waits_then_times_out(harness).await;
    report.ran("blocking_lock_waits_then_times_out");
    blocking_lock_acquired_after_release(harness).await;
    report.ran("blocking_lock_acquired_after_release");
    lock_contenders_list_holder_first(harness).await;
    report.ran("lock_contenders_list_holder_first");
    deleting_a_node_frees_its_lock(harness).await;
    report.ran("deleting_a_node_frees_its_lock");
    locks_die_with_their_session(harness).await;
    report.ran("locks_die_with_their_session");

    ephemeral_requests_die_with_their_session(harness).await;
    report.ran("ephemeral_requests_die_with_their_session");
    components_register_and_die_with_session(harness).await;
    report.ran("components_register_and_die_with_session");

    watch_fires_on_node_and_request_changes(harness).await;
    report.ran("watch_fires_on_node_and_request_changes");
    watch_fires_on_image_and_component_changes(store).await;
    report.ran("watch_fires_on_image_and_component_changes");
    if harness.watches_locks() {
        watch_fires_on_lock_changes(store).await;
        report.ran("watch_fires_on_lock_changes");
    } else {
        report.skip(
            "watch_fires_on_lock_changes",
            "the harness says the backend does not announce lock changes",
        );
    }

    concurrent_writers_get_distinct_ids(harness).await;
    report.ran("concurrent_writers_get_distinct_ids");
    concurrent_lockers_never_overlap(harness).await;
    report.ran("concurrent_lockers_never_overlap");
    admission_tokens_admit_one_writer_per_version(harness).await;
    report.ran("admission_tokens_admit_one_writer_per_version");
    concurrent_admissions_never_share_a_version(harness).await;
    report.ran("concurrent_admissions_never_share_a_version");

    session
        .close()
        .await
        .unwrap_or_else(|e| panic!("closing the suite's session failed: {e}"));
    report
}

/// A name no other test, run or process uses.
pub(crate) fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{nanos:x}-{n}", std::process::id())
}

/// Panics with `what` unless `result` is `Ok`.
pub(crate) fn ok<T, E: std::fmt::Display>(result: Result<T, E>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("{what} failed: {e}"))
}

/// The fields of a node the store contract covers (a backend may change
/// how other details are represented when it encodes a record).
#[allow(clippy::type_complexity)]
pub(crate) fn node_fields(
    n: &Node,
) -> (
    &str,
    Option<NodeState>,
    Option<f64>,
    Option<&str>,
    Option<&str>,
    &[String],
    Option<&str>,
    Option<&str>,
    Option<&str>,
) {
    (
        &n.id,
        n.state,
        n.state_time,
        n.provider.as_deref(),
        n.pool.as_deref(),
        &n.labels,
        n.allocated_to.as_deref(),
        n.external_id.as_deref(),
        n.launcher.as_deref(),
    )
}

/// The fields of a node request the store contract covers.
#[allow(clippy::type_complexity)]
pub(crate) fn request_fields(
    r: &NodeRequest,
) -> (
    &str,
    Option<RequestState>,
    Option<f64>,
    &[String],
    &[String],
    &[String],
    bool,
    Option<&str>,
    i64,
) {
    (
        &r.id,
        r.state,
        r.state_time,
        &r.declined_by,
        &r.node_types,
        &r.nodes,
        r.reuse,
        r.requestor.as_deref(),
        r.relative_priority,
    )
}

/// The fields of an image build the store contract covers.
pub(crate) fn build_fields(b: &ImageBuild) -> (&str, &str, Option<BuildState>, Option<f64>) {
    (&b.id, &b.image_name, b.state, b.state_time)
}

/// The fields of an image upload the store contract covers.
#[allow(clippy::type_complexity)]
pub(crate) fn upload_fields(
    u: &ImageUpload,
) -> (
    &str,
    &str,
    &str,
    &str,
    Option<UploadState>,
    Option<f64>,
    Option<&str>,
) {
    (
        &u.id,
        &u.image_name,
        &u.build_id,
        &u.provider_name,
        u.state,
        u.state_time,
        u.external_id.as_deref(),
    )
}

/// Panics with `what` unless `value` is `Some`.
pub(crate) fn some<T>(value: Option<T>, what: &str) -> T {
    value.unwrap_or_else(|| panic!("expected {what} to be stored, found nothing"))
}

/// Waits for the first event satisfying `wanted`, skipping others (the
/// backend may be shared). Panics after [`PATIENCE`] or if events were lost.
pub(crate) async fn next_event(
    events: &mut broadcast::Receiver<StoreEvent>,
    what: &str,
    wanted: impl Fn(&StoreEvent) -> bool,
) -> StoreEvent {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => panic!("no event for {what} within {PATIENCE:?}"),
            Ok(Err(RecvError::Lagged(n))) => {
                panic!("watcher lagged by {n} events while waiting for {what}")
            }
            Ok(Err(RecvError::Closed)) => panic!("watch closed while waiting for {what}"),
            Ok(Ok(event)) if wanted(&event) => return event,
            Ok(Ok(_)) => {}
        }
    }
}

/// Polls `check` until it returns true; panics after [`PATIENCE`].
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < PATIENCE,
            "{what} did not happen within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
