//! Image validation (doc/images.md), end to end: `nodepool launcher` runs as
//! a process on the embedded store with the fake cloud; the test plays the
//! builder, writing builds and `testing` uploads into the same store (the
//! fake cloud boots from any `fake-image-<hex>` id, as from another
//! process's upload). The validation hook is a shell script of the test's.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nodepool_core::model::{BuildState, ImageBuild, ImageUpload, Node, NodeState, UploadState};
use nodepool_core::store::NodeStore;
use support::{free_port, Daemon};

const WAIT: Duration = Duration::from_secs(60);
const IMAGE: &str = "fake-image";
const PROVIDER: &str = "fake-provider";

/// One fake provider whose label `small` boots diskimage `fake-image`,
/// validated by `hook` within `timeout` seconds.
fn config(port: u16, hook: &Path, timeout: u32, min_ready: u32) -> String {
    format!(
        "webapp:
  port: {port}
  listen_address: 127.0.0.1
labels:
  - name: small
    min-ready: {min_ready}
providers:
  - name: {PROVIDER}
    cloud: fake
    driver: fake
    rate: 0.0001
    fake-settings:
      boot-delay: 0.05
    diskimages:
      - name: {IMAGE}
    pools:
      - name: main
        max-servers: 4
        labels:
          - name: small
            diskimage: {IMAGE}
            min-ram: 8192
diskimages:
  - name: {IMAGE}
    validation:
      hook: {hook}
      timeout: {timeout}
",
        hook = hook.display(),
    )
}

/// Write an executable shell script.
fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}")).expect("write hook");
    let status = std::process::Command::new("chmod")
        .arg("+x")
        .arg(path)
        .status()
        .expect("chmod");
    assert!(status.success());
}

/// Store a ready build of `fake-image` with one upload in `state` to the
/// fake provider (cloud id `fake-image-<n>`); returns the build id.
async fn add_build(store: &Arc<dyn NodeStore>, n: u32, state: UploadState) -> String {
    let mut build = ImageBuild::new(IMAGE, BuildState::Ready);
    build.formats = vec!["qcow2".to_string()];
    let build_id = store.create_build(IMAGE, &build).await.expect("build");
    let mut upload = ImageUpload::new(IMAGE, build_id.clone(), PROVIDER, state);
    upload.external_id = Some(format!("fake-image-{n:08x}"));
    upload.external_name = Some(format!("{IMAGE}-{build_id}"));
    upload.format = Some("qcow2".to_string());
    store
        .create_upload(IMAGE, &build_id, PROVIDER, &upload)
        .await
        .expect("upload");
    build_id
}

async fn upload_of(store: &Arc<dyn NodeStore>, build_id: &str) -> ImageUpload {
    store
        .list_uploads(IMAGE, build_id)
        .await
        .expect("uploads")
        .into_iter()
        .find(|u| u.provider_name == PROVIDER)
        .expect("the build's upload")
}

/// The build a node booted from (its `image_id` names the upload).
fn booted_build(node: &Node) -> Option<&str> {
    let path = node.image_id.as_deref()?;
    path.split('/').skip_while(|p| *p != "builds").nth(1)
}

/// Nodes that serve jobs (ready, in use, used).
fn serving(nodes: &[Node]) -> impl Iterator<Item = &Node> {
    nodes.iter().filter(|n| {
        matches!(
            n.state,
            Some(NodeState::Ready | NodeState::InUse | NodeState::Used)
        )
    })
}

