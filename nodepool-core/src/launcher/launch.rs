//! Launching one node: metadata, `create_instance`, recording the instance
//! id at once, waiting for it to become active, the optional ready hook, and
//! `launch-retries` attempts (upstream's `StateMachineNodeLauncher`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::context::{Context, ProviderRuntime};
use super::input::label_resources;
use super::nodes::resources_json;
use super::stats::{Counter, LaunchKey};
use crate::builder::newest_ready_upload_in as newest_upload;
use crate::config::{PoolConfig, PoolLabel, ProviderConfig};
use crate::model::json::JsonObject;
use crate::model::{ImageUpload, Node, NodeState};
use crate::provider::{
    ImageRef, Instance, LaunchSpec, Provider, Resources, META_GROUPS, META_IMAGE, META_NODE_ID,
    META_POOL, META_PROVIDER,
};
use crate::retry::RetryDecision;
use crate::tasks::{self, during, TaskExt};
use crate::time::LONGEST_WAIT;
use crate::{Error, Result};

/// How a launch ended. The node record was updated accordingly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The node is `ready`.
    Ready,
    /// Every attempt failed; the node is `failed`.
    Failed,
    /// The cloud is out of quota; the node is `aborted`.
    Aborted,
}

/// What a launch needs besides the node.
#[derive(Debug, Clone)]
pub(crate) struct LaunchContext {
    pub(crate) context: Arc<Context>,
    pub(crate) provider: Arc<dyn Provider>,
    pub(crate) runtime: Arc<ProviderRuntime>,
    pub(crate) provider_cfg: ProviderConfig,
    pub(crate) pool_cfg: PoolConfig,
    /// The safe attributes of the request being handled (for the
    /// provider's templates).
    pub(crate) request: Option<serde_json::Value>,
    /// The upload under validation: the node boots from it (not the newest
    /// ready one) and ends `testing`, never `ready` (see `validate.rs`).
    pub(crate) validation: Option<ImageUpload>,
}

impl LaunchContext {
    fn label(&self, node: &Node) -> Option<&PoolLabel> {
        let name = node.labels.first()?;
        self.pool_cfg.labels.iter().find(|l| &l.name == name)
    }
}

/// Fill the node's fields known before launching (image, login, resources):
/// the caller stores them with the `building` state.
pub(crate) async fn prepare(ctx: &LaunchContext, node: &mut Node) {
    let Some(label) = ctx.label(node).cloned() else {
        return;
    };
    node.image_id = label
        .cloud_image
        .clone()
        .or_else(|| label.diskimage.clone());
    node.username = Some(label.username.clone().unwrap_or_else(|| "zuul".to_string()));
    node.python_path = label.python_path.clone();
    node.shell_type = label.shell_type.clone();
    node.connection_type = label.connection_type.clone();
    if let Some(port) = label.connection_port {
        node.connection_port = port;
    }
    node.hostname = Some(format!("np{}", node.id));
    if let Some(r) = resources_of(ctx, &label.name).await {
        node.resources = Some(r);
    }
}

/// The `resources` record of a node of `label` in this pool (`None` when
/// the provider cannot size it).
pub(crate) async fn resources_of(ctx: &LaunchContext, label: &str) -> Option<JsonObject> {
    match label_resources(&*ctx.provider, &ctx.runtime, &ctx.pool_cfg.name, label).await {
        Ok(r) => Some(resources_json(&r)),
        Err(e) => {
            debug!(error = %e, "label resources unknown");
            None
        }
    }
}

/// The instance metadata upstream sets: the nodepool keys and `groups`
/// (`"<provider>,<image>,<label>"`).
pub(crate) fn metadata(
    provider: &str,
    pool: &str,
    node_id: &str,
    label: &PoolLabel,
) -> BTreeMap<String, String> {
    let image_name = label
        .diskimage
        .clone()
        .or_else(|| label.cloud_image.clone())
        .unwrap_or_default();
    let mut meta = BTreeMap::new();
    meta.insert(
        META_GROUPS.to_string(),
        [provider, image_name.as_str(), label.name.as_str()].join(","),
    );
    meta.insert(META_NODE_ID.to_string(), node_id.to_string());
    meta.insert(META_POOL.to_string(), pool.to_string());
    meta.insert(META_PROVIDER.to_string(), provider.to_string());
    if let Some(diskimage) = &label.diskimage {
        meta.insert(META_IMAGE.to_string(), diskimage.clone());
    }
    meta
}

/// Launch `node` (locked, `building`, stored) until ready, failed or
/// aborted. The node record is kept up to date in the store. The launch is
/// a task of its own in the launcher's registry, saying which cloud call it
/// waits on.
pub(crate) async fn launch(ctx: &LaunchContext, node: &mut Node) -> Outcome {
    let task = format!(
        "launch of node {} in {}/{}",
        node.id, ctx.provider_cfg.name, ctx.pool_cfg.name
    );
    let registry = ctx.context.settings.tasks.clone();
    launch_with_retries(ctx, node)
        .in_task(&registry, task)
        .await
}

