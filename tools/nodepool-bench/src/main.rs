//! `nodepool-bench`: the launcher benchmarks of nodepool-rs.
//!
//! - `throughput`: N single-node requests against the fake cloud with
//!   upstream's fake limits (20 instances, 0.1 s boots), each node returned
//!   as `used` as soon as its request is fulfilled; requests/s, p50/p99
//!   fulfilment latency, peak RSS and, on ZooKeeper, the server's writes per
//!   fulfilled request. The launcher runs in this process, as a `nodepool
//!   launcher` child (`--daemon`), or is any launcher already running
//!   (`--external-pid`, e.g. upstream's `nodepool-launcher`).
//! - `scale`: a `nodepool launcher` child with 10,000 ready nodes and 2,000
//!   open requests it cannot serve: its peak RSS, the time to get there and
//!   the latency of `nodepool list --json`.
//!
//! Every run prints a human table and one JSON line (prefixed `RESULT `).
//! doc/benchmarks.md records the figures and the commands.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod report;
mod scale;
mod setup;
mod throughput;
mod zk;

use setup::StoreKind;

/// Benchmarks of the nodepool-rs launcher.
#[derive(Debug, Parser)]
#[command(name = "nodepool-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Requests/s and fulfilment latency on the fake cloud.
    Throughput(ThroughputArgs),
    /// Peak RSS with many nodes and open requests.
    Scale(ScaleArgs),
    /// Print the throughput run's configuration (for running another
    /// launcher, e.g. upstream's, on the same setup).
    Config(ConfigArgs),
}

/// Options of `config`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ConfigArgs {
    /// The ZooKeeper chroot (the server comes from `NODEPOOL_TEST_ZK_TLS`
    /// and friends); without it the config names no ZooKeeper.
    #[arg(long)]
    pub(crate) chroot: Option<String>,
    /// The label.
    #[arg(long, default_value = "small")]
    pub(crate) label: String,
    /// The web app's port.
    #[arg(long, default_value_t = 8005)]
    pub(crate) web_port: u16,
}

/// Options of `throughput`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ThroughputArgs {
    /// Number of single-node requests.
    #[arg(long, default_value_t = 1000)]
    pub(crate) requests: usize,
    /// Requests outstanding at once (default: all of them, as upstream's
    /// load test submits).
    #[arg(long)]
    pub(crate) concurrency: Option<usize>,
    /// The store the launcher and the client share.
    #[arg(long, value_enum, default_value_t = StoreKind::Memory)]
    pub(crate) store: StoreKind,
    /// Run the launcher as this `nodepool` binary's `launcher` command
    /// instead of in this process.
    #[arg(long, value_name = "NODEPOOL")]
    pub(crate) daemon: Option<PathBuf>,
    /// `nodepool launcher` daemons with the same configuration on the same
    /// store (with `--daemon`): each its own web port and, on ZooKeeper,
    /// its own state directory. Their peak RSS and CPU are summed. Each
    /// has a fake cloud of its own, so above 1 the fake clouds get a quota
    /// of 100,000 instances, leaving max-servers as the only limit.
    #[arg(long, default_value_t = 1, requires = "daemon")]
    pub(crate) launchers: usize,
    /// Drive a launcher that is already running (process id, for its RSS)
    /// on the ZooKeeper chroot given with `--chroot`.
    #[arg(long, value_name = "PID", conflicts_with = "daemon")]
    pub(crate) external_pid: Option<u32>,
    /// ZooKeeper chroot (default: a fresh one per run).
    #[arg(long)]
    pub(crate) chroot: Option<String>,
    /// The label to request.
    #[arg(long, default_value = "small")]
    pub(crate) label: String,
    /// Seconds a single request may take before the run fails.
    #[arg(long, default_value_t = 900)]
    pub(crate) request_timeout: u64,
    /// A name for this run in the JSON line (e.g. "upstream").
    #[arg(long)]
    pub(crate) name: Option<String>,
}

/// Options of `scale`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ScaleArgs {
    /// Ready nodes to reach.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) nodes: u64,
    /// Open requests the launcher cannot serve, submitted once the nodes
    /// are ready.
    #[arg(long, default_value_t = 2_000)]
    pub(crate) open_requests: usize,
    /// The `nodepool` binary to run as the launcher.
    #[arg(long, value_name = "NODEPOOL")]
    pub(crate) daemon: PathBuf,
    /// The store (embedded or zookeeper).
    #[arg(long, value_enum, default_value_t = StoreKind::Embedded)]
    pub(crate) store: StoreKind,
    /// Seconds of fake boot time.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) boot_delay: f64,
    /// Seconds allowed to reach the ready nodes.
    #[arg(long, default_value_t = 1800)]
    pub(crate) timeout: u64,
    /// Seconds the launcher gets with the open requests before memory is
    /// read. The launcher's periodic cleanup (leaked instances: a listing
    /// of every cloud instance) first runs 60 s after its start; a settle
    /// time that reaches past it measures that too.
    #[arg(long, default_value_t = 10)]
    pub(crate) settle: u64,
}

/// `nodepool-bench config`.
fn print_config(args: &ConfigArgs) -> setup::BenchResult<()> {
    let spec = setup::ConfigSpec::throughput(&args.label);
    let server = match &args.chroot {
        Some(_) => Some(setup::ZkServer::from_env()?),
        None => None,
    };
    let zk = server.as_ref().zip(args.chroot.as_deref());
    print!("{}", spec.yaml(zk, args.web_port));
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nodepool-bench: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Throughput(args) => throughput::run(args).await,
            Command::Scale(args) => scale::run(args).await,
            Command::Config(args) => print_config(&args),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nodepool-bench: {e}");
            ExitCode::from(1)
        }
    }
}
