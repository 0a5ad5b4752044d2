//! One synchronisation pass of a static provider's node records with its
//! configuration: upstream's `StaticNodeProvider._start` (a full pass) and
//! `cleanupLeakedResources` (a periodic pass), plus the re-registration of
//! used nodes (`nodeDeletedNotification`).
//!
//! A pass:
//! 1. deletes the provider's `used` records (unless somebody holds their
//!    lock), so their slots are registered again below;
//! 2. sorts the provider's records into the slots of the configured hosts
//!    (`max-parallel-jobs` each), as upstream's `getRegisteredNodes`;
//! 3. deletes the free records of hosts no longer configured and of slots
//!    beyond `max-parallel-jobs`; records in use stay until they are
//!    handed back (then step 1 deletes them and nothing re-registers them);
//! 4. for every configured host with an empty slot (and, in a full pass,
//!    every host with free records), concurrently: checks the host (key
//!    scan, see [`check_host`]) and registers a ready record per empty slot
//!    (a full pass also updates the free records that differ from the
//!    config). A host that fails is reported in [`SyncReport::failures`]
//!    and retried by the next pass; it never holds up the other hosts. In a
//!    full pass its free records are deleted, as upstream does at start.

use std::collections::BTreeMap;

use futures::future::join_all;
use nodepool_core::model::{Node, NodeState};
use nodepool_core::store::{LockOptions, LockTarget, NodeStore};
use nodepool_core::Result;
use tokio::sync::Semaphore;
use tracing::{debug, info, info_span, warn, Instrument};

use super::config::{StaticConfig, StaticNode, StaticPool};
use super::keyscan::HostScanner;
use super::record::{
    check_host, is_free, resolve_host, HostError, HostFailure, HostId, HostRecord, STATIC_LAUNCHER,
};

/// Host checks (keyscans, TCP checks) one pass runs at once: upstream's
/// thread pool default (`min(32, cpus + 4)`), a bound on this driver's own
/// host work, not on cloud calls (`max-concurrency` and `rate` are core's
/// wrappers; a static provider launches nothing).
const HOST_CHECKS_AT_ONCE: usize = 32;

/// Which kind of pass to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// At start and after a config change: also re-check hosts whose slots
    /// are all taken and update their free records (upstream's `_start`).
    Full,
    /// The periodic pass and after node events: only hosts with an empty
    /// slot are contacted (upstream's `cleanupLeakedResources`).
    Periodic,
}

/// What a pass did. Node ids are the store's.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// New ready records.
    pub registered: Vec<String>,
    /// Free records rewritten from the config (full passes only).
    pub updated: Vec<String>,
    /// `used` records deleted; their slots are registered again when the
    /// host checks out (in this pass or a later one).
    pub recycled: Vec<String>,
    /// Free records deleted: host removed from the config, slot beyond
    /// `max-parallel-jobs`, or host failing its check in a full pass.
    pub deregistered: Vec<String>,
    /// Records that should go but are in use or locked now; they are
    /// deleted once handed back.
    pub deferred: Vec<String>,
    /// Hosts that could not be checked or written, with why. The next pass
    /// tries them again.
    pub failures: Vec<HostFailure>,
}

impl SyncReport {
    /// Whether every host checked out.
    pub fn is_clean(&self) -> bool {
        self.failures.is_empty()
    }

    /// The failure of `host`, if any.
    pub fn failure_of(&self, host: &HostId) -> Option<&HostError> {
        self.failures
            .iter()
            .find(|f| f.host == *host)
            .map(|f| &f.error)
    }

    fn merge(&mut self, other: SyncReport) {
        self.registered.extend(other.registered);
        self.updated.extend(other.updated);
        self.recycled.extend(other.recycled);
        self.deregistered.extend(other.deregistered);
        self.deferred.extend(other.deferred);
        self.failures.extend(other.failures);
    }
}

/// A synchronisation pass over one static provider's records. Borrow
/// everything; [`run`](Self::run) does the pass.
#[derive(Debug, Clone, Copy)]
pub struct StaticSync<'a> {
    config: &'a StaticConfig,
    scanner: &'a dyn HostScanner,
    store: &'a dyn NodeStore,
}

/// The records of one configured host, by slot.
struct HostSlots<'a> {
    pool: &'a StaticPool,
    host: &'a StaticNode,
    /// `max-parallel-jobs` entries, then excess records.
    slots: Vec<Option<Node>>,
}

fn lock_options() -> LockOptions {
    LockOptions {
        identifier: Some(STATIC_LAUNCHER.to_string()),
        ..LockOptions::try_once()
    }
}

