//! The typed configuration of a `static` provider, with upstream's
//! defaults. [`parse_static_provider`](super::parse_static_provider) fills
//! it from a `providers` entry.

use std::any::Any;
use std::time::Duration;

use nodepool_core::config::DriverConfig;

/// `username` of a node when not set.
pub const DEFAULT_USERNAME: &str = "zuul";
/// `timeout` of a node when not set, in seconds.
pub const DEFAULT_TIMEOUT: i64 = 5;
/// `connection-port` of a node when not set.
pub const DEFAULT_CONNECTION_PORT: i64 = 22;
/// `connection-type` of a node when not set.
pub const DEFAULT_CONNECTION_TYPE: &str = "ssh";
/// `max-parallel-jobs` of a node when not set.
pub const DEFAULT_MAX_PARALLEL_JOBS: i64 = 1;
/// `python-path` of a node when not set.
pub const DEFAULT_PYTHON_PATH: &str = "auto";

#[doc = include_str!("docs.md")]
#[derive(Debug, Clone, PartialEq)]
pub struct StaticConfig {
    /// `name`: the provider name.
    pub name: String,
    /// `max-concurrency` (default -1: unlimited).
    pub max_concurrency: i64,
    /// `priority`: default priority of the provider's pools.
    pub priority: Option<i64>,
    /// `pools`.
    pub pools: Vec<StaticPool>,
}

impl StaticConfig {
    /// The pool named `name`.
    pub fn pool(&self, name: &str) -> Option<&StaticPool> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// Every node of every pool, with its pool.
    pub fn nodes(&self) -> impl Iterator<Item = (&StaticPool, &StaticNode)> {
        self.pools
            .iter()
            .flat_map(|pool| pool.nodes.iter().map(move |node| (pool, node)))
    }
}

impl DriverConfig for StaticConfig {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// One `pools` entry of a static provider.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticPool {
    /// `name` (required).
    pub name: String,
    /// `max-servers` (unset: unlimited).
    pub max_servers: Option<i64>,
    /// `priority` (unset: the provider's, else 100).
    pub priority: Option<i64>,
    /// `node-attributes`: a mapping copied onto every node.
    pub node_attributes: Option<serde_json::Value>,
    /// `nodes`.
    pub nodes: Vec<StaticNode>,
}

impl StaticPool {
    /// The labels the pool's nodes carry, each once, in first-seen order.
    pub fn labels(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for label in self.nodes.iter().flat_map(|n| n.labels.iter()) {
            if !out.contains(&label.as_str()) {
                out.push(label);
            }
        }
        out
    }
}

/// One `nodes` entry: an existing host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticNode {
    /// `name` (required): the host name or address.
    pub name: String,
    /// `labels` (required): a string (words separated by blanks) or a list.
    pub labels: Vec<String>,
    /// `username` (default `zuul`).
    pub username: String,
    /// `timeout` in seconds (default 5) of the host-key scan.
    pub timeout: i64,
    /// `host-key-checking` (default true): scan and compare host keys
    /// before registering the node and when it is handed back.
    pub host_key_checking: bool,
    /// `host-key`: the expected host keys (a string or a list).
    pub host_keys: Vec<String>,
    /// `connection-port` (default 22).
    pub connection_port: i64,
    /// `connection-type` (default `ssh`).
    pub connection_type: String,
    /// `shell-type`: the login shell (unset: `sh`).
    pub shell_type: Option<String>,
    /// `max-parallel-jobs` (default 1): nodes registered for this host.
    pub max_parallel_jobs: i64,
    /// `python-path` (default `auto`).
    pub python_path: String,
}

impl StaticNode {
    /// `timeout` as a duration (negative values count as zero).
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.timeout).unwrap_or(0))
    }

    /// What identifies the host across config reloads and in the store:
    /// (name, username, connection-port), as upstream's node tuple.
    pub fn key(&self) -> (&str, &str, i64) {
        (&self.name, &self.username, self.connection_port)
    }
}
