//! Nodes, node requests and component registrations.

use futures::StreamExt;
use zookeeper_client::{CreateMode, MultiWriteError, MultiWriteResult};

use super::{corrupt, skip_corrupt, ZkStore};
use crate::error::{is_connection_broken, store_error};
use crate::{lock, ops, paths};
use nodepool_core::model::{Component, Node, NodeRequest, NodeState};
use nodepool_core::store::{AdmissionToken, LockOptions, LockTarget};
use nodepool_core::{Error, Result};

/// How many stats of node znodes [`ZkStore::purge_empty_nodes_impl`] keeps
/// in flight.
const PURGE_STATS_IN_FLIGHT: usize = 32;
/// How many reads of records a listing keeps in flight: one round trip
/// after the other, 10,000 nodes took ~5 s to list.
const LISTING_READS_IN_FLIGHT: usize = 32;
/// How many times a request create is made again after the connection
/// broke under it (and the request was not found).
const CREATE_RETRIES: u32 = 5;

impl ZkStore {
    pub(super) async fn create_node_impl(&self, node: &Node) -> Result<String> {
        let client = self.client()?;
        let prefix = format!("{}/", paths::NODE_ROOT);
        ops::create(
            &client,
            &prefix,
            &node.to_json(),
            CreateMode::PersistentSequential,
        )
        .await
        .map_err(|e| store_error("create", &prefix, e))
    }

    /// The children of `/nodepool/nodes`: one read, no records.
    pub(super) async fn node_ids_impl(&self) -> Result<Vec<String>> {
        ops::children(&self.client()?, paths::NODE_ROOT).await
    }

    /// The data version of the admission counter znode of `key`, made
    /// (empty, persistent) on first use.
    pub(super) async fn admission_token_impl(&self, key: &str) -> Result<AdmissionToken> {
        let client = self.client()?;
        let path = paths::admission(key);
        for _ in 0..2 {
            if let Some((_, stat)) = ops::get(&client, &path).await? {
                return Ok(AdmissionToken {
                    key: key.to_owned(),
                    version: i64::from(stat.version),
                });
            }
            ops::ensure_path(&client, &path).await?;
        }
        Err(store_error(
            "read admission counter",
            &path,
            zookeeper_client::Error::NoNode,
        ))
    }

    /// One ZooKeeper transaction: a conditional `setData` of each counter
    /// (at the version read) and the sequential create of each node. Any
    /// counter that moved fails the whole transaction.
    pub(super) async fn create_nodes_admitted_impl(
        &self,
        nodes: &[Node],
        tokens: &[AdmissionToken],
    ) -> Result<Vec<String>> {
        let client = self.client()?;
        let prefix = format!("{}/", paths::NODE_ROOT);
        let options =
            CreateMode::PersistentSequential.with_acls(zookeeper_client::Acls::anyone_all());
        let mut versions = Vec::with_capacity(tokens.len());
        for t in tokens {
            let version = i32::try_from(t.version).map_err(|_| Error::VersionConflict {
                target: format!("admission counter {}", t.key),
                expected: t.version,
            })?;
            versions.push((paths::admission(&t.key), version));
        }
        let datas: Vec<Vec<u8>> = nodes.iter().map(Node::to_json).collect();
        let mut writer = client.new_multi_writer();
        for (path, version) in &versions {
            writer
                .add_set_data(path, b"", Some(*version))
                .map_err(|e| store_error("admit", path, e))?;
        }
        for data in &datas {
            writer
                .add_create(&prefix, data, &options)
                .map_err(|e| store_error("admit", &prefix, e))?;
        }
        match client.commit(&mut writer).await {
            Ok(results) => {
                let ids: Vec<String> = results
                    .into_iter()
                    .filter_map(|r| match r {
                        MultiWriteResult::Create { path, .. } => {
                            Some(paths::basename(&path).to_owned())
                        }
                        _ => None,
                    })
                    .collect();
                if ids.len() == nodes.len() {
                    Ok(ids)
                } else {
                    Err(store_error(
                        "admit",
                        &prefix,
                        zookeeper_client::Error::UnexpectedError(format!(
                            "{} creates in the reply, {} asked",
                            ids.len(),
                            nodes.len()
                        )),
                    ))
                }
            }
            Err(MultiWriteError::OperationFailed {
                index,
                source: zookeeper_client::Error::BadVersion | zookeeper_client::Error::NoNode,
            }) if index < tokens.len() => Err(Error::VersionConflict {
                target: format!("admission counter {}", tokens[index].key),
                expected: tokens[index].version,
            }),
            Err(e) => Err(store_error("admit", &prefix, e.into())),
        }
    }

