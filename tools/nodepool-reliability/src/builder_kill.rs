//! `nodepool-chaos builder-kill`: SIGKILL the `nodepool builder` daemon
//! while diskimage-builder runs and while an upload is in flight, start it
//! again each time, then let it run undisturbed and check that it
//! converges: no half image ever `ready`, no `ready` upload without its
//! Glance image, and in the end one or two ready builds, the newest on
//! every provider, no other record, no stray file, no leaked Glance
//! image and no orphaned diskimage-builder process.
//!
//! The builder runs `scripts/fake-dib-cmd` (slowed by `FAKE_DIB_SLEEP`)
//! and uploads to two OpenStack providers on one `openstack-sim` process,
//! whose `PUT .../file` answers are delayed so kills land mid-upload.

mod observe;
mod setup;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nodepool_core::model::{BuildState, UploadState};
use nodepool_core::store::NodeStore;
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use crate::procs::{LauncherCommand, LauncherProcess, SimProcess};
use crate::rng::Rng;
use crate::ChaosError;
use observe::{FileChecker, GlanceImage, Records, FORMATS, IMAGE, PROVIDERS};
use setup::{builder_yaml, fake_dib_cmd, store_spec, write};

/// What to run.
#[derive(Debug, Clone)]
pub struct BuilderKillOptions {
    /// ZooKeeper (`NODEPOOL_TEST_ZK_*`) instead of the embedded store.
    pub zookeeper: bool,
    /// SIGKILLs.
    pub kills: usize,
    /// The seed of every random choice.
    pub seed: u64,
    /// How long a build runs (`FAKE_DIB_SLEEP`), seconds.
    pub build_secs: f64,
    /// How long the simulator holds each image upload, milliseconds.
    pub upload_delay_ms: u64,
    /// How long a kill may wait for its build or upload to start.
    pub phase_timeout: Duration,
    /// How long the builder may take to converge after the last kill.
    pub converge_budget: Duration,
    /// Where logs and state go (a temporary directory when unset).
    pub work_dir: Option<PathBuf>,
}

/// What a run found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BuilderKillReport {
    /// `builder-kill`.
    pub mode: String,
    /// The store.
    pub store: String,
    /// The seed.
    pub seed: u64,
    /// SIGKILLs done.
    pub kills: usize,
    /// Kills while diskimage-builder ran (the daemon's log said a build
    /// had started and not ended).
    pub kills_mid_build: usize,
    /// Kills while an upload was in flight (same, from the log).
    pub kills_mid_upload: usize,
    /// diskimage-builder processes still running just after the kills,
    /// summed over the kills (the daemon's SIGKILL does not reach them).
    pub dib_orphans_after_kills: usize,
    /// Builds started ("build started" in the daemon's logs).
    pub builds_started: usize,
    /// Builds that failed ("build failed" in the logs; killed ones do not
    /// log).
    pub builds_failed: usize,
    /// Distinct builds seen `ready`.
    pub builds_ready: usize,
    /// Distinct builds seen that never became `ready` (all gone at the
    /// end when the run held).
    pub builds_never_ready: usize,
    /// Uploads started ("upload started" in the logs).
    pub uploads_started: usize,
    /// Distinct uploads seen `ready`.
    pub uploads_ready: usize,
    /// Distinct Glance images of our providers seen.
    pub glance_images_seen: usize,
    /// Lines of the daemon's logs saying what it found of a killed run,
    /// by message.
    pub recovery_lines: BTreeMap<String, usize>,
    /// Seconds from the first start to the last kill.
    pub chaos_secs: f64,
    /// Seconds from the last kill until the end state held (`None`: not
    /// within the budget).
    pub converge_secs: Option<f64>,
    /// "Never" invariants broken at some point (deduplicated).
    pub violations: Vec<String>,
    /// What kept the end state from converging (empty when it did).
    pub unsettled: Vec<String>,
    /// Kills that found no build or upload to land in within the phase
    /// timeout.
    pub stalls: Vec<String>,
    /// Daemon exits nobody asked for (then restarted).
    pub unexpected_exits: Vec<String>,
    /// The end: builds (`id state`), uploads (`build/provider/id state`),
    /// Glance images of our providers, builds with files on disk.
    pub end_builds: Vec<String>,
    /// See `end_builds`.
    pub end_uploads: Vec<String>,
    /// See `end_builds`.
    pub end_glance_images: usize,
    /// See `end_builds`.
    pub end_local_builds: usize,
    /// Where the logs are.
    pub work_dir: String,
    /// Whether every invariant held.
    pub held: bool,
}

