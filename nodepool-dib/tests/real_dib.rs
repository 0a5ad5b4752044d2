//! One real diskimage-builder run: `DibImageBuilder` runs the
//! `disk-image-create` named by `NODEPOOL_TEST_DIB` (installed by
//! `scripts/dib.sh`) on an element made here that needs no network: its
//! `root.d` copies a few host binaries into the image tree, and it provides
//! `operating-system` so dib accepts it alone. The diskimage's `dib-cmd` is
//! `disk-image-create -n` (no `base` element, which would install
//! packages), as a nodepool config may say.
//!
//! dib needs root or sudo, loop devices, `mkfs.ext4` and `qemu-img`. As root
//! without sudo, a pass-through `sudo` is put first on the build's PATH.
//! Without `NODEPOOL_TEST_DIB` or any of those, the test prints
//! `SKIPPED: <reason>` and passes.
#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nodepool_core::image_builder::{BuildSpec, ImageBuilder};
use nodepool_dib::DibImageBuilder;
use tokio_util::sync::CancellationToken;

const ROOT_D: &str = r#"#!/bin/bash
# A tiny root filesystem from the host's own binaries and their libraries.
set -eu
mkdir -p "$TARGET_ROOT"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,etc,tmp,proc,sys,dev,var/log,var/tmp,root}
for b in /bin/bash /bin/sh /usr/bin/env /bin/ls /bin/cat /bin/mkdir /bin/rm /bin/ln \
         /bin/chmod /usr/bin/sort /usr/bin/basename /usr/bin/dirname /bin/mv /bin/cp \
         /usr/bin/find /usr/bin/test /usr/bin/[ /bin/grep /bin/sed /usr/bin/tr \
         /usr/bin/readlink /usr/bin/realpath /usr/bin/id /usr/bin/tee /usr/bin/head \
         /bin/touch /usr/bin/mktemp; do
    [ -e "$b" ] || continue
    real=$(readlink -f "$b")
    mkdir -p "$TARGET_ROOT$(dirname "$b")"
    cp -L "$real" "$TARGET_ROOT$b"
    for lib in $(ldd "$real" | grep -o '/[^ ]*'); do
        mkdir -p "$TARGET_ROOT$(dirname "$lib")"
        cp -Ln "$lib" "$TARGET_ROOT$lib"
    done
done
echo nodepool-tiny > "$TARGET_ROOT/etc/hostname"
"#;

const SUDO_SHIM: &str = r#"#!/bin/bash
# Running as root: run the command as sudo would, without sudo.
while [[ $# -gt 0 && $1 == -* ]]; do
    case $1 in -u|-g) shift 2;; --) shift; break;; *) shift;; esac
done
exec env "$@"
"#;

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
        || ["/sbin", "/usr/sbin"]
            .iter()
            .any(|d| Path::new(d).join(program).is_file())
}

/// Why the real build cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    let dib = match std::env::var("NODEPOOL_TEST_DIB") {
        Ok(d) if !d.is_empty() => d,
        _ => {
            return Some(
                "NODEPOOL_TEST_DIB is not set (scripts/dib.sh installs diskimage-builder and prints the path)"
                    .into(),
            )
        }
    };
    if !Path::new(&dib).is_file() {
        return Some(format!("NODEPOOL_TEST_DIB={dib} does not exist"));
    }
    let root = rustix::process::getuid().is_root();
    if !root && !on_path("sudo") {
        return Some("diskimage-builder needs root or sudo".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no loop devices (/dev/loop-control missing)".into());
    }
    for tool in ["qemu-img", "mkfs.ext4", "losetup"] {
        if !on_path(tool) {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

fn write_executable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn real_disk_image_create_builds_a_tiny_image_offline() {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED: real disk-image-create test: {reason}");
        return;
    }
    let dib = PathBuf::from(std::env::var("NODEPOOL_TEST_DIB").unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let elements = tmp.path().join("elements");
    let element = elements.join("nodepool-tiny");
    std::fs::create_dir_all(element.join("root.d")).unwrap();
    std::fs::write(element.join("element-provides"), "operating-system\n").unwrap();
    write_executable(&element.join("root.d/10-tiny-root"), ROOT_D);

    // The build's PATH: the shim (as root without sudo), dib's venv, the rest.
    let mut path = Vec::new();
    if rustix::process::getuid().is_root() && !on_path("sudo") {
        let shim = tmp.path().join("shim");
        std::fs::create_dir_all(&shim).unwrap();
        write_executable(&shim.join("sudo"), SUDO_SHIM);
        path.push(shim);
    }
    path.push(dib.parent().unwrap().to_path_buf());
    if let Some(p) = std::env::var_os("PATH") {
        path.extend(std::env::split_paths(&p));
    }
    for extra in ["/usr/sbin", "/sbin"] {
        path.push(PathBuf::from(extra));
    }
    let path = std::env::join_paths(path).unwrap().into_string().unwrap();

    let build_id = "0123456789abcdef0123456789abcdef";
    let spec = BuildSpec {
        diskimage: "nodepool-tiny".into(),
        build_id: build_id.into(),
        elements: vec!["nodepool-tiny".into()],
        release: None,
        env_vars: BTreeMap::from([
            ("PATH".to_string(), path),
            // 1 GiB (sparse): room for the 64 MiB ext4 journal.
            ("DIB_IMAGE_SIZE".to_string(), "1".to_string()),
        ]),
        formats: vec!["qcow2".into(), "raw".into()],
        output_base: tmp.path().join(format!("images/nodepool-tiny-{build_id}")),
        log_path: Some(
            tmp.path()
                .join(format!("logs/nodepool-tiny-{build_id}.log")),
        ),
        command: Some(format!("{} -n", dib.display())),
        elements_dir: Some(elements),
    };
    let result = tokio::time::timeout(
        Duration::from_secs(900),
        DibImageBuilder::default().build(&spec, CancellationToken::new()),
    )
    .await
    .expect("the build finishes within 15 minutes");
    let log = std::fs::read_to_string(spec.log_path.as_ref().unwrap()).unwrap_or_default();
    let files = match result {
        Ok(files) => files,
        Err(e) => panic!(
            "real build failed: {e}\n--- last lines of the log ---\n{}",
            log.lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        ),
    };
    assert!(
        log.contains("Build completed successfully"),
        "dib's own success line"
    );
    assert!(log.ends_with("Exit code: 0\n"));
    let formats: Vec<&str> = files.iter().map(|f| f.format.as_str()).collect();
    assert_eq!(formats, ["qcow2", "raw"]);
    let qcow2 = &files[0];
    assert!(qcow2.size > 0);
    let info = std::process::Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&qcow2.path)
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("\"format\": \"qcow2\""), "{info}");
    assert!(
        info.contains("\"compat\": \"0.10\""),
        "--qemu-img-options compat=0.10: {info}"
    );
    for f in &files {
        let sha = PathBuf::from(format!("{}.sha256", f.path.display()));
        assert!(sha.is_file(), "--checksum writes {}", sha.display());
    }
}
