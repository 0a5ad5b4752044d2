//! The records nodepool keeps in its store, with the JSON upstream nodepool
//! 11.0.0 writes to ZooKeeper.
//!
//! Each record has `to_json` and `from_json`. The bytes are those of
//! upstream's `json.dumps(obj.toDict())`: the same keys in the same order,
//! the same defaults when decoding, Python's number and string formatting
//! (see [`json`]). Two deliberate differences:
//! - keys we do not know are kept in `extra` and written back after the
//!   known ones, in their input order (upstream drops them);
//! - an integer where we hold a float (`state_time` written as `1700000000`
//!   by another writer) or a `null` where we hold a list is remembered in the
//!   record's [`WireForm`] and written back the same way.
//!
//! The golden tests (nodepool-core/tests/golden_model.rs) compare
//! with documents written by upstream's own code (tests/golden/).

mod component;
mod decode;
#[cfg(test)]
mod fuzz_tests;
mod image;
pub mod json;
mod node;
mod request;

pub use component::*;
pub use image::*;
pub use node::*;
pub use request::*;

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the epoch, as Python's `time.time()` (what upstream
/// stores in `state_time` and `created_time`).
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A state name that is not one of the enum's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} state {value:?}")]
pub struct UnknownState {
    /// Which state enum ("node", "request", ...).
    pub kind: &'static str,
    /// The name given.
    pub value: String,
}

/// Defines a state enum spelled as upstream spells it, with `ALL`,
/// `as_str`, `Display` and `FromStr`.
macro_rules! state_enum {
    (
        $(#[$meta:meta])*
        $name:ident ($kind:literal) {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize,
            serde::Deserialize,
        )]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            /// Every state.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The name upstream writes ("in-use", ...).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::model::UnknownState;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::model::UnknownState {
                        kind: $kind,
                        value: s.to_owned(),
                    }),
                }
            }
        }
    };
}
pub(crate) use state_enum;

/// A record that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The bytes are not a JSON document.
    #[error("{record} {id}: not valid JSON: {source}")]
    Json {
        /// The kind of record ("node", "node request", ...).
        record: &'static str,
        /// Its id.
        id: String,
        /// The parse error.
        #[source]
        source: json::ParseError,
    },
    /// The document is not a JSON object.
    #[error("{record} {id}: expected a JSON object, found {found}")]
    NotObject {
        /// The kind of record.
        record: &'static str,
        /// Its id.
        id: String,
        /// What was found instead.
        found: &'static str,
    },
    /// A known key has a value of the wrong type or an invalid value.
    #[error("{record} {id}: {key:?} must be {expected}, found {found}")]
    WrongType {
        /// The kind of record.
        record: &'static str,
        /// Its id.
        id: String,
        /// The key.
        key: String,
        /// What it must be.
        expected: &'static str,
        /// What it is.
        found: String,
    },
}

impl ModelError {
    /// The kind of record ("node", "node request", "image build", "image
    /// upload", "component").
    pub fn record(&self) -> &'static str {
        match self {
            ModelError::Json { record, .. }
            | ModelError::NotObject { record, .. }
            | ModelError::WrongType { record, .. } => record,
        }
    }

    /// The id of the record.
    pub fn id(&self) -> &str {
        match self {
            ModelError::Json { id, .. }
            | ModelError::NotObject { id, .. }
            | ModelError::WrongType { id, .. } => id,
        }
    }

    /// This error as [`crate::Error::Corrupt`] for the record at `path`.
    pub fn corrupt_at(self, path: impl Into<String>) -> crate::Error {
        crate::Error::Corrupt {
            path: path.into(),
            message: self.to_string(),
        }
    }
}

impl From<ModelError> for crate::Error {
    fn from(e: ModelError) -> Self {
        let path = format!("{} {}", e.record(), e.id());
        e.corrupt_at(path)
    }
}

/// How values were written by another writer where our field types cannot
/// say it, kept so that re-encoding writes them back unchanged: an integer
/// in a float field (`"state_time": 1700000000`), or `null` in a field we
/// hold as a list, number or boolean (`"nodes": null`). Leave it at its
/// default for records you create.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WireForm {
    ints: Vec<(&'static str, i128)>,
    nulls: Vec<&'static str>,
    /// A string field that was written as a mapping (upstream's aws
    /// driver writes a node's `external_id` as `{"instance": ..., "host":
    /// ...}`): the mapping, and the value our field holds for it.
    mappings: Vec<(&'static str, json::JsonObject, String)>,
}

impl WireForm {
    /// Whether nothing was remembered.
    pub fn is_plain(&self) -> bool {
        self.ints.is_empty() && self.nulls.is_empty() && self.mappings.is_empty()
    }

    pub(crate) fn remember_int(&mut self, key: &'static str, value: i128) {
        self.ints.push((key, value));
    }

    pub(crate) fn remember_null(&mut self, key: &'static str) {
        self.nulls.push(key);
    }

    /// The integer `key` was written as, if it still has that value.
    pub(crate) fn int_for(&self, key: &str, value: Option<f64>) -> Option<i128> {
        let value = value?;
        self.ints
            .iter()
            .find(|(k, i)| *k == key && *i as f64 == value)
            .map(|(_, i)| *i)
    }

    pub(crate) fn was_null(&self, key: &str) -> bool {
        self.nulls.contains(&key)
    }

    pub(crate) fn remember_mapping(
        &mut self,
        key: &'static str,
        mapping: json::JsonObject,
        held: String,
    ) {
        self.mappings.push((key, mapping, held));
    }

    /// The mapping `key` was written as, if our field still holds the value
    /// read from it.
    pub(crate) fn mapping_for(&self, key: &str, value: Option<&str>) -> Option<&json::JsonObject> {
        let value = value?;
        self.mappings
            .iter()
            .find(|(k, _, held)| *k == key && held == value)
            .map(|(_, m, _)| m)
    }
}

/// Writes a float field the way it was read: as the integer it was, if the
/// value did not change, otherwise as Python writes a float.
pub(crate) fn write_time(
    w: &mut json::JsonWriter,
    wire: &WireForm,
    key: &'static str,
    value: Option<f64>,
) {
    match wire.int_for(key, value) {
        Some(i) => {
            w.value(key, &json::JsonValue::Int(i));
        }
        None => {
            w.opt_float(key, value);
        }
    }
}

/// Writes a list field, or `null` if it was `null` and is still empty.
pub(crate) fn write_list(
    w: &mut json::JsonWriter,
    wire: &WireForm,
    key: &'static str,
    value: &[String],
) {
    if value.is_empty() && wire.was_null(key) {
        w.null(key);
    } else {
        w.str_list(key, value);
    }
}
