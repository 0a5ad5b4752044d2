//! Image validation (ours): an upload of a diskimage with `validation`
//! waits in the `testing` state (the builder leaves it there) until a node
//! booted from it passes the diskimage's hook. Only then is it `ready`, and
//! only `ready` uploads are booted for requests, by us and by upstream.
//!
//! Each pass of a pool worker looks for `testing` uploads whose validation
//! label is in its pool ([`jobs`]). The scheduler is asked whether one more
//! node of that label fits the pool's limits, as for a one-node request;
//! then [`run`] takes the upload's lock (one validator among all launchers
//! and the builder's upload), boots a node from that upload (the node is
//! never ready, never allocated: it goes from `building` to `testing`),
//! runs the hook with the node's JSON on stdin, records the outcome on the
//! upload and deletes the node. A launcher killed meanwhile leaves an
//! unlocked `building` or `testing` node, which the deleter removes, and a
//! `testing` upload, which is validated again.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tracing::{debug, info, warn};

use super::admission;
use super::context::{Context, Snapshot};
use super::deleter::Deleter;
use super::launch::{self, LaunchContext, Outcome};
use super::ledger::{Active, Ledger};
use super::util::now;
use crate::config::{ImageValidation, PoolConfig, ProviderConfig};
use crate::model::{
    ImageUpload, Node, NodeState, UploadState, Validation, VALIDATION_FAILED, VALIDATION_PASSED,
};
use crate::provider::Provider;
use crate::store::{LockOptions, LockTarget};
use crate::tasks::{self, TaskExt};
use crate::Result;

/// The `requestor` written on validation nodes.
pub const VALIDATION_REQUESTOR: &str = "NodePool:validation";

/// One upload to validate in this pool.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    /// The id under which the pool's ledger counts the validation.
    pub(crate) key: String,
    /// The pool label whose node validates the upload.
    pub(crate) label: String,
    /// The upload, `testing`.
    pub(crate) upload: ImageUpload,
    /// The diskimage's `validation`.
    pub(crate) validation: ImageValidation,
}

/// The label that validates `image` in `provider`: the configured one, else
/// the first pool label of the provider that boots the diskimage.
pub(crate) fn validation_label(
    provider: &ProviderConfig,
    image: &str,
    validation: &ImageValidation,
) -> Option<String> {
    let mut labels = provider
        .pools
        .iter()
        .flat_map(|p| p.labels.iter())
        .filter(|l| l.diskimage.as_deref() == Some(image));
    match &validation.label {
        Some(name) => labels.find(|l| &l.name == name).map(|l| l.name.clone()),
        None => labels.next().map(|l| l.name.clone()),
    }
}

/// The uploads this pool validates now: per diskimage with `validation`
/// whose validation label is in this pool, the newest `testing` upload to
/// this provider.
pub(crate) async fn jobs(
    ctx: &Context,
    snapshot: &Snapshot,
    provider_cfg: &ProviderConfig,
    pool_cfg: &PoolConfig,
) -> Result<Vec<Job>> {
    let mut out = Vec::new();
    for image in &snapshot.config.diskimages {
        let Some(validation) = &image.validation else {
            continue;
        };
        if !provider_cfg.diskimages.iter().any(|d| d.name == image.name) {
            continue;
        }
        let Some(label) = validation_label(provider_cfg, &image.name, validation) else {
            continue;
        };
        if !pool_cfg.labels.iter().any(|l| l.name == label) {
            continue;
        }
        let mut newest: Option<ImageUpload> = None;
        for build in ctx.store.list_builds(&image.name).await? {
            for upload in ctx.store.list_uploads(&image.name, &build.id).await? {
                if upload.provider_name != provider_cfg.name
                    || upload.state != Some(UploadState::Testing)
                {
                    continue;
                }
                let newer = match &newest {
                    None => true,
                    Some(n) => upload.state_time.unwrap_or(0.0) > n.state_time.unwrap_or(0.0),
                };
                if newer {
                    newest = Some(upload);
                }
            }
        }
        if let Some(upload) = newest {
            out.push(Job {
                key: format!(
                    "validation-{}-{}-{}-{}",
                    upload.image_name, upload.build_id, upload.provider_name, upload.id
                ),
                label,
                upload,
                validation: validation.clone(),
            });
        }
    }
    Ok(out)
}

/// What a validation needs from its pool worker.
#[derive(Debug, Clone)]
pub(crate) struct Validator {
    pub(crate) ctx: Arc<Context>,
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) deleter: Arc<Deleter>,
    pub(crate) provider: Arc<dyn Provider>,
    pub(crate) provider_cfg: ProviderConfig,
    pub(crate) pool_cfg: PoolConfig,
}

