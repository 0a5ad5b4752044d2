//! The active-active mode: `N` launchers (default 3) with one
//! configuration on one provider, SIGKILLed at random among all of them
//! (sometimes two in a row, so that one serves alone for a while) and
//! restarted, under load; then `min-ready` must be held exactly.
//!
//! - [`KillPlan`] chooses the victims and when they come back.
//! - [`settle_min_ready`] waits for the ready, unallocated nodes of the
//!   label to be exactly `min-ready`, with no other node, and checks that it
//!   stays so for a few seconds.
//! - [`takeover`] reads, from every launcher's logs, when the requests a
//!   killed launcher held were given back ("reset lost request"), counted
//!   from the SIGKILL (the first of a pair).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nodepool_core::model::NodeState;
use nodepool_core::store::NodeStore;
use serde::Serialize;
use tokio::time::Instant;

use crate::check::quantile;
use crate::procs::LauncherProcess;
use crate::rng::Rng;
use crate::setup::LABEL;
use crate::ChaosError;

/// The probability that a kill is followed by a second one of another
/// launcher (when at least three run, so that one is left).
const DOUBLE_KILL: f64 = 0.35;

/// Who was killed, and who comes back when.
#[derive(Debug, Default)]
pub struct KillPlan {
    /// `(launcher, restart at)` of the launchers down now.
    down: Vec<(usize, Instant)>,
    /// Wall time (seconds since the epoch) of the first SIGKILL of each
    /// single or double kill.
    pub groups: Vec<f64>,
    /// SIGKILLs per launcher.
    pub by_launcher: Vec<usize>,
    /// Kills that took a second launcher down within half a second.
    pub double_kills: usize,
}

impl KillPlan {
    /// A plan for `launchers` launchers.
    pub fn new(launchers: usize) -> Self {
        Self {
            by_launcher: vec![0; launchers],
            ..Self::default()
        }
    }

    /// How many launchers are up.
    pub fn alive(&self) -> usize {
        self.by_launcher.len() - self.down.len()
    }

    /// Whether launcher `i` is down (killed, not restarted yet).
    pub fn is_down(&self, i: usize) -> bool {
        self.down.iter().any(|(d, _)| *d == i)
    }

    /// Kill one live launcher, chosen at random, and sometimes a second one
    /// right after; at most `left` kills. Each stays down 0.5 to 2 s (a
    /// pair: 2 to 4 s), then [`KillPlan::restart_due`] starts it again.
    /// Returns the number of SIGKILLs.
    pub async fn strike(
        &mut self,
        launchers: &mut [LauncherProcess],
        rng: &mut Rng,
        left: usize,
    ) -> usize {
        let alive: Vec<usize> = (0..launchers.len()).filter(|i| !self.is_down(*i)).collect();
        if alive.len() < 2 || left == 0 {
            // Never the last one: the provider must stay served.
            return 0;
        }
        let first = alive[rng.below(alive.len() as u64) as usize];
        let double = left >= 2 && alive.len() >= 3 && rng.chance(DOUBLE_KILL);
        self.groups.push(unix_now());
        self.kill(launchers, first, rng, double);
        if !double {
            return 1;
        }
        tokio::time::sleep(Duration::from_millis(100 + rng.below(400))).await;
        let others: Vec<usize> = alive.into_iter().filter(|i| *i != first).collect();
        let second = others[rng.below(others.len() as u64) as usize];
        self.kill(launchers, second, rng, true);
        self.double_kills += 1;
        2
    }

    fn kill(&mut self, launchers: &mut [LauncherProcess], i: usize, rng: &mut Rng, long: bool) {
        launchers[i].kill9();
        self.by_launcher[i] += 1;
        let down_ms = if long {
            2000 + rng.below(2000)
        } else {
            500 + rng.below(1500)
        };
        self.down
            .push((i, Instant::now() + Duration::from_millis(down_ms)));
    }

    /// Start again the launchers whose time down is over (every one with
    /// `all`).
    pub fn restart_due(
        &mut self,
        launchers: &mut [LauncherProcess],
        all: bool,
    ) -> Result<(), ChaosError> {
        let now = Instant::now();
        let (due, rest): (Vec<_>, Vec<_>) =
            self.down.drain(..).partition(|(_, at)| all || *at <= now);
        self.down = rest;
        for (i, _) in due {
            launchers[i].start()?;
        }
        Ok(())
    }
}

