//! Build scheduling and the build worker (upstream's `BuildWorker`).
//!
//! [`build_due`] decides from plain data whether an image needs a build;
//! [`Builder::build_pass`] checks every diskimage of the config and builds
//! those that do, one at a time, each under the image's build lock
//! ([`LockTarget::ImageBuilds`]) so that builders on other hosts skip it.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::files::{build_base, build_log_path, prune_build_logs, DEFAULT_BUILD_LOG_DIR};
use super::{image_formats, now, Builder};
use crate::config::{Config, DiskImage};
use crate::image_builder::BuildSpec;
use crate::model::{BuildState, ImageBuild};
use crate::store::{LockOptions, LockTarget};
use crate::tasks::during;
use crate::{Error, Result};

/// Why an image is built now.
#[derive(Debug, Clone, PartialEq)]
pub enum BuildReason {
    /// The image has no ready build.
    NoReadyBuild,
    /// The newest ready build is at least `rebuild-age` old.
    Aged {
        /// Its age in seconds.
        age: f64,
    },
    /// The newest ready build lacks formats the config now asks for.
    MissingFormats {
        /// The formats it lacks.
        missing: Vec<String>,
    },
    /// Somebody asked for a build (`nodepool image-build`).
    Requested,
}

/// Whether `diskimage` needs a build, and why. `formats` are the formats
/// to build ([`image_formats`]); `newest_ready` is its newest ready build;
/// `requested` whether a build request exists. Pause and empty formats are
/// checked by the caller. A scheduled reason wins over a request, as
/// upstream checks the schedule first.
pub fn build_due(
    diskimage: &DiskImage,
    formats: &[String],
    newest_ready: Option<&ImageBuild>,
    requested: bool,
    now: f64,
) -> Option<BuildReason> {
    match newest_ready {
        None => return Some(BuildReason::NoReadyBuild),
        Some(build) => {
            let age = now - build.state_time.unwrap_or(0.0);
            if age >= diskimage.rebuild_age as f64 {
                return Some(BuildReason::Aged { age });
            }
            let missing: Vec<String> = formats
                .iter()
                .filter(|f| !build.formats.contains(f))
                .cloned()
                .collect();
            if !missing.is_empty() {
                return Some(BuildReason::MissingFormats { missing });
            }
        }
    }
    requested.then_some(BuildReason::Requested)
}

/// The newest build of `builds` in `state` (by `state_time`).
pub fn newest_build(builds: &[ImageBuild], state: BuildState) -> Option<&ImageBuild> {
    builds
        .iter()
        .filter(|b| b.state == Some(state))
        .fold(None, |best: Option<&ImageBuild>, b| match best {
            Some(x) if x.state_time.unwrap_or(0.0) >= b.state_time.unwrap_or(0.0) => Some(x),
            _ => Some(b),
        })
}

/// What a build pass did for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildOutcome {
    /// The image.
    pub image: String,
    /// The build id.
    pub build_id: String,
    /// Why it was built.
    pub reason: BuildReason,
    /// The final state: ready or failed.
    pub state: BuildState,
}

