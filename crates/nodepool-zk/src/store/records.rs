//! Nodes, node requests and component registrations.

use zookeeper_client::CreateMode;

use super::{corrupt, skip_corrupt, ZkStore};
use crate::error::store_error;
use crate::{ops, paths};
use nodepool_core::model::{Component, Node, NodeRequest, NodeState};
use nodepool_core::{Error, Result};

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

    pub(super) async fn get_node_impl(&self, id: &str) -> Result<Option<Node>> {
        let path = paths::node(id);
        match ops::get(&self.client()?, &path).await? {
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
        let mut nodes = Vec::new();
        for id in ops::children(&client, paths::NODE_ROOT).await? {
            let path = paths::node(&id);
            let Some((data, _)) = ops::get(&client, &path).await? else {
                continue;
            };
            match Node::from_json(&id, &data) {
                Ok(node) => nodes.push(node),
                Err(e) => skip_corrupt(&path, &e),
            }
        }
        Ok(nodes)
    }

    pub(super) async fn create_request_impl(
        &self,
        request: &NodeRequest,
        priority: &str,
    ) -> Result<String> {
        let client = self.client()?;
        let prefix = format!("{}/{priority}-", paths::REQUEST_ROOT);
        ops::create(
            &client,
            &prefix,
            &request.to_json(),
            CreateMode::EphemeralSequential,
        )
        .await
        .map_err(|e| store_error("create", &prefix, e))
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
        let mut requests = Vec::new();
        for id in ops::children(&client, paths::REQUEST_ROOT).await? {
            let path = paths::request(&id);
            let Some((data, _)) = ops::get(&client, &path).await? else {
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
