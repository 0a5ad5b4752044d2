//! Request lock znodes left behind by their requests (upstream's
//! `_cleanupNodeRequestLocks`).
//!
//! A request's lock lives beside it, at `/nodepool/requests-lock/<id>`, not
//! under it: deleting the request (Zuul deletes only the request) or losing
//! it with its requestor's session leaves the lock znode behind for good.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use zookeeper_client::Error as Zk;

use super::ZkStore;
use crate::error::store_error;
use crate::ops::{self, Removed};
use crate::paths;
use nodepool_core::Result;

/// How many stats of request lock znodes are kept in flight.
const STATS_IN_FLIGHT: usize = 32;

impl ZkStore {
    /// Deletes the request lock znodes whose request does not exist, that
    /// are older than `min_age` (by their modification time, as upstream
    /// judges them; it uses 8 hours) and have no contender.
    ///
    /// The requests are listed before the locks, so a request made after
    /// that listing shows up with a lock younger than `min_age`, and is
    /// left alone. Upstream deletes the lock with its contenders and
    /// without locking; here only a lock nobody holds or waits for goes,
    /// with one plain delete that ZooKeeper refuses (`NotEmpty`) if a
    /// contender arrived since the stat, so a lock in use is never taken
    /// from under its holder. One held on a gone request goes on a later
    /// pass, after its holder let it go.
    pub(super) async fn purge_stale_request_locks_impl(&self, min_age: Duration) -> Result<usize> {
        let client = self.client()?;
        let requests: HashSet<String> = ops::children(&client, paths::REQUEST_ROOT)
            .await?
            .into_iter()
            .collect();
        let orphans: Vec<String> = ops::children(&client, paths::REQUEST_LOCK_ROOT)
            .await?
            .into_iter()
            .filter(|id| !requests.contains(id))
            .collect();
        if orphans.is_empty() {
            return Ok(0);
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let min_age_ms = i64::try_from(min_age.as_millis()).unwrap_or(i64::MAX);
        let stats = futures::stream::iter(orphans)
            .map(|id| {
                let client = &client;
                async move {
                    let path = paths::request_lock(&id);
                    let stat = ops::retry_broken("stat", &path, || client.check_stat(&path)).await;
                    (path, stat)
                }
            })
            .buffer_unordered(STATS_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await;
        let mut purged = 0;
        for (path, stat) in stats {
            let stat = match stat {
                Ok(Some(stat)) => stat,
                Ok(None) => continue,
                Err(e) => return Err(store_error("stat", &path, e)),
            };
            if stat.num_children > 0 || now_ms.saturating_sub(stat.mtime) <= min_age_ms {
                continue;
            }
            match ops::remove(&client, &path).await {
                Ok(Removed::Deleted) => {
                    tracing::debug!(path, "removed a stale request lock");
                    purged += 1;
                }
                // Taken again since the stat, or deleted by somebody else.
                Ok(Removed::Missing) | Err(Zk::NotEmpty) => {}
                Err(e) => return Err(store_error("delete", &path, e)),
            }
        }
        if purged > 0 {
            tracing::info!(purged, "removed stale request locks");
        }
        Ok(purged)
    }
}
