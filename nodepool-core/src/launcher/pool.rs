//! The pool worker: one task per provider pool. Each pass reads the open
//! requests (from the request cache, [`super::requests`]), asks the
//! scheduler, and acts on its decisions: a declined request is declined
//! here ([`handler::decline`]), a waiting one is noted in the pool's
//! [`Ledger`], an accepted one is entered in the ledger
//! ([`Ledger::start`]) and handed to a request handler
//! ([`super::handler`]) running concurrently. At a limit it asks the
//! deleter to make room ([`Deleter::make_room`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use super::context::Context;
use super::context::Snapshot;
use super::deleter::Deleter;
use super::handler::{self, Plan};
use super::input;
use super::ledger::{Active, Ledger, Ledgers, POOL_KIND};
use super::requests::RequestSummary;
use super::spread;
use super::util::wait_or_tick;
use super::validate;
use crate::config::{PoolConfig, ProviderConfig};
use crate::model::json::JsonValue;
use crate::model::{Component, ComponentState, RequestState};
use crate::provider::Provider;
use crate::scheduler::{Decision, Limit, RequestInfo, MIN_READY_REQUESTOR};
use crate::tasks::{self, TaskExt};
use crate::Result;

impl PoolWorker {
    /// Start the validation of each `testing` upload this pool validates
    /// (see [`validate`]) that is not under way here and for whose node the
    /// pool has room, as the scheduler decides for a one-node request.
    async fn validation_pass(
        &self,
        handlers: &mut JoinSet<()>,
        snapshot: &Snapshot,
        provider_cfg: &ProviderConfig,
        pool_cfg: &PoolConfig,
        provider: &Arc<dyn Provider>,
    ) -> Result<()> {
        let (ctx, ledger) = (&self.ctx, &self.ledger);
        let jobs = validate::jobs(ctx, snapshot, provider_cfg, pool_cfg).await?;
        let jobs: Vec<_> = {
            let book = ledger.book();
            jobs.into_iter()
                .filter(|j| !book.is_active(&j.key))
                .collect()
        };
        if jobs.is_empty() {
            return Ok(());
        }
        ctx.nodes.sync(&*ctx.store).await?;
        let components = ctx.store.list_components(POOL_KIND).await?;
        let rt = ctx.runtime(&ledger.provider);
        let validator = validate::Validator {
            ctx: ctx.clone(),
            ledger: ledger.clone(),
            deleter: self.deleter.clone(),
            provider: provider.clone(),
            provider_cfg: provider_cfg.clone(),
            pool_cfg: pool_cfg.clone(),
        };
        for job in jobs {
            // Read again: a job booked just before counts against the limits.
            let book = ledger.book();
            let data = input::PassData {
                config: &snapshot.config,
                provider_cfg,
                pool_cfg,
                provider,
                runtime: &rt,
                components: &components,
                book: &book,
                check_images: true,
            };
            let request = RequestInfo {
                id: job.key.clone(),
                labels: vec![job.label.clone()],
                reuse: false,
                tenant: None,
                requestor: Some(validate::VALIDATION_REQUESTOR.to_string()),
                declined_by: Vec::new(),
                provider: None,
                waiting: false,
            };
            let mut scheduling = input::build(ctx, &ledger.launcher_id, &data, vec![request]).await;
            // The upload under validation is the label's image; only this
            // pool validates it.
            scheduling.pool.labels_without_image.remove(&job.label);
            scheduling.launchers.clear();
            let fits = ctx.scheduler.schedule(&scheduling).iter().any(|d| {
                matches!(d, Decision::Accept { request_id, launch, .. }
                    if *request_id == job.key && !launch.is_empty())
            });
            if !fits {
                debug!(key = %job.key, "no room for a validation node yet");
                continue;
            }
            validator.book(&job);
            let span = info_span!("validate", image = %job.upload.image_name, build = %job.upload.build_id, upload = %job.upload.id);
            handlers.spawn(validator.clone().run(job).instrument(span));
        }
        Ok(())
    }
}

