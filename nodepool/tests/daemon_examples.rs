//! The examples in `examples/` run against the daemon: `quickstart.yaml`
//! with `secure.yaml` (the API token) and `http-api.sh` over the HTTP API.
//!
//! `http-api.sh` needs curl and jq; without them the test prints SKIP.
//! Run with `cargo test -p nodepool --test daemon_examples`.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use support::{free_port, http_get, wait_for, Daemon};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The quickstart config on a port of our own, loopback only.
fn quickstart_on(port: u16) -> String {
    let quickstart =
        std::fs::read_to_string(examples().join("quickstart.yaml")).expect("quickstart.yaml");
    format!("{quickstart}\nwebapp:\n  port: {port}\n  listen_address: 127.0.0.1\n")
}

#[test]
fn http_api_example_requests_uses_and_releases_a_node() {
    if !have("curl") || !have("jq") {
        println!("SKIP http_api_example_requests_uses_and_releases_a_node: needs curl and jq");
        return;
    }
    let port = free_port();
    let mut daemon = Daemon::prepare(&quickstart_on(port), port);
    daemon.secure = Some(examples().join("secure.yaml"));
    daemon.spawn();
    daemon.wait_ready();

    // Without the token the write API refuses.
    let unauthorized = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .arg(format!("http://127.0.0.1:{port}/api/v1/requests"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&unauthorized.stdout), "401");

    let out = Command::new("bash")
        .arg(examples().join("http-api.sh"))
        .env("NODEPOOL_URL", format!("http://127.0.0.1:{port}"))
        .env_remove("NODEPOOL_API_TOKEN")
        .env("TIMEOUT", "60")
        .output()
        .expect("run http-api.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "http-api.sh failed: {}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.logs()
    );
    let node_id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("node "))
        .and_then(|l| l.split(':').next())
        .unwrap_or_else(|| panic!("the script names its node: {stdout}"))
        .to_string();
    assert!(stdout.contains(&format!("released {node_id}")), "{stdout}");

    // The released node is deleted, and min-ready keeps two ready ones.
    wait_for(
        "the released node to be deleted",
        Duration::from_secs(40),
        || {
            let listed = daemon.list();
            let gone = !listed.iter().any(|n| n["id"] == node_id.as_str());
            let ready = listed.iter().filter(|n| n["state"] == "ready").count();
            (gone && ready == 2).then_some(())
        },
    );
    assert_eq!(http_get(port, "/ready").map(|r| r.0), Some(200));
}
