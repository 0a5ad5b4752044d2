//! The example runs end to end: as a library, and as the `embedded-ci`
//! binary, which must exit 0.

use std::process::Command;

use nodepool_example_embedded_ci::{Ci, Job, CONFIG};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_sees_its_node_and_the_node_is_deleted_after_release() {
    let ci = Ci::start(CONFIG).expect("start");
    let job = Job::new(
        "env",
        "small",
        "echo \"$NODEPOOL_NODE_ID $NODEPOOL_NODE_IP $NODEPOOL_NODE_LABEL $NODEPOOL_NODE_PROVIDER\"",
    );
    let outcome = ci.run_job(&job).await.expect("job runs");
    assert!(outcome.status.success());
    assert!(!outcome.node_ip.is_empty());
    assert_eq!(
        outcome.stdout.trim(),
        format!(
            "{} {} small fake-provider",
            outcome.node_id, outcome.node_ip
        )
    );

    let failing = Job::new("fails", "small", "exit 3");
    let outcome = ci.run_job(&failing).await.expect("job runs");
    assert_eq!(outcome.status.code(), Some(3));

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while ci.node_count().await.expect("list") > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "released nodes not deleted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ci.nodes_deleted() >= 2);
    ci.shutdown().await.expect("drains");
}

#[test]
fn the_binary_runs_three_jobs_and_exits_zero() {
    let output = Command::new(env!("CARGO_BIN_EXE_embedded-ci"))
        .output()
        .expect("run embedded-ci");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "exit {:?}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("[lint] node"), "{stdout}");
    assert!(stdout.contains("unit tests passed on node"), "{stdout}");
    assert!(
        stdout.contains("integration as zuul on fake-provider"),
        "{stdout}"
    );
    assert!(stdout.contains("3/3 jobs passed"), "{stdout}");
}
