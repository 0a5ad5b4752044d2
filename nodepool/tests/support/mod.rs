//! Helpers for tests that drive `nodepool launcher` as a process on the
//! embedded store: a temporary state directory, a free web port, the CLI,
//! a requestor on the same database file, and waits with deadlines.

#![allow(dead_code)] // Each test file uses a different part.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodepool_core::store::NodeStore;
use nodepool_embedded::EmbeddedStore;
use serde_json::Value;

/// The `nodepool` binary under test.
pub fn nodepool_bin() -> &'static str {
    env!("CARGO_BIN_EXE_nodepool")
}

/// A port nobody listens on right now (bound to 127.0.0.1:0, then freed).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// Poll `check` until it returns `Some`, or panic after `timeout` naming
/// `what`. Polling is how a test waits for another process.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The same wait, from async code (does not block the runtime).
pub async fn wait_for_async<T, F>(what: &str, timeout: Duration, mut check: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The knobs of [`fake_config`].
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// `webapp.port`.
    pub port: u16,
    /// `min-ready` of label `small`.
    pub min_ready: u32,
    /// `max-servers` of the pool.
    pub max_servers: u32,
    /// `launch-retries`.
    pub launch_retries: u32,
    /// The fake cloud's `boot-delay` in seconds.
    pub boot_delay: f64,
    /// The fake cloud's `boot-failure-rate`.
    pub boot_failure_rate: f64,
    /// The fake cloud's `error-rate` (failing creates and deletes).
    pub error_rate: f64,
}

impl FakeConfig {
    /// Defaults: min-ready 0, max-servers 10, 3 retries, quick boots.
    pub fn new(port: u16) -> Self {
        Self {
            port,
            min_ready: 0,
            max_servers: 10,
            launch_retries: 3,
            boot_delay: 0.05,
            boot_failure_rate: 0.0,
            error_rate: 0.0,
        }
    }

    /// The YAML.
    pub fn yaml(&self) -> String {
        fake_config(self)
    }
}

/// One fake provider `fake-provider`, pool `main`, label `small`.
pub fn fake_config(c: &FakeConfig) -> String {
    format!(
        "webapp:
  port: {port}
  listen_address: 127.0.0.1
labels:
  - name: small
    min-ready: {min_ready}
providers:
  - name: fake-provider
    cloud: fake
    driver: fake
    region-name: fake-region
    rate: 0.0001
    launch-retries: {retries}
    fake-settings:
      boot-delay: {delay}
      boot-failure-rate: {failure}
      error-rate: {errors}
    cloud-images:
      - name: img
        image-name: Fake Precise
    pools:
      - name: main
        max-servers: {max}
        labels:
          - name: small
            cloud-image: img
            min-ram: 8192
",
        port = c.port,
        min_ready = c.min_ready,
        retries = c.launch_retries,
        delay = c.boot_delay,
        failure = c.boot_failure_rate,
        errors = c.error_rate,
        max = c.max_servers,
    )
}

/// A `nodepool launcher` process with its own state directory. Killed
/// (SIGKILL) on drop if still running.
#[derive(Debug)]
pub struct Daemon {
    /// The state directory (also holds the config and the logs).
    pub dir: tempfile::TempDir,
    /// The web app's port.
    pub port: u16,
    /// Extra environment for the process.
    pub env: Vec<(String, String)>,
    /// The secure file, if any.
    pub secure: Option<PathBuf>,
    child: Option<Child>,
    starts: u32,
}

impl Daemon {
    /// Write `yaml` as the config of a new state directory and start.
    pub fn start(yaml: &str, port: u16) -> Self {
        Self::start_with(yaml, port, Vec::new())
    }

    /// [`Daemon::start`] with extra environment variables.
    pub fn start_with(yaml: &str, port: u16, env: Vec<(String, String)>) -> Self {
        let mut daemon = Self::prepare(yaml, port);
        daemon.env = env;
        daemon.spawn();
        daemon
    }

