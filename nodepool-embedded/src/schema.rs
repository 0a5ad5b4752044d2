//! Connection set-up and schema migrations (`PRAGMA user_version`).

use std::path::Path;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::error::{Error, Result, SqlContext};
use crate::EmbeddedOptions;

/// Migrations, in order: entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
    CREATE TABLE sessions (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        host         TEXT    NOT NULL,   -- hostname, for people
        host_key     TEXT    NOT NULL,   -- boot id + pid namespace: pids comparable?
        pid          INTEGER NOT NULL,
        pid_start    TEXT,               -- /proc/<pid>/stat start time (pid reuse)
        created_ms   INTEGER NOT NULL,
        heartbeat_ms INTEGER NOT NULL
    );
    CREATE TABLE nodes (
        id   INTEGER PRIMARY KEY,                    -- from sequence 'node'
        data TEXT NOT NULL
    );
    CREATE TABLE requests (
        seq      INTEGER PRIMARY KEY,                -- sequence 'request', all priorities
        id       TEXT    NOT NULL UNIQUE,            -- "<priority>-<seq>"
        session  INTEGER NOT NULL,                   -- ephemeral owner
        data     TEXT    NOT NULL
    );
    CREATE INDEX requests_session ON requests(session);
    CREATE TABLE images (
        name            TEXT PRIMARY KEY,
        paused          INTEGER NOT NULL DEFAULT 0,
        build_requested INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE builds (
        image TEXT NOT NULL,
        id    TEXT NOT NULL,
        data  TEXT NOT NULL,
        PRIMARY KEY (image, id)
    );
    CREATE TABLE uploads (
        image    TEXT NOT NULL,
        build    TEXT NOT NULL,
        provider TEXT NOT NULL,
        id       TEXT NOT NULL,
        data     TEXT NOT NULL,
        PRIMARY KEY (image, build, provider, id)
    );
    CREATE TABLE sequences (                       -- ZooKeeper-like: first is 0
        name TEXT PRIMARY KEY,
        last INTEGER NOT NULL
    );
    CREATE TABLE components (
        kind    TEXT    NOT NULL,
        name    TEXT    NOT NULL,
        session INTEGER NOT NULL,
        data    TEXT    NOT NULL,
        PRIMARY KEY (kind, name)
    );
    CREATE INDEX components_session ON components(session);
    CREATE TABLE locks (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,  -- contender order
        target     TEXT    NOT NULL,                   -- upstream lock path
        session    INTEGER NOT NULL,
        identifier TEXT    NOT NULL
    );
    CREATE INDEX locks_target ON locks(target, seq);
    CREATE INDEX locks_session ON locks(session);
    CREATE TABLE changes (
        seq    INTEGER PRIMARY KEY AUTOINCREMENT,
        kind   TEXT    NOT NULL,
        key    TEXT    NOT NULL,
        change INTEGER NOT NULL,   -- 0 put, 1 deleted
        ts_ms  INTEGER NOT NULL
    );
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    "#,
];

/// The schema version this build writes.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How durable a commit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=NORMAL`: in WAL mode a commit is in the log (in the OS
    /// page cache) when it returns, so it survives the crash or `kill -9` of
    /// any process; only an OS crash or power loss can lose the last commits.
    /// The default: no fsync per commit.
    #[default]
    ProcessCrash,
    /// `synchronous=FULL`: every commit is fsynced; survives power loss, at
    /// the cost of one fsync per write.
    PowerLoss,
}

/// Opens one connection to the database at `path`, creating it if needed,
/// in WAL mode, with the busy timeout, durability and page cache size of
/// `options`.
pub(crate) fn connect(path: &Path, options: &EmbeddedOptions) -> Result<Connection> {
    let open_err = |source| Error::Open {
        path: path.to_path_buf(),
        source,
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
    conn.busy_timeout(options.busy_timeout).map_err(open_err)?;
    // journal_mode is persistent in the file; setting it again is a no-op.
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
        .map_err(open_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %path.display(), %mode, "SQLite refused WAL mode");
    }
    let sync = match options.durability {
        Durability::ProcessCrash => "NORMAL",
        Durability::PowerLoss => "FULL",
    };
    // A negative cache_size is in KiB.
    let cache_kib = options.page_cache_kib.max(64);
    conn.execute_batch(&format!(
        "PRAGMA synchronous={sync}; PRAGMA foreign_keys=OFF; PRAGMA temp_store=MEMORY; \
         PRAGMA cache_size=-{cache_kib};"
    ))
    .map_err(open_err)?;
    Ok(conn)
}

/// Brings the schema up to [`SCHEMA_VERSION`], in one immediate transaction
/// so that two processes opening a new file at once do not race.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx("begin migration")?;
    let found: i64 = tx
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .ctx("read schema version")?;
    if found > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let start = usize::try_from(found).unwrap_or(0);
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(start) {
        tracing::info!(path = %path.display(), version = index + 1, "migrating embedded store");
        tx.execute_batch(sql).ctx("apply migration")?;
    }
    tx.execute_batch(&format!("PRAGMA user_version={SCHEMA_VERSION}"))
        .ctx("write schema version")?;
    tx.commit().ctx("commit migration")
}
