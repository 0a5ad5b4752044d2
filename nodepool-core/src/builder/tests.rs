//! Unit tests of the builder's pure decisions and local file handling.
#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::path::PathBuf;

use super::build::{build_due, newest_build, BuildReason};
use super::cleanup::builds_to_keep;
use super::files::{delete_local_build, local_builds, parse_local_build_name, prune_build_logs};
use super::{format_image_name, newest_ready_upload};
use crate::config::DiskImage;
use crate::model::{BuildState, ImageBuild, ImageUpload, UploadState};

fn build(id: &str, state: BuildState, time: f64, formats: &[&str]) -> ImageBuild {
    let mut b = ImageBuild::new("img", state);
    b.id = id.into();
    b.state_time = Some(time);
    b.formats = formats.iter().map(|f| f.to_string()).collect();
    b
}

fn upload(build: &str, id: &str, provider: &str, state: UploadState, time: f64) -> ImageUpload {
    let mut u = ImageUpload::new("img", build, provider, state);
    u.id = id.into();
    u.state_time = Some(time);
    u
}

fn diskimage(rebuild_age: i64) -> DiskImage {
    DiskImage {
        name: "img".into(),
        rebuild_age,
        ..DiskImage::default()
    }
}

fn qcow2() -> Vec<String> {
    vec!["qcow2".to_string()]
}

#[test]
fn an_image_without_a_ready_build_is_built() {
    assert_eq!(
        build_due(&diskimage(86400), &qcow2(), None, false, 1000.0),
        Some(BuildReason::NoReadyBuild)
    );
}

#[test]
fn a_build_younger_than_rebuild_age_is_kept_and_an_older_one_rebuilt() {
    let b = build("a", BuildState::Ready, 1000.0, &["qcow2"]);
    let d = diskimage(100);
    assert_eq!(build_due(&d, &qcow2(), Some(&b), false, 1099.0), None);
    assert_eq!(
        build_due(&d, &qcow2(), Some(&b), false, 1100.0),
        Some(BuildReason::Aged { age: 100.0 })
    );
}

#[test]
fn a_build_missing_a_configured_format_is_rebuilt() {
    let b = build("a", BuildState::Ready, 1000.0, &["qcow2"]);
    let formats = vec!["qcow2".to_string(), "vhd".to_string()];
    assert_eq!(
        build_due(&diskimage(86400), &formats, Some(&b), false, 1001.0),
        Some(BuildReason::MissingFormats {
            missing: vec!["vhd".into()]
        })
    );
}

#[test]
fn a_request_builds_an_up_to_date_image() {
    let b = build("a", BuildState::Ready, 1000.0, &["qcow2"]);
    assert_eq!(
        build_due(&diskimage(86400), &qcow2(), Some(&b), true, 1001.0),
        Some(BuildReason::Requested)
    );
}

#[test]
fn newest_build_picks_the_latest_state_time_in_the_state() {
    let builds = vec![
        build("a", BuildState::Ready, 10.0, &[]),
        build("b", BuildState::Ready, 30.0, &[]),
        build("c", BuildState::Failed, 40.0, &[]),
    ];
    assert_eq!(newest_build(&builds, BuildState::Ready).unwrap().id, "b");
    assert!(newest_build(&builds, BuildState::Deleting).is_none());
}

#[test]
fn the_two_newest_ready_builds_are_kept() {
    let builds = vec![
        build("a", BuildState::Ready, 10.0, &[]),
        build("b", BuildState::Ready, 30.0, &[]),
        build("c", BuildState::Failed, 40.0, &[]),
        build("d", BuildState::Ready, 20.0, &[]),
        build("e", BuildState::Building, 50.0, &[]),
    ];
    let keep = builds_to_keep(&builds);
    assert_eq!(keep.len(), 2);
    assert!(keep.contains("b") && keep.contains("d"));
}

#[test]
fn image_names_follow_the_python_format_string() {
    assert_eq!(
        format_image_name(
            "{image_name}-{timestamp}",
            "ubuntu",
            "0000000001",
            1700000000
        ),
        "ubuntu-1700000000"
    );
    assert_eq!(
        format_image_name("np-{image_name}-{upload_id}{{x}}", "u", "0000000007", 1),
        "np-u-0000000007{x}"
    );
}

#[test]
fn the_launcher_boots_the_newest_ready_upload_and_falls_back_to_the_previous_build() {
    let mut uploads = vec![
        upload("old", "0000000001", "p1", UploadState::Ready, 10.0),
        upload("new", "0000000002", "p1", UploadState::Ready, 20.0),
        upload("new", "0000000003", "p2", UploadState::Ready, 30.0),
    ];
    let newest = newest_ready_upload(&uploads, "img", "p1").unwrap();
    assert_eq!(newest.build_id, "new");
    uploads[1].state = Some(UploadState::Deleting);
    let fallback = newest_ready_upload(&uploads, "img", "p1").unwrap();
    assert_eq!(fallback.build_id, "old");
    uploads.remove(1);
    assert_eq!(
        newest_ready_upload(&uploads, "img", "p1").unwrap().build_id,
        "old"
    );
    assert!(newest_ready_upload(&uploads, "other", "p1").is_none());
}

#[test]
fn local_build_names_are_parsed_as_upstreams_regex() {
    assert_eq!(
        parse_local_build_name("my.image-abc123.qcow2"),
        Some(("my.image".into(), "abc123".into()))
    );
    assert_eq!(
        parse_local_build_name("fedora-x-0f.raw"),
        Some(("fedora-x".into(), "0f".into()))
    );
    assert_eq!(parse_local_build_name("img-abc.qcow2.md5"), None);
    assert_eq!(parse_local_build_name("img-xyz.qcow2"), None);
    assert_eq!(parse_local_build_name("builder_id.txt"), None);
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("np-builder-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn deleting_a_local_build_removes_formats_checksums_and_manifest_only() {
    let dir = scratch();
    for f in [
        "img-ab.qcow2",
        "img-ab.qcow2.md5",
        "img-ab.raw",
        "img-ab.raw.sha256",
        "img-cd.qcow2",
    ] {
        std::fs::write(dir.join(f), b"x").unwrap();
    }
    std::fs::create_dir_all(dir.join("img-ab.d")).unwrap();
    assert_eq!(local_builds(&dir).unwrap().len(), 2);
    delete_local_build(&dir, "img", "ab").unwrap();
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["img-cd.qcow2"]);
    delete_local_build(&dir, "img", "ab").unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn build_logs_are_pruned_to_the_retention_by_age_per_image() {
    let dir = scratch();
    let now = std::time::SystemTime::now();
    for (i, name) in ["img-01.log", "img-02.log", "img-03.log", "img-extra-04.log"]
        .iter()
        .enumerate()
    {
        let path = dir.join(name);
        std::fs::write(&path, b"log").unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(now - std::time::Duration::from_secs(100 - i as u64))
            .unwrap();
    }
    let deleted = prune_build_logs(&dir, "img", 2).unwrap();
    assert_eq!(deleted, [dir.join("img-01.log")]);
    assert!(dir.join("img-extra-04.log").exists(), "another image's log");
    assert!(prune_build_logs(&dir, "img", -1).unwrap().is_empty());
    // Retention 0 still keeps one, as upstream's max(retention, 1).
    assert_eq!(prune_build_logs(&dir, "img", 0).unwrap().len(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}
