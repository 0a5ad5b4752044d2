//! Providers of pre-registered nodes (the static driver): every call of
//! the launcher to their registration methods is here.
//!
//! - The registration task keeps their node records in step with the
//!   config by calling [`Provider::sync_registered`]. A pass is requested ([`Registrar::request`]) when the launcher starts
//!   and when a config change rebuilds the provider (full passes), when one
//!   of its nodes is handed back or deleted, and every `cleanup_interval`.
//!   Requests are merged per provider and one provider never runs two
//!   passes at once; after each pass the provider's pools are woken, since
//!   new ready records do not wake them on their own.
//! - [`alive`]: a ready record is checked before a handler hands it out
//!   ([`Provider::node_alive`]).
//! - [`label_capacity`]: the per-label capacity a pool pass gives the
//!   scheduler ([`Provider::label_capacity`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use super::context::Context;
use super::ledger::Ledgers;
use super::util::lock;
use crate::config::PoolConfig;
use crate::model::Node;
use crate::provider::Provider;
use crate::tasks::{self, TaskExt};

/// Passes asked for, by provider name (`true`: full).
#[derive(Debug, Default)]
pub(crate) struct Registrar {
    pending: Mutex<BTreeMap<String, bool>>,
    notify: Notify,
}

impl Registrar {
    /// Ask for a pass of `provider` (a full one when `full`).
    pub(crate) fn request(&self, provider: &str, full: bool) {
        lock(&self.pending)
            .entry(provider.to_string())
            .and_modify(|f| *f |= full)
            .or_insert(full);
        self.notify.notify_one();
    }

    /// The requests of providers not busy now; the busy ones stay pending.
    fn take(&self, busy: &BTreeSet<String>) -> Vec<(String, bool)> {
        let mut pending = lock(&self.pending);
        let ready: Vec<String> = pending
            .keys()
            .filter(|p| !busy.contains(*p))
            .cloned()
            .collect();
        ready
            .into_iter()
            .filter_map(|p| pending.remove(&p).map(|full| (p, full)))
            .collect()
    }
}

/// The names of configured providers with pre-registered nodes.
fn preregistered(ctx: &Context) -> Vec<String> {
    ctx.snapshot()
        .providers
        .iter()
        .filter(|(_, p)| p.registered().is_some())
        .map(|(name, _)| name.clone())
        .collect()
}

/// Whether `provider` is configured now and has pre-registered nodes
/// (retired providers are never synchronised: that would register the
/// hosts of a config that is gone).
pub(crate) fn is_configured_preregistered(ctx: &Context, provider: &str) -> bool {
    ctx.snapshot()
        .providers
        .get(provider)
        .is_some_and(|p| p.registered().is_some())
}

/// The registration task. On cancellation it lets running passes finish.
pub(crate) async fn run(
    ctx: Arc<Context>,
    registrar: Arc<Registrar>,
    ledgers: Arc<Ledgers>,
    cancel: CancellationToken,
) {
    let registry = ctx.settings.tasks.clone();
    passes(ctx, registrar, ledgers, cancel)
        .in_task(&registry, "registrar")
        .await
}

