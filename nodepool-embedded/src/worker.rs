//! The worker thread: the one connection of a process's store, running the
//! jobs of its sessions in order, and between jobs tailing the `changes`
//! log, heartbeating, expiring dead sessions and pruning the log.
//!
//! SQLite calls block, so they run here and never on the async runtime; a
//! job is a closure sent over a channel, its result comes back on a oneshot.
//! One thread and one connection turned out fast enough (see the crate
//! docs for figures) and keeps writes of one process in order.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::time::Instant;

use nodepool_core::store::StoreEvent;
use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::{broadcast, watch};

use crate::changes;
use crate::error::SqlContext;
use crate::session::{self, now_ms, HostIdentity};
use crate::EmbeddedOptions;

/// A unit of work for the worker.
pub(crate) type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// How many change rows one tail query reads.
const TAIL_BATCH: i64 = 1000;

/// One session of this process, shared by its handles and the worker.
#[derive(Debug)]
pub(crate) struct SessionCell {
    /// The current session row; replaced when the session expired and was
    /// renewed.
    id: AtomicI64,
    /// Set by `close`: the handle is done.
    closed: AtomicBool,
}

impl SessionCell {
    pub(crate) fn new(id: i64) -> Self {
        Self {
            id: AtomicI64::new(id),
            closed: AtomicBool::new(false),
        }
    }

    /// The current session row id.
    pub(crate) fn id(&self) -> i64 {
        self.id.load(Ordering::SeqCst)
    }

    /// Whether the handle was closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Marks the handle closed; returns whether it was open.
    pub(crate) fn mark_closed(&self) -> bool {
        !self.closed.swap(true, Ordering::SeqCst)
    }
}

/// The worker's state; jobs get `&mut Worker`.
pub(crate) struct Worker {
    conn: Connection,
    me: HostIdentity,
    options: EmbeddedOptions,
    events: broadcast::Sender<StoreEvent>,
    seen: watch::Sender<u64>,
    sessions: Vec<Weak<SessionCell>>,
    last_seq: i64,
    data_version: i64,
    dirty: bool,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("last_seq", &self.last_seq)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker over `conn`, announcing changes after the log's current end.
    pub(crate) fn new(
        conn: Connection,
        me: HostIdentity,
        options: EmbeddedOptions,
        events: broadcast::Sender<StoreEvent>,
        seen: watch::Sender<u64>,
    ) -> crate::Result<Self> {
        let last_seq = changes::last_seq(&conn)?;
        let data_version = data_version(&conn)?;
        Ok(Self {
            conn,
            me,
            options,
            events,
            seen,
            sessions: Vec::new(),
            last_seq,
            data_version,
            dirty: false,
        })
    }

    /// The connection, for reads.
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Runs `f` in an immediate transaction, commits if it returns `Ok`,
    /// rolls back otherwise; the change rows it wrote are published right
    /// after the job.
    pub(crate) fn write<T>(
        &mut self,
        f: impl FnOnce(&Transaction<'_>) -> nodepool_core::Result<T>,
    ) -> nodepool_core::Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("begin write")?;
        let value = f(&tx)?;
        tx.commit().ctx("commit write")?;
        self.dirty = true;
        Ok(value)
    }

    /// Creates a session row for a new handle of this process and
    /// heartbeats it from now on.
    pub(crate) fn open_session(&mut self) -> crate::Result<Arc<SessionCell>> {
        let id = session::create(&self.conn, &self.me)?;
        let cell = Arc::new(SessionCell::new(id));
        self.sessions.push(Arc::downgrade(&cell));
        tracing::debug!(session = id, "opened embedded store session");
        Ok(cell)
    }

    /// The session id `cell` writes with: fails if the handle was closed;
    /// renews the session if it expired.
    pub(crate) fn live_session(&mut self, cell: &SessionCell) -> nodepool_core::Result<i64> {
        if cell.is_closed() {
            return Err(nodepool_core::Error::StoreUnavailable(format!(
                "embedded store session {} is closed",
                cell.id()
            )));
        }
        let id = cell.id();
        if session::exists(&self.conn, id)? {
            return Ok(id);
        }
        Ok(self.renew(cell)?)
    }

    /// Replaces the expired session of `cell` with a new one. Its locks and
    /// ephemeral records are gone; watchers are told to re-read.
    fn renew(&mut self, cell: &SessionCell) -> crate::Result<i64> {
        let old = cell.id();
        let new = session::create(&self.conn, &self.me)?;
        cell.id.store(new, Ordering::SeqCst);
        tracing::warn!(
            old_session = old,
            new_session = new,
            "embedded store session expired (this process stalled longer than the session \
             timeout?): its locks and ephemeral records are gone; continuing with a new session"
        );
        let _ = self.events.send(StoreEvent::Resync);
        self.seen.send_modify(|n| *n += 1);
        Ok(new)
    }

    /// Ends the session of `cell` cleanly (idempotent).
    pub(crate) fn close_session(&mut self, cell: &SessionCell) -> crate::Result<()> {
        cell.mark_closed();
        let id = cell.id();
        self.sessions
            .retain(|weak| weak.upgrade().is_some_and(|c| c.id() != id));
        session::close(&mut self.conn, id)?;
        self.dirty = true;
        tracing::debug!(session = id, "closed embedded store session");
        Ok(())
    }

    /// Ends session `id` as if it had died (for tests and `expire`).
    pub(crate) fn expire_session(&mut self, id: i64) -> crate::Result<()> {
        session::close(&mut self.conn, id)?;
        self.dirty = true;
        tracing::info!(session = id, "expired embedded store session on request");
        Ok(())
    }

