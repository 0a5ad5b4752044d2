//! diskimage-builder processes left behind by a builder that died.
//!
//! [`DibImageBuilder`](crate::DibImageBuilder) runs the command in its own
//! process group, so a builder killed with SIGKILL (or by the OOM killer)
//! does not take the build with it: the orphan goes on writing into
//! `images-dir` after its build record is gone. A builder starting on that
//! `images-dir` stops them first with [`stop_orphaned_builds`]. They are
//! recognised by the `DIB_IMAGE_FILENAME` every build's environment holds
//! (`<images-dir>/<image>-<build>`, inherited by dib's children); one
//! `images-dir` belongs to one builder (its `builder_id.txt`), so whatever
//! builds into it when the builder starts is an orphan.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use rustix::process::{kill_process, kill_process_group, Pid, Signal};

/// Stop every process (but this one) building into `images_dir`: SIGTERM
/// to each one's process group and to itself, so dib's cleanup traps run,
/// then SIGKILL to whatever is left after `grace`. Returns the pids found
/// (empty when there were none, or on systems without `/proc`).
pub async fn stop_orphaned_builds(images_dir: &Path, grace: Duration) -> Vec<u32> {
    let pids = building_into(images_dir);
    if pids.is_empty() {
        return pids;
    }
    let own_group = group_of(std::process::id());
    let groups: BTreeSet<u32> = pids
        .iter()
        .filter_map(|pid| group_of(*pid))
        .filter(|g| *g > 1 && Some(*g) != own_group)
        .collect();
    for pid in &pids {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        tracing::warn!(
            pid,
            command = %cmdline.trim_end(),
            images_dir = %images_dir.display(),
            "stopping an orphaned diskimage-builder process"
        );
    }
    signal(&groups, &pids, Signal::TERM);
    if !wait_gone(&pids, grace).await {
        tracing::warn!(pids = ?pids, "orphaned diskimage-builder processes ignored SIGTERM; killing them");
        signal(&groups, &pids, Signal::KILL);
        wait_gone(&pids, Duration::from_secs(5)).await;
    }
    pids
}

fn signal(groups: &BTreeSet<u32>, pids: &[u32], sig: Signal) {
    for g in groups {
        if let Some(pid) = pid(*g) {
            let _ = kill_process_group(pid, sig);
        }
    }
    for p in pids {
        if let Some(pid) = pid(*p) {
            let _ = kill_process(pid, sig);
        }
    }
}

fn pid(raw: u32) -> Option<Pid> {
    i32::try_from(raw).ok().and_then(Pid::from_raw)
}

/// Wait until none of `pids` runs (a zombie does not); `false` after
/// `timeout`.
async fn wait_gone(pids: &[u32], timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if !pids.iter().any(|p| alive(*p)) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `/proc/<pid>/stat` split after the command name (which may hold
/// spaces and parentheses): state, ppid, pgrp, ...
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Whether process `pid` runs (a zombie does not).
pub fn alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|s| s != "Z" && s != "X"))
}

fn group_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(2)?.parse().ok()
}

/// The pids (but ours) whose environment holds
/// `DIB_IMAGE_FILENAME=<images_dir>/...`: the diskimage-builder commands
/// building into `images_dir` and their children, which inherit it.
pub fn building_into(images_dir: &Path) -> Vec<u32> {
    let dir = images_dir.display().to_string();
    let needle = format!("DIB_IMAGE_FILENAME={}/", dir.trim_end_matches('/'));
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|var| var.starts_with(needle.as_bytes()))
            })
        })
        .collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;

    use super::*;

    #[tokio::test]
    async fn an_orphaned_build_and_its_children_are_stopped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let images = dir.path().join("images");
        let other = dir.path().join("images-other");
        // A "dib" in its own process group with a child, as a dead
        // builder leaves it, and one building elsewhere.
        let spawn = |target: &Path| {
            std::process::Command::new("bash")
                .arg("-c")
                .arg("sleep 60 & wait")
                .env("DIB_IMAGE_FILENAME", target.join("img-0123abcd"))
                .process_group(0)
                .spawn()
                .expect("spawn")
        };
        let mut orphan = spawn(&images);
        let mut elsewhere = spawn(&other);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while building_into(&images).len() < 2 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(building_into(&images).len(), 2, "bash and its sleep");

        let stopped = stop_orphaned_builds(&images, Duration::from_secs(5)).await;
        assert_eq!(stopped.len(), 2);
        assert!(
            orphan.wait().expect("reaped").code().is_none(),
            "killed by a signal"
        );
        assert!(building_into(&images).is_empty());
        assert_eq!(
            building_into(&other).len(),
            2,
            "other directories are left alone"
        );
        let _ = elsewhere.kill();
        let _ = elsewhere.wait();
        for pid in building_into(&other) {
            if let Some(p) = super::pid(pid) {
                let _ = kill_process(p, Signal::KILL);
            }
        }
        assert!(stop_orphaned_builds(&images, Duration::from_secs(1))
            .await
            .is_empty());
    }
}
