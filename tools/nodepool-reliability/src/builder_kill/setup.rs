//! What a `builder-kill` run writes: the builder's `nodepool.yaml` (one
//! diskimage built by the fake diskimage-builder, two OpenStack providers
//! on the simulator) and where its store is.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::observe::{IMAGE, PROVIDERS};
use super::BuilderKillOptions;
use crate::setup::{self, StoreSpec};
use crate::ChaosError;

/// `scripts/fake-dib-cmd` of this repository, or `NODEPOOL_FAKE_DIB`.
pub(super) fn fake_dib_cmd() -> Result<PathBuf, ChaosError> {
    let path = std::env::var_os("NODEPOOL_FAKE_DIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fake-dib-cmd")
        });
    if path.is_file() {
        Ok(path)
    } else {
        Err(ChaosError::Setup(format!(
            "the fake diskimage-builder {} does not exist; set NODEPOOL_FAKE_DIB",
            path.display()
        )))
    }
}

pub(super) fn store_spec(
    opts: &BuilderKillOptions,
    dir: &Path,
    run_id: &str,
) -> Result<StoreSpec, ChaosError> {
    if !opts.zookeeper {
        return Ok(StoreSpec::Embedded {
            state_dir: dir.join("state"),
        });
    }
    let var = |n: &str| {
        std::env::var(n).map_err(|_| {
            ChaosError::Setup(format!(
                "{n} is not set: source the env of scripts/zookeeper.sh start DIR"
            ))
        })
    };
    Ok(StoreSpec::Zookeeper {
        hosts: var("NODEPOOL_TEST_ZK_TLS")?,
        chroot: format!("/chaos-builder-{run_id}"),
        tls: (
            var("NODEPOOL_TEST_ZK_CA")?.into(),
            var("NODEPOOL_TEST_ZK_CERT")?.into(),
            var("NODEPOOL_TEST_ZK_KEY")?.into(),
        ),
        session_timeout: 10.0,
    })
}

/// The builder's `nodepool.yaml`: one diskimage built by the fake
/// diskimage-builder in `build_secs`, uploaded to two OpenStack providers
/// of the simulated cloud.
pub(super) fn builder_yaml(
    store: &StoreSpec,
    images_dir: &Path,
    log_dir: &Path,
    fake_dib: &Path,
    build_secs: f64,
) -> String {
    let mut y = String::new();
    let _ = writeln!(y, "images-dir: {}", images_dir.display());
    let _ = writeln!(y, "build-log-dir: {}", log_dir.display());
    store.write_zookeeper_yaml(&mut y);
    let _ = writeln!(y, "labels: []\nproviders:");
    for p in PROVIDERS {
        let _ = writeln!(
            y,
            "  - name: {p}\n    driver: openstack\n    cloud: {}\n    rate: 0\n    \
             diskimages:\n      - name: {IMAGE}\n    pools: []",
            setup::CLOUD
        );
    }
    let _ = writeln!(
        y,
        "diskimages:\n  - name: {IMAGE}\n    dib-cmd: {}\n    formats: [raw]\n    \
         elements: [vm]\n    env-vars:\n      FAKE_DIB_SLEEP: \"{build_secs}\"",
        fake_dib.display()
    );
    y
}

pub(super) fn write(path: &Path, text: &str) -> Result<(), ChaosError> {
    std::fs::write(path, text).map_err(|e| ChaosError::Setup(format!("{}: {e}", path.display())))
}
