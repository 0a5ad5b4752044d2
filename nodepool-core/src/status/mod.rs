//! The status listings shared by the CLI and the web app: `nodepool list`,
//! `request-list`, `label-list`, `image-list`, `dib-image-list`,
//! `image-status` and `info`, with upstream nodepool 11.0.0's columns, JSON
//! keys and formats (its `nodepool/status.py`).
//!
//! The functions take plain data already read from the store and return a
//! [`Listing`]; [`Listing::to_text`] draws upstream's PrettyTable text and
//! [`Listing::to_json`] writes upstream's `json.dumps` of the rows.
//!
//! ```
//! use nodepool_core::model::{Node, NodeState};
//! use nodepool_core::status::{node_list, NODE_LIST_FIELDS};
//! use std::collections::HashSet;
//!
//! let mut node = Node::new(NodeState::Ready);
//! node.id = "0000000001".into();
//! node.state_time = Some(1_000.0);
//! let listing = node_list(&[node], &HashSet::new(), 1_062.0);
//! let text = listing.to_text(Some(NODE_LIST_FIELDS), 1_062.0);
//! assert!(text.contains("| 0000000001 |"));
//! assert!(text.contains("| 00:00:01:02 |"));
//! ```

mod listings;
mod pyrepr;
mod table;

pub use listings::*;
pub use table::pretty_table;

use crate::model::json::{JsonObject, JsonValue};

/// One value of a listing, as upstream's row dict holds it (a string, a
/// number, a list, `None`, or a driver's JSON data).
pub type Cell = JsonValue;

/// Rows with upstream's column titles and JSON keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    /// Column titles of the text table ("ID", "Provider", ...).
    pub headers: Vec<&'static str>,
    /// JSON keys, one per header ("id", "provider", ...); also the names
    /// `fields=` selects by.
    pub json_keys: Vec<&'static str>,
    /// One cell per key in each row.
    pub rows: Vec<Vec<Cell>>,
}

impl Listing {
    /// An empty listing with these `(json key, header)` columns.
    pub fn new(columns: &[(&'static str, &'static str)]) -> Self {
        Self {
            headers: columns.iter().map(|(_, h)| *h).collect(),
            json_keys: columns.iter().map(|(k, _)| *k).collect(),
            rows: Vec::new(),
        }
    }

    /// The rows as JSON objects, keys in column order.
    pub fn objects(&self) -> Vec<JsonObject> {
        self.rows
            .iter()
            .map(|row| {
                self.json_keys
                    .iter()
                    .zip(row)
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect()
            })
            .collect()
    }

    /// Upstream's JSON: `json.dumps(objs)`, a list of objects. Upstream
    /// ignores `fields` for JSON, and so does this.
    pub fn to_json(&self) -> String {
        JsonValue::Array(self.objects().into_iter().map(JsonValue::Object).collect())
            .to_python_json(false)
    }

    /// Upstream's text table: only the columns whose key is in `fields`
    /// (in column order; `None` or an empty list means all), ages as
    /// `DD:HH:MM:SS` relative to `now`, lists joined with commas, `None` as
    /// an empty cell. No trailing newline.
    pub fn to_text<S: AsRef<str>>(&self, fields: Option<&[S]>, now: f64) -> String {
        let fields = fields.filter(|f| !f.is_empty());
        let shown: Vec<usize> = (0..self.json_keys.len())
            .filter(|&i| {
                fields.map_or(true, |f| {
                    f.iter().any(|name| name.as_ref() == self.json_keys[i])
                })
            })
            .collect();
        let headers: Vec<&str> = shown.iter().map(|&i| self.headers[i]).collect();
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| {
                shown
                    .iter()
                    .map(|&i| {
                        let null = JsonValue::Null;
                        text_cell(self.json_keys[i], row.get(i).unwrap_or(&null), now)
                    })
                    .collect()
            })
            .collect();
        pretty_table(&headers, &rows)
    }
}

impl Listing {
    /// The names in `fields` that are no column of this listing (for an
    /// answer that names the valid ones, [`Listing::json_keys`]).
    pub fn unknown_fields<'a, S: AsRef<str>>(&self, fields: &'a [S]) -> Vec<&'a str> {
        fields
            .iter()
            .map(AsRef::as_ref)
            .filter(|name| !self.json_keys.contains(name))
            .collect()
    }
}

/// Splits a `fields=` query value (or `--fields`) as upstream does:
/// `None` for an empty value, else the comma-separated names.
pub fn parse_fields(value: Option<&str>) -> Option<Vec<String>> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| v.split(',').map(str::to_owned).collect())
}

/// How upstream's `_to_pretty_table` shows one value.
fn text_cell(key: &str, value: &JsonValue, now: f64) -> String {
    let is_age = key == "age" || (key.ends_with("_age") && *value != JsonValue::Null);
    if is_age {
        // age(int(value)); a value int() rejects is shown as it is.
        return match value {
            JsonValue::Int(i) => age(*i as f64, now),
            JsonValue::Float(f) => age(f.trunc(), now),
            JsonValue::Bool(b) => age(f64::from(u8::from(*b)), now),
            JsonValue::String(s) => match s.trim().parse::<i64>() {
                Ok(i) => age(i as f64, now),
                Err(_) => s.clone(),
            },
            JsonValue::Null => String::new(),
            other => pyrepr::python_str(other),
        };
    }
    match value {
        JsonValue::Array(items) => items
            .iter()
            .map(pyrepr::python_str)
            .collect::<Vec<_>>()
            .join(","),
        JsonValue::Null => String::new(),
        other => pyrepr::python_str(other),
    }
}

/// Upstream's `age(timestamp)`: the time since `timestamp` as
/// `DD:HH:MM:SS` (days keep growing past 99; a timestamp in the future
/// gives negative days, as Python's `divmod` does).
pub fn age(timestamp: f64, now: f64) -> String {
    let dt = now - timestamp;
    let (m, s) = py_divmod(dt, 60.0);
    let (h, m) = py_divmod(m, 60.0);
    let (d, h) = py_divmod(h, 24.0);
    format!(
        "{:02}:{:02}:{:02}:{:02}",
        d as i64, h as i64, m as i64, s as i64
    )
}

/// Python's `divmod(float, float)` (floor division, remainder with the
/// divisor's sign).
fn py_divmod(a: f64, b: f64) -> (f64, f64) {
    let mut m = a % b;
    let mut div = (a - m) / b;
    if m != 0.0 {
        if (b < 0.0) != (m < 0.0) {
            m += b;
            div -= 1.0;
        }
    } else {
        m = 0.0_f64.copysign(b);
    }
    let floordiv = if div != 0.0 {
        let f = div.floor();
        if div - f > 0.5 {
            f + 1.0
        } else {
            f
        }
    } else {
        0.0_f64.copysign(a / b)
    };
    (floordiv, m)
}

#[cfg(test)]
mod tests;
