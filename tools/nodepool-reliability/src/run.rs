//! One run: start the cloud and the launchers, drive the workload while
//! the chaos (kills, ZooKeeper restarts, cloud faults) goes on, wait for
//! cleanup to converge, and check both sides.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nodepool_core::client::Client;
use nodepool_core::store::NodeStore;
use serde::Serialize;
use tokio::time::Instant;

use crate::active::{self, KillPlan, MinReadyCheck, Takeover};
use crate::check::{live_of_pool, CloudCheck, RequestCheck};
use crate::cloud::{CloudKind, CloudProcess};
use crate::faults::{FaultInjector, FaultStats};
use crate::procs::{LauncherProcess, PrivateZk};
use crate::rng::Rng;
use crate::setup::{self, LauncherKind, StoreSpec};
use crate::workload::{self, Progress};
use crate::ChaosError;

/// Which chaos a run applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Chaos {
    /// SIGKILL launcher 0 at random points.
    Crash,
    /// Restart ZooKeeper (a private server) at random points.
    ZkRestart,
    /// Inject cloud API errors, slow calls, dropped connections and quota
    /// errors.
    Faults,
    /// SIGKILL any of `N` launchers with one config on one provider (two
    /// in a row at times) and restart them; then `min-ready` must be exact.
    ActiveActive,
}

/// How long `min-ready` must stay exact after the load (ActiveActive).
const MIN_READY_WINDOW: Duration = Duration::from_secs(5);

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The chaos.
    pub chaos: Chaos,
    /// The cloud (other than openstack only with [`Chaos::Crash`]).
    pub cloud: CloudKind,
    /// `embedded` or `zookeeper` (ZkRestart implies zookeeper).
    pub zookeeper: bool,
    /// Requests in all.
    pub requests: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// SIGKILLs of launcher 0 (Crash; also allowed with the others).
    pub kills: usize,
    /// ZooKeeper restarts (ZkRestart).
    pub zk_restarts: usize,
    /// Launcher processes.
    pub launchers: usize,
    /// The label's `min-ready` (checked after the load in ActiveActive).
    pub min_ready: u64,
    /// Probability that a cloud call is failed (Faults).
    pub fault_rate: f64,
    /// The seed of every random choice.
    pub seed: u64,
    /// Which launcher runs.
    pub kind: LauncherKind,
    /// The pool's max-servers (the cloud allows a few more).
    pub max_servers: u64,
    /// How long the workload may take.
    pub deadline: Duration,
    /// Where logs and state go (a temporary directory when unset).
    pub work_dir: Option<PathBuf>,
}

/// What a run found.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The chaos applied.
    pub chaos: Chaos,
    /// The cloud.
    pub cloud_kind: CloudKind,
    /// The pool's max-servers.
    pub max_servers: u64,
    /// The most live servers with a node record in one sample (the
    /// pool's, sampled as [`RunReport::servers_seen`]); above
    /// `max_servers` the run did not hold.
    pub max_live_servers: usize,
    /// The most live servers in one sample, leaks included (leaks are
    /// outside the pool's count until cleanup deletes them).
    pub max_live_servers_all: usize,
    /// The sample of `max_live_servers`: `SERVER (node ID, STATE)`.
    pub max_live_sample: Vec<String>,
    /// The store.
    pub store: String,
    /// The launcher program.
    pub launcher: String,
    /// Launcher processes.
    pub launchers: usize,
    /// The seed.
    pub seed: u64,
    /// SIGKILLs done.
    pub kills: usize,
    /// SIGKILLs per launcher.
    pub kills_by_launcher: Vec<usize>,
    /// Kills that took a second launcher down right after the first.
    pub double_kills: usize,
    /// ZooKeeper restarts done.
    pub zk_restarts: usize,
    /// Launcher exits nobody asked for (then restarted).
    pub unexpected_exits: Vec<String>,
    /// Wall time of the workload, seconds.
    pub workload_secs: f64,
    /// Requests written again after a session loss.
    pub resubmitted: usize,
    /// Requestor waits that saw no event for 5 s and read the request again.
    pub rereads: usize,
    /// Node releases that failed.
    pub release_errors: Vec<String>,
    /// The requestor's side.
    pub requests: RequestCheck,
    /// Distinct servers seen in the cloud during the run (sampled every
    /// 200 ms: a lower bound of the instances launched).
    pub servers_seen: usize,
    /// Servers without a node record when the workload ended.
    pub leaked_at_end_of_load: usize,
    /// "deleting leaked instance" lines in the launchers' logs.
    pub leaked_deleted_by_launchers: usize,
    /// Seconds from the end of the workload until both sides agreed
    /// (`None`: they did not within the budget).
    pub converge_secs: Option<f64>,
    /// The final comparison.
    pub cloud: CloudCheck,
    /// Faults injected (Faults).
    pub faults: Option<FaultStats>,
    /// `min-ready` after the load (ActiveActive).
    pub min_ready: Option<MinReadyCheck>,
    /// From a SIGKILL to the survivors' reset of each request the killed
    /// launcher held (ActiveActive).
    pub takeover: Option<Takeover>,
    /// Where the logs are.
    pub work_dir: String,
    /// Whether every invariant held.
    pub held: bool,
}

