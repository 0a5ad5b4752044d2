//! [`EmbeddedStore`]: a session on a database file, and its options.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::Duration;

use nodepool_core::store::StoreEvent;
use tokio::sync::{broadcast, oneshot, watch};

use crate::error::{Error, Result};
use crate::schema::{self, Durability};
use crate::session::HostIdentity;
use crate::worker::{Job, SessionCell, Worker};

/// Tunables of an [`EmbeddedStore`]; the defaults suit a daemon.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddedOptions {
    /// A session whose heartbeat is older than this is dead (default 10 s).
    /// Sessions of dead processes on this host are noticed sooner, by pid.
    pub session_timeout: Duration,
    /// How often this process heartbeats its sessions and looks for dead
    /// ones (default 1 s).
    pub heartbeat_interval: Duration,
    /// How often this process looks for other processes' writes (default
    /// 50 ms): the latency of their watch events and lock hand-overs.
    pub poll_interval: Duration,
    /// How long a statement waits for another process's write lock before
    /// failing with `StoreUnavailable` (default 10 s).
    pub busy_timeout: Duration,
    /// How often old change-log rows are pruned (default 60 s).
    pub prune_interval: Duration,
    /// How long change-log rows are kept (default 10 min). A process that
    /// stalls longer sees [`StoreEvent::Resync`].
    pub change_retention: Duration,
    /// How many events a watcher may fall behind before it sees
    /// `RecvError::Lagged` (default 4096).
    pub event_capacity: usize,
    /// How durable a commit is (default: survives a process crash).
    pub durability: Durability,
    /// SQLite's page cache of this process's connection, in KiB (default
    /// 512). The store's calls read single records by key, and the file's
    /// pages stay in the OS page cache, so a small cache costs little time;
    /// SQLite's own default (2 MB) is most of what a launcher at 10,000
    /// nodes keeps besides its node summaries.
    pub page_cache_kib: u32,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            session_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(1),
            poll_interval: Duration::from_millis(50),
            busy_timeout: Duration::from_secs(10),
            prune_interval: Duration::from_secs(60),
            change_retention: Duration::from_secs(600),
            event_capacity: 4096,
            durability: Durability::default(),
            page_cache_kib: 512,
        }
    }
}

/// What the sessions of one process share: the worker's channel and the
/// event channels.
pub(crate) struct Shared {
    path: PathBuf,
    jobs: Mutex<mpsc::Sender<Job>>,
    events: broadcast::Sender<StoreEvent>,
    seen: watch::Receiver<u64>,
}

impl Shared {
    /// Hands a job to the worker.
    pub(crate) fn submit(&self, job: Job) -> Result<()> {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(job)
            .map_err(|_| Error::WorkerGone)
    }

    /// A receiver that changes whenever this process has published change
    /// rows (lock waiters sleep on it).
    pub(crate) fn seen(&self) -> watch::Receiver<u64> {
        self.seen.clone()
    }
}

/// One session's handle; dropping the last clone closes the session.
pub(crate) struct Inner {
    pub(crate) shared: Arc<Shared>,
    pub(crate) cell: Arc<SessionCell>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.cell.is_closed() {
            return;
        }
        let cell = Arc::clone(&self.cell);
        let job: Job = Box::new(move |w: &mut Worker| {
            if let Err(e) = w.close_session(&cell) {
                tracing::warn!(error = %e, "closing a dropped embedded store session failed");
            }
        });
        // If the worker is gone the process is ending; expiry cleans up.
        let _ = self.shared.submit(job);
    }
}