async fn passes(
    ctx: Arc<Context>,
    registrar: Arc<Registrar>,
    ledgers: Arc<Ledgers>,
    cancel: CancellationToken,
) {
    for name in preregistered(&ctx) {
        registrar.request(&name, true);
    }
    let interval = ctx.settings.cleanup_interval;
    let mut next_periodic = tokio::time::Instant::now() + interval;
    let mut busy: BTreeMap<tokio::task::Id, String> = BTreeMap::new();
    let mut running: JoinSet<()> = JoinSet::new();
    while !cancel.is_cancelled() {
        if tokio::time::Instant::now() >= next_periodic {
            for name in preregistered(&ctx) {
                registrar.request(&name, false);
            }
            next_periodic = tokio::time::Instant::now() + interval;
        }
        let names: BTreeSet<String> = busy.values().cloned().collect();
        for (name, full) in registrar.take(&names) {
            let Some(provider) = ctx.snapshot().providers.get(&name).cloned() else {
                continue;
            };
            if provider.registered().is_none() {
                continue;
            }
            let store = ctx.store.clone();
            let span = info_span!("register", provider = %name, full);
            let label = format!("registration of {name}'s nodes");
            let task = running.spawn(
                async move {
                    let Some(hosts) = provider.registered() else {
                        return;
                    };
                    tasks::waiting_on("provider sync_registered (host checks)");
                    match hosts.sync_registered(&*store, full).await {
                        Ok(()) => debug!("pre-registered nodes synchronised"),
                        Err(e) => warn!(error = %e, "could not synchronise pre-registered nodes"),
                    }
                }
                .instrument(span)
                .in_task(&ctx.settings.tasks, label),
            );
            busy.insert(task.id(), name);
        }
        tasks::waiting_on("waiting for a registration request or the interval");
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = registrar.notify.notified() => {}
            _ = tokio::time::sleep_until(next_periodic) => {}
            Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                finished(&ledgers, &mut busy, done);
            }
        }
    }
    while let Some(done) = running.join_next_with_id().await {
        finished(&ledgers, &mut busy, done);
    }
}

/// A pass ended: free its provider for the next one and wake its pools.
fn finished(
    ledgers: &Ledgers,
    busy: &mut BTreeMap<tokio::task::Id, String>,
    done: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
) {
    let id = match done {
        Ok((id, ())) => id,
        Err(e) => {
            warn!(error = %e, "registration pass ended abnormally");
            e.id()
        }
    };
    if let Some(name) = busy.remove(&id) {
        ledgers.wake(Some(&name));
    }
}

/// Whether the provider still vouches for a ready node before it is
/// handed out (pre-registered hosts are checked; a dead one's record is
/// dropped by the provider and the request goes back to wait for
/// another node). Other providers' nodes are not checked.
pub(crate) async fn alive(ctx: &Context, provider: &dyn Provider, node_id: &str) -> bool {
    let Some(hosts) = provider.registered() else {
        return true;
    };
    let node = match ctx.store.get_node(node_id).await {
        Ok(Some(n)) => n,
        _ => return false,
    };
    match hosts.node_alive(&*ctx.store, &node).await {
        Ok(true) => true,
        Ok(false) => {
            info!(
                node_id,
                "ready node failed its liveness check; not handed out"
            );
            false
        }
        Err(e) => {
            warn!(node_id, error = %e, "could not check a ready node; not handed out");
            false
        }
    }
}

/// The provider's per-label capacity for pool `pool_cfg` of provider
/// `provider_name`: counted on the pool's records that no handler has been
/// promised (`reserved`), limited to the pool's labels (a label of another
/// pool is this pool's to decline, not to defer).
///
/// Only providers with a per-label limit (static hosts: few records) get
/// the full records, read for the purpose.
pub(crate) async fn label_capacity(
    ctx: &Context,
    provider: &dyn Provider,
    provider_name: &str,
    pool_cfg: &PoolConfig,
    reserved: &BTreeSet<&str>,
) -> BTreeMap<String, u64> {
    let Some(hosts) = provider.registered() else {
        return BTreeMap::new();
    };
    let pool = pool_cfg.name.as_str();
    let nodes: Vec<Node> = match ctx.store.list_nodes().await {
        Ok(nodes) => nodes
            .into_iter()
            .filter(|n| {
                n.provider.as_deref() == Some(provider_name)
                    && n.pool.as_deref() == Some(pool)
                    && !reserved.contains(n.id.as_str())
            })
            .collect(),
        Err(e) => {
            warn!(error = %e, "cannot list nodes for the label capacity");
            Vec::new()
        }
    };
    let mut capacity = hosts.label_capacity(&nodes);
    capacity.retain(|label, _| pool_cfg.labels.iter().any(|l| &l.name == label));
    capacity
}
