//! What runs, and what each task waits on: the operator's view that
//! upstream's SIGUSR2 stack dump gives.
//!
//! Long-running work registers in a [`TaskRegistry`] under a name (`pool
//! worker fra1/main`, `launch handler request 200-0000000123`, `deleter`)
//! and says, as it goes, what it is waiting on (`lock
//! /nodepool/requests-lock/200-0000000123`, `provider create_instance fra1
//! node 0000000042`). The entry is removed when the task's future ends or
//! is dropped. [`TaskRegistry::dump`] prints one line per task with its age
//! and its current wait.
//!
//! A future joins the registry with [`TaskExt::in_task`] (like tracing's
//! `Instrument`); code anywhere below it reports its waits with the free
//! functions [`waiting_on`] and [`during`], which find the current task
//! through a task-local and do nothing outside one, so no handle is passed
//! down the call chain. Nested `in_task` futures (each launch of a
//! request, run side by side in one tokio task) are entries of their own.
//!
//! Cost: one mutex'd map insert and remove per task, one lock and one
//! string per reported wait.
//!
//! ```
//! use nodepool_core::tasks::{waiting_on, TaskExt, TaskRegistry};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let tasks = TaskRegistry::new();
//! let seen = async {
//!     waiting_on("lock /nodepool/requests-lock/200-0000000001");
//!     tasks.dump()
//! }
//! .in_task(&tasks, "launch handler request 200-0000000001")
//! .await;
//! assert!(seen.contains("launch handler request 200-0000000001, 0.0s old: lock /nodepool/requests-lock/200-0000000001"));
//! assert!(tasks.snapshot().is_empty(), "the entry leaves with the future");
//! # }
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What a task waits on before it reports anything.
pub const RUNNING: &str = "running";

#[derive(Debug)]
struct Entry {
    name: String,
    started: Instant,
    waiting: Cow<'static, str>,
    since: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    next: AtomicU64,
    tasks: Mutex<BTreeMap<u64, Entry>>,
}

impl Inner {
    fn tasks(&self) -> MutexGuard<'_, BTreeMap<u64, Entry>> {
        // A panic while holding the lock leaves a map that is still whole.
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The tasks of one engine (or of several: clones share the registry).
#[derive(Debug, Clone, Default)]
pub struct TaskRegistry {
    inner: Arc<Inner>,
}

/// Two settings holding the same registry are equal.
impl PartialEq for TaskRegistry {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl TaskRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a task named `name`; it is removed when the guard drops.
    /// Prefer [`TaskExt::in_task`], which also lets [`waiting_on`] find it.
    pub fn register(&self, name: impl Into<String>) -> TaskGuard {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        self.inner.tasks().insert(
            id,
            Entry {
                name: name.into(),
                started: now,
                waiting: Cow::Borrowed(RUNNING),
                since: now,
            },
        );
        TaskGuard {
            id,
            inner: Arc::clone(&self.inner),
        }
    }

    /// The tasks now, oldest first.
    pub fn snapshot(&self) -> Vec<TaskInfo> {
        let now = Instant::now();
        self.inner
            .tasks()
            .values()
            .map(|e| TaskInfo {
                name: e.name.clone(),
                age: now.saturating_duration_since(e.started),
                waiting: e.waiting.to_string(),
                waiting_for: now.saturating_duration_since(e.since),
            })
            .collect()
    }

    /// One line per task (see [`TaskInfo`]'s `Display`), after a header
    /// line counting them.
    pub fn dump(&self) -> String {
        let tasks = self.snapshot();
        let mut out = format!("{} tasks running", tasks.len());
        for task in &tasks {
            out.push_str("\n  ");
            out.push_str(&task.to_string());
        }
        out
    }
}

/// A registered task; dropping it removes the entry.
#[derive(Debug)]
pub struct TaskGuard {
    id: u64,
    inner: Arc<Inner>,
}

impl TaskGuard {
    /// Say what the task waits on now.
    pub fn waiting_on(&self, what: impl Into<Cow<'static, str>>) {
        if let Some(entry) = self.inner.tasks().get_mut(&self.id) {
            entry.waiting = what.into();
            entry.since = Instant::now();
        }
    }

    /// Rename the task (a handler learns its node ids after it starts).
    pub fn rename(&self, name: impl Into<String>) {
        if let Some(entry) = self.inner.tasks().get_mut(&self.id) {
            entry.name = name.into();
        }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.inner.tasks().remove(&self.id);
    }
}

/// One task as [`TaskRegistry::snapshot`] saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    /// Its name.
    pub name: String,
    /// How long it has run.
    pub age: Duration,
    /// What it waits on ([`RUNNING`] until it says).
    pub waiting: String,
    /// Since when (how long ago it said so).
    pub waiting_for: Duration,
}