impl Validator {
    /// Enter the job in the ledger (so that later passes count its node
    /// against the pool's limits) before the task starts.
    pub(crate) fn book(&self, job: &Job) {
        self.ledger.start(
            &job.key,
            Active {
                launch_labels: vec![job.label.clone()],
                ..Active::default()
            },
        );
    }

    /// Validate `job`'s upload; the ledger entry is removed at the end.
    pub(crate) async fn run(self, job: Job) {
        let task = format!(
            "validation of image {} build {} upload {} in {}",
            job.upload.image_name, job.upload.build_id, job.upload.id, job.upload.provider_name
        );
        let registry = self.ctx.settings.tasks.clone();
        let validated = self.validate(&job).in_task(&registry, task).await;
        if let Err(e) = validated {
            warn!(error = %e, "image validation did not finish; it runs again later");
        }
        self.ledger.finish(&job.key);
        self.ledger.free_quota();
    }

    async fn validate(&self, job: &Job) -> Result<()> {
        let store = &self.ctx.store;
        let upload = &job.upload;
        let target = LockTarget::ProviderUploads {
            image: upload.image_name.clone(),
            build: upload.build_id.clone(),
            provider: upload.provider_name.clone(),
        };
        let options = LockOptions {
            identifier: Some(self.ctx.settings.hostname.clone()),
            ..LockOptions::try_once()
        };
        tasks::waiting_on(format!("lock {}", target.path()));
        let Ok(upload_lock) = store.lock(&target, &options).await else {
            // Another launcher validates it, or the builder still holds it.
            return Ok(());
        };
        let result = self.validate_locked(job).await;
        let _ = store.unlock(&upload_lock).await;
        result
    }

    async fn validate_locked(&self, job: &Job) -> Result<()> {
        let store = &self.ctx.store;
        let current = store
            .list_uploads(&job.upload.image_name, &job.upload.build_id)
            .await?
            .into_iter()
            .find(|u| u.provider_name == job.upload.provider_name && u.id == job.upload.id);
        let Some(upload) = current.filter(|u| u.state == Some(UploadState::Testing)) else {
            return Ok(());
        };
        info!(
            image = %upload.image_name,
            build = %upload.build_id,
            upload = %upload.id,
            label = %job.label,
            "validating image upload"
        );
        let started = Instant::now();

        let mut node = Node::new(NodeState::Init);
        node.labels = vec![job.label.clone()];
        node.provider = Some(self.provider_cfg.name.clone());
        node.pool = Some(self.pool_cfg.name.clone());
        node.launcher = Some(self.ledger.launcher_id.clone());
        node.requestor = Some(VALIDATION_REQUESTOR.to_string());
        node.comment = Some(format!(
            "validating {} build {} upload {}",
            upload.image_name, upload.build_id, upload.id
        ));
        node.created_time = Some(now());
        let launch_ctx = LaunchContext {
            context: self.ctx.clone(),
            provider: self.provider.clone(),
            runtime: self.ctx.runtime(&self.provider_cfg.name),
            provider_cfg: self.provider_cfg.clone(),
            pool_cfg: self.pool_cfg.clone(),
            request: None,
            validation: Some(upload.clone()),
        };
        node.resources = launch::resources_of(&launch_ctx, &job.label).await;
        let batch = admission::Batch {
            key: job.key.clone(),
            labels: vec![job.label.clone()],
            tenant: None,
        };
        let mut nodes = [node];
        if !admission::admit(&launch_ctx, &self.ledger, &batch, &mut nodes).await? {
            debug!(key = %job.key, "no room for the validation node now; validated later");
            return Ok(());
        }
        let [mut node] = nodes;
        self.ledger.node_created(&job.key, &node.id);
        let node_lock = match store
            .lock(&LockTarget::Node(node.id.clone()), &LockOptions::try_once())
            .await
        {
            Ok(lock) => lock,
            Err(e) => {
                // Unlocked and `init`: the deleter removes it.
                return Err(e);
            }
        };
        launch::prepare(&launch_ctx, &mut node).await;
        node.set_state(NodeState::Building);
        store.update_node(&node).await?;

        launch_ctx.runtime.launches_started(1);
        self.ledger.launching(&job.key, 1);
        let outcome = launch::launch(&launch_ctx, &mut node).await;
        self.ledger.launching(&job.key, -1);
        launch_ctx.runtime.launches_ended(1);

        let verdict = match outcome {
            Outcome::Ready => Some(run_hook(&self.ctx, &job.validation, &node, &upload).await),
            Outcome::Failed => Some(Verdict {
                passed: false,
                log: None,
                reason: "no node booted from the upload".to_string(),
            }),
            // At a cloud limit: not the image's fault; validated again later.
            Outcome::Aborted => None,
        };
        if let Some(verdict) = &verdict {
            self.record(&upload, verdict, started.elapsed()).await?;
        }
        // The node served its purpose (or failed): delete it. A failed or
        // aborted node is left unlocked for the deleter.
        if node.state == Some(NodeState::Testing) {
            self.deleter.delete_locked(node, node_lock).await?;
        } else {
            let _ = store.unlock(&node_lock).await;
            self.deleter.offer(&node.id);
        }
        Ok(())
    }

