//! A cache of one kind of store record, kept current from store events
//! instead of listing every record on every pass (kube-runtime's
//! reflector): the machinery shared by the node cache ([`super::nodes`])
//! and the request cache ([`super::requests`]).
//!
//! A cache has its own watch receiver, subscribed before the first full
//! listing. [`Cache::sync`] drains it, re-reads each record named by an
//! event since the last sync (once, however many events it had) and lists
//! everything again only at start and after missed events. A store
//! announces a change before it answers the next call of the same process,
//! so a sync that starts after a write of ours has returned sees it; changes
//! made by other processes arrive as their events do, as with a listing
//! taken a moment earlier.
//!
//! Readers look at the view under a short lock ([`Cache::with`]); nothing
//! awaits while holding it.
//!
//! [`Cache::queues`] measures the cache's two queues, upstream's tree
//! cache `event_queue` and `playback_queue` gauges: the store events its
//! receiver holds and has not taken in yet, and the records named by
//! events taken in whose re-read (and update of the view) is pending.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Debug;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::broadcast::error::TryRecvError;
use tokio::sync::broadcast::Receiver;
use tracing::{debug, info};

use super::util::lock;
use crate::store::{NodeStore, StoreEvent};
use crate::{Error, Result};

/// Provider, pool, label, AZ, tenant, requestor and pool-id names: few
/// distinct values shared by thousands of records.
#[derive(Debug, Default)]
pub(crate) struct Names(HashSet<Arc<str>>);

impl Names {
    /// The shared copy of `s`.
    pub(crate) fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(found) = self.0.get(s) {
            return found.clone();
        }
        let new: Arc<str> = Arc::from(s);
        self.0.insert(new.clone());
        new
    }

    /// The shared copy of `s`, if any.
    pub(crate) fn intern_opt(&mut self, s: Option<&str>) -> Option<Arc<str>> {
        s.map(|s| self.intern(s))
    }

    /// Forget names no record uses any more.
    fn prune(&mut self) {
        self.0.retain(|name| Arc::strong_count(name) > 1);
    }
}

/// What many summaries have in common, each distinct value kept once and
/// shared through an `Arc` (the node and request caches' shapes).
#[derive(Debug)]
pub(crate) struct Shapes<S>(HashSet<Arc<S>>);

impl<S> Default for Shapes<S> {
    fn default() -> Self {
        Self(HashSet::new())
    }
}

impl<S: Eq + std::hash::Hash> Shapes<S> {
    /// The shared copy of `shape`.
    pub(crate) fn intern(&mut self, shape: S) -> Arc<S> {
        if let Some(found) = self.0.get(&shape) {
            return found.clone();
        }
        let new = Arc::new(shape);
        self.0.insert(new.clone());
        new
    }

    /// Forget the shape of a summary that goes if no other summary has it
    /// (the set holds one reference, `old` another).
    pub(crate) fn release(&mut self, old: &Arc<S>) {
        if Arc::strong_count(old) == 2 {
            self.0.remove(old);
        }
    }

    /// Forget every shape.
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    /// Whether no shape is kept.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A summary that shares its [`Shapes`] entry with others.
pub(crate) trait Shaped {
    /// What many summaries have in common.
    type Shape: Eq + std::hash::Hash;
    /// Its shared shape.
    fn shape(&self) -> &Arc<Self::Shape>;
}

/// Summaries by record id, with the shapes they share: a shape is
/// forgotten when the last summary using it is replaced or removed.
#[derive(Debug)]
pub(crate) struct Summaries<V: Shaped> {
    /// Record id → summary.
    pub(crate) map: BTreeMap<String, V>,
    /// The shapes in use, each once.
    pub(crate) shapes: Shapes<V::Shape>,
}

impl<V: Shaped> Default for Summaries<V> {
    fn default() -> Self {
        Self {
            map: BTreeMap::new(),
            shapes: Shapes::default(),
        }
    }
}

impl<V: Shaped> Summaries<V> {
    /// Store (or replace) the summary of record `id`.
    pub(crate) fn put(&mut self, id: String, summary: V) {
        let old = match self.map.get_mut(&id) {
            Some(slot) => Some(std::mem::replace(slot, summary)),
            None => self.map.insert(id, summary),
        };
        if let Some(old) = old {
            self.shapes.release(old.shape());
        }
    }

