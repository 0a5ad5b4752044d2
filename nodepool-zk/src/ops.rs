//! ZooKeeper calls with the habits of kazoo that upstream relies on:
//! `makepath` on create, recursive delete, and idempotent calls (reads,
//! directory creates, deletes) made again when the connection breaks under
//! them.

use std::time::Duration;

use tokio::time::Instant;
use zookeeper_client::{Acls, CreateMode, CreateOptions, Error as Zk, Stat};

use crate::tracked::ZkClient;

use crate::error::{is_connection_broken, store_error};
use nodepool_core::Result;

/// How many times an idempotent call is made again after the connection
/// broke under it. A call made while the client is disconnected waits for
/// the reconnection (or the session's end), so this counts connection
/// breaks, not time.
const RETRIES: u32 = 20;
/// The pause between those attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// What a delete that must happen waits beyond twice the session timeout
/// (the client gives up reconnecting after 1.4 times it).
const DELETE_MARGIN: Duration = Duration::from_secs(5);

/// Directories: persistent, open to all, as kazoo makes them.
pub(crate) const DIRECTORY: CreateOptions<'static> =
    CreateMode::Persistent.with_acls(Acls::anyone_all());

/// Makes an idempotent call, again while the connection breaks under it.
pub(crate) async fn retry_broken<T, F, Fut>(
    operation: &'static str,
    path: &str,
    call: F,
) -> Result<T, Zk>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, Zk>>,
{
    let mut tries = 0;
    loop {
        match call().await {
            Err(e) if is_connection_broken(&e) && tries < RETRIES => {
                tries += 1;
                tracing::debug!(operation, path, tries, error = %e, "connection broke; calling again");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            other => return other,
        }
    }
}

/// The data of `path`, `None` if it does not exist.
pub(crate) async fn get(client: &ZkClient, path: &str) -> Result<Option<(Vec<u8>, Stat)>> {
    match retry_broken("get", path, || client.get_data(path)).await {
        Ok(found) => Ok(Some(found)),
        Err(Zk::NoNode) => Ok(None),
        Err(e) => Err(store_error("get", path, e)),
    }
}

/// Whether `path` exists.
pub(crate) async fn exists(client: &ZkClient, path: &str) -> Result<bool> {
    retry_broken("exists", path, || client.check_stat(path))
        .await
        .map(|stat| stat.is_some())
        .map_err(|e| store_error("exists", path, e))
}

/// The children of `path`, sorted; empty if it does not exist.
pub(crate) async fn children(client: &ZkClient, path: &str) -> Result<Vec<String>> {
    Ok(children_if_exists(client, path).await?.unwrap_or_default())
}

/// The children of `path`, sorted; `None` if it does not exist.
pub(crate) async fn children_if_exists(
    client: &ZkClient,
    path: &str,
) -> Result<Option<Vec<String>>> {
    match retry_broken("list", path, || client.list_children(path)).await {
        Ok(mut children) => {
            children.sort_unstable();
            Ok(Some(children))
        }
        Err(Zk::NoNode) => Ok(None),
        Err(e) => Err(store_error("list", path, e)),
    }
}

/// The parent of an absolute path ("/" for top-level paths); the parent
/// of a sequential prefix ending in "/" is the directory it names.
fn parent(path: &str) -> &str {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((parent, _)) => parent,
    }
}

/// Makes `path` and its missing ancestors as empty persistent nodes
/// (kazoo's `ensure_path`).
pub(crate) async fn ensure_path(client: &ZkClient, path: &str) -> Result<()> {
    match retry_broken("ensure path", path, || client.mkdir(path, &DIRECTORY)).await {
        Ok(()) | Err(Zk::NodeExists) => Ok(()),
        Err(e) => Err(store_error("ensure path", path, e)),
    }
}

