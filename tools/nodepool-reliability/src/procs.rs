//! The processes a run stands on, each its own OS process so a SIGKILL of
//! one leaves the others as they were: the OpenStack simulator (the cloud,
//! with its state file), the launchers, and a private ZooKeeper.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::ChaosError;

/// Find a sibling binary of this executable (`target/<profile>/NAME`), or
/// the path in `env_var` when set.
pub fn sibling_binary(name: &str, env_var: &str) -> Result<PathBuf, ChaosError> {
    if let Some(p) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()
        .map_err(|e| ChaosError::Setup(format!("cannot find this executable: {e}")))?;
    // Test binaries live in target/<profile>/deps; binaries one level up.
    let mut dirs = Vec::new();
    if let Some(dir) = exe.parent() {
        dirs.push(dir.to_path_buf());
        if let Some(up) = dir.parent() {
            dirs.push(up.to_path_buf());
        }
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            ChaosError::Setup(format!(
                "the `{name}` binary is not built next to {}: run `cargo build -p nodepool \
                 -p nodepool-openstack-sim` first, or set {env_var}",
                exe.display()
            ))
        })
}

/// One server of the simulated cloud, as its admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudServer {
    /// The server id (the node's `external_id`).
    pub id: String,
    /// Its metadata (nodepool's keys among them).
    pub metadata: BTreeMap<String, String>,
    /// Whether it runs (counts against max-servers) rather than being
    /// on its way out.
    pub live: bool,
}

/// The OpenStack simulator as its own process.
#[derive(Debug)]
pub struct SimProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    http: reqwest::Client,
}

impl SimProcess {
    /// Start `bin` with its state in `dir/cloud.json`, its offer `config`
    /// (SimConfig JSON) and its log in `dir/openstack-sim.log`.
    pub fn start(bin: &Path, dir: &Path, config: &Value) -> Result<Self, ChaosError> {
        let config_path = dir.join("sim-config.json");
        std::fs::write(&config_path, config.to_string())
            .map_err(|e| ChaosError::Setup(format!("{}: {e}", config_path.display())))?;
        let log = log_file(&dir.join("openstack-sim.log"))?;
        let mut child = Command::new(bin)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--state-file")
            .arg(dir.join("cloud.json"))
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| ChaosError::Setup(format!("cannot start {}: {e}", bin.display())))?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let addr = line.trim();
        if addr.is_empty() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ChaosError::Setup(format!(
                "openstack-sim printed no address; see {}",
                dir.join("openstack-sim.log").display()
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ChaosError::Setup(format!("HTTP client: {e}")))?;
        Ok(Self {
            child,
            base: format!("http://{addr}"),
            http,
        })
    }

    /// Every server the cloud has now.
    pub async fn servers(&self) -> Result<Vec<CloudServer>, ChaosError> {
        let state: Value = self.get_json("/_sim/state").await?;
        let servers = state
            .get("servers")
            .and_then(Value::as_object)
            .ok_or_else(|| ChaosError::Cloud("/_sim/state has no servers map".into()))?;
        Ok(servers
            .iter()
            .map(|(id, s)| CloudServer {
                id: id.clone(),
                metadata: s
                    .get("metadata")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                            .collect()
                    })
                    .unwrap_or_default(),
                live: s.get("status").and_then(Value::as_str) != Some("DELETED"),
            })
            .collect())
    }

    /// The faults injected now (`GET /_sim/faults`).
    pub async fn faults(&self) -> Result<Value, ChaosError> {
        self.get_json("/_sim/faults").await
    }

    /// Replace the injected faults (`POST /_sim/faults`).
    pub async fn set_faults(&self, faults: &Value) -> Result<(), ChaosError> {
        let url = format!("{}/_sim/faults", self.base);
        let resp = self
            .http
            .post(&url)
            .json(faults)
            .send()
            .await
            .map_err(|e| ChaosError::Cloud(format!("POST {url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(ChaosError::Cloud(format!(
                "POST {url}: HTTP {}",
                resp.status()
            )));
        }
        Ok(())
    }

    async fn get_json(&self, path: &str) -> Result<Value, ChaosError> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| ChaosError::Cloud(format!("GET {url}: {e}")))?;
        resp.json()
            .await
            .map_err(|e| ChaosError::Cloud(format!("GET {url}: {e}")))
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a launcher process is started.
#[derive(Debug, Clone)]
pub struct LauncherCommand {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment (`OS_CLIENT_CONFIG_FILE`, `RUST_LOG`).
    pub env: Vec<(String, String)>,
}

