//! `impl NodeStore for EmbeddedStore`: each call is one job on the worker,
//! writes in one immediate transaction with their change rows.

use std::sync::Arc;

use async_trait::async_trait;
use nodepool_core::model::{Component, ImageBuild, ImageUpload, Node, NodeRequest};
use nodepool_core::store::{
    AdmissionToken, LockHandle, LockOptions, LockTarget, NodeStore, StoreEvent,
};
use nodepool_core::{Error, Result};
use tokio::sync::broadcast;
use tracing::instrument;

use crate::codec;
use crate::handle::{EmbeddedStore, Shared};
use crate::locks::{self, Standing};
use crate::records::{self, Flag};
use crate::worker::Worker;

#[async_trait]
impl NodeStore for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    // --- nodes ---

    async fn create_node(&self, node: &Node) -> Result<String> {
        let json = codec::encode_node(node);
        self.run(move |w| w.write(|tx| records::create_node(tx, &json)))
            .await
    }

    async fn get_node(&self, id: &str) -> Result<Option<Node>> {
        let id = id.to_string();
        self.run(move |w| records::get_node(w.conn(), &id)).await
    }

    async fn update_node(&self, node: &Node) -> Result<()> {
        let (node, json) = (node.clone(), codec::encode_node(node));
        self.run(move |w| w.write(|tx| records::update_node(tx, &node, &json)))
            .await
    }

    async fn delete_node(&self, id: &str) -> Result<()> {
        let id = id.to_string();
        self.run(move |w| w.write(|tx| records::delete_node(tx, &id)))
            .await
    }

    async fn list_nodes(&self) -> Result<Vec<Node>> {
        let rows = self.run(|w| records::list_nodes(w.conn())).await?;
        codec::decode_listing(rows, |id, data| codec::decode_node(id, data)).await
    }

    async fn node_ids(&self) -> Result<Vec<String>> {
        self.run(|w| records::node_ids(w.conn())).await
    }

    async fn admission_token(&self, key: &str) -> Result<AdmissionToken> {
        let key = key.to_string();
        self.run(move |w| {
            let version = records::admission_version(w.conn(), &key)?;
            Ok(AdmissionToken { key, version })
        })
        .await
    }

    async fn create_nodes_admitted(
        &self,
        nodes: &[Node],
        tokens: &[AdmissionToken],
    ) -> Result<Vec<String>> {
        let jsons: Vec<String> = nodes.iter().map(codec::encode_node).collect();
        let tokens = tokens.to_vec();
        self.run(move |w| w.write(|tx| records::create_nodes_admitted(tx, &jsons, &tokens)))
            .await
    }

    // --- node requests ---

    async fn create_request(&self, request: &NodeRequest, priority: &str) -> Result<String> {
        let (json, priority) = (codec::encode_request(request), priority.to_string());
        self.run_in_session(move |w, session| {
            w.write(|tx| records::create_request(tx, session, &json, &priority))
        })
        .await
    }

    async fn get_request(&self, id: &str) -> Result<Option<NodeRequest>> {
        let id = id.to_string();
        self.run(move |w| records::get_request(w.conn(), &id)).await
    }

    async fn update_request(&self, request: &NodeRequest) -> Result<()> {
        let (request, json) = (request.clone(), codec::encode_request(request));
        self.run(move |w| w.write(|tx| records::update_request(tx, &request, &json)))
            .await
    }

    async fn delete_request(&self, id: &str) -> Result<()> {
        let id = id.to_string();
        self.run(move |w| w.write(|tx| records::delete_request(tx, &id)))
            .await
    }

    async fn list_requests(&self) -> Result<Vec<NodeRequest>> {
        let rows = self.run(|w| records::list_requests(w.conn())).await?;
        codec::decode_listing(rows, |id, data| codec::decode_request(id, data)).await
    }

    // --- images ---

    async fn list_images(&self) -> Result<Vec<String>> {
        self.run(|w| records::list_images(w.conn())).await
    }

    async fn create_build(&self, image: &str, build: &ImageBuild) -> Result<String> {
        let (image, build, json) = (image.to_string(), build.clone(), codec::encode_build(build));
        self.run(move |w| w.write(|tx| records::create_build(tx, &image, &build, &json)))
            .await
    }

    async fn get_build(&self, image: &str, build_id: &str) -> Result<Option<ImageBuild>> {
        let (image, build_id) = (image.to_string(), build_id.to_string());
        self.run(move |w| records::get_build(w.conn(), &image, &build_id))
            .await
    }

    async fn update_build(&self, image: &str, build: &ImageBuild) -> Result<()> {
        let (image, build, json) = (image.to_string(), build.clone(), codec::encode_build(build));
        self.run(move |w| w.write(|tx| records::update_build(tx, &image, &build, &json)))
            .await
    }

    async fn delete_build(&self, image: &str, build_id: &str) -> Result<()> {
        let (image, build_id) = (image.to_string(), build_id.to_string());
        self.run(move |w| w.write(|tx| records::delete_build(tx, &image, &build_id)))
            .await
    }

    async fn list_builds(&self, image: &str) -> Result<Vec<ImageBuild>> {
        let image = image.to_string();
        let query = image.clone();
        let rows = self
            .run(move |w| records::list_builds(w.conn(), &query))
            .await?;
        codec::decode_listing(rows, move |id, data| codec::decode_build(&image, id, data)).await
    }

    async fn create_upload(
        &self,
        image: &str,
        build_id: &str,
        provider: &str,
        upload: &ImageUpload,
    ) -> Result<String> {
        let (image, build_id, provider) = (
            image.to_string(),
            build_id.to_string(),
            provider.to_string(),
        );
        let json = codec::encode_upload(upload);
        self.run(move |w| {
            w.write(|tx| records::create_upload(tx, &image, &build_id, &provider, &json))
        })
        .await
    }

    async fn update_upload(&self, upload: &ImageUpload) -> Result<()> {
        let (upload, json) = (upload.clone(), codec::encode_upload(upload));
        self.run(move |w| w.write(|tx| records::update_upload(tx, &upload, &json)))
            .await
    }

    async fn delete_upload(
        &self,
        image: &str,
        build_id: &str,
        provider: &str,
        upload_id: &str,
    ) -> Result<()> {
        let (image, build_id) = (image.to_string(), build_id.to_string());
        let (provider, upload_id) = (provider.to_string(), upload_id.to_string());
        self.run(move |w| {
            w.write(|tx| records::delete_upload(tx, &image, &build_id, &provider, &upload_id))
        })
        .await
    }

    async fn list_uploads(&self, image: &str, build_id: &str) -> Result<Vec<ImageUpload>> {
        let (image, build_id) = (image.to_string(), build_id.to_string());
        let query = (image.clone(), build_id.clone());
        let rows = self
            .run(move |w| records::list_uploads(w.conn(), &query.0, &query.1))
            .await?;
        codec::decode_listing(rows, move |(provider, id), data| {
            codec::decode_upload(&image, &build_id, provider, id, data)
        })
        .await
    }

    async fn set_image_paused(&self, image: &str, paused: bool) -> Result<()> {
        let image = image.to_string();
        self.run(move |w| w.write(|tx| records::set_flag(tx, &image, Flag::Paused, paused)))
            .await
    }

    async fn image_paused(&self, image: &str) -> Result<bool> {
        let image = image.to_string();
        self.run(move |w| records::flag(w.conn(), &image, Flag::Paused))
            .await
    }

    async fn set_build_requested(&self, image: &str, requested: bool) -> Result<()> {
        let image = image.to_string();
        self.run(move |w| {
            w.write(|tx| records::set_flag(tx, &image, Flag::BuildRequested, requested))
        })
        .await
    }

    async fn build_requested(&self, image: &str) -> Result<bool> {
        let image = image.to_string();
        self.run(move |w| records::flag(w.conn(), &image, Flag::BuildRequested))
            .await
    }

    // --- component registry ---

    async fn register_component(
        &self,
        kind: &str,
        name: &str,
        component: &Component,
    ) -> Result<()> {
        let (kind, name) = (kind.to_string(), name.to_string());
        let json = codec::encode_component(component);
        self.run_in_session(move |w, session| {
            w.write(|tx| records::register_component(tx, session, &kind, &name, &json))
        })
        .await
    }

    async fn unregister_component(&self, kind: &str, name: &str) -> Result<()> {
        let (kind, name) = (kind.to_string(), name.to_string());
        self.run(move |w| w.write(|tx| records::unregister_component(tx, &kind, &name)))
            .await
    }

    async fn list_components(&self, kind: &str) -> Result<Vec<Component>> {
        let kind = kind.to_string();
        let query = kind.clone();
        let rows = self
            .run(move |w| records::list_components(w.conn(), &query))
            .await?;
        codec::decode_listing(rows, move |name, data| {
            codec::decode_component(&kind, name, data)
        })
        .await
    }

    // --- locks ---

    #[instrument(level = "debug", skip(self, options), fields(session = self.session_id()))]
    async fn lock(&self, target: &LockTarget, options: &LockOptions) -> Result<LockHandle> {
        let path = target.path();
        let identifier = options.identifier.clone().unwrap_or_default();
        if !options.blocking {
            let taken = self
                .run_in_session(move |w, session| {
                    w.write(|tx| locks::try_take(tx, session, &path, &identifier))
                        .map(|seq| seq.map(|seq| (session, seq)))
                })
                .await?;
            return match taken {
                Some((session, seq)) => Ok(handle(target, session, seq)),
                None => Err(Error::LockHeld {
                    target: target.path(),
                }),
            };
        }
        self.lock_blocking(target, options).await
    }

    #[instrument(level = "debug", skip(self), fields(session = self.session_id()))]
    async fn unlock(&self, handle: &LockHandle) -> Result<()> {
        let Some(seq) = locks::contender_seq(&handle.contender) else {
            return Err(locks::lost(&handle.target));
        };
        let path = handle.target.path();
        let removed = self
            .run(move |w| w.write(|tx| locks::remove(tx, &path, seq)))
            .await?;
        if removed {
            Ok(())
        } else {
            Err(locks::lost(&handle.target))
        }
    }

    async fn lock_contenders(&self, target: &LockTarget) -> Result<Vec<String>> {
        let path = target.path();
        self.run(move |w| locks::contenders(w.conn(), &path)).await
    }

    // --- watches and session ---

    fn watch(&self) -> broadcast::Receiver<StoreEvent> {
        self.subscribe()
    }

    async fn close(&self) -> Result<()> {
        self.close_now().await
    }
}

