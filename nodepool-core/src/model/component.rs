//! Component registry records (`/nodepool/components/<kind>/<name>`).
//!
//! Upstream writes a component's `content` dict with
//! `json.dumps(content, sort_keys=True)` and keeps every key it reads, so
//! our output has all keys sorted, unknown ones included.
use super::decode::Fields;
use super::json::{JsonObject, JsonValue};
use super::{state_enum, ModelError};

state_enum! {
    /// The state of a component.
    ComponentState ("component") {
        /// Starting.
        Initializing => "initializing",
        /// Running.
        Running => "running",
        /// Paused (a pool that cannot take requests).
        Paused => "paused",
        /// Stopped (the initial state).
        Stopped => "stopped",
    }
}

/// Kind of a launcher process.
pub const LAUNCHER: &str = "launcher";
/// Kind of a builder process.
pub const BUILDER: &str = "builder";
/// Kind of a provider pool within a launcher.
pub const POOL: &str = "pool";

/// A registered component: a launcher, a builder, or a provider pool of a
/// launcher (upstream's `LauncherComponent`, `BuilderComponent`,
/// `PoolComponent`).
///
/// The pool keys (`id`, `name`, `provider_name`, `supported_labels`,
/// `priority`, `paused`) are always written for kind [`POOL`] (`None` as
/// `null`), and for other kinds only when set.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    /// Kind ("launcher", "builder", "pool"), from the path; also written as
    /// the `kind` key.
    pub kind: String,
    /// The znode name (`"<hostname><sequence>"`), not serialized.
    pub name: String,
    /// Hostname (read default: the znode name, as upstream's registry does).
    pub hostname: Option<String>,
    /// State.
    pub state: ComponentState,
    /// Software version.
    pub version: Option<String>,
    /// Data model API version.
    pub model_api: i64,
    /// Pool: the launcher id ("hostname-pid-provider-pool").
    pub id: Option<String>,
    /// Pool: the pool's name (JSON key `name`).
    pub pool_name: Option<String>,
    /// Pool: the provider's name.
    pub provider_name: Option<String>,
    /// Pool: the labels it can launch.
    pub supported_labels: Option<Vec<String>>,
    /// Pool: its priority (lower first; default 100).
    pub priority: Option<i64>,
    /// Pool: whether it is paused.
    pub paused: Option<bool>,
    /// Keys we do not know (and a `kind` key that differs from the path's).
    pub extra: JsonObject,
}

impl Component {
    /// A component as upstream's constructor makes it: state `stopped`,
    /// model API 0, and for kind [`POOL`] the pool defaults (no labels,
    /// priority 100, not paused).
    pub fn new(kind: impl Into<String>, hostname: impl Into<String>) -> Self {
        let kind = kind.into();
        let pool = kind == POOL;
        Self {
            kind,
            name: String::new(),
            hostname: Some(hostname.into()),
            state: ComponentState::Stopped,
            version: None,
            model_api: 0,
            id: None,
            pool_name: None,
            provider_name: None,
            supported_labels: pool.then(Vec::new),
            priority: pool.then_some(100),
            paused: pool.then_some(false),
            extra: JsonObject::new(),
        }
    }

    fn content(&self) -> JsonObject {
        let pool = self.kind == POOL;
        let mut c = JsonObject::new();
        let opt = |v: Option<JsonValue>| v.unwrap_or(JsonValue::Null);
        c.insert("hostname", opt(self.hostname.clone().map(JsonValue::from)));
        c.insert("state", self.state.as_str());
        c.insert("kind", self.kind.as_str());
        c.insert("version", opt(self.version.clone().map(JsonValue::from)));
        c.insert("model_api", self.model_api);
        let labels = self
            .supported_labels
            .as_ref()
            .map(|l| JsonValue::Array(l.iter().map(|s| JsonValue::from(s.as_str())).collect()));
        let pool_keys = [
            ("id", self.id.clone().map(JsonValue::from)),
            ("name", self.pool_name.clone().map(JsonValue::from)),
            (
                "provider_name",
                self.provider_name.clone().map(JsonValue::from),
            ),
            ("supported_labels", labels),
            ("priority", self.priority.map(JsonValue::from)),
            ("paused", self.paused.map(JsonValue::from)),
        ];
        for (key, value) in pool_keys {
            if pool || value.is_some() {
                c.insert(key, opt(value));
            }
        }
        for (k, v) in self.extra.iter() {
            c.insert(k.clone(), v.clone());
        }
        c
    }

    /// The bytes upstream writes for this component (all keys sorted).
    pub fn to_json(&self) -> Vec<u8> {
        JsonValue::Object(self.content())
            .to_python_json(true)
            .into_bytes()
    }