/// How long a restarted daemon may take to log that it starts (it stops
/// orphaned diskimage-builder processes first, 30 s grace at most).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Messages the daemon logs when it deals with what a killed run left.
const RECOVERY_MESSAGES: &[&str] = &[
    "stopping an orphaned diskimage-builder process",
    "failing a build interrupted by a crash",
    "removing an upload interrupted by a crash",
    "found a build whose builder is gone",
    "removing failed upload record",
    "deleting leaked image",
    "deleting on-disk build",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Build,
    Upload,
}

/// Everything a run holds on to.
struct Run {
    store: Arc<dyn NodeStore>,
    sim: SimProcess,
    http: reqwest::Client,
    builder: LauncherProcess,
    images_dir: PathBuf,
    files: FileChecker,
    violations: BTreeSet<String>,
    unexpected: Vec<String>,
    seen_builds: BTreeMap<String, bool>,
    seen_uploads: BTreeSet<String>,
    seen_images: BTreeSet<String>,
}

/// Run once.
pub async fn run(opts: BuilderKillOptions) -> Result<BuilderKillReport, ChaosError> {
    let work = crate::setup::WorkDir::new("nodepool-chaos-builder-", opts.work_dir.as_deref())?;
    let dir = work.path.clone();
    let run_id = work.run_id.clone();
    let mut rng = Rng::new(opts.seed);
    let nodepool = crate::procs::sibling_binary("nodepool", "NODEPOOL_BIN")?;
    let sim_bin = crate::procs::sibling_binary("openstack-sim", "OPENSTACK_SIM_BIN")?;
    let fake_dib = fake_dib_cmd()?;

    let sim = SimProcess::start(
        &sim_bin,
        &dir,
        &crate::setup::sim_config(5, 0.1, "demo-password", "app-secret"),
    )?;
    // Every image upload waits in the simulator, so kills land mid-upload.
    sim.set_faults(&json!({"rules": [{
        "method": "PUT", "path": "/file", "delay_ms": opts.upload_delay_ms,
    }]}))
    .await?;
    let clouds = dir.join("clouds.yaml");
    write(
        &clouds,
        &crate::setup::clouds_yaml(&sim.base, "demo-password"),
    )?;

    let store_spec = store_spec(&opts, &dir, &run_id)?;
    let images_dir = dir.join("images");
    let config = dir.join("nodepool.yaml");
    write(
        &config,
        &builder_yaml(
            &store_spec,
            &images_dir,
            &dir.join("build-logs"),
            &fake_dib,
            opts.build_secs,
        ),
    )?;
    let command = LauncherCommand {
        program: nodepool,
        args: vec![
            "-c".to_string(),
            config.display().to_string(),
            "--state-dir".to_string(),
            dir.join("state").display().to_string(),
            "builder".to_string(),
        ],
        env: vec![
            ("OS_CLIENT_CONFIG_FILE".into(), clouds.display().to_string()),
            (
                "RUST_LOG".into(),
                std::env::var("CHAOS_BUILDER_LOG").unwrap_or_else(|_| "info".to_string()),
            ),
        ],
    };
    let mut builder = LauncherProcess::new("builder", command, &dir);
    builder.start()?;
    let store = store_spec.open().await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| ChaosError::Setup(format!("HTTP client: {e}")))?;
    let mut run = Run {
        store,
        sim,
        http,
        builder,
        images_dir,
        files: FileChecker::default(),
        violations: BTreeSet::new(),
        unexpected: Vec::new(),
        seen_builds: BTreeMap::new(),
        seen_uploads: BTreeSet::new(),
        seen_images: BTreeSet::new(),
    };

    // The kills: alternately mid-build and mid-upload (seeded start), each
    // at a seeded point of its phase.
    let started = Instant::now();
    let mut report = BuilderKillReport {
        mode: "builder-kill".to_string(),
        store: store_spec.name().to_string(),
        seed: opts.seed,
        ..BuilderKillReport::default()
    };
    let first = rng.below(2);
    for i in 0..opts.kills {
        let phase = if (i as u64 + first) % 2 == 0 {
            Phase::Build
        } else {
            Phase::Upload
        };
        let phase_len = match phase {
            Phase::Build => opts.build_secs,
            Phase::Upload => opts.upload_delay_ms as f64 / 1000.0,
        };
        // Anywhere in the phase (detected up to ~0.1 s late).
        let after = Duration::from_secs_f64(phase_len * rng.below(900) as f64 / 1000.0);
        if !run.wait_for_phase(phase, opts.phase_timeout).await? {
            report.stalls.push(format!(
                "kill {}: no {phase:?} phase within {:?}",
                i + 1,
                opts.phase_timeout
            ));
            break;
        }
        let until = Instant::now() + after;
        while Instant::now() < until {
            run.observe().await;
            tokio::time::sleep(
                Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())),
            )
            .await;
        }
        let (building, uploading) = in_progress(run.current_log().as_deref());
        run.builder.kill9();
        report.kills += 1;
        report.kills_mid_build += usize::from(building);
        report.kills_mid_upload += usize::from(uploading);
        let orphans = nodepool_dib::building_into(&run.images_dir);
        report.dib_orphans_after_kills += orphans.len();
        run.builder.start()?;
        if !orphans.is_empty() {
            run.check_orphans_stopped(&orphans).await;
        }
    }
    report.chaos_secs = started.elapsed().as_secs_f64();

    // Undisturbed until the end state holds.
    let end = Instant::now();
    let (records, images, local) = loop {
        run.observe().await;
        let now = run.snapshot().await;
        match now {
            Ok((records, images, local, dibs)) => {
                let left = observe::unsettled(&records, &images, &local, &dibs);
                if left.is_empty() {
                    report.converge_secs = Some(end.elapsed().as_secs_f64());
                    break (records, images, local);
                }
                if end.elapsed() >= opts.converge_budget {
                    report.unsettled = left;
                    break (records, images, local);
                }
            }
            Err(e) if end.elapsed() >= opts.converge_budget => return Err(e),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    run.builder.kill9();
    // Checksums of the ready builds, once, with sha256sum.
    for b in records
        .builds
        .iter()
        .filter(|b| b.state == Some(BuildState::Ready))
    {
        for f in FORMATS {
            if let Err(why) = sha256_matches(&observe::image_file(&run.images_dir, &b.id, f)) {
                run.violations
                    .insert(format!("ready build {}: {why}", b.id));
            }
        }
    }
    report.end_builds = records
        .builds
        .iter()
        .map(|b| format!("{} {}", b.id, b.state.map_or("none", |s| s.as_str())))
        .collect();
    report.end_uploads = records
        .uploads
        .iter()
        .map(|u| {
            let state = u.state.map_or("none", |s| s.as_str());
            format!("{}/{}/{} {state}", u.build_id, u.provider_name, u.id)
        })
        .collect();
    report.end_glance_images = images.len();
    report.end_local_builds = local.len();
    let logs = |needle: &str| run.builder.count_in_logs(needle);
    report.builds_started = logs("build started");
    report.builds_failed = logs("build failed");
    report.uploads_started = logs("upload started");
    for m in RECOVERY_MESSAGES {
        let n = logs(m);
        if n > 0 {
            report.recovery_lines.insert((*m).to_string(), n);
        }
    }
    report.builds_ready = run.seen_builds.values().filter(|r| **r).count();
    report.builds_never_ready = run.seen_builds.values().filter(|r| !**r).count();
    report.uploads_ready = run.seen_uploads.len();
    report.glance_images_seen = run.seen_images.len();
    report.violations = run.violations.iter().cloned().collect();
    report.unexpected_exits = run.unexpected.clone();
    report.work_dir = dir.display().to_string();
    report.held = report.violations.is_empty()
        && report.unsettled.is_empty()
        && report.stalls.is_empty()
        && report.unexpected_exits.is_empty()
        && report.converge_secs.is_some()
        && report.kills == opts.kills;
    // Nothing of ours may outlive the run.
    kill_dib_processes(&run.images_dir);
    let _ = run.store.close().await;
    drop(run);
    // A temporary directory keeps the logs of a failed run.
    work.finish(report.held);
    Ok(report)
}

impl Run {
    /// The current start's log.
    fn current_log(&self) -> Option<String> {
        self.builder
            .logs
            .last()
            .and_then(|p| std::fs::read_to_string(p).ok())
    }

    /// Read the three sides and the dib processes.
    #[allow(clippy::type_complexity)]
    async fn snapshot(
        &self,
    ) -> Result<
        (
            Records,
            Vec<GlanceImage>,
            BTreeMap<String, Vec<String>>,
            Vec<u32>,
        ),
        ChaosError,
    > {
        let records = Records::read(&*self.store).await?;
        let images = observe::glance(&self.http, &self.sim.base).await?;
        let local = observe::local_files(&self.images_dir);
        let dibs = nodepool_dib::building_into(&self.images_dir);
        Ok((records, images, local, dibs))
    }

    /// One look: restart a daemon that exited, check the "never"
    /// invariants, remember what was seen. Returns the records read.
    async fn observe(&mut self) -> Option<Records> {
        if let Some(status) = self.builder.exited() {
            self.unexpected
                .push(format!("start {} exited: {status}", self.builder.starts));
            if let Err(e) = self.builder.start() {
                self.unexpected.push(format!("cannot restart: {e}"));
            }
        }
        let records = Records::read(&*self.store).await.ok()?;
        let images = observe::glance(&self.http, &self.sim.base).await.ok()?;
        let suspects =
            observe::never_suspects(&records, &images, &self.images_dir, &mut self.files);
        if !suspects.is_empty() {
            let again = Records::read(&*self.store).await.ok()?;
            self.violations.extend(observe::confirm(suspects, &again));
        }
        for b in &records.builds {
            let ready = b.state == Some(BuildState::Ready);
            *self.seen_builds.entry(b.id.clone()).or_default() |= ready;
        }
        for u in records
            .uploads
            .iter()
            .filter(|u| u.state == Some(UploadState::Ready))
        {
            self.seen_uploads
                .insert(format!("{}/{}/{}", u.build_id, u.provider_name, u.id));
        }
        self.seen_images.extend(images.into_iter().map(|i| i.id));
        Some(records)
    }

    /// Once the restarted daemon says it is starting (it has dealt with
    /// `images-dir` by then), none of the diskimage-builder processes the
    /// killed one left may still run: they would write files into
    /// `images-dir` after their build was cleaned up.
    async fn check_orphans_stopped(&mut self, orphans: &[u32]) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if self
                .current_log()
                .is_some_and(|l| l.contains("starting the builder"))
            {
                let running: Vec<u32> = orphans
                    .iter()
                    .copied()
                    .filter(|p| nodepool_dib::alive(*p))
                    .collect();
                if !running.is_empty() {
                    self.violations.insert(format!(
                        "diskimage-builder processes {running:?} of a killed build still ran \
                         after the builder started again (start {})",
                        self.builder.starts
                    ));
                }
                return;
            }
            self.observe().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.violations.insert(format!(
            "builder start {} did not log \"starting the builder\" within {STARTUP_TIMEOUT:?}",
            self.builder.starts
        ));
    }

    /// Wait until the daemon's current log shows `phase` under way, asking
    /// for a build when nothing is going on. `false` after `timeout`.
    async fn wait_for_phase(
        &mut self,
        phase: Phase,
        timeout: Duration,
    ) -> Result<bool, ChaosError> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let records = self.observe().await;
            let (building, uploading) = in_progress(self.current_log().as_deref());
            // The phase alone, so the kills land in each of them.
            match phase {
                Phase::Build if building && !uploading => return Ok(true),
                Phase::Upload if uploading && !building => return Ok(true),
                _ => {}
            }
            if records.as_ref().is_some_and(idle) {
                self.store
                    .set_build_requested(IMAGE, true)
                    .await
                    .map_err(|e| ChaosError::Store(e.to_string()))?;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(false)
    }
}

