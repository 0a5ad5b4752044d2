//! The `changes` log: one row per change, written in the transaction that
//! makes the change, read by every process to publish [`StoreEvent`]s.

use nodepool_core::store::{Change, LockTarget, StoreEvent};
use rusqlite::{params, Connection};

use crate::error::{Result, SqlContext};
use crate::session::now_ms;

/// What kind of record a change row is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A node; key: node id.
    Node,
    /// A node request; key: request id.
    Request,
    /// A lock contender; key: the lock path.
    Lock,
    /// Anything under an image; key: image name.
    Image,
    /// A component registration; key: component kind.
    Component,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Node => "node",
            Kind::Request => "request",
            Kind::Lock => "lock",
            Kind::Image => "image",
            Kind::Component => "component",
        }
    }
}

/// Appends a change row (call inside the transaction making the change).
pub(crate) fn record(conn: &Connection, kind: Kind, key: &str, change: Change) -> Result<()> {
    let code = match change {
        Change::Put => 0,
        Change::Deleted => 1,
    };
    conn.prepare_cached("INSERT INTO changes (kind, key, change, ts_ms) VALUES (?1, ?2, ?3, ?4)")
        .and_then(|mut stmt| stmt.execute(params![kind.as_str(), key, code, now_ms()]))
        .ctx("record change")?;
    Ok(())
}

/// One row of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChangeRow {
    /// Log sequence.
    pub(crate) seq: i64,
    /// Kind column.
    pub(crate) kind: String,
    /// Key column.
    pub(crate) key: String,
    /// Change column (0 put, 1 deleted).
    pub(crate) change: i64,
}

impl ChangeRow {
    /// The event this row announces; `None` for a row this build does not
    /// understand (written by a newer version), which is skipped.
    pub(crate) fn to_event(&self) -> Option<StoreEvent> {
        let change = if self.change == 0 {
            Change::Put
        } else {
            Change::Deleted
        };
        let key = self.key.clone();
        match self.kind.as_str() {
            "node" => Some(StoreEvent::Node { id: key, change }),
            "request" => Some(StoreEvent::Request { id: key, change }),
            "image" => Some(StoreEvent::Image { image: key }),
            "component" => Some(StoreEvent::Component { kind: key }),
            "lock" => LockTarget::from_path(&key).map(|target| StoreEvent::Lock { target, change }),
            _ => None,
        }
    }
}

/// Rows after `after`, oldest first, at most `limit`.
pub(crate) fn read_after(conn: &Connection, after: i64, limit: i64) -> Result<Vec<ChangeRow>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, kind, key, change FROM changes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )
        .ctx("prepare change tail")?;
    let rows = stmt
        .query_map(params![after, limit], |row| {
            Ok(ChangeRow {
                seq: row.get(0)?,
                kind: row.get(1)?,
                key: row.get(2)?,
                change: row.get(3)?,
            })
        })
        .ctx("tail changes")?;
    rows.collect::<Result<Vec<_>, _>>().ctx("tail changes")
}

/// The newest sequence in the log (0 if none was ever written).
pub(crate) fn last_seq(conn: &Connection) -> Result<i64> {
    conn.query_row(
        "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0)",
        [],
        |row| row.get(0),
    )
    .ctx("read last change")
}

/// The newest sequence pruned from the log: a tailer behind it missed events.
pub(crate) fn pruned_through(conn: &Connection) -> Result<i64> {
    conn.query_row(
        "SELECT COALESCE((SELECT value FROM meta WHERE key = 'changes_pruned_through'), 0)",
        [],
        |row| row.get(0),
    )
    .ctx("read pruned mark")
}

/// Deletes rows older than `older_than_ms`, keeping the newest row, and
/// records how far it pruned. Returns the number of rows deleted.
pub(crate) fn prune(conn: &mut Connection, older_than_ms: i64) -> Result<usize> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .ctx("begin prune")?;
    let through: Option<i64> = tx
        .query_row(
            "SELECT MAX(seq) FROM changes WHERE ts_ms < ?1 \
             AND seq < (SELECT MAX(seq) FROM changes)",
            params![older_than_ms],
            |row| row.get(0),
        )
        .ctx("find prunable changes")?;
    let Some(through) = through else {
        return Ok(0);
    };
    let deleted = tx
        .execute("DELETE FROM changes WHERE seq <= ?1", params![through])
        .ctx("prune changes")?;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('changes_pruned_through', ?1) \
         ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
        params![through],
    )
    .ctx("record pruned mark")?;
    tx.commit().ctx("commit prune")?;
    Ok(deleted)
}