/// A launcher process that can be SIGKILLed and started again; every start
/// logs to its own file `NAME-<start>.log`.
#[derive(Debug)]
pub struct LauncherProcess {
    /// Its name in reports.
    pub name: String,
    command: LauncherCommand,
    log_dir: PathBuf,
    child: Option<Child>,
    /// How many times it was started.
    pub starts: u32,
    /// Log files, one per start.
    pub logs: Vec<PathBuf>,
}

impl LauncherProcess {
    /// A launcher named `name` (not started yet).
    pub fn new(name: &str, command: LauncherCommand, log_dir: &Path) -> Self {
        Self {
            name: name.to_string(),
            command,
            log_dir: log_dir.to_path_buf(),
            child: None,
            starts: 0,
            logs: Vec::new(),
        }
    }

    /// Start it (again).
    pub fn start(&mut self) -> Result<(), ChaosError> {
        self.starts += 1;
        let log_path = self
            .log_dir
            .join(format!("{}-{}.log", self.name, self.starts));
        let log = log_file(&log_path)?;
        let log2 = log
            .try_clone()
            .map_err(|e| ChaosError::Setup(format!("{}: {e}", log_path.display())))?;
        let mut cmd = Command::new(&self.command.program);
        cmd.args(&self.command.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        for (k, v) in &self.command.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(|e| {
            ChaosError::Setup(format!(
                "cannot start {}: {e}",
                self.command.program.display()
            ))
        })?;
        self.logs.push(log_path);
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL it and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether it exited on its own; reaps it if so and returns how.
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status.to_string())
            }
            _ => None,
        }
    }

    /// Count the log lines containing `needle` over every start.
    pub fn count_in_logs(&self, needle: &str) -> usize {
        self.logs
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .map(|text| text.lines().filter(|l| l.contains(needle)).count())
            .sum()
    }
}

impl Drop for LauncherProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A ZooKeeper server of our own, started with `scripts/zookeeper.sh`.
#[derive(Debug)]
pub struct PrivateZk {
    script: PathBuf,
    dir: PathBuf,
    /// `host:port` of its TLS port.
    pub tls_hosts: String,
    /// CA, certificate and key files.
    pub tls: (PathBuf, PathBuf, PathBuf),
}

impl PrivateZk {
    /// The repository's `scripts/zookeeper.sh`.
    pub fn script() -> PathBuf {
        std::env::var_os("NODEPOOL_ZK_SCRIPT")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/zookeeper.sh")
            })
    }

    /// Start a server in `dir`.
    pub fn start(dir: &Path) -> Result<Self, ChaosError> {
        let script = Self::script();
        run_script(&script, "start", dir)?;
        let env = std::fs::read_to_string(dir.join("env"))
            .map_err(|e| ChaosError::Setup(format!("{}/env: {e}", dir.display())))?;
        let var = |name: &str| -> Result<String, ChaosError> {
            env.lines()
                .filter_map(|l| l.trim().strip_prefix("export ").or(Some(l.trim())))
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .map(|v| v.trim_matches(|c| c == '"' || c == '\'').to_string())
                .ok_or_else(|| ChaosError::Setup(format!("{}/env has no {name}", dir.display())))
        };
        Ok(Self {
            script,
            dir: dir.to_path_buf(),
            tls_hosts: var("NODEPOOL_TEST_ZK_TLS")?,
            tls: (
                var("NODEPOOL_TEST_ZK_CA")?.into(),
                var("NODEPOOL_TEST_ZK_CERT")?.into(),
                var("NODEPOOL_TEST_ZK_KEY")?.into(),
            ),
        })
    }

    /// Stop it and start it again on the same ports and data.
    pub fn restart(&self) -> Result<(), ChaosError> {
        run_script(&self.script, "restart", &self.dir)
    }
}

impl Drop for PrivateZk {
    fn drop(&mut self) {
        let _ = run_script(&self.script, "stop", &self.dir);
    }
}

fn run_script(script: &Path, verb: &str, dir: &Path) -> Result<(), ChaosError> {
    let out = Command::new("bash")
        .arg(script)
        .arg(verb)
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ChaosError::Setup(format!("{} {verb}: {e}", script.display())))?;
    if !out.status.success() {
        return Err(ChaosError::Setup(format!(
            "{} {verb} {} failed: {}",
            script.display(),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn log_file(path: &Path) -> Result<File, ChaosError> {
    File::create(path).map_err(|e| ChaosError::Setup(format!("{}: {e}", path.display())))
}
