//! Sessions: rows that own locks and ephemeral records, kept alive by a
//! heartbeat, and ended cleanly or by expiry.
//!
//! A session is dead when its heartbeat is older than the session timeout,
//! or, sooner, when it was opened on this host (same boot and pid
//! namespace, so pids compare) by a process that no longer runs (its pid is
//! gone or was reused: the start time in `/proc/<pid>/stat` differs). Any
//! process that notices ends it: in one transaction its row, locks,
//! ephemeral requests and component registrations are deleted and the
//! matching change rows written.

use std::time::{SystemTime, UNIX_EPOCH};

use nodepool_core::store::Change;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::changes::{self, Kind};
use crate::error::{Error, Result, SqlContext};
use crate::locks;

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Who this process is, as written in its session rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostIdentity {
    /// Hostname.
    pub(crate) host: String,
    /// Boot id and pid namespace: two processes with the same key can test
    /// each other's pids.
    pub(crate) host_key: String,
    /// This process.
    pub(crate) pid: u32,
    /// Its start time (clock ticks since boot), if `/proc` tells.
    pub(crate) pid_start: Option<String>,
}

impl HostIdentity {
    /// The identity of the running process.
    pub(crate) fn current() -> Self {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .ok()
        };
        let host = read("/proc/sys/kernel/hostname")
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".to_string());
        let boot = read("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let pid_ns = std::fs::read_link("/proc/self/ns/pid")
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let host_key = format!("{host}|{boot}|{pid_ns}");
        let pid = std::process::id();
        Self {
            host,
            host_key,
            pid,
            pid_start: pid_start_time(pid),
        }
    }
}

/// The start time of `pid` from `/proc/<pid>/stat` (field 22), or `None`
/// if there is no such process, or it has exited and waits to be reaped
/// (a zombie runs no code and holds nothing).
fn pid_start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: skip to
    // the last ')'. Field 3 (the state) is then the first one.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    if matches!(fields.next(), Some("Z" | "X" | "x")) {
        return None;
    }
    fields.nth(18).map(str::to_string)
}

/// Whether `pid`, started at `start`, still runs: `Some(false)` if it is
/// gone or its pid was reused, `None` if `/proc` cannot tell.
fn pid_alive(pid: i64, start: Option<&str>) -> Option<bool> {
    if !std::path::Path::new("/proc/self/stat").exists() {
        return None;
    }
    match pid_start_time(u32::try_from(pid).ok()?) {
        None => Some(false),
        Some(now) => Some(start.map_or(true, |s| s == now)),
    }
}

/// Inserts a session row for this process; returns its id.
pub(crate) fn create(conn: &Connection, me: &HostIdentity) -> Result<i64> {
    let now = now_ms();
    conn.execute(
        "INSERT INTO sessions (host, host_key, pid, pid_start, created_ms, heartbeat_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        params![me.host, me.host_key, me.pid, me.pid_start, now],
    )
    .ctx("create session")?;
    Ok(conn.last_insert_rowid())
}

/// Whether the session row exists (the session is alive).
pub(crate) fn exists(conn: &Connection, id: i64) -> Result<bool> {
    conn.prepare_cached("SELECT 1 FROM sessions WHERE id = ?1")
        .and_then(|mut stmt| stmt.query_row(params![id], |_| Ok(())).optional())
        .map(|row| row.is_some())
        .ctx("check session")
}

/// Refreshes the heartbeat of `ids`; returns those whose row is gone
/// (expired by somebody).
pub(crate) fn heartbeat(conn: &Connection, ids: &[i64]) -> Result<Vec<i64>> {
    let now = now_ms();
    let mut lost = Vec::new();
    let mut stmt = conn
        .prepare_cached("UPDATE sessions SET heartbeat_ms = ?1 WHERE id = ?2")
        .ctx("prepare heartbeat")?;
    for &id in ids {
        if stmt.execute(params![now, id]).ctx("heartbeat")? == 0 {
            lost.push(id);
        }
    }
    Ok(lost)
}

/// Deletes everything session `id` owns, and its row, writing change rows.
/// Call inside a transaction.
pub(crate) fn clean_up(conn: &Connection, id: i64) -> Result<()> {
    let held: Vec<(i64, String)> = conn
        .prepare_cached("SELECT seq, target FROM locks WHERE session = ?1 ORDER BY seq")
        .and_then(|mut stmt| {
            stmt.query_map(params![id], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()
        })
        .ctx("list session locks")?;
    for (seq, target) in held {
        locks::remove(conn, &target, seq).map_err(|e| Error::Cleanup(e.to_string()))?;
    }
    let requests: Vec<String> = conn
        .prepare_cached("DELETE FROM requests WHERE session = ?1 RETURNING id")
        .and_then(|mut stmt| {
            stmt.query_map(params![id], |row| row.get(0))?
                .collect::<Result<_, _>>()
        })
        .ctx("drop session requests")?;
    for request in requests {
        changes::record(conn, Kind::Request, &request, Change::Deleted)?;
    }
    let kinds: Vec<String> = conn
        .prepare_cached("DELETE FROM components WHERE session = ?1 RETURNING kind")
        .and_then(|mut stmt| {
            stmt.query_map(params![id], |row| row.get(0))?
                .collect::<Result<_, _>>()
        })
        .ctx("drop session components")?;
    for kind in kinds {
        changes::record(conn, Kind::Component, &kind, Change::Deleted)?;
    }
    conn.execute("DELETE FROM sessions WHERE id = ?1", params![id])
        .ctx("delete session")?;
    Ok(())
}

/// Ends session `id` cleanly, in its own transaction.
pub(crate) fn close(conn: &mut Connection, id: i64) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx("begin close session")?;
    clean_up(&tx, id)?;
    tx.commit().ctx("commit close session")
}