/// One pool worker and the handles it works with.
#[derive(Debug, Clone)]
pub(crate) struct PoolWorker {
    pub(crate) ctx: Arc<Context>,
    /// Every pool's ledger (the handlers wake their provider's pools).
    pub(crate) ledgers: Arc<Ledgers>,
    pub(crate) deleter: Arc<Deleter>,
    /// This pool's ledger.
    pub(crate) ledger: Arc<Ledger>,
}

impl PoolWorker {
    /// The pool component this worker registers.
    fn component(&self, paused: bool) -> Component {
        let ledger = &self.ledger;
        let snapshot = self.ctx.snapshot();
        let pool = snapshot
            .config
            .provider(&ledger.provider)
            .and_then(|p| p.pools.iter().find(|x| x.name == ledger.pool));
        let mut c = Component::new(POOL_KIND, self.ctx.settings.hostname.clone());
        c.state = ComponentState::Running;
        c.id = Some(ledger.launcher_id.clone());
        c.pool_name = Some(ledger.pool.clone());
        c.provider_name = Some(ledger.provider.clone());
        c.supported_labels = Some(
            pool.map(|p| p.labels.iter().map(|l| l.name.clone()).collect())
                .unwrap_or_default(),
        );
        c.priority = Some(pool.map(|p| p.priority).unwrap_or(100));
        c.paused = Some(paused);
        c.extra.insert(
            spread::COORDINATION_KEY.to_string(),
            JsonValue::String(spread::COORDINATION_VERSION.to_string()),
        );
        c
    }

    async fn set_paused(&self, paused: bool) {
        if !self.ledger.set_paused(paused) {
            return;
        }
        debug!(paused, "pool pause changed");
        let component = self.component(paused);
        if let Err(e) = self
            .ctx
            .store
            .register_component(POOL_KIND, &self.ledger.component_name, &component)
            .await
        {
            warn!(error = %e, "could not update the pool component");
        }
    }

    /// The pool worker task.
    pub(crate) async fn run(self, cancel: CancellationToken) {
        let ledger = self.ledger.clone();
        let span = info_span!("pool", provider = %ledger.provider, pool = %ledger.pool);
        let (registry, task) = (
            self.ctx.settings.tasks.clone(),
            format!("pool worker {}/{}", ledger.provider, ledger.pool),
        );
        async move {
            self.ledgers.insert(ledger.clone());
            let component = self.component(false);
            if let Err(e) = self
                .ctx
                .store
                .register_component(POOL_KIND, &ledger.component_name, &component)
                .await
            {
                warn!(error = %e, "could not register the pool component");
            }
            let mut handlers = JoinSet::new();
            let interval = self.ctx.settings.pool_interval;
            loop {
                tasks::waiting_on("pool pass: requests, quota, scheduling");
                if let Err(e) = self.pass(&mut handlers, &cancel).await {
                    warn!(error = %e, "pool pass failed");
                }
                reap(&mut handlers);
                tasks::waiting_on("waiting for a store event or the pool interval");
                if !wait_or_tick(ledger.woken(), interval, &cancel).await {
                    break;
                }
            }
            info!(handlers = handlers.len(), "pool worker draining");
            while let Some(done) = handlers.join_next().await {
                if let Err(e) = done {
                    warn!(error = %e, "request handler ended abnormally");
                }
            }
            if let Err(e) = self
                .ctx
                .store
                .unregister_component(POOL_KIND, &ledger.component_name)
                .await
            {
                warn!(error = %e, "could not unregister the pool component");
            }
            self.ledgers.remove(&ledger);
            info!("pool worker stopped");
        }
        .instrument(span)
        .in_task(&registry, task)
        .await
    }

