//! How a launcher runs ([`LauncherSettings`]) and the optional post-boot
//! check ([`ReadyHook`]).

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::model::Node;
use crate::provider::Instance;
use crate::retry::{KindRetryPolicy, RetryPolicy};
use crate::tasks::TaskRegistry;
use crate::Result;

/// A post-boot check run on every node before it becomes `ready`
/// (upstream's host-key scan; here also any "ready script").
///
/// The engine calls it once the instance is active, within the provider's
/// `boot-timeout`. An error fails this launch attempt (the instance is
/// deleted and the launch retried, as upstream does for a failed key scan).
#[async_trait]
pub trait ReadyHook: Send + Sync + Debug + 'static {
    /// Check `node` (label `label`, booted as `instance`). Returns host keys
    /// to record on the node (may be empty).
    async fn check(&self, node: &Node, label: &str, instance: &Instance) -> Result<Vec<String>>;
}

/// How a [`Launcher`](super::Launcher) runs. [`LauncherSettings::new`] gives upstream's
/// defaults.
#[derive(Debug, Clone)]
pub struct LauncherSettings {
    /// This host's name: the launcher component's name and the prefix of
    /// every pool worker id.
    pub hostname: String,
    /// Safety-net interval of each pool worker's pass (events drive it).
    pub pool_interval: Duration,
    /// Interval of the deletion sweep (upstream's `delete_interval`, 5 s).
    pub delete_interval: Duration,
    /// Interval of the periodic cleanup: lost requests, max-ready-age,
    /// max-hold-age, leaked instances (upstream's `cleanup_interval`, 60 s).
    pub cleanup_interval: Duration,
    /// Interval of the min-ready check (upstream: every loop, 1 s). A
    /// label whose min-ready request failed (declined at quota, launch
    /// failures) is requested again no sooner than this, as upstream's loop
    /// would; store events wake the check sooner for other labels.
    pub min_ready_interval: Duration,
    /// An instance with our metadata whose node is unknown is deleted once
    /// it has been seen leaked for this long.
    pub leak_grace: Duration,
    /// How long a provider's quota (and unmanaged usage) is cached.
    pub quota_cache_ttl: Duration,
    /// Most node deletions running at once.
    pub delete_concurrency: usize,
    /// Most requests one pool worker handles at once (upstream has no such
    /// bound; `max-concurrency` still applies below it). Accepted requests
    /// beyond it stay `requested` for a later pass, which a handler that
    /// finishes triggers. Bounds the memory of a burst, e.g. `min-ready`
    /// asking for thousands of nodes at once: a handler with its launch in
    /// flight holds ~30 KB (its task, its request and node records, its
    /// store calls queued). The default, 128, still launches 128 nodes of a
    /// pool at once (~2 a second with one-minute boots).
    pub max_handlers_per_pool: usize,
    /// Optional post-boot check.
    pub ready_hook: Option<Arc<dyn ReadyHook>>,
    /// What a failed launch attempt leads to, from its error's kind
    /// (default [`KindRetryPolicy`]: quota pauses, transient faults are
    /// retried up to `launch-retries` attempts, the rest fail at once).
    pub retry_policy: Arc<dyn RetryPolicy>,
    /// Where image validation hooks' output is kept, a file per upload
    /// (default: `nodepool-validation` in the system's temporary folder).
    pub validation_log_dir: Option<std::path::PathBuf>,
    /// Where the launcher's tasks (pool workers, request handlers and
    /// their launches, the deleter and each deletion, cleanup, min-ready,
    /// registration, image validation) say what they wait on (for the
    /// daemon's SIGUSR2 dump). Give a clone to read it.
    pub tasks: TaskRegistry,
}

impl LauncherSettings {
    /// Defaults for `hostname`.
    pub fn new(hostname: impl Into<String>) -> Self {
        Self {
            hostname: hostname.into(),
            pool_interval: Duration::from_secs(10),
            delete_interval: Duration::from_secs(5),
            cleanup_interval: Duration::from_secs(60),
            min_ready_interval: Duration::from_secs(1),
            leak_grace: Duration::from_secs(60),
            quota_cache_ttl: Duration::from_secs(300),
            delete_concurrency: 32,
            max_handlers_per_pool: 128,
            ready_hook: None,
            retry_policy: Arc::new(KindRetryPolicy),
            validation_log_dir: None,
            tasks: TaskRegistry::new(),
        }
    }
}
