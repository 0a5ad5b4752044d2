//! Node requests (`/nodepool/requests/<priority>-<sequence>`).
use super::decode::Fields;
use super::json::{JsonObject, JsonValue, JsonWriter};
use super::{state_enum, write_list, write_time, ModelError, WireForm};

state_enum! {
    /// The state of a node request.
    RequestState ("request") {
        /// Submitted, not yet taken.
        Requested => "requested",
        /// Accepted by a launcher, nodes being prepared.
        Pending => "pending",
        /// All nodes allocated.
        Fulfilled => "fulfilled",
        /// Failed.
        Failed => "failed",
    }
}

/// The keys upstream's `NodeRequest.toDict` writes, in its order.
const KNOWN: &[&str] = &[
    "state",
    "state_time",
    "declined_by",
    "node_types",
    "nodes",
    "reuse",
    "requestor",
    "requestor_data",
    "provider",
    "relative_priority",
    "event_id",
    "created_time",
    "tenant_name",
];

/// A request for nodes by label.
///
/// `NodeRequest::default()` is upstream's `NodeRequest()`: `reuse` true,
/// relative priority 0, everything else empty or unset.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRequest {
    /// `"<priority>-<sequence>"`, e.g. "100-0000000001": the znode name, not
    /// serialized.
    pub id: String,
    /// State.
    pub state: Option<RequestState>,
    /// Time of the last state change.
    pub state_time: Option<f64>,
    /// Launchers (as "hostname-pid-provider-pool" ids) that declined it.
    pub declined_by: Vec<String>,
    /// The labels asked for, one node each.
    pub node_types: Vec<String>,
    /// The node ids given to it.
    pub nodes: Vec<String>,
    /// Whether ready nodes may be reused.
    pub reuse: bool,
    /// Who asked.
    pub requestor: Option<String>,
    /// Opaque data of the requestor (Zuul keeps its build set, job and
    /// tracing data here), written back unchanged.
    pub requestor_data: Option<JsonValue>,
    /// The provider the requestor would like the nodes from.
    pub provider: Option<String>,
    /// Priority within the same precedence (lower first).
    pub relative_priority: i64,
    /// The requestor's event id (for logs).
    pub event_id: Option<String>,
    /// When it was submitted (seconds since the epoch).
    pub created_time: Option<f64>,
    /// The tenant it is for.
    pub tenant_name: Option<String>,
    /// Keys we do not know, written back after the known ones.
    pub extra: JsonObject,
    /// How values were written where our types cannot say it.
    pub wire: WireForm,
}

impl Default for NodeRequest {
    fn default() -> Self {
        Self {
            id: String::new(),
            state: None,
            state_time: None,
            declined_by: Vec::new(),
            node_types: Vec::new(),
            nodes: Vec::new(),
            reuse: true,
            requestor: None,
            requestor_data: None,
            provider: None,
            relative_priority: 0,
            event_id: None,
            created_time: None,
            tenant_name: None,
            extra: JsonObject::new(),
            wire: WireForm::default(),
        }
    }
}

impl NodeRequest {
    /// A new request for one node of each of `labels`, in state
    /// `requested`, stamped now.
    pub fn new<I, S>(labels: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut request = Self {
            node_types: labels.into_iter().map(Into::into).collect(),
            ..Self::default()
        };
        request.set_state(RequestState::Requested);
        request
    }

    /// The attributes a user's template may read (upstream's
    /// `getSafeAttributes`, what `dynamic-instance-properties` format
    /// with): `id`, `labels`, `requestor`, `requestor_data`,
    /// `relative_priority`, `event_id`, `created_time`, `tenant_name`.
    pub fn safe_attributes(&self) -> serde_json::Value {
        let opt_str = |s: &Option<String>| s.clone().map_or(serde_json::Value::Null, Into::into);
        serde_json::json!({
            "id": self.id,
            "labels": self.node_types,
            "requestor": opt_str(&self.requestor),
            "requestor_data": self
                .requestor_data
                .as_ref()
                .map_or(serde_json::Value::Null, JsonValue::to_serde_json),
            "relative_priority": self.relative_priority,
            "event_id": opt_str(&self.event_id),
            "created_time": self.created_time,
            "tenant_name": opt_str(&self.tenant_name),
        })
    }

    /// Change the state and set `state_time` to now, as upstream's state
    /// setter does.
    pub fn set_state(&mut self, state: RequestState) {
        self.state = Some(state);
        self.state_time = Some(super::now());
    }

    /// The order in which launchers take requests, as upstream's `priority`
    /// property: (precedence, relative priority, sequence), from the id
    /// `"<precedence>-<sequence>"`. An id without `-` gives an empty
    /// precedence and the whole id as sequence.
    pub fn priority_key(&self) -> (&str, i64, &str) {
        match self.id.split_once('-') {
            Some((precedence, sequence)) => (precedence, self.relative_priority, sequence),
            None => ("", self.relative_priority, self.id.as_str()),
        }
    }

