//! Sends what drivers record in their [`DriverMetrics`] (the OpenStack
//! driver: openstacksdk's per-REST-call counters and timers) to the statsd
//! server each series names, batched: at most once a second, the counters
//! and timings recorded since the last send, a timer as the mean sampled
//! at `1/n` (as the daemon's own reporter sends its timers), lines packed
//! into datagrams of at most 512 bytes.
//!
//! The target comes from the driver's configuration (for OpenStack:
//! `STATSD_HOST`/`STATSD_PORT` or `clouds.yaml`'s `metrics: statsd:`), not
//! from the daemon's, so this runs whether or not the daemon itself
//! reports: it sends only what was recorded, and drivers record only when
//! their configuration asks for it. A target that cannot be resolved or
//! reached is warned about once and tried again a minute later.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nodepool_core::provider::{DriverMetrics, MetricSeries, MetricTotals};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::statsd::{count_and_time, datagrams};

/// How often what changed is sent.
const INTERVAL: Duration = Duration::from_secs(1);

/// The most targets a socket is kept for (drivers name few).
const MAX_TARGETS: usize = 16;

/// Send `metrics` until `cancel`, then once more.
pub(crate) fn spawn(metrics: Arc<DriverMetrics>, cancel: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut sender = Sender::default();
        loop {
            let stop = tokio::select! {
                _ = cancel.cancelled() => true,
                _ = tokio::time::sleep(INTERVAL) => false,
            };
            sender.send_changes(&metrics).await;
            if stop {
                return;
            }
        }
    })
}

/// How long a target that could not be reached is left before trying
/// again (its metrics meanwhile are dropped, as statsd's are).
const RETRY_UNREACHABLE: Duration = Duration::from_secs(60);

/// The totals last sent, a socket per target, and the targets that could
/// not be reached, with when.
#[derive(Debug, Default)]
struct Sender {
    sent: BTreeMap<(String, String), MetricTotals>,
    sockets: BTreeMap<String, UdpSocket>,
    unreachable: BTreeMap<String, tokio::time::Instant>,
}

impl Sender {
    async fn send_changes(&mut self, metrics: &DriverMetrics) {
        let now = metrics.snapshot();
        let by_target = lines_since(&self.sent, &now);
        for series in now {
            self.sent
                .insert((series.target, series.name), series.totals);
        }
        for (target, lines) in by_target {
            let Some(socket) = self.socket(&target).await else {
                continue;
            };
            for datagram in datagrams(&lines, None) {
                if let Err(e) = socket.send(datagram.as_bytes()).await {
                    debug!(%target, "statsd send failed: {e}");
                }
            }
        }
    }

    /// The socket connected to `target` (`host:port`), made on first use:
    /// an IPv4 address first, as the Python statsd client resolves.
    async fn socket(&mut self, target: &str) -> Option<&UdpSocket> {
        if !self.sockets.contains_key(target) {
            if self.sockets.len() >= MAX_TARGETS {
                debug!(%target, "too many statsd targets; not sent");
                return None;
            }
            let failed_at = self.unreachable.get(target).copied();
            if failed_at.is_some_and(|at| at.elapsed() < RETRY_UNREACHABLE) {
                return None;
            }
            match connect(target).await {
                Ok(socket) => {
                    self.unreachable.remove(target);
                    self.sockets.insert(target.to_owned(), socket);
                }
                Err(e) => {
                    if failed_at.is_none() {
                        warn!(%target, "cannot reach the statsd server of a driver's metrics: {e}");
                    }
                    self.unreachable
                        .insert(target.to_owned(), tokio::time::Instant::now());
                    return None;
                }
            }
        }
        self.sockets.get(target)
    }
}

async fn connect(target: &str) -> std::io::Result<UdpSocket> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(target).await?.collect();
    let addr = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let socket = UdpSocket::bind(if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .await?;
    socket.connect(addr).await?;
    Ok(socket)
}

/// The statsd lines of what `now` added to `sent`, by target: a counter
/// line for new increments, a timer line (the mean, sampled at `1/n`) for
/// new timings.
fn lines_since(
    sent: &BTreeMap<(String, String), MetricTotals>,
    now: &[MetricSeries],
) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for series in now {
        let before = sent
            .get(&(series.target.clone(), series.name.clone()))
            .copied()
            .unwrap_or_default();
        let count = series.totals.count.saturating_sub(before.count);
        let timings = series.totals.timings.saturating_sub(before.timings);
        let millis = series.totals.millis.saturating_sub(before.millis);
        if count == 0 && timings == 0 {
            continue;
        }
        let lines = out.entry(series.target.clone()).or_default();
        if timings > 0 {
            // A counter line and a timer line of the same name.
            let mut pair = Vec::with_capacity(2);
            count_and_time(&mut pair, &series.name, timings, millis);
            let timer = pair.pop();
            if count > 0 {
                lines.push(format!("{}:{count}|c", series.name));
            }
            lines.extend(timer);
        } else {
            lines.push(format!("{}:{count}|c", series.name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(target: &str, name: &str, count: u64, timings: u64, millis: u64) -> MetricSeries {
        MetricSeries {
            target: target.to_owned(),
            name: name.to_owned(),
            totals: MetricTotals {
                count,
                timings,
                millis,
            },
        }
    }

    #[test]
    fn lines_carry_what_changed_by_target() {
        let mut sent = BTreeMap::new();
        sent.insert(
            ("a:1".to_owned(), "k.200".to_owned()),
            MetricTotals {
                count: 1,
                timings: 1,
                millis: 10,
            },
        );
        let now = [
            series("a:1", "k.200", 4, 4, 130),
            series("a:1", "k.attempted", 4, 0, 0),
            series("b:2", "k.failed", 1, 0, 0),
        ];
        let lines = lines_since(&sent, &now);
        assert_eq!(
            lines["a:1"],
            [
                "k.200:3|c",
                "k.200:40|ms|@0.3333333333333333",
                "k.attempted:4|c"
            ]
        );
        assert_eq!(lines["b:2"], ["k.failed:1|c"]);
        // Nothing new, nothing sent.
        let sent: BTreeMap<_, _> = now
            .iter()
            .map(|s| ((s.target.clone(), s.name.clone()), s.totals))
            .collect();
        assert!(lines_since(&sent, &now).is_empty());
    }

    #[tokio::test]
    async fn an_unreachable_target_is_left_for_a_while() {
        let mut sender = Sender::default();
        assert!(sender.socket("no port here").await.is_none());
        let first = sender.unreachable["no port here"];
        assert!(sender.socket("no port here").await.is_none());
        assert_eq!(
            sender.unreachable["no port here"], first,
            "not tried again yet"
        );
    }

    #[tokio::test]
    async fn recorded_metrics_reach_their_target() {
        let receiver = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let target = receiver.local_addr().expect("addr").to_string();
        let metrics = Arc::new(DriverMetrics::new());
        metrics.incr(&target, &"openstack.api.compute.GET.servers.attempted", 2);
        let cancel = CancellationToken::new();
        let task = spawn(Arc::clone(&metrics), cancel.clone());
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), receiver.recv(&mut buf))
            .await
            .expect("a datagram")
            .expect("recv");
        assert_eq!(
            String::from_utf8_lossy(&buf[..n]),
            "openstack.api.compute.GET.servers.attempted:2|c"
        );
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops when cancelled")
            .expect("join");
    }
}
