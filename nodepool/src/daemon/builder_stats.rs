//! The builder's statsd metrics with upstream nodepool's names, enabled
//! like the launcher's (`STATSD_HOST`, see [`super::statsd`]):
//!
//! - after each build, `nodepool.dib_image_build.<image>.status.duration`
//!   (timer), `.status.rc` and `.status.last_build` (gauges), and after a
//!   successful one `nodepool.dib_image_build.<image>.<format>.size`;
//! - after each upload that became ready,
//!   `nodepool.image_update.<image>.<provider>` (counter and timer).
//!
//! The builder's figures are read once a second; what finished since the
//! last read is sent.

use std::sync::Arc;

use nodepool_core::builder::BuilderStatsSnapshot;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::statsd::{count_and_time, datagrams, StatsdSettings};

/// Where the reporter reads the builder's figures.
pub(crate) type BuilderStatsSource = Arc<dyn Fn() -> BuilderStatsSnapshot + Send + Sync>;

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
    let socket = UdpSocket::bind(if settings.target.starts_with('[') {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    })
    .await?;
    socket.connect(&settings.target).await?;
    info!(target = %settings.target, "reporting to statsd");
    let mut previous = BuilderStatsSnapshot::default();
    loop {
        let stop = tokio::select! {
            _ = cancel.cancelled() => true,
            _ = tokio::time::sleep(settings.min_interval) => false,
        };
        let now = source();
        let lines = builder_lines(&previous, &now);
        previous = now;
        for datagram in datagrams(&lines, settings.prefix.as_deref()) {
            if let Err(e) = socket.send(datagram.as_bytes()).await {
                debug!("statsd send failed: {e}");
            }
        }
        if stop {
            return Ok(());
        }
    }
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
}
