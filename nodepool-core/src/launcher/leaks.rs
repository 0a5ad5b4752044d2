//! Leaked instances: instances carrying our provider's metadata whose node
//! the store does not know. Upstream deletes one when it sees it leaked in
//! two cleanup passes; here, once it has been seen leaked for
//! [`LauncherSettings::leak_grace`](super::settings::LauncherSettings::leak_grace).
//! After each provider's instances, its
//! [`cleanup_leaked_resources`](crate::provider::Provider::cleanup_leaked_resources)
//! deletes what leaks without metadata (OpenStack's ports and floating
//! IPs); the counts go to the launcher's counters.

use std::collections::HashMap;
use std::time::Instant;

use tracing::{debug, info, warn};

use super::context::Context;
use crate::provider::for_each_instance;
use crate::Result;

/// When each possibly leaked instance was first seen.
#[derive(Debug, Default)]
pub(crate) struct LeakTracker {
    first_seen: HashMap<(String, String), Instant>,
}

impl LeakTracker {
    /// One pass over every provider that can list its instances.
    pub(crate) async fn pass(&mut self, ctx: &Context) -> Result<()> {
        // Nodes first: an instance is created after its node record, so an
        // instance newer than this listing is at worst "seen" once and spared
        // by the grace period.
        ctx.nodes.sync(&*ctx.store).await?;
        let mut still_leaked = HashMap::new();
        for (name, provider) in ctx.all_providers() {
            if !provider.capabilities().instance_listing {
                continue;
            }
            // The instances of ours whose node the cache (as synced above)
            // does not know; a sync since only adds nodes created meanwhile
            // or drops nodes being deleted. Walked page by page, deleted
            // after the walk (deleting a page's marker would break it).
            let mut unknown: Vec<(String, String)> = Vec::new();
            let listed = for_each_instance(&*provider, |instance| {
                let Some(node_id) = instance.node_id_of(&name) else {
                    return;
                };
                let known = ctx
                    .nodes
                    .with(|nodes| nodes.get(node_id).is_some_and(|n| n.provider_is(&name)));
                if !known {
                    let node_id = node_id.to_string();
                    unknown.push((instance.external_id, node_id));
                }
            })
            .await;
            if let Err(e) = listed {
                warn!(provider = %name, error = %e, "cannot list instances");
                // Keep what we knew about this provider.
                for (k, v) in &self.first_seen {
                    if k.0 == name {
                        still_leaked.insert(k.clone(), *v);
                    }
                }
                continue;
            }
            for (external_id, node_id) in unknown {
                let key = (name.clone(), external_id.clone());
                let first = self
                    .first_seen
                    .get(&key)
                    .copied()
                    .unwrap_or_else(Instant::now);
                if first.elapsed() >= ctx.settings.leak_grace {
                    info!(
                        provider = %name,
                        node_id = %node_id,
                        external_id = %external_id,
                        "deleting leaked instance"
                    );
                    match provider.delete_instance(&external_id).await {
                        Ok(()) => ctx.counters.leaked_instance_deleted(&name),
                        Err(e) => {
                            warn!(external_id = %external_id, error = %e, "cannot delete leaked instance");
                            still_leaked.insert(key, first);
                        }
                    }
                } else {
                    debug!(provider = %name, node_id = %node_id, "possibly leaked instance");
                    still_leaked.insert(key, first);
                }
            }
            // What leaks without our metadata (ports, floating IPs): the
            // driver cleans it after the listing, as upstream's
            // `listResources` does at its end.
            match provider.cleanup_leaked_resources().await {
                Ok(cleaned) => {
                    for (kind, count) in cleaned.deleted {
                        if count > 0 {
                            info!(provider = %name, kind, count, "deleted leaked resources");
                            ctx.counters.leaked_resources_deleted(&name, kind, count);
                        }
                    }
                }
                Err(e) => warn!(provider = %name, error = %e, "leaked resource cleanup failed"),
            }
        }
        self.first_seen = still_leaked;
        Ok(())
    }
}
