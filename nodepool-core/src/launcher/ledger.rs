//! Each pool's ledger: who the pool worker is, the requests it handles and
//! waits on, the launches in flight, and its wake-ups. The pool worker and
//! its request handlers keep it through its methods ([`Ledger::start`],
//! [`Ledger::node_created`], [`Ledger::launching`], [`Ledger::finish`]…);
//! the pass reads a copy ([`Ledger::book`]) to count what is in flight.
//!
//! [`Ledgers`] lists the running pools' ledgers, for waking them and for
//! status.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::stats::PoolStatus;
use super::util::lock;

/// The component kind of a pool worker (upstream's `PoolComponent`).
pub(crate) const POOL_KIND: &str = crate::model::POOL;

/// A request this pool is handling.
#[derive(Debug, Clone, Default)]
pub(crate) struct Active {
    /// Labels of the nodes it launches (new nodes, all attempts).
    pub(crate) launch_labels: Vec<String>,
    /// Ready nodes it takes.
    pub(crate) reused: Vec<String>,
    /// Nodes it created in the store.
    pub(crate) created: BTreeSet<String>,
    /// Launches in progress.
    pub(crate) launching: usize,
    /// Waiting for quota after the cloud refused a launch.
    pub(crate) aborted: bool,
}

/// The pool's bookkeeping of its own work: a pass reads a copy.
#[derive(Debug, Clone, Default)]
pub(crate) struct Book {
    active: BTreeMap<String, Active>,
    waiting: BTreeSet<String>,
}

impl Book {
    /// Whether a handler has request `id`.
    pub(crate) fn is_active(&self, id: &str) -> bool {
        self.active.contains_key(id)
    }

    /// Whether request `id` waits at a limit.
    pub(crate) fn is_waiting(&self, id: &str) -> bool {
        self.waiting.contains(id)
    }

    /// Whether a handler waits for quota after a launch was aborted.
    pub(crate) fn any_aborted(&self) -> bool {
        self.active.values().any(|a| a.aborted)
    }

    /// The nodes the handlers created (counted through their plans).
    pub(crate) fn created_nodes(&self) -> BTreeSet<&str> {
        self.active
            .values()
            .flat_map(|a| a.created.iter().map(String::as_str))
            .collect()
    }

    /// The nodes the handlers created, owned.
    pub(crate) fn created_node_ids(&self) -> BTreeSet<String> {
        self.active
            .values()
            .flat_map(|a| a.created.iter().cloned())
            .collect()
    }

    /// The ready nodes the handlers were promised.
    pub(crate) fn reserved_nodes(&self) -> BTreeSet<&str> {
        self.active
            .values()
            .flat_map(|a| a.reused.iter().map(String::as_str))
            .collect()
    }

    /// This book without the entry of `id` (an admission counts its own
    /// batch instead).
    pub(crate) fn without(mut self, id: &str) -> Self {
        self.active.remove(id);
        self
    }

    /// The label of every node the handlers launch (all attempts).
    pub(crate) fn launch_labels(&self) -> impl Iterator<Item = &str> {
        self.active
            .values()
            .flat_map(|a| a.launch_labels.iter().map(String::as_str))
    }
}

/// One pool worker's ledger; see the module doc.
#[derive(Debug)]
pub(crate) struct Ledger {
    pub(crate) provider: String,
    pub(crate) pool: String,
    /// The pool worker id, as written in `declined_by` and node `launcher`.
    pub(crate) launcher_id: String,
    /// Component registration name.
    pub(crate) component_name: String,
    /// Run a pass soon.
    wake: Notify,
    /// A node was deleted: quota may be free again.
    quota_freed: Notify,
    paused: AtomicBool,
    book: Mutex<Book>,
}

impl Ledger {
    pub(crate) fn new(hostname: &str, provider: &str, pool: &str) -> Self {
        let uuid = uuid::Uuid::new_v4().simple().to_string();
        Self {
            provider: provider.to_string(),
            pool: pool.to_string(),
            launcher_id: format!("{hostname}-PoolWorker.{provider}-{pool}-{uuid}"),
            component_name: format!("{hostname}-{provider}-{pool}-{uuid}"),
            wake: Notify::new(),
            quota_freed: Notify::new(),
            paused: AtomicBool::new(false),
            book: Mutex::new(Book::default()),
        }
    }

    /// Ask the pool worker for a pass soon.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Until a wake-up: the pool worker waits on it between passes.
    pub(crate) fn woken(&self) -> &Notify {
        &self.wake
    }

    /// Quota may be free again: wake the pass and handlers waiting after a
    /// quota abort.
    pub(crate) fn free_quota(&self) {
        self.quota_freed.notify_waiters();
        self.wake.notify_one();
    }

    /// Until quota may be free again (see [`Ledger::free_quota`]).
    pub(crate) async fn quota_freed(&self) {
        self.quota_freed.notified().await;
    }

    /// Record whether the pool is paused; true when that changed.
    pub(crate) fn set_paused(&self, paused: bool) -> bool {
        self.paused.swap(paused, Ordering::Relaxed) != paused
    }

    /// A copy of the book, for a pass.
    pub(crate) fn book(&self) -> Book {
        lock(&self.book).clone()
    }

    /// Keep waiting only the requests still `open`.
    pub(crate) fn keep_waiting(&self, open: impl Fn(&str) -> bool) {
        lock(&self.book).waiting.retain(|id| open(id));
    }

    /// Request `id` waits at a limit.
    pub(crate) fn wait(&self, id: String) {
        lock(&self.book).waiting.insert(id);
    }

