//! # nodepool-example-embedded-ci
//!
//! A small CI system that embeds nodepool-rs as a library, with no daemon:
//! it builds a [`Launcher`] over an in-memory store with the built-in `fake`
//! cloud driver, runs it in a task, and for each job requests a node with
//! core's [`Client`], runs the job's command "on" it and releases it, after
//! which the launcher deletes the node.
//!
//! The fake cloud's nodes have addresses that do not exist, so a job's
//! command runs locally with the node's details in its environment:
//! `NODEPOOL_NODE_ID`, `NODEPOOL_NODE_IP`, `NODEPOOL_NODE_LABEL`,
//! `NODEPOOL_NODE_PROVIDER` and `NODEPOOL_NODE_USERNAME`. A real CI system
//! would connect to `NODEPOOL_NODE_IP` over SSH instead.
//!
//! ```no_run
//! use nodepool_example_embedded_ci::{Ci, Job, CONFIG};
//!
//! # async fn demo() -> Result<(), nodepool_example_embedded_ci::BoxError> {
//! let ci = Ci::start(CONFIG)?;
//! let job = Job::new("unit-tests", "small", "echo testing on $NODEPOOL_NODE_IP");
//! let outcome = ci.run_job(&job).await?;
//! println!("{} on node {}: {}", job.name, outcome.node_id, outcome.status);
//! ci.shutdown().await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![warn(unreachable_pub, missing_debug_implementations)]
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use nodepool_core::client::{Client, RequestOptions};
use nodepool_core::config::{load_str, DriverRegistry};
use nodepool_core::launcher::{Launcher, LauncherSettings};
use nodepool_core::provider::Provider;
use nodepool_core::scheduler::DefaultScheduler;
use nodepool_core::store::{MemoryStore, NodeStore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Any error of this example.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The example's `nodepool.yaml`: one fake provider with a pool of two
/// labels. Any configuration the registry's drivers read works the same.
pub const CONFIG: &str = "\
labels:
  - name: small
  - name: large
providers:
  - name: fake-provider
    cloud: fake
    fake-settings:
      boot-delay: 0.05
    cloud-images:
      - name: Fake Precise
    pools:
      - name: main
        max-servers: 4
        labels:
          - name: small
            cloud-image: Fake Precise
            min-ram: 8192
          - name: large
            cloud-image: Fake Precise
            flavor-name: Unreal Flavor
";

/// One job: a command to run on a node of a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The job's name (the requestor name of its node request).
    pub name: String,
    /// The label of the node it needs.
    pub label: String,
    /// A shell command, run with `sh -c`.
    pub command: String,
}

impl Job {
    /// A job named `name` running `command` on a `label` node.
    pub fn new(name: &str, label: &str, command: &str) -> Self {
        Self {
            name: name.to_string(),
            label: label.to_string(),
            command: command.to_string(),
        }
    }
}

/// What a job did.
#[derive(Debug, Clone)]
pub struct JobOutcome {
    /// The node it ran on.
    pub node_id: String,
    /// The node's address.
    pub node_ip: String,
    /// How the command ended.
    pub status: ExitStatus,
    /// What it printed.
    pub stdout: String,
}

/// A launcher running in a task, and a client to request nodes from it.
#[derive(Debug)]
pub struct Ci {
    launcher: Launcher,
    store: Arc<dyn NodeStore>,
    cancel: CancellationToken,
    task: JoinHandle<nodepool_core::Result<()>>,
}

impl Ci {
    /// Load `config` with the built-in drivers, build its providers and
    /// start a launcher on a fresh in-memory store. Must be called within a
    /// tokio runtime.
    pub fn start(config: &str) -> Result<Self, BoxError> {
        let mut registry = DriverRegistry::new();
        nodepool_drivers::register_builtin(&mut registry);
        let config = load_str("embedded-ci.yaml", config, &registry)?;
        let mut providers: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
        for p in &config.providers {
            let driver = registry
                .get(&p.driver)
                .ok_or_else(|| format!("no driver {:?}", p.driver))?;
            providers.insert(p.name.clone(), driver.create_provider(p)?);
        }
        // One backend, two sessions: the launcher's and the requestor's,
        // as a launcher and Zuul would each have their ZooKeeper session.
        let backend = MemoryStore::new();
        let mut settings = LauncherSettings::new("embedded-ci");
        settings.delete_interval = Duration::from_millis(200);
        let launcher = Launcher::new(
            settings,
            Arc::new(backend.session()),
            Arc::new(DefaultScheduler),
            config,
            providers,
        );
        let cancel = CancellationToken::new();
        let task = tokio::spawn({
            let launcher = launcher.clone();
            let cancel = cancel.clone();
            async move { launcher.run(cancel).await }
        });
        Ok(Self {
            launcher,
            store: Arc::new(backend.session()),
            cancel,
            task,
        })
    }

    /// Request a node for `job`, run its command with the node's details in
    /// the environment, and release the node whatever the command did.
    pub async fn run_job(&self, job: &Job) -> Result<JobOutcome, BoxError> {
        let client = Client::new(self.store.clone(), job.name.clone());
        let request = client
            .submit(&[job.label.as_str()], &RequestOptions::default())
            .await?;
        let nodes = match client
            .wait_fulfilled(&request, Duration::from_secs(60))
            .await
        {
            Ok(nodes) => nodes,
            Err(e) => {
                let _ = client.cancel(&request).await;
                return Err(e.into());
            }
        };
        let node = nodes
            .nodes()
            .next()
            .cloned()
            .ok_or("a fulfilled request without nodes")?;
        let node_ip = node.interface_ip.clone().unwrap_or_default();
        let output = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&job.command)
            .env("NODEPOOL_NODE_ID", &node.id)
            .env("NODEPOOL_NODE_IP", &node_ip)
            .env("NODEPOOL_NODE_LABEL", &job.label)
            .env(
                "NODEPOOL_NODE_PROVIDER",
                node.provider.as_deref().unwrap_or(""),
            )
            .env(
                "NODEPOOL_NODE_USERNAME",
                node.username.as_deref().unwrap_or(""),
            )
            .output()
            .await;
        // Release before looking at the result: a failed command must not
        // keep the node.
        client.release(nodes).await?;
        let output = output?;
        Ok(JobOutcome {
            node_id: node.id,
            node_ip,
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        })
    }

    /// How many nodes the launcher has deleted so far.
    pub fn nodes_deleted(&self) -> u64 {
        self.launcher.counters().nodes_deleted
    }

    /// The node records still in the store.
    pub async fn node_count(&self) -> Result<usize, BoxError> {
        Ok(self.store.list_nodes().await?.len())
    }

    /// Stop the launcher and wait for it to drain.
    pub async fn shutdown(self) -> Result<(), BoxError> {
        self.cancel.cancel();
        self.task.await??;
        Ok(())
    }
}
