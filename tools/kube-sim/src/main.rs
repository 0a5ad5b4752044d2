//! `kube-sim`: the Kubernetes API simulator as its own process. Prints
//! `READY <url>` then `KUBECONFIG <path>` on stdout once it listens.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use nodepool_kube_sim::{Sim, SimOptions, Timing};

/// A Kubernetes API simulator (core v1 and rbac v1) for tests.
#[derive(Debug, Parser)]
#[command(name = "kube-sim", version)]
struct Args {
    /// The port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Write a kubeconfig for the simulator here (context `kube-sim`).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Save the cluster here on every change; reload it at start.
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// How long pods stay Pending before they run.
    #[arg(long, default_value_t = 500)]
    pod_ready_delay_ms: u64,
    /// How long a deleted pod's containers take to stop (at most its grace
    /// period).
    #[arg(long, default_value_t = 500)]
    pod_terminate_delay_ms: u64,
    /// The bearer token (default: the state file's, or a random one).
    #[arg(long)]
    token: Option<String>,
    /// How many events watches can replay before `410 Gone`.
    #[arg(long, default_value_t = 1000)]
    history: usize,
    /// Serve plain HTTP instead of HTTPS with the built-in test CA (kubectl
    /// then sends no token, so only clients that do can call it).
    #[arg(long)]
    plain_http: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let opts = SimOptions {
        host: args.host,
        port: args.port,
        kubeconfig: args.kubeconfig,
        state_file: args.state_file,
        token: args.token,
        timing: Timing {
            pod_ready_delay: Duration::from_millis(args.pod_ready_delay_ms),
            pod_terminate_delay: Duration::from_millis(args.pod_terminate_delay_ms),
        },
        history_limit: args.history,
        tls: !args.plain_http,
    };
    let sim = match Sim::start(opts).await {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("kube-sim: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout();
    let _ = writeln!(out, "READY {}", sim.url());
    let _ = writeln!(out, "KUBECONFIG {}", sim.kubeconfig().display());
    let _ = out.flush();
    wait_for_signal().await;
    sim.shutdown().await;
    std::process::ExitCode::SUCCESS
}

/// Ctrl-C or SIGTERM.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
