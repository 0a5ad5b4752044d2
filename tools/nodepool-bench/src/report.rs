//! Measuring and printing: percentiles, process memory, machine load, and
//! the report (a table for people, one `RESULT {json}` line for scripts).

use std::time::Duration;

use serde_json::{Map, Value};

/// The `q` quantile (0.0 ..= 1.0) of sorted samples, nearest rank.
pub(crate) fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Memory of a process, from /proc/PID/status.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Memory {
    /// Peak resident set (VmHWM), in KiB.
    pub(crate) peak_kib: u64,
    /// Resident set now (VmRSS), in KiB.
    pub(crate) now_kib: u64,
}

/// Read `pid`'s memory (zeros if it cannot be read).
pub(crate) fn memory(pid: u32) -> Memory {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Memory {
        peak_kib: field("VmHWM:"),
        now_kib: field("VmRSS:"),
    }
}

/// CPU time (user + system) `pid` has used, in seconds (0 if unknown).
/// /proc counts in USER_HZ, which is 100 on Linux.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> u64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0) };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// The machine: cores and the 1-minute load average.
pub(crate) fn machine() -> (usize, f64) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0);
    (cores, load)
}

/// Milliseconds with one decimal, for reports.
pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// KiB as MB (10^6 bytes) with one decimal.
pub(crate) fn mb(kib: u64) -> f64 {
    (kib as f64 * 1024.0 / 100_000.0).round() / 10.0
}

/// An ordered report: rows printed as a table, all fields as JSON.
#[derive(Debug, Default)]
pub(crate) struct Report {
    rows: Vec<(String, String)>,
    json: Map<String, Value>,
}

impl Report {
    /// Add a field shown as `label` in the table and `key` in the JSON.
    pub(crate) fn add(&mut self, key: &str, label: &str, value: impl Into<Value>) {
        let value = value.into();
        let shown = match &value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        self.rows.push((label.to_string(), shown));
        self.json.insert(key.to_string(), value);
    }

    /// Print the table, then `RESULT {json}`.
    pub(crate) fn print(&self) {
        let width = self.rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        for (label, value) in &self.rows {
            println!("{label:<width$}  {value}");
        }
        println!("RESULT {}", Value::Object(self.json.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&s, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&s, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&s, 1.0), Duration::from_millis(100));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }
}
