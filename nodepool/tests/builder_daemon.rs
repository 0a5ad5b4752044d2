//! `nodepool builder` and the image commands, end to end: the `nodepool`
//! binary runs as a process on the embedded store (a temporary
//! `--state-dir`) with fake providers and `scripts/fake-dib-cmd` as the
//! diskimages' `dib-cmd`. The fake clouds live inside the builder process,
//! so only the store shows the uploads.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(60);

fn fake_dib_cmd() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/fake-dib-cmd")
        .display()
        .to_string()
}

/// A config directory, a state directory and the builder's log.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("nodepool.yaml")
    }

    fn images_dir(&self) -> PathBuf {
        self.dir.path().join("images")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn builder_log(&self) -> PathBuf {
        self.dir.path().join("builder.log")
    }

    /// Providers `fake-provider` (lists every image) and `fake-provider2`
    /// (lists `provider2_images`); diskimages `fake-image` and, with
    /// `second_image`, `other-image`.
    fn write_config(&self, provider2_images: &str, second_image: bool) {
        let (p1_images, extra_image) = if second_image {
            (
                "      - name: fake-image\n      - name: other-image\n",
                format!(
                    "  - name: other-image\n    dib-cmd: {}\n    elements: [vm]\n",
                    fake_dib_cmd()
                ),
            )
        } else {
            ("      - name: fake-image\n", String::new())
        };
        let text = format!(
            "images-dir: {images}
build-log-dir: {logs}
labels:
  - name: small
providers:
  - name: fake-provider
    cloud: fake
    diskimages:
{p1_images}    pools:
      - name: main
        labels:
          - name: small
            diskimage: fake-image
            min-ram: 8192
  - name: fake-provider2
    cloud: fake
    diskimages: {provider2_images}
    pools:
      - name: main
        labels: []
diskimages:
  - name: fake-image
    dib-cmd: {cmd}
    elements:
      - fedora
      - vm
    release: 21
    username: zuul
{extra_image}  - name: config-paused
    pause: true
    dib-cmd: {cmd}
",
            images = self.images_dir().display(),
            logs = self.dir.path().join("logs").display(),
            cmd = fake_dib_cmd(),
        );
        // Write elsewhere and rename, so the daemon never reads half a file.
        let tmp = self.dir.path().join("nodepool.yaml.tmp");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, self.config()).expect("rename config");
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodepool"));
        cmd.arg("-c")
            .arg(self.config())
            .arg("--state-dir")
            .arg(self.state_dir())
            .env_remove("RUST_LOG");
        cmd
    }

    /// Run a one-shot command.
    fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run nodepool")
    }

    /// Run a one-shot command that must succeed; its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "nodepool {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, command: &str) -> Vec<Value> {
        let text = self.ok(&[command, "--json"]);
        match serde_json::from_str(&text) {
            Ok(Value::Array(rows)) => rows,
            other => panic!("{command} --json is not a list: {other:?}\n{text}"),
        }
    }

    fn log(&self) -> String {
        let log = std::fs::read_to_string(self.builder_log()).unwrap_or_default();
        let launcher =
            std::fs::read_to_string(self.dir.path().join("launcher.log")).unwrap_or_default();
        format!("--- builder log ---\n{log}--- launcher log ---\n{launcher}")
    }

    /// Start `nodepool builder` with extra environment.
    fn start_builder(&self, env: &[(&str, String)]) -> Daemon {
        let log = File::create(self.builder_log()).expect("log file");
        let mut cmd = self.command();
        cmd.arg("builder")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Daemon {
            child: cmd.spawn().expect("start builder"),
        }
    }

    /// Start `nodepool launcher` beside the builder, on the same state
    /// directory, logging to `launcher.log`.
    fn start_launcher(&self) -> Daemon {
        let log = File::create(self.dir.path().join("launcher.log")).expect("log file");
        let mut cmd = self.command();
        cmd.arg("launcher")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .env("RUST_LOG", "info");
        Daemon {
            child: cmd.spawn().expect("start launcher"),
        }
    }

    /// Wait until `check` returns something, or fail after [`DEADLINE`].
    fn wait_for<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = check() {
                return v;
            }
            if start.elapsed() > DEADLINE {
                panic!("timed out waiting for {what}\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Builds of `image` in `state`, from `dib-image-list --json`.
    fn builds(&self, image: &str, state: &str) -> Vec<String> {
        self.json("dib-image-list")
            .iter()
            .filter(|b| b["image"] == image && b["state"] == state)
            .filter_map(|b| b["id"].as_str().map(str::to_string))
            .collect()
    }

    /// `(provider, build id)` of the ready uploads of `image`.
    fn ready_uploads(&self, image: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .json("image-list")
            .iter()
            .filter(|u| u["image"] == image && u["state"] == "ready")
            .map(|u| {
                (
                    u["provider"].as_str().unwrap_or_default().to_string(),
                    u["id"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// Files in images-dir whose name starts with `prefix`.
    fn image_files(&self, prefix: &str) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.images_dir())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(prefix))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }
}

/// A running `nodepool builder`; killed if the test ends without stopping it.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// SIGTERM, then wait (with a deadline) for the exit status.
    fn stop(&mut self, env: &Env) -> ExitStatus {
        self.signal("TERM");
        env.wait_for("the builder to exit", || {
            self.child.try_wait().expect("try_wait")
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `fake-image-<hex>` → the build id.
fn build_id(dib_id: &str) -> &str {
    dib_id.rsplit_once('-').map(|(_, id)| id).unwrap_or(dib_id)
}

#[test]
fn builder_builds_uploads_rebuilds_on_request_and_deletes_the_newest_build() {
    let env = Env::new();
    env.write_config("\n      - name: fake-image", false);
    let mut daemon = env.start_builder(&[]);

    // The first build, uploaded to both providers.
    let first = env.wait_for("a ready build", || {
        env.builds("fake-image", "ready").into_iter().next()
    });
    let first_id = build_id(&first).to_string();
    let uploads = env.wait_for("uploads to both providers", || {
        let u = env.ready_uploads("fake-image");
        (u.len() == 2).then_some(u)
    });
    assert_eq!(
        uploads,
        vec![
            ("fake-provider".to_string(), first_id.clone()),
            ("fake-provider2".to_string(), first_id.clone())
        ]
    );
    let listed = env.json("dib-image-list");
    let row = listed
        .iter()
        .find(|b| b["id"] == first.as_str())
        .expect("listed");
    assert_eq!(row["formats"], serde_json::json!(["qcow2"]));
    assert!(
        env.image_files(&format!("{first}.qcow2"))
            .contains(&format!("{first}.qcow2")),
        "image file on disk: {:?}",
        env.image_files("")
    );
    let builder_id =
        std::fs::read_to_string(env.images_dir().join("builder_id.txt")).expect("builder id");
    assert_eq!(builder_id.len(), 36, "a UUID: {builder_id:?}");
    let table = env.ok(&["image-list"]);
    assert!(table.contains("| Build ID"), "{table}");
    assert!(table.contains(&first_id), "{table}");

    // image-build: a second build, uploaded too.
    env.ok(&["image-build", "fake-image"]);
    let second = env.wait_for("a second ready build", || {
        env.builds("fake-image", "ready")
            .into_iter()
            .find(|b| *b != first)
    });
    let second_id = build_id(&second).to_string();
    env.wait_for("uploads of the second build", || {
        let u = env.ready_uploads("fake-image");
        (u.iter().filter(|(_, b)| *b == second_id).count() == 2).then_some(())
    });
    let status = env.json("image-status");
    let image = status
        .iter()
        .find(|s| s["image"] == "fake-image")
        .expect("image-status row");
    assert_eq!(image["build_request"], Value::Null, "request served");

    // The bad-image procedure: delete the newest build; its uploads go and
    // the previous build's remain for the launcher to boot.
    env.ok(&["dib-image-delete", &second]);
    env.wait_for("the newest build to be deleted", || {
        let gone = !env
            .json("dib-image-list")
            .iter()
            .any(|b| b["id"] == second.as_str());
        gone.then_some(())
    });
    assert_eq!(
        env.ready_uploads("fake-image"),
        vec![
            ("fake-provider".to_string(), first_id.clone()),
            ("fake-provider2".to_string(), first_id.clone())
        ]
    );
    env.wait_for("the newest build's files to be removed", || {
        env.image_files(&second).is_empty().then_some(())
    });
    assert!(!env.image_files(&first).is_empty());

    // A build id nobody has: upstream's message, exit 0.
    let out = env.run(&["dib-image-delete", "fake-image-ffffffffff"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Build fake-image-ffffffffff not found"
    );

    assert!(daemon.stop(&env).success(), "{}", env.log());
    assert!(env.log().contains("build finished in"), "{}", env.log());
    assert!(env.log().contains("upload finished in"), "{}", env.log());
    // Restarted, it keeps its id.
    let mut again = env.start_builder(&[]);
    env.wait_for("the restarted builder to register", || {
        env.log().contains("starting the builder").then_some(())
    });
    assert!(env.log().contains(builder_id.trim()), "{}", env.log());
    assert!(again.stop(&env).success());
}

#[test]
fn paused_image_is_not_built_until_unpaused() {
    let env = Env::new();
    env.write_config("[]", true);
    env.ok(&["image-pause", "fake-image"]);
    let mut daemon = env.start_builder(&[]);

    // other-image comes after fake-image in the config: once it is built, a
    // build pass has looked at the paused fake-image.
    env.wait_for("other-image to be built", || {
        env.builds("other-image", "ready").into_iter().next()
    });
    let listed = env.json("dib-image-list");
    assert!(
        !listed.iter().any(|b| b["image"] == "fake-image"),
        "paused image built: {listed:?}"
    );
    let status = env.json("image-status");
    let row = status
        .iter()
        .find(|s| s["image"] == "fake-image")
        .expect("image-status row");
    assert_eq!(row["paused"], Value::Bool(true));

    env.ok(&["image-unpause", "fake-image"]);
    env.wait_for("fake-image to be built after unpause", || {
        env.builds("fake-image", "ready").into_iter().next()
    });
    assert!(daemon.stop(&env).success(), "{}", env.log());
}

#[test]
fn provider_with_empty_diskimages_loses_its_uploads_on_reload() {
    let env = Env::new();
    env.write_config("\n      - name: fake-image", false);
    let mut daemon = env.start_builder(&[]);
    env.wait_for("uploads to both providers", || {
        (env.ready_uploads("fake-image").len() == 2).then_some(())
    });

    // An invalid file is reported and the running config kept.
    let tmp = env.dir.path().join("broken.yaml");
    std::fs::write(&tmp, "providers: [[[\n").expect("write");
    std::fs::rename(&tmp, env.config()).expect("rename");
    env.wait_for("the invalid config to be refused", || {
        env.log()
            .contains("configuration change ignored")
            .then_some(())
    });

    env.write_config("[]", false);
    env.wait_for("fake-provider2's upload to be removed", || {
        let uploads = env.json("image-list");
        let left: Vec<&Value> = uploads
            .iter()
            .filter(|u| u["provider"] == "fake-provider2")
            .collect();
        left.is_empty().then_some(())
    });
    assert_eq!(env.ready_uploads("fake-image").len(), 1);
    assert!(daemon.stop(&env).success(), "{}", env.log());
    assert!(
        env.log().contains("configuration reloaded"),
        "{}",
        env.log()
    );
}

#[test]
fn sigterm_mid_build_stops_dib_and_leaves_no_ready_build() {
    let env = Env::new();
    env.write_config("[]", false);
    let pidfile = env.dir.path().join("dib.pid");
    let mut daemon = env.start_builder(&[
        ("FAKE_DIB_SLEEP", "120".to_string()),
        ("FAKE_DIB_PIDFILE", pidfile.display().to_string()),
    ]);
    let building = env.wait_for("a build in progress", || {
        env.builds("fake-image", "building").into_iter().next()
    });
    let pid: u32 = env.wait_for("the dib command to sleep", || {
        std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    });
    env.wait_for("the partial output", || {
        (!env.image_files(&building).is_empty()).then_some(())
    });

    // SIGUSR2 mid-build: every worker and what it waits on.
    let sent = Command::new("kill")
        .arg("-USR2")
        .arg(daemon.child.id().to_string())
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -USR2 failed");
    let dump = env.wait_for("the SIGUSR2 task dump", || {
        let log = env.log();
        let at = log.find("SIGUSR2 task dump")?;
        let mut lines = log[at..].lines();
        let header = lines.next()?.to_string();
        let tasks: Vec<&str> = lines.take_while(|l| l.starts_with("  ")).collect();
        (!tasks.is_empty()).then(|| format!("{header}\n{}", tasks.join("\n")))
    });
    let build_worker = dump
        .lines()
        .find(|l| l.trim_start().starts_with("build worker 1, "))
        .unwrap_or_else(|| panic!("no build worker in:\n{dump}"));
    assert!(
        build_worker.contains(&format!(
            ": image builder: image fake-image build {} (",
            build_id(&building)
        )),
        "the build worker waits on the image builder: {dump}"
    );
    for task in ["upload worker, ", "builder cleanup worker, "] {
        assert!(
            dump.contains(&format!("\n  {task}")),
            "no {task:?} in:\n{dump}"
        );
    }

    let status = daemon.stop(&env);
    assert!(status.success(), "exit {status:?}\n{}", env.log());
    env.wait_for("the dib process to be gone", || {
        (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
    assert_eq!(env.image_files(&building), Vec::<String>::new());
    let listed = env.json("dib-image-list");
    assert!(
        !listed.iter().any(|b| b["state"] == "ready"),
        "a half build is ready: {listed:?}"
    );
    let row = listed.iter().find(|b| b["id"] == building.as_str());
    assert!(
        row.map_or(true, |b| b["state"] == "failed"),
        "interrupted build: {row:?}"
    );
}

#[test]
fn builder_refuses_to_start_without_images_dir() {
    let env = Env::new();
    std::fs::write(env.config(), "labels: []\n").expect("write config");
    let out = env.run(&["builder"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("No images-dir specified in config."),
        "{stderr}"
    );
}

#[test]
fn image_build_refuses_unknown_and_config_paused_images() {
    let env = Env::new();
    env.write_config("[]", false);
    let unknown = env.run(&["image-build", "no-such-image"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr)
        .contains("Trying to build a non disk-image-builder image: no-such-image"));
    let paused = env.run(&["image-build", "config-paused"]);
    assert_eq!(paused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&paused.stderr)
        .contains("Skipping build request for image config-paused; paused"));

    // A request for a known image is recorded and shown as pending.
    env.ok(&["image-build", "fake-image"]);
    let status = env.json("image-status");
    let row = status
        .iter()
        .find(|s| s["image"] == "fake-image")
        .expect("image-status row");
    assert_eq!(row["build_request"], "pending");
    let table = env.ok(&["image-status"]);
    assert!(table.contains("| Image "), "{table}");
    assert!(table.contains("pending"), "{table}");
}

#[test]
fn image_delete_marks_an_unknown_upload_not_found() {
    let env = Env::new();
    env.write_config("[]", false);
    let out = env.run(&[
        "image-delete",
        "--provider",
        "fake-provider",
        "--image",
        "fake-image",
        "--build-id",
        "0000000001",
        "--upload-id",
        "0000000001",
    ]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Image upload not found"
    );
}

#[test]
fn launcher_and_builder_as_two_processes_boot_from_the_builders_upload() {
    let env = Env::new();
    env.write_config("\n      - name: fake-image", false);
    // min-ready 1 of `small` (diskimage fake-image), and a web port of its own.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let text = std::fs::read_to_string(env.config()).expect("config");
    let text = text.replacen(
        "labels:\n  - name: small\n",
        "labels:\n  - name: small\n    min-ready: 1\n",
        1,
    ) + &format!("webapp:\n  port: {port}\n  listen_address: 127.0.0.1\n");
    std::fs::write(env.config(), text).expect("write config");
    let mut builder = env.start_builder(&[]);
    let mut launcher = env.start_launcher();

    env.wait_for("a ready upload to fake-provider", || {
        env.json("image-list")
            .into_iter()
            .find(|u| u["provider"] == "fake-provider" && u["state"] == "ready")
    });
    // A label with a diskimage boots only from an upload: the builder's,
    // made by the fake cloud of another process.
    env.wait_for("a ready node of small", || {
        env.json("list")
            .into_iter()
            .find(|n| n["label"] == serde_json::json!(["small"]) && n["state"] == "ready")
    });
    let log = env.log();
    assert!(!log.contains("not found"), "{log}");
    assert!(
        launcher.stop(&env).success(),
        "launcher exit\n{}",
        env.log()
    );
    assert!(builder.stop(&env).success(), "builder exit\n{}", env.log());
}

#[test]
fn builder_sends_upstreams_build_and_upload_metrics_to_statsd() {
    let receiver = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    receiver
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let statsd_port = receiver.local_addr().expect("addr").port();
    let env = Env::new();
    env.write_config("\n      - name: fake-image", false);
    let _daemon = env.start_builder(&[
        ("STATSD_HOST", "127.0.0.1".to_string()),
        ("STATSD_PORT", statsd_port.to_string()),
    ]);

    // After a build and its uploads: upstream's names and types.
    let mut seen: Vec<String> = Vec::new();
    let wanted = [
        (
            "nodepool.dib_image_build.fake-image.status.duration:",
            "|ms",
        ),
        ("nodepool.dib_image_build.fake-image.status.rc:0", "|g"),
        (
            "nodepool.dib_image_build.fake-image.status.last_build:",
            "|g",
        ),
        ("nodepool.dib_image_build.fake-image.qcow2.size:", "|g"),
        ("nodepool.image_update.fake-image.fake-provider:", "|c"),
        ("nodepool.image_update.fake-image.fake-provider:", "|ms"),
        ("nodepool.image_update.fake-image.fake-provider2:", "|c"),
        ("nodepool.image_update.fake-image.fake-provider2:", "|ms"),
        (".image.fake-image.build.state:", "|g"),
        (
            ".image.fake-image.provider.fake-provider.upload.state:",
            "|g",
        ),
        ("nodepool.image.fake-image.image_build_requests:", "|g"),
        ("nodepool.image_build_requests:", "|g"),
    ];
    let mut buf = [0u8; 2048];
    env.wait_for("the builder's metrics over statsd", || {
        if let Ok(n) = receiver.recv(&mut buf) {
            assert!(n <= 512, "datagrams stay within 512 bytes");
            seen.extend(
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .map(str::to_owned),
            );
        }
        wanted
            .iter()
            .all(|(name, kind)| {
                seen.iter().any(|l| {
                    // A leading dot: under `nodepool.builder.<hostname>`.
                    let named = if name.starts_with('.') {
                        l.starts_with("nodepool.builder.") && l.contains(name)
                    } else {
                        l.starts_with(name)
                    };
                    named && l.contains(kind)
                })
            })
            .then_some(())
    });
}

#[test]
fn builder_leaves_a_validated_diskimage_testing_until_the_launcher_validates_it() {
    let env = Env::new();
    env.write_config("\n      - name: fake-image", false);
    let hook = env.dir.path().join("validate.sh");
    let runs = env.dir.path().join("runs");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$NODEPOOL_BUILD_ID\" >> {}\nsleep 1\n",
            runs.display()
        ),
    )
    .expect("hook");
    let status = Command::new("chmod")
        .arg("+x")
        .arg(&hook)
        .status()
        .expect("chmod");
    assert!(status.success());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let text = std::fs::read_to_string(env.config()).expect("config");
    let text =
        text.replacen(
            "labels:\n  - name: small\n",
            "labels:\n  - name: small\n    min-ready: 1\n",
            1,
        )
        .replacen(
            "    release: 21\n",
            &format!(
                "    release: 21\n    validation:\n      hook: {}\n      timeout: 60\n",
                hook.display()
            ),
            1,
        ) + &format!("webapp:\n  port: {port}\n  listen_address: 127.0.0.1\n");
    std::fs::write(env.config(), text).expect("write config");
    let mut builder = env.start_builder(&[]);

    // Without a launcher the upload stays `testing`: nothing boots from it.
    let testing = env.wait_for("an upload waiting for validation", || {
        env.json("image-list")
            .into_iter()
            .find(|u| u["provider"] == "fake-provider" && u["state"] == "testing")
    });
    let build = testing["id"].as_str().expect("build id").to_string();
    let mut launcher = env.start_launcher();
    env.wait_for("the upload validated", || {
        env.json("image-list").into_iter().find(|u| {
            u["provider"] == "fake-provider" && u["id"] == build.as_str() && u["state"] == "ready"
        })
    });
    let listed = env.json("image-list");
    let row = listed
        .iter()
        .find(|u| u["provider"] == "fake-provider" && u["id"] == build.as_str())
        .expect("row");
    let log = format!(
        "{}/validation-logs/fake-image-{build}-fake-provider-{}.log",
        env.state_dir().display(),
        row["upload_id"].as_str().unwrap_or_default()
    );
    assert_eq!(row["validation"], format!("passed (log: {log})"));
    assert_eq!(
        std::fs::read_to_string(&runs).expect("runs").trim(),
        build,
        "one validation of the build"
    );
    env.wait_for("a ready node of small", || {
        env.json("list")
            .into_iter()
            .find(|n| n["label"] == serde_json::json!(["small"]) && n["state"] == "ready")
    });
    // The builder did not upload the build again while it was testing.
    let uploads = env
        .json("image-list")
        .into_iter()
        .filter(|u| u["provider"] == "fake-provider" && u["id"] == build.as_str())
        .count();
    assert_eq!(uploads, 1);
    assert!(launcher.stop(&env).success(), "{}", env.log());
    assert!(builder.stop(&env).success(), "{}", env.log());
}