fn handle(target: &LockTarget, session: i64, seq: i64) -> LockHandle {
    LockHandle {
        target: target.clone(),
        contender: locks::contender_name(session, seq),
    }
}

impl EmbeddedStore {
    /// Joins the line for `target` and waits to reach its front, woken by
    /// every batch of changes this process publishes (its own writes at
    /// once, other processes' within the poll interval).
    async fn lock_blocking(
        &self,
        target: &LockTarget,
        options: &LockOptions,
    ) -> Result<LockHandle> {
        let mut seen = self.inner.shared.seen();
        seen.borrow_and_update();
        let path = target.path();
        let identifier = options.identifier.clone().unwrap_or_default();
        let enqueue_path = path.clone();
        let (session, seq, holds) = self
            .run_in_session(move |w, session| {
                w.write(|tx| locks::enqueue(tx, session, &enqueue_path, &identifier))
                    .map(|(seq, holds)| (session, seq, holds))
            })
            .await?;
        if holds {
            return Ok(handle(target, session, seq));
        }
        // From here on, a cancelled wait leaves the line.
        let mut guard = Waiting {
            shared: Arc::clone(&self.inner.shared),
            path: path.clone(),
            seq,
            armed: true,
        };
        let deadline = options.timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let changed = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, seen.changed()).await,
                None => Ok(seen.changed().await),
            };
            let check_path = path.clone();
            let standing = self
                .run(move |w| locks::standing(w.conn(), &check_path, seq))
                .await?;
            match standing {
                Standing::Holder => {
                    guard.armed = false;
                    return Ok(handle(target, session, seq));
                }
                Standing::Gone => {
                    guard.armed = false;
                    return Err(locks::lost(target));
                }
                Standing::Waiting => {}
            }
            match changed {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(Error::StoreUnavailable(
                        "embedded store worker has stopped".to_string(),
                    ))
                }
                Err(_elapsed) => {
                    guard.armed = false;
                    let remove_path = path.clone();
                    self.run(move |w| w.write(|tx| locks::remove(tx, &remove_path, seq)))
                        .await?;
                    tracing::debug!(target = %path, "lock wait timed out");
                    return Err(Error::LockHeld {
                        target: target.path(),
                    });
                }
            }
        }
    }
}

/// Removes a waiting contender whose wait was cancelled (its future dropped).
struct Waiting {
    shared: Arc<Shared>,
    path: String,
    seq: i64,
    armed: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (path, seq) = (std::mem::take(&mut self.path), self.seq);
        let _ = self.shared.submit(Box::new(move |w: &mut Worker| {
            if let Err(e) = w.write(|tx| locks::remove(tx, &path, seq)) {
                tracing::warn!(error = %e, "leaving a lock line after a cancelled wait failed");
            }
        }));
    }
}
