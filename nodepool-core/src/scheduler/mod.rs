//! The [`Scheduler`] trait: pure decisions on node requests for one pool.
//!
//! The launcher engine gathers plain data ([`SchedulingInput`]), asks the
//! scheduler, and performs the I/O each [`Decision`] calls for. Because the
//! scheduler does no I/O, its decisions can be tested, replayed and shown to
//! users ("request 100-0000000042 waits: limited by cores").

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Debug};

use crate::provider::Resources;

/// The pool being scheduled.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PoolInfo {
    /// Provider name.
    pub provider: String,
    /// Pool name.
    pub pool: String,
    /// This pool-worker's id, as written in `declined_by`.
    pub launcher_id: String,
    /// Labels the pool can launch, with the resources one node of each uses.
    pub labels: BTreeMap<String, Resources>,
    /// Limits: the smallest of the pool's `max-servers`/`max-cores`/`max-ram`
    /// and the provider's own quota.
    pub limits: Resources,
    /// Resources used now by this pool's nodes (and, for the cloud's own
    /// quota, by anything else counted against it).
    pub used: Resources,
    /// The provider-wide cloud quota, checked apart from the pool's own
    /// limits as upstream does. When `Some`, [`limits`](Self::limits) and
    /// [`used`](Self::used) are the pool's own (`max-servers`, `max-cores`,
    /// `max-ram` and this pool's nodes). `None` when the pool sets
    /// `ignore-provider-quota`, the provider has no quota, or the engine
    /// already folded the cloud quota into `limits`.
    pub cloud: Option<CloudQuota>,
    /// Labels whose image is not available yet (no ready upload of the
    /// diskimage, or the cloud image is missing). Requests for them are
    /// declined ("images are not available").
    pub labels_without_image: BTreeSet<String>,
    /// How many more nodes of a label the pool can hand out (upstream's
    /// per-label quota, used by the static driver). A label not listed is
    /// unlimited. A request needing a label at 0 is left for a later pass.
    pub label_capacity: BTreeMap<String, u64>,
    /// At a limit, release the request for others instead of pausing the
    /// pool (upstream's `PAUSE_AT_QUOTA = False`, the static driver).
    pub release_at_quota: bool,
    /// The pool's priority (`priority`, default 100; lower goes first). Only
    /// compared with [`SchedulingInput::launchers`].
    pub priority: i64,
}

/// A provider's cloud quota available to nodepool, and nodepool's use of it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CloudQuota {
    /// The cloud's limits minus what unmanaged instances use (upstream's
    /// `estimatedNodepoolQuota`). `None` fields are unlimited.
    pub limits: Resources,
    /// What this provider's nodes use, all pools together.
    pub used: Resources,
}

/// Another launcher pool registered in the store (upstream's pool
/// component), so this pool can yield requests to better candidates.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LauncherPool {
    /// The pool-worker id, as written in `declined_by`.
    pub id: String,
    /// Its provider name.
    pub provider: String,
    /// Labels it supports.
    pub supported_labels: BTreeSet<String>,
    /// Its priority (lower goes first).
    pub priority: i64,
    /// Whether it is paused at a limit.
    pub paused: bool,
}

/// A request as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RequestInfo {
    /// Request id.
    pub id: String,
    /// Labels, one node each.
    pub labels: Vec<String>,
    /// Whether ready nodes may be reused.
    pub reuse: bool,
    /// Tenant, for tenant-resource-limits.
    pub tenant: Option<String>,
    /// Who asked (`requestor`); [`MIN_READY_REQUESTOR`] for min-ready.
    pub requestor: Option<String>,
    /// Launcher pool ids that declined the request already.
    pub declined_by: Vec<String>,
    /// The provider the request asks for (`provider`), if any.
    pub provider: Option<String>,
    /// This pool answered [`Decision::Wait`] for the request in an earlier
    /// pass and is still waiting on it (upstream: a paused handler). Such
    /// requests are decided before every other request and do not yield to
    /// other pools. Set it only after a wait for a pool or cloud limit, not
    /// after [`Limit::Tenant`] (upstream never accepted those).
    pub waiting: bool,
}

/// The `requestor` of the requests the launcher makes for `min-ready`.
pub const MIN_READY_REQUESTOR: &str = "NodePool:min-ready";

