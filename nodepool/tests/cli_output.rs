//! The one-shot commands write to standard output as a Unix tool does: a
//! reader that went away (`nodepool list | head -1`) ends the command
//! quietly instead of a panic.
//!
//! Run with `cargo test -p nodepool --test cli_output`.

use std::path::PathBuf;
use std::process::{Command, Stdio};

fn quickstart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart.yaml")
}

/// Run `nodepool -c quickstart.yaml --state-dir <tmp> ARGS` with standard
/// output a pipe whose reading end is already closed.
fn run_into_closed_pipe(args: &[&str]) -> std::process::Output {
    let state = tempfile::tempdir().expect("state dir");
    let (reader, writer) = rustix::pipe::pipe().expect("pipe");
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_nodepool"))
        .arg("-c")
        .arg(quickstart())
        .arg("--state-dir")
        .arg(state.path())
        .args(args)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .expect("run nodepool")
}

#[test]
fn listings_into_a_closed_pipe_exit_quietly() {
    for args in [
        &["list"][..],
        &["list", "--json"],
        &["request-list"],
        &["image-list", "--json"],
    ] {
        let out = run_into_closed_pipe(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "nodepool {args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "nodepool {args:?}: {stderr}");
    }
}