    pub(super) async fn get_node_impl(&self, id: &str) -> Result<Option<Node>> {
        let path = paths::node(id);
        match ops::get(&self.client()?, &path).await? {
            // An empty znode is no record (upstream's `getNode` agrees):
            // a lock taken on a deleted node by a tool that makes paths.
            Some((data, _)) if data.is_empty() => Ok(None),
            None => Ok(None),
            Some((data, _)) => Node::from_json(id, &data)
                .map(Some)
                .map_err(|e| corrupt(&path, e)),
        }
    }

    pub(super) async fn update_node_impl(&self, node: &Node) -> Result<()> {
        if ops::set(&self.client()?, &paths::node(&node.id), &node.to_json()).await? {
            Ok(())
        } else {
            Err(Error::NodeNotFound {
                id: node.id.clone(),
            })
        }
    }

    /// As upstream's `deleteNode`: first mark the record `deleted` (so a
    /// reader that sees the lock vanish before the record knows why), then
    /// delete it with its lock.
    pub(super) async fn delete_node_impl(&self, id: &str) -> Result<()> {
        let client = self.client()?;
        let path = paths::node(id);
        let Some((data, _)) = ops::get(&client, &path).await? else {
            return Ok(());
        };
        match Node::from_json(id, &data) {
            Ok(mut node) => {
                node.state = Some(NodeState::Deleted);
                ops::set(&client, &path, &node.to_json()).await?;
            }
            Err(e) => tracing::debug!(path, error = %e, "deleting an undecodable node"),
        }
        let deleted = ops::delete_recursive(&client, &path).await?;
        self.held.forget_deleted(&deleted);
        Ok(())
    }

    pub(super) async fn list_nodes_impl(&self) -> Result<Vec<Node>> {
        let client = self.client()?;
        let ids = ops::children(&client, paths::NODE_ROOT).await?;
        let mut reads = read_each(&client, ids, paths::node);
        let mut nodes = Vec::new();
        while let Some((id, path, data)) = reads.next().await {
            let Some((data, _)) = data? else {
                continue;
            };
            if data.is_empty() {
                // Left by a lock on a deleted node; `purge_empty_nodes`
                // removes it.
                tracing::debug!(path, "skipping an empty node znode");
                continue;
            }
            match Node::from_json(&id, &data) {
                Ok(node) => nodes.push(node),
                Err(e) => skip_corrupt(&path, &e),
            }
        }
        Ok(nodes)
    }