/// A ready, unallocated, unlocked node of this pool.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReadyNode {
    /// Node id.
    pub id: String,
    /// Labels it satisfies.
    pub labels: Vec<String>,
    /// Its availability zone: the nodes reused for one request share one.
    pub az: Option<String>,
}

/// A tenant's limit and what it uses now, across all providers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TenantUsage {
    /// Limits from `tenant-resource-limits`.
    pub limits: Resources,
    /// Current use.
    pub used: Resources,
}

/// Everything a scheduling pass needs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SchedulingInput {
    /// The pool.
    pub pool: PoolInfo,
    /// Open requests, already in priority order.
    pub requests: Vec<RequestInfo>,
    /// Ready nodes that may be handed out.
    pub ready_nodes: Vec<ReadyNode>,
    /// Tenant limits and use, by tenant name. Only tenants listed in
    /// `tenant-resource-limits` appear.
    pub tenants: BTreeMap<String, TenantUsage>,
    /// Launcher pools registered in the store (this one may be among them).
    /// Empty means: decide alone, yield to nobody.
    pub launchers: Vec<LauncherPool>,
}

/// Which limit holds a request back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Limit {
    /// Instance count (`max-servers` or cloud quota).
    Instances,
    /// Cores.
    Cores,
    /// RAM.
    Ram,
    /// Another named resource (`max-resources`, `max-volumes` as
    /// `volumes`, a cloud's volume quota, ...).
    Resource(String),
    /// The tenant's limit.
    Tenant,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::Instances => "instances",
            Limit::Cores => "cores",
            Limit::Ram => "ram",
            Limit::Resource(name) => name,
            Limit::Tenant => "tenant resource limit",
        })
    }
}

/// Why a request is declined by this pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeclineReason {
    /// The pool has no such label.
    UnknownLabel(String),
    /// The request needs more than the pool could ever hold.
    ExceedsLimits(Limit),
    /// The image of a label is not available in this provider.
    ImageUnavailable(String),
    /// A min-ready request while the pool is at a limit: min-ready nodes are
    /// not worth waiting for, so another pool may take it.
    AtCapacityForMinReady(Limit),
}

impl fmt::Display for DeclineReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeclineReason::UnknownLabel(l) => write!(f, "label {l} is not served by this pool"),
            DeclineReason::ExceedsLimits(l) => {
                write!(f, "request exceeds the pool's total {l}")
            }
            DeclineReason::ImageUnavailable(l) => {
                write!(f, "the image of label {l} is not available")
            }
            DeclineReason::AtCapacityForMinReady(l) => {
                write!(
                    f,
                    "pool is at its {l} limit and the request is for min-ready"
                )
            }
        }
    }
}

/// What to do with one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Take the request: hand out `reuse` (label index → node id) and launch
    /// a node for every other label index in `launch`.
    Accept {
        /// Request id.
        request_id: String,
        /// Ready nodes to allocate, by index into the request's labels.
        reuse: Vec<(usize, String)>,
        /// Label indexes that need a new node.
        launch: Vec<usize>,
    },
    /// This pool cannot serve the request.
    Decline {
        /// Request id.
        request_id: String,
        /// Why.
        reason: DeclineReason,
    },
    /// Not now: the pool is at a limit. Upstream pauses the pool until it
    /// frees up, so no lower-priority request is taken meanwhile.
    ///
    /// For a pool or cloud limit (`Instances`, `Cores`, `Ram`, `Resource`)
    /// upstream also deletes the pool's oldest unused ready node to make
    /// room (unless one of the pool's nodes is already being deleted); that
    /// is the engine's job. With `Limit::Tenant` the pool is not paused: other tenants'
    /// requests go on.
    Wait {
        /// Request id.
        request_id: String,
        /// The limit reached.
        limited_by: Limit,
    },
}

/// Decides, for one pool, what to do with its open requests.
///
/// # Contract
/// - Pure: no I/O, the same input gives the same decisions.
/// - At most one decision per request, in input order; a request with no
///   decision is left for a later pass.
/// - A ready node is given to at most one request.
/// - Accepted requests together never exceed `pool.limits` or a tenant's.
#[cfg_attr(test, mockall::automock)]
pub trait Scheduler: Send + Sync + Debug + 'static {
    /// Decide on `input.requests`.
    fn schedule(&self, input: &SchedulingInput) -> Vec<Decision>;
}

mod default;
pub use default::DefaultScheduler;

#[cfg(test)]
mod tests;
