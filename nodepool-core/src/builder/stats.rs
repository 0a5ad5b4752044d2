//! What the builder counts for metrics: upstream's
//! `nodepool.dib_image_build.<image>.*` (the last build of each image) and
//! `nodepool.image_update.<image>.<provider>` (uploads). Keyed by image and
//! provider names of the config: few keys.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The last build of one image, and how many builds finished.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BuildResult {
    /// Builds of the image that finished (succeeded or failed).
    pub count: u64,
    /// How long the last one took, in milliseconds.
    pub millis: u64,
    /// Its exit status: 0 when it succeeded, 1 when it failed (the image
    /// builder's own status is not kept).
    pub rc: i64,
    /// When it finished, in seconds since the Unix epoch.
    pub finished_unix: u64,
    /// The size in bytes of each format it built (empty when it failed).
    pub sizes: Vec<(String, u64)>,
}

/// Uploads that became ready for one image and provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UploadTotals {
    /// Uploads counted.
    pub count: u64,
    /// Their durations summed, in milliseconds.
    pub millis: u64,
}

/// The builder's figures at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BuilderStatsSnapshot {
    /// The last build of each image, by image name.
    pub builds: Vec<(String, BuildResult)>,
    /// Ready uploads by (image, provider).
    pub uploads: Vec<((String, String), UploadTotals)>,
}

/// Upstream's worker status values (`builder.py`).
pub const STATUS_IDLE: u8 = 0;
/// An image being built.
pub const STATUS_BUILDING: u8 = 1;
/// An image being uploaded to a provider.
pub const STATUS_UPLOADING: u8 = 2;
/// Builds of an image, or its uploads to a provider, paused.
pub const STATUS_PAUSED: u8 = 3;

/// What the builder is doing with one image (upstream's
/// `_emitBuildRequestStats`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageStatus {
    /// The image name.
    pub name: String,
    /// [`STATUS_IDLE`], [`STATUS_BUILDING`] or [`STATUS_PAUSED`].
    pub build_state: u8,
    /// Per provider the image goes to: [`STATUS_IDLE`],
    /// [`STATUS_UPLOADING`] or [`STATUS_PAUSED`].
    pub uploads: Vec<(String, u8)>,
    /// Whether an `image-build` request is pending.
    pub build_requested: bool,
}

/// Images being built (`None`) and uploaded (to `Some(provider)`).
type BusySet = Arc<Mutex<BTreeSet<(String, Option<String>)>>>;

/// The builder's counters, shared by its tasks.
#[derive(Debug, Default)]
pub(crate) struct BuilderStats {
    builds: Mutex<BTreeMap<String, BuildResult>>,
    uploads: Mutex<BTreeMap<(String, String), UploadTotals>>,
    /// Images being built and (image, provider) being uploaded.
    busy: BusySet,
}

/// Marks an image build or upload busy until dropped.
#[derive(Debug)]
pub(crate) struct Busy {
    set: BusySet,
    key: (String, Option<String>),
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.key);
        }
    }
}

fn millis(took: Duration) -> u64 {
    u64::try_from(took.as_millis()).unwrap_or(u64::MAX)
}

impl BuilderStats {
    /// Record a finished build of `image`.
    pub(crate) fn build_finished(
        &self,
        image: &str,
        took: Duration,
        succeeded: bool,
        sizes: Vec<(String, u64)>,
    ) {
        let finished_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Ok(mut map) = self.builds.lock() {
            let entry = map.entry(image.to_string()).or_default();
            *entry = BuildResult {
                count: entry.count.saturating_add(1),
                millis: millis(took),
                rc: if succeeded { 0 } else { 1 },
                finished_unix,
                sizes,
            };
        }
    }

    /// Record an upload of `image` to `provider` that became ready.
    pub(crate) fn upload_ready(&self, image: &str, provider: &str, took: Duration) {
        if let Ok(mut map) = self.uploads.lock() {
            let totals = map
                .entry((image.to_string(), provider.to_string()))
                .or_default();
            totals.count = totals.count.saturating_add(1);
            totals.millis = totals.millis.saturating_add(millis(took));
        }
    }

    /// Mark `image` being built (`provider: None`) or uploaded to
    /// `provider` until the guard is dropped.
    pub(crate) fn busy(&self, image: &str, provider: Option<&str>) -> Busy {
        let key = (image.to_string(), provider.map(str::to_string));
        if let Ok(mut set) = self.busy.lock() {
            set.insert(key.clone());
        }
        Busy {
            set: Arc::clone(&self.busy),
            key,
        }
    }

    /// Whether `image` is being built (`provider: None`) or uploaded to
    /// `provider`.
    pub(crate) fn is_busy(&self, image: &str, provider: Option<&str>) -> bool {
        self.busy
            .lock()
            .is_ok_and(|set| set.contains(&(image.to_string(), provider.map(str::to_string))))
    }

    /// The current figures.
    pub(crate) fn snapshot(&self) -> BuilderStatsSnapshot {
        BuilderStatsSnapshot {
            builds: self
                .builds
                .lock()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            uploads: self
                .uploads
                .lock()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_keep_the_last_result_and_uploads_sum() {
        let stats = BuilderStats::default();
        stats.build_finished("img", Duration::from_millis(10), false, vec![]);
        stats.build_finished(
            "img",
            Duration::from_millis(20),
            true,
            vec![("qcow2".to_string(), 5)],
        );
        stats.upload_ready("img", "p", Duration::from_millis(3));
        stats.upload_ready("img", "p", Duration::from_millis(4));
        let snap = stats.snapshot();
        let (name, build) = &snap.builds[0];
        assert_eq!(name, "img");
        assert_eq!((build.count, build.millis, build.rc), (2, 20, 0));
        assert_eq!(build.sizes, [("qcow2".to_string(), 5)]);
        assert!(build.finished_unix > 0);
        {
            let _guard = stats.busy("img", Some("p"));
            assert!(stats.is_busy("img", Some("p")));
            assert!(!stats.is_busy("img", None));
        }
        assert!(!stats.is_busy("img", Some("p")));
        assert_eq!(
            snap.uploads,
            [(
                ("img".to_string(), "p".to_string()),
                UploadTotals {
                    count: 2,
                    millis: 7
                }
            )]
        );
    }
}
