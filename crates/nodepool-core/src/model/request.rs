//! Node requests.
use serde::{Deserialize, Serialize};

/// The state of a node request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequestState {
    /// Submitted, not yet taken.
    Requested,
    /// Accepted by a launcher, nodes being prepared.
    Pending,
    /// All nodes allocated.
    Fulfilled,
    /// Failed.
    Failed,
}

/// A request for nodes by label.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NodeRequest {
    /// "<priority>-<sequence>", e.g. "100-0000000001".
    #[serde(skip)]
    pub id: String,
    /// State.
    pub state: Option<RequestState>,
    /// Time of the last state change.
    pub state_time: Option<f64>,
    /// Launchers (as "hostname-pid-provider-pool" ids) that declined it.
    #[serde(default)]
    pub declined_by: Vec<String>,
    /// The labels asked for, one node each.
    #[serde(default)]
    pub node_types: Vec<String>,
    /// The node ids given to it.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Whether ready nodes may be reused.
    pub reuse: bool,
    /// Who asked.
    pub requestor: Option<String>,
    /// Priority within the same precedence (lower first).
    pub relative_priority: i64,
}
