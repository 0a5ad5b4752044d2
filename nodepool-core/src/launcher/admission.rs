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

use std::time::Duration;

use tracing::debug;

use super::input;
use super::launch::LaunchContext;
use super::ledger::Ledger;
use crate::config::Config;
use crate::model::Node;
use crate::scheduler::{Decision, DeclineReason, RequestInfo};
use crate::store::AdmissionToken;
use crate::{Error, Result};

/// Conflicts (other launchers admitting at the same moment) one batch
/// retries through before it waits like a batch without room.
const MAX_CONFLICTS: u32 = 64;

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

/// Create `nodes` (one per label of `batch`, in order) if they fit; their
/// ids are set on success. `Ok(false)`: no room now (nothing created); the
/// caller waits for quota to free, as after a quota refusal.
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
    let mut state = slot.lock().await;
    let mut conflicts = 0;
    loop {
        // The versions this launcher's last admission left are tried as
        // they are: if another launcher admitted since, the atomic step
        // fails and the counters are read (and the store listed) again.
        let remembered: Option<Vec<AdmissionToken>> = keys
            .iter()
            .map(|k| {
                state.versions.get(k).map(|v| AdmissionToken {
                    key: k.clone(),
                    version: *v,
                })
            })
            .collect();
        let tokens = match remembered {
            Some(tokens) => {
                // Nobody else admitted under these counters since this
                // launcher's last admission (else the create fails), when
                // the cache was checked against the store: the nodes it
                // admitted since are all the cache may lack. Those its
                // pool's other handlers still hold are counted through
                // their plans (this batch's own are not: `fits` leaves its
                // entry out); the others are read unless the cache has them.
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
                // Only those: the other changes since are states and
                // deletions of nodes the cache counts already (a lag there
                // counts too much, never too little), and a sync per batch
                // would read every node changed meanwhile, a read each.
                if let Err(e) = ctx.nodes.read(store, &read).await {
                    state.versions.clear();
                    return Err(e);
                }
                state.admitted = keep;
                tokens
            }
            None => {
                let mut tokens = Vec::with_capacity(keys.len());
                for key in &keys {
                    tokens.push(store.admission_token(key).await?);
                }
                ctx.nodes.sync_fresh(store).await?;
                state.admitted.clear();
                tokens
            }
        };
        if !fits(launch, ledger, batch, &snapshot.config).await {
            debug!(key = %batch.key, labels = ?batch.labels, "no room to admit new nodes");
            return Ok(false);
        }
        match store.create_nodes_admitted(nodes, &tokens).await {
            Ok(ids) => {
                state.versions = tokens
                    .iter()
                    .map(|t| (t.key.clone(), t.version + 1))
                    .collect();
                state.admitted.extend(ids.iter().cloned());
                for (node, id) in nodes.iter_mut().zip(ids) {
                    node.id = id;
                }
                return Ok(true);
            }
            Err(Error::VersionConflict { target, .. }) => {
                state.versions.clear();
                conflicts += 1;
                debug!(key = %batch.key, %target, conflicts, "another launcher admitted nodes meanwhile; counting again");
                if conflicts >= MAX_CONFLICTS {
                    return Ok(false);
                }
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