    /// A state directory with `yaml` as the config, not started yet: set
    /// [`Daemon::secure`] or [`Daemon::env`], then [`Daemon::spawn`].
    pub fn prepare(yaml: &str, port: u16) -> Self {
        let dir = tempfile::tempdir().expect("state dir");
        let daemon = Self {
            dir,
            port,
            env: Vec::new(),
            secure: None,
            child: None,
            starts: 0,
        };
        daemon.write_config(yaml);
        daemon
    }

    /// The config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("nodepool.yaml")
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Replace the config (the daemon notices within a few seconds).
    pub fn write_config(&self, yaml: &str) {
        // Write then rename, so the daemon never reads half a file.
        let tmp = self.dir.path().join("nodepool.yaml.new");
        std::fs::write(&tmp, yaml).expect("write config");
        std::fs::rename(&tmp, self.config_path()).expect("rename config");
    }

    /// Start a (new) process on the same state directory.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "a daemon is already running");
        self.starts += 1;
        let log = std::fs::File::create(self.log_path(self.starts)).expect("log file");
        let mut cmd = Command::new(nodepool_bin());
        cmd.arg("-c").arg(self.config_path());
        if let Some(secure) = &self.secure {
            cmd.arg("-s").arg(secure);
        }
        cmd.arg("--state-dir")
            .arg(self.dir.path())
            .arg("launcher")
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .env(
                "OS_CLIENT_CONFIG_FILE",
                self.dir.path().join("no-clouds.yaml"),
            )
            .env_remove("NODEPOOL_STATE_DIR")
            .env_remove("STATSD_HOST")
            .env_remove("STATSD_PORT")
            .env_remove("STATSD_PREFIX")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("start nodepool launcher"));
    }

    fn log_path(&self, start: u32) -> PathBuf {
        self.dir.path().join(format!("launcher-{start}.log"))
    }

    /// Every log of every start, for failure messages.
    pub fn logs(&self) -> String {
        (1..=self.starts)
            .map(|i| std::fs::read_to_string(self.log_path(i)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// The running process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// SIGKILL the process and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Send SIGTERM and wait (with a deadline) for the exit status.
    pub fn sigterm(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        wait_for(
            "the daemon to exit after SIGTERM",
            Duration::from_secs(20),
            || child.try_wait().expect("try_wait"),
        )
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// `GET path` on the web app: the status code and body, or `None` when
    /// nothing listens.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.port, path)
    }

    /// Wait until `/ready` answers 200.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((200, _)) = self.get("/ready") {
                return;
            }
            if !self.is_running() {
                panic!("the daemon exited before it was ready:\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "the daemon was not ready in 30 s:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Run `nodepool -c CONF --state-dir DIR <args>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(nodepool_bin())
            .arg("-c")
            .arg(self.config_path())
            .arg("--state-dir")
            .arg(self.dir.path())
            .args(args)
            .env_remove("NODEPOOL_STATE_DIR")
            .output()
            .expect("run nodepool")
    }

    /// Run a `--json` command that must succeed; its parsed output.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "nodepool {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "nodepool {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// `nodepool list --json`: the nodes as upstream's CLI prints them.
    pub fn list(&self) -> Vec<Value> {
        match self.cli_json(&["list", "--json"]) {
            Value::Array(nodes) => nodes,
            other => panic!("list --json is not a list: {other}"),
        }
    }

    /// Ids of listed nodes in `state`.
    pub fn ids_in_state(&self, state: &str) -> Vec<String> {
        self.list()
            .iter()
            .filter(|n| n["state"] == state)
            .filter_map(|n| n["id"].as_str().map(str::to_owned))
            .collect()
    }

    /// A requestor's store session on the daemon's database file.
    pub fn store(&self) -> Arc<dyn NodeStore> {
        let path = self.dir.path().join("nodepool.sqlite");
        Arc::new(EmbeddedStore::open(&path).expect("open the embedded store"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A minimal HTTP/1.1 GET on 127.0.0.1:`port`.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}
