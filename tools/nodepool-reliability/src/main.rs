//! `nodepool-chaos`: the reliability suite of nodepool-rs.
//!
//! It kills launchers with SIGKILL, restarts ZooKeeper and injects cloud
//! faults while a requestor asks for nodes, against an OpenStack simulator
//! (crashes also against moto's EC2 server or kube-sim, `--cloud`)
//! that runs as its own process and keeps its servers across launcher
//! crashes; then it waits for cleanup and checks from both sides that
//! nothing was lost (every request fulfilled or failed with a reason, no
//! node in two requests) and nothing leaked (every server has a node
//! record, every node's server exists). See doc/reliability.md.

#![deny(missing_docs)]

mod active;
mod builder_kill;
mod check;
mod cloud;
mod engine;
mod faults;
mod procs;
mod rng;
mod run;
mod setup;
mod workload;

use std::process::ExitCode;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use run::{Chaos, RunOptions};
use setup::LauncherKind;

/// Why a run could not be done (as opposed to an invariant that failed,
/// which is a report).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChaosError {
    /// A process, file or server could not be set up.
    #[error("setup: {0}")]
    Setup(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
    /// The simulator's admin API failed.
    #[error("cloud: {0}")]
    Cloud(String),
}

/// Lock a mutex, taking the data of a poisoned one (a panicked task's
/// partial update is still what we want to report).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Parser)]
#[command(
    name = "nodepool-chaos",
    about = "Crash, restart and fault runs of nodepool-rs"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StoreArg {
    Embedded,
    Zookeeper,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LauncherArg {
    /// The `nodepool launcher` daemon (60 s cleanup interval and leak grace).
    Daemon,
    /// `nodepool-chaos run-launcher` (same engine, short intervals).
    Engine,
}

#[derive(Debug, clap::Args)]
struct Common {
    /// Requests in all.
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 30)]
    concurrency: usize,
    /// Launcher processes (default 1; 3 for `active-active`).
    #[arg(long)]
    launchers: Option<usize>,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Which launcher program runs.
    #[arg(long, value_enum, default_value = "daemon")]
    launcher: LauncherArg,
    /// Cleanup interval and leak grace of `--launcher engine`, seconds.
    #[arg(long, default_value_t = 2.0)]
    cleanup_interval: f64,
    /// The pool's max-servers.
    #[arg(long, default_value_t = 20)]
    max_servers: u64,
    /// Seconds the workload may take.
    #[arg(long, default_value_t = 1800)]
    deadline: u64,
    /// Keep state and logs here.
    #[arg(long)]
    work_dir: Option<std::path::PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// The cloud (aws and kubernetes with `crash` only).
    #[arg(long, value_enum, default_value = "openstack")]
    cloud: cloud::CloudKind,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// SIGKILL launcher 0 at random points and restart it.
    Crash {
        /// The store.
        #[arg(long, value_enum, default_value = "embedded")]
        store: StoreArg,
        /// SIGKILLs.
        #[arg(long, default_value_t = 20)]
        kills: usize,
        #[command(flatten)]
        common: Common,
    },
    /// SIGKILL any of N launchers (one config, one provider), two in a
    /// row at times, restart them; then check min-ready is exact.
    ActiveActive {
        /// The store (embedded: every launcher shares one --state-dir).
        #[arg(long, value_enum, default_value = "zookeeper")]
        store: StoreArg,
        /// SIGKILLs in all.
        #[arg(long, default_value_t = 10)]
        kills: usize,
        /// The label's min-ready.
        #[arg(long, default_value_t = 2)]
        min_ready: u64,
        #[command(flatten)]
        common: Common,
    },
    /// Restart a private ZooKeeper (scripts/zookeeper.sh) at random points.
    ZkRestart {
        /// Restarts.
        #[arg(long, default_value_t = 3)]
        restarts: usize,
        #[command(flatten)]
        common: Common,
    },
    /// Inject cloud API errors, stalls, dropped connections, quota errors.
    Faults {
        /// The store.
        #[arg(long, value_enum, default_value = "embedded")]
        store: StoreArg,
        /// Probability of arming a fault every 50 ms.
        #[arg(long, default_value_t = 0.1)]
        rate: f64,
        #[command(flatten)]
        common: Common,
    },
    /// SIGKILL the `nodepool builder` daemon mid-build and mid-upload.
    BuilderKill(BuilderKillArgs),
    /// Run one launcher engine (what `--launcher engine` starts).
    RunLauncher(engine::EngineArgs),
}

