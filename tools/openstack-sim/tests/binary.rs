//! The `openstack-sim` binary prints its address first and, with
//! `--state-file`, keeps its cloud across a restart.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

fn spawn(state_file: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_openstack-sim"))
        .args(["--listen", "127.0.0.1:0", "--state-file"])
        .arg(state_file)
        .stdout(Stdio::piped())
        .spawn()
        .expect("simulator starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("first line");
    (child, line.trim().to_string())
}

#[tokio::test]
async fn state_file_keeps_the_cloud_across_a_restart() {
    let dir = std::env::temp_dir().join(format!("np-sim-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let state = dir.join("state.json");
    let client = reqwest::Client::new();
    let (mut first, addr) = spawn(&state);
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let limits = serde_json::json!({"max_instances": 3, "max_cores": 6, "max_ram": 1024});
    let resp = client
        .put(format!("http://{addr}/_sim/limits"))
        .json(&limits)
        .send()
        .await
        .expect("admin call");
    assert_eq!(resp.status(), 204);
    first.kill().expect("kill");
    let _ = first.wait();
    let (mut second, addr) = spawn(&state);
    let cloud: serde_json::Value = client
        .get(format!("http://{addr}/_sim/state"))
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("json");
    assert_eq!(cloud["config"]["limits"]["max_instances"], 3);
    second.kill().expect("kill");
    let _ = second.wait();
    let _ = std::fs::remove_dir_all(dir);
}
