//! The supervisor: builds the stages and hands each the handles it needs,
//! starts the background tasks, starts and reconciles one pool worker per
//! configured pool, turns store watch events into wake-ups of the stages,
//! applies config changes, and drains on shutdown.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::census::{self, Census};
use super::cleanup;
use super::context::Context;
use super::deleter::Deleter;
use super::ledger::{Ledger, Ledgers, POOL_KIND};
use super::min_ready::MinReady;
use super::pool::PoolWorker;
use super::registered::{self, Registrar};
use super::settings::LauncherSettings;
use super::stats::{CounterSnapshot, LauncherStatus};
use crate::config::Config;
use crate::model::{Component, ComponentState};
use crate::provider::Provider;
use crate::scheduler::Scheduler;
use crate::store::{Change, LockTarget, NodeStore, StoreEvent};
use crate::Result;

/// The component kind of a launcher process.
pub(crate) const LAUNCHER_KIND: &str = crate::model::LAUNCHER;

/// The stages of one launcher; see the module doc.
#[derive(Debug)]
pub(crate) struct Supervisor {
    ctx: Arc<Context>,
    ledgers: Arc<Ledgers>,
    deleter: Arc<Deleter>,
    min_ready: Arc<MinReady>,
    registrar: Arc<Registrar>,
    /// The configuration changed: reconcile the pool workers.
    config_changed: Notify,
}

struct Worker {
    cancel: CancellationToken,
    handle: JoinHandle<()>,
}

impl Supervisor {
    pub(crate) fn new(
        settings: LauncherSettings,
        store: Arc<dyn NodeStore>,
        scheduler: Arc<dyn Scheduler>,
        config: Config,
        providers: BTreeMap<String, Arc<dyn Provider>>,
    ) -> Self {
        let ctx = Arc::new(Context::new(settings, store, scheduler, config, providers));
        let registrar = Arc::new(Registrar::default());
        Self {
            ledgers: Arc::new(Ledgers::default()),
            deleter: Arc::new(Deleter::new(ctx.clone(), registrar.clone())),
            min_ready: Arc::new(MinReady::new(ctx.clone())),
            registrar,
            ctx,
            config_changed: Notify::new(),
        }
    }

    /// Switch to a new configuration; see
    /// [`Launcher::update_config`](super::Launcher::update_config).
    pub(crate) fn update_config(
        &self,
        config: Config,
        providers: BTreeMap<String, Arc<dyn Provider>>,
    ) {
        for name in self.ctx.set_config(config, providers) {
            self.registrar.request(&name, true);
        }
        self.config_changed.notify_one();
        self.ledgers.wake(None);
    }

    pub(crate) fn status(&self) -> LauncherStatus {
        LauncherStatus {
            hostname: self.ctx.settings.hostname.clone(),
            pools: self.ledgers.status(),
            deleting: self.deleter.in_progress(),
            counters: self.ctx.counters.snapshot(),
        }
    }

    pub(crate) fn counters(&self) -> CounterSnapshot {
        self.ctx.counters.snapshot()
    }

    pub(crate) fn keyed_counts(&self) -> super::KeyedCounts {
        self.ctx.counters.keyed()
    }

    pub(crate) fn cache_queues(&self) -> super::LauncherCacheQueues {
        super::LauncherCacheQueues {
            nodes: self.ctx.nodes.queues(),
            requests: self.ctx.requests.queues(),
        }
    }

    pub(crate) async fn census(&self) -> Result<Census> {
        census::take(&self.ctx).await
    }

    /// The launcher's main loop; see [`Launcher::run`](super::Launcher::run).
    pub(crate) async fn run(&self, cancel: CancellationToken) -> Result<()> {
        let ctx = &self.ctx;
        let hostname = ctx.settings.hostname.clone();
        let mut component = Component::new(LAUNCHER_KIND, hostname.clone());
        component.state = ComponentState::Running;
        ctx.store
            .register_component(LAUNCHER_KIND, &hostname, &component)
            .await?;
        info!(hostname = %hostname, "launcher starting");

        let background = CancellationToken::new();
        let tasks = vec![
            tokio::spawn(self.dispatcher().run(background.clone())),
            tokio::spawn(self.deleter.clone().run(background.clone())),
            tokio::spawn(cleanup::run(
                ctx.clone(),
                self.deleter.clone(),
                background.clone(),
            )),
            tokio::spawn(self.min_ready.clone().run(background.clone())),
            tokio::spawn(registered::run(
                ctx.clone(),
                self.registrar.clone(),
                self.ledgers.clone(),
                background.clone(),
            )),
        ];

        let mut workers: BTreeMap<(String, String), Worker> = BTreeMap::new();
        loop {
            self.reconcile_workers(&cancel, &mut workers);
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.config_changed.notified() => {}
            }
        }