#[derive(Debug, clap::Args)]
struct BuilderKillArgs {
    /// The store.
    #[arg(long, value_enum, default_value = "embedded")]
    store: StoreArg,
    /// SIGKILLs.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds each build takes (the fake diskimage-builder's sleep).
    #[arg(long, default_value_t = 3.0)]
    build_secs: f64,
    /// Milliseconds the simulator holds each image upload.
    #[arg(long, default_value_t = 2000)]
    upload_delay_ms: u64,
    /// Seconds a kill may wait for its build or upload to start.
    #[arg(long, default_value_t = 90)]
    phase_timeout: u64,
    /// Seconds the builder may take to converge after the last kill.
    #[arg(long, default_value_t = 150)]
    converge_budget: u64,
    /// Keep state and logs here.
    #[arg(long)]
    work_dir: Option<std::path::PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn options(chaos: Chaos, zookeeper: bool, c: &Common) -> Result<RunOptions, ChaosError> {
    let kind = match c.launcher {
        LauncherArg::Daemon => LauncherKind::Daemon {
            bin: procs::sibling_binary("nodepool", "NODEPOOL_BIN")?,
        },
        LauncherArg::Engine => LauncherKind::Engine {
            bin: std::env::current_exe()
                .map_err(|e| ChaosError::Setup(format!("this executable: {e}")))?,
            cleanup_interval: c.cleanup_interval,
        },
    };
    if chaos != Chaos::Crash && c.cloud != cloud::CloudKind::Openstack {
        return Err(ChaosError::Setup(format!(
            "--cloud {} is for `crash` only; this mode runs on openstack",
            c.cloud.name()
        )));
    }
    Ok(RunOptions {
        chaos,
        cloud: c.cloud,
        zookeeper,
        requests: c.requests,
        concurrency: c.concurrency,
        kills: 0,
        zk_restarts: 0,
        launchers: c.launchers.unwrap_or(1),
        min_ready: 0,
        fault_rate: 0.0,
        seed: c.seed,
        kind,
        max_servers: c.max_servers,
        deadline: Duration::from_secs(c.deadline),
        work_dir: c.work_dir.clone(),
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nodepool-chaos: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let (opts, json) = match &cli.command {
        Cmd::RunLauncher(args) => {
            return match runtime.block_on(engine::run(args.clone())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("nodepool-chaos run-launcher: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::BuilderKill(args) => return builder_kill(&runtime, args),
        Cmd::Crash {
            store,
            kills,
            common,
        } => (
            options(Chaos::Crash, matches!(store, StoreArg::Zookeeper), common).map(|mut o| {
                o.kills = *kills;
                o
            }),
            common.json,
        ),
        Cmd::ActiveActive {
            store,
            kills,
            min_ready,
            common,
        } => (
            options(
                Chaos::ActiveActive,
                matches!(store, StoreArg::Zookeeper),
                common,
            )
            .and_then(|mut o| {
                o.launchers = common.launchers.unwrap_or(3);
                if o.launchers < 2 {
                    return Err(ChaosError::Setup(
                        "active-active needs --launchers 2 or more".into(),
                    ));
                }
                o.kills = *kills;
                o.min_ready = *min_ready;
                Ok(o)
            }),
            common.json,
        ),
        Cmd::ZkRestart { restarts, common } => (
            options(Chaos::ZkRestart, true, common).map(|mut o| {
                o.zk_restarts = *restarts;
                o
            }),
            common.json,
        ),
        Cmd::Faults {
            store,
            rate,
            common,
        } => (
            options(Chaos::Faults, matches!(store, StoreArg::Zookeeper), common).map(|mut o| {
                o.fault_rate = *rate;
                o
            }),
            common.json,
        ),
    };
    let report = opts.and_then(|o| runtime.block_on(run::run(o)));
    match report {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print!("{}", summary(&report));
            }
            if report.held {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("nodepool-chaos: {e}");
            ExitCode::from(2)
        }
    }
}

fn builder_kill(runtime: &tokio::runtime::Runtime, args: &BuilderKillArgs) -> ExitCode {
    let opts = builder_kill::BuilderKillOptions {
        zookeeper: matches!(args.store, StoreArg::Zookeeper),
        kills: args.kills,
        seed: args.seed,
        build_secs: args.build_secs,
        upload_delay_ms: args.upload_delay_ms,
        phase_timeout: Duration::from_secs(args.phase_timeout),
        converge_budget: Duration::from_secs(args.converge_budget),
        work_dir: args.work_dir.clone(),
    };
    match runtime.block_on(builder_kill::run(opts)) {
        Ok(report) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print!("{}", builder_kill::summary(&report));
            }
            if report.held {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("nodepool-chaos builder-kill: {e}");
            ExitCode::from(2)
        }
    }
}

fn summary(r: &run::RunReport) -> String {
    let q = &r.requests;
    let c = &r.cloud;
    format!(
        "{chaos:?} on {cloud_kind} and {store} with {launchers} x {launcher} (seed {seed}): {verdict}\n\
         chaos:     {kills} SIGKILLs {by:?} ({double} double), {zk} ZooKeeper restarts, unexpected exits {unexp:?}, faults {faults:?}\n\
         requests:  {total} in {secs:.1} s: {ok} fulfilled, {failed} failed with a reason, \
         {nr} failed without, {lost} lost {lost_ex:?}; {resub} resubmitted after session loss, \
         {rereads} waits re-read after 5 s without an event; fulfilled after {f50:.2} s p50, \
         {f99:.2} s p99, {fmax:.2} s max\n\
         nodes:     {delivered} delivered, {dup_n} node ids and {dup_i} instances in two requests, \
         release errors {rel:?}\n\
         cloud:     {seen} servers seen, {leak_end} without a node when the load ended, \
         {leak_del} deleted as leaked by the launchers, at most {max_live} of the pool \
         ({max_live_all} with leaks) live at once (max-servers {max_servers})\n\
         converged: {conv}; {servers} servers, {nodes} nodes {states:?}, unsettled {uns:?}, \
         servers without node {swn:?}, other external id {sox:?}, without metadata {swm:?}, \
         nodes without server {nws:?}, {reqs} requests left\n\
         {extra}\
         logs:      {dir}\n",
        chaos = r.chaos,
        cloud_kind = r.cloud_kind.name(),
        max_live = r.max_live_servers,
        max_live_all = r.max_live_servers_all,
        max_servers = r.max_servers,
        store = r.store,
        launchers = r.launchers,
        launcher = r.launcher,
        seed = r.seed,
        verdict = if r.held { "HELD" } else { "VIOLATED" },
        kills = r.kills,
        by = r.kills_by_launcher,
        double = r.double_kills,
        zk = r.zk_restarts,
        unexp = r.unexpected_exits,
        faults = r.faults,
        total = q.requests,
        secs = r.workload_secs,
        ok = q.fulfilled,
        failed = q.failed_with_reason,
        nr = q.failed_without_reason,
        lost = q.lost,
        lost_ex = q.lost_examples,
        resub = r.resubmitted,
        rereads = r.rereads,
        f50 = q.fulfil_p50_secs,
        f99 = q.fulfil_p99_secs,
        fmax = q.fulfil_max_secs,
        delivered = q.nodes_delivered,
        dup_n = q.nodes_in_two_requests.len(),
        dup_i = q.instances_in_two_requests.len(),
        rel = r.release_errors,
        seen = r.servers_seen,
        leak_end = r.leaked_at_end_of_load,
        leak_del = r.leaked_deleted_by_launchers,
        conv = r
            .converge_secs
            .map_or("NOT within the budget".to_string(), |s| format!("after {s:.1} s")),
        servers = c.servers,
        nodes = c.nodes,
        states = c.nodes_by_state,
        uns = c.nodes_unsettled,
        swn = c.servers_without_node,
        sox = c.servers_with_other_external_id,
        swm = c.servers_without_metadata,
        nws = c.nodes_without_server,
        reqs = c.requests_in_store,
        dir = r.work_dir,
        extra = active_summary(r),
    )
}

fn active_summary(r: &run::RunReport) -> String {
    let mut out = String::new();
    if let Some(m) = &r.min_ready {
        out.push_str(&format!(
            "min-ready: {verdict}: {min} wanted, reached {reached}, then {samples} samples over \
             5 s: {lo}..={hi} ready, at most {nodes} nodes\n",
            verdict = if m.held { "exact" } else { "NOT exact" },
            min = m.min_ready,
            reached = m
                .reached_after_secs
                .map_or("NOT within the budget".to_string(), |s| format!(
                    "after {s:.1} s"
                )),
            samples = m.samples,
            lo = m.ready_min,
            hi = m.ready_max,
            nodes = m.nodes_max,
        ));
    }
    if r.chaos == Chaos::ActiveActive {
        out.push_str(&match &r.takeover {
            Some(t) => format!(
                "takeover:  {n} requests of killed launchers reset by the others, \
                 {p50:.2} s p50, {p99:.2} s p99, {max:.2} s max after the SIGKILL\n",
                n = t.resets,
                p50 = t.p50_secs,
                p99 = t.p99_secs,
                max = t.max_secs,
            ),
            None => "takeover:  no request of a killed launcher needed a reset\n".to_string(),
        });
    }
    out
}