    /// Request `id` waits no more (it was declined).
    pub(crate) fn stop_waiting(&self, id: &str) {
        lock(&self.book).waiting.remove(id);
    }

    /// A handler takes request `id` with `plan`.
    pub(crate) fn start(&self, id: &str, plan: Active) {
        let mut book = lock(&self.book);
        book.waiting.remove(id);
        book.active.insert(id.to_string(), plan);
    }

    /// The handler of request `id` created node `node_id` in the store.
    pub(crate) fn node_created(&self, id: &str, node_id: &str) {
        if let Some(a) = lock(&self.book).active.get_mut(id) {
            a.created.insert(node_id.to_string());
        }
    }

    /// `delta` more (or fewer) launches of request `id` are in flight.
    pub(crate) fn launching(&self, id: &str, delta: isize) {
        if let Some(a) = lock(&self.book).active.get_mut(id) {
            a.launching = a.launching.saturating_add_signed(delta);
        }
    }

    /// Request `id` waits for quota after a launch was aborted (or waits no
    /// more); the pool's pass is woken to pause (or resume).
    pub(crate) fn set_aborted(&self, id: &str, aborted: bool) {
        if let Some(a) = lock(&self.book).active.get_mut(id) {
            a.aborted = aborted;
        }
        self.wake.notify_one();
    }

    /// The handler of request `id` ended.
    pub(crate) fn finish(&self, id: &str) {
        lock(&self.book).active.remove(id);
    }

    /// What the pool is doing now.
    pub(crate) fn status(&self) -> PoolStatus {
        let book = lock(&self.book);
        PoolStatus {
            provider: self.provider.clone(),
            pool: self.pool.clone(),
            launcher_id: self.launcher_id.clone(),
            paused: self.paused.load(Ordering::Relaxed),
            active_requests: book.active.keys().cloned().collect(),
            waiting_requests: book.waiting.iter().cloned().collect(),
            launching: book.active.values().map(|a| a.launching).sum(),
        }
    }
}

/// The ledgers of the running pool workers, by (provider, pool).
#[derive(Debug, Default)]
pub(crate) struct Ledgers {
    pools: Mutex<BTreeMap<(String, String), Arc<Ledger>>>,
}

impl Ledgers {
    /// A pool worker starts with `ledger`.
    pub(crate) fn insert(&self, ledger: Arc<Ledger>) {
        let key = (ledger.provider.clone(), ledger.pool.clone());
        lock(&self.pools).insert(key, ledger);
    }

    /// A pool worker stopped: drop its ledger unless a newer worker of the
    /// same pool replaced it.
    pub(crate) fn remove(&self, ledger: &Arc<Ledger>) {
        let key = (ledger.provider.clone(), ledger.pool.clone());
        let mut pools = lock(&self.pools);
        if pools.get(&key).is_some_and(|l| Arc::ptr_eq(l, ledger)) {
            pools.remove(&key);
        }
    }

    /// Wake the pool workers (of one provider, or all).
    pub(crate) fn wake(&self, provider: Option<&str>) {
        for ((p, _), ledger) in lock(&self.pools).iter() {
            if provider.map_or(true, |want| want == p) {
                ledger.wake();
            }
        }
    }

    /// Tell every pool that quota may have freed up.
    pub(crate) fn quota_freed(&self) {
        for ledger in lock(&self.pools).values() {
            ledger.free_quota();
        }
    }

    /// Every running pool's status.
    pub(crate) fn status(&self) -> Vec<PoolStatus> {
        lock(&self.pools).values().map(|l| l.status()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_started_request_leaves_waiting_and_counts_its_launches_until_finished() {
        let ledger = Ledger::new("host", "cloud", "main");
        assert!(ledger
            .launcher_id
            .starts_with("host-PoolWorker.cloud-main-"));
        ledger.wait("100-1".to_string());
        ledger.wait("100-2".to_string());
        ledger.start("100-1", Active::default());
        ledger.node_created("100-1", "0000000001");
        ledger.launching("100-1", 2);
        ledger.launching("100-1", -1);
        ledger.node_created("gone", "0000000002");

        let book = ledger.book();
        assert_eq!(book.waiting.iter().collect::<Vec<_>>(), ["100-2"]);
        assert_eq!(
            book.active["100-1"].created.iter().collect::<Vec<_>>(),
            ["0000000001"]
        );
        let status = ledger.status();
        assert_eq!(status.active_requests, ["100-1"]);
        assert_eq!(status.waiting_requests, ["100-2"]);
        assert_eq!(status.launching, 1);

        ledger.set_aborted("100-1", true);
        assert!(ledger.book().active["100-1"].aborted);
        ledger.finish("100-1");
        ledger.keep_waiting(|_| false);
        let status = ledger.status();
        assert!(status.active_requests.is_empty() && status.waiting_requests.is_empty());
        assert_eq!(status.launching, 0);
    }

    #[test]
    fn a_stopped_worker_does_not_remove_its_successors_ledger() {
        let ledgers = Ledgers::default();
        let old = Arc::new(Ledger::new("host", "cloud", "main"));
        let new = Arc::new(Ledger::new("host", "cloud", "main"));
        ledgers.insert(old.clone());
        ledgers.insert(new.clone());
        ledgers.remove(&old);
        assert_eq!(ledgers.status().len(), 1);
        assert_eq!(ledgers.status()[0].launcher_id, new.launcher_id);
        assert!(new.set_paused(true), "the pause changed");
        assert!(!new.set_paused(true), "already paused");
        assert!(ledgers.status()[0].paused);
        ledgers.remove(&new);
        assert!(ledgers.status().is_empty());
    }
}
