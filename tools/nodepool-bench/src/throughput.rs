//! `nodepool-bench throughput`: N single-node requests, each node returned
//! as `used` as soon as its request is fulfilled, by
//! [`nodepool_core::client::Client`], the requestor a Zuul scheduler would
//! be. The client speaks upstream's protocol, so on ZooKeeper it drives
//! upstream's launcher as well as ours (`--external-pid`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use nodepool_core::client::{Client, RequestOptions};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::report::{cpu_seconds, machine, mb, memory, ms, quantile, Report};
use crate::setup::{self, BenchResult, ConfigSpec, LauncherProc, Mode};
use crate::zk::{self, ZkCounters};
use crate::ThroughputArgs;

/// The requestor name the client writes.
const REQUESTOR: &str = "nodepool-bench";

/// The fake cloud's instances with several launchers (see [`run`]).
const FAKE_INSTANCES_SHARED: u64 = 100_000;

/// How long the used nodes may take to disappear after the last release.
const SETTLE_DEADLINE: Duration = Duration::from_secs(180);

/// Run the benchmark and print its report.
pub(crate) async fn run(args: ThroughputArgs) -> BenchResult<()> {
    let mode = match (&args.daemon, args.external_pid) {
        (Some(binary), _) => Mode::Daemon(binary.clone()),
        (None, Some(pid)) => Mode::External(pid),
        (None, None) => Mode::InProcess,
    };
    if matches!(mode, Mode::External(_)) && args.chroot.is_none() {
        return Err("--external-pid needs --chroot (the launcher's ZooKeeper chroot)".into());
    }
    let (cores, load_before) = machine();
    let mut spec = ConfigSpec::throughput(&args.label);
    if args.launchers > 1 {
        // Each launcher process has a fake cloud of its own, in memory: a
        // node one launcher booted and another deleted stays in the first
        // one's cloud until its leak cleanup (60 s), and would fill that
        // cloud's 20 instances. A quota the runs never reach leaves
        // max-servers (20, counted from the shared node records) as the
        // only limit, as one launcher's cloud of 20 instances does.
        spec.fake = Some((FAKE_INSTANCES_SHARED, 0.1));
    }
    let env = setup::start(
        args.store,
        &mode,
        &spec,
        args.chroot.as_deref(),
        args.launchers,
    )
    .await?;
    let zk_plain = env
        .zk
        .as_ref()
        .and_then(|(server, chroot)| server.plain.clone().map(|p| (p, chroot.clone())));
    let zk_before = match &zk_plain {
        Some((plain, chroot)) => Some(zk::counters(plain, chroot).await?),
        None => None,
    };

    let client = Client::new(env.store.clone(), REQUESTOR);
    let concurrency = args.concurrency.unwrap_or(args.requests).max(1);
    let window = Arc::new(Semaphore::new(concurrency));
    let timeout = Duration::from_secs(args.request_timeout);
    let options = RequestOptions {
        reuse: false,
        ..RequestOptions::default()
    };
    eprintln!(
        "nodepool-bench: {} requests, {} at once, {} store, launcher pids {:?}",
        args.requests,
        concurrency,
        args.store.name(),
        env.launcher.pids()
    );
    let zk_pid = env.zk.as_ref().and_then(|(server, _)| server.pid());
    let launcher_pids = env.launcher.pids();
    let launchers_cpu = || launcher_pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>();
    let cpu_pids = [None, Some(std::process::id()), zk_pid];
    let mut cpu_before = cpu_pids.map(|p| p.map(cpu_seconds));
    cpu_before[0] = Some(launchers_cpu());
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..args.requests {
        let permit = window
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| format!("request window closed: {e}"))?;
        let client = client.clone();
        let label = args.label.clone();
        let options = options.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let submitted = Instant::now();
            let request = client
                .submit(&[label.as_str()], &options)
                .await
                .map_err(|e| format!("submit: {e}"))?;
            let nodes = client
                .wait_fulfilled(&request, timeout)
                .await
                .map_err(|e| format!("request {}: {e}", request.id))?;
            let latency = submitted.elapsed();
            client
                .release(nodes)
                .await
                .map_err(|e| format!("release of request {}: {e}", request.id))?;
            Ok::<_, String>(latency)
        });
    }
    let mut latencies = Vec::with_capacity(args.requests);
    let mut errors = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(latency)) => latencies.push(latency),
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(format!("client task: {e}")),
        }
    }
    let elapsed = started.elapsed();

    // The launcher deletes the used nodes after the last release; their
    // writes belong to the run.
    let settle_started = Instant::now();
    let leftover = settle(&env).await;
    let settle_time = settle_started.elapsed();
    let zk_delta = match (&zk_plain, zk_before) {
        (Some((plain, chroot)), Some(before)) => {
            Some(zk::counters(plain, chroot).await?.since(&before))
        }
        _ => None,
    };
    let mut cpu_after = cpu_pids.map(|p| p.map(cpu_seconds));
    cpu_after[0] = Some(launchers_cpu());
    let memories: Vec<_> = launcher_pids.iter().map(|p| memory(*p)).collect();
    let launcher_memory = crate::report::Memory {
        peak_kib: memories.iter().map(|m| m.peak_kib).sum(),
        now_kib: memories.iter().map(|m| m.now_kib).sum(),
    };
    let (_, load_after) = machine();
    let fulfilled_by_engine = match &env.launcher {
        LauncherProc::InProcess { launcher, .. } => Some(launcher.counters().requests_fulfilled),
        _ => None,
    };
    let separate = env.launcher.separate();
    let chroot = env.zk.as_ref().map(|(_, c)| c.clone());
    let mode_name = match mode {
        Mode::InProcess => "in-process",
        Mode::Daemon(_) => "daemon",
        Mode::External(_) => "external",
    };
    let log_tail = setup::tail(&env.log_path(), 20);
    let stop = env.launcher.stop().await;

    latencies.sort();
    let fulfilled = latencies.len();
    let rate = fulfilled as f64 / elapsed.as_secs_f64();
    let mut r = Report::default();
    r.add(
        "name",
        "run",
        args.name.clone().unwrap_or_else(|| "nodepool-rs".into()),
    );
    r.add("store", "store", args.store.name());
    r.add("mode", "launcher", mode_name);
    r.add("launchers", "launchers", launcher_pids.len());
    r.add("requests", "requests", args.requests);
    r.add("concurrency", "outstanding at once", concurrency);
    r.add("fulfilled", "fulfilled", fulfilled);
    r.add("failed", "failed", errors.len());
    r.add("elapsed_s", "elapsed (s)", round(elapsed.as_secs_f64(), 3));
    r.add("requests_per_s", "requests/s", round(rate, 2));
    r.add(
        "p50_ms",
        "fulfilment p50 (ms)",
        ms(quantile(&latencies, 0.5)),
    );
    r.add(
        "p99_ms",
        "fulfilment p99 (ms)",
        ms(quantile(&latencies, 0.99)),
    );
    r.add(
        "max_ms",
        "fulfilment max (ms)",
        ms(quantile(&latencies, 1.0)),
    );
    r.add(
        "peak_rss_mb",
        if separate && launcher_pids.len() > 1 {
            "launchers' peak RSS, summed (MB)"
        } else if separate {
            "launcher peak RSS (MB)"
        } else {
            "bench process peak RSS (MB, launcher + client)"
        },
        mb(launcher_memory.peak_kib),
    );
    if launcher_pids.len() > 1 {
        let each: Vec<f64> = memories.iter().map(|m| mb(m.peak_kib)).collect();
        r.add(
            "peak_rss_mb_each",
            "each launcher's peak RSS (MB)",
            serde_json::json!(each),
        );
    }
    r.add(
        "rss_end_mb",
        "RSS at the end (MB)",
        mb(launcher_memory.now_kib),
    );
    r.add(
        "startup_s",
        "launcher start-up (s)",
        round(env.startup.as_secs_f64(), 2),
    );
    r.add(
        "settle_s",
        "used nodes deleted after (s)",
        round(settle_time.as_secs_f64(), 2),
    );
    r.add("nodes_left", "nodes left after settling", leftover);
    let cpu_ms = |i: usize| -> Option<f64> {
        let used = cpu_after[i]? - cpu_before[i]?;
        Some(round(used * 1000.0 / fulfilled.max(1) as f64, 2))
    };
    if separate {
        if let Some(v) = cpu_ms(0) {
            r.add(
                "launcher_cpu_ms_per_request",
                "launcher CPU per request (ms, all launchers)",
                v,
            );
        }
        if let Some(v) = cpu_ms(1) {
            r.add(
                "client_cpu_ms_per_request",
                "client CPU per request (ms)",
                v,
            );
        }
    } else if let Some(v) = cpu_ms(0) {
        r.add(
            "process_cpu_ms_per_request",
            "launcher + client CPU per request (ms)",
            v,
        );
    }
    if let Some(v) = cpu_ms(2) {
        r.add(
            "zk_cpu_ms_per_request",
            "ZooKeeper server CPU per request (ms)",
            v,
        );
    }
    if let Some(n) = fulfilled_by_engine {
        r.add("engine_fulfilled", "fulfilled (engine counter)", n);
    }
    if let Some(delta) = zk_delta {
        add_zk(&mut r, &delta, fulfilled);
    }
    if let Some(chroot) = &chroot {
        r.add("chroot", "ZooKeeper chroot", chroot.as_str());
    }
    r.add("cores", "cores", cores);
    r.add("load_before", "load (1 min) before", load_before);
    r.add("load_after", "load (1 min) after", load_after);
    r.print();

    if !errors.is_empty() {
        eprintln!("launcher log (tail):\n{log_tail}");
        return Err(format!(
            "{} of {} requests failed; first: {}",
            errors.len(),
            args.requests,
            errors[0]
        ));
    }
    stop
}

fn add_zk(r: &mut Report, delta: &ZkCounters, fulfilled: usize) {
    let per = |n: u64| round(n as f64 / fulfilled.max(1) as f64, 2);
    r.add(
        "zk_writes",
        "ZooKeeper writes (chroot)",
        delta.namespace_writes,
    );
    r.add(
        "zk_writes_per_request",
        "ZooKeeper writes per request",
        per(delta.namespace_writes),
    );
    r.add(
        "zk_txns_per_request",
        "ZooKeeper transactions per request (server)",
        per(delta.zxid),
    );
    r.add(
        "zk_packets_per_request",
        "ZooKeeper requests received per request (server, reads too)",
        per(delta.packets_received),
    );
}

/// Wait until the store holds no node (the launcher deleted the used ones),
/// or the deadline; the number left.
async fn settle(env: &setup::Env) -> usize {
    let deadline = Instant::now() + SETTLE_DEADLINE;
    loop {
        let left = env.store.list_nodes().await.map(|n| n.len()).unwrap_or(0);
        if left == 0 || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}
