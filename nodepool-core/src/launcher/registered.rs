//! Providers of pre-registered nodes (the static driver): the task that
//! keeps their node records in step with the config by calling
//! [`RegisteredHosts::sync_registered`](crate::provider::RegisteredHosts::sync_registered).
//!
//! A pass is requested when the launcher starts and when a config change
//! rebuilds the provider (full passes), when one of its nodes is handed back
//! or deleted, and every `cleanup_interval`. Requests are merged per
//! provider and one provider never runs two passes at once; after each pass
//! the provider's pools are woken, since new ready records do not wake them
//! on their own.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info_span, warn, Instrument};

use super::shared::{lock, Shared};

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
pub(crate) fn preregistered(shared: &Shared) -> Vec<String> {
    shared
        .snapshot()
        .providers
        .iter()
        .filter(|(_, p)| p.registered().is_some())
        .map(|(name, _)| name.clone())
        .collect()
}

/// Whether `provider` is configured now and has pre-registered nodes
/// (retired providers are never synchronised: that would register the
/// hosts of a config that is gone).
pub(crate) fn is_configured_preregistered(shared: &Shared, provider: &str) -> bool {
    shared
        .snapshot()
        .providers
        .get(provider)
        .is_some_and(|p| p.registered().is_some())
}

/// The registration task. On cancellation it lets running passes finish.
pub(crate) async fn run(shared: Arc<Shared>, cancel: CancellationToken) {
    for name in preregistered(&shared) {
        shared.registrar.request(&name, true);
    }
    let interval = shared.settings.cleanup_interval;
    let mut next_periodic = tokio::time::Instant::now() + interval;
    let mut busy: BTreeMap<tokio::task::Id, String> = BTreeMap::new();
    let mut running: JoinSet<()> = JoinSet::new();
    while !cancel.is_cancelled() {
        if tokio::time::Instant::now() >= next_periodic {
            for name in preregistered(&shared) {
                shared.registrar.request(&name, false);
            }
            next_periodic = tokio::time::Instant::now() + interval;
        }
        let names: BTreeSet<String> = busy.values().cloned().collect();
        for (name, full) in shared.registrar.take(&names) {
            let Some(provider) = shared.snapshot().providers.get(&name).cloned() else {
                continue;
            };
            if provider.registered().is_none() {
                continue;
            }
            let store = shared.store.clone();
            let span = info_span!("register", provider = %name, full);
            let task = running.spawn(
                async move {
                    let Some(hosts) = provider.registered() else {
                        return;
                    };
                    match hosts.sync_registered(&*store, full).await {
                        Ok(()) => debug!("pre-registered nodes synchronised"),
                        Err(e) => warn!(error = %e, "could not synchronise pre-registered nodes"),
                    }
                }
                .instrument(span),
            );
            busy.insert(task.id(), name);
        }
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = shared.registrar.notify.notified() => {}
            _ = tokio::time::sleep_until(next_periodic) => {}
            Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                finished(&shared, &mut busy, done);
            }
        }
    }
    while let Some(done) = running.join_next_with_id().await {
        finished(&shared, &mut busy, done);
    }
}

/// A pass ended: free its provider for the next one and wake its pools.
fn finished(
    shared: &Shared,
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
        shared.wake_pools(Some(&name));
    }
}
