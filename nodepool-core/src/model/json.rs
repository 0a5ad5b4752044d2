//! JSON values as Python's `json` module reads and writes them.
//!
//! Upstream nodepool stores `json.dumps(obj.toDict())` in ZooKeeper. To write
//! the same bytes we need Python's number model (integers of any size stay
//! integers; floats are written as `repr(float)`), its string escaping
//! (`ensure_ascii`) and its separators (`", "`, `": "`). `serde_json::Value`
//! cannot hold a 128-bit integer (Zuul writes trace ids that large) without a
//! crate-wide feature, so this module has its own small value type, parser
//! ([`parse`]) and writer ([`JsonValue::to_python_json`]).

mod read;
mod write;

pub use read::{parse, ParseError};
pub use write::{python_float_repr, JsonWriter};

/// A JSON value, with Python's distinction between integers and floats.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonValue {
    /// `null` (Python `None`).
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits in an `i128`.
    Int(i128),
    /// A larger integer, as its canonical decimal text (`-?[1-9][0-9]*`).
    BigInt(String),
    /// A float (Python `float`); NaN and infinities are allowed, as in Python.
    Float(f64),
    /// A string.
    String(String),
    /// A list.
    Array(Vec<JsonValue>),
    /// An object, keys in insertion order.
    Object(JsonObject),
}

impl JsonValue {
    /// What kind of value this is, for error messages ("a string", ...).
    pub fn kind(&self) -> &'static str {
        match self {
            JsonValue::Null => "null",
            JsonValue::Bool(_) => "a boolean",
            JsonValue::Int(_) | JsonValue::BigInt(_) => "an integer",
            JsonValue::Float(_) => "a float",
            JsonValue::String(_) => "a string",
            JsonValue::Array(_) => "a list",
            JsonValue::Object(_) => "an object",
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            JsonValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is one that fits in an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            JsonValue::Int(i) => i64::try_from(*i).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is a number (integers are converted).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            JsonValue::Int(i) => Some(*i as f64),
            JsonValue::BigInt(s) => s.parse().ok(),
            JsonValue::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The object, if this is one.
    pub fn as_object(&self) -> Option<&JsonObject> {
        match self {
            JsonValue::Object(o) => Some(o),
            _ => None,
        }
    }

    /// Python's truthiness: `None`, `False`, `0`, `0.0`, `""`, `[]`, `{}`
    /// are false.
    pub fn is_truthy(&self) -> bool {
        match self {
            JsonValue::Null => false,
            JsonValue::Bool(b) => *b,
            JsonValue::Int(i) => *i != 0,
            JsonValue::BigInt(_) => true,
            JsonValue::Float(f) => *f != 0.0,
            JsonValue::String(s) => !s.is_empty(),
            JsonValue::Array(a) => !a.is_empty(),
            JsonValue::Object(o) => !o.is_empty(),
        }
    }

    /// The value as a `serde_json::Value` (integers beyond 64 bits become
    /// floats, NaN and infinities `null`: serde_json has no room for them).
    pub fn to_serde_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            JsonValue::Null => Value::Null,
            JsonValue::Bool(b) => Value::Bool(*b),
            JsonValue::Int(i) => i64::try_from(*i)
                .map(Value::from)
                .or_else(|_| u64::try_from(*i).map(Value::from))
                .unwrap_or_else(|_| float_value(*i as f64)),
            JsonValue::BigInt(s) => float_value(s.parse().unwrap_or(f64::NAN)),
            JsonValue::Float(f) => float_value(*f),
            JsonValue::String(s) => Value::String(s.clone()),
            JsonValue::Array(a) => Value::Array(a.iter().map(JsonValue::to_serde_json).collect()),
            JsonValue::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| (k.clone(), v.to_serde_json()))
                    .collect(),
            ),
        }
    }

    /// Encode as Python's `json.dumps(value, sort_keys=sort_keys)` does.
    pub fn to_python_json(&self, sort_keys: bool) -> String {
        let mut out = String::new();
        write::write_value(&mut out, self, sort_keys);
        out
    }
}

/// A float as a `serde_json::Value`; `null` for NaN and infinities.
fn float_value(f: f64) -> serde_json::Value {
    serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

impl From<&str> for JsonValue {
    fn from(s: &str) -> Self {
        JsonValue::String(s.to_owned())
    }
}

impl From<String> for JsonValue {
    fn from(s: String) -> Self {
        JsonValue::String(s)
    }
}

impl From<i64> for JsonValue {
    fn from(i: i64) -> Self {
        JsonValue::Int(i.into())
    }
}

impl From<f64> for JsonValue {
    fn from(f: f64) -> Self {
        JsonValue::Float(f)
    }
}

impl From<bool> for JsonValue {
    fn from(b: bool) -> Self {
        JsonValue::Bool(b)
    }
}

impl From<JsonObject> for JsonValue {
    fn from(o: JsonObject) -> Self {
        JsonValue::Object(o)
    }
}

impl From<serde_json::Value> for JsonValue {
    fn from(v: serde_json::Value) -> Self {
        match v {
            serde_json::Value::Null => JsonValue::Null,
            serde_json::Value::Bool(b) => JsonValue::Bool(b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    JsonValue::Int(i.into())
                } else if let Some(u) = n.as_u64() {
                    JsonValue::Int(u.into())
                } else {
                    JsonValue::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            serde_json::Value::String(s) => JsonValue::String(s),
            serde_json::Value::Array(a) => {
                JsonValue::Array(a.into_iter().map(JsonValue::from).collect())
            }
            serde_json::Value::Object(o) => JsonValue::Object(
                o.into_iter()
                    .map(|(k, v)| (k, JsonValue::from(v)))
                    .collect(),
            ),
        }
    }
}

/// A JSON object that keeps its keys in insertion order, as a Python `dict`
/// does. Setting an existing key replaces the value in place.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JsonObject {
    entries: Vec<(String, JsonValue)>,
}

impl JsonObject {
    /// An empty object.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&JsonValue> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Set `key`: an existing key keeps its position, a new one goes last.
    /// Returns the previous value.
    pub fn insert(
        &mut self,
        key: impl Into<String>,
        value: impl Into<JsonValue>,
    ) -> Option<JsonValue> {
        let key = key.into();
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some((_, old)) => Some(std::mem::replace(old, value)),
            None => {
                self.entries.push((key, value));
                None
            }
        }
    }

    /// Remove `key`, keeping the order of the others.
    pub fn remove(&mut self, key: &str) -> Option<JsonValue> {
        let pos = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(pos).1)
    }

    /// Keys and values in order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &JsonValue)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// Keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.entries.iter().map(|(k, _)| k)
    }
}

impl FromIterator<(String, JsonValue)> for JsonObject {
    fn from_iter<I: IntoIterator<Item = (String, JsonValue)>>(iter: I) -> Self {
        let mut o = JsonObject::new();
        for (k, v) in iter {
            o.insert(k, v);
        }
        o
    }
}

impl IntoIterator for JsonObject {
    type Item = (String, JsonValue);
    type IntoIter = std::vec::IntoIter<(String, JsonValue)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

#[cfg(test)]
mod tests;
