//! What the ZooKeeper compatibility tests share: the live services from the
//! environment, a unique chroot per test, a nodepool.yaml both upstream and
//! we accept, our launcher daemon as a child process, the Python helpers of
//! `scripts/compat/`, and waiting for a condition with a deadline.
//!
//! Environment (set by `scripts/test.sh`; a test prints a SKIP line and
//! passes when one it needs is missing):
//! - `NODEPOOL_TEST_ZK_TLS`, `NODEPOOL_TEST_ZK_{CA,CERT,KEY}`: ZooKeeper's
//!   TLS port and the client's PEM files (`scripts/zookeeper.sh`);
//! - `NODEPOOL_TEST_UPSTREAM_PYTHON`: the Python of a venv with
//!   `nodepool==11.0.0`; `NODEPOOL_TEST_UPSTREAM_CLI`: its `nodepool`;
//! - `NODEPOOL_TEST_ZUUL_PYTHON`: the Python of a venv with `zuul==14.3.0`.
#![allow(dead_code, unreachable_pub)]

pub mod table;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nodepool_zk::{ZkConfig, ZkStore, ZkTls};
use serde_json::Value;
use tokio::process::{Child, Command};

/// A live service a test needs besides ZooKeeper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// `NODEPOOL_TEST_UPSTREAM_PYTHON`.
    UpstreamPython,
    /// `NODEPOOL_TEST_UPSTREAM_CLI`.
    UpstreamCli,
    /// `NODEPOOL_TEST_ZUUL_PYTHON`.
    ZuulPython,
}

impl Need {
    fn var(self) -> &'static str {
        match self {
            Need::UpstreamPython => "NODEPOOL_TEST_UPSTREAM_PYTHON",
            Need::UpstreamCli => "NODEPOOL_TEST_UPSTREAM_CLI",
            Need::ZuulPython => "NODEPOOL_TEST_ZUUL_PYTHON",
        }
    }
}

/// The services of the environment.
#[derive(Debug, Clone)]
pub struct Env {
    /// `host:port` of ZooKeeper's TLS port.
    pub zk_hosts: String,
    /// Client TLS files.
    pub tls: ZkTls,
    /// Upstream venv's python, if set.
    pub upstream_python: Option<String>,
    /// Upstream's `nodepool` CLI, if set.
    pub upstream_cli: Option<String>,
    /// Zuul venv's python, if set.
    pub zuul_python: Option<String>,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The environment, or `None` after printing a SKIP line naming the first
/// missing variable.
pub fn env_or_skip(test: &str, needs: &[Need]) -> Option<Env> {
    let mut zk = Vec::new();
    for name in [
        "NODEPOOL_TEST_ZK_TLS",
        "NODEPOOL_TEST_ZK_CA",
        "NODEPOOL_TEST_ZK_CERT",
        "NODEPOOL_TEST_ZK_KEY",
    ] {
        match var(name) {
            Some(v) => zk.push(v),
            None => {
                println!(
                    "SKIP {test}: {name} is not set (run `scripts/zookeeper.sh start DIR` \
                     and `. DIR/env`)"
                );
                return None;
            }
        }
    }
    for need in needs {
        if var(need.var()).is_none() {
            println!(
                "SKIP {test}: {} is not set (scripts/test.sh sets it)",
                need.var()
            );
            return None;
        }
    }
    Some(Env {
        zk_hosts: zk[0].clone(),
        tls: ZkTls {
            ca: zk[1].clone().into(),
            cert: zk[2].clone().into(),
            key: zk[3].clone().into(),
        },
        upstream_python: var(Need::UpstreamPython.var()),
        upstream_cli: var(Need::UpstreamCli.var()),
        zuul_python: var(Need::ZuulPython.var()),
    })
}

/// A chroot no other test or run uses.
pub fn unique_chroot(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(
        "/nodepool-rs-compat/{test}-{}-{nanos:x}-{n}",
        std::process::id()
    )
}

/// The path of a script under `scripts/compat/`.
pub fn compat_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/compat")
        .join(name)
}

/// One test's world: a temp dir with the configs, a chroot, the env.
pub struct World {
    /// The environment.
    pub env: Env,
    /// This test's chroot.
    pub chroot: String,
    /// Holds `nodepool.yaml`, `clouds.yaml`, logs.
    pub dir: tempfile::TempDir,
}

