//! ZooKeeper calls with the habits of kazoo that upstream relies on:
//! `makepath` on create, recursive delete, reads retried across a
//! connection loss.

use std::time::Duration;

use zookeeper_client::{Acls, Client, CreateMode, CreateOptions, Error as Zk, Stat};

use crate::error::store_error;
use nodepool_core::Result;

/// How many times a read is retried after a connection loss; the client
/// reconnects in the meantime.
const READ_RETRIES: u32 = 20;
/// The pause between those retries.
const READ_RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Directories: persistent, open to all, as kazoo makes them.
pub(crate) const DIRECTORY: CreateOptions<'static> =
    CreateMode::Persistent.with_acls(Acls::anyone_all());

/// Runs a read, retrying it while the connection is lost.
async fn retry_read<T, F, Fut>(operation: &'static str, path: &str, read: F) -> Result<T, Zk>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, Zk>>,
{
    let mut tries = 0;
    loop {
        match read().await {
            Err(Zk::ConnectionLoss) if tries < READ_RETRIES => {
                tries += 1;
                tracing::debug!(operation, path, tries, "connection lost; retrying the read");
                tokio::time::sleep(READ_RETRY_PAUSE).await;
            }
            other => return other,
        }
    }
}

/// The data of `path`, `None` if it does not exist.
pub(crate) async fn get(client: &Client, path: &str) -> Result<Option<(Vec<u8>, Stat)>> {
    match retry_read("get", path, || client.get_data(path)).await {
        Ok(found) => Ok(Some(found)),
        Err(Zk::NoNode) => Ok(None),
        Err(e) => Err(store_error("get", path, e)),
    }
}

/// Whether `path` exists.
pub(crate) async fn exists(client: &Client, path: &str) -> Result<bool> {
    retry_read("exists", path, || client.check_stat(path))
        .await
        .map(|stat| stat.is_some())
        .map_err(|e| store_error("exists", path, e))
}

/// The children of `path`, sorted; empty if it does not exist.
pub(crate) async fn children(client: &Client, path: &str) -> Result<Vec<String>> {
    Ok(children_if_exists(client, path).await?.unwrap_or_default())
}

/// The children of `path`, sorted; `None` if it does not exist.
pub(crate) async fn children_if_exists(client: &Client, path: &str) -> Result<Option<Vec<String>>> {
    match retry_read("list", path, || client.list_children(path)).await {
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
pub(crate) async fn ensure_path(client: &Client, path: &str) -> Result<()> {
    match client.mkdir(path, &DIRECTORY).await {
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
    client: &Client,
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
                match client.mkdir(parent(path), &DIRECTORY).await {
                    Ok(()) | Err(Zk::NodeExists) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Replaces the data of an existing node; `Ok(false)` if it is missing.
pub(crate) async fn set(client: &Client, path: &str, data: &[u8]) -> Result<bool> {
    match client.set_data(path, data, None).await {
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
pub(crate) async fn delete_recursive(client: &Client, path: &str) -> Result<Vec<String>> {
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
            match client.delete(&node, None).await {
                Ok(()) => deleted.push(node),
                Err(Zk::NoNode) => {}
                Err(Zk::NotEmpty) => not_empty = true,
                Err(e) => return Err(store_error("delete", &node, e)),
            }
        }
        if !not_empty {
            return Ok(deleted);
        }
        attempts += 1;
        if attempts >= 10 {
            return Err(nodepool_core::Error::Other(format!(
                "ZooKeeper delete {path}: children keep appearing"
            )));
        }
    }
}

/// Deletes one node; a missing node is fine.
pub(crate) async fn delete(client: &Client, path: &str) -> Result<()> {
    match client.delete(path, None).await {
        Ok(()) | Err(Zk::NoNode) => Ok(()),
        Err(e) => Err(store_error("delete", path, e)),
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