    /// One scheduling pass.
    async fn pass(&self, handlers: &mut JoinSet<()>, cancel: &CancellationToken) -> Result<()> {
        let (ctx, ledger) = (&self.ctx, &self.ledger);
        let snapshot = ctx.snapshot();
        let Some((provider_cfg, pool_cfg, provider)) =
            snapshot.pool(&ledger.provider, &ledger.pool)
        else {
            return Ok(());
        };
        ctx.requests.sync(&*ctx.store).await?;
        // The book is read before the nodes, so a node created meanwhile is
        // counted (twice at worst), never missed.
        let book = ledger.book();
        let open: Vec<RequestInfo> = ctx.requests.with(|requests| {
            let mut open: Vec<(&String, &RequestSummary)> = requests
                .iter()
                .filter(|(id, r)| {
                    r.state == Some(RequestState::Requested)
                        && !r.declined_by(&ledger.launcher_id)
                        && !book.is_active(id)
                })
                .collect();
            open.sort_by(|(a, x), (b, y)| {
                request_order(a, x.relative_priority).cmp(&request_order(b, y.relative_priority))
            });
            open.into_iter()
                .map(|(id, r)| r.info(id, book.is_waiting(id)))
                .collect()
        });
        {
            let open_ids: HashSet<&str> = open.iter().map(|r| r.id.as_str()).collect();
            ledger.keep_waiting(|id| open_ids.contains(id));
        }
        // Requests this pool declined that are still `requested`: once
        // every live pool has declined one (a pool that never looked at it
        // may have died meanwhile), it fails, as it would have at the last
        // decline.
        let declined: Vec<(String, Vec<String>)> = ctx.requests.with(|requests| {
            requests
                .iter()
                .filter(|(_, r)| {
                    r.state == Some(RequestState::Requested) && r.declined_by(&ledger.launcher_id)
                })
                .map(|(id, r)| {
                    let by = r.declined_by.iter().map(|d| d.to_string()).collect();
                    (id.clone(), by)
                })
                .collect()
        });
        if let Err(e) = self
            .validation_pass(handlers, &snapshot, provider_cfg, pool_cfg, provider)
            .await
        {
            warn!(error = %e, "image validation pass failed");
        }
        let aborted = book.any_aborted();
        if open.is_empty() && declined.is_empty() {
            self.set_paused(aborted).await;
            return Ok(());
        }
        let components = ctx.store.list_components(POOL_KIND).await?;
        for (id, declined_by) in &declined {
            if handler::declined_by_every_pool(&components, declined_by) {
                if let Err(e) = handler::fail_if_declined_by_all(ctx, id).await {
                    debug!(request_id = %id, error = %e, "could not fail a request every pool declined");
                }
            }
        }
        // Requests another live launcher of this same pool takes are left
        // to it (`spread.rs`); those this pool waits on stay.
        let peers = spread::Peers::of(
            &ledger.launcher_id,
            &ledger.provider,
            &ledger.pool,
            &components,
        );
        let mut open = open;
        open.retain(|r| r.waiting || peers.take(&r.id, &r.declined_by));
        if open.is_empty() {
            self.set_paused(aborted).await;
            return Ok(());
        }
        ctx.nodes.sync(&*ctx.store).await?;
        let rt = ctx.runtime(&ledger.provider);
        let data = input::PassData {
            config: &snapshot.config,
            provider_cfg,
            pool_cfg,
            provider,
            runtime: &rt,
            components: &components,
            book: &book,
            check_images: true,
        };
        let scheduling = input::build(ctx, &ledger.launcher_id, &data, open).await;
        let decisions = ctx.scheduler.schedule(&scheduling);
        let open: HashMap<&str, &RequestInfo> = scheduling
            .requests
            .iter()
            .map(|r| (r.id.as_str(), r))
            .collect();

        let concurrency_full = provider_cfg.max_concurrency == 0
            || (provider_cfg.max_concurrency > 0
                && rt.launching() >= usize::try_from(provider_cfg.max_concurrency).unwrap_or(0));
        let preregistered = provider.registered().is_some();
        let mut paused = aborted;
        let mut wait_for_room = false;
        for decision in decisions {
            match decision {
                Decision::Accept {
                    request_id,
                    reuse,
                    launch,
                } => {
                    reap(handlers);
                    if paused
                        || concurrency_full
                        || handlers.len() >= ctx.settings.max_handlers_per_pool.max(1)
                        || cancel.is_cancelled()
                    {
                        continue;
                    }
                    let Some(request) = open.get(request_id.as_str()).copied() else {
                        continue;
                    };
                    if preregistered && !launch.is_empty() {
                        // No ready node for a label and this provider cannot
                        // launch one (upstream: always at quota).
                        cannot_launch(ctx, ledger, request).await;
                        continue;
                    }
                    let launch: Vec<(usize, String)> = launch
                        .into_iter()
                        .filter_map(|i| request.labels.get(i).map(|l| (i, l.clone())))
                        .collect();
                    let active = Active {
                        launch_labels: launch.iter().map(|(_, l)| l.clone()).collect(),
                        reused: reuse.iter().map(|(_, n)| n.clone()).collect(),
                        ..Active::default()
                    };
                    ledger.start(&request_id, active);
                    let plan = Plan {
                        request_id,
                        reuse,
                        launch,
                    };
                    handlers.spawn(handler::run(
                        ctx.clone(),
                        self.ledgers.clone(),
                        ledger.clone(),
                        plan,
                        cancel.clone(),
                    ));
                }
                Decision::Decline { request_id, reason } => {
                    ledger.stop_waiting(&request_id);
                    match handler::decline(ctx, ledger, &request_id).await {
                        Ok(failed) => info!(
                            request_id = %request_id,
                            %reason,
                            "{}",
                            handler::declined_line("for this pool", failed)
                        ),
                        Err(e) => {
                            warn!(request_id = %request_id, error = %e, "could not decline request")
                        }
                    }
                }
                Decision::Wait {
                    request_id,
                    limited_by,
                } => {
                    debug!(request_id = %request_id, %limited_by, "request waits");
                    ledger.wait(request_id);
                    if limited_by != Limit::Tenant {
                        paused = true;
                        wait_for_room = true;
                    }
                }
            }
        }
        self.set_paused(paused).await;
        // Deleting a pre-registered node makes no room: it is registered again.
        if wait_for_room && !preregistered {
            let deleter = self.deleter.clone();
            let (provider, pool) = (ledger.provider.clone(), ledger.pool.clone());
            tokio::spawn(async move {
                if let Err(e) = deleter.make_room(&provider, &pool).await {
                    debug!(error = %e, "could not free an unused node");
                }
            });
        }
        Ok(())
    }
}

