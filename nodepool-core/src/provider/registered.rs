//! [`RegisteredHosts`]: what a provider of pre-registered hosts adds.

use std::collections::BTreeMap;
use std::fmt::Debug;

use async_trait::async_trait;

use crate::model::Node;
use crate::store::NodeStore;
use crate::Result;

/// The side of a provider whose nodes are hosts that exist before and after
/// a node (the static driver), reached through
/// [`Provider::registered`](super::Provider::registered).
///
/// Such a provider does not create capacity: it keeps one ready node record
/// per host slot in the store itself. The engine then
/// - calls [`RegisteredHosts::sync_registered`] (full) when the provider
///   starts and after every config change that rebuilds it, periodically,
///   and whenever one of its nodes is handed back (`used`) or deleted,
///   instead of deleting the host;
/// - never launches for its pools and reads how many more nodes of each
///   label it can hand out from [`RegisteredHosts::label_capacity`];
/// - asks [`RegisteredHosts::node_alive`] before handing a ready node to a
///   request.
///
/// These calls do not pass through the provider wrappers (rate,
/// `max-concurrency`, metrics): they are the provider's own bookkeeping in
/// the store, and the driver bounds its own host checks.
#[async_trait]
pub trait RegisteredHosts: Send + Sync + Debug {
    /// Bring the provider's pre-registered node records in `store` in step
    /// with its configuration: register ready records for free host slots,
    /// hand back `used` records (delete them and register their slots
    /// again), deregister free records of hosts no longer configured.
    ///
    /// `full` asks for the pass run at start and after a config change
    /// (every host re-checked, free records updated from the config); a
    /// periodic pass (`full == false`) only contacts hosts with a free slot,
    /// and runs a full pass if the provider never ran one. Passes of one
    /// provider never overlap. Problems with single hosts are the
    /// provider's to log and retry; an error means the pass could not run.
    async fn sync_registered(&self, store: &dyn NodeStore, full: bool) -> Result<()>;

    /// Whether the ready `node` may be handed to a request (upstream's
    /// `checkReusableNode`). A provider that answers `false` drops the
    /// record itself when it is still free (and registers it again once the
    /// host is back). Called before the engine locks the node.
    async fn node_alive(&self, store: &dyn NodeStore, node: &Node) -> Result<bool>;

    /// How many more nodes of each label the provider can hand out now
    /// (upstream's `getLabelQuota`), counted on `nodes`: the engine passes
    /// the records of the pool being scheduled that no request has been
    /// promised yet. Labels missing from the map are unlimited.
    fn label_capacity(&self, nodes: &[Node]) -> BTreeMap<String, u64>;
}
