//! [`DriverMetrics`]: counters and timers a driver reports under statsd
//! names of its own, to the statsd server its own configuration names.
//!
//! Upstream's OpenStack driver reports through openstacksdk, which sends a
//! counter and a timer per REST call when `clouds.yaml` or the environment
//! configure statsd. A driver of ours records such metrics here; the daemon
//! sends what changed since its last look, batched, to each target, and
//! serves the totals on `/metrics`. A driver gets the sink from the
//! [`DriverRegistry`](crate::config::DriverRegistry) it is registered in
//! ([`DriverRegistry::metrics`](crate::config::DriverRegistry::metrics)),
//! a third-party driver as well as ours.
//!
//! Recording is cheap: the name is written into a buffer kept for the
//! purpose and looked up without allocating; only a name seen for the
//! first time is stored. At most [`DriverMetrics::MAX_SERIES`] names are
//! kept; a new name beyond that is dropped and counted
//! ([`DriverMetrics::dropped`]).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::{Mutex, PoisonError};

/// What was recorded under one name so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricTotals {
    /// The counter increments, summed.
    pub count: u64,
    /// How many timings were recorded.
    pub timings: u64,
    /// Their durations, summed, in whole milliseconds.
    pub millis: u64,
}

/// One name's totals ([`DriverMetrics::snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricSeries {
    /// The statsd server (`host:port`) the driver's configuration names.
    pub target: String,
    /// The statsd name, as the driver wrote it.
    pub name: String,
    /// What was recorded under it.
    pub totals: MetricTotals,
}

#[derive(Debug, Default)]
struct Series {
    /// Where a name is written to be looked up.
    scratch: String,
    /// Target → name → totals.
    by_target: BTreeMap<String, BTreeMap<String, MetricTotals>>,
    /// Names kept, over all targets.
    names: usize,
    /// Records of names beyond the bound.
    dropped: u64,
}

/// Counters and timers drivers report under names of their own; see the
/// module documentation.
#[derive(Debug, Default)]
pub struct DriverMetrics {
    series: Mutex<Series>,
}

impl DriverMetrics {
    /// The most names kept, over all targets.
    pub const MAX_SERIES: usize = 4096;

    /// Nothing recorded yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `n` to the counter `name` for `target` (statsd's `incr`).
    pub fn incr(&self, target: &str, name: &dyn fmt::Display, n: u64) {
        self.record(target, name, |t| t.count = t.count.saturating_add(n));
    }

    /// Record one timing of `millis` milliseconds under `name` for
    /// `target` (statsd's `timing`; the driver rounds as its upstream
    /// does).
    pub fn timing(&self, target: &str, name: &dyn fmt::Display, millis: u64) {
        self.record(target, name, |t| {
            t.timings = t.timings.saturating_add(1);
            t.millis = t.millis.saturating_add(millis);
        });
    }

    fn record(&self, target: &str, name: &dyn fmt::Display, add: impl FnOnce(&mut MetricTotals)) {
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let Series {
            scratch,
            by_target,
            names,
            dropped,
        } = &mut *series;
        scratch.clear();
        if write!(scratch, "{name}").is_err() {
            return;
        }
        if let Some(totals) = by_target
            .get_mut(target)
            .and_then(|m| m.get_mut(scratch.as_str()))
        {
            add(totals);
            return;
        }
        if *names >= Self::MAX_SERIES {
            *dropped = dropped.saturating_add(1);
            return;
        }
        let mut totals = MetricTotals::default();
        add(&mut totals);
        by_target
            .entry(target.to_owned())
            .or_default()
            .insert(scratch.clone(), totals);
        *names += 1;
    }

    /// Every name recorded so far, by target and name.
    pub fn snapshot(&self) -> Vec<MetricSeries> {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        series
            .by_target
            .iter()
            .flat_map(|(target, names)| {
                names.iter().map(move |(name, totals)| MetricSeries {
                    target: target.clone(),
                    name: name.clone(),
                    totals: *totals,
                })
            })
            .collect()
    }

    /// Records dropped because [`DriverMetrics::MAX_SERIES`] names were
    /// kept already.
    pub fn dropped(&self) -> u64 {
        self.series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_timings_sum_per_target_and_name() {
        let m = DriverMetrics::new();
        let name = format_args!("a.b.{}", 200).to_string();
        m.incr("h:1", &name, 1);
        m.incr("h:1", &name, 2);
        m.timing("h:1", &name, 1500);
        m.timing("h:1", &name, 2);
        m.incr("h:2", &name, 1);
        assert_eq!(
            m.snapshot(),
            [
                MetricSeries {
                    target: "h:1".into(),
                    name: "a.b.200".into(),
                    totals: MetricTotals {
                        count: 3,
                        timings: 2,
                        millis: 1502
                    }
                },
                MetricSeries {
                    target: "h:2".into(),
                    name: "a.b.200".into(),
                    totals: MetricTotals {
                        count: 1,
                        timings: 0,
                        millis: 0
                    }
                },
            ]
        );
    }

    #[test]
    fn names_beyond_the_bound_are_dropped_and_counted() {
        let m = DriverMetrics::new();
        for i in 0..DriverMetrics::MAX_SERIES + 5 {
            m.incr("h:1", &i, 1);
        }
        // Known names still count.
        m.incr("h:1", &0, 1);
        assert_eq!(m.snapshot().len(), DriverMetrics::MAX_SERIES);
        assert_eq!(m.dropped(), 5);
        assert_eq!(m.snapshot()[0].totals.count, 2);
    }
}
