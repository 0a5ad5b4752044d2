//! The ZooKeeper client as the store's operations use it: every request
//! is counted from the moment it is handed to the client until its answer
//! (or failure) came back, for upstream's
//! `nodepool.launcher.<hostname>.zk.client.connection_queue` gauge
//! ([`ZkStore::outstanding_requests`](crate::ZkStore::outstanding_requests)).
//!
//! kazoo's gauge is the length of its queue of requests not yet written to
//! the socket. `zookeeper-client` keeps its queue (and the written requests
//! waiting for their reply) private, so the store counts here what it has
//! asked and not had answered, written or not: kazoo's queue plus its
//! requests in flight. Only the wrappers below make requests, so no store
//! operation's request escapes the count; the session's own setup (the
//! watched roots and their watches at connect) is not a store operation
//! and is not counted.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use zookeeper_client::{
    Client, CreateOptions, CreateSequence, Error as Zk, MultiWriteError, MultiWriteResult,
    MultiWriter, OneshotWatcher, SessionId, SessionInfo, Stat,
};

/// Requests handed to the client and not answered yet.
#[derive(Debug, Default)]
pub(crate) struct Outstanding(AtomicUsize);

impl Outstanding {
    /// How many there are now.
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Await `call`, counted as one request until it finishes or is
    /// dropped.
    async fn track<T>(&self, call: impl Future<Output = T>) -> T {
        self.0.fetch_add(1, Ordering::Relaxed);
        let _done = Done(self);
        call.await
    }
}

/// Takes a request off the count when it finishes or is dropped.
struct Done<'a>(&'a Outstanding);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A [`Client`] whose requests are counted in the session's
/// [`Outstanding`]. It offers only the calls the store makes.
#[derive(Debug, Clone)]
pub(crate) struct ZkClient {
    inner: Client,
    outstanding: Arc<Outstanding>,
}

impl ZkClient {
    /// `client`, counting its requests into `outstanding`.
    pub(crate) fn new(client: Client, outstanding: Arc<Outstanding>) -> Self {
        Self {
            inner: client,
            outstanding,
        }
    }

    /// The session's timeout (no request).
    pub(crate) fn session_timeout(&self) -> Duration {
        self.inner.session_timeout()
    }

    /// The session's id (no request).
    pub(crate) fn session_id(&self) -> SessionId {
        self.inner.session_id()
    }

    /// The session's id and password (no request).
    pub(crate) fn session(&self) -> &SessionInfo {
        self.inner.session()
    }

    /// `getData`.
    pub(crate) async fn get_data(&self, path: &str) -> Result<(Vec<u8>, Stat), Zk> {
        self.outstanding.track(self.inner.get_data(path)).await
    }

    /// `exists`.
    pub(crate) async fn check_stat(&self, path: &str) -> Result<Option<Stat>, Zk> {
        self.outstanding.track(self.inner.check_stat(path)).await
    }

    /// `exists` with a watch.
    pub(crate) async fn check_and_watch_stat(
        &self,
        path: &str,
    ) -> Result<(Option<Stat>, OneshotWatcher), Zk> {
        self.outstanding
            .track(self.inner.check_and_watch_stat(path))
            .await
    }

    /// `getChildren`.
    pub(crate) async fn list_children(&self, path: &str) -> Result<Vec<String>, Zk> {
        self.outstanding.track(self.inner.list_children(path)).await
    }

    /// `getEphemerals`.
    pub(crate) async fn list_ephemerals(&self, path: &str) -> Result<Vec<String>, Zk> {
        self.outstanding
            .track(self.inner.list_ephemerals(path))
            .await
    }

    /// kazoo's `ensure_path`: the client's `create`s of the missing
    /// ancestors, one after the other, counted as one request.
    pub(crate) async fn mkdir(&self, path: &str, options: &CreateOptions<'_>) -> Result<(), Zk> {
        self.outstanding
            .track(self.inner.mkdir(path, options))
            .await
    }

    /// `create`.
    pub(crate) async fn create(
        &self,
        path: &str,
        data: &[u8],
        options: &CreateOptions<'_>,
    ) -> Result<(Stat, CreateSequence), Zk> {
        self.outstanding
            .track(self.inner.create(path, data, options))
            .await
    }

    /// `setData`.
    pub(crate) async fn set_data(
        &self,
        path: &str,
        data: &[u8],
        expected_version: Option<i32>,
    ) -> Result<Stat, Zk> {
        self.outstanding
            .track(self.inner.set_data(path, data, expected_version))
            .await
    }

    /// `delete`.
    pub(crate) async fn delete(&self, path: &str, expected_version: Option<i32>) -> Result<(), Zk> {
        self.outstanding
            .track(self.inner.delete(path, expected_version))
            .await
    }

    /// A transaction to fill; [`ZkClient::commit`] sends it.
    pub(crate) fn new_multi_writer(&self) -> MultiWriter<'_> {
        self.inner.new_multi_writer()
    }

    /// `multi`: one request.
    pub(crate) async fn commit(
        &self,
        writer: &mut MultiWriter<'_>,
    ) -> Result<Vec<MultiWriteResult>, MultiWriteError> {
        self.outstanding.track(writer.commit()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_counts_until_it_is_answered_or_dropped() {
        let outstanding = Outstanding::default();
        let (answer, answered) = tokio::sync::oneshot::channel::<()>();
        let call = outstanding.track(answered);
        tokio::pin!(call);
        assert!(futures::poll!(call.as_mut()).is_pending());
        assert_eq!(outstanding.get(), 1);
        let _ = answer.send(());
        let _ = call.await;
        assert_eq!(outstanding.get(), 0);

        let (_keep, never) = tokio::sync::oneshot::channel::<()>();
        let dropped = outstanding.track(never);
        let mut dropped = Box::pin(dropped);
        assert!(futures::poll!(dropped.as_mut()).is_pending());
        assert_eq!(outstanding.get(), 1);
        drop(dropped);
        assert_eq!(outstanding.get(), 0);
    }
}
