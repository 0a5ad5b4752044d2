//! Reading known keys out of a record, with upstream's `d.get(key, default)`
//! semantics and type checks.
use super::json::{self, JsonObject, JsonValue};
use super::{ModelError, WireForm};

/// A decoded JSON object being read into a record.
pub(crate) struct Fields<'a> {
    record: &'static str,
    id: &'a str,
    obj: JsonObject,
}

impl<'a> Fields<'a> {
    /// Parse `data`, which must hold a JSON object.
    pub(crate) fn parse(
        record: &'static str,
        id: &'a str,
        data: &[u8],
    ) -> Result<Self, ModelError> {
        let value = json::parse(data).map_err(|source| ModelError::Json {
            record,
            id: id.to_owned(),
            source,
        })?;
        match value {
            JsonValue::Object(obj) => Ok(Self { record, id, obj }),
            other => Err(ModelError::NotObject {
                record,
                id: id.to_owned(),
                found: other.kind(),
            }),
        }
    }

    pub(crate) fn wrong(&self, key: &str, expected: &'static str, found: &JsonValue) -> ModelError {
        let found = match found {
            JsonValue::String(s) => format!("{:?}", s),
            other => other.kind().to_owned(),
        };
        ModelError::WrongType {
            record: self.record,
            id: self.id.to_owned(),
            key: key.to_owned(),
            expected,
            found,
        }
    }

    /// The raw value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&JsonValue> {
        self.obj.get(key)
    }

    /// Whether `key` is present (even as `null`).
    pub(crate) fn has(&self, key: &str) -> bool {
        self.obj.contains_key(key)
    }

    /// `d.get(key)` for a string: missing or `null` is `None`.
    pub(crate) fn opt_str(&self, key: &str) -> Result<Option<String>, ModelError> {
        match self.get(key) {
            None | Some(JsonValue::Null) => Ok(None),
            Some(JsonValue::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.wrong(key, "a string or null", other)),
        }
    }

    /// `d.get(key, default)` for a string: missing is `default`, `null` is
    /// `None`.
    pub(crate) fn str_or(&self, key: &str, default: &str) -> Result<Option<String>, ModelError> {
        if self.has(key) {
            self.opt_str(key)
        } else {
            Ok(Some(default.to_owned()))
        }
    }

    /// A float that may have been written as an integer (remembered).
    pub(crate) fn time(
        &self,
        key: &'static str,
        wire: &mut WireForm,
    ) -> Result<Option<f64>, ModelError> {
        match self.get(key) {
            None | Some(JsonValue::Null) => Ok(None),
            Some(JsonValue::Float(f)) => Ok(Some(*f)),
            Some(JsonValue::Int(i)) => {
                wire.remember_int(key, *i);
                Ok(Some(*i as f64))
            }
            Some(other) => Err(self.wrong(key, "a number or null", other)),
        }
    }

    /// An integer or `null`.
    pub(crate) fn opt_int(&self, key: &str) -> Result<Option<i64>, ModelError> {
        match self.get(key) {
            None | Some(JsonValue::Null) => Ok(None),
            Some(v @ JsonValue::Int(i)) => i64::try_from(*i)
                .map(Some)
                .map_err(|_| self.wrong(key, "a 64-bit integer", v)),
            Some(other) => Err(self.wrong(key, "an integer or null", other)),
        }
    }

    /// `d.get(key, default)` for an integer; `null` is remembered and read
    /// as `default`.
    pub(crate) fn int_or(
        &self,
        key: &'static str,
        default: i64,
        wire: &mut WireForm,
    ) -> Result<i64, ModelError> {
        if matches!(self.get(key), Some(JsonValue::Null)) {
            wire.remember_null(key);
        }
        Ok(self.opt_int(key)?.unwrap_or(default))
    }

    /// `d.get(key, default)` for a boolean; `null` is remembered and read as
    /// `false` (Python's truth value of `None`).
    pub(crate) fn bool_or(
        &self,
        key: &'static str,
        default: bool,
        wire: &mut WireForm,
    ) -> Result<bool, ModelError> {
        match self.get(key) {
            None => Ok(default),
            Some(JsonValue::Null) => {
                wire.remember_null(key);
                Ok(false)
            }
            Some(JsonValue::Bool(b)) => Ok(*b),
            Some(other) => Err(self.wrong(key, "a boolean", other)),
        }
    }

    /// A list of strings: missing is empty, `null` is remembered and read as
    /// empty.
    pub(crate) fn str_list(
        &self,
        key: &'static str,
        wire: &mut WireForm,
    ) -> Result<Vec<String>, ModelError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(JsonValue::Null) => {
                wire.remember_null(key);
                Ok(Vec::new())
            }
            Some(JsonValue::Array(items)) => self.strings(key, items),
            Some(other) => Err(self.wrong(key, "a list of strings", other)),
        }
    }

    pub(crate) fn strings(
        &self,
        key: &str,
        items: &[JsonValue],
    ) -> Result<Vec<String>, ModelError> {
        items
            .iter()
            .map(|item| match item {
                JsonValue::String(s) => Ok(s.clone()),
                other => Err(self.wrong(key, "a list of strings", other)),
            })
            .collect()
    }

    /// An object or `null`.
    pub(crate) fn opt_object(&self, key: &str) -> Result<Option<JsonObject>, ModelError> {
        match self.get(key) {
            None | Some(JsonValue::Null) => Ok(None),
            Some(JsonValue::Object(o)) => Ok(Some(o.clone())),
            Some(other) => Err(self.wrong(key, "an object or null", other)),
        }
    }

    /// Any value; missing is `None`, and so is `null`.
    pub(crate) fn opt_value(&self, key: &str) -> Option<JsonValue> {
        match self.get(key) {
            None | Some(JsonValue::Null) => None,
            Some(v) => Some(v.clone()),
        }
    }

    /// `state` and `state_time`, as upstream's `updateFromDict`: a state
    /// without a `state_time` is stamped with the current time (upstream's
    /// state setter does that). `null` state is read as no state.
    pub(crate) fn state_and_time<S: std::str::FromStr>(
        &self,
        expected: &'static str,
        wire: &mut WireForm,
    ) -> Result<(Option<S>, Option<f64>), ModelError> {
        let state = match self.get("state") {
            None | Some(JsonValue::Null) => None,
            Some(v @ JsonValue::String(s)) => {
                Some(s.parse().map_err(|_| self.wrong("state", expected, v))?)
            }
            Some(other) => return Err(self.wrong("state", expected, other)),
        };
        let mut time = self.time("state_time", wire)?;
        if state.is_some() && !self.has("state_time") {
            time = Some(super::now());
        }
        Ok((state, time))
    }

    /// The keys not in `known`, in their order.
    pub(crate) fn extra(self, known: &[&str]) -> JsonObject {
        self.obj
            .into_iter()
            .filter(|(k, _)| !known.contains(&k.as_str()))
            .collect()
    }
}
