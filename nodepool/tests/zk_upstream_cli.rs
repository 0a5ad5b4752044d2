//! Upstream nodepool 11's tools and ours on one ZooKeeper (TLS, chroot):
//! upstream's `nodepool` CLI shows and acts on what our launcher wrote, and
//! our CLI reads what upstream's launcher wrote.
//!
//! Needs `NODEPOOL_TEST_ZK_*`, `NODEPOOL_TEST_UPSTREAM_CLI` and (for
//! upstream's launcher) `NODEPOOL_TEST_UPSTREAM_PYTHON` (see `zk_support`).

mod zk_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nodepool_core::model::{
    BuildState, ImageBuild, ImageUpload, NodeRequest, NodeState, RequestState, UploadState,
};
use nodepool_core::store::NodeStore;
use serde_json::Value;
use tokio::process::Command;
use zk_support::table::{self, column};
use zk_support::{describe_run, env_or_skip, wait_for, wait_registered, Need, World};

/// Stores `count` one-node requests for `small` in our store's session and
/// waits until each is fulfilled; returns (request id, node id) pairs.
async fn fulfilled_requests(
    store: &dyn NodeStore,
    count: usize,
    limit: Duration,
) -> Vec<(String, String)> {
    let mut ids = Vec::new();
    for _ in 0..count {
        let id = store
            .create_request(&NodeRequest::new(["small"]), "100")
            .await
            .expect("storing a request");
        ids.push(id);
    }
    let mut out = Vec::new();
    for id in ids {
        let request = wait_for(&format!("request {id} fulfilled"), limit, || async {
            let r = store.get_request(&id).await.ok()??;
            assert_ne!(r.state, Some(RequestState::Failed), "request {id} failed");
            (r.state == Some(RequestState::Fulfilled)).then_some(r)
        })
        .await;
        assert_eq!(request.nodes.len(), 1, "{request:?}");
        out.push((id, request.nodes[0].clone()));
    }
    out
}

/// Whether upstream's `nodepool delete` failed only in the listing it
/// prints after its work. It marks the node `deleting` under the node's
/// lock, unlocks it, then lists the node, and kazoo's `contenders()` reads
/// the lock's children without handling `NoNodeError`. Upstream's launcher
/// deletes `deleting` nodes every 5 s; ours waits 1 s after a client marked
/// one (`DELETING_GRACE`), which covers the listing unless the CLI stalls
/// that long between its reads: it then exits 1 with that traceback, the
/// delete being done already.
fn lost_listing_after_delete(stderr: &str) -> bool {
    let frames = [", in delete", ", in list", ", in contenders"];
    stderr.trim_end().ends_with("kazoo.exceptions.NoNodeError")
        && frames
            .iter()
            .all(|frame| stderr.lines().any(|line| line.ends_with(frame)))
}

#[test]
fn only_the_lost_listing_after_a_delete_is_tolerated() {
    // As upstream's CLI printed it in a failed run (paths shortened).
    let lost = r#"Traceback (most recent call last):
  File "bin/nodepool", line 8, in <module>
  File "nodepool/cmd/nodepoolcmd.py", line 311, in delete
    self.list(node_id=node.id)
  File "nodepool/cmd/nodepoolcmd.py", line 211, in list
  File "nodepool/status.py", line 182, in node_list
  File "nodepool/zk/zookeeper.py", line 2581, in getNodeLockContenders
  File "kazoo/recipe/lock.py", line 379, in contenders
  File "kazoo/client.py", line 1219, in get_children
  File "kazoo/handlers/utils.py", line 86, in get
kazoo.exceptions.NoNodeError
"#;
    assert!(lost_listing_after_delete(lost));
    // The same error before the work was done (taking the lock) is not.
    let early = lost.replace("line 211, in list", "line 293, in lockNode");
    assert!(!lost_listing_after_delete(&early));
    let timeout = "Traceback (most recent call last):\n  File \"nodepool/cmd/nodepoolcmd.py\", \
                   line 293, in delete\nnodepool.exceptions.TimeoutException: Timeout trying to \
                   acquire lock\n";
    assert!(!lost_listing_after_delete(timeout));
}

