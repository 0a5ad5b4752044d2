//! Fair lock queues: the front contender holds the lock, the others wait
//! in arrival order and are woken one at a time.

use std::collections::VecDeque;

use tokio::sync::oneshot;

use super::state::{SessionId, State};
use crate::store::{Change, LockTarget, StoreEvent};

/// One holder or waiter of a lock.
#[derive(Debug)]
pub(super) struct Contender {
    /// Unique name, as a kazoo contender znode's (`...__lock__0000000001`).
    pub(super) name: String,
    pub(super) session: SessionId,
    pub(super) identifier: String,
    /// Wakes a waiter when it becomes the holder; `None` for the holder.
    /// Dropping it without sending tells the waiter the lock went away.
    pub(super) wake: Option<oneshot::Sender<()>>,
}

/// The contenders of one lock, holder first.
#[derive(Debug, Default)]
pub(super) struct LockQueue {
    pub(super) contenders: VecDeque<Contender>,
}

/// What [`State::enqueue`] did.
#[derive(Debug)]
pub(super) enum Enqueued {
    /// The lock was free: the new contender holds it.
    Holder(String),
    /// The lock is taken: the new contender waits for the receiver.
    Waiting(String, oneshot::Receiver<()>),
    /// The lock is taken and the caller would not wait.
    Refused,
}

impl State {
    /// Adds a contender for `target`; waits in line only when `blocking`.
    pub(super) fn enqueue(
        &mut self,
        session: SessionId,
        target: &LockTarget,
        identifier: String,
        blocking: bool,
    ) -> Enqueued {
        let seq = self.next_contender_seq;
        let name = format!("session-{session}__lock__{seq:010}");
        let queue = self.locks.entry(target.clone()).or_default();
        if queue.contenders.is_empty() {
            self.next_contender_seq += 1;
            queue.contenders.push_back(Contender {
                name: name.clone(),
                session,
                identifier,
                wake: None,
            });
            self.emit(StoreEvent::Lock {
                target: target.clone(),
                change: Change::Put,
            });
            return Enqueued::Holder(name);
        }
        if !blocking {
            return Enqueued::Refused;
        }
        self.next_contender_seq += 1;
        let (tx, rx) = oneshot::channel();
        queue.contenders.push_back(Contender {
            name: name.clone(),
            session,
            identifier,
            wake: Some(tx),
        });
        Enqueued::Waiting(name, rx)
    }

    /// Whether `name` currently holds `target`.
    pub(super) fn is_holder(&self, target: &LockTarget, name: &str) -> bool {
        self.locks
            .get(target)
            .and_then(|q| q.contenders.front())
            .is_some_and(|c| c.name == name)
    }

    /// Removes a contender (holder or waiter); if it held the lock, the next
    /// waiter gets it. Returns whether the contender was there.
    pub(super) fn remove_contender(&mut self, target: &LockTarget, name: &str) -> bool {
        let Some(queue) = self.locks.get_mut(target) else {
            return false;
        };
        let Some(index) = queue.contenders.iter().position(|c| c.name == name) else {
            return false;
        };
        queue.contenders.remove(index);
        if index == 0 {
            self.handover(target);
        }
        true
    }

    /// Announces that the holder of `target` left and wakes the next waiter.
    fn handover(&mut self, target: &LockTarget) {
        self.emit(StoreEvent::Lock {
            target: target.clone(),
            change: Change::Deleted,
        });
        let Some(queue) = self.locks.get_mut(target) else {
            return;
        };
        match queue.contenders.front_mut() {
            None => {
                self.locks.remove(target);
            }
            Some(next) => {
                if let Some(wake) = next.wake.take() {
                    // A waiter whose future was dropped removes itself
                    // (holder or not) when its guard runs; a failed send
                    // needs nothing more.
                    let _ = wake.send(());
                }
                self.emit(StoreEvent::Lock {
                    target: target.clone(),
                    change: Change::Put,
                });
            }
        }
    }

    /// The identifiers of the holder and waiters of `target`, holder first.
    pub(super) fn contenders(&self, target: &LockTarget) -> Vec<String> {
        self.locks
            .get(target)
            .map(|q| q.contenders.iter().map(|c| c.identifier.clone()).collect())
            .unwrap_or_default()
    }

    /// Deletes a lock with its record: the holder's handle is lost and the
    /// waiters fail (their wake senders are dropped).
    pub(super) fn drop_lock(&mut self, target: &LockTarget) {
        if let Some(queue) = self.locks.remove(target) {
            if !queue.contenders.is_empty() {
                self.emit(StoreEvent::Lock {
                    target: target.clone(),
                    change: Change::Deleted,
                });
            }
        }
    }

    /// Removes every contender of `session`, handing held locks over.
    pub(super) fn release_session_locks(&mut self, session: SessionId) {
        let mine: Vec<(LockTarget, String)> = self
            .locks
            .iter()
            .flat_map(|(target, queue)| {
                queue
                    .contenders
                    .iter()
                    .filter(|c| c.session == session)
                    .map(|c| (target.clone(), c.name.clone()))
            })
            .collect();
        for (target, name) in mine {
            self.remove_contender(&target, &name);
        }
    }
}
