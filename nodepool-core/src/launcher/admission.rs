//! Admission: new node records are created only when they fit the pool's,
//! the provider's and the tenant's limits as counted from the store itself
//! at that moment, in one optimistic check-and-create, so that launchers
//! sharing a store never both take the last slot.
//!
//! A pool pass decides from its caches, which may lag behind what other
//! launchers just created; this is the authoritative check that follows.
//! For each batch of new nodes of a request:
//!
//! 1. read the version of each admission counter the nodes move (the
//!    provider's, and the tenant's when it has `tenant-resource-limits`)
//!    ([`NodeStore::admission_token`](crate::store::NodeStore::admission_token));
//! 2. bring the node cache up to date with the store itself (the ids now
//!    in the store, and the records the cache misses). When every counter
//!    still reads as this launcher's own last admission left it, no other
//!    launcher has admitted since the cache was last checked, so only the
//!    nodes this launcher admitted since are read (if the cache lacks them
//!    and no handler of the pool still counts them). A launcher even tries
//!    the versions its last admission left without reading them: if they
//!    moved, step 4 fails and it starts again, reading. So the common case
//!    of one launcher costs no read at all;
//! 3. ask the scheduler whether the batch fits, counting every node
//!    record (any launcher's) and this launcher's own accepted launches
//!    that have no record yet, but not the batch's own request;
//! 4. create the records and bump the counters in one atomic step
//!    ([`NodeStore::create_nodes_admitted`](crate::store::NodeStore::create_nodes_admitted)),
//!    which fails if any counter moved since step 1: another launcher
//!    admitted nodes meanwhile, and the count of step 3 may miss them; then
//!    start again at 1.
//!
//! One launcher's admissions under a provider are made one at a time (a
//! lock per provider), so its own request handlers never conflict.
//!
//! Every admission that succeeded before step 1 is visible in step 2
//! (its records were created in the same atomic step that moved the
//! counter, before the version was read), and any that succeeds after it
//! makes step 4 fail. So the records in the store never exceed a limit
//! through admissions, whatever the interleaving, and a launcher killed at
//! any step leaves either no record or records that count as usual.
//! Records are created before the cloud is called, as ever, so what the
//! cloud runs is bounded by the records.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify};
use tracing::debug;

use super::context::{AdmissionState, Context};
use super::input;
use super::launch::LaunchContext;
use super::ledger::Ledger;
use super::util::lock;
use crate::config::Config;
use crate::model::Node;
use crate::scheduler::{Decision, DeclineReason, RequestInfo};
use crate::store::AdmissionToken;
use crate::{Error, Result};

/// Conflicts (other launchers admitting at the same moment) one batch
/// retries through before it waits like a batch without room.
const MAX_CONFLICTS: u32 = 64;

/// How long after a conflict this launcher's admissions under the same
/// counters are made one at a time, not in groups.
const CONTENDED_FOR: Duration = Duration::from_secs(30);

/// What a batch of new nodes is for.
#[derive(Debug, Clone)]
pub(crate) struct Batch {
    /// The ledger entry (request id, validation key) whose bookings the
    /// batch replaces: left out of the count.
    pub(crate) key: String,
    /// One label per new node.
    pub(crate) labels: Vec<String>,
    /// The tenant the nodes count against.
    pub(crate) tenant: Option<String>,
}

/// The admission counters a batch for `provider` and `tenant` moves: the
/// provider's always (pool, cloud and provider limits), the tenant's when
/// `tenant-resource-limits` limits it (counted across providers).
pub(crate) fn counter_keys(config: &Config, provider: &str, tenant: Option<&str>) -> Vec<String> {
    let mut keys = vec![format!("provider:{provider}")];
    if let Some(tenant) = tenant {
        if config
            .tenant_resource_limits
            .iter()
            .any(|t| t.tenant_name == tenant)
        {
            keys.push(format!("tenant:{tenant}"));
        }
    }
    keys
}

/// Batches of one pool whose check passed, created in one atomic step with
/// the batch whose admission opened the group: the counters move once for
/// all of them, and the store commits them together.
#[derive(Debug)]
pub(crate) struct Group {
    /// The pool (its ledger's component name) whose batches may join.
    pool: String,
    joined: Vec<Joined>,
}

