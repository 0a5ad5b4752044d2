//! Typed reading of spanned YAML mappings, with every error collected.
//!
//! A [`MapReader`] walks one mapping: each getter consumes a key and checks
//! its type; a wrong type, a missing required key or (at
//! [`MapReader::finish`]) a key nobody consumed is recorded in the shared
//! [`Diagnostics`] as a [`ConfigError`] naming file, line, column and key
//! path, and reading goes on, so one run reports every mistake. Drivers read
//! their provider mappings with the same reader, so their errors look exactly
//! like core's.

use std::cell::RefCell;
use std::collections::BTreeMap;

use super::yaml::{Node, Value};
use super::{ConfigError, Location};

/// Collects errors and warnings while a configuration is read.
#[derive(Debug, Default)]
pub struct Diagnostics {
    errors: RefCell<Vec<ConfigError>>,
    warnings: RefCell<Vec<String>>,
}

impl Diagnostics {
    /// An empty collection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record an error.
    pub fn error(&self, error: ConfigError) {
        self.errors.borrow_mut().push(error);
    }

    /// Record a warning (a sentence starting with `file:line:column:`).
    pub fn warn(&self, warning: impl Into<String>) {
        self.warnings.borrow_mut().push(warning.into());
    }

    /// Whether any error was recorded.
    pub fn has_errors(&self) -> bool {
        !self.errors.borrow().is_empty()
    }

    /// The number of errors recorded so far.
    pub fn error_count(&self) -> usize {
        self.errors.borrow().len()
    }

    /// The errors and warnings recorded.
    pub fn into_parts(self) -> (Vec<ConfigError>, Vec<String>) {
        (self.errors.into_inner(), self.warnings.into_inner())
    }
}

fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// One value of the configuration with its key path.
#[derive(Debug, Clone)]
pub struct Item<'a> {
    file: &'a str,
    node: &'a Node,
    path: String,
    diag: &'a Diagnostics,
}

impl<'a> Item<'a> {
    /// Wrap a node found at `path` of `file`.
    pub fn new(file: &'a str, node: &'a Node, path: String, diag: &'a Diagnostics) -> Self {
        Self {
            file,
            node,
            path,
            diag,
        }
    }

    /// The raw node.
    pub fn node(&self) -> &'a Node {
        self.node
    }

    /// The key path, e.g. `providers[0].pools[1].max-servers`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The file this value comes from.
    pub fn file(&self) -> &'a str {
        self.file
    }

    /// The diagnostics errors go to.
    pub fn diagnostics(&self) -> &'a Diagnostics {
        self.diag
    }

    /// Where the value was written.
    pub fn location(&self) -> Location {
        Location {
            file: self.file.to_string(),
            line: self.node.line,
            column: self.node.column,
        }
    }

    /// Whether the value is `null` (or was left empty).
    pub fn is_null(&self) -> bool {
        matches!(self.node.value, Value::Null)
    }

    /// Record an error about this value.
    pub fn error(&self, message: impl Into<String>) {
        self.diag.error(ConfigError {
            file: self.file.to_string(),
            line: self.node.line,
            column: self.node.column,
            path: self.path.clone(),
            message: message.into(),
        });
    }

    /// Record a warning about this value.
    pub fn warn(&self, message: impl std::fmt::Display) {
        self.diag.warn(format!(
            "{}:{}:{}: {}: {message}",
            self.file, self.node.line, self.node.column, self.path
        ));
    }

    fn mismatch<T>(&self, expected: &str) -> Option<T> {
        self.error(format!(
            "expected {expected}, found {}",
            self.node.value.describe()
        ));
        None
    }

    /// The value as a string (records an error unless it is one).
    pub fn as_str(&self) -> Option<String> {
        match &self.node.value {
            Value::Str(s) => Some(s.clone()),
            _ => self.mismatch("a string"),
        }
    }

    /// A string or an integer as text (upstream's `Any(str, int)`, for
    /// values such as `release: 21`; a boolean is a Python int there too and
    /// reads as `True`/`False`). A float is an error, as upstream's schema
    /// says.
    pub fn as_text(&self) -> Option<String> {
        match &self.node.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Bool(b) => Some(if *b { "True" } else { "False" }.to_string()),
            _ => self.mismatch("a string or an integer"),
        }
    }

    /// The value as an integer.
    pub fn as_i64(&self) -> Option<i64> {
        match &self.node.value {
            Value::Int(i) => Some(*i),
            _ => self.mismatch("an integer"),
        }
    }

    /// The value as a number (integers accepted).
    pub fn as_f64(&self) -> Option<f64> {
        match &self.node.value {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => self.mismatch("a number"),
        }
    }

    /// The value as a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match &self.node.value {
            Value::Bool(b) => Some(*b),
            _ => self.mismatch("a boolean"),
        }
    }

    /// The value as a mapping to read further.
    pub fn as_map(&self) -> Option<MapReader<'a>> {
        match &self.node.value {
            Value::Map(entries) => Some(MapReader {
                file: self.file,
                node: self.node,
                entries,
                used: vec![false; entries.len()],
                path: self.path.clone(),
                diag: self.diag,
            }),
            _ => self.mismatch("a mapping"),
        }
    }

    /// The value as a list of items (paths `key[0]`, `key[1]`, ...).
    pub fn as_seq(&self) -> Option<Vec<Item<'a>>> {
        match &self.node.value {
            Value::Seq(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, node)| Item {
                        file: self.file,
                        node,
                        path: format!("{}[{i}]", self.path),
                        diag: self.diag,
                    })
                    .collect(),
            ),
            _ => self.mismatch("a list"),
        }
    }

    /// The value as a list of strings.
    pub fn as_str_list(&self) -> Option<Vec<String>> {
        let items = self.as_seq()?;
        let before = self.diag.error_count();
        let out: Vec<String> = items.iter().filter_map(Item::as_str).collect();
        (self.diag.error_count() == before).then_some(out)
    }

    /// A string or a list of strings (upstream's `as_list`).
    pub fn as_str_or_list(&self) -> Option<Vec<String>> {
        match &self.node.value {
            Value::Str(s) => Some(vec![s.clone()]),
            Value::Null => Some(Vec::new()),
            Value::Seq(_) => self.as_str_list(),
            _ => self.mismatch("a string or a list of strings"),
        }
    }

    /// The value as a list of mappings.
    pub fn as_seq_of_maps(&self) -> Option<Vec<MapReader<'a>>> {
        let items = self.as_seq()?;
        Some(items.iter().filter_map(Item::as_map).collect())
    }

    /// The value converted to JSON, whatever its type.
    pub fn to_json(&self) -> serde_json::Value {
        self.node.to_json()
    }
}

