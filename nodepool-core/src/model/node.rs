//! Nodes (`/nodepool/nodes/<id>`).
use super::decode::Fields;
use super::json::{JsonObject, JsonValue, JsonWriter};
use super::{state_enum, write_list, write_time, ModelError, WireForm};

state_enum! {
    /// The state of a node, as upstream spells it.
    NodeState ("node") {
        /// Being launched.
        Building => "building",
        /// Being tested (unused by upstream's drivers).
        Testing => "testing",
        /// Ready to be given to a request.
        Ready => "ready",
        /// Locked and used by a requestor.
        InUse => "in-use",
        /// Returned by the requestor; to be deleted.
        Used => "used",
        /// Held for inspection.
        Hold => "hold",
        /// Being deleted.
        Deleting => "deleting",
        /// Launch failed.
        Failed => "failed",
        /// Just created, not yet launching.
        Init => "init",
        /// Launch aborted (quota); to be deleted.
        Aborted => "aborted",
        /// Deleted (transient).
        Deleted => "deleted",
    }
}

/// The keys upstream's `Node.toDict` writes, in its order (`connection_port`
/// once: the second assignment keeps the first position).
const KNOWN: &[&str] = &[
    "state",
    "state_time",
    "cloud",
    "provider",
    "pool",
    "type",
    "allocated_to",
    "az",
    "region",
    "public_ipv4",
    "private_ipv4",
    "public_ipv6",
    "host_id",
    "interface_ip",
    "connection_port",
    "ssh_port",
    "image_id",
    "launcher",
    "created_time",
    "external_id",
    "hostname",
    "comment",
    "user_data",
    "hold_job",
    "host_keys",
    "username",
    "connection_type",
    "shell_type",
    "hold_expiration",
    "resources",
    "slot",
    "attributes",
    "python_path",
    "tenant_name",
    "driver_data",
    "requestor",
    "node_properties",
];

/// The connection details a container node stores as its
/// `connection_port` (upstream's `kubernetes` and `openshiftpods` drivers:
/// `name`, `namespace`, `host`, `skiptls`, `token`, `user`, `ca_crt`,
/// `pod`). `Debug` shows the keys only, so a token never reaches a log.
#[derive(Clone, PartialEq, Default)]
pub struct ConnectionDetails(pub JsonObject);

impl std::fmt::Debug for ConnectionDetails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl ConnectionDetails {
    /// Details from a JSON object (as a driver builds them).
    pub fn from_serde(map: serde_json::Map<String, serde_json::Value>) -> Self {
        Self(
            map.into_iter()
                .map(|(k, v)| (k, JsonValue::from(v)))
                .collect(),
        )
    }