/// Wait for `check` on the store's nodes; every sample is also checked to
/// have no serving node from a build in `never`.
async fn wait_nodes<T>(
    daemon: &Daemon,
    store: &Arc<dyn NodeStore>,
    never: &[&str],
    what: &str,
    mut check: impl FnMut(&[Node]) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let nodes = store.list_nodes().await.expect("nodes");
        for node in serving(&nodes) {
            if let Some(build) = booted_build(node) {
                assert!(
                    !never.contains(&build),
                    "node {} serves from unvalidated build {build}\n{}",
                    node.id,
                    daemon.logs()
                );
            }
        }
        if let Some(v) = check(&nodes) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_upload(
    daemon: &Daemon,
    store: &Arc<dyn NodeStore>,
    never: &[&str],
    build_id: &str,
    state: UploadState,
) -> ImageUpload {
    let what = format!("the upload of build {build_id} to be {state:?}");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        wait_nodes(daemon, store, never, &what, |_| Some(())).await;
        let upload = upload_of(store, build_id).await;
        if upload.state == Some(state) {
            return upload;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {upload:?}\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

struct Hook {
    dir: tempfile::TempDir,
}

impl Hook {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("hook dir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_build_leaves_the_previous_upload_serving_and_a_passing_one_takes_over() {
    let hook = Hook::new();
    // Records each run (its environment and stdin); passes once `pass` exists.
    script(
        &hook.path("validate.sh"),
        &format!(
            "echo \"$NODEPOOL_BUILD_ID $NODEPOOL_NODE_ID $NODEPOOL_PROVIDER $NODEPOOL_IMAGE \
             ip=$NODEPOOL_NODE_IP user=$NODEPOOL_NODE_USERNAME\" >> {runs}\n\
             cat > {stdin}\n\
             echo checking the image\n\
             test -e {pass} || {{ echo 'the image is broken' >&2; exit 3; }}\n",
            runs = hook.path("runs").display(),
            stdin = hook.path("stdin.json").display(),
            pass = hook.path("pass").display(),
        ),
    );
    let port = free_port();
    let daemon = Daemon::prepare(&config(port, &hook.path("validate.sh"), 30, 1), port);
    let store = daemon.store();
    // The build serving now: validated before (ready).
    let old = add_build(&store, 1, UploadState::Ready).await;
    let mut daemon = daemon;
    daemon.spawn();
    daemon.wait_ready();
    let first_ready = wait_nodes(&daemon, &store, &[], "a ready node", |nodes| {
        serving(nodes).next().map(|n| n.id.clone())
    })
    .await;

    // A new build whose hook fails.
    let bad = add_build(&store, 2, UploadState::Testing).await;
    let failed = wait_upload(&daemon, &store, &[&bad], &bad, UploadState::Failed).await;
    let validation = failed.validation().expect("validation outcome");
    assert_eq!(validation.result, "failed");
    assert!(
        validation
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("3"),
        "{validation:?}"
    );
    let log = validation.log.clone().expect("hook log");
    let text = std::fs::read_to_string(&log).expect("read the hook log");
    assert!(
        text.contains("checking the image") && text.contains("the image is broken"),
        "{text}"
    );
    let runs = lines(&hook.path("runs"));
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(
        runs[0].starts_with(&format!("{bad} "))
            && runs[0].contains(&format!(" {PROVIDER} {IMAGE} ip=")),
        "{runs:?}"
    );
    assert!(!runs[0].contains("user= "), "the node's username: {runs:?}");
    let stdin: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hook.path("stdin.json")).expect("stdin copy"))
            .expect("the node's JSON on stdin");
    assert_eq!(stdin["state"], "testing", "{stdin}");
    assert_eq!(stdin["requestor"], "NodePool:validation", "{stdin}");

    // image-list shows the outcome and the log.
    let listing = daemon.cli_json(&["image-list", "--json"]);
    let row = listing
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["id"] == bad.as_str()))
        .cloned()
        .expect("image-list row");
    assert_eq!(row["state"], "failed");
    let shown = row["validation"].as_str().unwrap_or_default();
    assert!(
        shown.starts_with("failed: ") && shown.contains(&log),
        "{row}"
    );

    // The validation node is gone; the old node still serves; a new node
    // boots from the old build.
    wait_nodes(
        &daemon,
        &store,
        &[&bad],
        "the validation node deleted",
        |nodes| {
            (!nodes
                .iter()
                .any(|n| n.requestor.as_deref() == Some("NodePool:validation")))
            .then_some(())
        },
    )
    .await;
    let out = daemon.cli(&["delete", &first_ready]);
    assert!(out.status.success(), "{out:?}");
    let replacement = wait_nodes(&daemon, &store, &[&bad], "a new ready node", |nodes| {
        serving(nodes)
            .find(|n| n.id != first_ready && n.state == Some(NodeState::Ready))
            .cloned()
    })
    .await;
    assert_eq!(booted_build(&replacement), Some(old.as_str()));
    // The rejected upload is not validated again.
    assert_eq!(lines(&hook.path("runs")).len(), 1);

    // The next build passes and serves.
    std::fs::write(hook.path("pass"), "").expect("pass marker");
    let good = add_build(&store, 3, UploadState::Testing).await;
    let passed = wait_upload(&daemon, &store, &[&bad], &good, UploadState::Ready).await;
    assert_eq!(passed.validation().map(|v| v.result), Some("passed".into()));
    let out = daemon.cli(&["delete", &replacement.id]);
    assert!(out.status.success(), "{out:?}");
    let from_good = wait_nodes(
        &daemon,
        &store,
        &[&bad],
        "a node of the new build",
        |nodes| {
            serving(nodes)
                .find(|n| booted_build(n) == Some(good.as_str()))
                .cloned()
        },
    )
    .await;
    assert_eq!(from_good.state, Some(NodeState::Ready));
    wait_nodes(
        &daemon,
        &store,
        &[&bad],
        "no validation node left",
        |nodes| (!nodes.iter().any(|n| n.state == Some(NodeState::Testing))).then_some(()),
    )
    .await;
    assert_eq!(lines(&hook.path("runs")).len(), 2);

    // `image-validate` runs the newest upload's validation again.
    let out = daemon.cli(&["image-validate", IMAGE]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!(
            "of {IMAGE} build {good} to {PROVIDER} will be validated again"
        )),
        "{said}"
    );
    wait_nodes(
        &daemon,
        &store,
        &[&bad],
        "the third run of the hook",
        |_| (lines(&hook.path("runs")).len() == 3).then_some(()),
    )
    .await;
    wait_upload(&daemon, &store, &[&bad], &good, UploadState::Ready).await;
    assert!(lines(&hook.path("runs"))[2].starts_with(&format!("{good} ")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_hook_is_stopped_at_the_timeout() {
    let hook = Hook::new();
    script(&hook.path("hang.sh"), "echo started\nexec sleep 300\n");
    let port = free_port();
    let mut daemon = Daemon::prepare(&config(port, &hook.path("hang.sh"), 2, 0), port);
    let store = daemon.store();
    let build = add_build(&store, 7, UploadState::Testing).await;
    let started = std::time::Instant::now();
    daemon.spawn();
    let failed = wait_upload(&daemon, &store, &[&build], &build, UploadState::Failed).await;
    assert!(started.elapsed() < Duration::from_secs(45));
    let validation = failed.validation().expect("validation outcome");
    assert!(
        validation
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("did not finish within"),
        "{validation:?}"
    );
    let log = std::fs::read_to_string(validation.log.expect("log")).expect("log file");
    assert!(log.contains("started"), "{log}");
    // The hung hook was killed.
    let pgrep = std::process::Command::new("pgrep")
        .args(["-f", &hook.path("hang.sh").display().to_string()])
        .output()
        .expect("pgrep");
    assert!(
        pgrep.stdout.is_empty(),
        "the hook still runs: {}",
        String::from_utf8_lossy(&pgrep.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_validation_leaves_no_validation_node_and_validates_again() {
    let hook = Hook::new();
    // Records each run, then waits for `release` (at most a minute).
    script(
        &hook.path("slow.sh"),
        &format!(
            "echo \"$NODEPOOL_NODE_ID\" >> {runs}\n\
             i=0\n\
             while [ ! -e {release} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\n\
             test -e {release}\n",
            runs = hook.path("runs").display(),
            release = hook.path("release").display(),
        ),
    );
    let port = free_port();
    let mut daemon = Daemon::prepare(&config(port, &hook.path("slow.sh"), 120, 0), port);
    let store = daemon.store();
    let build = add_build(&store, 9, UploadState::Testing).await;
    daemon.spawn();
    let runs = hook.path("runs");
    let first_node = wait_nodes(&daemon, &store, &[&build], "the hook's first run", |_| {
        lines(&runs).first().cloned()
    })
    .await;
    daemon.kill9();
    daemon.spawn();
    // After the restart: the first validation node is deleted and the
    // upload is validated again, with a new node.
    let second_node = wait_nodes(&daemon, &store, &[&build], "the hook's second run", |_| {
        lines(&runs).get(1).cloned()
    })
    .await;
    assert_ne!(first_node, second_node);
    wait_nodes(
        &daemon,
        &store,
        &[&build],
        "the first validation node deleted",
        |nodes| (!nodes.iter().any(|n| n.id == first_node)).then_some(()),
    )
    .await;
    std::fs::write(hook.path("release"), "").expect("release");
    wait_upload(&daemon, &store, &[], &build, UploadState::Ready).await;
    wait_nodes(&daemon, &store, &[], "no validation node left", |nodes| {
        (!nodes
            .iter()
            .any(|n| n.requestor.as_deref() == Some("NodePool:validation")))
        .then_some(())
    })
    .await;
}

/// The same on an OpenStack cloud (the simulator, in this process so that
/// it outlives the launcher): the provider `sim` boots `fake-image` from
/// Glance images the test made, as a builder would have uploaded them.
mod openstack {
    use super::*;
    use nodepool_openstack_sim::{SimCloudImage, SimConfig, SimState};

    const SIM_PROVIDER: &str = "sim";

    fn config(port: u16, hook: &Path) -> String {
        format!(
            "webapp:
  port: {port}
  listen_address: 127.0.0.1
labels:
  - name: small
    min-ready: 1
providers:
  - name: {SIM_PROVIDER}
    driver: openstack
    cloud: sim
    rate: 0
    boot-timeout: 10
    diskimages:
      - name: {IMAGE}
    pools:
      - name: main
        max-servers: 3
        labels:
          - name: small
            diskimage: {IMAGE}
            flavor-name: m1.tiny
diskimages:
  - name: {IMAGE}
    validation:
      hook: {hook}
      timeout: 30
",
            hook = hook.display(),
        )
    }

    async fn add_sim_build(
        store: &Arc<dyn NodeStore>,
        image_id: &str,
        state: UploadState,
    ) -> String {
        let build = ImageBuild::new(IMAGE, BuildState::Ready);
        let build_id = store.create_build(IMAGE, &build).await.expect("build");
        let mut upload = ImageUpload::new(IMAGE, build_id.clone(), SIM_PROVIDER, state);
        upload.external_id = Some(image_id.to_string());
        upload.external_name = Some(image_id.to_string());
        upload.format = Some("qcow2".to_string());
        store
            .create_upload(IMAGE, &build_id, SIM_PROVIDER, &upload)
            .await
            .expect("upload");
        build_id
    }

    /// Servers of the cloud booted from `image_id` whose node record is not
    /// a validation node (the check every sample makes).
    async fn unvalidated_servers(
        sim: &SimState,
        store: &Arc<dyn NodeStore>,
        image_id: &str,
    ) -> Vec<String> {
        let servers: Vec<String> = sim.read(|c| {
            c.servers
                .values()
                .filter(|s| s.image_id.as_deref() == Some(image_id))
                .map(|s| s.id.clone())
                .collect()
        });
        let nodes = store.list_nodes().await.expect("nodes");
        servers
            .into_iter()
            .filter(|id| {
                nodes.iter().any(|n| {
                    n.external_id.as_deref() == Some(id.as_str())
                        && n.requestor.as_deref() != Some("NodePool:validation")
                })
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_server_boots_from_a_rejected_upload_and_the_next_one_serves() {
        let images = ["img-old", "img-bad", "img-good"];
        let sim = SimState::new(SimConfig {
            cloud_images: images
                .iter()
                .map(|id| SimCloudImage {
                    id: id.to_string(),
                    name: id.to_string(),
                })
                .collect(),
            ..SimConfig::default()
        });
        let (base, _serving) = nodepool_openstack_sim::start(sim.clone())
            .await
            .expect("start the simulator");
        let hook = Hook::new();
        // Passes only for nodes booted from img-good (the node's JSON says
        // which upload it boots in `image_id`; the build id is in the env).
        script(
            &hook.path("validate.sh"),
            &format!(
                "echo \"$NODEPOOL_BUILD_ID $NODEPOOL_NODE_IP\" >> {runs}\n\
                 test \"$NODEPOOL_BUILD_ID\" = \"$(cat {good})\"\n",
                runs = hook.path("runs").display(),
                good = hook.path("good").display(),
            ),
        );
        std::fs::write(hook.path("good"), "none").expect("good marker");
        let port = free_port();
        let mut daemon = Daemon::prepare(&config(port, &hook.path("validate.sh")), port);
        let clouds = daemon.state_dir().join("clouds.yaml");
        std::fs::write(
            &clouds,
            format!(
                "clouds:\n  sim:\n    region_name: RegionOne\n    auth:\n      auth_url: \
                 {base}/identity/v3\n      username: demo\n      password: demo-password\n      \
                 project_name: demo\n      user_domain_name: Default\n      \
                 project_domain_name: Default\n"
            ),
        )
        .expect("clouds.yaml");
        daemon.env = vec![(
            "OS_CLIENT_CONFIG_FILE".to_string(),
            clouds.display().to_string(),
        )];
        let store = daemon.store();
        let old = add_sim_build(&store, "img-old", UploadState::Ready).await;
        daemon.spawn();
        let first = wait_nodes(&daemon, &store, &[], "a ready node", |nodes| {
            serving(nodes).next().map(|n| n.id.clone())
        })
        .await;

        let bad = add_sim_build(&store, "img-bad", UploadState::Testing).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            assert_eq!(
                unvalidated_servers(&sim, &store, "img-bad").await,
                Vec::<String>::new()
            );
            let upload = upload_of_in(&store, &bad, SIM_PROVIDER).await;
            if upload.state == Some(UploadState::Failed) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for the rejection: {upload:?}\n{}",
                daemon.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let runs = lines(&hook.path("runs"));
        assert_eq!(runs.len(), 1, "{runs:?}");
        // The node's interface IP, as the cloud gave it.
        let ip = runs[0].strip_prefix(&format!("{bad} ")).unwrap_or_default();
        assert!(ip.parse::<std::net::IpAddr>().is_ok(), "{runs:?}");
        // The validation server is deleted in the cloud too.
        wait_nodes(
            &daemon,
            &store,
            &[&bad],
            "the validation server deleted",
            |_| {
                sim.read(|c| {
                    !c.servers
                        .values()
                        .any(|s| s.image_id.as_deref() == Some("img-bad"))
                })
                .then_some(())
            },
        )
        .await;

        // The next build passes; a replacement node boots from it.
        let good = add_sim_build(&store, "img-good", UploadState::Testing).await;
        std::fs::write(hook.path("good"), &good).expect("good marker");
        let deadline = tokio::time::Instant::now() + WAIT;
        while upload_of_in(&store, &good, SIM_PROVIDER).await.state != Some(UploadState::Ready) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for the validation\n{}",
                daemon.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let out = daemon.cli(&["delete", &first]);
        assert!(out.status.success(), "{out:?}");
        let node = wait_nodes(
            &daemon,
            &store,
            &[&bad],
            "a node of the good build",
            |nodes| {
                serving(nodes)
                    .find(|n| booted_build(n) == Some(good.as_str()))
                    .cloned()
            },
        )
        .await;
        let server = node.external_id.clone().expect("server id");
        let image = sim.read(|c| c.servers.get(&server).and_then(|s| s.image_id.clone()));
        assert_eq!(image.as_deref(), Some("img-good"));
        assert!(booted_build(&node) != Some(old.as_str()));
        assert_eq!(
            unvalidated_servers(&sim, &store, "img-bad").await,
            Vec::<String>::new()
        );
        daemon.kill9();
    }
}

async fn upload_of_in(store: &Arc<dyn NodeStore>, build_id: &str, provider: &str) -> ImageUpload {
    store
        .list_uploads(IMAGE, build_id)
        .await
        .expect("uploads")
        .into_iter()
        .find(|u| u.provider_name == provider)
        .expect("the build's upload")
}
