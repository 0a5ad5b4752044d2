//! `DibImageBuilder` end to end with `scripts/fake-dib-cmd`, a bash stand-in
//! for disk-image-create that writes small files in the asked formats.
#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nodepool_core::image_builder::{BuildSpec, ImageBuilder};
use nodepool_dib::{DibImageBuilder, DibSettings};
use tokio_util::sync::CancellationToken;

fn fake_dib_cmd() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/fake-dib-cmd")
        .display()
        .to_string()
}

fn spec(dir: &Path, env: &[(&str, &str)]) -> BuildSpec {
    BuildSpec {
        diskimage: "fake-image".into(),
        build_id: "0123456789abcdef".into(),
        elements: vec!["fedora".into(), "vm".into()],
        release: Some("21".into()),
        env_vars: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        formats: vec!["qcow2".into(), "raw".into()],
        output_base: dir.join("images/fake-image-0123456789abcdef"),
        log_path: Some(dir.join("logs/fake-image-0123456789abcdef.log")),
        command: Some(fake_dib_cmd()),
        elements_dir: Some(dir.join("elements")),
    }
}

fn outputs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("images"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn builds_every_format_with_upstreams_arguments_and_logs_the_output() {
    let tmp = tempfile::tempdir().unwrap();
    let args_file = tmp.path().join("args");
    let env_file = tmp.path().join("env");
    let s = spec(
        tmp.path(),
        &[
            ("FAKE_DIB_ARGS_FILE", args_file.to_str().unwrap()),
            ("FAKE_DIB_ENV_FILE", env_file.to_str().unwrap()),
        ],
    );
    let files = DibImageBuilder::default()
        .build(&s, CancellationToken::new())
        .await
        .unwrap();

    let formats: Vec<&str> = files.iter().map(|f| f.format.as_str()).collect();
    assert_eq!(formats, ["qcow2", "raw"]);
    for f in &files {
        assert_eq!(
            f.path,
            PathBuf::from(format!("{}.{}", s.output_base.display(), f.format))
        );
        assert!(f.size >= 4096, "{f:?} should report its allocated size");
    }
    assert_eq!(
        outputs(tmp.path()),
        [
            "fake-image-0123456789abcdef.d",
            "fake-image-0123456789abcdef.qcow2",
            "fake-image-0123456789abcdef.qcow2.md5",
            "fake-image-0123456789abcdef.qcow2.sha256",
            "fake-image-0123456789abcdef.raw",
            "fake-image-0123456789abcdef.raw.md5",
            "fake-image-0123456789abcdef.raw.sha256",
        ]
    );

    let args = std::fs::read_to_string(&args_file).unwrap();
    let expected = format!(
        "-x\n-t\nqcow2,raw\n--checksum\n--no-tmpfs\n--qemu-img-options\ncompat=0.10\n-o\n{}\nfedora\nvm\n",
        s.output_base.display()
    );
    assert_eq!(args, expected);
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(env.contains("DIB_IMAGE_NAME=fake-image\n"), "{env}");
    assert!(env.contains("DIB_RELEASE=21\n"), "{env}");
    assert!(
        env.contains(&format!("DIB_IMAGE_FILENAME={}\n", s.output_base.display())),
        "{env}"
    );
    assert!(
        env.contains(&format!(
            "ELEMENTS_PATH={}\n",
            tmp.path().join("elements").display()
        )),
        "{env}"
    );

    let log = std::fs::read_to_string(s.log_path.as_ref().unwrap()).unwrap();
    assert!(
        log.contains("fake-dib-cmd: building fake-image release '21'"),
        "{log}"
    );
    assert!(
        log.contains("fake-dib-cmd: formats: qcow2,raw"),
        "stderr is logged too: {log}"
    );
    assert!(log.ends_with("Exit code: 0\n"), "{log}");
}

#[tokio::test]
async fn failed_build_removes_partial_outputs_and_logs_the_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let s = spec(tmp.path(), &[("FAKE_DIB_FAIL", "1")]);
    let err = DibImageBuilder::default()
        .build(&s, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("exit code 1"), "{err}");
    assert!(outputs(tmp.path()).is_empty(), "{:?}", outputs(tmp.path()));
    let log = std::fs::read_to_string(s.log_path.as_ref().unwrap()).unwrap();
    assert!(log.contains("failing as asked"), "{log}");
    assert!(log.ends_with("Exit code: 1\n"), "{log}");
}

#[tokio::test]
async fn success_without_an_asked_format_is_a_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let s = spec(tmp.path(), &[("FAKE_DIB_SKIP_FORMAT", "raw")]);
    let err = DibImageBuilder::default()
        .build(&s, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains(".raw is missing"), "{err}");
    assert!(outputs(tmp.path()).is_empty(), "{:?}", outputs(tmp.path()));
}

#[tokio::test]
async fn unknown_command_fails_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = spec(tmp.path(), &[]);
    s.command = Some(tmp.path().join("no-such-dib").display().to_string());
    let err = DibImageBuilder::default()
        .build(&s, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("failed to exec"), "{err}");
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) => !status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z')),
        Err(_) => false,
    }
}

#[tokio::test]
async fn cancel_kills_the_whole_process_group_and_removes_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let pidfile = tmp.path().join("sleep.pid");
    let s = spec(
        tmp.path(),
        &[
            ("FAKE_DIB_SLEEP", "60"),
            ("FAKE_DIB_PIDFILE", pidfile.to_str().unwrap()),
        ],
    );
    let builder = DibImageBuilder::new(DibSettings {
        kill_grace: Duration::from_secs(5),
        ..DibSettings::default()
    });
    let cancel = CancellationToken::new();
    let task = {
        let cancel = cancel.clone();
        let s = s.clone();
        tokio::spawn(async move { builder.build(&s, cancel).await })
    };
    // Wait (bounded) for the script's child to start.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let pid: u32 = loop {
        if let Some(pid) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break pid;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fake build never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(alive(pid));
    cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("a cancelled build ends promptly")
        .unwrap();
    let err = result.unwrap_err();
    assert!(err.to_string().contains("was stopped"), "{err}");
    // The grandchild (`sleep`) got the signal too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while alive(pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "sleep {pid} survived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(outputs(tmp.path()).is_empty(), "{:?}", outputs(tmp.path()));
}

#[tokio::test]
async fn dib_builder_passes_the_image_builder_suite() {
    use nodepool_core::testing::image_builder::{image_builder_suite, ImageBuilderSuiteConfig};
    let tmp = tempfile::tempdir().unwrap();
    let dir = |name: &str| {
        let d = tmp.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let cfg = ImageBuilderSuiteConfig {
        build: spec(&dir("good"), &[]),
        failing: Some(spec(&dir("failing"), &[("FAKE_DIB_FAIL", "1")])),
        slow: Some(spec(&dir("slow"), &[("FAKE_DIB_SLEEP", "30")])),
        cancel_after: Duration::from_millis(300),
        cancel_grace: Duration::from_secs(10),
    };
    let report = image_builder_suite(&DibImageBuilder::default(), &cfg).await;
    assert!(report.skipped.is_empty(), "{report:?}");
    assert_eq!(report.ran.len(), 3);
}