    /// Forget record `id`.
    pub(crate) fn remove(&mut self, id: &str) {
        if let Some(old) = self.map.remove(id) {
            self.shapes.release(old.shape());
        }
    }

    /// Forget every record.
    pub(crate) fn clear(&mut self) {
        self.map.clear();
        self.shapes.clear();
    }
}

/// One kind of record as a cache keeps it: how to read it from the store
/// and what to keep of it.
#[async_trait]
pub(crate) trait Kind: Default + Debug + Send + 'static {
    /// The record as the store returns it.
    type Record: Send + 'static;
    /// What readers see: id → summary.
    type Map: Debug;
    /// What the cache holds, for logs ("node", "request").
    const WHAT: &'static str;

    /// The record id an event is about, if it is about this kind.
    fn event_id(event: &StoreEvent) -> Option<&str>;
    /// Every record.
    async fn list(store: &dyn NodeStore) -> Result<Vec<Self::Record>>;
    /// One record.
    async fn get(store: &dyn NodeStore, id: &str) -> Result<Option<Self::Record>>;
    /// Store (or replace) the summary of `record`.
    fn put(&mut self, names: &mut Names, record: Self::Record);
    /// Forget record `id`.
    fn remove(&mut self, id: &str);
    /// Forget every record.
    fn clear(&mut self);
    /// The summaries.
    fn map(&self) -> &Self::Map;
}

#[derive(Debug, Default)]
struct View<K> {
    records: K,
    names: Names,
}

#[derive(Debug, Default)]
struct Refresh {
    events: Option<Receiver<StoreEvent>>,
    /// A full listing is due (start, missed events).
    relist: bool,
    /// Records changed since their last read.
    dirty: BTreeSet<String>,
}

/// The lengths of a cache's two queues at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheQueues {
    /// Store events the cache's receiver holds and has not taken in yet
    /// (upstream's tree cache `event_queue`: watch events not yet
    /// handled). The receiver gets every store event, not only those of
    /// the cache's kind.
    pub events: usize,
    /// Records named by events already taken in whose re-read from the
    /// store, and update of the cache, is pending (upstream's
    /// `playback_queue`: events whose data was fetched and waits to be
    /// applied). A record with several such events counts once; a full
    /// listing due (at start, after missed events) is not counted.
    pub playback: usize,
}

/// The queue lengths a running sync last saw, for readers that cannot
/// look while it holds the queues.
#[derive(Debug, Default)]
struct LastQueues {
    events: AtomicUsize,
    playback: AtomicUsize,
}

impl LastQueues {
    fn store(&self, queues: CacheQueues) {
        self.events.store(queues.events, Ordering::Relaxed);
        self.playback.store(queues.playback, Ordering::Relaxed);
    }

    fn load(&self) -> CacheQueues {
        CacheQueues {
            events: self.events.load(Ordering::Relaxed),
            playback: self.playback.load(Ordering::Relaxed),
        }
    }
}

impl Refresh {
    /// The queues' lengths now.
    fn queues(&self) -> CacheQueues {
        CacheQueues {
            events: self.events.as_ref().map_or(0, Receiver::len),
            playback: self.dirty.len(),
        }
    }

