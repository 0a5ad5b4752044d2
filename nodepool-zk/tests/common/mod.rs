//! What the live tests share: the server from the environment, a unique
//! chroot per test, and a harness for the conformance suite.
//!
//! `scripts/zookeeper.sh start DIR` starts a server and writes `DIR/env`
//! with the variables read here.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod proxy;

use async_trait::async_trait;
use nodepool_core::store::NodeStore;
use nodepool_core::testing::store::StoreHarness;
use nodepool_zk::{ZkConfig, ZkStore, ZkTls};

/// The TLS server of the environment.
#[derive(Debug, Clone)]
pub struct TestServer {
    /// `host:port` of the TLS port.
    pub hosts: String,
    /// The TLS files.
    pub tls: ZkTls,
}

/// The server from `NODEPOOL_TEST_ZK_TLS` and `NODEPOOL_TEST_ZK_{CA,CERT,KEY}`,
/// or `None` (with a line saying which variable is missing) to skip.
pub fn server_or_skip(test: &str) -> Option<TestServer> {
    let vars = [
        "NODEPOOL_TEST_ZK_TLS",
        "NODEPOOL_TEST_ZK_CA",
        "NODEPOOL_TEST_ZK_CERT",
        "NODEPOOL_TEST_ZK_KEY",
    ];
    let mut values = Vec::new();
    for var in vars {
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => values.push(v),
            _ => {
                println!(
                    "skipping {test}: {var} is not set (run `scripts/zookeeper.sh start DIR` \
                     and `source DIR/env`)"
                );
                return None;
            }
        }
    }
    Some(TestServer {
        hosts: values[0].clone(),
        tls: ZkTls {
            ca: values[1].clone().into(),
            cert: values[2].clone().into(),
            key: values[3].clone().into(),
        },
    })
}

/// The Python of a venv with nodepool 11 (`NODEPOOL_TEST_UPSTREAM_PYTHON`),
/// or `None` (with a line saying so) to skip.
pub fn upstream_python_or_skip(test: &str) -> Option<String> {
    match std::env::var("NODEPOOL_TEST_UPSTREAM_PYTHON") {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            println!(
                "skipping {test}: NODEPOOL_TEST_UPSTREAM_PYTHON is not set (the python of a \
                 venv with `pip install nodepool==11.0.0 cachetools`)"
            );
            None
        }
    }
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
        "/nodepool-rs-tests/{test}-{}-{nanos:x}-{n}",
        std::process::id()
    )
}

impl TestServer {
    /// Settings for a store in `chroot` over TLS.
    pub fn config(&self, chroot: &str) -> ZkConfig {
        ZkConfig::new([self.hosts.clone()])
            .with_chroot(chroot)
            .with_tls(self.tls.clone())
            .with_session_timeout(Duration::from_secs(10))
    }

    /// A plain `zookeeper-client` session in `chroot` (made if missing), to
    /// look at or write znodes the store would not.
    pub async fn raw(&self, chroot: &str) -> zookeeper_client::Client {
        let read = |path: &std::path::Path| {
            std::fs::read_to_string(path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        };
        let tls = zookeeper_client::TlsOptions::new()
            .with_pem_ca(&read(&self.tls.ca))
            .expect("CA")
            .with_pem_identity(&read(&self.tls.cert), &read(&self.tls.key))
            .expect("identity");
        let root = zookeeper_client::Client::connector()
            .with_tls(tls)
            .secure_connect(&self.hosts)
            .await
            .unwrap_or_else(|e| panic!("raw client to {}: {e}", self.hosts));
        let dir = zookeeper_client::CreateMode::Persistent
            .with_acls(zookeeper_client::Acls::anyone_all());
        match root.mkdir(chroot, &dir).await {
            Ok(()) | Err(zookeeper_client::Error::NodeExists) => {}
            Err(e) => panic!("making {chroot}: {e}"),
        }
        root.chroot(chroot.to_owned())
            .unwrap_or_else(|_| panic!("chroot {chroot}"))
    }

    /// A store in `chroot`.
    pub async fn store(&self, chroot: &str) -> ZkStore {
        ZkStore::connect(self.config(chroot))
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.hosts))
    }
}

/// Opens sessions in one chroot; expires them by stealing their session.
pub struct ZkHarness {
    server: TestServer,
    chroot: String,
    sessions: Mutex<Vec<Arc<ZkStore>>>,
}

impl ZkHarness {
    /// A harness for `chroot` on `server`.
    pub fn new(server: TestServer, chroot: String) -> Self {
        Self {
            server,
            chroot,
            sessions: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait]
impl StoreHarness for ZkHarness {
    async fn session(&self) -> Arc<dyn NodeStore> {
        let store = Arc::new(self.server.store(&self.chroot).await);
        self.sessions
            .lock()
            .expect("harness mutex poisoned")
            .push(store.clone());
        store
    }

    async fn expire(&self, session: &Arc<dyn NodeStore>) {
        let wanted = Arc::as_ptr(session) as *const () as usize;
        let store = self
            .sessions
            .lock()
            .expect("harness mutex poisoned")
            .iter()
            .find(|s| Arc::as_ptr(s) as *const () as usize == wanted)
            .cloned()
            .expect("expire: the session was opened by this harness");
        store
            .expire_session()
            .await
            .unwrap_or_else(|e| panic!("expiring a session: {e}"));
    }
}