/// A batch waiting in a [`Group`].
#[derive(Debug)]
struct Joined {
    nodes: Vec<Node>,
    /// The ids of its nodes once created; dropped (or `None`) when the
    /// group failed, and the batch is checked again.
    reply: oneshot::Sender<Option<Vec<String>>>,
}

/// The open group of a provider's admissions, if any, and a wake-up for
/// the admissions that wait for it to end.
#[derive(Debug, Clone, Default)]
pub(crate) struct GroupSlot {
    open: Arc<Mutex<Option<Group>>>,
    ended: Arc<Notify>,
}

impl GroupSlot {
    fn take(&self) -> Option<Group> {
        lock(&self.open).take()
    }
}

/// Ends the group its leader opened when the leader ends, whichever way:
/// the batches still in it (a leader cancelled) are checked again.
struct Leading(GroupSlot);

impl Drop for Leading {
    fn drop(&mut self) {
        drop(self.0.take());
        self.0.ended.notify_waiters();
    }
}

/// Create `nodes` (one per label of `batch`, in order) if they fit; their
/// ids are set on success. `Ok(false)`: no room now (nothing created); the
/// caller waits for quota to free, as after a quota refusal.
///
/// Batches of one pool that only the provider's counter limits are
/// created in groups: the first checked opens a group and lets the
/// admissions waiting behind it check theirs and join, then creates all
/// of them in one atomic step. Every batch of the group was checked
/// against the same counter versions, and each check counted the others
/// through their plans in the pool's book, so together they fit as each
/// alone did. One launcher's admissions then cost one store round trip a
/// group instead of one each.
pub(crate) async fn admit(
    launch: &LaunchContext,
    ledger: &Ledger,
    batch: &Batch,
    nodes: &mut [Node],
) -> Result<bool> {
    let ctx = &*launch.context;
    let store = &*ctx.store;
    let snapshot = ctx.snapshot();
    let keys = counter_keys(
        &snapshot.config,
        &launch.provider_cfg.name,
        batch.tenant.as_deref(),
    );
    let slot = ctx.admission_state(&launch.provider_cfg.name);
    let mut conflicts = 0;
    loop {
        let mut state = slot.lock().await;
        // A tenant's counter spans pools and providers, whose plans no
        // pool's book holds: such a batch is checked and created alone. So
        // are batches while other launchers admit under the same counter:
        // a group's longer check would lose to theirs again and again.
        let joinable = keys.len() == 1
            && state
                .contended_until
                .map_or(true, |until| Instant::now() >= until);
        let group = state.group.clone();
        let ended = group.ended.clone();
        let wait = {
            let open = lock(&group.open);
            open.as_ref()
                .is_some_and(|g| !joinable || g.pool != ledger.component_name)
                .then(|| ended.notified())
        };
        if let Some(notified) = wait {
            // Another pool's group (or a group this batch cannot join) is
            // being created: its counter bump would fail this batch's, so
            // wait for it.
            drop(state);
            notified.await;
            continue;
        }
        let tokens = match counter_tokens(ctx, ledger, batch, &keys, &mut state).await {
            Ok(tokens) => tokens,
            Err(e) => {
                state.versions.clear();
                return Err(e);
            }
        };
        if !fits(launch, ledger, batch, &snapshot.config).await {
            // The cache may still count nodes deleted since (their events
            // wait to be read): before saying no, count again with them
            // read. Room needs no such read, as a lag only counts more.
            if let Err(e) = ctx.nodes.sync(store).await {
                state.versions.clear();
                return Err(e);
            }
            if !fits(launch, ledger, batch, &snapshot.config).await {
                debug!(key = %batch.key, labels = ?batch.labels, "no room to admit new nodes");
                return Ok(false);
            }
        }
        let mut joined = Vec::new();
        let mut leading = None;
        if joinable {
            let answer = {
                let mut open = lock(&group.open);
                match open.as_mut() {
                    Some(g) => {
                        let (reply, answer) = oneshot::channel();
                        g.joined.push(Joined {
                            nodes: nodes.to_vec(),
                            reply,
                        });
                        Some(answer)
                    }
                    None => {
                        *open = Some(Group {
                            pool: ledger.component_name.clone(),
                            joined: Vec::new(),
                        });
                        None
                    }
                }
            };
            if let Some(answer) = answer {
                drop(state);
                match answer.await {
                    Ok(Some(ids)) => {
                        for (node, id) in nodes.iter_mut().zip(ids) {
                            node.id = id;
                        }
                        return Ok(true);
                    }
                    _ => {
                        conflicts += 1;
                        if conflicts >= MAX_CONFLICTS {
                            return Ok(false);
                        }
                        continue;
                    }
                }
            }
            // This batch leads the group: the admissions queued behind it
            // on the lock (which is fair) check theirs and join first.
            leading = Some(Leading(group.clone()));
            drop(state);
            state = slot.lock().await;
            joined = group.take().map(|g| g.joined).unwrap_or_default();
        }
        let grouped: Vec<Node>;
        let create: &[Node] = if joined.is_empty() {
            nodes
        } else {
            grouped = nodes
                .iter()
                .chain(joined.iter().flat_map(|j| j.nodes.iter()))
                .cloned()
                .collect();
            &grouped
        };
        match store.create_nodes_admitted(create, &tokens).await {
            Ok(ids) => {
                admitted(&mut state, &tokens, &ids);
                let mut ids = ids.into_iter();
                for node in nodes.iter_mut() {
                    node.id = ids.next().unwrap_or_default();
                }
                for j in joined {
                    let theirs: Vec<String> = ids.by_ref().take(j.nodes.len()).collect();
                    let _ = j.reply.send(Some(theirs));
                }
                return Ok(true);
            }
            Err(Error::VersionConflict { target, .. }) => {
                // A group's batches (dropped with `joined`) are checked
                // again, each by its own admission.
                drop(joined);
                drop(leading);
                state.versions.clear();
                state.contended_until = Some(Instant::now() + CONTENDED_FOR);
                conflicts += 1;
                debug!(key = %batch.key, %target, conflicts, "another launcher admitted nodes meanwhile; counting again");
                if conflicts >= MAX_CONFLICTS {
                    return Ok(false);
                }
                drop(state);
                // Spread the retries of launchers that collide again.
                tokio::time::sleep(backoff(&batch.key, conflicts)).await;
            }
            Err(e) => {
                state.versions.clear();
                return Err(e);
            }
        }
    }
}

