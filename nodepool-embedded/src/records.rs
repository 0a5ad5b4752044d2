//! The SQL of nodes, requests, images and components. Each function runs on
//! a connection (or the transaction the worker opened for a write) and
//! writes the change rows of what it changed.

use nodepool_core::model::{ImageBuild, ImageUpload, Node, NodeRequest};
use nodepool_core::store::{AdmissionToken, Change, LockTarget};
use nodepool_core::{Error, Result};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::changes::{self, Kind};
use crate::codec;
use crate::error::SqlContext;
use crate::locks;

/// Next value of the named sequence; the first is 0, as ZooKeeper's.
fn next_sequence(conn: &Connection, name: &str) -> Result<i64> {
    Ok(conn
        .prepare_cached(
            "INSERT INTO sequences (name, last) VALUES (?1, 0) \
             ON CONFLICT (name) DO UPDATE SET last = last + 1 RETURNING last",
        )
        .and_then(|mut stmt| stmt.query_row(params![name], |row| row.get(0)))
        .ctx("next sequence")?)
}

/// A ten-digit sequence id.
fn sequence_id(seq: i64) -> String {
    format!("{seq:010}")
}

/// The row number of a ten-digit node id; `None` for anything else.
fn node_seq(id: &str) -> Option<i64> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok()
}

/// Runs a one-row query returning a text column.
fn one_text(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached(sql)
        .and_then(|mut stmt| stmt.query_row(params, |row| row.get(0)).optional())
        .ctx("read record")?)
}

/// A listed row, not yet decoded: its key columns and its JSON.
pub(crate) type RawRow<K> = (K, String);

/// Runs a listing query; rows are decoded later, off the worker thread
/// (decoding costs far more than the scan).
fn list<K>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    key: impl Fn(&Row<'_>) -> rusqlite::Result<K>,
    data_column: usize,
) -> Result<Vec<RawRow<K>>> {
    let mut stmt = conn.prepare_cached(sql).ctx("prepare listing")?;
    let rows = stmt
        .query_map(params, |row| Ok((key(row)?, row.get(data_column)?)))
        .ctx("list records")?;
    Ok(rows.collect::<Result<Vec<_>, _>>().ctx("list records")?)
}

// --- nodes ---

/// Stores a new node; returns its id.
pub(crate) fn create_node(conn: &Connection, json: &str) -> Result<String> {
    let seq = next_sequence(conn, "node")?;
    conn.prepare_cached("INSERT INTO nodes (id, data) VALUES (?1, ?2)")
        .and_then(|mut stmt| stmt.execute(params![seq, json]))
        .ctx("create node")?;
    let id = sequence_id(seq);
    changes::record(conn, Kind::Node, &id, Change::Put)?;
    Ok(id)
}

/// One node.
pub(crate) fn get_node(conn: &Connection, id: &str) -> Result<Option<Node>> {
    let Some(seq) = node_seq(id) else {
        return Ok(None);
    };
    one_text(conn, "SELECT data FROM nodes WHERE id = ?1", params![seq])?
        .map(|data| codec::decode_node(id, &data))
        .transpose()
}

/// Replaces a node.
pub(crate) fn update_node(conn: &Connection, node: &Node, json: &str) -> Result<()> {
    let missing = || Error::NodeNotFound {
        id: node.id.clone(),
    };
    let seq = node_seq(&node.id).ok_or_else(missing)?;
    let updated = conn
        .prepare_cached("UPDATE nodes SET data = ?2 WHERE id = ?1")
        .and_then(|mut stmt| stmt.execute(params![seq, json]))
        .ctx("update node")?;
    if updated == 0 {
        return Err(missing());
    }
    changes::record(conn, Kind::Node, &node.id, Change::Put)?;
    Ok(())
}

/// Deletes a node and its lock.
pub(crate) fn delete_node(conn: &Connection, id: &str) -> Result<()> {
    let Some(seq) = node_seq(id) else {
        return Ok(());
    };
    let deleted = conn
        .prepare_cached("DELETE FROM nodes WHERE id = ?1")
        .and_then(|mut stmt| stmt.execute(params![seq]))
        .ctx("delete node")?;
    locks::remove_all(conn, &LockTarget::Node(id.to_string()).path())?;
    if deleted > 0 {
        changes::record(conn, Kind::Node, id, Change::Deleted)?;
    }
    Ok(())
}