    /// Store the outcome on the upload: `ready` when it passed, `failed`
    /// with the reason and the log otherwise.
    async fn record(&self, upload: &ImageUpload, verdict: &Verdict, took: Duration) -> Result<()> {
        let mut upload = upload.clone();
        let validation = Validation {
            result: if verdict.passed {
                VALIDATION_PASSED
            } else {
                VALIDATION_FAILED
            }
            .to_string(),
            log: verdict.log.as_ref().map(|p| p.display().to_string()),
            reason: (!verdict.passed).then(|| verdict.reason.clone()),
        };
        upload.set_validation(&validation);
        if verdict.passed {
            info!(
                image = %upload.image_name,
                build = %upload.build_id,
                upload = %upload.id,
                took = ?took,
                "image upload passed its validation; nodes boot from it now"
            );
            upload.set_state(UploadState::Ready);
        } else {
            warn!(
                image = %upload.image_name,
                build = %upload.build_id,
                upload = %upload.id,
                reason = %verdict.reason,
                log = ?verdict.log,
                "image upload failed its validation; nodes keep booting from the previous upload"
            );
            upload.set_state(UploadState::Failed);
        }
        self.ctx
            .counters
            .validation_result(&upload.image_name, verdict.passed, took);
        self.ctx.store.update_upload(&upload).await
    }
}

/// The hook's outcome.
#[derive(Debug, Clone)]
struct Verdict {
    passed: bool,
    log: Option<PathBuf>,
    reason: String,
}

/// Where the hook's output for `upload` goes.
fn log_path(ctx: &Context, upload: &ImageUpload) -> PathBuf {
    let dir = ctx
        .settings
        .validation_log_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("nodepool-validation"));
    dir.join(format!(
        "{}-{}-{}-{}.log",
        upload.image_name, upload.build_id, upload.provider_name, upload.id
    ))
}

/// Run the validation hook for `node`, booted from `upload`: the node's JSON
/// on stdin, its address in the environment, output to the log file, stopped
/// at the timeout.
async fn run_hook(
    ctx: &Context,
    validation: &ImageValidation,
    node: &Node,
    upload: &ImageUpload,
) -> Verdict {
    let log = log_path(ctx, upload);
    let fail = |reason: String, log: Option<PathBuf>| Verdict {
        passed: false,
        log,
        reason,
    };
    if let Some(dir) = log.parent() {
        if let Err(e) = std::fs::create_dir_all(dir) {
            return fail(format!("cannot create {}: {e}", dir.display()), None);
        }
    }
    let out = match std::fs::File::create(&log) {
        Ok(f) => f,
        Err(e) => return fail(format!("cannot create {}: {e}", log.display()), None),
    };
    let err = match out.try_clone() {
        Ok(f) => f,
        Err(e) => return fail(format!("cannot open {}: {e}", log.display()), None),
    };
    let mut command = tokio::process::Command::new(&validation.hook);
    command
        .env("NODEPOOL_NODE_ID", &node.id)
        .env(
            "NODEPOOL_NODE_IP",
            node.interface_ip.as_deref().unwrap_or_default(),
        )
        .env("NODEPOOL_NODE_PORT", node.connection_port.to_string())
        .env(
            "NODEPOOL_NODE_USERNAME",
            node.username.as_deref().unwrap_or_default(),
        )
        .env("NODEPOOL_PROVIDER", &upload.provider_name)
        .env("NODEPOOL_IMAGE", &upload.image_name)
        .env("NODEPOOL_BUILD_ID", &upload.build_id)
        .stdin(Stdio::piped())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            return fail(
                format!("cannot run the hook {}: {e}", validation.hook),
                Some(log),
            )
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        let json = node.to_json();
        // A hook that does not read its input is fine.
        let _ = stdin.write_all(&json).await;
        drop(stdin);
    }
    let timeout = Duration::try_from_secs_f64(validation.timeout)
        .unwrap_or(crate::time::LONGEST_WAIT)
        .min(crate::time::LONGEST_WAIT);
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Verdict {
            passed: true,
            log: Some(log),
            reason: String::new(),
        },
        Ok(Ok(status)) => fail(format!("the hook ended with {status}"), Some(log)),
        Ok(Err(e)) => fail(format!("waiting for the hook failed: {e}"), Some(log)),
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            fail(
                format!("the hook did not finish within {timeout:?}"),
                Some(log),
            )
        }
    }
}