fn sorted(v: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = v.into_iter().collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_cli_shows_and_acts_on_what_our_launcher_wrote() {
    let Some(env) = env_or_skip("upstream_cli_on_our_data", &[Need::UpstreamCli]) else {
        return;
    };
    let world = World::new("upstream-cli", env);
    let store = world.store().await;
    let mut launcher = world.start_launcher("launcher");
    wait_registered(&world, &store, 1).await;

    let pairs = fulfilled_requests(&store, 2, Duration::from_secs(30)).await;
    let node_ids = sorted(pairs.iter().map(|(_, n)| n.clone()));
    let request_ids = sorted(pairs.iter().map(|(r, _)| r.clone()));

    // Image records as our builder writes them, through our store.
    let build_id = store
        .create_build("ubuntu", &ImageBuild::new("ubuntu", BuildState::Ready))
        .await
        .expect("storing a build");
    let mut upload = ImageUpload::new("ubuntu", &build_id, "fake-provider", UploadState::Ready);
    upload.external_id = Some("image-1234".into());
    upload.external_name = Some(format!("ubuntu-{build_id}"));
    let upload_id = store
        .create_upload("ubuntu", &build_id, "fake-provider", &upload)
        .await
        .expect("storing an upload");

    // nodepool list
    let rows = table::parse(&world.upstream_cli(&["list"]).await);
    assert_eq!(sorted(column(&rows, "ID")), node_ids, "{rows:#?}");
    for row in &rows {
        assert_eq!(row["Provider"], "fake-provider", "{row:?}");
        assert_eq!(row["Label"], "small", "{row:?}");
        assert_eq!(row["State"], "ready", "{row:?}");
        assert_eq!(row["Locked"], "unlocked", "{row:?}");
        assert!(row["Server ID"].starts_with("fake-"), "{row:?}");
    }

    // nodepool request-list
    let rows = table::parse(&world.upstream_cli(&["request-list"]).await);
    assert_eq!(
        sorted(column(&rows, "Request ID")),
        request_ids,
        "{rows:#?}"
    );
    for row in &rows {
        assert_eq!(row["State"], "fulfilled", "{row:?}");
        assert_eq!(row["Node Types"], "small", "{row:?}");
        let (rid, nid) = pairs
            .iter()
            .find(|(r, _)| *r == row["Request ID"])
            .expect("a listed request is ours");
        assert_eq!(row["Request ID"], *rid);
        assert_eq!(row["Nodes"], *nid, "{row:?}");
    }

    // nodepool dib-image-list and image-list
    let rows = table::parse(&world.upstream_cli(&["dib-image-list"]).await);
    assert_eq!(column(&rows, "ID"), vec![format!("ubuntu-{build_id}")]);
    assert_eq!(column(&rows, "State"), vec!["ready".to_string()]);
    let rows = table::parse(&world.upstream_cli(&["image-list"]).await);
    assert_eq!(column(&rows, "Build ID"), vec![build_id.clone()]);
    assert_eq!(column(&rows, "Upload ID"), vec![upload_id.clone()]);
    assert_eq!(column(&rows, "Provider"), vec!["fake-provider".to_string()]);
    assert_eq!(
        column(&rows, "Provider Image ID"),
        vec!["image-1234".to_string()]
    );

    // nodepool info fake-provider: its images, then its nodes
    let tables = table::parse_all(&world.upstream_cli(&["info", "fake-provider"]).await);
    assert_eq!(tables.len(), 2, "{tables:#?}");
    assert_eq!(column(&tables[0], "Build ID"), vec![build_id.clone()]);
    assert_eq!(sorted(column(&tables[1], "ID")), node_ids);

    // An upload waiting for its validation (ours): upstream's CLI lists it
    // as `uploading` (upstream's code refuses state names it does not know).
    let testing_build = store
        .create_build("ubuntu", &ImageBuild::new("ubuntu", BuildState::Ready))
        .await
        .expect("storing a build");
    let mut testing = ImageUpload::new(
        "ubuntu",
        &testing_build,
        "fake-provider",
        UploadState::Testing,
    );
    testing.external_id = Some("image-5678".into());
    store
        .create_upload("ubuntu", &testing_build, "fake-provider", &testing)
        .await
        .expect("storing a testing upload");
    let rows = table::parse(&world.upstream_cli(&["image-list"]).await);
    let row = rows
        .iter()
        .find(|r| r["Build ID"] == testing_build)
        .unwrap_or_else(|| panic!("upstream lists the testing upload: {rows:#?}"));
    assert_eq!(row["State"], "uploading", "{row:?}");
    assert_eq!(row["Provider Image ID"], "image-5678", "{row:?}");
    // ... and our store reads it back as testing.
    let ours = store
        .list_uploads("ubuntu", &testing_build)
        .await
        .expect("uploads");
    assert_eq!(ours[0].state, Some(UploadState::Testing));

    // nodepool hold: our launcher keeps the node, held.
    let (held, deleted) = (&node_ids[0], &node_ids[1]);
    world.upstream_cli(&["hold", held]).await;
    let node = store.get_node(held).await.expect("get").expect("held node");
    assert_eq!(node.state, Some(NodeState::Hold));

    // nodepool delete: our launcher deletes the node.
    let out = world.upstream_cli_output(&["delete", deleted]).await;
    assert!(
        out.status.success() || lost_listing_after_delete(&String::from_utf8_lossy(&out.stderr)),
        "{}",
        describe_run(&format!("upstream `nodepool delete {deleted}`"), &out)
    );
    if !out.status.success() {
        println!("upstream's `nodepool delete` lost its closing listing to our launcher's delete");
    }
    wait_for(
        &format!("our launcher to delete node {deleted}"),
        Duration::from_secs(30),
        || async { store.get_node(deleted).await.ok()?.is_none().then_some(()) },
    )
    .await;
    let node = store.get_node(held).await.expect("get").expect("held node");
    assert_eq!(node.state, Some(NodeState::Hold), "a held node stays held");

    launcher.assert_running();
    launcher.stop().await;
}

/// Upstream's launcher as a child process, killed when dropped.
fn start_upstream_launcher(world: &World, python: &str) -> tokio::process::Child {
    let bin = Path::new(python).with_file_name("nodepool-launcher");
    let log = std::fs::File::create(world.path("upstream-launcher.log")).expect("log file");
    let err = log.try_clone().expect("log handle");
    Command::new(&bin)
        .arg("-f")
        .arg("--no-webapp")
        .arg("-c")
        .arg(world.config())
        .arg("-p")
        .arg(world.path("upstream-launcher.pid"))
        .env("OS_CLIENT_CONFIG_FILE", world.path("clouds.yaml"))
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()))
}