/// Every node in id order.
/// The id of every node row.
pub(crate) fn node_ids(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn
        .prepare_cached("SELECT id FROM nodes ORDER BY id")
        .ctx("list node ids")?;
    let rows = stmt
        .query_map([], |row| row.get::<_, i64>(0))
        .ctx("list node ids")?;
    let mut ids = Vec::new();
    for row in rows {
        ids.push(sequence_id(row.ctx("list node ids")?));
    }
    Ok(ids)
}

/// The sequence that backs admission counter `key`.
fn admission_sequence(key: &str) -> String {
    format!("admission:{key}")
}

/// The version of admission counter `key`: its sequence's last value, -1
/// before the first admission.
pub(crate) fn admission_version(conn: &Connection, key: &str) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT last FROM sequences WHERE name = ?1")
        .and_then(|mut stmt| {
            stmt.query_row(params![admission_sequence(key)], |row| row.get(0))
                .optional()
        })
        .ctx("read admission counter")?
        .unwrap_or(-1))
}

/// Creates nodes if no counter of `tokens` moved, bumping each; in the
/// caller's write transaction, so the check and the creates are one commit.
pub(crate) fn create_nodes_admitted(
    conn: &Connection,
    jsons: &[String],
    tokens: &[AdmissionToken],
) -> Result<Vec<String>> {
    for token in tokens {
        if admission_version(conn, &token.key)? != token.version {
            return Err(Error::VersionConflict {
                target: format!("admission counter {}", token.key),
                expected: token.version,
            });
        }
    }
    for token in tokens {
        next_sequence(conn, &admission_sequence(&token.key))?;
    }
    jsons.iter().map(|json| create_node(conn, json)).collect()
}

pub(crate) fn list_nodes(conn: &Connection) -> Result<Vec<RawRow<String>>> {
    list(
        conn,
        "SELECT id, data FROM nodes ORDER BY id",
        [],
        |row| Ok(sequence_id(row.get(0)?)),
        1,
    )
}

// --- requests ---

/// Stores a new request owned by `session`; returns its id.
pub(crate) fn create_request(
    conn: &Connection,
    session: i64,
    json: &str,
    priority: &str,
) -> Result<String> {
    let seq = next_sequence(conn, "request")?;
    let id = format!("{priority}-{}", sequence_id(seq));
    conn.prepare_cached("INSERT INTO requests (seq, id, session, data) VALUES (?1, ?2, ?3, ?4)")
        .and_then(|mut stmt| stmt.execute(params![seq, id, session, json]))
        .ctx("create request")?;
    changes::record(conn, Kind::Request, &id, Change::Put)?;
    Ok(id)
}

/// One request.
pub(crate) fn get_request(conn: &Connection, id: &str) -> Result<Option<NodeRequest>> {
    one_text(conn, "SELECT data FROM requests WHERE id = ?1", params![id])?
        .map(|data| codec::decode_request(id, &data))
        .transpose()
}

/// Replaces a request.
pub(crate) fn update_request(conn: &Connection, request: &NodeRequest, json: &str) -> Result<()> {
    let updated = conn
        .prepare_cached("UPDATE requests SET data = ?2 WHERE id = ?1")
        .and_then(|mut stmt| stmt.execute(params![request.id, json]))
        .ctx("update request")?;
    if updated == 0 {
        return Err(Error::RequestNotFound {
            id: request.id.clone(),
        });
    }
    changes::record(conn, Kind::Request, &request.id, Change::Put)?;
    Ok(())
}

/// Deletes a request and its lock.
pub(crate) fn delete_request(conn: &Connection, id: &str) -> Result<()> {
    let deleted = conn
        .prepare_cached("DELETE FROM requests WHERE id = ?1")
        .and_then(|mut stmt| stmt.execute(params![id]))
        .ctx("delete request")?;
    locks::remove_all(conn, &LockTarget::Request(id.to_string()).path())?;
    if deleted > 0 {
        changes::record(conn, Kind::Request, id, Change::Deleted)?;
    }
    Ok(())
}

/// Every request in id order (priority, then sequence).
pub(crate) fn list_requests(conn: &Connection) -> Result<Vec<RawRow<String>>> {
    list(
        conn,
        "SELECT id, data FROM requests ORDER BY id",
        [],
        |row| row.get(0),
        1,
    )
}

// --- images ---

/// Makes sure the image has a record (as ZooKeeper's parent znode).
fn touch_image(conn: &Connection, image: &str) -> Result<()> {
    conn.prepare_cached("INSERT INTO images (name) VALUES (?1) ON CONFLICT (name) DO NOTHING")
        .and_then(|mut stmt| stmt.execute(params![image]))
        .ctx("create image")?;
    Ok(())
}

