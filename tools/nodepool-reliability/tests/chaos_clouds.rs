//! The crash mode of `nodepool-chaos` on the two other clouds it knows:
//! moto's EC2 server (driver `aws`) and kube-sim (driver `kubernetes`),
//! each its own process that outlives the SIGKILLed launcher, with the
//! leaks counted from the cloud's side. Bounded: 40 requests (6 in flight
//! for a pool of max-servers 4), 3 kills,
//! the launcher engine with a 2 s cleanup interval and leak grace.
//!
//! Needs moto (`NODEPOOL_TEST_MOTO`) and the `kube-sim` binary (`cargo
//! build -p nodepool-kube-sim`); each test prints SKIP without its cloud
//! unless `NODEPOOL_TEST_REQUIRE_MOTO` / `NODEPOOL_TEST_REQUIRE_KUBE_CLIENTS`
//! is set, then it fails.

use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;

/// One run at a time: they share two CPUs with everything else.
static SERIAL: Mutex<()> = Mutex::new(());

const REQUESTS: u64 = 40;
const KILLS: u64 = 3;
const MAX_SERVERS: u64 = 4;

fn set(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Whether the test can run; panics when `require` is set but `why` says
/// the cloud is missing.
fn available(missing: Option<String>, require: &str) -> bool {
    match missing {
        None => true,
        Some(why) if set(require) => panic!("{require} is set but {why}"),
        Some(why) => {
            println!("SKIP: {why}");
            false
        }
    }
}

/// `nodepool-chaos crash --cloud CLOUD ...` with the bounded figures;
/// returns the JSON report, panicking when the run could not be done.
fn crash(cloud: &str, seed: &str) -> Value {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let out = Command::new(env!("CARGO_BIN_EXE_nodepool-chaos"))
        .args(["crash", "--cloud", cloud, "--store", "embedded"])
        .args(["--requests", &REQUESTS.to_string()])
        .args(["--kills", &KILLS.to_string()])
        .args(["--max-servers", &MAX_SERVERS.to_string()])
        // More in flight than max-servers, so the pool is full at times.
        .args(["--concurrency", "6", "--seed", seed])
        .args(["--launcher", "engine", "--cleanup-interval", "2"])
        .args(["--deadline", "120", "--json"])
        .output()
        .expect("nodepool-chaos runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.code() != Some(2),
        "nodepool-chaos could not run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("report is not JSON ({e}): {stdout}"))
}

/// Every request answered, the kills done, the pool within max-servers at
/// every sample, and the cloud and the records agreeing at the end.
fn assert_held(report: &Value, cloud: &str) {
    let pretty = serde_json::to_string_pretty(report).unwrap_or_default();
    println!(
        "{cloud}: {} kills, {} servers seen, {} leaked at end of load, {} deleted as leaked, \
         pool peak {} ({} with leaks), converged after {} s, held {}",
        report["kills"],
        report["servers_seen"],
        report["leaked_at_end_of_load"],
        report["leaked_deleted_by_launchers"],
        report["max_live_servers"],
        report["max_live_servers_all"],
        report["converge_secs"],
        report["held"],
    );
    assert_eq!(report["cloud_kind"], cloud, "{pretty}");
    assert_eq!(report["kills"], KILLS, "{pretty}");
    let q = &report["requests"];
    assert_eq!(q["requests"], REQUESTS, "{pretty}");
    assert_eq!(q["lost"], 0, "every request answered: {pretty}");
    assert_eq!(
        q["fulfilled"], REQUESTS,
        "every request fulfilled: {pretty}"
    );
    assert_eq!(
        q["nodes_in_two_requests"],
        serde_json::json!([]),
        "{pretty}"
    );
    assert_eq!(
        q["instances_in_two_requests"],
        serde_json::json!([]),
        "{pretty}"
    );
    // Sampled every 200 ms: a lower bound of the servers launched.
    assert!(
        report["servers_seen"].as_u64().unwrap_or(0) >= MAX_SERVERS,
        "{pretty}"
    );
    let peak = report["max_live_servers"].as_u64().unwrap_or(u64::MAX);
    assert!(
        (1..=MAX_SERVERS).contains(&peak),
        "the pool ran {peak} servers at once (max-servers {MAX_SERVERS}): {pretty}"
    );
    let c = &report["cloud"];
    assert_eq!(c["servers"], 0, "no server left after release: {pretty}");
    assert_eq!(
        c["servers_without_node"],
        serde_json::json!([]),
        "no leak: {pretty}"
    );
    assert_eq!(c["nodes_without_server"], serde_json::json!([]), "{pretty}");
    assert_eq!(c["nodes_unsettled"], serde_json::json!([]), "{pretty}");
    assert!(report["converge_secs"].is_number(), "converged: {pretty}");
    assert_eq!(report["held"], true, "{pretty}");
}

#[test]
fn sigkilled_launcher_leaks_no_ec2_instance_in_moto() {
    let missing = std::env::var_os("NODEPOOL_TEST_MOTO")
        .filter(|v| !v.is_empty())
        .is_none()
        .then(|| "NODEPOOL_TEST_MOTO is not set (scripts/moto.sh install)".to_string());
    if !available(missing, "NODEPOOL_TEST_REQUIRE_MOTO") {
        return;
    }
    let report = crash("aws", "21");
    assert_held(&report, "aws");
}

#[test]
fn sigkilled_launcher_leaks_no_namespace_in_kube_sim() {
    let missing = match nodepool_kube_sim::SimProcess::find_binary() {
        Ok(bin) if bin.is_file() => None,
        Ok(bin) => Some(format!("{} does not exist", bin.display())),
        Err(e) => Some(e.to_string()),
    };
    if !available(missing, "NODEPOOL_TEST_REQUIRE_KUBE_CLIENTS") {
        return;
    }
    let report = crash("kubernetes", "22");
    assert_held(&report, "kubernetes");
}

#[test]
fn other_modes_refuse_another_cloud() {
    for (mode, cloud) in [("faults", "aws"), ("zk-restart", "kubernetes")] {
        let out = Command::new(env!("CARGO_BIN_EXE_nodepool-chaos"))
            .args([mode, "--cloud", cloud, "--requests", "1"])
            .output()
            .expect("nodepool-chaos runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{mode} --cloud {cloud}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("--cloud {cloud} is for `crash` only")),
            "{stderr}"
        );
    }
}
