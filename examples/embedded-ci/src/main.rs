//! `embedded-ci`: run a few jobs on nodes from an embedded launcher, print
//! what happens, and exit 0 when every job passed.

use std::process::ExitCode;
use std::time::Duration;

use nodepool_example_embedded_ci::{BoxError, Ci, Job, CONFIG};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("embedded-ci: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> Result<bool, BoxError> {
    let jobs = [
        Job::new(
            "lint",
            "small",
            "echo \"lint on $NODEPOOL_NODE_IP ($NODEPOOL_NODE_LABEL)\"",
        ),
        Job::new(
            "unit",
            "small",
            "test -n \"$NODEPOOL_NODE_IP\" && echo \"unit tests passed on node $NODEPOOL_NODE_ID\"",
        ),
        Job::new(
            "integration",
            "large",
            "echo \"integration as $NODEPOOL_NODE_USERNAME on $NODEPOOL_NODE_PROVIDER\"",
        ),
    ];
    let ci = Ci::start(CONFIG)?;
    println!("embedded-ci: launcher started, {} jobs", jobs.len());
    let mut passed = 0;
    for job in &jobs {
        println!("[{}] requesting a {} node", job.name, job.label);
        let outcome = ci.run_job(job).await?;
        print!(
            "[{}] node {} ({}): {}",
            job.name, outcome.node_id, outcome.node_ip, outcome.stdout
        );
        println!("[{}] {} , node released", job.name, outcome.status);
        if outcome.status.success() {
            passed += 1;
        }
    }
    // Released nodes are deleted by the launcher's cleanup; wait for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while ci.node_count().await? > 0 {
        if tokio::time::Instant::now() >= deadline {
            return Err("released nodes were not deleted within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "embedded-ci: {} nodes deleted by the launcher",
        ci.nodes_deleted()
    );
    ci.shutdown().await?;
    println!("embedded-ci: {passed}/{} jobs passed", jobs.len());
    Ok(passed == jobs.len())
}
