//! Probing static hosts: SSH host-key scans, plain TCP reachability checks
//! and address resolution, behind the [`HostScanner`] trait.
//!
//! [`SshKeyscan`] is the real implementation: it runs OpenSSH's
//! `ssh-keyscan` and connects with tokio. Like upstream's `nodescan`, a
//! probe keeps trying until its timeout has passed (a host that is still
//! starting its sshd is waited for), and keys are returned as
//! `"<type> <base64>"`, without the host name `ssh-keyscan` prints before
//! them.

use std::fmt::Debug;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::time::Instant;
use tracing::debug;

/// The `ssh-keyscan` program [`SshKeyscan::default`] runs (found on `PATH`).
pub const SSH_KEYSCAN: &str = "ssh-keyscan";

/// Pause between two attempts of a probe that failed before its deadline.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// What to probe: a host, its port and how long to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanTarget {
    /// Host name or address.
    pub host: String,
    /// TCP port (the node's `connection-port`).
    pub port: u16,
    /// How long to keep trying (the node's `timeout`).
    pub timeout: Duration,
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// Nothing answered on the port before the timeout.
    #[error("{host}:{port}: no answer within {after:?}: {message}")]
    Unreachable {
        /// Host probed.
        host: String,
        /// Port probed.
        port: u16,
        /// How long it was tried.
        after: Duration,
        /// The last failure seen (connection refused, timeout, ...).
        message: String,
    },
    /// The host name does not resolve.
    #[error("{host}: cannot resolve the host name: {message}")]
    Resolve {
        /// Host name.
        host: String,
        /// The resolver's answer.
        message: String,
    },
    /// The scanning program could not be run.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Probes hosts over the network. The static provider takes one, so tests
/// can script the network ([`SshKeyscan`] is the real one).
///
/// # Contract
/// - [`scan_host_keys`](Self::scan_host_keys) returns every host key the SSH
///   server offers, each as `"<type> <base64>"`, once; an empty list or an
///   error when none could be read before `target.timeout`.
/// - [`check_port`](Self::check_port) succeeds once a TCP connection to the
///   port succeeds, retrying until `target.timeout`.
/// - Neither takes much longer than `target.timeout` (plus one attempt's
///   connection time).
#[async_trait]
pub trait HostScanner: Send + Sync + Debug + 'static {
    /// The SSH host keys `target` offers.
    async fn scan_host_keys(&self, target: &ScanTarget) -> Result<Vec<String>, ScanError>;

    /// Whether something accepts TCP connections on the port.
    async fn check_port(&self, target: &ScanTarget) -> Result<(), ScanError>;

    /// The address `host` resolves to first (upstream's `set_node_ip`).
    async fn resolve(&self, host: &str, port: u16) -> Result<IpAddr, ScanError>;
}

/// The real [`HostScanner`]: `ssh-keyscan` for host keys, tokio for TCP
/// connections and name resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshKeyscan {
    program: PathBuf,
}

impl Default for SshKeyscan {
    fn default() -> Self {
        Self::new(SSH_KEYSCAN)
    }
}

impl SshKeyscan {
    /// Scan with `program` (an `ssh-keyscan` binary).
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
        }
    }

    /// One `ssh-keyscan` run with at most `timeout`; its keys.
    async fn keyscan_once(
        &self,
        target: &ScanTarget,
        timeout: Duration,
    ) -> Result<KeyscanOutcome, ScanError> {
        // `-T` takes whole seconds; at least 1.
        let secs = timeout.as_secs_f64().ceil().max(1.0) as u64;
        let mut command = Command::new(&self.program);
        command
            .arg("-p")
            .arg(target.port.to_string())
            .arg("-T")
            .arg(secs.to_string())
            .arg(&target.host)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let run = command.output();
        // ssh-keyscan's own timeout applies per read; bound the whole run.
        let output = match tokio::time::timeout(timeout + Duration::from_secs(1), run).await {
            Ok(Ok(output)) => output,
            Ok(Err(source)) => {
                return Err(ScanError::Spawn {
                    program: self.program.display().to_string(),
                    source,
                })
            }
            Err(_) => {
                return Ok(KeyscanOutcome {
                    keys: Vec::new(),
                    message: format!("ssh-keyscan did not finish within {timeout:?}"),
                })
            }
        };
        let keys = parse_keyscan_output(&String::from_utf8_lossy(&output.stdout));
        let message = String::from_utf8_lossy(&output.stderr)
            .lines()
            .rfind(|l| !l.starts_with('#') && !l.trim().is_empty())
            .unwrap_or("no host key offered")
            .to_string();
        Ok(KeyscanOutcome { keys, message })
    }
}

struct KeyscanOutcome {
    keys: Vec<String>,
    message: String,
}

#[async_trait]
impl HostScanner for SshKeyscan {
    async fn scan_host_keys(&self, target: &ScanTarget) -> Result<Vec<String>, ScanError> {
        let start = Instant::now();
        let deadline = start + target.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let outcome = self.keyscan_once(target, left).await?;
            if !outcome.keys.is_empty() {
                debug!(host = %target.host, port = target.port, keys = outcome.keys.len(), "scanned host keys");
                return Ok(outcome.keys);
            }
            if !pause_before_retry(deadline).await {
                return Err(ScanError::Unreachable {
                    host: target.host.clone(),
                    port: target.port,
                    after: start.elapsed(),
                    message: outcome.message,
                });
            }
        }
    }

    async fn check_port(&self, target: &ScanTarget) -> Result<(), ScanError> {
        let start = Instant::now();
        let deadline = start + target.timeout;
        loop {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(100));
            let attempt = TcpStream::connect((target.host.as_str(), target.port));
            let message = match tokio::time::timeout(left, attempt).await {
                Ok(Ok(_stream)) => return Ok(()),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "connection timed out".to_string(),
            };
            if !pause_before_retry(deadline).await {
                return Err(ScanError::Unreachable {
                    host: target.host.clone(),
                    port: target.port,
                    after: start.elapsed(),
                    message,
                });
            }
        }
    }

    async fn resolve(&self, host: &str, port: u16) -> Result<IpAddr, ScanError> {
        let resolve_error = |message: String| ScanError::Resolve {
            host: host.to_string(),
            message,
        };
        let mut addrs = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| resolve_error(e.to_string()))?;
        addrs
            .next()
            .map(|a| a.ip())
            .ok_or_else(|| resolve_error("no address".to_string()))
    }
}

/// Sleep before the next attempt; false when the deadline leaves no room.
async fn pause_before_retry(deadline: Instant) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    if left <= RETRY_PAUSE {
        return false;
    }
    tokio::time::sleep(RETRY_PAUSE).await;
    true
}

/// The keys of `ssh-keyscan`'s standard output, as `"<type> <base64>"`,
/// each once, in the order printed. Comment lines and lines that are not
/// `<host> <type> <base64>` are skipped.
pub fn parse_keyscan_output(stdout: &str) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for line in stdout.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(_host), Some(kind), Some(blob)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let key = format!("{kind} {blob}");
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

#[cfg(test)]
mod tests;
