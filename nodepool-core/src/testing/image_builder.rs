//! The suite of [`ImageBuilder`]: a build produces every asked format at
//! `output_base.<format>`, and a failed or cancelled build leaves no file
//! of its formats behind.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::image_builder::{BuildSpec, ImageBuilder};

use super::provider::SuiteReport;

/// The builds the suite runs; each in its own output directory.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageBuilderSuiteConfig {
    /// A build that succeeds.
    pub build: BuildSpec,
    /// A build that fails (`None`: that test is skipped).
    pub failing: Option<BuildSpec>,
    /// A build slow enough to be cancelled after `cancel_after` (`None`:
    /// that test is skipped).
    pub slow: Option<BuildSpec>,
    /// When the slow build is cancelled.
    pub cancel_after: Duration,
    /// How long a cancelled build may take to end.
    pub cancel_grace: Duration,
}

fn outputs(spec: &BuildSpec) -> Vec<PathBuf> {
    spec.formats
        .iter()
        .map(|f| PathBuf::from(format!("{}.{f}", spec.output_base.display())))
        .collect()
}

fn assert_no_outputs(spec: &BuildSpec, what: &str) {
    for path in outputs(spec) {
        assert!(
            !path.exists(),
            "{what} build left {} behind",
            path.display()
        );
    }
}

/// A build returns one file per asked format, in order, at
/// `output_base.<format>`, with its size.
pub async fn build_produces_every_format(builder: &dyn ImageBuilder, spec: &BuildSpec) {
    let files = builder
        .build(spec, CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("build of {} failed: {e}", spec.diskimage));
    let formats: Vec<&str> = files.iter().map(|f| f.format.as_str()).collect();
    assert_eq!(formats, spec.formats, "built formats");
    for (file, path) in files.iter().zip(outputs(spec)) {
        assert_eq!(file.path, path, "where {} was built", file.format);
        let size = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{} does not exist: {e}", path.display()))
            .len();
        assert!(
            file.size > 0 && size > 0,
            "{} is reported {} bytes, is {size}",
            path.display(),
            file.size
        );
    }
}

/// A failing build returns an error and leaves none of its formats.
pub async fn failed_build_leaves_nothing(builder: &dyn ImageBuilder, spec: &BuildSpec) {
    let result = builder.build(spec, CancellationToken::new()).await;
    assert!(result.is_err(), "a failing build answered {result:?}");
    assert_no_outputs(spec, "a failed");
}

/// A build cancelled while it runs ends within `grace` with an error and
/// leaves none of its formats.
pub async fn cancelled_build_leaves_nothing(
    builder: &dyn ImageBuilder,
    spec: &BuildSpec,
    after: Duration,
    grace: Duration,
) {
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let build = builder.build(spec, cancel);
    let cancelling = async {
        tokio::time::sleep(after).await;
        trigger.cancel();
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = build => assert!(result.is_err(), "a cancelled build answered {result:?}"),
        () = cancelling => panic!("a cancelled build still runs {grace:?} later"),
    }
    assert_no_outputs(spec, "a cancelled");
}

/// Runs the suite; the report says which builds were not configured.
pub async fn image_builder_suite(
    builder: &dyn ImageBuilder,
    cfg: &ImageBuilderSuiteConfig,
) -> SuiteReport {
    let mut report = SuiteReport::default();
    build_produces_every_format(builder, &cfg.build).await;
    report.ran.push("build_produces_every_format");
    match &cfg.failing {
        Some(spec) => {
            failed_build_leaves_nothing(builder, spec).await;
            report.ran.push("failed_build_leaves_nothing");
        }
        None => report.skipped.push((
            "failed_build_leaves_nothing",
            "no failing build".to_string(),
        )),
    }
    match &cfg.slow {
        Some(spec) => {
            cancelled_build_leaves_nothing(builder, spec, cfg.cancel_after, cfg.cancel_grace).await;
            report.ran.push("cancelled_build_leaves_nothing");
        }
        None => report.skipped.push((
            "cancelled_build_leaves_nothing",
            "no slow build".to_string(),
        )),
    }
    for name in &report.ran {
        println!("image builder suite: {name} ... ok");
    }
    report
}