/// The objects of our CLI's `--json` output.
fn json_rows(text: &str) -> Vec<Value> {
    serde_json::from_str::<Value>(text)
        .unwrap_or_else(|e| panic!("our CLI printed {text:?}: {e}"))
        .as_array()
        .cloned()
        .expect("a JSON list")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_cli_reads_what_upstream_launcher_wrote() {
    let Some(env) = env_or_skip(
        "our_cli_on_upstream_data",
        &[Need::UpstreamPython, Need::UpstreamCli],
    ) else {
        return;
    };
    let python = env.upstream_python.clone().expect("checked");
    let world = World::new("our-cli", env);
    let store = world.store().await;
    let mut upstream = start_upstream_launcher(&world, &python);
    wait_registered(&world, &store, 1).await;

    let pairs = fulfilled_requests(&store, 2, Duration::from_secs(60)).await;
    let node_ids = sorted(pairs.iter().map(|(_, n)| n.clone()));
    let request_ids = sorted(pairs.iter().map(|(r, _)| r.clone()));

    // Our `list --json` against upstream's own `list` of the same data.
    let ours = json_rows(&world.our_cli(&["list", "--json"]).await);
    let ids: Vec<String> = ours
        .iter()
        .map(|n| n["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(sorted(ids), node_ids, "{ours:#?}");
    let theirs = table::parse(&world.upstream_cli(&["list"]).await);
    for node in &ours {
        let row = theirs
            .iter()
            .find(|r| r["ID"] == node["id"].as_str().unwrap_or_default())
            .unwrap_or_else(|| panic!("upstream does not list {node}"));
        assert_eq!(node["state"], "ready", "{node}");
        assert_eq!(node["provider"], row["Provider"].as_str(), "{node}");
        assert_eq!(node["server_id"], row["Server ID"].as_str(), "{node}");
        assert_eq!(node["public_ipv4"], row["Public IPv4"].as_str(), "{node}");
        assert_eq!(node["locked"], row["Locked"].as_str(), "{node}");
    }

    // Our `request-list --json`.
    let requests = json_rows(&world.our_cli(&["request-list", "--json"]).await);
    let ids: BTreeSet<String> = requests
        .iter()
        .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ids, request_ids.iter().cloned().collect(), "{requests:#?}");
    for r in &requests {
        assert_eq!(r["state"], "fulfilled", "{r}");
    }

    // Our `label-list --json` reads upstream's pool component.
    let labels = json_rows(&world.our_cli(&["label-list", "--json"]).await);
    assert!(
        labels.iter().any(|l| l["label"] == "small"),
        "label-list: {labels:#?}"
    );

    if let Ok(Some(status)) = upstream.try_wait() {
        panic!(
            "upstream's launcher exited with {status}:\n{}",
            std::fs::read_to_string(world.path("upstream-launcher.log")).unwrap_or_default()
        );
    }
    let _ = upstream.start_kill();
    let _ = upstream.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_launchers_see_each_others_pools_and_fail_what_both_decline() {
    let Some(env) = env_or_skip("mixed_launchers_decline", &[Need::UpstreamPython]) else {
        return;
    };
    let python = env.upstream_python.clone().expect("checked");
    let world = World::new("mixed", env);
    let store = world.store().await;
    let mut upstream = start_upstream_launcher(&world, &python);
    let mut ours = world.start_launcher("ours");
    // Both pools registered: upstream's `pool/<host><seq>` and ours.
    wait_registered(&world, &store, 2).await;

    // A label neither pool serves: the request fails only once both have
    // declined it, so each must count the other's pool.
    let id = store
        .create_request(&NodeRequest::new(["no-such-label"]), "100")
        .await
        .expect("storing a request");
    let request = wait_for("the request to fail", Duration::from_secs(60), || async {
        let r = store.get_request(&id).await.ok()??;
        (r.state == Some(RequestState::Failed)).then_some(r)
    })
    .await;
    let pools: BTreeSet<String> = store
        .list_components("pool")
        .await
        .expect("pools")
        .into_iter()
        .filter_map(|c| c.id)
        .collect();
    assert_eq!(pools.len(), 2, "{pools:?}");
    let declined: BTreeSet<String> = request.declined_by.iter().cloned().collect();
    assert_eq!(declined, pools, "every registered pool declined it");

    ours.assert_running();
    ours.stop().await;
    let _ = upstream.start_kill();
    let _ = upstream.wait().await;
}
