//! `nodepool-bench scale`: a `nodepool launcher` child brings a label's
//! `min-ready` nodes (10,000 by default) up on a fake cloud with that
//! quota, then the client submits requests (2,000) for a second label of
//! the same pool, which wait because the pool's `max-servers` is used up.
//! Reported: the launcher's peak RSS, the time to get there, and the
//! latency of `nodepool list --json` and `nodepool request-list --json`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodepool_core::client::{Client, PendingRequest, RequestOptions};
use nodepool_core::model::NodeState;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::report::{machine, mb, memory, ms, Report};
use crate::setup::{self, BenchResult, ConfigSpec, LabelSpec, Mode, StoreKind};
use crate::ScaleArgs;

/// The label kept ready.
const FILLER: &str = "filler";
/// The label whose requests wait.
const WAITING: &str = "waiting";

/// Run the scale benchmark and print its report.
pub(crate) async fn run(args: ScaleArgs) -> BenchResult<()> {
    if args.store == StoreKind::Memory {
        return Err("the scale run needs a daemon: --store embedded or zookeeper".into());
    }
    let (cores, load_before) = machine();
    let spec = ConfigSpec {
        labels: vec![
            LabelSpec {
                name: FILLER.into(),
                min_ready: args.nodes,
            },
            LabelSpec {
                name: WAITING.into(),
                min_ready: 0,
            },
        ],
        max_servers: args.nodes,
        fake: Some((args.nodes, args.boot_delay)),
    };
    let started = Instant::now();
    let env = setup::start(
        args.store,
        &Mode::Daemon(args.daemon.clone()),
        &spec,
        None,
        1,
    )
    .await?;
    let pid = env.launcher.pid();
    eprintln!(
        "nodepool-bench: launcher pid {pid} up in {:.1} s; waiting for {} ready nodes",
        env.startup.as_secs_f64(),
        args.nodes
    );

    // Phase 1: the ready nodes.
    let deadline = started + Duration::from_secs(args.timeout);
    let mut last_log = Instant::now();
    loop {
        let nodes = env
            .store
            .list_nodes()
            .await
            .map_err(|e| format!("list nodes: {e}"))?;
        let ready = nodes
            .iter()
            .filter(|n| n.state == Some(NodeState::Ready))
            .count() as u64;
        if ready >= args.nodes {
            break;
        }
        if Instant::now() >= deadline {
            eprintln!("{}", setup::tail(&env.log_path(), 30));
            return Err(format!(
                "only {ready} of {} nodes ready after {} s",
                args.nodes, args.timeout
            ));
        }
        if last_log.elapsed() >= Duration::from_secs(10) {
            eprintln!(
                "  {:>6.1} s: {ready} ready, {} nodes, launcher RSS {:.1} MB",
                started.elapsed().as_secs_f64(),
                nodes.len(),
                mb(memory(pid).now_kib)
            );
            last_log = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let to_ready = started.elapsed();
    let memory_ready = memory(pid);

    // Phase 2: the open requests.
    let client = Client::new(env.store.clone(), "nodepool-bench");
    let submit_started = Instant::now();
    let pending = submit_all(&client, args.open_requests).await?;
    let submit_time = submit_started.elapsed();
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let open = env
        .store
        .list_requests()
        .await
        .map_err(|e| format!("list requests: {e}"))?
        .len();
    let memory_open = memory(pid);
    let launcher_uptime = started.elapsed();

    // Phase 3: the CLI at this size.
    let list = time_cli(&args.daemon, &env, "list")?;
    let request_list = time_cli(&args.daemon, &env, "request-list")?;
    let memory_end = memory(pid);
    let (_, load_after) = machine();

    for request in &pending {
        let _ = client.cancel(request).await;
    }
    let stop = env.launcher.stop().await;
    if args.store == StoreKind::Zookeeper {
        // Leave the server as we found it: 10,000 node records a run add up
        // (a small test server runs out of heap after ~10 runs).
        match remove_nodes(&env.store).await {
            Ok(n) => eprintln!("nodepool-bench: removed {n} node records from the chroot"),
            Err(e) => eprintln!("nodepool-bench: could not remove the node records: {e}"),
        }
    }

    let mut r = Report::default();
    r.add("name", "run", "scale");
    r.add("store", "store", args.store.name());
    r.add("nodes", "ready nodes", args.nodes);
    r.add("open_requests", "open requests", open);
    r.add(
        "to_ready_s",
        "start to all nodes ready (s)",
        round1(to_ready.as_secs_f64()),
    );
    r.add(
        "submit_s",
        "open requests submitted in (s)",
        round1(submit_time.as_secs_f64()),
    );
    r.add(
        "rss_ready_mb",
        "launcher RSS, nodes ready (MB)",
        mb(memory_ready.now_kib),
    );
    r.add(
        "rss_open_mb",
        "launcher RSS, + open requests (MB)",
        mb(memory_open.now_kib),
    );
    r.add(
        "peak_rss_mb",
        "launcher peak RSS (MB)",
        mb(memory_end.peak_kib.max(memory_open.peak_kib)),
    );
    r.add("list_items", "`nodepool list --json` nodes", list.items);
    r.add(
        "list_ms",
        "`nodepool list --json` median (ms)",
        ms(list.median),
    );
    r.add(
        "request_list_items",
        "`nodepool request-list --json` requests",
        request_list.items,
    );
    r.add(
        "request_list_ms",
        "`nodepool request-list --json` median (ms)",
        ms(request_list.median),
    );
    r.add("boot_delay_s", "fake boot delay (s)", args.boot_delay);
    r.add(
        "settle_s",
        "settle time before reading memory (s)",
        args.settle,
    );
    r.add(
        "launcher_uptime_s",
        "launcher running when memory was read (s)",
        round1(launcher_uptime.as_secs_f64()),
    );
    r.add("cores", "cores", cores);
    r.add("load_before", "load (1 min) before", load_before);
    r.add("load_after", "load (1 min) after", load_after);
    r.print();
    stop
}

/// Submit `n` requests for the waiting label, 64 at a time.
async fn submit_all(client: &Client, n: usize) -> BenchResult<Vec<PendingRequest>> {
    let window = Arc::new(Semaphore::new(64));
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let permit = window
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| format!("submit window closed: {e}"))?;
        let client = client.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let options = RequestOptions {
                reuse: false,
                ..RequestOptions::default()
            };
            client.submit(&[WAITING], &options).await
        });
    }
    let mut out = Vec::with_capacity(n);
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(p)) => out.push(p),
            Ok(Err(e)) => return Err(format!("submit: {e}")),
            Err(e) => return Err(format!("submit task: {e}")),
        }
    }
    Ok(out)
}

