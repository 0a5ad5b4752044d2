//! Component registry records (launchers, builders, web apps).
use serde::{Deserialize, Serialize};

/// A registered component (`/nodepool/components/<kind>/<id>`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Component {
    /// Kind: "launcher", "builder", ...
    #[serde(skip)]
    pub kind: String,
    /// Hostname.
    pub hostname: Option<String>,
    /// Component id.
    pub id: Option<String>,
}
