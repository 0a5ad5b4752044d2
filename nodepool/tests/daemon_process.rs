//! `nodepool launcher` driven as a process on the embedded store with the
//! fake cloud: requests from a requestor on the same database file, the
//! CLI beside it, config edits, signals, `kill -9` and restart.
//!
//! Needs no outside service. Each test has its own state directory and web
//! port; run with `cargo test -p nodepool --test daemon_process`.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use nodepool_core::client::{Client, PendingRequest, RequestOptions};
use nodepool_core::model::{NodeState, RequestState};
use support::{free_port, http_get, wait_for, wait_for_async, Daemon, FakeConfig};

/// Generous: the daemons of parallel tests share two slow cores.
const WAIT: Duration = Duration::from_secs(40);

fn client(daemon: &Daemon) -> Client {
    Client::new(daemon.store(), "daemon-test")
}

async fn submit(client: &Client, labels: &[&str]) -> PendingRequest {
    client
        .submit(labels, &RequestOptions::default())
        .await
        .expect("submit a node request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fulfilled_request_is_used_and_its_node_deleted_after_release() {
    let port = free_port();
    let mut daemon = Daemon::start(&FakeConfig::new(port).yaml(), port);
    daemon.wait_ready();
    let client = client(&daemon);

    let request = submit(&client, &["small"]).await;
    let nodes = client
        .wait_fulfilled(&request, WAIT)
        .await
        .unwrap_or_else(|e| panic!("not fulfilled: {e}\n{}", daemon.logs()));
    let node = nodes.nodes().next().expect("one node").clone();
    assert_eq!(node.labels, ["small"]);
    assert_eq!(node.allocated_to.as_deref(), Some(request.id.as_str()));
    assert!(node.interface_ip.is_some(), "the node has an address");

    // The CLI sees it in use and locked; the request is gone.
    let listed = daemon.list();
    let entry = listed
        .iter()
        .find(|n| n["id"] == node.id.as_str())
        .expect("node listed");
    assert_eq!(entry["state"], "in-use");
    assert_eq!(entry["locked"], "locked");
    let requests = daemon.cli_json(&["request-list", "--json"]);
    assert_eq!(requests, serde_json::json!([]));

    client.release(nodes).await.expect("release");
    wait_for("the used node to be deleted", WAIT, || {
        (!daemon.list().iter().any(|n| n["id"] == node.id.as_str())).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_node_is_kept_and_min_ready_refills_around_it() {
    let port = free_port();
    let mut config = FakeConfig::new(port);
    config.min_ready = 2;
    let mut daemon = Daemon::start(&config.yaml(), port);
    daemon.wait_ready();
    let ready = wait_for("two ready nodes", WAIT, || {
        let ready = daemon.ids_in_state("ready");
        (ready.len() == 2).then_some(ready)
    });

    let held = &ready[0];
    let out = daemon.cli(&["hold", held, "--reason", "debugging"]);
    assert!(
        out.status.success(),
        "hold failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // min-ready counts ready nodes only: a third one is launched.
    let ready_now = wait_for("min-ready to refill around the held node", WAIT, || {
        let ready = daemon.ids_in_state("ready");
        (ready.len() == 2).then_some(ready)
    });
    assert!(!ready_now.contains(held));
    let listed = daemon.list();
    let entry = listed
        .iter()
        .find(|n| n["id"] == held.as_str())
        .expect("held node still listed");
    assert_eq!(entry["state"], "hold");
    assert_eq!(entry["comment"], "debugging");
    assert_eq!(listed.len(), 3, "two ready plus the held one: {listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_request_waits_at_max_servers_and_is_fulfilled_after_a_release() {
    let port = free_port();
    let mut config = FakeConfig::new(port);
    config.max_servers = 2;
    let mut daemon = Daemon::start(&config.yaml(), port);
    daemon.wait_ready();
    let client = client(&daemon);

    let first = submit(&client, &["small"]).await;
    let second = submit(&client, &["small"]).await;
    let third = submit(&client, &["small"]).await;
    let a = client.wait_fulfilled(&first, WAIT).await.expect("first");
    let b = client.wait_fulfilled(&second, WAIT).await.expect("second");

    // At the limit: the third request is open and no third node exists.
    let pending = client.state(&third).await.expect("read").expect("exists");
    assert_ne!(pending.state, Some(RequestState::Fulfilled));
    assert_ne!(pending.state, Some(RequestState::Failed));
    assert_eq!(daemon.list().len(), 2, "max-servers 2 holds");
    let open = daemon.cli_json(&["request-list", "--json"]);
    assert_eq!(open.as_array().map(Vec::len), Some(1), "{open}");
    assert_eq!(open[0]["id"], third.id.as_str());

    client.release(a).await.expect("release the first");
    let c = client
        .wait_fulfilled(&third, WAIT)
        .await
        .unwrap_or_else(|e| panic!("third not fulfilled: {e}\n{}", daemon.logs()));
    assert!(daemon.list().len() <= 2);
    client.release(b).await.expect("release");
    client.release(c).await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_fails_after_launch_retries_and_its_nodes_are_cleaned_up() {
    let port = free_port();
    let mut config = FakeConfig::new(port);
    // Every create fails (the cloud's API errors), so does every retry.
    config.error_rate = 1.0;
    config.launch_retries = 2;
    let mut daemon = Daemon::start(&config.yaml(), port);
    daemon.wait_ready();
    let client = client(&daemon);

    let request = submit(&client, &["small"]).await;
    let error = client
        .wait_fulfilled(&request, WAIT)
        .await
        .expect_err("every create fails, so the request must fail");
    assert!(error.to_string().contains("failed"), "{error}");
    let failed = client.state(&request).await.expect("read").expect("kept");
    assert_eq!(failed.state, Some(RequestState::Failed));
    wait_for("the failed node to be deleted", WAIT, || {
        daemon.list().is_empty().then_some(())
    });
    let metrics = http_get(port, "/metrics").expect("metrics").1;
    assert!(
        metrics.contains("nodepool_launches_total{result=\"error\"} 1"),
        "{metrics}"
    );
    client.cancel(&request).await.expect("withdraw");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_kill_9_finishes_every_request_without_losing_or_duplicating_nodes() {
    let port = free_port();
    let mut config = FakeConfig::new(port);
    config.boot_delay = 1.0;
    let mut daemon = Daemon::start(&config.yaml(), port);
    daemon.wait_ready();
    let store = daemon.store();
    let client = Client::new(store.clone(), "daemon-test");

    let mut requests = Vec::new();
    for labels in [&["small"][..], &["small", "small"], &["small"], &["small"]] {
        requests.push((submit(&client, labels).await, labels.len()));
    }
    // Kill it mid-load: some nodes are being built.
    wait_for_async("nodes being built", WAIT, || {
        let store = store.clone();
        async move {
            let nodes = store.list_nodes().await.ok()?;
            nodes
                .iter()
                .any(|n| n.state == Some(NodeState::Building))
                .then_some(())
        }
    })
    .await;
    let first_pid = daemon.pid();
    daemon.kill9();
    daemon.spawn();
    assert_ne!(daemon.pid(), first_pid);

    let mut seen = BTreeSet::new();
    let mut held = Vec::new();
    for (request, count) in &requests {
        let nodes = client
            .wait_fulfilled(request, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{} not finished: {e}\n{}", request.id, daemon.logs()));
        let got: Vec<_> = nodes.nodes().cloned().collect();
        assert_eq!(got.len(), *count);
        for node in &got {
            assert!(seen.insert(node.id.clone()), "node {} given twice", node.id);
            assert_eq!(node.allocated_to.as_deref(), Some(request.id.as_str()));
            assert_eq!(node.state, Some(NodeState::InUse));
        }
        held.push(nodes);
    }
    // No request is left behind, and every node record is accounted for:
    // ours in use, anything else on its way out.
    assert!(store.list_requests().await.expect("requests").is_empty());
    for node in store.list_nodes().await.expect("nodes") {
        if seen.contains(&node.id) {
            assert_eq!(node.state, Some(NodeState::InUse), "{}", node.id);
        }
    }
    for nodes in held {
        client.release(nodes).await.expect("release");
    }
    wait_for_async("every node to be deleted", WAIT, || {
        let store = store.clone();
        async move { store.list_nodes().await.ok()?.is_empty().then_some(()) }
    })
    .await;
    assert!(daemon.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_edits_apply_without_a_restart() {
    let port = free_port();
    let mut config = FakeConfig::new(port);
    config.min_ready = 1;
    let mut daemon = Daemon::start(&config.yaml(), port);
    daemon.wait_ready();
    let pid = daemon.pid();
    wait_for("one ready node", WAIT, || {
        (daemon.ids_in_state("ready").len() == 1).then_some(())
    });

    config.min_ready = 3;
    daemon.write_config(&config.yaml());
    wait_for("min-ready 3 after the edit", WAIT, || {
        (daemon.ids_in_state("ready").len() == 3).then_some(())
    });
    assert_eq!(
        daemon.cli_json(&["label-list", "--json"]),
        serde_json::json!([{"label": "small"}])
    );

    // Removing the provider stops its pool: no launcher serves the label.
    let without_provider = "webapp:\n  port: PORT\n  listen_address: 127.0.0.1\nlabels:\n  - name: small\n    min-ready: 3\nproviders: []\n"
        .replace("PORT", &port.to_string());
    daemon.write_config(&without_provider);
    wait_for("the removed provider's pool to stop", WAIT, || {
        (daemon.cli_json(&["label-list", "--json"]) == serde_json::json!([])).then_some(())
    });
    assert!(daemon.is_running());
    assert_eq!(daemon.pid(), pid, "no restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_answers_503_until_every_provider_started_and_sigterm_exits_cleanly() {
    let port = free_port();
    let fake = FakeConfig::new(port).yaml();
    // A second provider whose cloud is not in clouds.yaml cannot start.
    let broken = "  - name: broken\n    driver: openstack\n    cloud: no-such-cloud\n    cloud-images:\n      - name: img\n        image-name: Fake Precise\n    pools:\n      - name: main\n        max-servers: 1\n        labels:\n          - name: small\n            cloud-image: img\n            min-ram: 8192\n";
    let mut daemon = Daemon::start(&format!("{fake}{broken}"), port);
    wait_for("the web app", WAIT, || daemon.get("/ready"));
    wait_for("the fake provider's pool", WAIT, || {
        (daemon.cli_json(&["label-list", "--json"]) != serde_json::json!([])).then_some(())
    });
    let (status, _) = daemon.get("/ready").expect("web app up");
    assert_eq!(status, 503, "one provider has not started");
    assert_eq!(daemon.get("/healthz").map(|r| r.0), Some(200));

    // Fix the broken provider: a fake one instead, and /ready turns 200.
    let second = broken
        .replace("driver: openstack", "driver: fake")
        .replace("no-such-cloud", "fake");
    daemon.write_config(&format!("{fake}{second}"));
    daemon.wait_ready();

    let status = daemon.sigterm();
    assert_eq!(status.code(), Some(0), "{}", daemon.logs());
    assert!(http_get(port, "/ready").is_none(), "the web port is closed");
    assert!(daemon.logs().contains("SIGTERM"), "{}", daemon.logs());
}

#[test]
fn delete_of_an_unknown_node_exits_1_with_not_found() {
    let dir = tempfile::tempdir().expect("dir");
    let conf = dir.path().join("nodepool.yaml");
    std::fs::write(&conf, FakeConfig::new(free_port()).yaml()).expect("write");
    let out = std::process::Command::new(support::nodepool_bin())
        .arg("-c")
        .arg(&conf)
        .arg("--state-dir")
        .arg(dir.path())
        .args(["delete", "999999"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not found"), "{stderr}");
}

#[test]
fn help_of_every_command_works() {
    let top = std::process::Command::new(support::nodepool_bin())
        .arg("--help")
        .output()
        .expect("run");
    assert!(top.status.success());
    let text = String::from_utf8_lossy(&top.stdout).into_owned();
    // The commands section lists "  name  description" lines.
    let commands: Vec<&str> = text
        .split("Commands:")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .expect("a Commands section")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    for expected in ["list", "delete", "hold", "request-list", "launcher"] {
        assert!(commands.contains(&expected), "{expected} in {commands:?}");
    }
    for command in commands {
        let out = std::process::Command::new(support::nodepool_bin())
            .args([command, "--help"])
            .output()
            .expect("run");
        assert!(out.status.success(), "{command} --help failed");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("Usage: nodepool"), "{command}: {help}");
    }
}

#[test]
fn statsd_receives_upstreams_gauges_and_launch_counters() {
    let receiver = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    receiver
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let statsd_port = receiver.local_addr().expect("addr").port();
    let port = free_port();
    let mut config = FakeConfig::new(port);
    config.min_ready = 1;
    let env = vec![
        ("STATSD_HOST".to_owned(), "127.0.0.1".to_owned()),
        ("STATSD_PORT".to_owned(), statsd_port.to_string()),
    ];
    let mut daemon = Daemon::start_with(&config.yaml(), port, env);
    daemon.wait_ready();

    let mut wanted: BTreeSet<&str> = [
        "nodepool.nodes.ready:1|g",
        "nodepool.provider.fake-provider.nodes.ready:1|g",
        "nodepool.label.small.nodes.ready:1|g",
        "nodepool.provider.fake-provider.max_servers:10|g",
        "nodepool.launch.ready:1|c",
    ]
    .into_iter()
    .collect();
    let mut buf = [0u8; 2048];
    wait_for("upstream's metrics over statsd", WAIT, || {
        if let Ok(n) = receiver.recv(&mut buf) {
            assert!(n <= 512, "datagrams stay within 512 bytes");
            for line in String::from_utf8_lossy(&buf[..n]).lines() {
                wanted.remove(line);
            }
        }
        wanted.is_empty().then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_logs_every_task_and_what_it_waits_on() {
    let port = free_port();
    let mut fake = FakeConfig::new(port);
    // The boot outlasts the test: the launch is in flight when asked.
    fake.boot_delay = 120.0;
    let mut daemon = Daemon::start(&fake.yaml(), port);
    daemon.wait_ready();
    let client = client(&daemon);
    let request = submit(&client, &["small"]).await;
    let node = wait_for("a node building for the request", WAIT, || {
        daemon.ids_in_state("building").into_iter().next()
    });

    let sent = std::process::Command::new("kill")
        .arg("-USR2")
        .arg(daemon.pid().to_string())
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -USR2 failed");
    let dump = wait_for("the SIGUSR2 task dump", WAIT, || {
        let logs = daemon.logs();
        let at = logs.find("SIGUSR2 task dump")?;
        // One log record: its header, then an indented line per task.
        let mut lines = logs[at..].lines();
        let header = lines.next()?;
        let tasks: Vec<&str> = lines.take_while(|l| l.starts_with("  ")).collect();
        (!tasks.is_empty()).then(|| format!("{header}\n{}", tasks.join("\n")))
    });
    eprintln!("{dump}");
    let line = |starts: &str| {
        dump.lines()
            .map(str::trim)
            .find(|l| l.starts_with(starts))
            .unwrap_or_else(|| panic!("no task line starting {starts:?} in:\n{dump}"))
            .to_string()
    };
    let pool = line("pool worker fake-provider/main, ");
    assert!(pool.contains("s old: "), "{pool}");
    let handler = line(&format!("launch handler request {}, ", request.id));
    assert!(
        handler.contains(&format!(": launches of nodes {node} (")),
        "the handler waits on its node's launch: {handler}"
    );
    let launch = line(&format!("launch of node {node} in fake-provider/main, "));
    assert!(
        launch.contains(&format!(
            ": provider wait_active fake-provider node {node} instance "
        )),
        "the launch waits on the cloud: {launch}"
    );
    line("deleter, ");
    line("cleanup, ");
    line("min-ready, ");
    let pool = line("pool fake-provider/main: ");
    assert!(
        pool.contains("running, 1 requests in hand, 0 waiting at a limit, 1 launches"),
        "{pool}"
    );
    assert!(
        dump.lines()
            .next()
            .is_some_and(|l| l.contains("tasks running")),
        "{dump}"
    );
    assert!(
        !dump.contains("counters:"),
        "tasks, not a Debug print of counters:\n{dump}"
    );
}
