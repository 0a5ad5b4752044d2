//! The simulator as a child process, for tests that kill -9 it or need it
//! to outlive a runtime: find the `kube-sim` binary, start it, read its
//! `READY <url>` line.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::error::Error;

/// The environment variable that names the `kube-sim` binary.
pub const BIN_ENV: &str = "NODEPOOL_KUBE_SIM_BIN";

/// How to start the process.
#[derive(Debug, Clone)]
pub struct ProcessOptions {
    /// The port; 0 picks a free one (pass the old port to restart it in place).
    pub port: u16,
    /// Where it writes its kubeconfig.
    pub kubeconfig: PathBuf,
    /// Its state file, kept across restarts.
    pub state_file: Option<PathBuf>,
    /// `--pod-ready-delay-ms`.
    pub pod_ready_delay_ms: u64,
    /// `--pod-terminate-delay-ms`.
    pub pod_terminate_delay_ms: u64,
    /// Where its stderr goes (discarded when `None`).
    pub log: Option<PathBuf>,
    /// `--plain-http` instead of HTTPS with the built-in CA.
    pub plain_http: bool,
}

impl ProcessOptions {
    /// A free port, the kubeconfig and state file in `dir`, 500 ms delays.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            port: 0,
            kubeconfig: dir.join("kubeconfig"),
            state_file: Some(dir.join("kube-sim-state.json")),
            pod_ready_delay_ms: 500,
            pod_terminate_delay_ms: 500,
            log: Some(dir.join("kube-sim.log")),
            plain_http: false,
        }
    }
}

/// A running `kube-sim` process; dropping it kills it.
#[derive(Debug)]
pub struct SimProcess {
    child: Child,
    url: String,
    kubeconfig: PathBuf,
}

impl SimProcess {
    /// The `kube-sim` binary: `$NODEPOOL_KUBE_SIM_BIN`, else next to this
    /// executable (`target/<profile>/kube-sim`, tests being in `deps/`).
    /// Build it first with `cargo build -p nodepool-kube-sim`.
    pub fn find_binary() -> Result<PathBuf, Error> {
        if let Some(p) = std::env::var_os(BIN_ENV).filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        let exe = std::env::current_exe()
            .map_err(|e| Error::Process(format!("cannot find this executable: {e}")))?;
        let dirs = exe.ancestors().skip(1).take(2);
        let name = format!("kube-sim{}", std::env::consts::EXE_SUFFIX);
        dirs.map(|d| d.join(&name))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                Error::Process(format!(
                    "the `kube-sim` binary is not built next to {}: run `cargo build -p \
                     nodepool-kube-sim` first, or set {BIN_ENV}",
                    exe.display()
                ))
            })
    }

    /// Start `bin` and wait (up to 30 s) for its `READY <url>` line.
    pub fn spawn(bin: &Path, opts: &ProcessOptions) -> Result<Self, Error> {
        let mut cmd = Command::new(bin);
        cmd.arg("--port")
            .arg(opts.port.to_string())
            .arg("--kubeconfig")
            .arg(&opts.kubeconfig)
            .arg("--pod-ready-delay-ms")
            .arg(opts.pod_ready_delay_ms.to_string())
            .arg("--pod-terminate-delay-ms")
            .arg(opts.pod_terminate_delay_ms.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        if opts.plain_http {
            cmd.arg("--plain-http");
        }
        if let Some(state) = &opts.state_file {
            cmd.arg("--state-file").arg(state);
        }
        match &opts.log {
            Some(log) => {
                let file = std::fs::File::create(log).map_err(|source| Error::File {
                    path: log.clone(),
                    source,
                })?;
                cmd.stderr(file);
            }
            None => {
                cmd.stderr(Stdio::null());
            }
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Process(format!("cannot start {}: {e}", bin.display())))?;
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if let Some(url) = line.strip_prefix("READY ") {
                        let _ = tx.send(url.trim().to_string());
                    }
                }
            });
        }
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => Ok(Self {
                child,
                url,
                kubeconfig: opts.kubeconfig.clone(),
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(Error::Process(format!(
                    "{} printed no READY line (see its log)",
                    bin.display()
                )))
            }
        }
    }

    /// `https://127.0.0.1:PORT` (`http://` with `plain_http`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// The kubeconfig it wrote.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL it and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