/// Delete every node record in `store`, 64 at a time; returns how many.
async fn remove_nodes(store: &Arc<dyn nodepool_core::store::NodeStore>) -> BenchResult<usize> {
    let ids: Vec<String> = store
        .list_nodes()
        .await
        .map_err(|e| format!("list nodes: {e}"))?
        .into_iter()
        .map(|n| n.id)
        .collect();
    let count = ids.len();
    let window = Arc::new(Semaphore::new(64));
    let mut tasks = JoinSet::new();
    for id in ids {
        let permit = window
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| format!("delete window closed: {e}"))?;
        let store = store.clone();
        tasks.spawn(async move {
            let _permit = permit;
            store.delete_node(&id).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("delete node: {e}")),
            Err(e) => return Err(format!("delete task: {e}")),
        }
    }
    Ok(count)
}

/// A CLI command's timing.
#[derive(Debug)]
struct CliTiming {
    median: Duration,
    items: usize,
}

/// Run `nodepool -c CONFIG --state-dir DIR COMMAND --json` three times.
fn time_cli(binary: &Path, env: &setup::Env, command: &str) -> BenchResult<CliTiming> {
    let mut times = Vec::new();
    let mut items = 0;
    for _ in 0..3 {
        let started = Instant::now();
        let out = Command::new(binary)
            .arg("-c")
            .arg(&env.config_path)
            .arg("--state-dir")
            .arg(&env.state_dir)
            .arg(command)
            .arg("--json")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        times.push(started.elapsed());
        if !out.status.success() {
            return Err(format!(
                "`nodepool {command} --json` failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        items = match serde_json::from_slice::<serde_json::Value>(&out.stdout) {
            Ok(serde_json::Value::Array(a)) => a.len(),
            Ok(serde_json::Value::Object(o)) => o.len(),
            _ => 0,
        };
    }
    times.sort();
    Ok(CliTiming {
        median: times[times.len() / 2],
        items,
    })
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}