/// Creates a node, making missing parents first (kazoo's `makepath=True`).
/// Returns the created node's name (its last path segment).
/// A sequential `path` names the prefix (`/nodepool/nodes/`,
/// `/nodepool/requests/100-`), and the name is the prefix's last segment
/// followed by the sequence.
pub(crate) async fn create(
    client: &ZkClient,
    path: &str,
    data: &[u8],
    mode: CreateMode,
) -> Result<String, Zk> {
    let options = mode.with_acls(Acls::anyone_all());
    let sequential = matches!(
        mode,
        CreateMode::PersistentSequential | CreateMode::EphemeralSequential
    );
    let mut made_parent = false;
    loop {
        match client.create(path, data, &options).await {
            Ok((_, sequence)) => {
                let name = crate::paths::basename(path);
                return Ok(if sequential {
                    format!("{name}{sequence}")
                } else {
                    name.to_owned()
                });
            }
            Err(Zk::NoNode) if !made_parent => {
                made_parent = true;
                let parent = parent(path);
                match retry_broken("create parents", parent, || {
                    client.mkdir(parent, &DIRECTORY)
                })
                .await
                {
                    Ok(()) | Err(Zk::NodeExists) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Replaces the data of an existing node; `Ok(false)` if it is missing.
///
/// Made again when the connection breaks under it, on the same session
/// (an ended session fails the call): the write is unconditional, so
/// writing the same data twice is harmless, and nodepool writes a record
/// under its lock, which a surviving session still holds.
pub(crate) async fn set(client: &ZkClient, path: &str, data: &[u8]) -> Result<bool> {
    match retry_broken("set", path, || client.set_data(path, data, None)).await {
        Ok(_) => Ok(true),
        Err(Zk::NoNode) => Ok(false),
        Err(e) => Err(store_error("set", path, e)),
    }
}

/// Deletes `path` and everything under it; a missing path is fine.
/// Returns the paths it deleted, children before their parents.
///
/// Only znodes a listing has just shown are deleted, so a missing path
/// costs a read, not a failed write.
pub(crate) async fn delete_recursive(client: &ZkClient, path: &str) -> Result<Vec<String>> {
    // Children first, depth first; a child created meanwhile makes the
    // parent's delete fail with NotEmpty, and we go round again.
    let mut deleted = Vec::new();
    let mut attempts = 0;
    loop {
        let mut stack = vec![path.to_owned()];
        let mut order = Vec::new();
        while let Some(current) = stack.pop() {
            // A znode gone since its parent was listed is not ours to delete.
            let Some(children) = children_if_exists(client, &current).await? else {
                continue;
            };
            for child in children {
                stack.push(format!("{current}/{child}"));
            }
            order.push(current);
        }
        let mut not_empty = false;
        for node in order.into_iter().rev() {
            match remove(client, &node).await {
                Ok(Removed::Deleted) => deleted.push(node),
                Ok(Removed::Missing) => {}
                Err(Zk::NotEmpty) => not_empty = true,
                Err(e) => return Err(store_error("delete", &node, e)),
            }
        }
        if !not_empty {
            return Ok(deleted);
        }
        attempts += 1;
        if attempts >= 10 {
            return Err(crate::error::backend_error(
                nodepool_core::error::ErrorKind::Transient,
                format!("ZooKeeper delete {path}: children keep appearing"),
            ));
        }
    }
}

/// Deletes one node; a missing node is fine.
pub(crate) async fn delete(client: &ZkClient, path: &str) -> Result<()> {
    match remove(client, path).await {
        Ok(_) => Ok(()),
        Err(e) => Err(store_error("delete", path, e)),
    }
}

/// What [`remove`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removed {
    /// Deleted by this call (or by an attempt of it whose reply was lost).
    Deleted,
    /// Missing at the first attempt: somebody else deleted it.
    Missing,
}

/// Deletes one node, making the call again while the connection breaks
/// under it, for up to twice the session timeout plus a margin: a delete
/// that must happen (a lock contender, a record) is not given up on the
/// first hiccup, which would leave an ephemeral contender of a live session
/// in place for good. A `NoNode` after a broken attempt means that attempt
/// went through. `NotEmpty`, an ended session and other failures are
/// returned as they are.
pub(crate) async fn remove(client: &ZkClient, path: &str) -> Result<Removed, Zk> {
    let deadline = Instant::now() + client.session_timeout() * 2 + DELETE_MARGIN;
    let mut tries = 0u32;
    loop {
        match client.delete(path, None).await {
            Ok(()) => return Ok(Removed::Deleted),
            Err(Zk::NoNode) if tries == 0 => return Ok(Removed::Missing),
            Err(Zk::NoNode) => return Ok(Removed::Deleted),
            Err(e) if is_connection_broken(&e) && Instant::now() < deadline => {
                tries += 1;
                if tries == 1 {
                    tracing::info!(path, error = %e, "connection broke under a delete; deleting again once reconnected");
                } else {
                    tracing::debug!(path, tries, error = %e, "connection broke under a delete again");
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(e) => {
                if tries > 0 {
                    tracing::warn!(path, tries, error = %e, "giving up a delete");
                }
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_of_nested_and_top_level_paths() {
        assert_eq!(parent("/nodepool/nodes/"), "/nodepool/nodes");
        assert_eq!(parent("/nodepool/requests/100-"), "/nodepool/requests");
        assert_eq!(parent("/nodepool/nodes/0000000001"), "/nodepool/nodes");
        assert_eq!(parent("/nodepool"), "/");
    }
}