impl fmt::Display for TaskInfo {
    /// `pool worker fra1/main, 12.3s old: waiting for a store event (1.2s)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, {:.1}s old: {} ({:.1}s)",
            self.name,
            self.age.as_secs_f64(),
            self.waiting,
            self.waiting_for.as_secs_f64()
        )
    }
}

tokio::task_local! {
    static CURRENT: TaskGuard;
}

/// Say what the current task (the innermost [`TaskExt::in_task`] future
/// being polled) waits on; nothing outside a task.
pub fn waiting_on(what: impl Into<Cow<'static, str>>) {
    let what = what.into();
    let _ = CURRENT.try_with(|task| task.waiting_on(what));
}

/// Rename the current task; nothing outside a task.
pub fn rename(name: impl Into<String>) {
    let name = name.into();
    let _ = CURRENT.try_with(|task| task.rename(name));
}

/// Await `future` with the current task waiting on `what`, then back to
/// [`RUNNING`].
pub async fn during<F: Future>(what: impl Into<Cow<'static, str>>, future: F) -> F::Output {
    waiting_on(what);
    let out = future.await;
    waiting_on(RUNNING);
    out
}

/// Run futures as registered tasks.
pub trait TaskExt: Future + Sized {
    /// This future as task `name` of `registry`: registered now, removed
    /// when it ends or is dropped; [`waiting_on`] inside it reports here.
    fn in_task(
        self,
        registry: &TaskRegistry,
        name: impl Into<String>,
    ) -> tokio::task::futures::TaskLocalFuture<TaskGuard, Self> {
        CURRENT.scope(registry.register(name), self)
    }
}

impl<F: Future> TaskExt for F {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_is_listed_with_its_wait_until_it_ends() {
        let tasks = TaskRegistry::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(
            async move {
                waiting_on("lock /nodepool/requests-lock/200-0000000001");
                let _ = rx.await;
            }
            .in_task(&tasks, "launch handler request 200-0000000001"),
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while tasks.snapshot().first().map(|t| t.waiting.as_str()) == Some(RUNNING)
            || tasks.snapshot().is_empty()
        {
            assert!(Instant::now() < deadline, "the task never reported");
            tokio::task::yield_now().await;
        }
        let dump = tasks.dump();
        assert!(dump.starts_with("1 tasks running"), "{dump}");
        assert!(
            dump.contains("launch handler request 200-0000000001, "),
            "{dump}"
        );
        assert!(
            dump.contains(": lock /nodepool/requests-lock/200-0000000001 ("),
            "{dump}"
        );
        let _ = tx.send(());
        running.await.expect("the task ends");
        assert!(tasks.snapshot().is_empty(), "{}", tasks.dump());
    }

    #[tokio::test]
    async fn nested_tasks_report_to_their_own_entries() {
        let tasks = TaskRegistry::new();
        let inner = |n: u32| {
            async move {
                waiting_on(format!("provider create_instance node {n}"));
                tokio::task::yield_now().await;
            }
            .in_task(&tasks, format!("launch node {n}"))
        };
        let outer = async {
            waiting_on("launching 2 nodes");
            let seen = futures::future::join(
                async {
                    inner(1).await;
                },
                async {
                    waiting_on("still the handler");
                    let snapshot = tasks.snapshot();
                    inner(2).await;
                    snapshot
                },
            )
            .await;
            seen.1
        }
        .in_task(&tasks, "handler");
        let seen = outer.await;
        let waits: Vec<(&str, &str)> = seen
            .iter()
            .map(|t| (t.name.as_str(), t.waiting.as_str()))
            .collect();
        assert!(
            waits.contains(&("handler", "still the handler")),
            "{waits:?}"
        );
        assert!(
            waits.contains(&("launch node 1", "provider create_instance node 1")),
            "{waits:?}"
        );
        assert!(tasks.snapshot().is_empty());
    }

    #[test]
    fn outside_a_task_waits_are_ignored() {
        waiting_on("nothing");
        rename("nobody");
        let tasks = TaskRegistry::new();
        let guard = tasks.register("direct");
        guard.waiting_on("a guard held by hand");
        guard.rename("direct, renamed");
        let seen = tasks.snapshot();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].name, "direct, renamed");
        assert_eq!(seen[0].waiting, "a guard held by hand");
        drop(guard);
        assert!(tasks.snapshot().is_empty());
        assert_eq!(tasks.clone(), tasks, "clones share the registry");
        assert_ne!(TaskRegistry::new(), tasks);
    }
}