    /// The details as a JSON object, keys in their order.
    pub fn to_serde(&self) -> serde_json::Map<String, serde_json::Value> {
        self.0
            .iter()
            .map(|(k, v)| (k.clone(), v.to_serde_json()))
            .collect()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&JsonValue> {
        self.0.get(key)
    }
}

/// A node: one machine, launched or registered, for one or more labels.
///
/// `Node::default()` is upstream's `Node()`: everything unset except
/// `connection_port` 22, empty `host_keys` and empty `node_properties`.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Sequence id ("0000000001"): the znode name, not serialized.
    pub id: String,
    /// State.
    pub state: Option<NodeState>,
    /// Time of the last state change (seconds since the epoch).
    pub state_time: Option<f64>,
    /// Cloud name (`cloud`).
    pub cloud: Option<String>,
    /// Provider name.
    pub provider: Option<String>,
    /// Pool name.
    pub pool: Option<String>,
    /// Labels this node satisfies (JSON key `type`; old records hold one
    /// string, read as a one-element list).
    pub labels: Vec<String>,
    /// The request this node is allocated to.
    pub allocated_to: Option<String>,
    /// Availability zone.
    pub az: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Public IPv4 address.
    pub public_ipv4: Option<String>,
    /// Private IPv4 address.
    pub private_ipv4: Option<String>,
    /// Public IPv6 address.
    pub public_ipv6: Option<String>,
    /// The cloud's id of the hypervisor host.
    pub host_id: Option<String>,
    /// The address to connect to.
    pub interface_ip: Option<String>,
    /// Port to connect to (written as `connection_port` and `ssh_port`;
    /// read from `connection_port`, else `ssh_port`, else 22).
    pub connection_port: i64,
    /// The mapping upstream's container drivers (`kubernetes`,
    /// `openshiftpods`) store in place of the port number: what the
    /// executor needs to reach the namespace or pod (`name`, `namespace`,
    /// `host`, `skiptls`, `token`, `user`, `ca_crt`, `pod`). When set it is
    /// written as `connection_port` and `ssh_port`, and `connection_port`
    /// (the number) stays 22.
    pub connection_details: Option<ConnectionDetails>,
    /// Image (or build) the node was booted from.
    pub image_id: Option<String>,
    /// The launcher that made it.
    pub launcher: Option<String>,
    /// Creation time (seconds since the epoch).
    pub created_time: Option<f64>,
    /// The cloud's id for the instance.
    pub external_id: Option<String>,
    /// Hostname.
    pub hostname: Option<String>,
    /// Free-form comment (e.g. why it is held).
    pub comment: Option<String>,
    /// Requestor's data about the node's use: a string, or the JSON object
    /// Zuul writes when it sets a node in use (project, job, ...).
    pub user_data: Option<JsonValue>,
    /// The job that holds it.
    pub hold_job: Option<String>,
    /// SSH host keys.
    pub host_keys: Vec<String>,
    /// Login user (read default "zuul").
    pub username: Option<String>,
    /// "ssh", "winrm", "network_cli", ...
    pub connection_type: Option<String>,
    /// Shell type for Ansible.
    pub shell_type: Option<String>,
    /// Seconds a hold lasts; read as Python's `int(value)` (strings that are
    /// no integer read as 0).
    pub hold_expiration: Option<i64>,
    /// Resources it uses (`cores`, `ram`, `instances`, ...).
    pub resources: Option<JsonObject>,
    /// Slot number on a static host.
    pub slot: Option<i64>,
    /// Attributes from the pool's `node-attributes`.
    pub attributes: Option<JsonObject>,
    /// Python interpreter for Ansible.
    pub python_path: Option<String>,
    /// Tenant of the request it was made for.
    pub tenant_name: Option<String>,
    /// Driver-private data.
    pub driver_data: Option<JsonValue>,
    /// Requestor of the request it was made for.
    pub requestor: Option<String>,
    /// Node properties (e.g. `spot`).
    pub node_properties: Option<JsonObject>,
    /// Keys we do not know, written back after the known ones.
    pub extra: JsonObject,
    /// How values were written where our types cannot say it.
    pub wire: WireForm,
}

impl Default for Node {
    fn default() -> Self {
        Self {
            id: String::new(),
            state: None,
            state_time: None,
            cloud: None,
            provider: None,
            pool: None,
            labels: Vec::new(),
            allocated_to: None,
            az: None,
            region: None,
            public_ipv4: None,
            private_ipv4: None,
            public_ipv6: None,
            host_id: None,
            interface_ip: None,
            connection_port: 22,
            connection_details: None,
            image_id: None,
            launcher: None,
            created_time: None,
            external_id: None,
            hostname: None,
            comment: None,
            user_data: None,
            hold_job: None,
            host_keys: Vec::new(),
            username: None,
            connection_type: None,
            shell_type: None,
            hold_expiration: None,
            resources: None,
            slot: None,
            attributes: None,
            python_path: None,
            tenant_name: None,
            driver_data: None,
            requestor: None,
            node_properties: Some(JsonObject::new()),
            extra: JsonObject::new(),
            wire: WireForm::default(),
        }
    }
}

impl Node {
    /// A new node in `state`, stamped now.
    pub fn new(state: NodeState) -> Self {
        let mut node = Self::default();
        node.set_state(state);
        node
    }

    /// Change the state and set `state_time` to now, as upstream's state
    /// setter does.
    pub fn set_state(&mut self, state: NodeState) {
        self.state = Some(state);
        self.state_time = Some(super::now());
    }