/// After an admission of `ids` with `tokens`: the versions it left, and
/// its nodes, which the cache may not have yet.
fn admitted(state: &mut AdmissionState, tokens: &[AdmissionToken], ids: &[String]) {
    state.versions = tokens
        .iter()
        .map(|t| (t.key.clone(), t.version + 1))
        .collect();
    state.admitted.extend(ids.iter().cloned());
}

/// Steps 1 and 2: the counters' tokens, and the node cache brought up to
/// what they cover.
async fn counter_tokens(
    ctx: &Context,
    ledger: &Ledger,
    batch: &Batch,
    keys: &[String],
    state: &mut AdmissionState,
) -> Result<Vec<AdmissionToken>> {
    let store = &*ctx.store;
    // The versions this launcher's last admission left are tried as they
    // are: if another launcher admitted since, the atomic step fails and
    // the counters are read (and the store listed) again.
    let remembered: Option<Vec<AdmissionToken>> = keys
        .iter()
        .map(|k| {
            state.versions.get(k).map(|v| AdmissionToken {
                key: k.clone(),
                version: *v,
            })
        })
        .collect();
    if let Some(tokens) = remembered {
        // Nobody else admitted under these counters since this launcher's
        // last admission (else the create fails), when the cache was
        // checked against the store: the nodes it admitted since are all
        // the cache may lack. Those its pool's other handlers still hold
        // are counted through their plans (this batch's own are not:
        // `fits` leaves its entry out); the others are read unless the
        // cache has them.
        let missing: Vec<String> = state
            .admitted
            .iter()
            .filter(|id| !ctx.nodes.contains(id))
            .cloned()
            .collect();
        let (read, keep): (Vec<String>, Vec<String>) = if missing.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            let held = ledger.book().without(&batch.key).created_node_ids();
            missing.into_iter().partition(|id| !held.contains(id))
        };
        // Only those: the other changes since are states and deletions of
        // nodes the cache counts already (a lag there counts too much,
        // never too little), and a sync per batch would read every node
        // changed meanwhile, a read each.
        ctx.nodes.read(store, &read).await?;
        state.admitted = keep;
        return Ok(tokens);
    }
    let mut tokens = Vec::with_capacity(keys.len());
    for key in keys {
        tokens.push(store.admission_token(key).await?);
    }
    ctx.nodes.sync_fresh(store).await?;
    state.admitted.clear();
    // The cache now holds every node these versions cover: the batches
    // that join a group next use them as remembered, without reading.
    state.versions = tokens.iter().map(|t| (t.key.clone(), t.version)).collect();
    Ok(tokens)
}