        info!("launcher draining");
        for (key, worker) in std::mem::take(&mut workers) {
            worker.cancel.cancel();
            if let Err(e) = worker.handle.await {
                warn!(provider = %key.0, pool = %key.1, error = %e, "pool worker ended abnormally");
            }
        }
        background.cancel();
        for task in tasks {
            let _ = task.await;
        }
        self.min_ready.withdraw().await;
        if let Err(e) = ctx
            .store
            .unregister_component(LAUNCHER_KIND, &hostname)
            .await
        {
            warn!(error = %e, "could not unregister the launcher component");
        }
        info!("launcher stopped");
        Ok(())
    }

    /// Start workers for new pools, stop those whose pool is gone.
    fn reconcile_workers(
        &self,
        cancel: &CancellationToken,
        workers: &mut BTreeMap<(String, String), Worker>,
    ) {
        let snapshot = self.ctx.snapshot();
        let mut wanted = Vec::new();
        for provider in &snapshot.config.providers {
            if !snapshot.providers.contains_key(&provider.name) {
                warn!(provider = %provider.name, "no provider object for configured provider");
                continue;
            }
            for pool in &provider.pools {
                wanted.push((provider.name.clone(), pool.name.clone()));
            }
        }
        let gone: Vec<_> = workers
            .keys()
            .filter(|k| !wanted.contains(k) || workers[*k].handle.is_finished())
            .cloned()
            .collect();
        for key in gone {
            if let Some(worker) = workers.remove(&key) {
                info!(provider = %key.0, pool = %key.1, "stopping pool worker");
                worker.cancel.cancel();
                // It drains on its own; nothing waits for it here.
                drop(worker.handle);
            }
        }
        for key in wanted {
            if workers.contains_key(&key) {
                continue;
            }
            info!(provider = %key.0, pool = %key.1, "starting pool worker");
            let token = cancel.child_token();
            let worker = PoolWorker {
                ctx: self.ctx.clone(),
                ledgers: self.ledgers.clone(),
                deleter: self.deleter.clone(),
                ledger: Arc::new(Ledger::new(&self.ctx.settings.hostname, &key.0, &key.1)),
            };
            let handle = tokio::spawn(worker.run(token.clone()));
            workers.insert(
                key,
                Worker {
                    cancel: token,
                    handle,
                },
            );
        }
    }

    fn dispatcher(&self) -> Dispatcher {
        Dispatcher {
            ctx: self.ctx.clone(),
            ledgers: self.ledgers.clone(),
            deleter: self.deleter.clone(),
            min_ready: self.min_ready.clone(),
        }
    }
}

/// The stages store events wake.
struct Dispatcher {
    ctx: Arc<Context>,
    ledgers: Arc<Ledgers>,
    deleter: Arc<Deleter>,
    min_ready: Arc<MinReady>,
}

impl Dispatcher {
    /// Turn store events into wake-ups: the caches learn which records
    /// changed, then the stages that read them are woken.
    async fn run(self, cancel: CancellationToken) {
        let ctx = &self.ctx;
        let mut events = ctx.store.watch();
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => return,
                e = events.recv() => e,
            };
            match event {
                Ok(StoreEvent::Node { .. }) => ctx.nodes.drain(),
                Ok(StoreEvent::Request { .. }) => ctx.requests.drain(),
                Ok(StoreEvent::Resync) | Err(RecvError::Lagged(_)) => {
                    ctx.nodes.drain();
                    ctx.requests.drain();
                }
                _ => {}
            }
            match event {
                Ok(StoreEvent::Request { id, change }) => {
                    self.ledgers.wake(None);
                    self.min_ready.request_changed(&id, change);
                }
                Ok(StoreEvent::Node { id, change }) => match change {
                    Change::Put => {
                        self.deleter.offer(&id);
                        self.min_ready.wake();
                    }
                    Change::Deleted => {
                        self.ledgers.quota_freed();
                        self.min_ready.wake();
                    }
                },
                Ok(StoreEvent::Lock {
                    target: LockTarget::Node(id),
                    change: Change::Deleted,
                }) => self.deleter.offer(&id),
                Ok(StoreEvent::Lock {
                    target: LockTarget::Request(id),
                    change: Change::Deleted,
                }) => {
                    // A request left `pending` without its lock lost its
                    // handler (another launcher's session ended): give it
                    // back now, not at the next cleanup pass.
                    let ctx = ctx.clone();
                    tokio::spawn(async move { cleanup::reset_if_lost(&ctx, &id).await });
                }
                Ok(StoreEvent::Lock {
                    target: LockTarget::Coordination(_),
                    change: Change::Deleted,
                }) => self.min_ready.wake(),
                Ok(StoreEvent::Component { kind }) => {
                    if kind == POOL_KIND {
                        // A launcher may be gone: its `init` nodes are
                        // orphans now (`building` ones come through their
                        // locks).
                        self.deleter.sweep_now();
                    }
                    self.ledgers.wake(None)
                }
                Ok(StoreEvent::Image { .. }) => self.ledgers.wake(None),
                Ok(StoreEvent::Lock { .. }) => {}
                Ok(StoreEvent::Resync) | Err(RecvError::Lagged(_)) => {
                    debug!("store events missed: waking every task");
                    self.ledgers.quota_freed();
                    self.deleter.sweep_now();
                    self.min_ready.wake();
                }
                Err(RecvError::Closed) => {
                    warn!("store watch closed");
                    return;
                }
            }
        }
    }
}