    /// The bytes upstream would write for this node, followed by the
    /// [`extra`](Self::extra) keys.
    pub fn to_json(&self) -> Vec<u8> {
        let wire = &self.wire;
        let mut w = JsonWriter::new();
        w.opt_str("state", self.state.map(NodeState::as_str));
        write_time(&mut w, wire, "state_time", self.state_time);
        w.opt_str("cloud", self.cloud.as_deref())
            .opt_str("provider", self.provider.as_deref())
            .opt_str("pool", self.pool.as_deref())
            .str_list("type", &self.labels)
            .opt_str("allocated_to", self.allocated_to.as_deref())
            .opt_str("az", self.az.as_deref())
            .opt_str("region", self.region.as_deref())
            .opt_str("public_ipv4", self.public_ipv4.as_deref())
            .opt_str("private_ipv4", self.private_ipv4.as_deref())
            .opt_str("public_ipv6", self.public_ipv6.as_deref())
            .opt_str("host_id", self.host_id.as_deref())
            .opt_str("interface_ip", self.interface_ip.as_deref());
        for key in ["connection_port", "ssh_port"] {
            if let Some(details) = &self.connection_details {
                w.opt_value(key, Some(&JsonValue::Object(details.0.clone())));
            } else if wire.was_null("connection_port") && self.connection_port == 22 {
                w.null(key);
            } else {
                w.int(key, self.connection_port);
            }
        }
        w.opt_str("image_id", self.image_id.as_deref())
            .opt_str("launcher", self.launcher.as_deref());
        write_time(&mut w, wire, "created_time", self.created_time);
        match wire.mapping_for("external_id", self.external_id.as_deref()) {
            Some(mapping) => {
                w.opt_value("external_id", Some(&JsonValue::Object(mapping.clone())));
            }
            None => {
                w.opt_str("external_id", self.external_id.as_deref());
            }
        }
        w.opt_str("hostname", self.hostname.as_deref())
            .opt_str("comment", self.comment.as_deref())
            .opt_value("user_data", self.user_data.as_ref())
            .opt_str("hold_job", self.hold_job.as_deref());
        write_list(&mut w, wire, "host_keys", &self.host_keys);
        w.opt_str("username", self.username.as_deref())
            .opt_str("connection_type", self.connection_type.as_deref())
            .opt_str("shell_type", self.shell_type.as_deref())
            .opt_int("hold_expiration", self.hold_expiration)
            .opt_value(
                "resources",
                self.resources.clone().map(JsonValue::Object).as_ref(),
            )
            .opt_int("slot", self.slot)
            .opt_value(
                "attributes",
                self.attributes.clone().map(JsonValue::Object).as_ref(),
            )
            .opt_str("python_path", self.python_path.as_deref())
            .opt_str("tenant_name", self.tenant_name.as_deref())
            .opt_value("driver_data", self.driver_data.as_ref())
            .opt_str("requestor", self.requestor.as_deref())
            .opt_value(
                "node_properties",
                self.node_properties.clone().map(JsonValue::Object).as_ref(),
            )
            .extra(&self.extra);
        w.finish()
    }