/// Names of the images with any record.
pub(crate) fn list_images(conn: &Connection) -> Result<Vec<String>> {
    Ok(conn
        .prepare_cached("SELECT name FROM images ORDER BY name")
        .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
        .ctx("list images")?)
}

/// Stores a new build; its id is `build.id` if set, else a new uuid4 hex.
pub(crate) fn create_build(
    conn: &Connection,
    image: &str,
    build: &ImageBuild,
    json: &str,
) -> Result<String> {
    let id = if build.id.is_empty() {
        uuid::Uuid::new_v4().simple().to_string()
    } else {
        build.id.clone()
    };
    touch_image(conn, image)?;
    let inserted = conn
        .prepare_cached(
            "INSERT INTO builds (image, id, data) VALUES (?1, ?2, ?3) \
             ON CONFLICT (image, id) DO NOTHING",
        )
        .and_then(|mut stmt| stmt.execute(params![image, id, json]))
        .ctx("create build")?;
    if inserted == 0 {
        return Err(Error::AlreadyExists {
            kind: "image build",
            id: codec::build_path(image, &id),
        });
    }
    changes::record(conn, Kind::Image, image, Change::Put)?;
    Ok(id)
}

fn get_build_data(conn: &Connection, image: &str, id: &str) -> Result<Option<String>> {
    one_text(
        conn,
        "SELECT data FROM builds WHERE image = ?1 AND id = ?2",
        params![image, id],
    )
}

/// One build.
pub(crate) fn get_build(conn: &Connection, image: &str, id: &str) -> Result<Option<ImageBuild>> {
    get_build_data(conn, image, id)?
        .map(|data| codec::decode_build(image, id, &data))
        .transpose()
}

/// Replaces a build.
pub(crate) fn update_build(
    conn: &Connection,
    image: &str,
    build: &ImageBuild,
    json: &str,
) -> Result<()> {
    let updated = conn
        .prepare_cached("UPDATE builds SET data = ?3 WHERE image = ?1 AND id = ?2")
        .and_then(|mut stmt| stmt.execute(params![image, build.id, json]))
        .ctx("update build")?;
    if updated == 0 {
        return Err(Error::NotFound {
            kind: "image build",
            id: codec::build_path(image, &build.id),
        });
    }
    changes::record(conn, Kind::Image, image, Change::Put)?;
    Ok(())
}

/// Deletes a build, its uploads and the locks under it.
pub(crate) fn delete_build(conn: &Connection, image: &str, id: &str) -> Result<()> {
    let builds = conn
        .prepare_cached("DELETE FROM builds WHERE image = ?1 AND id = ?2")
        .and_then(|mut stmt| stmt.execute(params![image, id]))
        .ctx("delete build")?;
    let uploads = conn
        .prepare_cached("DELETE FROM uploads WHERE image = ?1 AND build = ?2")
        .and_then(|mut stmt| stmt.execute(params![image, id]))
        .ctx("delete build uploads")?;
    locks::remove_under(conn, &format!("{}/", codec::build_path(image, id)))?;
    if builds + uploads > 0 {
        changes::record(conn, Kind::Image, image, Change::Deleted)?;
    }
    Ok(())
}

/// Builds of an image, in id order.
pub(crate) fn list_builds(conn: &Connection, image: &str) -> Result<Vec<RawRow<String>>> {
    list(
        conn,
        "SELECT id, data FROM builds WHERE image = ?1 ORDER BY id",
        params![image],
        |row| row.get(0),
        1,
    )
}

