//! Locks: exclusion, blocking, fairness, contenders, concurrency.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{eventually, next_event, ok, unique, StoreHarness, PATIENCE};
use crate::model::Node;
use crate::store::{Change, LockHandle, LockOptions, LockTarget, NodeStore, StoreEvent};
use crate::{Error, Result};

/// A fresh node to lock; returns its lock target.
async fn lockable_node(store: &dyn NodeStore) -> LockTarget {
    let node = Node {
        provider: Some(unique("lock-test")),
        ..Node::default()
    };
    LockTarget::Node(ok(store.create_node(&node).await, "create_node"))
}

/// Deletes the node behind a target made by [`lockable_node`].
async fn remove_node(store: &dyn NodeStore, target: &LockTarget) {
    if let LockTarget::Node(id) = target {
        ok(store.delete_node(id).await, "delete_node");
    }
}

fn try_once(identifier: &str) -> LockOptions {
    LockOptions {
        identifier: Some(identifier.to_owned()),
        ..LockOptions::try_once()
    }
}

fn wait(identifier: &str, timeout: Duration) -> LockOptions {
    LockOptions {
        identifier: Some(identifier.to_owned()),
        ..LockOptions::wait(timeout)
    }
}

fn assert_held<T: std::fmt::Debug>(result: Result<T>, what: &str) {
    match result {
        Err(Error::LockHeld { .. }) => {}
        other => panic!("{what}: expected LockHeld, got {other:?}"),
    }
}

/// Waits in a task for `target`; the task returns the lock result.
fn spawn_waiter(
    store: &Arc<dyn NodeStore>,
    target: &LockTarget,
    identifier: &str,
) -> tokio::task::JoinHandle<Result<LockHandle>> {
    let store = Arc::clone(store);
    let target = target.clone();
    let options = wait(identifier, PATIENCE);
    tokio::spawn(async move { store.lock(&target, &options).await })
}

/// Waits until the contenders of `target` are exactly `expected`.
async fn contenders_become(store: &dyn NodeStore, target: &LockTarget, expected: &[&str]) {
    eventually(
        &format!("contenders of {target} becoming {expected:?}"),
        || async { ok(store.lock_contenders(target).await, "lock_contenders") == expected },
    )
    .await;
}

/// A held lock refuses a second non-blocking attempt, even from the same
/// session (locks are not reentrant); other targets are independent.
pub async fn lock_try_once_fails_when_held(store: &dyn NodeStore) {
    let target = lockable_node(store).await;
    let other = lockable_node(store).await;
    let handle = ok(store.lock(&target, &try_once("first")).await, "lock");
    assert_eq!(handle.target, target);
    assert!(
        !handle.contender.is_empty(),
        "the handle names its contender"
    );
    assert_held(
        store.lock(&target, &try_once("again")).await,
        "locking a held lock from the same session",
    );
    let other_handle = ok(store.lock(&other, &try_once("other")).await, "lock other");
    assert_eq!(
        ok(store.lock_contenders(&target).await, "lock_contenders"),
        vec!["first".to_owned()]
    );
    ok(store.unlock(&other_handle).await, "unlock other");
    ok(store.unlock(&handle).await, "unlock");
    let again = ok(store.lock(&target, &try_once("third")).await, "relock");
    ok(store.unlock(&again).await, "unlock");
    remove_node(store, &target).await;
    remove_node(store, &other).await;
}

/// Unlocking a released lock fails with [`Error::LockLost`].
pub async fn unlock_twice_fails_with_lock_lost(store: &dyn NodeStore) {
    let target = lockable_node(store).await;
    let handle = ok(store.lock(&target, &try_once("once")).await, "lock");
    ok(store.unlock(&handle).await, "unlock");
    match store.unlock(&handle).await {
        Err(Error::LockLost { .. }) => {}
        other => panic!("second unlock: expected LockLost, got {other:?}"),
    }
    remove_node(store, &target).await;
}

/// A lock held by one session refuses another until it is released.
pub async fn locks_exclude_each_other(harness: &dyn StoreHarness) {
    let a = harness.session().await;
    let b = harness.session().await;
    let target = lockable_node(a.as_ref()).await;
    let held = ok(a.lock(&target, &try_once("a")).await, "a locks");
    assert_held(b.lock(&target, &try_once("b")).await, "b's try_once");
    assert_held(
        b.lock(&target, &wait("b", Duration::from_millis(50))).await,
        "b's short wait",
    );
    ok(a.unlock(&held).await, "a unlocks");
    let held = ok(b.lock(&target, &try_once("b")).await, "b locks");
    assert_held(a.lock(&target, &try_once("a")).await, "a's try_once");
    ok(b.unlock(&held).await, "b unlocks");
    remove_node(a.as_ref(), &target).await;
    ok(a.close().await, "close a");
    ok(b.close().await, "close b");
}

/// A blocking attempt on a held lock gives up with [`Error::LockHeld`]
/// after its timeout and leaves the queue.
pub async fn blocking_lock_waits_then_times_out(harness: &dyn StoreHarness) {
    let a = harness.session().await;
    let b = harness.session().await;
    let target = lockable_node(a.as_ref()).await;
    let held = ok(a.lock(&target, &try_once("holder")).await, "a locks");
    let timeout = Duration::from_millis(300);
    let start = Instant::now();
    assert_held(b.lock(&target, &wait("waiter", timeout)).await, "b's wait");
    let waited = start.elapsed();
    assert!(
        waited >= timeout - Duration::from_millis(20),
        "b gave up after {waited:?}, before its {timeout:?} timeout"
    );
    contenders_become(a.as_ref(), &target, &["holder"]).await;
    ok(a.unlock(&held).await, "a unlocks");
    remove_node(a.as_ref(), &target).await;
    ok(a.close().await, "close a");
    ok(b.close().await, "close b");
}

