//! # nodepool-kube-sim
//!
//! A Kubernetes API simulator for tests: core v1 namespaces, pods,
//! serviceaccounts and secrets, rbac v1 roles and rolebindings; create, get,
//! list (label and field selectors), replace, merge-patch, delete (pods and
//! namespaces with a grace period) and watch (a global resourceVersion, a
//! bounded history, `410 Gone` past it); pods go Pending → Running after a
//! delay with phase, conditions, IPs and container statuses; service-account
//! token secrets get `token`, `ca.crt` and `namespace`; errors are Kubernetes
//! `Status` objects (401, 404, 409, 422, ...). It serves plain HTTP with a
//! bearer token and writes a kubeconfig for itself, so `kubectl` and the
//! Python `kubernetes` client talk to it unchanged.
//!
//! In-process:
//! ```no_run
//! # async fn run() -> Result<(), nodepool_kube_sim::Error> {
//! let sim = nodepool_kube_sim::Sim::start(nodepool_kube_sim::SimOptions::default()).await?;
//! println!("{} {}", sim.url(), sim.kubeconfig().display());
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//! As its own process (kill -9 and restart with the same `--state-file`),
//! see [`SimProcess`].
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;

mod api;
mod error;
mod faults;
pub mod kinds;
pub mod kubeconfig;
mod meta;
mod pods;
mod process;
pub mod selectors;
pub mod store;
mod tls;
mod watch;

pub use error::{ApiError, Error};
pub use faults::Fault;
pub use kubeconfig::CONTEXT;
pub use process::{ProcessOptions, SimProcess, BIN_ENV};
use store::Store;
pub use store::{Event, EventType, Timing};
pub use tls::CA_CERT_PEM;

/// How to start the simulator.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The address to listen on.
    pub host: String,
    /// The port; 0 picks a free one.
    pub port: u16,
    /// Where to write the kubeconfig; a fresh temporary directory when `None`.
    pub kubeconfig: Option<PathBuf>,
    /// Save the cluster here on every change; reload it at start.
    pub state_file: Option<PathBuf>,
    /// The bearer token; the state file's (or a random one) when `None`.
    pub token: Option<String>,
    /// Pod timing.
    pub timing: Timing,
    /// How many events watches can replay.
    pub history_limit: usize,
    /// Serve HTTPS with the built-in test CA ([`CA_CERT_PEM`]); kubectl
    /// sends its bearer token only over TLS. Plain HTTP when `false`.
    pub tls: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 0,
            kubeconfig: None,
            state_file: None,
            token: None,
            timing: Timing {
                pod_ready_delay: Duration::from_millis(500),
                pod_terminate_delay: Duration::from_millis(500),
            },
            history_limit: 1000,
            tls: true,
        }
    }
}

/// State shared by the routes and the timer task.
#[derive(Debug)]
pub(crate) struct Shared {
    store: Mutex<Store>,
    /// Wakes the timer task after a change that may have armed a timer.
    wake: Notify,
    /// Injected failures, first match wins.
    faults: Mutex<Vec<Fault>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn faults(&self) -> MutexGuard<'_, Vec<Fault>> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running simulator in this process; dropping it stops it.
#[derive(Debug)]
pub struct Sim {
    url: String,
    kubeconfig: PathBuf,
    token: String,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    temp_dir: Option<PathBuf>,
}

impl Sim {
    /// Listen, write the kubeconfig and serve in the current runtime.
    pub async fn start(opts: SimOptions) -> Result<Self, Error> {
        let store = Store::new(
            opts.state_file.clone(),
            opts.token.clone(),
            opts.timing,
            opts.history_limit,
        )?;
        let addr = format!("{}:{}", opts.host, opts.port);
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| Error::Listen {
                addr: addr.clone(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| Error::Listen {
            addr: addr.clone(),
            source,
        })?;
        let acceptor = if opts.tls {
            Some(tls::acceptor().map_err(Error::Tls)?)
        } else {
            None
        };
        let scheme = if opts.tls { "https" } else { "http" };
        let url = format!("{scheme}://{local}");
        let (kubeconfig, temp_dir) = match opts.kubeconfig {
            Some(p) => (p, None),
            None => {
                let dir = std::env::temp_dir()
                    .join(format!("kube-sim-{}", uuid::Uuid::new_v4().simple()));
                (dir.join("kubeconfig"), Some(dir))
            }
        };
        let token = store.token().to_string();
        kubeconfig::write(&kubeconfig, &url, &token, opts.tls)?;
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            wake: Notify::new(),
            faults: Mutex::new(Vec::new()),
        });
        let (stop, stopped) = oneshot::channel();
        let router = api::router(shared.clone());
        let timers = shared.clone();
        let task = tokio::spawn(async move {
            tokio::select! {
                () = serve(listener, acceptor, router, stopped) => {}
                () = run_timers(timers) => {}
            }
        });
        Ok(Self {
            url,
            kubeconfig,
            token,
            shared,
            stop: Some(stop),
            task: Some(task),
            temp_dir,
        })
    }

    /// `https://HOST:PORT` (`http://` without TLS).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The kubeconfig written for this simulator (context [`CONTEXT`]).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The kubeconfig's bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The object `plural` `ns`/`name` (`ns` empty for namespaces).
    pub fn get(&self, plural: &str, ns: &str, name: &str) -> Option<Value> {
        let kind = kinds::by_plural(plural)?;
        self.shared.lock().get(kind, ns, name).ok()
    }

    /// Every `plural` object, in `ns` or in every namespace.
    pub fn list(&self, plural: &str, ns: Option<&str>) -> Vec<Value> {
        let Some(kind) = kinds::by_plural(plural) else {
            return Vec::new();
        };
        let (labels, fields) = Default::default();
        self.shared.lock().list(kind, ns, &labels, &fields)
    }

    /// The phase pods created later reach after the ready delay.
    pub fn set_pod_outcome(&self, phase: &str) {
        self.shared.lock().set_pod_outcome(phase);
    }

    /// Make matching requests fail (see [`Fault`]).
    pub fn add_fault(&self, fault: Fault) {
        self.shared.faults().push(fault);
    }

    /// Remove every injected fault.
    pub fn clear_faults(&self) {
        self.shared.faults().clear();
    }

    /// Stop serving and wait for the server task to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some(dir) = self.temp_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Accept connections until `stop`; then drop every connection (watches
/// included).
async fn serve(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    router: axum::Router,
    mut stop: oneshot::Receiver<()>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let app = router.clone();
                    let acceptor = acceptor.clone();
                    conns.spawn(async move {
                        let service = hyper::service::service_fn(
                            move |req: Request<hyper::body::Incoming>| {
                                app.clone().oneshot(req.map(Body::new))
                            },
                        );
                        let builder =
                            hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                        match acceptor {
                            Some(acceptor) => match acceptor.accept(stream).await {
                                Ok(tls) => {
                                    let conn = builder.serve_connection(TokioIo::new(tls), service);
                                    let _ = conn.await;
                                }
                                Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
                            },
                            None => {
                                let conn = builder.serve_connection(TokioIo::new(stream), service);
                                let _ = conn.await;
                            }
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

/// Fire pod and namespace timers as they come due.
async fn run_timers(shared: Arc<Shared>) {
    loop {
        let next = {
            let mut store = shared.lock();
            store.fire_due(std::time::Instant::now());
            store.next_deadline()
        };
        match next {
            Some(at) => {
                let at = tokio::time::Instant::from_std(at);
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = shared.wake.notified() => {}
                }
            }
            None => shared.wake.notified().await,
        }
    }
}
