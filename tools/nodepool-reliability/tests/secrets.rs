//! Secrets never leave nodepool: a cloud password, an application
//! credential secret and the web API token, all distinctive strings, are
//! looked for in everything the daemon and the CLI show: the launcher's
//! debug log (with authentication failing, so errors are logged), the web
//! app's pages and API errors, and the CLI's `--json` and table outputs.
//!
//! Needs the `nodepool` and `openstack-sim` binaries built.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const PASSWORD: &str = "PwLeak-7f3Kq9zX";
const APP_SECRET: &str = "AcLeak-2mV8rT4w";
const API_TOKEN: &str = "TkLeak-9dH1sY6p";

fn binary(name: &str) -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_nodepool-chaos"));
    let path = exe.with_file_name(name);
    assert!(
        path.is_file(),
        "{} is not built: cargo build -p nodepool -p nodepool-openstack-sim",
        path.display()
    );
    path
}

struct Killed(Child);

fn daemon_alive(k: &mut Killed) -> bool {
    matches!(k.0.try_wait(), Ok(None))
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn files(dir: &Path, sim: &str, port: u16) -> (PathBuf, PathBuf, PathBuf) {
    let clouds = dir.join("clouds.yaml");
    std::fs::write(
        &clouds,
        format!(
            "clouds:\n  pw:\n    region_name: RegionOne\n    auth:\n      auth_url: \
             {sim}/identity/v3\n      username: demo\n      password: \"{PASSWORD}\"\n      \
             project_name: demo\n      user_domain_name: Default\n      project_domain_name: \
             Default\n  app:\n    region_name: RegionOne\n    auth_type: \
             v3applicationcredential\n    auth:\n      auth_url: {sim}/identity/v3\n      \
             application_credential_id: ac-nodepool\n      application_credential_secret: \
             \"{APP_SECRET}\"\n"
        ),
    )
    .expect("clouds.yaml");
    let provider = |name: &str, cloud: &str| {
        [
            format!("  - name: {name}"),
            "    driver: openstack".to_string(),
            format!("    cloud: {cloud}"),
            "    rate: 0".to_string(),
            "    launch-retries: 1".to_string(),
            "    cloud-images:".to_string(),
            "      - name: cirros".to_string(),
            "    pools:".to_string(),
            "      - name: main".to_string(),
            "        max-servers: 2".to_string(),
            "        labels:".to_string(),
            "          - name: small".to_string(),
            "            cloud-image: cirros".to_string(),
            "            flavor-name: m1.tiny".to_string(),
        ]
        .join("\n")
            + "\n"
    };
    let config = dir.join("nodepool.yaml");
    std::fs::write(
        &config,
        format!(
            "webapp:\n  port: {port}\n  listen_address: 127.0.0.1\nlabels:\n  - name: small\n    \
             min-ready: 1\nproviders:\n{}{}",
            provider("sim-pw", "pw"),
            provider("sim-app", "app")
        ),
    )
    .expect("nodepool.yaml");
    let secure = dir.join("secure.conf");
    std::fs::write(&secure, format!("api-token: {API_TOKEN}\n")).expect("secure file");
    (config, secure, clouds)
}

async fn get(http: &reqwest::Client, url: &str, token: Option<&str>) -> String {
    let mut req = http.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    match req.send().await {
        Ok(r) => format!(
            "{} {url}\n{}\n",
            r.status(),
            r.text().await.unwrap_or_default()
        ),
        Err(e) => format!("GET {url}: {e}\n"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_appear_in_no_log_page_error_or_json_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The cloud accepts neither secret: every authentication fails.
    let mut sim = Command::new(binary("openstack-sim"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openstack-sim starts");
    let mut line = String::new();
    BufReader::new(sim.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("address");
    let _sim = Killed(sim);
    let base = format!("http://{}", line.trim());
    let port = free_port();
    let (config, secure, clouds) = files(dir.path(), &base, port);
    let nodepool = binary("nodepool");
    let state = dir.path().join("state");
    let common = |cmd: &mut Command| {
        cmd.arg("-c")
            .arg(&config)
            .arg("-s")
            .arg(&secure)
            .arg("--state-dir")
            .arg(&state)
            .env("OS_CLIENT_CONFIG_FILE", &clouds)
            .env("RUST_LOG", "debug");
    };
    let log = dir.path().join("launcher.log");
    let mut cmd = Command::new(&nodepool);
    common(&mut cmd);
    let daemon = cmd
        .arg("--debug")
        .arg("launcher")
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(std::fs::File::create(dir.path().join("launcher.err")).expect("log"))
        .spawn()
        .expect("daemon starts");
    let mut daemon = Killed(daemon);

    let http = reqwest::Client::new();
    let web = format!("http://127.0.0.1:{port}");
    let mut captured = String::new();
    // Wait until both providers have failed to authenticate (min-ready
    // makes the launcher try) and the web app answers.
    let logs = || {
        std::fs::read_to_string(dir.path().join("launcher.err")).unwrap_or_default()
            + &std::fs::read_to_string(&log).unwrap_or_default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let text = logs();
        let failed = |provider: &str| {
            text.lines()
                .any(|l| l.contains("authentication failed") && l.contains(provider))
        };
        let up = http.get(format!("{web}/healthz")).send().await.is_ok();
        assert!(daemon_alive(&mut daemon), "the daemon exited:\n{text}");
        if up && failed("sim-app") && failed("sim-pw") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the daemon never logged authentication failures of both providers:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for path in [
        "/node-list",
        "/node-list?json=1",
        "/request-list",
        "/label-list",
        "/metrics",
        "/ready",
        "/healthz",
        "/api/v1/requests/100-0000000001",
        "/no-such-page",
    ] {
        captured += &get(&http, &format!("{web}{path}"), None).await;
        captured += &get(&http, &format!("{web}{path}"), Some("wrong-token")).await;
        captured += &get(&http, &format!("{web}{path}"), Some(API_TOKEN)).await;
    }
    for (token, body) in [
        (Some(API_TOKEN), r#"{"labels": ["small"]}"#),
        (Some(API_TOKEN), r#"{"labels": "#),
        (Some("wrong-token"), r#"{"labels": ["small"]}"#),
        (None, r#"{"labels": ["small"]}"#),
    ] {
        let mut req = http
            .post(format!("{web}/api/v1/requests"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Ok(r) = req.send().await {
            captured += &format!("{}\n{}\n", r.status(), r.text().await.unwrap_or_default());
        }
    }
    drop(daemon);

    for args in [
        &["list", "--json"][..],
        &["list", "--detail"],
        &["request-list", "--json"],
        &["label-list", "--json"],
        &["info", "sim-pw", "--json"],
        &["config-validate"],
        &["--debug", "list"],
    ] {
        let mut cmd = Command::new(&nodepool);
        common(&mut cmd);
        let out = cmd.args(args).output().expect("CLI runs");
        captured += &format!(
            "nodepool {args:?}: {}\n{}\n{}\n",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    captured += &logs();
    if let Some(keep) = std::env::var_os("SECRETS_CAPTURE") {
        std::fs::write(keep, &captured).expect("captured");
    }

    assert!(
        captured.contains("401 Unauthorized")
            && captured.contains("nodepool [\"list\", \"--json\"]: exit status: 0"),
        "the outputs were captured: {captured}"
    );
    for secret in [PASSWORD, APP_SECRET, API_TOKEN] {
        let hits: Vec<&str> = captured.lines().filter(|l| l.contains(secret)).collect();
        assert!(
            hits.is_empty(),
            "secret {secret} appears in {} captured lines, e.g.:\n{}",
            hits.len(),
            hits.iter().take(5).copied().collect::<Vec<_>>().join("\n")
        );
    }
}
