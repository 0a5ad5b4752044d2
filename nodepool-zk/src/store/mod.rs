//! [`ZkStore`]: the [`NodeStore`] on ZooKeeper, in upstream's layout.

mod images;
mod records;
mod request_locks;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;
use tracing::Instrument;
use zookeeper_client::Client;

use crate::config::ZkConfig;
use crate::session::Session;
use crate::{lock, Error};
use nodepool_core::model::{Component, ImageBuild, ImageUpload, ModelError, Node, NodeRequest};
use nodepool_core::store::{
    AdmissionToken, LockHandle, LockOptions, LockTarget, NodeStore, StoreEvent,
};
use nodepool_core::Result;

/// The ZooKeeper [`NodeStore`]: one ZooKeeper session (replaced by a new
/// one if it expires), reading and writing upstream nodepool 11's znodes so
/// that upstream's launcher, builder, CLI and Zuul can share the cluster.
///
/// | record | znode |
/// |---|---|
/// | node | `/nodepool/nodes/<seq>` (persistent sequential) |
/// | node lock | `/nodepool/nodes/<id>/lock/<uuid>__lock__<seq>` |
/// | request | `/nodepool/requests/<prio>-<seq>` (ephemeral sequential) |
/// | request lock | `/nodepool/requests-lock/<id>/<uuid>__lock__<seq>` |
/// | build | `/nodepool/images/<image>/builds/<uuid hex>` |
/// | upload | `/nodepool/images/<image>/builds/<id>/providers/<provider>/images/<seq>` |
/// | flags | `/nodepool/images/<image>/pause`, `.../request-build` |
/// | component | `/nodepool/components/<kind>/<name><seq>` (ephemeral sequential, as upstream) |
///
/// Clones share the session.
#[derive(Debug, Clone)]
pub struct ZkStore {
    session: Arc<Session>,
    /// This store's component registrations: (kind, name) → znode name.
    components: Arc<tokio::sync::Mutex<HashMap<(String, String), String>>>,
    /// The lock contenders this store holds.
    held: Arc<lock::Held>,
}

impl ZkStore {
    /// Opens a session with `config`: connects (over TLS if configured),
    /// makes the chroot and upstream's root znodes if missing, and starts
    /// watching `/nodepool/{nodes,requests,requests-lock,images,components}`
    /// with persistent recursive watches.
    pub async fn connect(config: ZkConfig) -> Result<Self, Error> {
        // Several rustls crypto backends end up in one binary (the HTTP
        // client's and ZooKeeper's); rustls then needs the process default
        // chosen. An error only means one was installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let session = Session::connect(config).await?;
        Ok(Self {
            session,
            components: Arc::default(),
            held: Arc::default(),
        })
    }

    /// The settings the store was opened with.
    pub fn config(&self) -> &ZkConfig {
        self.session.config()
    }

    /// The id of the current ZooKeeper session (it changes when an expired
    /// session is replaced).
    pub fn session_id(&self) -> Result<i64> {
        Ok(self.client()?.session_id().0)
    }

    /// Makes the server expire the current session, as a network partition
    /// longer than the session timeout would: a second connection takes the
    /// session over and closes it. Waits until the store runs on a new
    /// session. For tests of expiry handling.
    pub async fn expire_session(&self) -> Result<()> {
        let client = self.client()?;
        let old = client.session_id();
        let info = client.session().clone();
        drop(client);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut connector = Client::connector()
                .with_session(info.clone())
                .with_session_timeout(self.config().session_timeout);
            let hosts = self.config().connect_string();
            let thief = match self.session.tls() {
                Some(tls) => {
                    connector = connector.with_tls(tls);
                    connector.secure_connect(&hosts).await
                }
                None => connector.connect(&hosts).await,
            };
            // Dropping the only client of the stolen session closes it.
            drop(thief);
            let wait_until = tokio::time::Instant::now() + Duration::from_secs(3);
            while tokio::time::Instant::now() < wait_until {
                if let Ok(current) = self.client() {
                    if current.session_id() != old {
                        return Ok(());
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(nodepool_core::Error::Timeout {
                    what: format!("ZooKeeper session {old} to expire"),
                    after: Duration::from_secs(30),
                });
            }
        }
    }

    fn client(&self) -> Result<crate::tracked::ZkClient> {
        self.session.client()
    }

    /// Requests of this store's operations (reads, writes, locks) handed
    /// to the ZooKeeper client and not answered yet: sent or waiting to be
    /// sent. Sent by the launcher as upstream's
    /// `nodepool.launcher.<hostname>.zk.client.connection_queue`, where
    /// kazoo counts the requests not yet written to the socket.
    pub fn outstanding_requests(&self) -> usize {
        self.session.outstanding()
    }
}

/// A record's decode error as [`nodepool_core::Error::Corrupt`] at `path`.
fn corrupt(path: &str, e: ModelError) -> nodepool_core::Error {
    e.corrupt_at(path)
}

/// Logs a record a listing skips.
fn skip_corrupt(path: &str, e: &ModelError) {
    tracing::warn!(path, error = %e, "skipping a record that cannot be decoded");
}

#[async_trait]
impl NodeStore for ZkStore {
    fn backend(&self) -> &'static str {
        crate::ZOOKEEPER
    }