impl Builder {
    /// Check every diskimage once and build those that need it (one at a
    /// time; each build worker runs its own passes, and an image another
    /// worker is building is skipped, its build lock being held). Errors
    /// are logged per image; returns the builds made.
    pub async fn build_pass(&self, cancel: &CancellationToken) -> Vec<BuildOutcome> {
        let snapshot = self.snapshot();
        let config = snapshot.config;
        let mut outcomes = Vec::new();
        for diskimage in &config.diskimages {
            if cancel.is_cancelled() {
                break;
            }
            let span = tracing::info_span!("image_build", image = %diskimage.name);
            match self
                .check_image(&config, diskimage, cancel)
                .instrument(span)
                .await
            {
                Ok(Some(outcome)) => outcomes.push(outcome),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(image = %diskimage.name, error = %e, "checking image for a build failed")
                }
            }
        }
        outcomes
    }

    async fn check_image(
        &self,
        config: &Config,
        diskimage: &DiskImage,
        cancel: &CancellationToken,
    ) -> Result<Option<BuildOutcome>> {
        if diskimage.pause || self.store.image_paused(&diskimage.name).await? {
            tracing::debug!("image is paused");
            return Ok(None);
        }
        let formats = image_formats(config, diskimage);
        if formats.is_empty() {
            return Ok(None);
        }
        let builds = self.store.list_builds(&diskimage.name).await?;
        let newest = newest_build(&builds, BuildState::Ready).map(|b| b.id.clone());
        let requested = self.store.build_requested(&diskimage.name).await?;
        let Some(reason) = build_due(
            diskimage,
            &formats,
            newest_build(&builds, BuildState::Ready),
            requested,
            now(),
        ) else {
            return Ok(None);
        };
        let Some(images_dir) = config.images_dir.clone() else {
            return Err(Error::InvalidInput {
                message: format!(
                    "cannot build image {}: images-dir is not set",
                    diskimage.name
                ),
            });
        };
        let target = LockTarget::ImageBuilds(diskimage.name.clone());
        let options = LockOptions {
            identifier: Some(self.settings.hostname.clone()),
            ..LockOptions::try_once()
        };
        let lock = match during(
            format!("lock {}", target.path()),
            self.store.lock(&target, &options),
        )
        .await
        {
            Ok(lock) => lock,
            Err(Error::LockHeld { .. }) => {
                tracing::debug!("another builder is building this image");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let result = self
            .build_locked(
                config, diskimage, &formats, images_dir, reason, newest, cancel,
            )
            .await;
        if let Err(e) = self.store.unlock(&lock).await {
            tracing::warn!(error = %e, "releasing the image build lock failed");
        }
        result
    }

    /// Under the image build lock: check again, then build.
    #[allow(clippy::too_many_arguments)]
    async fn build_locked(
        &self,
        config: &Config,
        diskimage: &DiskImage,
        formats: &[String],
        images_dir: PathBuf,
        reason: BuildReason,
        newest_before: Option<String>,
        cancel: &CancellationToken,
    ) -> Result<Option<BuildOutcome>> {
        let name = &diskimage.name;
        // Another builder may have finished a build between our check and
        // the lock.
        let builds = self.store.list_builds(name).await?;
        let newest_now = newest_build(&builds, BuildState::Ready).map(|b| b.id.clone());
        let requested = self.store.build_requested(name).await?;
        if newest_now != newest_before && !requested {
            tracing::debug!("a new build appeared meanwhile");
            return Ok(None);
        }
        if reason == BuildReason::Requested && !requested {
            return Ok(None);
        }
        tracing::info!(?reason, "building image");

        let mut record = ImageBuild::new(name.clone(), BuildState::Building);
        record.builder = Some(self.settings.hostname.clone());
        record.builder_id = Some(self.settings.builder_id.clone());
        record.formats = formats.to_vec();
        let build_id = self.store.create_build(name, &record).await?;

        let log_dir = config
            .build_log_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BUILD_LOG_DIR));
        if let Err(e) = std::fs::create_dir_all(&log_dir) {
            tracing::warn!(dir = %log_dir.display(), error = %e, "cannot create the build log directory");
        }
        if let Err(e) = prune_build_logs(&log_dir, name, config.build_log_retention) {
            tracing::warn!(error = %e, "pruning old build logs failed");
        }
        let spec = BuildSpec {
            diskimage: name.clone(),
            build_id: build_id.clone(),
            elements: diskimage.elements.clone(),
            release: diskimage.release.clone(),
            env_vars: diskimage.env_vars.clone(),
            formats: formats.to_vec(),
            output_base: build_base(&images_dir, name, &build_id),
            log_path: Some(build_log_path(&log_dir, name, &build_id)),
            command: diskimage.dib_cmd.clone(),
            elements_dir: config.elements_dir.clone(),
        };
        let timeout = Duration::from_secs(u64::try_from(diskimage.build_timeout).unwrap_or(0));
        let started = std::time::Instant::now();
        let busy = self.stats.busy(name, None);
        let built = during(
            format!("image builder: image {name} build {build_id}"),
            self.run_image_builder(&spec, timeout, cancel),
        )
        .await;
        drop(busy);
        let sizes = match &built {
            Ok(files) => files.iter().map(|f| (f.format.clone(), f.size)).collect(),
            Err(_) => Vec::new(),
        };
        self.stats
            .build_finished(name, started.elapsed(), built.is_ok(), sizes);

        let mut result = ImageBuild::new(name.clone(), BuildState::Failed);
        result.id = build_id.clone();
        result.builder = Some(self.settings.hostname.clone());
        result.builder_id = Some(self.settings.builder_id.clone());
        result.username = Some(diskimage.username.clone());
        result.python_path = Some(diskimage.python_path.clone());
        result.shell_type = diskimage.shell_type.clone();
        match &built {
            Ok(files) => {
                for f in files {
                    tracing::debug!(format = %f.format, size = f.size, path = %f.path.display(), "image file built");
                }
                result.set_state(BuildState::Ready);
                result.formats = formats.to_vec();
                tracing::info!(build = %build_id, "image is built");
            }
            Err(e) => {
                tracing::error!(build = %build_id, error = %e, "image build failed");
            }
        }

        // If our session was lost during a long build, a cleanup elsewhere
        // may have removed the record: then our files are leftovers.
        let still_ours = matches!(
            self.store.get_build(name, &build_id).await,
            Ok(Some(b)) if b.state == Some(BuildState::Building)
        );
        let stored = if still_ours {
            self.store.update_build(name, &result).await
        } else {
            Err(Error::NotFound {
                kind: "image build",
                id: format!("{name}-{build_id}"),
            })
        };
        if let Err(e) = stored {
            tracing::error!(build = %build_id, error = %e, "cannot record the build result; removing its files");
            if let Err(e) = super::files::delete_local_build(&images_dir, name, &build_id) {
                tracing::warn!(error = %e, "removing build files failed");
            }
            return Ok(Some(BuildOutcome {
                image: name.clone(),
                build_id,
                reason,
                state: BuildState::Failed,
            }));
        }
        if built.is_err() {
            // The builder removes its partial outputs; make sure.
            if let Err(e) = super::files::delete_local_build(&images_dir, name, &build_id) {
                tracing::warn!(error = %e, "removing failed build files failed");
            }
        } else if requested {
            self.store.set_build_requested(name, false).await?;
        }
        Ok(Some(BuildOutcome {
            image: name.clone(),
            build_id,
            reason,
            state: result.state.unwrap_or(BuildState::Failed),
        }))
    }

    /// Run the image builder, stopping it after `timeout` or on `cancel`.
    async fn run_image_builder(
        &self,
        spec: &BuildSpec,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<Vec<crate::image_builder::BuiltFile>> {
        let child = cancel.child_token();
        let build = self.image_builder.build(spec, child.clone());
        tokio::pin!(build);
        tokio::select! {
            result = &mut build => result,
            _ = tokio::time::sleep(timeout) => {
                tracing::error!(timeout = ?timeout, "build timed out; stopping it");
                child.cancel();
                let _ = build.await;
                Err(Error::Timeout { what: format!("build {} of image {}", spec.build_id, spec.diskimage), after: timeout })
            }
        }
    }
}