/// Stores a new upload; returns its id (a sequence per image, build and
/// provider).
pub(crate) fn create_upload(
    conn: &Connection,
    image: &str,
    build: &str,
    provider: &str,
    json: &str,
) -> Result<String> {
    if get_build_data(conn, image, build)?.is_none() {
        return Err(Error::NotFound {
            kind: "image build",
            id: codec::build_path(image, build),
        });
    }
    let seq = next_sequence(conn, &format!("upload:{image}/{build}/{provider}"))?;
    let id = sequence_id(seq);
    touch_image(conn, image)?;
    conn.prepare_cached(
        "INSERT INTO uploads (image, build, provider, id, data) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut stmt| stmt.execute(params![image, build, provider, id, json]))
    .ctx("create upload")?;
    changes::record(conn, Kind::Image, image, Change::Put)?;
    Ok(id)
}

/// Replaces an upload, located by its image, build, provider and id.
pub(crate) fn update_upload(conn: &Connection, upload: &ImageUpload, json: &str) -> Result<()> {
    let (image, build, provider) = (&upload.image_name, &upload.build_id, &upload.provider_name);
    let updated = conn
        .prepare_cached(
            "UPDATE uploads SET data = ?5 \
             WHERE image = ?1 AND build = ?2 AND provider = ?3 AND id = ?4",
        )
        .and_then(|mut stmt| stmt.execute(params![image, build, provider, upload.id, json]))
        .ctx("update upload")?;
    if updated == 0 {
        return Err(Error::NotFound {
            kind: "image upload",
            id: codec::upload_path(image, build, provider, &upload.id),
        });
    }
    changes::record(conn, Kind::Image, image, Change::Put)?;
    Ok(())
}

/// Deletes an upload and its lock.
pub(crate) fn delete_upload(
    conn: &Connection,
    image: &str,
    build: &str,
    provider: &str,
    id: &str,
) -> Result<()> {
    let deleted = conn
        .prepare_cached(
            "DELETE FROM uploads WHERE image = ?1 AND build = ?2 AND provider = ?3 AND id = ?4",
        )
        .and_then(|mut stmt| stmt.execute(params![image, build, provider, id]))
        .ctx("delete upload")?;
    locks::remove_under(
        conn,
        &format!("{}/", codec::upload_path(image, build, provider, id)),
    )?;
    if deleted > 0 {
        changes::record(conn, Kind::Image, image, Change::Deleted)?;
    }
    Ok(())
}

/// Uploads of a build, by provider, then id.
pub(crate) fn list_uploads(
    conn: &Connection,
    image: &str,
    build: &str,
) -> Result<Vec<RawRow<(String, String)>>> {
    list(
        conn,
        "SELECT provider, id, data FROM uploads WHERE image = ?1 AND build = ?2 \
         ORDER BY provider, id",
        params![image, build],
        |row| Ok((row.get(0)?, row.get(1)?)),
        2,
    )
}

/// Which flag of an image.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Flag {
    /// `/nodepool/images/<image>/pause`
    Paused,
    /// `/nodepool/image-build-requests/<image>` (upstream: `request-build`)
    BuildRequested,
}

impl Flag {
    fn column(self) -> &'static str {
        match self {
            Flag::Paused => "paused",
            Flag::BuildRequested => "build_requested",
        }
    }
}

/// Sets or clears a flag; clearing a flag of an unknown image creates
/// nothing.
pub(crate) fn set_flag(conn: &Connection, image: &str, flag: Flag, value: bool) -> Result<()> {
    let column = flag.column();
    if value {
        touch_image(conn, image)?;
    }
    let changed = conn
        .execute(
            &format!("UPDATE images SET {column} = ?2 WHERE name = ?1 AND {column} != ?2"),
            params![image, value],
        )
        .ctx("set image flag")?;
    if changed > 0 {
        changes::record(conn, Kind::Image, image, Change::Put)?;
    }
    Ok(())
}

/// Reads a flag (false for an unknown image).
pub(crate) fn flag(conn: &Connection, image: &str, flag: Flag) -> Result<bool> {
    let column = flag.column();
    Ok(conn
        .query_row(
            &format!("SELECT {column} FROM images WHERE name = ?1"),
            params![image],
            |row| row.get::<_, bool>(0),
        )
        .optional()
        .ctx("read image flag")?
        .unwrap_or(false))
}

// --- components ---

/// Registers (or replaces) a component owned by `session`.
pub(crate) fn register_component(
    conn: &Connection,
    session: i64,
    kind: &str,
    name: &str,
    json: &str,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO components (kind, name, session, data) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (kind, name) DO UPDATE SET session = excluded.session, data = excluded.data",
    )
    .and_then(|mut stmt| stmt.execute(params![kind, name, session, json]))
    .ctx("register component")?;
    changes::record(conn, Kind::Component, kind, Change::Put)?;
    Ok(())
}

/// Removes a registration.
pub(crate) fn unregister_component(conn: &Connection, kind: &str, name: &str) -> Result<()> {
    let deleted = conn
        .prepare_cached("DELETE FROM components WHERE kind = ?1 AND name = ?2")
        .and_then(|mut stmt| stmt.execute(params![kind, name]))
        .ctx("unregister component")?;
    if deleted > 0 {
        changes::record(conn, Kind::Component, kind, Change::Deleted)?;
    }
    Ok(())
}

/// Registered components of a kind, by name.
pub(crate) fn list_components(conn: &Connection, kind: &str) -> Result<Vec<RawRow<String>>> {
    list(
        conn,
        "SELECT name, data FROM components WHERE kind = ?1 ORDER BY name",
        params![kind],
        |row| row.get(0),
        1,
    )
}
