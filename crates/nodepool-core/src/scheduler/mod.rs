//! The [`Scheduler`] trait: pure decisions on node requests for one pool.
//!
//! The launcher engine gathers plain data ([`SchedulingInput`]), asks the
//! scheduler, and performs the I/O each [`Decision`] calls for. Because the
//! scheduler does no I/O, its decisions can be tested, replayed and shown to
//! users ("request 100-0000000042 waits: limited by cores").

use std::collections::BTreeMap;
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
}

/// A ready, unallocated, unlocked node of this pool.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReadyNode {
    /// Node id.
    pub id: String,
    /// Labels it satisfies.
    pub labels: Vec<String>,
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
    /// Tenant limits and use, by tenant name.
    pub tenants: BTreeMap<String, TenantUsage>,
}

/// Which limit holds a request back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// Instance count (`max-servers` or cloud quota).
    Instances,
    /// Cores.
    Cores,
    /// RAM.
    Ram,
    /// The tenant's limit.
    Tenant,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::Instances => "instances",
            Limit::Cores => "cores",
            Limit::Ram => "ram",
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
}

impl fmt::Display for DeclineReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeclineReason::UnknownLabel(l) => write!(f, "label {l} is not served by this pool"),
            DeclineReason::ExceedsLimits(l) => {
                write!(f, "request exceeds the pool's total {l}")
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