/// What the generated nodepool.yaml contains besides ZooKeeper.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `max-servers` of the pool.
    pub max_servers: u32,
    /// `min-ready` of label `small`.
    pub min_ready: u32,
    /// `zookeeper-timeout` (the session timeout), if not the default.
    pub zk_timeout: Option<f64>,
    /// Our fake cloud's `boot-delay` in seconds. Setting it writes our
    /// `fake-settings` key, which upstream's loader rejects.
    pub boot_delay: Option<f64>,
}

impl Default for Layout {
    fn default() -> Self {
        Self {
            max_servers: 10,
            min_ready: 0,
            zk_timeout: None,
            boot_delay: None,
        }
    }
}

impl World {
    /// A world for `test` with the default layout.
    pub fn new(test: &str, env: Env) -> Self {
        Self::with_layout(test, env, &Layout::default())
    }

    /// A world for `test` whose nodepool.yaml has `layout`.
    pub fn with_layout(test: &str, env: Env, layout: &Layout) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("zk-compat-{test}-"))
            .tempdir()
            .expect("a temp dir");
        let world = Self {
            env,
            chroot: unique_chroot(test),
            dir,
        };
        world.write_config(layout);
        std::fs::write(
            world.dir.path().join("clouds.yaml"),
            "clouds:\n  fake:\n    auth:\n      username: fake\n      password: fake\n      \
             project_id: fake\n      auth_url: fake\n",
        )
        .expect("writing clouds.yaml");
        world
    }

    /// Rewrites nodepool.yaml with `layout` (a running launcher reloads it).
    pub fn write_config(&self, layout: &Layout) {
        let (host, port) = self
            .env
            .zk_hosts
            .rsplit_once(':')
            .expect("NODEPOOL_TEST_ZK_TLS is host:port");
        let mut text = format!(
            "zookeeper-servers:\n  - host: {host}\n    port: {port}\n    chroot: {chroot}\n\
             zookeeper-tls:\n  ca: {ca}\n  cert: {cert}\n  key: {key}\n\
             webapp:\n  port: 0\n\
             labels:\n  - name: small\n    min-ready: {min_ready}\n\
             providers:\n  - name: fake-provider\n    cloud: fake\n\
             \x20   cloud-images:\n      - name: Fake Precise\n\
             \x20   pools:\n      - name: main\n        max-servers: {max}\n\
             \x20       labels:\n          - name: small\n            cloud-image: Fake Precise\n\
             \x20           min-ram: 8192\n",
            chroot = self.chroot,
            ca = self.env.tls.ca.display(),
            cert = self.env.tls.cert.display(),
            key = self.env.tls.key.display(),
            min_ready = layout.min_ready,
            max = layout.max_servers,
        );
        if let Some(timeout) = layout.zk_timeout {
            text.push_str(&format!("zookeeper-timeout: {timeout}\n"));
        }
        if let Some(delay) = layout.boot_delay {
            text = text.replace(
                "    cloud: fake\n",
                &format!("    cloud: fake\n    fake-settings:\n      boot-delay: {delay}\n"),
            );
        }
        std::fs::write(self.config(), text).expect("writing nodepool.yaml");
    }

    /// The nodepool.yaml path.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("nodepool.yaml")
    }

    /// A path in the temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `host:port/chroot`, as kazoo takes it.
    pub fn hosts_with_chroot(&self) -> String {
        format!("{}{}", self.env.zk_hosts, self.chroot)
    }

    /// Our store on this world's chroot, to observe and to seed data.
    pub async fn store(&self) -> ZkStore {
        let config = ZkConfig::new([self.env.zk_hosts.clone()])
            .with_chroot(self.chroot.clone())
            .with_tls(self.env.tls.clone());
        ZkStore::connect(config)
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.env.zk_hosts))
    }

    /// Starts our launcher daemon on this world's config; its output goes to
    /// `<name>.log` in the temp dir.
    pub fn start_launcher(&self, name: &str) -> Daemon {
        self.start_launcher_with_env(name, &[])
    }

    /// [`World::start_launcher`] with extra environment variables.
    pub fn start_launcher_with_env(&self, name: &str, env: &[(&str, &str)]) -> Daemon {
        let log = self.path(&format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("creating the daemon log");
        let err = out.try_clone().expect("cloning the log handle");
        let child = Command::new(env!("CARGO_BIN_EXE_nodepool"))
            .arg("-c")
            .arg(self.config())
            .arg("--state-dir")
            .arg(self.path(&format!("{name}-state")))
            .arg("launcher")
            .env("RUST_LOG", "info")
            .env_remove("STATSD_HOST")
            .env_remove("STATSD_PORT")
            .env_remove("STATSD_PREFIX")
            .envs(env.iter().copied())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .expect("starting `nodepool launcher`");
        Daemon {
            name: name.to_owned(),
            child,
            log,
        }
    }

    /// Our own `nodepool` CLI on this world's config; returns stdout, and
    /// panics unless it exits 0.
    pub async fn our_cli(&self, args: &[&str]) -> String {
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            Command::new(env!("CARGO_BIN_EXE_nodepool"))
                .arg("-c")
                .arg(self.config())
                .args(args)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("our `nodepool {}` answers within 60 s", args.join(" ")))
        .expect("running our nodepool CLI");
        assert!(
            out.status.success(),
            "{}",
            describe_run(&format!("our `nodepool {}`", args.join(" ")), &out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Upstream's `nodepool` CLI on this world's config; returns stdout, and
    /// panics unless it exits 0 (with its exit status, stdout and stderr).
    pub async fn upstream_cli(&self, args: &[&str]) -> String {
        let out = self.upstream_cli_output(args).await;
        assert!(
            out.status.success(),
            "{}",
            describe_run(&format!("upstream `nodepool {}`", args.join(" ")), &out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Upstream's `nodepool` CLI on this world's config, whatever its exit
    /// status; panics only if it cannot be run or takes over 60 s.
    pub async fn upstream_cli_output(&self, args: &[&str]) -> std::process::Output {
        let cli = self
            .env
            .upstream_cli
            .as_deref()
            .expect("the test asked for Need::UpstreamCli");
        tokio::time::timeout(
            Duration::from_secs(60),
            Command::new(cli)
                .arg("-c")
                .arg(self.config())
                .args(args)
                .env("OS_CLIENT_CONFIG_FILE", self.path("clouds.yaml"))
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("upstream `nodepool {}` answers within 60 s", args.join(" ")))
        .expect("running upstream's nodepool CLI")
    }

    /// Runs `python scripts/compat/<script> args...` and parses the JSON
    /// object it prints on its first stdout line.
    pub async fn run_script(&self, python: &str, script: &str, args: &[String]) -> Value {
        let path = compat_script(script);
        let out = tokio::time::timeout(
            Duration::from_secs(120),
            Command::new(python)
                .arg(&path)
                .args(args)
                .env("OS_CLIENT_CONFIG_FILE", self.path("clouds.yaml"))
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("{script} finishes within 120 s"))
        .unwrap_or_else(|e| panic!("running {python} {}: {e}", path.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{script} failed ({}):\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout.lines().next().unwrap_or_default();
        serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{script} printed {stdout:?}, not JSON: {e}"))
    }
}

/// Our launcher daemon, killed when dropped.
pub struct Daemon {
    /// Its name in this test.
    pub name: String,
    child: Child,
    /// Its combined stdout and stderr.
    pub log: PathBuf,
}

impl Daemon {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or_default()
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as `kill -9`: no cleanup, its ZooKeeper session dies when
    /// the server notices.
    pub async fn kill9(&mut self) {
        self.child.start_kill().expect("sending SIGKILL");
        let _ = self.child.wait().await;
    }

    /// SIGTERM and wait for a clean exit (within 30 s).
    pub async fn stop(&mut self) {
        let pid = self.pid().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("running kill");
        assert!(status.success(), "kill -TERM {pid}");
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} stops within 30 s of SIGTERM", self.name))
            .expect("waiting for the daemon");
        assert!(
            exit.success(),
            "{} exited with {exit}:\n{}",
            self.name,
            self.log_text()
        );
    }

    /// Panics (with the log) if the daemon has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited with {status}:\n{}", self.name, self.log_text());
        }
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after
/// `limit` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `pools` pool components are registered in `world`'s
/// chroot (the launchers are ready to take requests). The limit is
/// generous: upstream's Python launcher starts slowly on a loaded machine.
pub async fn wait_registered(world: &World, store: &ZkStore, pools: usize) {
    use nodepool_core::store::NodeStore;
    wait_for(
        &format!("{pools} pool component(s) in {}", world.chroot),
        Duration::from_secs(60),
        || async {
            let n = store.list_components("pool").await.ok()?.len();
            (n >= pools).then_some(())
        },
    )
    .await
}

/// `what` failed: its exit status, stdout and stderr, for a panic message.
pub fn describe_run(what: &str, out: &std::process::Output) -> String {
    format!(
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
