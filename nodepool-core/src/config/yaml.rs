//! A YAML loader that keeps positions, as upstream (PyYAML `SafeLoader`)
//! reads YAML.
//!
//! Built on `saphyr-parser` events: anchors and aliases are resolved, `<<`
//! merge keys (one mapping or a list of mappings) are flattened with
//! PyYAML's precedence (explicit keys win, then the first merged map), plain
//! scalars are resolved with YAML 1.1 rules (`yes`/`no`/`on`/`off` are
//! booleans, `0x1f`, `017`, `0b11`, `1_000` and `1:30` are integers), and a
//! key repeated in one mapping keeps its last value with a warning instead of
//! an error.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use saphyr_parser::{Event, Parser, ScalarStyle, Span, SpannedEventReceiver, Tag};

use super::ConfigError;

/// A YAML value with the position where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// A YAML value as PyYAML's `SafeLoader` constructs it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// A boolean (`true`, `yes`, `on`, ... in any of PyYAML's spellings).
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order, keys unique (a repeated key kept its last
    /// value at the position of its first occurrence, as a Python dict does).
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// The name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Seq(_) => "list",
            Value::Map(_) => "mapping",
        }
    }

    /// A short description: type and, for scalars, the value.
    pub fn describe(&self) -> String {
        match self {
            Value::Null => "null".to_string(),
            Value::Bool(b) => format!("boolean {b}"),
            Value::Int(i) => format!("integer {i}"),
            Value::Float(f) => format!("float {f}"),
            Value::Str(s) => format!("string {s:?}"),
            Value::Seq(_) => "a list".to_string(),
            Value::Map(_) => "a mapping".to_string(),
        }
    }

    /// The key text of a mapping key (strings as they are, other scalars
    /// as Python would print them).
    pub fn key_text(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Null => "None".to_string(),
            Value::Bool(true) => "True".to_string(),
            Value::Bool(false) => "False".to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Seq(_) | Value::Map(_) => self.describe(),
        }
    }
}

impl Node {
    /// Look a string key up in a mapping node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string, if this is a string node.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Convert to JSON (mapping keys as text; non-finite floats become null).
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Seq(items) => {
                serde_json::Value::Array(items.iter().map(Node::to_json).collect())
            }
            Value::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.value.key_text(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// A parsed YAML document and the warnings found while loading it.
#[derive(Debug, Clone)]
pub struct Document {
    /// The root node; `None` for an empty document.
    pub root: Option<Node>,
    /// Warnings (repeated keys), each starting with `file:line:column:`.
    pub warnings: Vec<String>,
}

/// Replace `%(NODEPOOL_...)` with the environment variable of that name, as
/// upstream does before parsing (only variables whose names start with
/// `NODEPOOL_`).
pub fn substitute_env_vars<I, K, V>(text: &str, env: I) -> String
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut out = text.to_string();
    for (k, v) in env {
        let k = k.as_ref();
        if k.starts_with("NODEPOOL_") {
            out = out.replace(&format!("%({k})"), v.as_ref());
        }
    }
    out
}

/// Parse one YAML document. `file` names the source in errors and warnings.
pub fn parse(file: &str, text: &str) -> Result<Document, ConfigError> {
    let mut builder = Builder {
        file,
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        documents: 0,
        warnings: Vec::new(),
        error: None,
        merge_keys: HashSet::new(),
    };
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, true) {
        let m = e.marker();
        return Err(ConfigError {
            file: file.to_string(),
            line: m.line(),
            column: m.col() + 1,
            path: String::new(),
            message: format!("YAML syntax error: {}", e.info()),
        });
    }
    if let Some(err) = builder.error {
        return Err(err);
    }
    Ok(Document {
        root: builder.root,
        warnings: builder.warnings,
    })
}

/// A collection being built.
enum Frame {
    Seq {
        anchor: usize,
        node: Node,
        items: Vec<Node>,
    },
    Map {
        anchor: usize,
        node: Node,
        entries: Vec<(Node, Node)>,
        /// Entries from `<<` merge keys, lower precedence than explicit ones.
        merged: Vec<(Node, Node)>,
        pending_key: Option<Node>,
    },
}

struct Builder<'f> {
    file: &'f str,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    documents: usize,
    warnings: Vec<String>,
    error: Option<ConfigError>,
    /// Where a plain, untagged `<<` was written: a merge key there (a
    /// quoted `"<<"` is an ordinary string, as in PyYAML).
    merge_keys: HashSet<(usize, usize)>,
}

