//! The builder's statsd metrics with upstream nodepool's names, enabled
//! like the launcher's (`STATSD_HOST`, see [`super::statsd`]):
//!
//! - after each build, `nodepool.dib_image_build.<image>.status.duration`
//!   (timer), `.status.rc` and `.status.last_build` (gauges), and after a
//!   successful one `nodepool.dib_image_build.<image>.<format>.size`;
//! - after each upload that became ready,
//!   `nodepool.image_update.<image>.<provider>` (counter and timer);
//! - every ten seconds (upstream: each cleanup pass), the gauges
//!   `nodepool.builder.<hostname>.image.<image>.build.state`,
//!   `nodepool.builder.<hostname>.image.<image>.provider.<p>.upload.state`
//!   (0 idle, 1 building, 2 uploading, 3 paused),
//!   `nodepool.image.<image>.image_build_requests` and
//!   `nodepool.image_build_requests`.
//!
//! The builder's figures are read once a second; what finished since the
//! last read is sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use nodepool_core::builder::{BuilderStatsSnapshot, ImageStatus};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::statsd::{count_and_time, StatsdSettings};

/// The image status being read.
pub(crate) type StatusFuture =
    Pin<Box<dyn Future<Output = nodepool_core::Result<Vec<ImageStatus>>> + Send>>;

/// Where the reporter reads the builder's figures.
pub(crate) struct BuilderStatsSource {
    /// Builds and uploads finished.
    pub(crate) stats: Arc<dyn Fn() -> BuilderStatsSnapshot + Send + Sync>,
    /// What the builder is doing with each image.
    pub(crate) status: Arc<dyn Fn() -> StatusFuture + Send + Sync>,
    /// This builder's host name, for `nodepool.builder.<hostname>`.
    pub(crate) hostname: String,
}

/// Start reporting until `cancel`; the task ends with it.
pub(crate) fn spawn(
    settings: StatsdSettings,
    source: BuilderStatsSource,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = run(&settings, &source, &cancel).await {
            warn!(target = %settings.target, "statsd reporting stopped: {e}");
        }
    })
}

async fn run(
    settings: &StatsdSettings,
    source: &BuilderStatsSource,
    cancel: &CancellationToken,
) -> std::io::Result<()> {
    let socket = super::statsd::connect(settings).await?;
    let mut previous = BuilderStatsSnapshot::default();
    let mut next_status = tokio::time::Instant::now();
    loop {
        let stop = tokio::select! {
            _ = cancel.cancelled() => true,
            _ = tokio::time::sleep(settings.min_interval) => false,
        };
        let now = (source.stats)();
        let mut lines = builder_lines(&previous, &now);
        previous = now;
        if tokio::time::Instant::now() >= next_status {
            next_status = tokio::time::Instant::now() + settings.interval;
            match (source.status)().await {
                Ok(status) => lines.extend(status_lines(&status, &source.hostname)),
                Err(e) => debug!("statsd: image status not readable: {e}"),
            }
        }
        super::statsd::send(&socket, settings, &lines).await;
        if stop {
            return Ok(());
        }
    }
}

/// Upstream's `_emitBuildRequestStats` gauges for `status`.
pub(crate) fn status_lines(status: &[ImageStatus], hostname: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut requests = 0;
    for image in status {
        let name = &image.name;
        out.push(format!(
            "nodepool.builder.{hostname}.image.{name}.build.state:{}|g",
            image.build_state
        ));
        for (provider, state) in &image.uploads {
            out.push(format!(
                "nodepool.builder.{hostname}.image.{name}.provider.{provider}.upload.state:{state}|g"
            ));
        }
        let n = u8::from(image.build_requested);
        requests += u32::from(n);
        out.push(format!("nodepool.image.{name}.image_build_requests:{n}|g"));
    }
    out.push(format!("nodepool.image_build_requests:{requests}|g"));
    out
}

/// The lines for the builds and uploads that finished between two
/// snapshots.
pub(crate) fn builder_lines(
    before: &BuilderStatsSnapshot,
    now: &BuilderStatsSnapshot,
) -> Vec<String> {
    let mut out = Vec::new();
    for (image, build) in &now.builds {
        let old = before
            .builds
            .iter()
            .find(|(i, _)| i == image)
            .map_or(0, |(_, b)| b.count);
        if build.count <= old {
            continue;
        }
        for (format, size) in &build.sizes {
            out.push(format!(
                "nodepool.dib_image_build.{image}.{format}.size:{size}|g"
            ));
        }
        let base = format!("nodepool.dib_image_build.{image}.status");
        out.push(format!("{base}.duration:{}|ms", build.millis));
        out.push(format!("{base}.rc:{}|g", build.rc));
        out.push(format!("{base}.last_build:{}|g", build.finished_unix));
    }
    for (key, totals) in &now.uploads {
        let old = before
            .uploads
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, t)| *t)
            .unwrap_or_default();
        let n = totals.count.saturating_sub(old.count);
        if n == 0 {
            continue;
        }
        let millis = totals.millis.saturating_sub(old.millis);
        let name = format!("nodepool.image_update.{}.{}", key.0, key.1);
        count_and_time(&mut out, &name, n, millis);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodepool_core::builder::{BuildResult, UploadTotals};

    #[test]
    fn finished_builds_and_uploads_send_upstreams_names_once() {
        let now = BuilderStatsSnapshot {
            builds: vec![(
                "ubuntu".to_owned(),
                BuildResult {
                    count: 1,
                    millis: 1234,
                    rc: 0,
                    finished_unix: 1_700_000_000,
                    sizes: vec![("qcow2".to_owned(), 4096)],
                },
            )],
            uploads: vec![(
                ("ubuntu".to_owned(), "cloud1".to_owned()),
                UploadTotals {
                    count: 1,
                    millis: 50,
                },
            )],
        };
        assert_eq!(
            builder_lines(&BuilderStatsSnapshot::default(), &now),
            [
                "nodepool.dib_image_build.ubuntu.qcow2.size:4096|g",
                "nodepool.dib_image_build.ubuntu.status.duration:1234|ms",
                "nodepool.dib_image_build.ubuntu.status.rc:0|g",
                "nodepool.dib_image_build.ubuntu.status.last_build:1700000000|g",
                "nodepool.image_update.ubuntu.cloud1:1|c",
                "nodepool.image_update.ubuntu.cloud1:50|ms",
            ]
        );
        assert!(builder_lines(&now, &now).is_empty());
    }

    #[test]
    fn image_status_sends_upstreams_state_and_request_gauges() {
        let status = [ImageStatus {
            name: "ubuntu".to_owned(),
            build_state: nodepool_core::builder::STATUS_BUILDING,
            uploads: vec![("cloud1".to_owned(), nodepool_core::builder::STATUS_PAUSED)],
            build_requested: true,
        }];
        assert_eq!(
            status_lines(&status, "b1"),
            [
                "nodepool.builder.b1.image.ubuntu.build.state:1|g",
                "nodepool.builder.b1.image.ubuntu.provider.cloud1.upload.state:3|g",
                "nodepool.image.ubuntu.image_build_requests:1|g",
                "nodepool.image_build_requests:1|g",
            ]
        );
    }
}
