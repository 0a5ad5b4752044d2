//! [`ProcessProvider`]: the cloud verbs on local sandbox directories.

use std::collections::{BTreeMap, HashMap};
use std::io::ErrorKind;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use nodepool_core::provider::{
    Instance, InstancePage, InstanceState, LaunchSpec, Provider, ProviderCapabilities, Resources,
};
use nodepool_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};
use tracing::{debug, warn};

use crate::config::ProcessConfig;

/// The metadata file of a sandbox.
pub const INSTANCE_FILE: &str = "instance.json";
/// The file a sandbox's process writes its output to.
pub const OUTPUT_FILE: &str = "output.log";
/// The address of every node.
pub const LOCALHOST: &str = "127.0.0.1";

/// What `instance.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    external_id: String,
    hostname: String,
    pool: String,
    label: String,
    metadata: BTreeMap<String, String>,
    pid: Option<i32>,
    cores: u64,
    ram: u64,
}

/// A `process` provider: each instance is a directory under
/// `root/<provider>/`, with an `instance.json` and, when `command` is set,
/// a child process started in it.
///
/// An instance is `Active` while its process runs (or always, without a
/// `command`), and in `Error` once the process has exited. Deleting an
/// instance stops its process and removes its directory. Processes started
/// by an earlier run of the daemon are found again by their pid, so a
/// restart neither loses nor leaks them.
#[derive(Debug, Clone)]
pub struct ProcessProvider {
    config: Arc<ProcessConfig>,
    children: Arc<Mutex<HashMap<String, Child>>>,
}

fn io_error(provider: &str, what: impl std::fmt::Display, e: std::io::Error) -> Error {
    Error::Cloud {
        provider: provider.to_string(),
        kind: nodepool_core::ErrorKind::of_io(&e),
        message: format!("{what}: {e}"),
        source: Some(Box::new(e)),
    }
}

/// A fresh external id: the node id (made path-safe), the time and a counter.
fn new_external_id(node_id: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let safe: String = node_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{safe}-{nanos:08x}{n:x}")
}

/// Whether `id` can name a sandbox (no path separators, no `..`).
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl ProcessProvider {
    /// A provider for `config`.
    pub fn new(config: ProcessConfig) -> Self {
        Self {
            config: Arc::new(config),
            children: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &ProcessConfig {
        &self.config
    }

    /// The sandbox directory of `external_id`.
    pub fn sandbox_dir(&self, external_id: &str) -> PathBuf {
        self.config.provider_dir().join(external_id)
    }

    /// The error of an operation outside [`Provider::capabilities`].
    fn children(&self) -> std::sync::MutexGuard<'_, HashMap<String, Child>> {
        // A panic while holding this lock leaves the map consistent.
        self.children
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn read_record(&self, external_id: &str) -> Result<Option<Record>> {
        if !valid_id(external_id) {
            return Ok(None);
        }
        let path = self.sandbox_dir(external_id).join(INSTANCE_FILE);
        match tokio::fs::read(&path).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Cloud {
                    provider: self.config.name.clone(),
                    message: format!("{}: {e}", path.display()),
                    kind: nodepool_core::ErrorKind::Permanent,
                    source: None,
                }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&self.config.name, path.display(), e)),
        }
    }

    async fn write_record(&self, record: &Record) -> Result<()> {
        let dir = self.sandbox_dir(&record.external_id);
        let tmp = dir.join(format!("{INSTANCE_FILE}.tmp"));
        let json = serde_json::to_vec_pretty(record).map_err(|e| Error::InvalidInput {
            message: format!("encoding {INSTANCE_FILE}: {e}"),
        })?;
        tokio::fs::write(&tmp, json)
            .await
            .map_err(|e| io_error(&self.config.name, tmp.display(), e))?;
        tokio::fs::rename(&tmp, dir.join(INSTANCE_FILE))
            .await
            .map_err(|e| io_error(&self.config.name, dir.display(), e))
    }

    /// The state of a sandbox's process.
    fn process_state(&self, record: &Record) -> InstanceState {
        let Some(pid) = record.pid else {
            return InstanceState::Active;
        };
        if let Some(child) = self.children().get_mut(&record.external_id) {
            return match child.try_wait() {
                Ok(None) => InstanceState::Active,
                Ok(Some(status)) => InstanceState::Error(format!("process {pid} {status}")),
                Err(e) => InstanceState::Error(format!("process {pid}: {e}")),
            };
        }
        // Started by an earlier run: it is not our child, ask the kernel.
        match rustix::process::Pid::from_raw(pid) {
            Some(p) if rustix::process::test_kill_process(p).is_ok() => InstanceState::Active,
            _ => InstanceState::Error(format!("process {pid} is gone")),
        }
    }

    fn instance(&self, record: &Record) -> Instance {
        Instance {
            external_id: record.external_id.clone(),
            state: Some(self.process_state(record)),
            metadata: record.metadata.clone(),
            interface_ip: Some(LOCALHOST.to_string()),
            private_ipv4: Some(LOCALHOST.to_string()),
            cloud: Some("localhost".to_string()),
            region: None,
            resources: Resources {
                instances: Some(1),
                cores: Some(record.cores),
                ram: Some(record.ram),
                ..Resources::default()
            },
            ..Instance::default()
        }
    }

    async fn records(&self) -> Result<Vec<Record>> {
        let dir = self.config.provider_dir();
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(&self.config.name, dir.display(), e)),
        };
        let mut out = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| io_error(&self.config.name, dir.display(), e))?
        {
            let id = entry.file_name().to_string_lossy().into_owned();
            match self.read_record(&id).await {
                Ok(Some(record)) => out.push(record),
                Ok(None) => {}
                // A half-written sandbox must not hide the others.
                Err(e) => warn!(provider = %self.config.name, %id, error = %e, "skipping sandbox"),
            }
        }
        Ok(out)
    }

    async fn stop_process(&self, external_id: &str, pid: Option<i32>) {
        let child = self.children().remove(external_id);
        if let Some(mut child) = child {
            let _ = child.start_kill();
            let _ = child.wait().await;
        } else if let Some(pid) = pid.and_then(rustix::process::Pid::from_raw) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
}