    /// Decode a node record, with upstream's defaults for missing keys.
    pub fn from_json(id: &str, data: &[u8]) -> Result<Self, ModelError> {
        let f = Fields::parse("node", id, data)?;
        let mut wire = WireForm::default();
        let (state, state_time) = f.state_and_time("a node state", &mut wire)?;
        let labels = match f.get("type") {
            // Upstream's as_list(): falsy is [], a list stays, else [value].
            Some(v) if !v.is_truthy() => Vec::new(),
            None => Vec::new(),
            Some(JsonValue::Array(items)) => f.strings("type", items)?,
            Some(JsonValue::String(s)) => vec![s.clone()],
            Some(other) => return Err(f.wrong("type", "a list of strings", other)),
        };
        let port_key = if f.has("connection_port") || !f.has("ssh_port") {
            "connection_port"
        } else {
            "ssh_port"
        };
        if matches!(f.get(port_key), Some(JsonValue::Null)) {
            wire.remember_null("connection_port");
        }
        let (connection_port, connection_details) = match f.get(port_key) {
            Some(JsonValue::Object(details)) => (22, Some(ConnectionDetails(details.clone()))),
            _ => (f.opt_int(port_key)?.unwrap_or(22), None),
        };
        let hold_expiration = match f.get("hold_expiration") {
            None | Some(JsonValue::Null) => None,
            Some(v) => {
                Some(python_int(v).ok_or_else(|| f.wrong("hold_expiration", "an integer", v))?)
            }
        };
        let created_time = f.time("created_time", &mut wire)?;
        // Upstream's aws driver writes `{"instance": ID, "host": ID}`: the
        // node's cloud id is the instance (else the host), and the mapping
        // is written back as it was.
        let external_id = match f.get("external_id") {
            Some(JsonValue::Object(map)) => {
                let held = ["instance", "host"]
                    .iter()
                    .find_map(|k| map.get(k).and_then(JsonValue::as_str))
                    .or_else(|| map.iter().find_map(|(_, v)| v.as_str()))
                    .map(str::to_string);
                if let Some(held) = &held {
                    wire.remember_mapping("external_id", map.clone(), held.clone());
                }
                held
            }
            _ => f.opt_str("external_id")?,
        };
        let host_keys = f.str_list("host_keys", &mut wire)?;
        Ok(Self {
            id: id.to_owned(),
            state,
            state_time,
            cloud: f.opt_str("cloud")?,
            provider: f.opt_str("provider")?,
            pool: f.opt_str("pool")?,
            labels,
            allocated_to: f.opt_str("allocated_to")?,
            az: f.opt_str("az")?,
            region: f.opt_str("region")?,
            public_ipv4: f.opt_str("public_ipv4")?,
            private_ipv4: f.opt_str("private_ipv4")?,
            public_ipv6: f.opt_str("public_ipv6")?,
            host_id: f.opt_str("host_id")?,
            interface_ip: f.opt_str("interface_ip")?,
            connection_port,
            connection_details,
            image_id: f.opt_str("image_id")?,
            launcher: f.opt_str("launcher")?,
            created_time,
            external_id,
            hostname: f.opt_str("hostname")?,
            comment: f.opt_str("comment")?,
            user_data: f.opt_value("user_data"),
            hold_job: f.opt_str("hold_job")?,
            host_keys,
            username: f.str_or("username", "zuul")?,
            connection_type: f.opt_str("connection_type")?,
            shell_type: f.opt_str("shell_type")?,
            hold_expiration,
            resources: f.opt_object("resources")?,
            slot: f.opt_int("slot")?,
            attributes: f.opt_object("attributes")?,
            python_path: f.opt_str("python_path")?,
            tenant_name: f.opt_str("tenant_name")?,
            driver_data: f.opt_value("driver_data"),
            requestor: f.opt_str("requestor")?,
            node_properties: f.opt_object("node_properties")?,
            extra: f.extra(KNOWN),
            wire,
        })
    }
}

/// Python's `int(value)` as upstream applies it to `hold_expiration`: `None`
/// for what makes `int()` raise anything but `ValueError` (lists, objects,
/// infinities, integers beyond 64 bits); 0 for what raises `ValueError`
/// (strings that are no integer, NaN).
fn python_int(value: &JsonValue) -> Option<i64> {
    match value {
        JsonValue::Int(i) => i64::try_from(*i).ok(),
        JsonValue::Bool(b) => Some(i64::from(*b)),
        JsonValue::Float(f) if f.is_nan() => Some(0),
        JsonValue::Float(f) if f.is_finite() => {
            let t = f.trunc();
            (t >= i64::MIN as f64 && t < i64::MAX as f64).then_some(t as i64)
        }
        JsonValue::String(s) => match parse_python_int(s) {
            IntText::Int(i) => Some(i),
            IntText::TooLarge => None,
            IntText::Invalid => Some(0),
        },
        _ => None,
    }
}

enum IntText {
    Int(i64),
    TooLarge,
    Invalid,
}

/// `int(str)`: surrounding whitespace, a sign, ASCII digits with single
/// underscores between them.
fn parse_python_int(s: &str) -> IntText {
    let is_space = |c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c);
    let t = s.trim_matches(is_space);
    let (negative, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if body.is_empty()
        || body.starts_with('_')
        || body.ends_with('_')
        || body.contains("__")
        || !body.chars().all(|c| c.is_ascii_digit() || c == '_')
    {
        return IntText::Invalid;
    }
    let digits: String = body.chars().filter(|c| *c != '_').collect();
    let signed = if negative {
        format!("-{digits}")
    } else {
        digits
    };
    match signed.parse::<i64>() {
        Ok(i) => IntText::Int(i),
        Err(_) => IntText::TooLarge,
    }
}

#[cfg(test)]
mod tests;