/// Request ids sort by (precedence, relative priority, sequence).
#[cfg(test)]
pub(crate) fn priority_key(request: &crate::model::NodeRequest) -> (String, i64, String) {
    let (precedence, relative_priority, sequence) =
        request_order(&request.id, request.relative_priority);
    (
        precedence.to_string(),
        relative_priority,
        sequence.to_string(),
    )
}

/// The order requests are taken in: (precedence, relative priority,
/// sequence) of request `id`.
fn request_order(id: &str, relative_priority: i64) -> (&str, i64, &str) {
    let (precedence, sequence) = id.split_once('-').unwrap_or(("", id));
    (precedence, relative_priority, sequence)
}

/// Collect the handlers that finished.
fn reap(handlers: &mut JoinSet<()>) {
    while let Some(done) = handlers.try_join_next() {
        if let Err(e) = done {
            warn!(error = %e, "request handler ended abnormally");
        }
    }
}

/// A pool of pre-registered nodes has no ready node for a request (or the
/// request does not reuse nodes): as upstream at quota, a min-ready request
/// is declined, any other left for a later pass or another pool.
async fn cannot_launch(ctx: &Context, ledger: &Ledger, request: &RequestInfo) {
    if request.requestor.as_deref() == Some(MIN_READY_REQUESTOR) {
        match handler::decline(ctx, ledger, &request.id).await {
            Ok(failed) => debug!(
                request_id = %request.id,
                "{}",
                handler::declined_line("(min-ready: no node to hand out)", failed)
            ),
            Err(e) => warn!(request_id = %request.id, error = %e, "could not decline request"),
        }
    } else {
        debug!(request_id = %request.id, "no ready node to hand out; request left for later");
    }
}