impl Builder<'_> {
    fn fail(&mut self, line: usize, column: usize, message: String) {
        if self.error.is_none() {
            self.error = Some(ConfigError {
                file: self.file.to_string(),
                line,
                column,
                path: String::new(),
                message,
            });
        }
    }

    /// Add a finished node to the enclosing collection (or make it the root).
    fn push(&mut self, node: Node) {
        let file = self.file;
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                merged,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => *pending_key = Some(node),
                Some(key) => {
                    if matches!(&key.value, Value::Str(s) if s == "<<")
                        && self.merge_keys.contains(&(key.line, key.column))
                    {
                        match merge_sources(&node) {
                            Ok(sources) => merged.extend(sources),
                            Err(msg) => {
                                let (l, c) = (node.line, node.column);
                                self.fail(l, c, msg);
                            }
                        }
                        return;
                    }
                    if let Some(slot) = entries.iter_mut().find(|(k, _)| k.value == key.value) {
                        self.warnings.push(format!(
                            "{file}:{}:{}: key {:?} repeated in one mapping (first at line {}); \
                             the last value is used",
                            key.line,
                            key.column,
                            key.value.key_text(),
                            slot.0.line
                        ));
                        slot.1 = node;
                    } else {
                        entries.push((key, node));
                    }
                }
            },
        }
    }

    fn finish_node(&mut self, anchor: usize, node: Node) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        self.push(node);
    }
}

/// The mappings a `<<` value merges, in precedence order (first wins).
fn merge_sources(node: &Node) -> Result<Vec<(Node, Node)>, String> {
    match &node.value {
        Value::Map(entries) => Ok(entries.clone()),
        Value::Seq(items) => {
            let mut out: Vec<(Node, Node)> = Vec::new();
            for item in items {
                match &item.value {
                    Value::Map(entries) => {
                        for (k, v) in entries {
                            if !out.iter().any(|(ok, _)| ok.value == k.value) {
                                out.push((k.clone(), v.clone()));
                            }
                        }
                    }
                    other => {
                        return Err(format!(
                            "merge key \"<<\" expects mappings, found {}",
                            other.describe()
                        ))
                    }
                }
            }
            Ok(out)
        }
        other => Err(format!(
            "merge key \"<<\" expects a mapping or a list of mappings, found {}",
            other.describe()
        )),
    }
}

impl<'input> SpannedEventReceiver<'input> for Builder<'_> {
    fn on_event(&mut self, ev: Event<'input>, span: Span) {
        if self.error.is_some() {
            return;
        }
        let line = span.start.line();
        let column = span.start.col() + 1;
        let at = |value| Node {
            value,
            line,
            column,
        };
        match ev {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    self.fail(
                        line,
                        column,
                        "expected a single document in the stream, found another document"
                            .to_string(),
                    );
                }
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(node) => {
                    let node = node.clone();
                    self.push(node);
                }
                None => self.fail(line, column, "found undefined alias".to_string()),
            },
            Event::Scalar(text, style, anchor, tag) => {
                if text == "<<" && style == ScalarStyle::Plain && tag.is_none() {
                    self.merge_keys.insert((line, column));
                }
                match resolve_scalar(&text, style, tag) {
                    Ok(value) => self.finish_node(anchor, at(value)),
                    Err(msg) => self.fail(line, column, msg),
                }
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq {
                anchor,
                node: at(Value::Null),
                items: Vec::new(),
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                anchor,
                node: at(Value::Null),
                entries: Vec::new(),
                merged: Vec::new(),
                pending_key: None,
            }),
            Event::SequenceEnd => {
                if let Some(Frame::Seq {
                    anchor,
                    mut node,
                    items,
                }) = self.stack.pop()
                {
                    node.value = Value::Seq(items);
                    self.finish_node(anchor, node);
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map {
                    anchor,
                    mut node,
                    entries,
                    merged,
                    ..
                }) = self.stack.pop()
                {
                    let mut all: Vec<(Node, Node)> = Vec::new();
                    for (k, v) in merged {
                        let shadowed = entries.iter().any(|(ek, _)| ek.value == k.value)
                            || all.iter().any(|(ak, _)| ak.value == k.value);
                        if !shadowed {
                            all.push((k, v));
                        }
                    }
                    all.extend(entries);
                    node.value = Value::Map(all);
                    self.finish_node(anchor, node);
                }
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
    }
}

