//! Shared by the client tests: the simulator as a process, and the clients
//! we did not write (Debian's kubectl, the Python `kubernetes` package),
//! skipped with a reason when missing unless
//! `NODEPOOL_TEST_REQUIRE_KUBE_CLIENTS` is set.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nodepool_kube_sim::{ProcessOptions, SimProcess};

/// A simulator process with its files in a temporary directory.
pub struct Cluster {
    pub sim: SimProcess,
    pub dir: tempfile::TempDir,
}

/// Start `kube-sim` (this crate's binary) with 300 ms pod delays.
pub fn cluster() -> Cluster {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut opts = ProcessOptions::in_dir(dir.path());
    opts.pod_ready_delay_ms = 300;
    opts.pod_terminate_delay_ms = 300;
    let sim = SimProcess::spawn(Path::new(env!("CARGO_BIN_EXE_kube-sim")), &opts)
        .expect("kube-sim starts");
    Cluster { sim, dir }
}

fn required() -> bool {
    std::env::var_os("NODEPOOL_TEST_REQUIRE_KUBE_CLIENTS").is_some_and(|v| !v.is_empty())
}

/// `None` (the test skips, saying why) when the client is missing; a panic
/// when clients are required.
fn missing(what: &str, why: &str) -> Option<PathBuf> {
    assert!(
        !required(),
        "{what} is required (NODEPOOL_TEST_REQUIRE_KUBE_CLIENTS) but {why}"
    );
    eprintln!("SKIP: {what}: {why}");
    None
}

/// Debian's kubectl: `$NODEPOOL_TEST_KUBECTL`, else `kubectl` on PATH.
pub fn kubectl() -> Option<PathBuf> {
    let path = std::env::var_os("NODEPOOL_TEST_KUBECTL")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from("kubectl"), PathBuf::from);
    match Command::new(&path).args(["version", "--client"]).output() {
        Ok(out) if out.status.success() => Some(path),
        Ok(out) => missing(
            "kubectl",
            &format!(
                "{} version --client failed: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Err(e) => missing(
            "kubectl",
            &format!(
                "{} cannot run ({e}); set NODEPOOL_TEST_KUBECTL",
                path.display()
            ),
        ),
    }
}

/// A Python with the `kubernetes` package: `$NODEPOOL_TEST_KUBE_PYTHON`.
pub fn kube_python() -> Option<PathBuf> {
    let Some(path) = std::env::var_os("NODEPOOL_TEST_KUBE_PYTHON").filter(|p| !p.is_empty()) else {
        return missing(
            "the Python kubernetes client",
            "NODEPOOL_TEST_KUBE_PYTHON is not set (scripts/test.sh sets it)",
        );
    };
    let path = PathBuf::from(path);
    match Command::new(&path)
        .args(["-c", "import kubernetes; print(kubernetes.__version__)"])
        .output()
    {
        Ok(out) if out.status.success() => {
            eprintln!(
                "python kubernetes client {}",
                String::from_utf8_lossy(&out.stdout).trim()
            );
            Some(path)
        }
        Ok(out) => missing(
            "the Python kubernetes client",
            &format!(
                "{} cannot import kubernetes: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Err(e) => missing(
            "the Python kubernetes client",
            &format!("{} cannot run: {e}", path.display()),
        ),
    }
}

/// kubectl against a cluster.
pub struct Kubectl {
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Kubectl {
    pub fn new(bin: PathBuf, cluster: &Cluster) -> Self {
        Self {
            bin,
            kubeconfig: cluster.sim.kubeconfig().to_path_buf(),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        cmd
    }

    /// Run; the output whatever the exit status.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut cmd = self.command(args);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl runs");
        if let Some(mut pipe) = child.stdin.take() {
            if let Some(text) = stdin {
                pipe.write_all(text.as_bytes()).expect("stdin");
            }
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// Run; panic unless it succeeds; its stdout.
    pub fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run; panic unless it fails; its stderr.
    pub fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            !out.status.success(),
            "kubectl {args:?} should fail: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `get ... -o json`, parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all, None)).expect("kubectl prints JSON")
    }
}

/// A plain HTTPS client of the API (reqwest trusting the built-in CA).
pub struct Api {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str, token: &str) -> Self {
        let ca = reqwest::Certificate::from_pem(nodepool_kube_sim::CA_CERT_PEM.as_bytes())
            .expect("the built-in CA parses");
        let http = reqwest::Client::builder()
            .add_root_certificate(ca)
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("HTTP client");
        Self {
            base: base.to_string(),
            token: token.to_string(),
            http,
        }
    }

    /// The token in a kubeconfig kube-sim wrote.
    pub fn token_of(kubeconfig: &Path) -> String {
        std::fs::read_to_string(kubeconfig)
            .expect("kubeconfig")
            .lines()
            .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_string))
            .expect("a token in the kubeconfig")
    }

    /// Send `method path` with a JSON body; the status and the JSON answer.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let code = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (code, value)
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    /// Poll `path` until `check` holds on its JSON (20 s at most).
    pub async fn wait_for(&self, path: &str, check: impl Fn(u16, &serde_json::Value) -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let (code, body) = self.get(path).await;
            if check(code, &body) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting on {path}: {code} {body}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// A minimal pod body.
pub fn pod(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "x"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1"}]},
    })
}