    /// Publishes the change rows of the writes made so far, if any. Jobs
    /// call it before answering, so a caller that sees its write return
    /// finds the write's events already on the watch channel.
    pub(crate) fn publish(&mut self) {
        if self.dirty {
            self.tail();
        }
    }

    /// Runs jobs until every sender is gone, then closes the sessions left.
    pub(crate) fn run(mut self, jobs: Receiver<Job>) {
        let now = Instant::now();
        let mut next_poll = now + self.options.poll_interval;
        let mut next_heartbeat = now + self.options.heartbeat_interval;
        let mut next_prune = now + self.options.prune_interval;
        self.expire_dead();
        self.tail();
        loop {
            let next = next_poll.min(next_heartbeat).min(next_prune);
            let wait = next.saturating_duration_since(Instant::now());
            match jobs.recv_timeout(wait) {
                Ok(job) => {
                    if catch_unwind(AssertUnwindSafe(|| job(&mut self))).is_err() {
                        tracing::error!("an embedded store job panicked; its caller gets an error");
                    }
                    self.publish();
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = Instant::now();
            if now >= next_poll {
                next_poll = now + self.options.poll_interval;
                self.poll();
            }
            if now >= next_heartbeat {
                next_heartbeat = now + self.options.heartbeat_interval;
                self.heartbeat();
                self.expire_dead();
                if self.dirty {
                    self.tail();
                }
            }
            if now >= next_prune {
                next_prune = now + self.options.prune_interval;
                self.prune();
            }
        }
        self.shut_down();
    }

    /// Tails the log if another connection committed since the last look.
    fn poll(&mut self) {
        match data_version(&self.conn) {
            Ok(version) if version != self.data_version => {
                self.data_version = version;
                self.tail();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "embedded store: cannot poll for changes"),
        }
    }

    /// Publishes the change rows after the last one seen.
    fn tail(&mut self) {
        self.dirty = false;
        let mut published = false;
        loop {
            let rows = match changes::read_after(&self.conn, self.last_seq, TAIL_BATCH) {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "embedded store: cannot read the change log");
                    break;
                }
            };
            if let Some(first) = rows.first() {
                if first.seq > self.last_seq + 1 && self.missed_pruned_rows() {
                    tracing::warn!(
                        after = self.last_seq,
                        next = first.seq,
                        "embedded store: change log pruned past this process; resync"
                    );
                    let _ = self.events.send(StoreEvent::Resync);
                }
            }
            for row in &rows {
                self.last_seq = row.seq;
                if let Some(event) = row.to_event() {
                    // No receiver is fine: nobody watches.
                    let _ = self.events.send(event);
                }
                published = true;
            }
            if rows.len() < usize::try_from(TAIL_BATCH).unwrap_or(usize::MAX) {
                break;
            }
        }
        if published {
            self.seen.send_modify(|n| *n += 1);
        }
    }

    fn missed_pruned_rows(&self) -> bool {
        changes::pruned_through(&self.conn).is_ok_and(|through| through > self.last_seq)
    }

    /// Refreshes this process's sessions; renews those found expired.
    fn heartbeat(&mut self) {
        self.sessions.retain(|weak| weak.strong_count() > 0);
        let cells: Vec<Arc<SessionCell>> = self
            .sessions
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|cell| !cell.is_closed())
            .collect();
        let ids: Vec<i64> = cells.iter().map(|cell| cell.id()).collect();
        let lost = match session::heartbeat(&self.conn, &ids) {
            Ok(lost) => lost,
            Err(e) => {
                tracing::warn!(error = %e, "embedded store: heartbeat failed");
                return;
            }
        };
        for cell in cells.iter().filter(|cell| lost.contains(&cell.id())) {
            if let Err(e) = self.renew(cell) {
                tracing::warn!(error = %e, "embedded store: cannot renew an expired session");
            }
        }
    }

    /// Ends the sessions of dead processes.
    fn expire_dead(&mut self) {
        let timeout = i64::try_from(self.options.session_timeout.as_millis()).unwrap_or(i64::MAX);
        match session::expire_dead(&mut self.conn, &self.me, timeout) {
            Ok(expired) if !expired.is_empty() => self.dirty = true,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "embedded store: session expiry check failed"),
        }
    }

    /// Drops change rows older than the retention.
    fn prune(&mut self) {
        let retention = i64::try_from(self.options.change_retention.as_millis()).unwrap_or(0);
        match changes::prune(&mut self.conn, now_ms() - retention) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(rows = n, "pruned the embedded store change log"),
            Err(e) => tracing::warn!(error = %e, "embedded store: pruning the change log failed"),
        }
    }

    /// Closes the sessions whose handles were dropped without `close`.
    fn shut_down(&mut self) {
        let cells: Vec<Arc<SessionCell>> = self.sessions.iter().filter_map(Weak::upgrade).collect();
        for cell in cells {
            if let Err(e) = self.close_session(&cell) {
                tracing::warn!(error = %e, "embedded store: closing a session at shutdown failed");
            }
        }
        if let Err(e) = self.conn.execute_batch("PRAGMA optimize") {
            tracing::debug!(error = %e, "embedded store: PRAGMA optimize failed");
        }
    }
}

fn data_version(conn: &Connection) -> crate::Result<i64> {
    conn.query_row("PRAGMA data_version", [], |row| row.get(0))
        .ctx("read data_version")
}