    /// Deletes the node znodes that hold no data, as upstream's
    /// `_cleanupEmptyNodes` does. Every node record is written with its data
    /// in the create call, so an empty node znode is never a record in the
    /// making: it is what a lock on a deleted node left (kazoo's lock makes
    /// the path). Each is locked first, so a holder of such a lock is left
    /// alone, and checked again under the lock.
    pub(super) async fn purge_empty_nodes_impl(&self) -> Result<usize> {
        let client = self.client()?;
        let ids = ops::children(&client, paths::NODE_ROOT).await?;
        // Stats only (no data), many in flight at once.
        let stats = futures::stream::iter(ids)
            .map(|id| {
                let client = &client;
                async move {
                    let path = paths::node(&id);
                    let stat = ops::retry_broken("stat", &path, || client.check_stat(&path)).await;
                    (id, path, stat)
                }
            })
            .buffer_unordered(PURGE_STATS_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await;
        let mut purged = 0;
        for (id, path, stat) in stats {
            match stat {
                Ok(Some(stat)) if stat.data_length == 0 => {}
                Ok(_) => continue,
                Err(e) => return Err(store_error("stat", &path, e)),
            }
            if self.purge_empty_node(&client, &id, &path).await? {
                purged += 1;
            }
        }
        if purged > 0 {
            tracing::info!(purged, "removed empty node znodes");
        }
        Ok(purged)
    }

    /// Locks node znode `id`, and deletes it with its children if it is
    /// still empty; `false` if it was locked by somebody or is no longer
    /// empty.
    async fn purge_empty_node(
        &self,
        client: &crate::tracked::ZkClient,
        id: &str,
        path: &str,
    ) -> Result<bool> {
        let target = LockTarget::Node(id.to_owned());
        let handle =
            match lock::acquire(client, &self.held, &target, &LockOptions::try_once()).await {
                Ok(handle) => handle,
                Err(Error::LockHeld { .. } | Error::NodeNotFound { .. }) => return Ok(false),
                Err(e) => return Err(e),
            };
        let empty = match ops::get(client, path).await {
            Ok(found) => found.is_some_and(|(data, _)| data.is_empty()),
            Err(e) => {
                let _ = lock::release(client, &self.held, &handle).await;
                return Err(e);
            }
        };
        if !empty {
            let _ = lock::release(client, &self.held, &handle).await;
            return Ok(false);
        }
        tracing::debug!(path, "removing an empty node znode");
        match ops::delete_recursive(client, path).await {
            Ok(deleted) => {
                self.held.forget_deleted(&deleted);
                // Our contender went with it; this only clears the book.
                let _ = lock::release(client, &self.held, &handle).await;
                Ok(true)
            }
            Err(e) => {
                let _ = lock::release(client, &self.held, &handle).await;
                Err(e)
            }
        }
    }

    /// Writes the request as an ephemeral sequential znode. When the
    /// connection breaks under the create, the session's own ephemeral
    /// requests are searched for one holding exactly this data before
    /// creating again, so that a create whose reply was lost does not leave
    /// a second request nobody waits for.
    pub(super) async fn create_request_impl(
        &self,
        request: &NodeRequest,
        priority: &str,
    ) -> Result<String> {
        let client = self.client()?;
        let prefix = format!("{}/{priority}-", paths::REQUEST_ROOT);
        let data = request.to_json();
        let mut broken = 0;
        loop {
            match ops::create(&client, &prefix, &data, CreateMode::EphemeralSequential).await {
                Ok(id) => return Ok(id),
                Err(e) if is_connection_broken(&e) && broken < CREATE_RETRIES => {
                    broken += 1;
                    tracing::debug!(%prefix, error = %e, "connection broke under a request create; looking for it");
                    if let Some(id) = own_ephemeral_with(&client, &prefix, &data).await? {
                        return Ok(id);
                    }
                }
                Err(e) => return Err(store_error("create", &prefix, e)),
            }
        }
    }

    pub(super) async fn get_request_impl(&self, id: &str) -> Result<Option<NodeRequest>> {
        let path = paths::request(id);
        match ops::get(&self.client()?, &path).await? {
            None => Ok(None),
            Some((data, _)) => NodeRequest::from_json(id, &data)
                .map(Some)
                .map_err(|e| corrupt(&path, e)),
        }
    }

    pub(super) async fn update_request_impl(&self, request: &NodeRequest) -> Result<()> {
        let path = paths::request(&request.id);
        if ops::set(&self.client()?, &path, &request.to_json()).await? {
            Ok(())
        } else {
            Err(Error::RequestNotFound {
                id: request.id.clone(),
            })
        }
    }

    pub(super) async fn delete_request_impl(&self, id: &str) -> Result<()> {
        let client = self.client()?;
        ops::delete(&client, &paths::request(id)).await?;
        let deleted = ops::delete_recursive(&client, &paths::request_lock(id)).await?;
        self.held.forget_deleted(&deleted);
        Ok(())
    }

    /// Requests sorted by id: by priority, then sequence (upstream's
    /// `sorted(get_children(...))`).
    pub(super) async fn list_requests_impl(&self) -> Result<Vec<NodeRequest>> {
        let client = self.client()?;
        let ids = ops::children(&client, paths::REQUEST_ROOT).await?;
        let mut reads = read_each(&client, ids, paths::request);
        let mut requests = Vec::new();
        while let Some((id, path, data)) = reads.next().await {
            let Some((data, _)) = data? else {
                continue;
            };
            match NodeRequest::from_json(&id, &data) {
                Ok(request) => requests.push(request),
                Err(e) => skip_corrupt(&path, &e),
            }
        }
        Ok(requests)
    }

    /// Registers `name` as upstream's `ComponentRegistry` does: an
    /// ephemeral sequential znode `<kind>/<name><sequence>`, so two
    /// components of one name (two launchers on one host) never share or
    /// overwrite one registration. The znode is remembered; registering
    /// again replaces its data, or makes a new znode if it died with an
    /// expired session.
    pub(super) async fn register_component_impl(
        &self,
        kind: &str,
        name: &str,
        component: &Component,
    ) -> Result<()> {
        let client = self.client()?;
        let data = if component.kind == kind {
            component.to_json()
        } else {
            // The record's `kind` key names the directory it lives in.
            let mut component = component.clone();
            component.kind = kind.to_owned();
            component.to_json()
        };
        let key = (kind.to_owned(), name.to_owned());
        let mut registered = self.components.lock().await;
        if let Some(znode) = registered.get(&key) {
            if ops::set(&client, &paths::component(kind, znode), &data).await? {
                return Ok(());
            }
        }
        let prefix = paths::component(kind, name);
        let znode = ops::create(&client, &prefix, &data, CreateMode::EphemeralSequential)
            .await
            .map_err(|e| store_error("create", &prefix, e))?;
        registered.insert(key, znode);
        Ok(())
    }

    /// Deletes this store's registration of `name` (a name it never
    /// registered is left alone).
    pub(super) async fn unregister_component_impl(&self, kind: &str, name: &str) -> Result<()> {
        let znode = self
            .components
            .lock()
            .await
            .remove(&(kind.to_owned(), name.to_owned()));
        match znode {
            Some(znode) => ops::delete(&self.client()?, &paths::component(kind, &znode)).await,
            None => Ok(()),
        }
    }

    /// Every registration of `kind`, upstream's and ours, named as it was
    /// registered (the sequence dropped).
    pub(super) async fn list_components_impl(&self, kind: &str) -> Result<Vec<Component>> {
        let client = self.client()?;
        let mut components = Vec::new();
        for znode in ops::children(&client, &paths::components(kind)).await? {
            let path = paths::component(kind, &znode);
            let Some((data, _)) = ops::get(&client, &path).await? else {
                continue;
            };
            match Component::from_json_at(kind, paths::component_name(&znode), &data) {
                Ok(component) => components.push(component),
                Err(e) => skip_corrupt(&path, &e),
            }
        }
        Ok(components)
    }

    /// Creates (`on`) or deletes a flag znode such as `pause`.
    pub(super) async fn set_flag(&self, path: &str, on: bool) -> Result<()> {
        let client = self.client()?;
        if on {
            match ops::create(&client, path, b"", CreateMode::Persistent).await {
                Ok(_) | Err(zookeeper_client::Error::NodeExists) => Ok(()),
                Err(e) => Err(store_error("create", path, e)),
            }
        } else {
            ops::delete(&client, path).await
        }
    }
}

/// The name of this session's ephemeral znode under `prefix` that holds
/// exactly `data`, if any.
async fn own_ephemeral_with(
    client: &crate::tracked::ZkClient,
    prefix: &str,
    data: &[u8],
) -> Result<Option<String>> {
    let mine = ops::retry_broken("list ephemerals", prefix, || client.list_ephemerals(prefix))
        .await
        .map_err(|e| store_error("list ephemerals", prefix, e))?;
    for path in mine {
        if let Some((found, _)) = ops::get(client, &path).await? {
            if found == data {
                return Ok(Some(paths::basename(&path).to_owned()));
            }
        }
    }
    Ok(None)
}

/// A record's id, path, and what reading it gave.
type RecordRead = (
    String,
    String,
    Result<Option<(Vec<u8>, zookeeper_client::Stat)>>,
);

/// One read of the record `path_of(id)` for each of `ids`, in their order,
/// [`LISTING_READS_IN_FLIGHT`] at a time; each answer comes with its id and
/// path, `None` for a record deleted since the children were listed.
fn read_each<'a>(
    client: &'a crate::tracked::ZkClient,
    ids: Vec<String>,
    path_of: fn(&str) -> String,
) -> impl futures::Stream<Item = RecordRead> + 'a {
    futures::stream::iter(ids)
        .map(move |id| async move {
            let path = path_of(&id);
            let data = ops::get(client, &path).await;
            (id, path, data)
        })
        .buffered(LISTING_READS_IN_FLIGHT)
}