/// Reads one mapping of the configuration.
///
/// Every getter consumes its key; [`finish`](Self::finish) reports the keys
/// nobody consumed. Getters return `None` (or the default) when the key is
/// absent or its value was wrong; the latter is recorded as an error.
#[derive(Debug)]
pub struct MapReader<'a> {
    file: &'a str,
    node: &'a Node,
    entries: &'a [(Node, Node)],
    used: Vec<bool>,
    path: String,
    diag: &'a Diagnostics,
}

impl<'a> MapReader<'a> {
    /// A reader over `node`, which must be a mapping (else an error is
    /// recorded and `None` returned).
    pub fn new(file: &'a str, node: &'a Node, path: String, diag: &'a Diagnostics) -> Option<Self> {
        Item::new(file, node, path, diag).as_map()
    }

    /// The key path of this mapping (`""` for the top level).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The file.
    pub fn file(&self) -> &'a str {
        self.file
    }

    /// The raw node.
    pub fn node(&self) -> &'a Node {
        self.node
    }

    /// The diagnostics errors go to.
    pub fn diagnostics(&self) -> &'a Diagnostics {
        self.diag
    }

    /// Where the mapping starts.
    pub fn location(&self) -> Location {
        Location {
            file: self.file.to_string(),
            line: self.node.line,
            column: self.node.column,
        }
    }

    /// The path of `key` in this mapping.
    pub fn key_path(&self, key: &str) -> String {
        child_path(&self.path, key)
    }

    fn index(&self, key: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
    }

    /// Whether the mapping has `key` (consumed or not).
    pub fn has(&self, key: &str) -> bool {
        self.index(key).is_some()
    }

    /// The value of `key` without consuming it.
    pub fn peek(&self, key: &str) -> Option<&'a Node> {
        self.index(key).map(|i| &self.entries[i].1)
    }

    /// Consume `key` and return its value.
    pub fn take(&mut self, key: &str) -> Option<Item<'a>> {
        let i = self.index(key)?;
        self.used[i] = true;
        Some(Item::new(
            self.file,
            &self.entries[i].1,
            child_path(&self.path, key),
            self.diag,
        ))
    }

    /// Mark `key` as known without reading it.
    pub fn ignore(&mut self, key: &str) {
        let _ = self.take(key);
    }

    /// Consume `key`, recording "missing required key" when absent.
    pub fn required(&mut self, key: &str) -> Option<Item<'a>> {
        let item = self.take(key);
        if item.is_none() {
            self.error(format!("missing required key {key:?}"));
        }
        item
    }

    /// Record an error about the mapping itself (at its start).
    pub fn error(&self, message: impl Into<String>) {
        self.diag.error(ConfigError {
            file: self.file.to_string(),
            line: self.node.line,
            column: self.node.column,
            path: self.path.clone(),
            message: message.into(),
        });
    }

    /// Record a warning about the mapping itself.
    pub fn warn(&self, message: impl std::fmt::Display) {
        self.diag.warn(format!(
            "{}:{}:{}: {}: {message}",
            self.file, self.node.line, self.node.column, self.path
        ));
    }

    /// A required string.
    pub fn required_str(&mut self, key: &str) -> Option<String> {
        self.required(key)?.as_str()
    }

    /// An optional string.
    pub fn opt_str(&mut self, key: &str) -> Option<String> {
        self.take(key)?.as_str()
    }

    /// A string with a default.
    pub fn str_or(&mut self, key: &str, default: &str) -> String {
        self.opt_str(key).unwrap_or_else(|| default.to_string())
    }

    /// An optional integer.
    pub fn opt_i64(&mut self, key: &str) -> Option<i64> {
        self.take(key)?.as_i64()
    }

    /// An integer with a default.
    pub fn i64_or(&mut self, key: &str, default: i64) -> i64 {
        self.opt_i64(key).unwrap_or(default)
    }

    /// An optional number (integers accepted).
    pub fn opt_f64(&mut self, key: &str) -> Option<f64> {
        self.take(key)?.as_f64()
    }

    /// A number with a default.
    pub fn f64_or(&mut self, key: &str, default: f64) -> f64 {
        self.opt_f64(key).unwrap_or(default)
    }

    /// An optional boolean.
    pub fn opt_bool(&mut self, key: &str) -> Option<bool> {
        self.take(key)?.as_bool()
    }

    /// A boolean with a default.
    pub fn bool_or(&mut self, key: &str, default: bool) -> bool {
        self.opt_bool(key).unwrap_or(default)
    }

    /// An optional list of strings.
    pub fn opt_str_list(&mut self, key: &str) -> Option<Vec<String>> {
        self.take(key)?.as_str_list()
    }

    /// A list of strings, empty when absent.
    pub fn str_list(&mut self, key: &str) -> Vec<String> {
        self.opt_str_list(key).unwrap_or_default()
    }

    /// A child mapping.
    pub fn opt_map(&mut self, key: &str) -> Option<MapReader<'a>> {
        self.take(key)?.as_map()
    }

    /// A list of mappings, empty when absent.
    pub fn seq_of_maps(&mut self, key: &str) -> Vec<MapReader<'a>> {
        self.take(key)
            .and_then(|item| item.as_seq_of_maps())
            .unwrap_or_default()
    }

    /// A mapping of strings to strings (`env-vars`), empty when absent.
    pub fn str_map(&mut self, key: &str) -> BTreeMap<String, String> {
        let Some(mut map) = self.opt_map(key) else {
            return BTreeMap::new();
        };
        map.rest()
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_str()?)))
            .collect()
    }

    /// Any value as JSON (`node-attributes`, `metadata`).
    pub fn opt_json(&mut self, key: &str) -> Option<serde_json::Value> {
        self.take(key).map(|item| item.to_json())
    }

    /// A mapping as JSON (records an error if the value is not a mapping).
    pub fn opt_json_map(&mut self, key: &str) -> Option<serde_json::Value> {
        let item = self.take(key)?;
        item.as_map()?;
        Some(item.to_json())
    }

    /// Consume every key not read yet, for mappings with free-form keys.
    /// Keys that are not strings are reported as errors.
    pub fn rest(&mut self) -> Vec<(String, Item<'a>)> {
        let mut out = Vec::new();
        for (i, (k, v)) in self.entries.iter().enumerate() {
            if self.used[i] {
                continue;
            }
            self.used[i] = true;
            match &k.value {
                Value::Str(s) => out.push((
                    s.clone(),
                    Item::new(self.file, v, child_path(&self.path, s), self.diag),
                )),
                other => Item::new(self.file, k, self.path.clone(), self.diag)
                    .error(format!("expected a string key, found {}", other.describe())),
            }
        }
        out
    }

    /// Report every key that was not consumed as an unknown key.
    pub fn finish(self) {
        for (i, (k, _)) in self.entries.iter().enumerate() {
            if !self.used[i] {
                self.diag.error(ConfigError {
                    file: self.file.to_string(),
                    line: k.line,
                    column: k.column,
                    path: child_path(&self.path, &k.value.key_text()),
                    message: "unknown key".to_string(),
                });
            }
        }
    }
}

/// For each of `entries`, whether an entry after it has the same `name`:
/// upstream keeps such lists in a dict by name, so the last one wins and an
/// earlier one is only checked (drivers warn and drop it).
pub fn superseded_by_name(entries: &[MapReader<'_>]) -> Vec<bool> {
    let names: Vec<Option<&str>> = entries
        .iter()
        .map(|e| e.peek("name").and_then(|n| n.as_str()))
        .collect();
    names
        .iter()
        .enumerate()
        .map(|(i, name)| name.is_some() && names[i + 1..].contains(name))
        .collect()
}
