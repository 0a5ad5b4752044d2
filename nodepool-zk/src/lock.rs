//! Locks as kazoo's `Lock` recipe takes them, so that our processes,
//! upstream's Python tools and Zuul exclude each other.
//!
//! A contender is an EPHEMERAL_SEQUENTIAL child of the lock path named
//! `<uuid4 hex>__lock__<sequence>`, holding the identifier as its data. The
//! lowest sequence holds the lock; every other contender watches the one
//! just before it and looks again when it goes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use zookeeper_client::{Acls, CreateMode, Error as Zk};

use crate::tracked::ZkClient;

use crate::error::{is_connection_broken, is_session_ended, store_error};
use crate::ops::{self, Removed};
use crate::paths::{contender_sequence, LOCK_NAME};
use nodepool_core::store::{LockHandle, LockOptions, LockTarget};
use nodepool_core::{Error, Result};

/// The contenders this store holds, by path, each marked when a recursive
/// delete of its record (which holders do while locked: upstream's
/// `deleteNode`) took it away already, so that releasing it then needs no
/// delete that would fail.
#[derive(Debug, Default)]
pub(crate) struct Held {
    /// Contender path → deleted with its record.
    contenders: Mutex<HashMap<String, bool>>,
}

impl Held {
    fn book(&self) -> std::sync::MutexGuard<'_, HashMap<String, bool>> {
        self.contenders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks those of `deleted` (paths a recursive delete removed) that are
    /// our contenders as gone.
    pub(crate) fn forget_deleted(&self, deleted: &[String]) {
        let mut book = self.book();
        for path in deleted {
            if let Some(gone) = book.get_mut(path) {
                *gone = true;
            }
        }
    }
}

/// Takes the lock on `target` for the session of `client`.
///
/// Writes only what kazoo's recipe writes: the lock path when it is missing
/// (found by a read first, as kazoo's `ensure_path` does, not by a create
/// that fails), and our contender. A non-blocking attempt first lists the
/// contenders and fails without writing if there are any: ours would queue
/// behind them and be withdrawn at once (kazoo writes and deletes it).
///
/// A node's lock lives in the node's znode, which is never made here:
/// locking a node that is gone fails with [`Error::NodeNotFound`] and
/// writes nothing (kazoo's `makepath` would leave an empty node znode).
pub(crate) async fn acquire(
    client: &ZkClient,
    held: &Held,
    target: &LockTarget,
    options: &LockOptions,
) -> Result<LockHandle> {
    let lock_path = target.path();
    let deadline = options.timeout.map(|t| Instant::now() + t);
    if !options.blocking {
        match ops::children_if_exists(client, &lock_path).await? {
            None => ensure_lock_path(client, target, &lock_path).await?,
            Some(children) if children.iter().any(|c| contender_sequence(c).is_some()) => {
                return Err(Error::LockHeld {
                    target: target.to_string(),
                });
            }
            Some(_) => {}
        }
    }
    // A blocking attempt creates its contender at once: the lock path
    // nearly always exists (the requestor locks what a launcher locked),
    // and `create_contender` makes it when it does not.
    let prefix = format!("{}{LOCK_NAME}", uuid::Uuid::new_v4().simple());
    let data = options.identifier.clone().unwrap_or_default();
    let node = create_contender(client, target, &lock_path, &prefix, data.as_bytes()).await?;
    let contender_path = format!("{lock_path}/{node}");
    match wait_for_turn(
        client,
        target,
        &lock_path,
        &node,
        options.blocking,
        deadline,
    )
    .await
    {
        Ok(()) => {
            held.book().insert(contender_path, false);
            Ok(LockHandle {
                target: target.clone(),
                contender: node,
            })
        }
        Err(e) => {
            // Leave the queue, as kazoo's clean-up does; a delete that the
            // connection breaks under is made again (a contender left
            // behind would hold the lock for as long as our session lives).
            if let Err(cleanup) = ops::remove(client, &contender_path).await {
                if !is_session_ended(&cleanup) {
                    tracing::warn!(lock = %lock_path, %node, error = %cleanup, "cannot withdraw a lock contender");
                }
            }
            Err(e)
        }
    }
}

/// Makes the lock path of `target` if it is missing. For a node, only the
/// last segment (`lock`) is made, under the node's existing znode.
async fn ensure_lock_path(client: &ZkClient, target: &LockTarget, lock_path: &str) -> Result<()> {
    let LockTarget::Node(id) = target else {
        return ops::ensure_path(client, lock_path).await;
    };
    let made = ops::retry_broken("create", lock_path, || {
        client.create(lock_path, b"", &ops::DIRECTORY)
    })
    .await;
    match made {
        Ok(_) | Err(Zk::NodeExists) => Ok(()),
        Err(Zk::NoNode) => Err(Error::NodeNotFound { id: id.clone() }),
        Err(e) => Err(store_error("create", lock_path, e)),
    }
}