/// A session on an embedded store: a SQLite database file that several
/// processes on one machine open at once (the daemon, the CLI, clients).
///
/// Cloning shares the session; [`EmbeddedStore::session`] opens another.
/// Dropping the last clone of a session closes it; [`close`] does it at
/// once and reports failure.
///
/// [`close`]: nodepool_core::store::NodeStore::close
#[derive(Clone)]
pub struct EmbeddedStore {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.shared.path)
            .field("session", &self.inner.cell.id())
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store at `path` with default options and
    /// starts a session.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, EmbeddedOptions::default())
    }

    /// Opens (or creates) the store at `path` and starts a session: sets
    /// WAL mode, brings the schema up to date, ends the sessions of dead
    /// processes, and starts this process's worker thread.
    ///
    /// Another process opening the same file at the same moment can hold it
    /// briefly in a way SQLite's busy handler does not wait for (switching to
    /// WAL, migrating): such a busy open is retried until `busy_timeout`.
    pub fn open_with(path: impl AsRef<Path>, options: EmbeddedOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let deadline = std::time::Instant::now() + options.busy_timeout;
        let conn = loop {
            let attempt = schema::connect(&path, &options)
                .and_then(|mut conn| schema::migrate(&mut conn, &path).map(|()| conn));
            match attempt {
                Err(e) if e.is_busy() && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        let (events, _) = broadcast::channel(options.event_capacity.max(1));
        let (seen_tx, seen) = watch::channel(0);
        let me = HostIdentity::current();
        let mut worker = Worker::new(conn, me, options, events.clone(), seen_tx)?;
        let cell = worker.open_session()?;
        let (jobs, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("nodepool-embedded".to_string())
            .spawn(move || worker.run(rx))
            .map_err(Error::Spawn)?;
        tracing::info!(path = %path.display(), session = cell.id(), "opened embedded store");
        let shared = Arc::new(Shared {
            path,
            jobs: Mutex::new(jobs),
            events,
            seen,
        });
        Ok(Self {
            inner: Arc::new(Inner { shared, cell }),
        })
    }

    /// Another session on the same store and worker, as a second ZooKeeper
    /// client would be.
    pub async fn session(&self) -> Result<EmbeddedStore> {
        let cell = self.run_raw(|w| w.open_session()).await??;
        Ok(Self {
            inner: Arc::new(Inner {
                shared: Arc::clone(&self.inner.shared),
                cell,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.shared.path
    }

    /// This session's number in the `sessions` table. It changes if the
    /// session expired (the process stalled longer than the session
    /// timeout) and was renewed.
    pub fn session_id(&self) -> i64 {
        self.inner.cell.id()
    }

    /// Ends this session as if its process had died: its locks and
    /// ephemeral records go, as another process's expiry check would do.
    /// The handle then renews its session on its next write or heartbeat,
    /// as a ZooKeeper client reconnects after an expiry.
    pub async fn expire(&self) -> Result<()> {
        let cell = Arc::clone(&self.inner.cell);
        self.run_raw(move |w| w.expire_session(cell.id())).await?
    }

    /// Runs `f` on the worker and returns its result, after the events of
    /// its writes are published (a cache that drains its watch receiver
    /// after a write returned sees the write).
    pub(crate) async fn run_raw<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Worker) -> T + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.inner.shared.submit(Box::new(move |w: &mut Worker| {
            let value = f(w);
            w.publish();
            let _ = tx.send(value);
        }))?;
        rx.await.map_err(|_| Error::WorkerGone)
    }

    /// Runs `f` on the worker, failing if this session was closed.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Worker) -> nodepool_core::Result<T> + Send + 'static,
    ) -> nodepool_core::Result<T> {
        let cell = Arc::clone(&self.inner.cell);
        self.run_raw(move |w| {
            if cell.is_closed() {
                return Err(closed(&cell));
            }
            f(w)
        })
        .await?
    }

    /// Runs `f` with this session's live id (renewed if it expired), for
    /// writes that belong to the session: ephemeral records and locks.
    pub(crate) async fn run_in_session<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Worker, i64) -> nodepool_core::Result<T> + Send + 'static,
    ) -> nodepool_core::Result<T> {
        let cell = Arc::clone(&self.inner.cell);
        self.run_raw(move |w| {
            let session = w.live_session(&cell)?;
            f(w, session)
        })
        .await?
    }

    /// Subscribes to this process's events.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.inner.shared.events.subscribe()
    }

    /// Closes this session now.
    pub(crate) async fn close_now(&self) -> nodepool_core::Result<()> {
        let cell = Arc::clone(&self.inner.cell);
        Ok(self.run_raw(move |w| w.close_session(&cell)).await??)
    }
}

/// The error for a closed session.
pub(crate) fn closed(cell: &SessionCell) -> nodepool_core::Error {
    nodepool_core::Error::StoreUnavailable(format!(
        "embedded store session {} is closed",
        cell.id()
    ))
}
