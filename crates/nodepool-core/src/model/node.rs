//! Nodes.
use serde::{Deserialize, Serialize};

/// The state of a node, as upstream spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeState {
    /// Being launched.
    Building,
    /// Being tested (unused by upstream's drivers).
    Testing,
    /// Ready to be given to a request.
    Ready,
    /// Locked and used by a requestor.
    InUse,
    /// Returned by the requestor; to be deleted.
    Used,
    /// Held for inspection.
    Hold,
    /// Being deleted.
    Deleting,
    /// Launch failed.
    Failed,
    /// Just created, not yet launching.
    Init,
    /// Launch aborted (quota); to be deleted.
    Aborted,
    /// Deleted (transient).
    Deleted,
}

/// A node: one machine, launched or registered, for one or more labels.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Node {
    /// Sequence id ("0000000001").
    #[serde(skip)]
    pub id: String,
    /// State.
    pub state: Option<NodeState>,
    /// Time of the last state change (seconds since the epoch).
    pub state_time: Option<f64>,
    /// Provider name.
    pub provider: Option<String>,
    /// Pool name.
    pub pool: Option<String>,
    /// Labels this node satisfies.
    #[serde(rename = "type", default)]
    pub labels: Vec<String>,
    /// The request this node is allocated to.
    pub allocated_to: Option<String>,
    /// The cloud's id for the instance.
    pub external_id: Option<String>,
    /// The launcher that made it.
    pub launcher: Option<String>,
}