#[async_trait]
impl Provider for ProcessProvider {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn capabilities(&self) -> ProviderCapabilities {
        ProviderCapabilities {
            image_upload: false,
            quota_query: true,
            instance_listing: true,
        }
    }

    async fn label_resources(&self, pool: &str, label: &str) -> Result<Resources> {
        let l = self
            .config
            .label(pool, label)
            .ok_or_else(|| Error::NotFound {
                kind: "label",
                id: format!(
                    "{label:?} in pool {pool:?} of provider {}",
                    self.config.name
                ),
            })?;
        Ok(Resources {
            instances: Some(1),
            cores: Some(l.cores),
            ram: Some(l.ram),
            ..Resources::default()
        })
    }

    async fn create_instance(&self, spec: &LaunchSpec) -> Result<Instance> {
        let label = self
            .config
            .label(&spec.pool, &spec.label)
            .ok_or_else(|| Error::Cloud {
                provider: self.config.name.clone(),
                message: format!("no label {:?} in pool {:?}", spec.label, spec.pool),
                kind: nodepool_core::ErrorKind::Permanent,
                source: None,
            })?;
        if let Some(limit) = self.config.instances {
            if self.records().await?.len() as u64 >= limit {
                return Err(Error::QuotaExceeded {
                    provider: self.config.name.clone(),
                    resource: "instances".to_string(),
                });
            }
        }
        let parent = self.config.provider_dir();
        tokio::fs::create_dir_all(&parent)
            .await
            .map_err(|e| io_error(&self.config.name, parent.display(), e))?;
        let external_id = loop {
            let id = new_external_id(&spec.node_id);
            match tokio::fs::create_dir(parent.join(&id)).await {
                Ok(()) => break id,
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_error(&self.config.name, parent.display(), e)),
            }
        };
        let dir = self.sandbox_dir(&external_id);
        let mut record = Record {
            external_id: external_id.clone(),
            hostname: spec.hostname.clone(),
            pool: spec.pool.clone(),
            label: spec.label.clone(),
            metadata: spec.metadata.clone(),
            pid: None,
            cores: label.cores,
            ram: label.ram,
        };
        // The record exists before the process: a crash in between leaves a
        // listed (and so cleanable) sandbox, never an unknown process.
        self.write_record(&record).await?;
        if let Some((program, args)) = self.config.command.split_first() {
            let output = std::fs::File::create(dir.join(OUTPUT_FILE))
                .map_err(|e| io_error(&self.config.name, dir.display(), e))?;
            let errors = output
                .try_clone()
                .map_err(|e| io_error(&self.config.name, dir.display(), e))?;
            let child = Command::new(program)
                .args(args)
                .current_dir(&dir)
                .env("NODEPOOL_NODE_ID", &spec.node_id)
                .env("NODEPOOL_HOSTNAME", &spec.hostname)
                .stdin(Stdio::null())
                .stdout(output)
                .stderr(errors)
                .spawn()
                .map_err(|e| Error::Cloud {
                    provider: self.config.name.clone(),
                    message: format!("starting {program:?}: {e}"),
                    kind: nodepool_core::ErrorKind::Permanent,
                    source: None,
                });
            let child = match child {
                Ok(child) => child,
                Err(e) => {
                    let _ = tokio::fs::remove_dir_all(&dir).await;
                    return Err(e);
                }
            };
            record.pid = child.id().and_then(|id| i32::try_from(id).ok());
            self.children().insert(external_id.clone(), child);
            self.write_record(&record).await?;
        }
        debug!(provider = %self.config.name, %external_id, "sandbox created");
        Ok(self.instance(&record))
    }

    async fn get_instance(&self, external_id: &str) -> Result<Option<Instance>> {
        Ok(self
            .read_record(external_id)
            .await?
            .map(|r| self.instance(&r)))
    }

    async fn delete_instance(&self, external_id: &str) -> Result<()> {
        if !valid_id(external_id) {
            return Ok(());
        }
        let record = self.read_record(external_id).await.ok().flatten();
        self.stop_process(external_id, record.and_then(|r| r.pid))
            .await;
        let dir = self.sandbox_dir(external_id);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&self.config.name, dir.display(), e)),
        }
    }

    /// Every sandbox as the only page: a local directory needs no paging.
    async fn list_instances_page(
        &self,
        _marker: Option<&str>,
        _limit: usize,
    ) -> Result<InstancePage> {
        let instances = self
            .records()
            .await?
            .iter()
            .map(|r| self.instance(r))
            .collect();
        Ok(InstancePage {
            instances,
            next: None,
        })
    }

    async fn quota(&self) -> Result<Resources> {
        Ok(Resources {
            instances: self.config.instances,
            cores: None,
            ram: None,
            ..Resources::default()
        })
    }
}
