//! The bounded form of `nodepool-chaos builder-kill`, run by `.ci/run`:
//! three SIGKILLs of the `nodepool builder` daemon on the embedded store,
//! two on ZooKeeper, mid-build and mid-upload, against the OpenStack simulator in its own process, then
//! the builder must converge (doc/reliability.md). The long form (20
//! kills) is `scripts/reliability.sh long`.
//!
//! Needs the `nodepool` and `openstack-sim` binaries built
//! (`cargo build -p nodepool -p nodepool-openstack-sim`): without them
//! `nodepool-chaos` exits 2 and the test fails saying so. The ZooKeeper
//! run needs `NODEPOOL_TEST_ZK_TLS` and friends.

use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;

/// One run at a time: they share two CPUs with everything else.
static SERIAL: Mutex<()> = Mutex::new(());

fn zk_available() -> bool {
    std::env::var("NODEPOOL_TEST_ZK_TLS").is_ok_and(|v| !v.is_empty())
}

/// Run `nodepool-chaos builder-kill ARGS --json` and return its report;
/// panics when it could not run.
fn builder_kill(args: &[&str]) -> Value {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let out = Command::new(env!("CARGO_BIN_EXE_nodepool-chaos"))
        .arg("builder-kill")
        .args(args)
        .args(["--converge-budget", "90", "--phase-timeout", "60", "--json"])
        .output()
        .expect("nodepool-chaos runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.code() != Some(2),
        "nodepool-chaos builder-kill could not run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("report is not JSON ({e}): {stdout}"))
}

fn assert_held(report: &Value, kills: u64) {
    let pretty = serde_json::to_string_pretty(report).unwrap_or_default();
    assert_eq!(report["kills"], kills, "{pretty}");
    assert!(
        report["kills_mid_build"].as_u64().unwrap_or(0) >= 1,
        "a kill landed while diskimage-builder ran: {pretty}"
    );
    assert!(
        report["kills_mid_upload"].as_u64().unwrap_or(0) >= 1,
        "a kill landed mid-upload: {pretty}"
    );
    assert_eq!(report["violations"], serde_json::json!([]), "{pretty}");
    assert_eq!(report["unsettled"], serde_json::json!([]), "{pretty}");
    assert!(report["converge_secs"].is_number(), "converged: {pretty}");
    assert_eq!(report["held"], true, "{pretty}");
}

#[test]
fn sigkilled_builder_leaves_no_half_image_ready_and_cleans_up_on_embedded_store() {
    let report = builder_kill(&["--store", "embedded", "--kills", "3", "--seed", "21"]);
    assert_held(&report, 3);
    assert!(
        report["dib_orphans_after_kills"].as_u64().unwrap_or(0) >= 1,
        "a killed build left its diskimage-builder running: {report}"
    );
}

#[test]
fn sigkilled_builder_leaves_no_half_image_ready_and_cleans_up_on_zookeeper() {
    if !zk_available() {
        eprintln!("NODEPOOL_TEST_ZK_TLS is not set: skipped");
        return;
    }
    // Two kills (one per phase): each restart waits for the killed
    // daemon's session to expire (zookeeper-timeout 10 s) before it can
    // take the locks.
    let report = builder_kill(&["--store", "zookeeper", "--kills", "2", "--seed", "22"]);
    assert_held(&report, 2);
}