async fn launch_with_retries(ctx: &LaunchContext, node: &mut Node) -> Outcome {
    let started = Instant::now();
    let retries = u32::try_from(ctx.provider_cfg.launch_retries.max(1)).unwrap_or(u32::MAX);
    let policy = &ctx.context.settings.retry_policy;
    let mut attempt: u32 = 0;
    loop {
        attempt = attempt.saturating_add(1);
        match attempt_once(ctx, node).await {
            Ok(()) => {
                record(ctx, node, "ready", started);
                ctx.context.counters.launch_ready(started.elapsed());
                info!(attempt, took = ?started.elapsed(), "node is ready");
                return Outcome::Ready;
            }
            Err(e) => {
                let decision = policy.decide(&e, attempt, retries);
                if decision == RetryDecision::Pause {
                    // Not a failure: the request is handled again once the
                    // cloud has room (cleanup deletes an instance it kept).
                    info!(error = %e, "aborting node: the cloud is at a limit");
                    ctx.runtime.invalidate_quota();
                    record(ctx, node, "error.quota", started);
                    ctx.context.counters.bump(Counter::LaunchesAborted);
                    node.set_state(NodeState::Aborted);
                    store_node(ctx, node).await;
                    return Outcome::Aborted;
                }
                warn!(
                    attempt,
                    retries,
                    kind = ?e.kind(),
                    ?decision,
                    error = %e,
                    "launch attempt failed"
                );
                record(ctx, node, result_key(&e), started);
                if let Some(external_id) = node.external_id.clone() {
                    let what = format!(
                        "provider delete_instance {} instance {external_id} (failed attempt)",
                        ctx.provider_cfg.name
                    );
                    if let Err(e) = during(what, ctx.provider.delete_instance(&external_id)).await {
                        warn!(%external_id, error = %e, "could not delete the failed instance");
                        // Keep the id so cleanup deletes it with the node.
                        node.set_state(NodeState::Failed);
                        store_node(ctx, node).await;
                        ctx.context.counters.bump(Counter::LaunchesFailed);
                        return Outcome::Failed;
                    }
                    node.external_id = None;
                }
                if decision == RetryDecision::Fail {
                    ctx.context.counters.bump(Counter::LaunchesFailed);
                    node.set_state(NodeState::Failed);
                    store_node(ctx, node).await;
                    return Outcome::Failed;
                }
            }
        }
    }
}

/// Upstream's statsd result key of a failed attempt: `error.zksession`
/// when the node's lock was lost, else `error.unknown` (upstream's
/// exception-specific keys have no counterpart in [`Error`]).
fn result_key(e: &Error) -> &'static str {
    match e {
        Error::LockLost { .. } => "error.zksession",
        _ => "error.unknown",
    }
}

/// Count one attempt's result under upstream's launch keys, timed from
/// the start of the launch (upstream's `recordLaunchStats`).
fn record(ctx: &LaunchContext, node: &Node, result: &'static str, started: Instant) {
    let key = LaunchKey {
        provider: ctx.provider_cfg.name.clone(),
        az: node.az.clone().filter(|az| !az.is_empty()),
        requestor: node.requestor.clone(),
        result,
    };
    ctx.context.counters.launch_result(key, started.elapsed());
}

async fn store_node(ctx: &LaunchContext, node: &Node) {
    if let Err(e) = ctx.context.store.update_node(node).await {
        warn!(error = %e, "could not store the node");
    }
}