impl<'a> StaticSync<'a> {
    /// A pass over `config`'s hosts, probing with `scanner`, writing to
    /// `store`.
    pub fn new(
        config: &'a StaticConfig,
        scanner: &'a dyn HostScanner,
        store: &'a dyn NodeStore,
    ) -> Self {
        Self {
            config,
            scanner,
            store,
        }
    }

    /// Run one pass. Fails only when the records cannot be listed; every
    /// other problem is reported per host in the [`SyncReport`].
    pub async fn run(&self, mode: SyncMode) -> Result<SyncReport> {
        let span = info_span!("static_sync", provider = %self.config.name, ?mode);
        self.pass(mode).instrument(span).await
    }

    async fn pass(&self, mode: SyncMode) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        let mut mine: Vec<Node> = self
            .store
            .list_nodes()
            .await?
            .into_iter()
            .filter(|n| n.provider.as_deref() == Some(self.config.name.as_str()))
            .collect();
        let mut kept = Vec::with_capacity(mine.len());
        for node in mine.drain(..) {
            if node.state == Some(NodeState::Used) && self.recycle(&node).await {
                report.recycled.push(node.id);
            } else {
                kept.push(node);
            }
        }
        let (mut hosts, leftovers) = self.slots(kept);
        for (_, node) in leftovers {
            self.deregister(&node, &mut report).await;
        }
        for slots in hosts.values_mut() {
            let max = usize::try_from(slots.host.max_parallel_jobs).unwrap_or(0);
            let excess: Vec<Node> = slots
                .slots
                .drain(max.min(slots.slots.len())..)
                .flatten()
                .collect();
            for node in excess {
                self.deregister(&node, &mut report).await;
            }
        }
        let permits = Semaphore::new(HOST_CHECKS_AT_ONCE);
        let passes = hosts
            .into_values()
            .map(|slots| self.sync_host(slots, mode, &permits));
        for host_report in join_all(passes).await {
            report.merge(host_report);
        }
        for failure in &report.failures {
            warn!(error = %failure, "static host not registered; retried next pass");
        }
        Ok(report)
    }

    /// Delete a `used` record so its slot is registered afresh. False when
    /// somebody else holds it or it changed meanwhile.
    async fn recycle(&self, node: &Node) -> bool {
        let target = LockTarget::Node(node.id.clone());
        let Ok(handle) = self.store.lock(&target, &lock_options()).await else {
            debug!(node_id = %node.id, "used node is locked; left for now");
            return false;
        };
        let still_used = matches!(
            self.store.get_node(&node.id).await,
            Ok(Some(n)) if n.state == Some(NodeState::Used)
        );
        let deleted = still_used && self.store.delete_node(&node.id).await.is_ok();
        // Deleting the record dropped the lock; releasing may report it lost.
        let _ = self.store.unlock(&handle).await;
        if deleted {
            info!(node_id = %node.id, host = %HostId::of_node(node), "recycled used static node");
        }
        deleted
    }

    /// Sort records into the slots of configured hosts (upstream's
    /// `getRegisteredNodes`); records of unknown hosts come back apart.
    fn slots(&self, nodes: Vec<Node>) -> (BTreeMap<HostId, HostSlots<'a>>, Vec<(HostId, Node)>) {
        let mut hosts: BTreeMap<HostId, HostSlots<'a>> = BTreeMap::new();
        for (pool, host) in self.config.nodes() {
            let len = usize::try_from(host.max_parallel_jobs).unwrap_or(0);
            hosts.entry(HostId::of_config(host)).or_insert(HostSlots {
                pool,
                host,
                slots: vec![None; len],
            });
        }
        let mut unknown = Vec::new();
        let mut unslotted = Vec::new();
        for node in nodes {
            if matches!(node.state, Some(NodeState::Building | NodeState::Deleting)) {
                continue;
            }
            let id = HostId::of_node(&node);
            let Some(host) = hosts.get_mut(&id) else {
                unknown.push((id, node));
                continue;
            };
            let slot = node.slot.and_then(|s| usize::try_from(s).ok());
            match slot {
                Some(s) if s < host.slots.len() && host.slots[s].is_none() => {
                    host.slots[s] = Some(node);
                }
                _ => unslotted.push((id, node)),
            }
        }
        for (id, node) in unslotted {
            let Some(host) = hosts.get_mut(&id) else {
                continue;
            };
            match host.slots.iter().position(Option::is_none) {
                Some(free) => host.slots[free] = Some(node),
                None => {
                    debug!(node_id = %node.id, host = %id, "excess static node");
                    host.slots.push(Some(node));
                }
            }
        }
        (hosts, unknown)
    }

    /// Delete a free record (upstream's `deregisterNode`); defer one in use.
    async fn deregister(&self, node: &Node, report: &mut SyncReport) {
        if !is_free(node) {
            report.deferred.push(node.id.clone());
            return;
        }
        let target = LockTarget::Node(node.id.clone());
        let Ok(handle) = self.store.lock(&target, &lock_options()).await else {
            report.deferred.push(node.id.clone());
            return;
        };
        let still_free = matches!(self.store.get_node(&node.id).await, Ok(Some(n)) if is_free(&n));
        if !still_free {
            let _ = self.store.unlock(&handle).await;
            report.deferred.push(node.id.clone());
            return;
        }
        match self.store.delete_node(&node.id).await {
            Ok(()) => {
                info!(node_id = %node.id, host = %HostId::of_node(node), "deregistered static node");
                report.deregistered.push(node.id.clone());
            }
            Err(e) => {
                warn!(node_id = %node.id, error = %e, "could not deregister static node");
                report.deferred.push(node.id.clone());
            }
        }
        let _ = self.store.unlock(&handle).await;
    }

    /// Check one host and fill its empty slots (and, in a full pass,
    /// update its free records).
    async fn sync_host(
        &self,
        slots: HostSlots<'a>,
        mode: SyncMode,
        permits: &Semaphore,
    ) -> SyncReport {
        let id = HostId::of_config(slots.host);
        let span = info_span!("static_host", host = %id, pool = %slots.pool.name);
        async {
            let mut report = SyncReport::default();
            let empty: Vec<usize> = (0..slots.slots.len())
                .filter(|&s| slots.slots[s].is_none())
                .collect();
            let free: Vec<&Node> = slots
                .slots
                .iter()
                .flatten()
                .filter(|n| is_free(n))
                .collect();
            let recheck = mode == SyncMode::Full && !free.is_empty();
            if empty.is_empty() && !recheck {
                return report;
            }
            // The semaphore is never closed; without a permit, go on anyway.
            let _permit = permits.acquire().await.ok();
            let record = match self.host_record(&slots).await {
                Ok(record) => record,
                Err(error) => {
                    if mode == SyncMode::Full {
                        for node in free {
                            self.deregister(node, &mut report).await;
                        }
                    }
                    report.failures.push(HostFailure {
                        host: id.clone(),
                        error,
                    });
                    return report;
                }
            };
            for slot in empty {
                // Slots are indices below max-parallel-jobs, an i64.
                let slot = i64::try_from(slot).unwrap_or(i64::MAX);
                match self.store.create_node(&record.new_node(slot)).await {
                    Ok(node_id) => {
                        info!(%node_id, slot, "registered static node");
                        report.registered.push(node_id);
                    }
                    Err(source) => {
                        report.failures.push(HostFailure {
                            host: id.clone(),
                            error: HostError::Store(source),
                        });
                        return report;
                    }
                }
            }
            if mode == SyncMode::Full {
                for node in free {
                    self.update(node, &record, &mut report).await;
                }
            }
            report
        }
        .instrument(span)
        .await
    }

    async fn host_record(&self, slots: &HostSlots<'a>) -> Result<HostRecord<'a>, HostError> {
        let host_keys = check_host(self.scanner, slots.host).await?;
        let address = resolve_host(self.scanner, slots.host).await?;
        Ok(HostRecord {
            provider: &self.config.name,
            pool: slots.pool,
            host: slots.host,
            host_keys,
            address,
        })
    }

    /// Rewrite a free record from the config when it differs (upstream's
    /// `updateNodeFromConfig`); skip it when it is locked.
    async fn update(&self, node: &Node, record: &HostRecord<'_>, report: &mut SyncReport) {
        let mut wanted = node.clone();
        if !record.apply(&mut wanted) {
            return;
        }
        let target = LockTarget::Node(node.id.clone());
        let Ok(handle) = self.store.lock(&target, &lock_options()).await else {
            debug!(node_id = %node.id, "static node locked; not updated");
            return;
        };
        if let Ok(Some(mut current)) = self.store.get_node(&node.id).await {
            if is_free(&current) && record.apply(&mut current) {
                match self.store.update_node(&current).await {
                    Ok(()) => report.updated.push(node.id.clone()),
                    Err(source) => report.failures.push(HostFailure {
                        host: HostId::of_config(record.host),
                        error: HostError::Store(source),
                    }),
                }
            }
        }
        let _ = self.store.unlock(&handle).await;
    }
}

#[cfg(test)]
pub(crate) mod tests;