/// Resolve a scalar as PyYAML's `SafeLoader` does.
fn resolve_scalar(
    text: &str,
    style: ScalarStyle,
    tag: Option<Cow<'_, Tag>>,
) -> Result<Value, String> {
    if let Some(tag) = tag {
        let name = format!("{}{}", tag.handle, tag.suffix);
        let suffix = tag.suffix.trim_start_matches("tag:yaml.org,2002:");
        return match (tag.handle.as_str(), suffix) {
            ("!!", "str") | ("tag:yaml.org,2002:", "str") => Ok(Value::Str(text.to_string())),
            ("!!", "int") => {
                resolve_int(text).ok_or_else(|| format!("invalid integer {text:?} for tag {name}"))
            }
            ("!!", "float") => resolve_float(text)
                .or_else(|| {
                    resolve_int(text).map(|v| match v {
                        Value::Int(i) => Value::Float(i as f64),
                        other => other,
                    })
                })
                .ok_or_else(|| format!("invalid float {text:?} for tag {name}")),
            ("!!", "bool") => resolve_bool(text)
                .map(Value::Bool)
                .ok_or_else(|| format!("invalid boolean {text:?} for tag {name}")),
            ("!!", "null") => Ok(Value::Null),
            ("!", "") => Ok(Value::Str(text.to_string())),
            _ => Err(format!(
                "could not determine a constructor for the tag {name}"
            )),
        };
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::Str(text.to_string()));
    }
    if matches!(text, "" | "~" | "null" | "Null" | "NULL") {
        return Ok(Value::Null);
    }
    if let Some(b) = resolve_bool(text) {
        return Ok(Value::Bool(b));
    }
    if let Some(v) = resolve_int(text) {
        return Ok(v);
    }
    if let Some(v) = resolve_float(text) {
        return Ok(v);
    }
    Ok(Value::Str(text.to_string()))
}

fn resolve_bool(text: &str) -> Option<bool> {
    match text {
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => Some(true),
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

fn split_sign(text: &str) -> (i64, &str) {
    match text.as_bytes().first() {
        Some(b'-') => (-1, &text[1..]),
        Some(b'+') => (1, &text[1..]),
        _ => (1, text),
    }
}

/// YAML 1.1 integers: decimal, `0b`, `0x`, leading-zero octal, `_`
/// separators, sexagesimal (`1:30`). Values beyond i64 stay strings.
fn resolve_int(text: &str) -> Option<Value> {
    let (sign, body) = split_sign(text);
    if body.is_empty() {
        return None;
    }
    let digits = |s: &str, ok: fn(char) -> bool| -> Option<String> {
        if s.is_empty() || !s.chars().all(|c| c == '_' || ok(c)) {
            return None;
        }
        let d: String = s.chars().filter(|c| *c != '_').collect();
        if d.is_empty() {
            None
        } else {
            Some(d)
        }
    };
    let magnitude = if let Some(rest) = body.strip_prefix("0b") {
        i64::from_str_radix(&digits(rest, |c| c == '0' || c == '1')?, 2).ok()?
    } else if let Some(rest) = body.strip_prefix("0x") {
        i64::from_str_radix(&digits(rest, |c| c.is_ascii_hexdigit())?, 16).ok()?
    } else if body.len() > 1 && body.starts_with('0') {
        i64::from_str_radix(&digits(&body[1..], |c| ('0'..='7').contains(&c))?, 8).ok()?
    } else if body.contains(':') {
        let mut parts = body.split(':');
        let first = parts.next()?;
        if first.starts_with('0') && first != "0" {
            return None;
        }
        let mut total: i64 = digits(first, |c| c.is_ascii_digit())?.parse().ok()?;
        for part in parts {
            if part.is_empty() || part.len() > 2 || !part.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let v: i64 = part.parse().ok()?;
            if v > 59 {
                return None;
            }
            total = total.checked_mul(60)?.checked_add(v)?;
        }
        total
    } else {
        if !body.starts_with(|c: char| c.is_ascii_digit()) {
            return None;
        }
        digits(body, |c| c.is_ascii_digit())?.parse().ok()?
    };
    Some(Value::Int(sign * magnitude))
}

/// YAML 1.1 floats as PyYAML matches them: a `.` is required (`1.5`,
/// `1.`, `.5`, `1.5e+3`), or `.inf`/`.nan`.
fn resolve_float(text: &str) -> Option<Value> {
    let (sign, body) = split_sign(text);
    match body {
        ".inf" | ".Inf" | ".INF" => return Some(Value::Float(sign as f64 * f64::INFINITY)),
        ".nan" | ".NaN" | ".NAN" if sign == 1 && !text.starts_with('+') => {
            return Some(Value::Float(f64::NAN))
        }
        _ => {}
    }
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (int_part, frac_part) = mantissa.split_once('.')?;
    let int_ok = int_part.is_empty()
        || (int_part.starts_with(|c: char| c.is_ascii_digit())
            && int_part.chars().all(|c| c.is_ascii_digit() || c == '_'));
    let frac_ok = frac_part.chars().all(|c| c.is_ascii_digit() || c == '_');
    if !int_ok || !frac_ok {
        return None;
    }
    if int_part.is_empty() && !frac_part.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    if let Some(exp) = exponent {
        let digits = exp.strip_prefix(['+', '-'])?;
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
    }
    let cleaned: String = body.chars().filter(|c| *c != '_').collect();
    let cleaned = if cleaned.starts_with('.') {
        format!("0{cleaned}")
    } else {
        cleaned
    };
    cleaned
        .parse::<f64>()
        .ok()
        .map(|v| Value::Float(sign as f64 * v))
}

#[cfg(test)]
#[path = "yaml_tests.rs"]
mod tests;