    /// Decode the component `name`, taking its kind from the record's own
    /// `kind` key (empty if it has none); see
    /// [`from_json_at`](Self::from_json_at) when the kind is known from the
    /// path.
    pub fn from_json(name: &str, data: &[u8]) -> Result<Self, ModelError> {
        let f = Fields::parse("component", name, data)?;
        let kind = f
            .get("kind")
            .and_then(JsonValue::as_str)
            .unwrap_or("")
            .to_owned();
        Self::decode(&kind, name, f)
    }

    /// Decode the component `name` of `kind` (from its path
    /// `/nodepool/components/<kind>/<name>`), with upstream's defaults.
    pub fn from_json_at(kind: &str, name: &str, data: &[u8]) -> Result<Self, ModelError> {
        Self::decode(kind, name, Fields::parse("component", name, data)?)
    }

    fn decode(kind: &str, name: &str, f: Fields<'_>) -> Result<Self, ModelError> {
        let pool = kind == POOL;
        let mut c = Component::new(kind, name);
        c.name = name.to_owned();
        if f.has("hostname") {
            c.hostname = f.opt_str("hostname")?;
        }
        if let Some(v) = f.get("state") {
            c.state = match v.as_str().map(str::parse) {
                Some(Ok(state)) => state,
                _ => return Err(f.wrong("state", "a component state", v)),
            };
        }
        c.version = f.opt_str("version")?;
        if let Some(v) = f.get("model_api") {
            c.model_api = v
                .as_i64()
                .ok_or_else(|| f.wrong("model_api", "an integer", v))?;
        }
        let mut known: Vec<&str> = vec!["hostname", "state", "version", "model_api"];
        if f.get("kind").and_then(JsonValue::as_str) == Some(kind) {
            known.push("kind");
        }
        // Pool keys: for a pool, missing keys keep the defaults and null is
        // None; for other kinds a present, non-null key is read, anything
        // else stays in `extra`.
        let readable = |key: &str| {
            if pool {
                f.has(key)
            } else {
                !matches!(f.get(key), None | Some(JsonValue::Null))
            }
        };
        if readable("id") {
            c.id = f.opt_str("id")?;
            known.push("id");
        }
        if readable("name") {
            c.pool_name = f.opt_str("name")?;
            known.push("name");
        }
        if readable("provider_name") {
            c.provider_name = f.opt_str("provider_name")?;
            known.push("provider_name");
        }
        if readable("supported_labels") {
            c.supported_labels = match f.get("supported_labels") {
                Some(JsonValue::Array(items)) => Some(f.strings("supported_labels", items)?),
                Some(JsonValue::Null) => None,
                Some(other) => return Err(f.wrong("supported_labels", "a list of strings", other)),
                None => c.supported_labels,
            };
            known.push("supported_labels");
        }
        if readable("priority") {
            c.priority = f.opt_int("priority")?;
            known.push("priority");
        }
        if readable("paused") {
            c.paused = match f.get("paused") {
                Some(JsonValue::Bool(b)) => Some(*b),
                Some(JsonValue::Null) => None,
                Some(other) => return Err(f.wrong("paused", "a boolean", other)),
                None => c.paused,
            };
            known.push("paused");
        }
        c.extra = f.extra(&known);
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launcher_has_no_pool_keys_unless_set() {
        let mut c = Component::new(LAUNCHER, "h");
        let plain = String::from_utf8(c.to_json()).expect("utf8");
        assert_eq!(
            plain,
            r#"{"hostname": "h", "kind": "launcher", "model_api": 0, "state": "stopped", "version": null}"#
        );
        c.priority = Some(5);
        assert!(String::from_utf8_lossy(&c.to_json()).contains("\"priority\": 5"));
    }

    #[test]
    fn foreign_kind_key_is_kept() {
        let c = Component::from_json_at(BUILDER, "b1", br#"{"kind": "other"}"#).expect("valid");
        assert_eq!(c.kind, BUILDER);
        assert!(String::from_utf8_lossy(&c.to_json()).contains("\"kind\": \"other\""));
        let c = Component::from_json("p1", br#"{"kind": "pool"}"#).expect("valid");
        assert_eq!((c.kind.as_str(), c.priority), (POOL, Some(100)));
    }

    #[test]
    fn bad_component_state_is_an_error() {
        assert!(Component::from_json_at(POOL, "p", br#"{"state": "dancing"}"#).is_err());
        assert!(Component::from_json_at(POOL, "p", br#"{"paused": "yes"}"#).is_err());
    }
}