/// One attempt: create, record the id, wait, check, mark ready.
async fn attempt_once(ctx: &LaunchContext, node: &mut Node) -> Result<()> {
    let label = ctx.label(node).cloned().ok_or_else(|| Error::NotFound {
        kind: "label",
        id: format!("{:?} in pool {}", node.labels.first(), ctx.pool_cfg.name),
    })?;
    let image = match (&label.diskimage, &label.cloud_image) {
        (Some(diskimage), _) => {
            let upload = match &ctx.validation {
                Some(upload) => Some(upload.clone()),
                None => {
                    newest_upload(&*ctx.context.store, diskimage, &ctx.provider_cfg.name).await?
                }
            }
            .ok_or_else(|| Error::NotFound {
                kind: "current cloud image",
                id: format!("{diskimage} in {}", ctx.provider_cfg.name),
            })?;
            node.image_id = Some(format!(
                "/nodepool/images/{diskimage}/builds/{}/providers/{}/images/{}",
                upload.build_id, ctx.provider_cfg.name, upload.id
            ));
            Some(ImageRef::Uploaded {
                diskimage: diskimage.clone(),
                external_id: upload.external_id.unwrap_or_default(),
            })
        }
        (None, Some(cloud)) => Some(ImageRef::Cloud(cloud.clone())),
        (None, None) => None,
    };
    let spec = LaunchSpec {
        node_id: node.id.clone(),
        pool: ctx.pool_cfg.name.clone(),
        label: label.name.clone(),
        hostname: format!("np{}", node.id),
        image,
        metadata: metadata(&ctx.provider_cfg.name, &ctx.pool_cfg.name, &node.id, &label),
        az: node.az.clone(),
        request: ctx.request.clone(),
    };
    let provider = &ctx.provider_cfg.name;
    let what = format!("provider create_instance {provider} node {}", node.id);
    let created = during(what, ctx.provider.create_instance(&spec)).await?;
    // Record the id before waiting: a crash from here on leaks nothing.
    node.external_id = Some(created.external_id.clone());
    ctx.context.store.update_node(node).await?;

    let launch_timeout = secs(ctx.provider_cfg.launch_timeout, 3600.0);
    let what = format!(
        "provider wait_active {provider} node {} instance {}",
        node.id, created.external_id
    );
    let instance = during(
        what,
        ctx.provider
            .wait_active(&created.external_id, launch_timeout),
    )
    .await?;
    fill_from_instance(node, &instance);
    let unset = match &node.node_properties {
        None => true,
        Some(p) => p.is_empty(),
    };
    if unset && created.node_properties.is_some() {
        node.node_properties = created.node_properties.clone();
    }

    if let Some(hook) = &ctx.context.settings.ready_hook {
        let boot_timeout = secs(ctx.provider_cfg.boot_timeout, 60.0);
        tasks::waiting_on(format!("ready check (host keys) of node {}", node.id));
        let checked = tokio::time::timeout(boot_timeout, hook.check(node, &label.name, &instance))
            .await
            .map_err(|_| Error::Timeout {
                what: format!("node {} to pass its ready check", node.id),
                after: boot_timeout,
            })
            .and_then(|keys| keys);
        let keys = match checked {
            Ok(keys) => keys,
            Err(e) => {
                log_console(ctx, &label.name, &instance.external_id).await;
                return Err(e);
            }
        };
        if !keys.is_empty() {
            node.host_keys = keys;
        }
    }
    node.set_state(if ctx.validation.is_some() {
        NodeState::Testing
    } else {
        NodeState::Ready
    });
    ctx.context.store.update_node(node).await
}

/// Log the console of an instance whose ready check (upstream's key scan)
/// failed, line by line, when its label asks for it (upstream's
/// `getConsoleLog` after a `LaunchKeyscanException`). A failure to read it
/// is only noted: the launch attempt has failed already.
async fn log_console(ctx: &LaunchContext, label: &str, external_id: &str) {
    match ctx
        .provider
        .console_log(&ctx.pool_cfg.name, label, external_id)
        .await
    {
        Ok(Some(console)) => {
            info!(%external_id, "Console log from external id {external_id}:");
            for line in console.lines() {
                info!(%external_id, "{}", line.trim_end());
            }
        }
        Ok(None) => {}
        Err(e) => debug!(%external_id, error = %e, "cannot read the console log"),
    }
}

/// `value` seconds (`default` when not positive or NaN); a value beyond
/// what a `Duration` holds (`1e30`, `.inf`) waits as long as one can.
pub(super) fn secs(value: f64, default: f64) -> Duration {
    let v = if value > 0.0 { value } else { default };
    Duration::try_from_secs_f64(v).map_or(LONGEST_WAIT, |d| d.min(LONGEST_WAIT))
}

/// Copy what the cloud reports onto the node.
fn fill_from_instance(node: &mut Node, instance: &Instance) {
    node.external_id = Some(instance.external_id.clone());
    node.interface_ip = instance.interface_ip.clone();
    node.public_ipv4 = instance.public_ipv4.clone();
    node.private_ipv4 = instance.private_ipv4.clone();
    node.public_ipv6 = instance.public_ipv6.clone();
    node.host_id = instance.host_id.clone();
    if instance.cloud.is_some() {
        node.cloud = instance.cloud.clone();
    }
    if instance.region.is_some() {
        node.region = instance.region.clone();
    }
    if instance.az.is_some() {
        node.az = instance.az.clone();
    }
    if let Some(port) = instance.connection_port {
        node.connection_port = i64::from(port);
    }
    if instance.connection_type.is_some() {
        node.connection_type = instance.connection_type.clone();
    }
    if instance.connection_details.is_some() {
        node.connection_port = 22;
        node.connection_details = instance.connection_details.clone();
    }
    if !instance.host_keys.is_empty() {
        node.host_keys = instance.host_keys.clone();
    }
    if instance.node_properties.is_some() {
        node.node_properties = instance.node_properties.clone();
    }
    // What the cloud reports wins (upstream takes the instance's quota);
    // other resources the node was sized with and the instance does not
    // report (an OpenStack boot volume: Nova's server shows no size) stay.
    if instance.resources.is_known() {
        let mut r = instance.resources.clone();
        if let Some(before) = node.resources.as_ref().map(Resources::from_node_json) {
            for (name, amount) in before.other.iter() {
                if r.other.get(name).is_none() {
                    r.other.set(name, amount);
                }
            }
        }
        node.resources = Some(resources_json(&r));
    }
}