/// Run once.
pub async fn run(opts: RunOptions) -> Result<RunReport, ChaosError> {
    let work_dir = crate::setup::WorkDir::new("nodepool-chaos-", opts.work_dir.as_deref())?;
    let dir = work_dir.path.clone();
    let run_id = work_dir.run_id.clone();
    let mut rng = Rng::new(opts.seed);

    if opts.cloud != CloudKind::Openstack && opts.chaos != Chaos::Crash {
        return Err(ChaosError::Setup(format!(
            "{:?} runs on the openstack cloud only, not {}",
            opts.chaos,
            opts.cloud.name()
        )));
    }
    // The cloud, in its own process with its state on disk.
    let cloud = Arc::new(CloudProcess::start(opts.cloud, &dir, opts.max_servers).await?);
    let clouds = dir.join("clouds.yaml");

    // The store.
    let private_zk = if opts.chaos == Chaos::ZkRestart {
        Some(PrivateZk::start(&dir.join("zk"))?)
    } else {
        None
    };
    let store_spec = if let Some(zk) = &private_zk {
        StoreSpec::Zookeeper {
            hosts: zk.tls_hosts.clone(),
            chroot: format!("/chaos-{run_id}"),
            tls: zk.tls.clone(),
            session_timeout: 30.0,
        }
    } else if opts.zookeeper {
        let var = |n: &str| {
            std::env::var(n).map_err(|_| {
                ChaosError::Setup(format!(
                    "{n} is not set: source the env of scripts/zookeeper.sh start DIR"
                ))
            })
        };
        StoreSpec::Zookeeper {
            hosts: var("NODEPOOL_TEST_ZK_TLS")?,
            chroot: format!("/chaos-{run_id}"),
            tls: (
                var("NODEPOOL_TEST_ZK_CA")?.into(),
                var("NODEPOOL_TEST_ZK_CERT")?.into(),
                var("NODEPOOL_TEST_ZK_KEY")?.into(),
            ),
            session_timeout: 10.0,
        }
    } else {
        StoreSpec::Embedded {
            state_dir: dir.join("state"),
        }
    };
    let state_dir = dir.join("state");
    let mut launchers = Vec::new();
    for i in 0..opts.launchers.max(1) {
        let config = dir.join(format!("nodepool-{i}.yaml"));
        write(
            &config,
            &setup::nodepool_yaml_with(
                &store_spec,
                &cloud.provider_yaml(opts.max_servers),
                0,
                opts.min_ready,
            ),
        )?;
        let mut cmd = opts.kind.command(i, &config, &state_dir, &clouds, &run_id);
        cmd.env.extend(cloud.launcher_env());
        let mut l = LauncherProcess::new(&format!("launcher{i}"), cmd, &dir);
        l.start()?;
        launchers.push(l);
    }
    let store = store_spec.open().await?;
    let client = Client::new(Arc::clone(&store), "nodepool-chaos");

    // Sample the cloud's servers while the run goes on.
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let max_live = Arc::new(AtomicUsize::new(0));
    let max_live_all = Arc::new(AtomicUsize::new(0));
    let peak_sample = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let peak_sample = Arc::clone(&peak_sample);
        let seen = Arc::clone(&seen);
        let (max_live, max_live_all) = (Arc::clone(&max_live), Arc::clone(&max_live_all));
        let cloud = Arc::clone(&cloud);
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            loop {
                // The servers first, then the records: a server launched
                // between the two reads has its record already.
                if let Ok(servers) = cloud.servers().await {
                    let all = servers.iter().filter(|s| s.live).count();
                    max_live_all.fetch_max(all, Ordering::Relaxed);
                    if let Ok(nodes) = store.list_nodes().await {
                        let pool = live_of_pool(&servers, &nodes);
                        if max_live.fetch_max(pool.len(), Ordering::Relaxed) < pool.len() {
                            *crate::lock(&peak_sample) = pool;
                        }
                    }
                    crate::lock(&seen).extend(servers.into_iter().map(|s| s.id));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let injector = match (opts.chaos, cloud.openstack()) {
        (Chaos::Faults, Some(sim)) => {
            Some(FaultInjector::start(sim, opts.fault_rate, rng.next_u64()))
        }
        _ => None,
    };

    // The workload.
    let progress = Arc::new(Progress::default());
    let started = Instant::now();
    let deadline = started + opts.deadline;
    let mut work = tokio::spawn(workload::run(
        client,
        opts.requests,
        opts.concurrency,
        deadline,
        Arc::clone(&progress),
    ));

    // The chaos schedule: at random points of progress.
    let events = match opts.chaos {
        Chaos::ZkRestart => opts.zk_restarts,
        _ => opts.kills,
    };
    let mut points: Vec<usize> = (0..events)
        .map(|_| (opts.requests / 20) + rng.below((opts.requests * 9 / 10) as u64) as usize)
        .collect();
    points.sort_unstable();
    let mut kills = 0;
    let mut zk_restarts = 0;
    let mut unexpected = Vec::new();
    let mut plan = KillPlan::new(launchers.len());
    let result = loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        // A point the workload reached is struck even when its last
        // requests were answered meanwhile (a burst after a restart): the
        // kill then lands on the release and cleanup of their nodes.
        let due = points
            .first()
            .is_some_and(|p| progress.done.load(Ordering::Relaxed) >= *p);
        if work.is_finished() && !due {
            break (&mut work)
                .await
                .map_err(|e| ChaosError::Setup(format!("workload task: {e}")))?;
        }
        plan.restart_due(&mut launchers, false)?;
        for l in launchers.iter_mut() {
            if let Some(status) = l.exited() {
                unexpected.push(format!("{} start {} exited: {status}", l.name, l.starts));
                l.start()?;
            }
        }
        // ActiveActive never kills the last live launcher: a point waits
        // (without a random draw, so the seed decides as before) until one
        // more is back.
        let can_strike = opts.chaos != Chaos::ActiveActive || plan.alive() >= 2;
        if can_strike && due {
            let point = points.remove(0);
            tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
            match opts.chaos {
                Chaos::ZkRestart => {
                    let zk = private_zk
                        .as_ref()
                        .ok_or_else(|| ChaosError::Setup("no private ZooKeeper".into()))?;
                    let zk_script = zk.restart();
                    zk_script?;
                    zk_restarts += 1;
                }
                Chaos::ActiveActive => {
                    let done = plan
                        .strike(&mut launchers, &mut rng, opts.kills - kills)
                        .await;
                    kills += done;
                    if done == 0 {
                        // Only one launcher is up: try again later.
                        points.insert(0, point);
                    } else {
                        // A second kill uses up the next point.
                        points.drain(..(done - 1).min(points.len()));
                    }
                }
                _ => {
                    launchers[0].kill9();
                    kills += 1;
                    launchers[0].start()?;
                }
            }
        }
    };
    let workload_secs = started.elapsed().as_secs_f64();
    plan.restart_due(&mut launchers, true)?;
    let faults = match injector {
        Some(i) => Some(i.stop().await),
        None => None,
    };
    sampler.abort();

    // Cleanup must converge: both sides agree.
    let servers = cloud.servers().await?;
    let nodes = store
        .list_nodes()
        .await
        .map_err(|e| ChaosError::Store(e.to_string()))?;
    let leaked_at_end_of_load = CloudCheck::of(&nodes, &servers, 0)
        .servers_without_node
        .len();
    let end = Instant::now();
    let budget = opts.kind.converge_budget();
    let cloud_proc = Arc::clone(&cloud);
    let (cloud, converge_secs) = loop {
        for l in launchers.iter_mut() {
            if let Some(status) = l.exited() {
                unexpected.push(format!("{} start {} exited: {status}", l.name, l.starts));
                l.start()?;
            }
        }
        let check = compare(&*store, &cloud).await;
        match check {
            Ok(c) if c.holds() => break (c, Some(end.elapsed().as_secs_f64())),
            Ok(c) if end.elapsed() >= budget => break (c, None),
            Err(e) if end.elapsed() >= budget => return Err(e),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    // min-ready exact and stable, and the two sides still agree after it.
    let (min_ready, cloud) = if opts.chaos == Chaos::ActiveActive {
        let check = active::settle_min_ready(
            &*store,
            opts.min_ready,
            budget
                .saturating_sub(end.elapsed())
                .max(Duration::from_secs(30)),
            MIN_READY_WINDOW,
        )
        .await;
        let after = compare(&*store, &cloud_proc).await.unwrap_or(cloud);
        (Some(check), after)
    } else {
        (None, cloud)
    };
    let takeover = (opts.chaos == Chaos::ActiveActive)
        .then(|| active::takeover(&launchers, &plan.groups))
        .flatten();
    let leaked_deleted_by_launchers = launchers
        .iter()
        .map(|l| l.count_in_logs("deleting leaked instance"))
        .sum();
    for l in launchers.iter_mut() {
        l.kill9();
    }
    let _ = store.close().await;
    let requests = RequestCheck::of(&result);
    let max_live_servers = max_live.load(Ordering::Relaxed);
    let max_live_servers_all = max_live_all.load(Ordering::Relaxed);
    let held = requests.holds()
        && max_live_servers as u64 <= opts.max_servers
        && cloud.holds()
        && result.release_errors.is_empty()
        && unexpected.is_empty()
        && min_ready.as_ref().map_or(true, |m| m.held);
    let report = RunReport {
        chaos: opts.chaos,
        cloud_kind: opts.cloud,
        max_servers: opts.max_servers,
        max_live_servers,
        max_live_servers_all,
        max_live_sample: crate::lock(&peak_sample).clone(),
        store: store_spec.name().to_string(),
        launcher: opts.kind.name().to_string(),
        launchers: launchers.len(),
        seed: opts.seed,
        kills,
        kills_by_launcher: plan.by_launcher.clone(),
        double_kills: plan.double_kills,
        zk_restarts,
        unexpected_exits: unexpected,
        workload_secs,
        resubmitted: result.resubmitted,
        rereads: result.rereads,
        release_errors: result.release_errors.clone(),
        requests,
        servers_seen: crate::lock(&seen).len(),
        leaked_at_end_of_load,
        leaked_deleted_by_launchers,
        converge_secs,
        cloud,
        faults,
        min_ready,
        takeover,
        work_dir: dir.display().to_string(),
        held,
    };
    drop(private_zk);
    // A temporary directory keeps the logs of a failed run.
    work_dir.finish(held);
    Ok(report)
}

async fn compare(store: &dyn NodeStore, cloud: &CloudProcess) -> Result<CloudCheck, ChaosError> {
    let nodes = store
        .list_nodes()
        .await
        .map_err(|e| ChaosError::Store(e.to_string()))?;
    let requests = store
        .list_requests()
        .await
        .map_err(|e| ChaosError::Store(e.to_string()))?;
    let servers = cloud.servers().await?;
    Ok(CloudCheck::of(&nodes, &servers, requests.len()))
}

fn write(path: &std::path::Path, text: &str) -> Result<(), ChaosError> {
    std::fs::write(path, text).map_err(|e| ChaosError::Setup(format!("{}: {e}", path.display())))
}