/// Creates our contender; after the connection broke under the create,
/// finds it by its unique prefix before trying again (Curator's trick,
/// which kazoo uses too).
async fn create_contender(
    client: &ZkClient,
    target: &LockTarget,
    lock_path: &str,
    prefix: &str,
    data: &[u8],
) -> Result<String> {
    let create_path = format!("{lock_path}/{prefix}");
    let options = CreateMode::EphemeralSequential.with_acls(Acls::anyone_all());
    let mut broken = 0;
    let mut made_path = false;
    loop {
        match client.create(&create_path, data, &options).await {
            Ok((_, sequence)) => return Ok(format!("{prefix}{sequence}")),
            Err(Zk::NoNode) if !made_path => {
                made_path = true;
                ensure_lock_path(client, target, lock_path).await?;
            }
            Err(Zk::NoNode) => {
                // The lock path went again (its record was deleted).
                return Err(match target {
                    LockTarget::Node(id) => Error::NodeNotFound { id: id.clone() },
                    _ => Error::LockLost {
                        target: target.to_string(),
                    },
                });
            }
            Err(e) if is_connection_broken(&e) && broken < 5 => {
                broken += 1;
                tracing::debug!(lock = %lock_path, error = %e, "connection broke under a contender create; looking for it");
                tokio::time::sleep(Duration::from_millis(200)).await;
                let children = ops::children(client, lock_path).await?;
                if let Some(node) = children.into_iter().find(|c| c.starts_with(prefix)) {
                    return Ok(node);
                }
            }
            Err(e) => return Err(store_error("create", &create_path, e)),
        }
    }
}

/// The contender just before `node` in the queue, if any (kazoo's
/// `_get_predecessor`: sequences compare as strings).
fn predecessor<'a>(children: &'a [String], node: &str) -> Option<&'a str> {
    let mine = contender_sequence(node)?;
    children
        .iter()
        .filter_map(|c| contender_sequence(c).map(|seq| (seq, c.as_str())))
        .filter(|(seq, _)| *seq < mine)
        .max_by(|a, b| a.0.cmp(b.0))
        .map(|(_, name)| name)
}

/// Returns when `node` is the lowest contender; fails with
/// [`Error::LockHeld`] when not blocking or past the deadline.
async fn wait_for_turn(
    client: &ZkClient,
    target: &LockTarget,
    lock_path: &str,
    node: &str,
    blocking: bool,
    deadline: Option<Instant>,
) -> Result<()> {
    let held = || Error::LockHeld {
        target: target.to_string(),
    };
    loop {
        let children = ops::children(client, lock_path).await?;
        if !children.iter().any(|c| c == node) {
            // Our ephemeral contender is gone: the session ended, or
            // somebody deleted the lock (the record was deleted).
            return Err(Error::LockLost {
                target: target.to_string(),
            });
        }
        let Some(before) = predecessor(&children, node) else {
            return Ok(());
        };
        if !blocking {
            return Err(held());
        }
        let before_path = format!("{lock_path}/{before}");
        let (stat, watcher) = client
            .check_and_watch_stat(&before_path)
            .await
            .map_err(|e| store_error("watch", &before_path, e))?;
        if stat.is_none() {
            continue;
        }
        match deadline {
            None => {
                watcher.changed().await;
            }
            Some(deadline) => {
                if tokio::time::timeout_at(deadline, watcher.changed())
                    .await
                    .is_err()
                {
                    return Err(held());
                }
            }
        }
    }
}

/// Gives a lock back; [`Error::LockLost`] if its contender is gone
/// (without asking the server when our own delete of the record took it,
/// or when our session ended, which took it too). The delete is made again
/// while the connection breaks under it: see [`ops::remove`].
pub(crate) async fn release(client: &ZkClient, held: &Held, handle: &LockHandle) -> Result<()> {
    let path = format!("{}/{}", handle.target.path(), handle.contender);
    let lost = || Error::LockLost {
        target: handle.target.to_string(),
    };
    if held.book().remove(&path) == Some(true) {
        return Err(lost());
    }
    match ops::remove(client, &path).await {
        Ok(Removed::Deleted) => Ok(()),
        Ok(Removed::Missing) => Err(lost()),
        Err(e) if is_session_ended(&e) => Err(lost()),
        Err(e) => Err(store_error("delete", &path, e)),
    }
}

/// The identifiers of the contenders of `target`, holder first (kazoo's
/// `contenders()`, without making the lock path).
pub(crate) async fn contenders(client: &ZkClient, target: &LockTarget) -> Result<Vec<String>> {
    let lock_path = target.path();
    let mut queue: Vec<(String, String)> = ops::children(client, &lock_path)
        .await?
        .into_iter()
        .filter_map(|c| contender_sequence(&c).map(|seq| (seq.to_owned(), c.clone())))
        .collect();
    queue.sort();
    let mut identifiers = Vec::with_capacity(queue.len());
    for (_, name) in queue {
        if let Some((data, _)) = ops::get(client, &format!("{lock_path}/{name}")).await? {
            identifiers.push(String::from_utf8_lossy(&data).into_owned());
        }
    }
    Ok(identifiers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn predecessor_is_the_next_lower_sequence() {
        let children = names(&[
            "aa__lock__0000000003",
            "bb__lock__0000000001",
            "cc__lock__0000000007",
            "not-a-contender",
        ]);
        assert_eq!(
            predecessor(&children, "cc__lock__0000000007"),
            Some("aa__lock__0000000003")
        );
        assert_eq!(
            predecessor(&children, "aa__lock__0000000003"),
            Some("bb__lock__0000000001")
        );
        assert_eq!(predecessor(&children, "bb__lock__0000000001"), None);
    }
}
