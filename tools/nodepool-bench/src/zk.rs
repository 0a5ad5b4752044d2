//! ZooKeeper's own counters, read with the four-letter words on the plain
//! client port (`4lw.commands.whitelist=*`, as scripts/zookeeper.sh sets).
//!
//! - `mntr`'s `zk_cnt_<namespace>_write_per_namespace`: the write operations
//!   (create, setData, delete; each op of a multi counts) on paths under the
//!   top-level znode `<namespace>`, which is the run's chroot. This is the
//!   figure reported as "writes": it counts only this run's znodes.
//! - `srvr`'s `Zxid`: transactions of the whole server (a multi is one;
//!   session creation and closing count too).
//! - `mntr`'s `zk_packets_received`: every request of the whole server,
//!   reads and pings included.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::setup::BenchResult;

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ZkCounters {
    /// Write operations under the namespace.
    pub(crate) namespace_writes: u64,
    /// The server's last zxid (counter part).
    pub(crate) zxid: u64,
    /// Requests received by the server.
    pub(crate) packets_received: u64,
}

impl ZkCounters {
    /// `self - before`, per counter.
    pub(crate) fn since(&self, before: &ZkCounters) -> ZkCounters {
        ZkCounters {
            namespace_writes: self
                .namespace_writes
                .saturating_sub(before.namespace_writes),
            zxid: self.zxid.saturating_sub(before.zxid),
            packets_received: self
                .packets_received
                .saturating_sub(before.packets_received),
        }
    }
}

/// Read the counters of `plain` (`host:port`) for `chroot`.
pub(crate) async fn counters(plain: &str, chroot: &str) -> BenchResult<ZkCounters> {
    let namespace = chroot.trim_start_matches('/');
    let namespace = namespace.split('/').next().unwrap_or(namespace);
    let mntr = parse(&word(plain, "mntr").await?);
    let key = format!("zk_cnt_{namespace}_write_per_namespace");
    let namespace_writes = mntr.get(&key).and_then(|v| v.parse().ok()).unwrap_or(0);
    let packets_received = mntr
        .get("zk_packets_received")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let srvr = word(plain, "srvr").await?;
    let zxid = srvr
        .lines()
        .find_map(|l| l.strip_prefix("Zxid: 0x"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        // The low 32 bits count transactions within an epoch.
        .map(|z| z & 0xffff_ffff)
        .unwrap_or(0);
    Ok(ZkCounters {
        namespace_writes,
        zxid,
        packets_received,
    })
}

/// Send a four-letter word and read the answer to the end.
async fn word(plain: &str, word: &str) -> BenchResult<String> {
    let exchange = async {
        let mut stream = TcpStream::connect(plain).await?;
        stream.write_all(word.as_bytes()).await?;
        let mut out = String::new();
        stream.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    match tokio::time::timeout(Duration::from_secs(10), exchange).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(format!("ZooKeeper `{word}` on {plain}: {e}")),
        Err(_) => Err(format!("ZooKeeper `{word}` on {plain}: no answer in 10 s")),
    }
}

/// `key<TAB>value` lines.
fn parse(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mntr_lines() {
        let m = parse("zk_version\t3.8.0\nzk_cnt_bench-1_write_per_namespace\t42\n");
        assert_eq!(
            m.get("zk_cnt_bench-1_write_per_namespace")
                .map(String::as_str),
            Some("42")
        );
    }
}