/// Whether the builder has nothing to do: no build requested or under
/// way, the newest ready build uploaded to every provider.
fn idle(r: &Records) -> bool {
    let newest = r
        .builds
        .iter()
        .filter(|b| b.state == Some(BuildState::Ready))
        .max_by(|a, b| {
            a.state_time
                .unwrap_or(0.0)
                .total_cmp(&b.state_time.unwrap_or(0.0))
        });
    let uploaded = newest.is_some_and(|b| {
        PROVIDERS.iter().all(|p| {
            r.uploads.iter().any(|u| {
                u.build_id == b.id && u.provider_name == *p && u.state == Some(UploadState::Ready)
            })
        })
    });
    !r.requested
        && uploaded
        && !r
            .builds
            .iter()
            .any(|b| b.state == Some(BuildState::Building))
}

/// Whether a log shows a build and an upload started and not ended.
fn in_progress(log: Option<&str>) -> (bool, bool) {
    let Some(log) = log else {
        return (false, false);
    };
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    let building = count("build started") > count("build finished") + count("build failed");
    let uploading = count("upload started") > count("upload finished") + count("upload failed");
    (building, uploading)
}

/// `sha256sum` of `path` equals its `.sha256` file.
fn sha256_matches(path: &Path) -> Result<(), String> {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .map_err(|e| format!("sha256sum: {e}"))?;
    let sum = String::from_utf8_lossy(&out.stdout);
    let sum = sum
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let file = PathBuf::from(format!("{}.sha256", path.display()));
    let recorded =
        std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    if out.status.success() && recorded.trim() == sum {
        Ok(())
    } else {
        Err(format!(
            "{}: sha256 {sum:?} differs from {:?}",
            path.display(),
            recorded.trim()
        ))
    }
}