/// How `min-ready` looked once the load was over.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MinReadyCheck {
    /// The label's `min-ready`.
    pub min_ready: u64,
    /// Seconds after the check began until the ready, unallocated nodes of
    /// the label were exactly `min_ready` and no other node existed
    /// (`None`: not within the budget).
    pub reached_after_secs: Option<f64>,
    /// Samples taken over the stable window.
    pub samples: usize,
    /// The fewest and most ready, unallocated nodes of the label in the
    /// window.
    pub ready_min: u64,
    /// See `ready_min`.
    pub ready_max: u64,
    /// The most node records of any state in the window.
    pub nodes_max: u64,
    /// Whether every sample of the window had exactly `min_ready` ready
    /// nodes and nothing else.
    pub held: bool,
}

/// Wait (up to `budget`) until the store holds exactly `min_ready` ready,
/// unallocated nodes of [`LABEL`] and no other node, then sample it every
/// 250 ms for `window`: every sample must be the same.
pub async fn settle_min_ready(
    store: &dyn NodeStore,
    min_ready: u64,
    budget: Duration,
    window: Duration,
) -> MinReadyCheck {
    let mut check = MinReadyCheck {
        min_ready,
        ready_min: u64::MAX,
        ..MinReadyCheck::default()
    };
    let start = Instant::now();
    let exact = |(ready, all): (u64, u64)| ready == min_ready && all == min_ready;
    loop {
        if count(store).await.is_some_and(exact) {
            check.reached_after_secs = Some(start.elapsed().as_secs_f64());
            break;
        }
        if start.elapsed() >= budget {
            check.ready_min = 0;
            return check;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let window_end = Instant::now() + window;
    check.held = true;
    while Instant::now() < window_end {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Some((ready, all)) = count(store).await else {
            continue;
        };
        check.samples += 1;
        check.ready_min = check.ready_min.min(ready);
        check.ready_max = check.ready_max.max(ready);
        check.nodes_max = check.nodes_max.max(all);
        check.held &= exact((ready, all));
    }
    if check.samples == 0 {
        check.held = false;
        check.ready_min = 0;
    }
    check
}

/// Ready, unallocated nodes of [`LABEL`], and all node records.
async fn count(store: &dyn NodeStore) -> Option<(u64, u64)> {
    let nodes = store.list_nodes().await.ok()?;
    let ready = nodes
        .iter()
        .filter(|n| {
            n.state == Some(NodeState::Ready)
                && n.allocated_to.is_none()
                && n.labels.iter().any(|l| l == LABEL)
        })
        .count();
    Some((ready as u64, nodes.len() as u64))
}

/// How fast the survivors gave back what a killed launcher held.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Takeover {
    /// "reset lost request" lines in the launchers' logs after a kill.
    pub resets: usize,
    /// Seconds from the kill (the first of a pair) to each reset: median.
    pub p50_secs: f64,
    /// 99th percentile.
    pub p99_secs: f64,
    /// The longest.
    pub max_secs: f64,
}

/// Read every "reset lost request" line of `launchers`' logs and time it
/// from the latest kill group before it (`groups`: seconds since the
/// epoch, ascending). `None` when no reset followed a kill.
pub fn takeover(launchers: &[LauncherProcess], groups: &[f64]) -> Option<Takeover> {
    let mut delays: Vec<f64> = launchers
        .iter()
        .flat_map(|l| l.logs.iter())
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|text| {
            text.lines()
                .filter(|l| l.contains("reset lost request"))
                .filter_map(log_time)
                .collect::<Vec<_>>()
        })
        .filter_map(|t| {
            let kill = groups.iter().rev().find(|k| **k <= t)?;
            Some(t - kill)
        })
        .collect();
    if delays.is_empty() {
        return None;
    }
    delays.sort_by(f64::total_cmp);
    Some(Takeover {
        resets: delays.len(),
        p50_secs: quantile(&delays, 0.5),
        p99_secs: quantile(&delays, 0.99),
        max_secs: quantile(&delays, 1.0),
    })
}

/// Seconds since the epoch now.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The time of a `tracing` log line (`2026-12-07T01:20:00.123456Z ...`,
/// colours or not), as seconds since the epoch.
pub fn log_time(line: &str) -> Option<f64> {
    let plain = strip_ansi(line);
    let stamp = plain.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, min, s) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    let days = days_from_civil(y, m, day);
    Some((days * 86_400 + h * 3600 + min * 60) as f64 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte (a letter).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_times_read_plain_and_coloured_lines() {
        let plain = "2026-12-07T01:20:00.500000Z  INFO nodepool_core: reset lost request";
        assert_eq!(log_time(plain), Some(1_796_606_400.5));
        let coloured =
            "\u{1b}[2m2026-12-07T01:20:00.500000Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m reset";
        assert_eq!(log_time(coloured), Some(1_796_606_400.5));
        assert_eq!(log_time("1970-01-01T00:00:01Z x"), Some(1.0));
        assert_eq!(log_time("no time here"), None);
    }

    #[test]
    fn days_count_from_the_epoch() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }
}
