//! [`ScriptedScanner`]: a [`HostScanner`] whose network is a table, for
//! tests of the static provider and of engines that use it without real
//! SSH servers.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

use super::keyscan::{HostScanner, ScanError, ScanTarget};

/// How a scripted host answers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Up { keys: Vec<String>, address: IpAddr },
    Down,
    Hang,
}

/// A [`HostScanner`] answering from a table of hosts (`host:port`). A host
/// not in the table does not answer. Every probe is counted.
#[derive(Debug, Default)]
pub struct ScriptedScanner {
    state: Mutex<Scripted>,
}

#[derive(Debug, Default)]
struct Scripted {
    hosts: BTreeMap<(String, u16), Answer>,
    probes: BTreeMap<(String, u16), usize>,
}

impl ScriptedScanner {
    /// A network where no host answers.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, Scripted> {
        // Every update is a single map operation: a poisoned table is intact.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `host:port` answers with `keys` and resolves to 127.0.0.1.
    pub fn up(&self, host: &str, port: u16, keys: &[&str]) {
        self.up_at(host, port, keys, IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    /// `host:port` answers with `keys` and resolves to `address`.
    pub fn up_at(&self, host: &str, port: u16, keys: &[&str], address: IpAddr) {
        let keys = keys.iter().map(ToString::to_string).collect();
        self.state()
            .hosts
            .insert((host.to_string(), port), Answer::Up { keys, address });
    }

    /// `host:port` stops answering (its name still resolves).
    pub fn down(&self, host: &str, port: u16) {
        self.state()
            .hosts
            .insert((host.to_string(), port), Answer::Down);
    }

    /// Probes of `host:port` never return (a host that accepts the
    /// connection and then says nothing).
    pub fn hang(&self, host: &str, port: u16) {
        self.state()
            .hosts
            .insert((host.to_string(), port), Answer::Hang);
    }

    /// How many probes (`scan_host_keys` and `check_port`) `host:port` got.
    pub fn probes(&self, host: &str, port: u16) -> usize {
        self.state()
            .probes
            .get(&(host.to_string(), port))
            .copied()
            .unwrap_or(0)
    }

    async fn probe(&self, target: &ScanTarget) -> Result<Vec<String>, ScanError> {
        let key = (target.host.clone(), target.port);
        let answer = {
            let mut state = self.state();
            *state.probes.entry(key.clone()).or_default() += 1;
            state.hosts.get(&key).cloned()
        };
        match answer {
            Some(Answer::Up { keys, .. }) => Ok(keys),
            Some(Answer::Hang) => std::future::pending().await,
            Some(Answer::Down) | None => Err(ScanError::Unreachable {
                host: target.host.clone(),
                port: target.port,
                after: Duration::ZERO,
                message: "connection refused (scripted)".to_string(),
            }),
        }
    }
}

#[async_trait]
impl HostScanner for ScriptedScanner {
    async fn scan_host_keys(&self, target: &ScanTarget) -> Result<Vec<String>, ScanError> {
        self.probe(target).await
    }

    async fn check_port(&self, target: &ScanTarget) -> Result<(), ScanError> {
        self.probe(target).await.map(|_| ())
    }

    async fn resolve(&self, host: &str, port: u16) -> Result<IpAddr, ScanError> {
        match self.state().hosts.get(&(host.to_string(), port)) {
            Some(Answer::Up { address, .. }) => Ok(*address),
            Some(Answer::Down | Answer::Hang) => Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            None => Err(ScanError::Resolve {
                host: host.to_string(),
                message: "unknown host (scripted)".to_string(),
            }),
        }
    }
}
