//! `openstack-sim`: run the OpenStack API simulator as a process.
//!
//! Prints the bound address (`127.0.0.1:PORT`) as the first line of stdout.
//! With `--state-file`, the cloud is saved on every change and reloaded at
//! start, so servers and images outlive a restart of the simulator.

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use nodepool_openstack_sim::{serve, SimConfig, SimState};

/// An OpenStack API simulator (Keystone v3, Nova, Glance, Neutron).
#[derive(Debug, Parser)]
#[command(name = "openstack-sim", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Save the cloud here on every change; reload it at start.
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// A JSON file with the cloud's offer (SimConfig); defaults otherwise.
    #[arg(long)]
    config: Option<PathBuf>,
}

fn load_config(path: Option<&PathBuf>) -> Result<SimConfig, String> {
    let Some(path) = path else {
        return Ok(SimConfig::default());
    };
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let config = match load_config(args.config.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("openstack-sim: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let state = match &args.state_file {
        Some(path) => match SimState::with_state_file(path.clone(), config) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("openstack-sim: {e}");
                return std::process::ExitCode::FAILURE;
            }
        },
        None => SimState::new(config),
    };
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("openstack-sim: cannot listen on {}: {e}", args.listen);
            return std::process::ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => {
            let mut out = std::io::stdout();
            // The first line is what scripts wait for.
            let _ = writeln!(out, "{addr}");
            let _ = out.flush();
        }
        Err(e) => {
            eprintln!("openstack-sim: {e}");
            return std::process::ExitCode::FAILURE;
        }
    }
    match serve(listener, state).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("openstack-sim: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