/// A short pause after the `n`th conflict, different for each key.
fn backoff(key: &str, n: u32) -> Duration {
    let spread = key.bytes().fold(u64::from(n), |h, b| {
        h.wrapping_mul(31).wrapping_add(u64::from(b))
    });
    Duration::from_micros(200 * u64::from(n.min(10)) + spread % 1000)
}

/// Whether the batch fits now, as the scheduler decides for a request of
/// its labels with the caches just brought up to date. Only a wait at a
/// limit says no: a decline for any other reason is the pass's business.
async fn fits(launch: &LaunchContext, ledger: &Ledger, batch: &Batch, config: &Config) -> bool {
    let ctx = &*launch.context;
    let book = ledger.book().without(&batch.key);
    let data = input::PassData {
        config,
        provider_cfg: &launch.provider_cfg,
        pool_cfg: &launch.pool_cfg,
        provider: &launch.provider,
        runtime: &launch.runtime,
        components: &[],
        book: &book,
        check_images: false,
    };
    // No requestor: a min-ready request at a limit is declined, not made
    // to wait, and a decline must not read as room.
    let request = RequestInfo {
        id: batch.key.clone(),
        labels: batch.labels.clone(),
        reuse: false,
        tenant: batch.tenant.clone(),
        requestor: None,
        declined_by: Vec::new(),
        provider: None,
        waiting: true,
    };
    let mut scheduling = input::build(ctx, &ledger.launcher_id, &data, vec![request]).await;
    scheduling.pool.labels_without_image.clear();
    scheduling.pool.label_capacity.clear();
    scheduling.launchers.clear();
    let decision = ctx
        .scheduler
        .schedule(&scheduling)
        .into_iter()
        .find(|d| decision_id(d) == batch.key);
    debug!(?decision, "admission decision");
    room_for(decision.as_ref())
}

fn decision_id(d: &Decision) -> &str {
    match d {
        Decision::Accept { request_id, .. }
        | Decision::Decline { request_id, .. }
        | Decision::Wait { request_id, .. } => request_id,
    }
}

/// Whether a decision on a batch leaves room for it: an accept does; a
/// wait at a limit and a decline for a limit do not; a decline for another
/// reason (an unknown label, say) is the pass's business, not a limit's.
fn room_for(decision: Option<&Decision>) -> bool {
    match decision {
        Some(Decision::Accept { .. }) => true,
        Some(Decision::Decline { reason, .. }) => !matches!(
            reason,
            DeclineReason::ExceedsLimits(_) | DeclineReason::AtCapacityForMinReady(_)
        ),
        Some(Decision::Wait { .. }) | None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::Limit;

    #[test]
    fn an_unlimited_tenant_moves_only_the_provider_counter() {
        let config = Config::default();
        assert_eq!(
            counter_keys(&config, "cloud", Some("t1")),
            ["provider:cloud"]
        );
        assert_eq!(counter_keys(&config, "cloud", None), ["provider:cloud"]);
    }

    #[test]
    fn only_an_accept_or_a_decline_for_no_limit_leaves_room() {
        let accept = Decision::Accept {
            request_id: "r".into(),
            reuse: Vec::new(),
            launch: vec![0],
        };
        let wait = Decision::Wait {
            request_id: "r".into(),
            limited_by: Limit::Instances,
        };
        let decline = |reason| Decision::Decline {
            request_id: "r".into(),
            reason,
        };
        assert!(room_for(Some(&accept)));
        assert!(!room_for(Some(&wait)));
        assert!(!room_for(None));
        assert!(!room_for(Some(&decline(
            DeclineReason::AtCapacityForMinReady(Limit::Instances)
        ))));
        assert!(!room_for(Some(&decline(DeclineReason::ExceedsLimits(
            Limit::Cores
        )))));
        assert!(room_for(Some(&decline(DeclineReason::UnknownLabel(
            "x".into()
        )))));
    }

    #[test]
    fn backoff_stays_short_and_differs_by_key() {
        for n in 1..=MAX_CONFLICTS {
            assert!(backoff("100-0000000001", n) < Duration::from_millis(4));
        }
        assert_ne!(backoff("100-0000000001", 1), backoff("100-0000000002", 1));
    }
}