/// SIGKILL whatever diskimage-builder processes are left in `images_dir`.
fn kill_dib_processes(images_dir: &Path) {
    for pid in nodepool_dib::building_into(images_dir) {
        if let Some(pid) = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

/// The report as text: a table of the figures, then what broke.
pub fn summary(r: &BuilderKillReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "builder-kill on {} (seed {}): {}",
        r.store,
        r.seed,
        if r.held { "HELD" } else { "VIOLATED" }
    );
    let converge = r
        .converge_secs
        .map_or("NOT within the budget".to_string(), |c| format!("{c:.1} s"));
    let rows: [(&str, String); 13] = [
        ("SIGKILLs", r.kills.to_string()),
        ("  mid-build", r.kills_mid_build.to_string()),
        ("  mid-upload", r.kills_mid_upload.to_string()),
        (
            "dib processes orphaned by kills",
            r.dib_orphans_after_kills.to_string(),
        ),
        ("builds started", r.builds_started.to_string()),
        ("builds failed (logged)", r.builds_failed.to_string()),
        ("builds seen ready", r.builds_ready.to_string()),
        (
            "builds never ready (cleaned)",
            r.builds_never_ready.to_string(),
        ),
        ("uploads started", r.uploads_started.to_string()),
        ("uploads seen ready", r.uploads_ready.to_string()),
        ("Glance images seen", r.glance_images_seen.to_string()),
        ("chaos", format!("{:.1} s", r.chaos_secs)),
        ("converged after the last kill", converge),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "| {k:<32} | {v:>22} |");
    }
    for (m, n) in &r.recovery_lines {
        let _ = writeln!(s, "log: {n} x \"{m}\"");
    }
    let _ = writeln!(
        s,
        "end: builds {:?}; uploads {:?}; {} Glance images; {} builds on disk",
        r.end_builds, r.end_uploads, r.end_glance_images, r.end_local_builds
    );
    for (what, list) in [
        ("VIOLATION", &r.violations),
        ("UNSETTLED", &r.unsettled),
        ("STALL", &r.stalls),
        ("UNEXPECTED EXIT", &r.unexpected_exits),
    ] {
        for item in list {
            let _ = writeln!(s, "{what}: {item}");
        }
    }
    let _ = writeln!(s, "logs: {}", r.work_dir);
    s
}
