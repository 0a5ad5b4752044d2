//! Locks: one row per contender, in `seq` order per target; the first row
//! of a target holds the lock, the others wait in line (fair, as kazoo's
//! lock recipe). Rows belong to a session and go with it.
//!
//! Events: [`Change::Put`] when a contender becomes the holder (at once, or
//! when the holder before it leaves), [`Change::Deleted`] when the holder
//! leaves. A waiter that gives up leaves without an event.

use nodepool_core::store::{Change, LockTarget};
use nodepool_core::{Error, Result};
use rusqlite::{params, Connection, OptionalExtension};

use crate::changes::{self, Kind};
use crate::error::SqlContext;

/// The handle's contender name for row `seq` of `session` (kazoo-like).
pub(crate) fn contender_name(session: i64, seq: i64) -> String {
    format!("session-{session}__lock__{seq:010}")
}

/// The row of a contender name, if it is one of ours.
pub(crate) fn contender_seq(name: &str) -> Option<i64> {
    name.rsplit_once("__lock__")?.1.parse().ok()
}

/// Where a contender stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    /// It holds the lock.
    Holder,
    /// It waits behind others.
    Waiting,
    /// Its row is gone (released, or its session expired).
    Gone,
}

fn holder_seq(conn: &Connection, path: &str) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT MIN(seq) FROM locks WHERE target = ?1")
        .and_then(|mut stmt| stmt.query_row(params![path], |row| row.get(0)))
        .ctx("find lock holder")?)
}

fn insert(conn: &Connection, session: i64, path: &str, identifier: &str) -> Result<i64> {
    conn.prepare_cached("INSERT INTO locks (target, session, identifier) VALUES (?1, ?2, ?3)")
        .and_then(|mut stmt| stmt.execute(params![path, session, identifier]))
        .ctx("add lock contender")?;
    Ok(conn.last_insert_rowid())
}

/// Takes the lock at once if nobody holds or waits for it; `None` if taken.
pub(crate) fn try_take(
    conn: &Connection,
    session: i64,
    path: &str,
    identifier: &str,
) -> Result<Option<i64>> {
    if holder_seq(conn, path)?.is_some() {
        return Ok(None);
    }
    let seq = insert(conn, session, path, identifier)?;
    changes::record(conn, Kind::Lock, path, Change::Put)?;
    Ok(Some(seq))
}

/// Joins the line for the lock; returns the row and whether it holds.
pub(crate) fn enqueue(
    conn: &Connection,
    session: i64,
    path: &str,
    identifier: &str,
) -> Result<(i64, bool)> {
    let seq = insert(conn, session, path, identifier)?;
    let holds = holder_seq(conn, path)? == Some(seq);
    if holds {
        changes::record(conn, Kind::Lock, path, Change::Put)?;
    }
    Ok((seq, holds))
}

/// Where row `seq` stands in the line for `path`.
pub(crate) fn standing(conn: &Connection, path: &str, seq: i64) -> Result<Standing> {
    let exists = conn
        .prepare_cached("SELECT 1 FROM locks WHERE seq = ?1 AND target = ?2")
        .and_then(|mut stmt| stmt.query_row(params![seq, path], |_| Ok(())).optional())
        .ctx("find lock contender")?
        .is_some();
    if !exists {
        return Ok(Standing::Gone);
    }
    Ok(if holder_seq(conn, path)? == Some(seq) {
        Standing::Holder
    } else {
        Standing::Waiting
    })
}

/// Removes row `seq` from the line for `path`, announcing the release and
/// the next holder; returns whether the row was there.
pub(crate) fn remove(conn: &Connection, path: &str, seq: i64) -> Result<bool> {
    let was_holder = holder_seq(conn, path)? == Some(seq);
    let deleted = conn
        .prepare_cached("DELETE FROM locks WHERE seq = ?1 AND target = ?2")
        .and_then(|mut stmt| stmt.execute(params![seq, path]))
        .ctx("remove lock contender")?;
    if deleted == 0 {
        return Ok(false);
    }
    if was_holder {
        changes::record(conn, Kind::Lock, path, Change::Deleted)?;
        if holder_seq(conn, path)?.is_some() {
            changes::record(conn, Kind::Lock, path, Change::Put)?;
        }
    }
    Ok(true)
}

/// Removes every contender of the lock at `path` (its record was deleted).
pub(crate) fn remove_all(conn: &Connection, path: &str) -> Result<()> {
    let deleted = conn
        .prepare_cached("DELETE FROM locks WHERE target = ?1")
        .and_then(|mut stmt| stmt.execute(params![path]))
        .ctx("remove lock")?;
    if deleted > 0 {
        changes::record(conn, Kind::Lock, path, Change::Deleted)?;
    }
    Ok(())
}

/// Removes every lock whose path starts with `prefix` (a deleted subtree).
pub(crate) fn remove_under(conn: &Connection, prefix: &str) -> Result<()> {
    let len = i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX);
    let targets: Vec<String> = conn
        .prepare_cached("DELETE FROM locks WHERE substr(target, 1, ?1) = ?2 RETURNING target")
        .and_then(|mut stmt| {
            stmt.query_map(params![len, prefix], |row| row.get(0))?
                .collect::<Result<_, _>>()
        })
        .ctx("remove locks under a deleted record")?;
    let mut targets = targets;
    targets.sort();
    targets.dedup();
    for target in targets {
        changes::record(conn, Kind::Lock, &target, Change::Deleted)?;
    }
    Ok(())
}

/// The identifiers of the contenders for `path`, holder first.
pub(crate) fn contenders(conn: &Connection, path: &str) -> Result<Vec<String>> {
    Ok(conn
        .prepare_cached("SELECT identifier FROM locks WHERE target = ?1 ORDER BY seq")
        .and_then(|mut stmt| {
            stmt.query_map(params![path], |row| row.get(0))?
                .collect::<Result<_, _>>()
        })
        .ctx("list lock contenders")?)
}

/// The error for a handle whose row is gone.
pub(crate) fn lost(target: &LockTarget) -> Error {
    Error::LockLost {
        target: target.path(),
    }
}
