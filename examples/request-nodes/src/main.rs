//! Request nodes from nodepool-rs without Zuul, with the Rust client API:
//! submit a request for some labels, wait until it is fulfilled (the nodes
//! are then locked to us and `in-use`), use them, release them (they become
//! `used` and the launcher deletes them).
//!
//! Start a launcher with the quickstart config; it keeps its embedded store
//! in `.nodepool/nodepool.sqlite`:
//!
//! ```text
//! cargo run -p nodepool -- -c examples/quickstart.yaml --state-dir .nodepool launcher
//! ```
//!
//! then, in another terminal, from the same directory:
//!
//! ```text
//! cargo run -p nodepool-example-request-nodes -- --state-dir .nodepool ubuntu-noble
//! ```
//!
//! Options: `--state-dir DIR` (default `.nodepool`), `--timeout SECS` to
//! wait for the nodes (default 300), `--hold SECS` to keep them before
//! releasing (default 0), then one label per node wanted.
//!
//! With ZooKeeper instead of the embedded store, open a
//! `nodepool_zk::ZkStore` and hand it to the same [`Client`]: the protocol
//! is upstream's, the steps are those a Zuul scheduler takes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use nodepool_core::client::{Client, RequestOptions};
use nodepool_core::store::NodeStore;
use nodepool_embedded::EmbeddedStore;

/// What the command line asks for.
#[derive(Debug)]
struct Args {
    state_dir: PathBuf,
    timeout: Duration,
    hold: Duration,
    labels: Vec<String>,
}

const USAGE: &str =
    "usage: request-nodes [--state-dir DIR] [--timeout SECS] [--hold SECS] LABEL...";

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        state_dir: PathBuf::from(".nodepool"),
        timeout: Duration::from_secs(300),
        hold: Duration::ZERO,
        labels: Vec::new(),
    };
    let seconds = |flag: &str, value: Option<String>| -> Result<Duration, String> {
        let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
        value
            .parse::<f64>()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .ok_or_else(|| format!("{flag}: {value:?} is not a number of seconds"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--state-dir" => {
                parsed.state_dir = args
                    .next()
                    .map(PathBuf::from)
                    .ok_or("--state-dir needs a value")?;
            }
            "--timeout" => parsed.timeout = seconds("--timeout", args.next())?,
            "--hold" => parsed.hold = seconds("--hold", args.next())?,
            "-h" | "--help" => return Err(USAGE.to_string()),
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            label => parsed.labels.push(label.to_string()),
        }
    }
    if parsed.labels.is_empty() {
        return Err("name at least one label".to_string());
    }
    Ok(parsed)
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    // 1. A session on the launcher's store (the same SQLite file).
    let path = args.state_dir.join("nodepool.sqlite");
    if !path.exists() {
        return Err(format!(
            "{} does not exist: is a launcher running with --state-dir {}?",
            path.display(),
            args.state_dir.display()
        )
        .into());
    }
    let store: Arc<dyn NodeStore> = Arc::new(EmbeddedStore::open(&path)?);
    let client = Client::new(Arc::clone(&store), "request-nodes-example");

    // 2. Submit one request for every label: one node per label.
    let labels: Vec<&str> = args.labels.iter().map(String::as_str).collect();
    let request = client.submit(&labels, &RequestOptions::default()).await?;
    println!(
        "submitted node request {} for {}",
        request.id,
        labels.join(", ")
    );

    // 3. Wait: once fulfilled, the nodes are locked to us and in use.
    let nodes = match client.wait_fulfilled(&request, args.timeout).await {
        Ok(nodes) => nodes,
        Err(e) => {
            // Withdraw it, so no launcher keeps working for us.
            let _ = client.cancel(&request).await;
            return Err(e.into());
        }
    };

    // 4. Use them; here we print how to reach them.
    for node in nodes.nodes() {
        println!(
            "node {}: {} at {} ({} port {}, user {})",
            node.id,
            node.labels.join(","),
            node.interface_ip.as_deref().unwrap_or("?"),
            node.connection_type.as_deref().unwrap_or("ssh"),
            node.connection_port,
            node.username.as_deref().unwrap_or("?"),
        );
    }
    tokio::time::sleep(args.hold).await;

    // 5. Give them back: marked used and unlocked, the launcher deletes them.
    let ids: Vec<String> = nodes.nodes().map(|n| n.id.clone()).collect();
    client.release(nodes).await?;
    println!("released {}", ids.join(", "));
    store.close().await?;
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("request-nodes: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("request-nodes: {e}");
            ExitCode::FAILURE
        }
    }
}