/// A blocking attempt gets the lock as soon as the holder releases it.
pub async fn blocking_lock_acquired_after_release(harness: &dyn StoreHarness) {
    let a = harness.session().await;
    let b = harness.session().await;
    let target = lockable_node(a.as_ref()).await;
    let held = ok(a.lock(&target, &try_once("holder")).await, "a locks");
    let waiter = spawn_waiter(&b, &target, "waiter");
    contenders_become(a.as_ref(), &target, &["holder", "waiter"]).await;
    assert!(!waiter.is_finished(), "b waits while a holds the lock");
    ok(a.unlock(&held).await, "a unlocks");
    let got = ok(
        ok(
            tokio::time::timeout(PATIENCE, waiter).await,
            "waiting for b",
        ),
        "b's task",
    );
    let got = ok(got, "b's lock");
    contenders_become(a.as_ref(), &target, &["waiter"]).await;
    ok(b.unlock(&got).await, "b unlocks");
    remove_node(a.as_ref(), &target).await;
    ok(a.close().await, "close a");
    ok(b.close().await, "close b");
}

/// Contenders are listed holder first, then waiters in arrival order, and
/// the lock passes to them in that order.
pub async fn lock_contenders_list_holder_first(harness: &dyn StoreHarness) {
    let a = harness.session().await;
    let b = harness.session().await;
    let c = harness.session().await;
    let target = lockable_node(a.as_ref()).await;
    let first = ok(a.lock(&target, &try_once("first")).await, "a locks");
    let second = spawn_waiter(&b, &target, "second");
    contenders_become(a.as_ref(), &target, &["first", "second"]).await;
    let third = spawn_waiter(&c, &target, "third");
    contenders_become(a.as_ref(), &target, &["first", "second", "third"]).await;

    ok(a.unlock(&first).await, "a unlocks");
    let second = ok(ok(second.await, "b's task"), "b's lock");
    contenders_become(a.as_ref(), &target, &["second", "third"]).await;
    assert!(!third.is_finished(), "c still waits behind b");
    ok(b.unlock(&second).await, "b unlocks");
    let third = ok(ok(third.await, "c's task"), "c's lock");
    contenders_become(a.as_ref(), &target, &["third"]).await;
    ok(c.unlock(&third).await, "c unlocks");
    contenders_become(a.as_ref(), &target, &[]).await;

    remove_node(a.as_ref(), &target).await;
    for session in [a, b, c] {
        ok(session.close().await, "close");
    }
}

/// Deleting a node deletes its lock: another session can take it at once,
/// or is told the node is gone ([`Error::NodeNotFound`]: the ZooKeeper
/// store does not make the znode of a deleted node again to lock it).
pub async fn deleting_a_node_frees_its_lock(harness: &dyn StoreHarness) {
    let a = harness.session().await;
    let b = harness.session().await;
    let target = lockable_node(a.as_ref()).await;
    let _held = ok(a.lock(&target, &try_once("a")).await, "a locks");
    remove_node(a.as_ref(), &target).await;
    match b.lock(&target, &try_once("b")).await {
        Ok(taken) => ok(b.unlock(&taken).await, "b unlocks"),
        Err(Error::NodeNotFound { .. }) => {}
        Err(e) => panic!("b locks the deleted node failed: {e}"),
    }
    // Taking the lock may have recreated the node's path: clean it up.
    remove_node(b.as_ref(), &target).await;
    ok(a.close().await, "close a");
    ok(b.close().await, "close b");
}

/// Taking and releasing a lock is announced on the watch.
pub async fn watch_fires_on_lock_changes(store: &dyn NodeStore) {
    let target = lockable_node(store).await;
    let mut events = store.watch();
    let held = ok(store.lock(&target, &try_once("w")).await, "lock");
    let is = |change: Change| {
        let target = target.clone();
        move |e: &StoreEvent| {
            *e == StoreEvent::Lock {
                target: target.clone(),
                change,
            }
        }
    };
    next_event(&mut events, "lock taken", is(Change::Put)).await;
    ok(store.unlock(&held).await, "unlock");
    next_event(&mut events, "lock released", is(Change::Deleted)).await;
    remove_node(store, &target).await;
}

/// Tasks on two sessions take turns under one lock: never two inside, and
/// no increment is lost.
pub async fn concurrent_lockers_never_overlap(harness: &dyn StoreHarness) {
    const TASKS: usize = 6;
    const ROUNDS: usize = 20;
    let sessions = [harness.session().await, harness.session().await];
    let target = lockable_node(sessions[0].as_ref()).await;
    let inside = Arc::new(AtomicBool::new(false));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let counter = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let store = Arc::clone(&sessions[task % sessions.len()]);
        let target = target.clone();
        let (inside, overlaps, counter) = (inside.clone(), overlaps.clone(), counter.clone());
        tasks.spawn(async move {
            let options = wait(&format!("task-{task}"), PATIENCE);
            for _ in 0..ROUNDS {
                let handle = ok(store.lock(&target, &options).await, "lock");
                if inside.swap(true, Ordering::SeqCst) {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                let seen = counter.load(Ordering::SeqCst);
                tokio::task::yield_now().await;
                counter.store(seen + 1, Ordering::SeqCst);
                inside.store(false, Ordering::SeqCst);
                ok(store.unlock(&handle).await, "unlock");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        ok(done, "a locker task");
    }
    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "two holders at once");
    assert_eq!(
        counter.load(Ordering::SeqCst),
        TASKS * ROUNDS,
        "lost increments"
    );
    remove_node(sessions[0].as_ref(), &target).await;
    for session in &sessions {
        ok(session.close().await, "close");
    }
}