    async fn create_node(&self, node: &Node) -> Result<String> {
        self.create_node_impl(node).await
    }

    async fn get_node(&self, id: &str) -> Result<Option<Node>> {
        self.get_node_impl(id).await
    }

    async fn update_node(&self, node: &Node) -> Result<()> {
        self.update_node_impl(node).await
    }

    async fn delete_node(&self, id: &str) -> Result<()> {
        self.delete_node_impl(id).await
    }

    async fn list_nodes(&self) -> Result<Vec<Node>> {
        self.list_nodes_impl().await
    }

    async fn node_ids(&self) -> Result<Vec<String>> {
        self.node_ids_impl().await
    }

    async fn admission_token(&self, key: &str) -> Result<AdmissionToken> {
        self.admission_token_impl(key).await
    }

    async fn create_nodes_admitted(
        &self,
        nodes: &[Node],
        tokens: &[AdmissionToken],
    ) -> Result<Vec<String>> {
        self.create_nodes_admitted_impl(nodes, tokens).await
    }

    async fn purge_empty_nodes(&self) -> Result<usize> {
        self.purge_empty_nodes_impl().await
    }

    async fn purge_stale_request_locks(&self, min_age: Duration) -> Result<usize> {
        self.purge_stale_request_locks_impl(min_age).await
    }

    async fn create_request(&self, request: &NodeRequest, priority: &str) -> Result<String> {
        self.create_request_impl(request, priority).await
    }

    async fn get_request(&self, id: &str) -> Result<Option<NodeRequest>> {
        self.get_request_impl(id).await
    }

    async fn update_request(&self, request: &NodeRequest) -> Result<()> {
        self.update_request_impl(request).await
    }

    async fn delete_request(&self, id: &str) -> Result<()> {
        self.delete_request_impl(id).await
    }

    async fn list_requests(&self) -> Result<Vec<NodeRequest>> {
        self.list_requests_impl().await
    }

    async fn list_images(&self) -> Result<Vec<String>> {
        self.list_images_impl().await
    }

    async fn create_build(&self, image: &str, build: &ImageBuild) -> Result<String> {
        self.create_build_impl(image, build).await
    }

    async fn get_build(&self, image: &str, build_id: &str) -> Result<Option<ImageBuild>> {
        self.get_build_impl(image, build_id).await
    }

    async fn update_build(&self, image: &str, build: &ImageBuild) -> Result<()> {
        self.update_build_impl(image, build).await
    }

    async fn delete_build(&self, image: &str, build_id: &str) -> Result<()> {
        self.delete_build_impl(image, build_id).await
    }

    async fn list_builds(&self, image: &str) -> Result<Vec<ImageBuild>> {
        self.list_builds_impl(image).await
    }

    async fn create_upload(
        &self,
        image: &str,
        build_id: &str,
        provider: &str,
        upload: &ImageUpload,
    ) -> Result<String> {
        self.create_upload_impl(image, build_id, provider, upload)
            .await
    }

    async fn update_upload(&self, upload: &ImageUpload) -> Result<()> {
        self.update_upload_impl(upload).await
    }

    async fn delete_upload(
        &self,
        image: &str,
        build_id: &str,
        provider: &str,
        upload_id: &str,
    ) -> Result<()> {
        self.delete_upload_impl(image, build_id, provider, upload_id)
            .await
    }

    async fn list_uploads(&self, image: &str, build_id: &str) -> Result<Vec<ImageUpload>> {
        self.list_uploads_impl(image, build_id).await
    }

    async fn set_image_paused(&self, image: &str, paused: bool) -> Result<()> {
        self.set_flag(&crate::paths::image_pause(image), paused)
            .await
    }

    async fn image_paused(&self, image: &str) -> Result<bool> {
        crate::ops::exists(&self.client()?, &crate::paths::image_pause(image)).await
    }

    async fn set_build_requested(&self, image: &str, requested: bool) -> Result<()> {
        self.set_flag(&crate::paths::image_build_request(image), requested)
            .await
    }

    async fn build_requested(&self, image: &str) -> Result<bool> {
        crate::ops::exists(&self.client()?, &crate::paths::image_build_request(image)).await
    }

    async fn register_component(
        &self,
        kind: &str,
        name: &str,
        component: &Component,
    ) -> Result<()> {
        self.register_component_impl(kind, name, component).await
    }

    async fn unregister_component(&self, kind: &str, name: &str) -> Result<()> {
        self.unregister_component_impl(kind, name).await
    }

    async fn list_components(&self, kind: &str) -> Result<Vec<Component>> {
        self.list_components_impl(kind).await
    }

    async fn lock(&self, target: &LockTarget, options: &LockOptions) -> Result<LockHandle> {
        let client = self.client()?;
        lock::acquire(&client, &self.held, target, options)
            .instrument(tracing::debug_span!("lock", %target))
            .await
    }

    async fn unlock(&self, handle: &LockHandle) -> Result<()> {
        lock::release(&self.client()?, &self.held, handle).await
    }

    async fn lock_contenders(&self, target: &LockTarget) -> Result<Vec<String>> {
        lock::contenders(&self.client()?, target).await
    }

    fn watch(&self) -> broadcast::Receiver<StoreEvent> {
        self.session.subscribe()
    }

    async fn close(&self) -> Result<()> {
        self.session.close().await
    }
}