    /// The bytes upstream would write for this request, followed by the
    /// [`extra`](Self::extra) keys.
    pub fn to_json(&self) -> Vec<u8> {
        let wire = &self.wire;
        let mut w = JsonWriter::new();
        w.opt_str("state", self.state.map(RequestState::as_str));
        write_time(&mut w, wire, "state_time", self.state_time);
        write_list(&mut w, wire, "declined_by", &self.declined_by);
        write_list(&mut w, wire, "node_types", &self.node_types);
        write_list(&mut w, wire, "nodes", &self.nodes);
        if !self.reuse && wire.was_null("reuse") {
            w.null("reuse");
        } else {
            w.bool("reuse", self.reuse);
        }
        w.opt_str("requestor", self.requestor.as_deref())
            .opt_value("requestor_data", self.requestor_data.as_ref())
            .opt_str("provider", self.provider.as_deref());
        if self.relative_priority == 0 && wire.was_null("relative_priority") {
            w.null("relative_priority");
        } else {
            w.int("relative_priority", self.relative_priority);
        }
        w.opt_str("event_id", self.event_id.as_deref());
        write_time(&mut w, wire, "created_time", self.created_time);
        w.opt_str("tenant_name", self.tenant_name.as_deref())
            .extra(&self.extra);
        w.finish()
    }

    /// Decode a request, with upstream's defaults for missing keys.
    pub fn from_json(id: &str, data: &[u8]) -> Result<Self, ModelError> {
        let f = Fields::parse("node request", id, data)?;
        let mut wire = WireForm::default();
        let (state, state_time) = f.state_and_time("a request state", &mut wire)?;
        Ok(Self {
            id: id.to_owned(),
            state,
            state_time,
            declined_by: f.str_list("declined_by", &mut wire)?,
            node_types: f.str_list("node_types", &mut wire)?,
            nodes: f.str_list("nodes", &mut wire)?,
            reuse: f.bool_or("reuse", true, &mut wire)?,
            requestor: f.opt_str("requestor")?,
            requestor_data: f.opt_value("requestor_data"),
            provider: f.opt_str("provider")?,
            relative_priority: f.int_or("relative_priority", 0, &mut wire)?,
            event_id: f.opt_str("event_id")?,
            created_time: f.time("created_time", &mut wire)?,
            tenant_name: f.opt_str("tenant_name")?,
            extra: f.extra(KNOWN),
            wire,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_key_orders_by_precedence_then_relative_priority_then_sequence() {
        let mut a = NodeRequest::new(["x"]);
        a.id = "100-0000000005".into();
        a.relative_priority = 1;
        let mut b = a.clone();
        b.id = "100-0000000009".into();
        b.relative_priority = 0;
        let mut c = a.clone();
        c.id = "099-0000000010".into();
        c.relative_priority = 5;
        let mut all = [&a, &b, &c];
        all.sort_by(|x, y| x.priority_key().cmp(&y.priority_key()));
        assert_eq!(
            all.map(|r| r.id.as_str()),
            ["099-0000000010", "100-0000000009", "100-0000000005"]
        );
        assert_eq!(a.priority_key(), ("100", 1, "0000000005"));
    }

    #[test]
    fn safe_attributes_are_upstreams_eight_keys() {
        let mut r = NodeRequest::new(["small"]);
        r.id = "100-0000000007".into();
        r.tenant_name = Some("acme".into());
        r.requestor_data = Some(JsonValue::Object(
            [("project".to_string(), JsonValue::from("infra"))]
                .into_iter()
                .collect(),
        ));
        let a = r.safe_attributes();
        let keys: Vec<&str> = a
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(keys.len(), 8, "{keys:?}");
        assert_eq!(a["id"], "100-0000000007");
        assert_eq!(a["labels"][0], "small");
        assert_eq!(a["tenant_name"], "acme");
        assert_eq!(a["requestor_data"]["project"], "infra");
        assert!(a["requestor"].is_null());
        assert!(a["created_time"].is_null());
    }

    #[test]
    fn new_request_is_requested_and_reusable() {
        let r = NodeRequest::new(["a", "b"]);
        assert_eq!(r.state, Some(RequestState::Requested));
        assert!(r.state_time.is_some());
        assert!(r.reuse);
        assert_eq!(r.node_types, ["a", "b"]);
        assert_eq!(RequestState::Fulfilled.to_string(), "fulfilled");
    }

    #[test]
    fn null_reuse_reads_false_and_writes_null() {
        let r = NodeRequest::from_json("100-1", br#"{"reuse": null}"#).expect("valid");
        assert!(!r.reuse);
        assert!(String::from_utf8_lossy(&r.to_json()).contains("\"reuse\": null"));
        assert!(NodeRequest::from_json("100-1", br#"{"reuse": 1}"#).is_err());
    }
}