/// Ends every dead session (see the module docs); returns their ids.
pub(crate) fn expire_dead(
    conn: &mut Connection,
    me: &HostIdentity,
    timeout_ms: i64,
) -> Result<Vec<i64>> {
    let cutoff = now_ms() - timeout_ms;
    let candidates: Vec<(i64, String, i64, Option<String>, i64)> = conn
        .prepare_cached("SELECT id, host_key, pid, pid_start, heartbeat_ms FROM sessions")
        .and_then(|mut stmt| {
            stmt.query_map([], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            })?
            .collect::<Result<_, _>>()
        })
        .ctx("list sessions")?;
    let mut expired = Vec::new();
    for (id, host_key, pid, pid_start, heartbeat_ms) in candidates {
        let process_gone =
            host_key == me.host_key && pid_alive(pid, pid_start.as_deref()) == Some(false);
        if !process_gone && heartbeat_ms >= cutoff {
            continue;
        }
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("begin expire session")?;
        // Re-check inside the transaction: a heartbeat may have come since.
        let still_dead: bool = tx
            .query_row(
                "SELECT heartbeat_ms < ?2 OR ?3 FROM sessions WHERE id = ?1",
                params![id, cutoff, process_gone],
                |row| row.get(0),
            )
            .optional()
            .ctx("re-check session")?
            .unwrap_or(false);
        if still_dead {
            clean_up(&tx, id)?;
            tx.commit().ctx("commit expire session")?;
            tracing::warn!(
                session = id,
                pid,
                process_gone,
                "expired a dead session: its locks and ephemeral records are released"
            );
            expired.push(id);
        }
    }
    Ok(expired)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_missing_pid_is_not() {
        let me = HostIdentity::current();
        assert!(
            me.pid_start.is_some(),
            "/proc gives this process's start time"
        );
        assert_eq!(
            pid_alive(i64::from(me.pid), me.pid_start.as_deref()),
            Some(true)
        );
        assert_eq!(
            pid_alive(i64::from(me.pid), Some("not-the-start-time")),
            Some(false),
            "a reused pid is not the process that opened the session"
        );
        // Above pid_max (4194304 at most on Linux): no such process.
        assert_eq!(pid_alive(99_999_999, None), Some(false));
    }

    fn foreign_session(conn: &Connection, heartbeat_ms: i64) -> i64 {
        conn.execute(
            "INSERT INTO sessions (host, host_key, pid, pid_start, created_ms, heartbeat_ms) \
             VALUES ('elsewhere', 'elsewhere|boot|ns', 1, NULL, ?1, ?1)",
            params![heartbeat_ms],
        )
        .expect("insert session");
        let id = conn.last_insert_rowid();
        conn.execute(
            "INSERT INTO locks (target, session, identifier) VALUES ('/nodepool/nodes/0000000001/lock', ?1, 'x')",
            params![id],
        )
        .expect("insert lock");
        conn.execute(
            "INSERT INTO requests (seq, id, session, data) VALUES (?1, ?2, ?1, '{}')",
            params![id, format!("100-{id:010}")],
        )
        .expect("insert request");
        id
    }

    #[test]
    fn a_session_with_a_stale_heartbeat_is_expired_with_its_locks_and_requests() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("db");
        let options = crate::EmbeddedOptions {
            busy_timeout: std::time::Duration::from_secs(1),
            ..crate::EmbeddedOptions::default()
        };
        let mut conn = crate::schema::connect(&path, &options).expect("connect");
        crate::schema::migrate(&mut conn, &path).expect("migrate");
        let stale = foreign_session(&conn, now_ms() - 60_000);
        let fresh = foreign_session(&conn, now_ms());

        let expired = expire_dead(&mut conn, &HostIdentity::current(), 10_000).expect("expire");
        assert_eq!(expired, vec![stale], "only the stale session is expired");
        assert!(!exists(&conn, stale).expect("exists"));
        assert!(
            exists(&conn, fresh).expect("exists"),
            "another host's live session stays"
        );
        let owned = |table: &str, id: i64| -> i64 {
            conn.query_row(
                &format!("SELECT COUNT(*) FROM {table} WHERE session = ?1"),
                params![id],
                |row| row.get(0),
            )
            .expect("count")
        };
        assert_eq!((owned("locks", stale), owned("requests", stale)), (0, 0));
        assert_eq!((owned("locks", fresh), owned("requests", fresh)), (1, 1));
        let logged: Vec<(String, String, i64)> = conn
            .prepare("SELECT kind, key, change FROM changes ORDER BY seq")
            .and_then(|mut stmt| {
                stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                    .collect()
            })
            .expect("changes");
        assert!(
            logged.contains(&("request".to_string(), format!("100-{stale:010}"), 1)),
            "the expiry is logged for watchers: {logged:?}"
        );
    }
}