    /// Move the waiting events into `dirty`; missed ones ask for a listing.
    fn drain<K: Kind>(&mut self) {
        let Some(events) = self.events.as_mut() else {
            self.relist = true;
            return;
        };
        loop {
            match events.try_recv() {
                Ok(StoreEvent::Resync) | Err(TryRecvError::Lagged(_)) => self.relist = true,
                Ok(event) => {
                    if let Some(id) = K::event_id(&event) {
                        if !self.relist {
                            self.dirty.insert(id.to_string());
                        }
                    }
                }
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

/// A cache of the records of kind `K`; see the module doc.
#[derive(Debug, Default)]
pub(crate) struct Cache<K> {
    view: Mutex<View<K>>,
    refresh: tokio::sync::Mutex<Refresh>,
    last_queues: LastQueues,
}

impl<K: Kind> Cache<K> {
    /// Collect the events waiting, without reading the store (keeps the
    /// receiver from lagging between syncs). Skipped while a sync runs.
    pub(crate) fn drain(&self) {
        if let Ok(mut refresh) = self.refresh.try_lock() {
            refresh.drain::<K>();
        }
    }

    /// The lengths of the cache's queues (see [`CacheQueues`]): read now,
    /// or while a sync runs, as that sync last saw them (it looks after
    /// each record it reads).
    pub(crate) fn queues(&self) -> CacheQueues {
        match self.refresh.try_lock() {
            Ok(refresh) => refresh.queues(),
            Err(_) => self.last_queues.load(),
        }
    }

    /// Whether record `id` may have changed since the last sync (an event
    /// about it waits, or a listing is due); `true` when that cannot be
    /// told now (a sync is running).
    pub(crate) fn maybe_changed(&self, id: &str) -> bool {
        let Ok(mut refresh) = self.refresh.try_lock() else {
            return true;
        };
        refresh.drain::<K>();
        refresh.relist || refresh.dirty.contains(id)
    }

    /// Bring the cache up to date with every change announced so far.
    pub(crate) async fn sync(&self, store: &dyn NodeStore) -> Result<()> {
        self.sync_with(store, Vec::new()).await
    }

    /// [`Cache::sync`], reading records `also` again too (changes whose
    /// events may not have arrived yet).
    pub(crate) async fn sync_with(&self, store: &dyn NodeStore, also: Vec<String>) -> Result<()> {
        let mut refresh = self.refresh.lock().await;
        if refresh.events.is_none() {
            refresh.events = Some(store.watch());
            refresh.relist = true;
        }
        refresh.dirty.extend(also);
        // Events missed during a sync ask for a listing; a second one in
        // the same sync is left for the next.
        for _ in 0..2 {
            refresh.drain::<K>();
            if refresh.relist {
                // Whatever the listing misses is announced after subscribing.
                refresh.dirty.clear();
                let listed = K::list(store).await?;
                info!(
                    count = listed.len(),
                    "{} cache: listing every record",
                    K::WHAT
                );
                let mut view = lock(&self.view);
                let view = &mut *view;
                view.records.clear();
                for record in listed {
                    view.records.put(&mut view.names, record);
                }
                view.names.prune();
                refresh.relist = false;
                refresh.drain::<K>();
            }
            while let Some(id) = refresh.dirty.pop_first() {
                if let Err(e) = self.take_in(&id, K::get(store, &id).await) {
                    refresh.dirty.insert(id);
                    return Err(e);
                }
                // Keep the receiver from lagging behind a long sync.
                refresh.drain::<K>();
                self.last_queues.store(refresh.queues());
                if refresh.relist {
                    break;
                }
            }
            if !refresh.relist {
                break;
            }
        }
        self.last_queues.store(refresh.queues());
        Ok(())
    }

    /// Read records `ids` now, and only them: records this process wrote
    /// whose events may not have arrived yet. Other changes announced so
    /// far wait for the next [`Cache::sync`], which reads them (and these
    /// again, if they changed since).
    pub(crate) async fn read(&self, store: &dyn NodeStore, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        // Held so that no sync puts an older copy over a newer one.
        let _refresh = self.refresh.lock().await;
        for id in ids {
            self.take_in(id, K::get(store, id).await)?;
        }
        Ok(())
    }

    /// Take the read of record `id` into the view: store it, or forget a
    /// record that is gone or is not one. Other errors are returned.
    fn take_in(&self, id: &str, read: Result<Option<K::Record>>) -> Result<()> {
        match read {
            Ok(Some(record)) => {
                let mut view = lock(&self.view);
                let view = &mut *view;
                view.records.put(&mut view.names, record);
            }
            Ok(None) => lock(&self.view).records.remove(id),
            // Garbage or an empty znode (a lock taken on a node just
            // deleted recreates it empty, as kazoo's does): not a record;
            // skip it like listings do, never fail the pass.
            Err(Error::Corrupt { path, message }) => {
                debug!(%path, %message, "skipping a {} record that cannot be decoded", K::WHAT);
                lock(&self.view).records.remove(id);
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Read the summaries (no await inside `f`).
    pub(crate) fn with<T>(&self, f: impl FnOnce(&K::Map) -> T) -> T {
        f(lock(&self.view).records.map())
    }

    /// Look at the records themselves (tests).
    #[cfg(test)]
    pub(crate) fn records<T>(&self, f: impl FnOnce(&K) -> T) -> T {
        f(&lock(&self.view).records)
    }
}
