//! [`Resources`]: what a node uses, or what a limit allows.
//!
//! Upstream keeps these as a flat mapping (its `QuotaInformation`, the
//! `resources` of a node record): `cores`, `instances` and `ram`, then any
//! other named resource a driver counts (`volumes` and `volume-gb` of a
//! boot-from-volume OpenStack node; `ephemeral-storage`, a GPU resource and
//! `extra-resources` of a Kubernetes pod). [`Resources`] has the three
//! common ones as fields and the rest in [`OtherResources`], in the order
//! upstream writes them, so a node record keeps upstream's bytes.

use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::model::json::{JsonObject, JsonValue};

/// An amount of a named resource: an integer, or a float (a GPU fraction,
/// `gpu: 0.5`). Kept as read, so a node record writes `1.0` where upstream
/// writes `1.0` and `1` where it writes `1`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Quantity {
    /// A whole amount.
    Int(i64),
    /// A fractional amount.
    Float(f64),
}

impl Quantity {
    /// The amount as a float, for sums and comparisons.
    pub fn as_f64(self) -> f64 {
        match self {
            Quantity::Int(i) => i as f64,
            Quantity::Float(f) => f,
        }
    }
}

impl Quantity {
    /// `self + other`: whole while both are whole and the sum fits.
    pub fn plus(self, other: Quantity) -> Quantity {
        match (self, other) {
            (Quantity::Int(a), Quantity::Int(b)) => a
                .checked_add(b)
                .map_or(Quantity::Float(a as f64 + b as f64), Quantity::Int),
            (a, b) => Quantity::Float(a.as_f64() + b.as_f64()),
        }
    }

    /// `self - other`: whole while both are whole and the difference fits.
    pub fn minus(self, other: Quantity) -> Quantity {
        match (self, other) {
            (Quantity::Int(a), Quantity::Int(b)) => a
                .checked_sub(b)
                .map_or(Quantity::Float(a as f64 - b as f64), Quantity::Int),
            (a, b) => Quantity::Float(a.as_f64() - b.as_f64()),
        }
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Quantity::Int(a), Quantity::Int(b)) => a == b,
            (Quantity::Float(a), Quantity::Float(b)) => a.to_bits() == b.to_bits(),
            _ => false,
        }
    }
}

impl Eq for Quantity {}

impl Hash for Quantity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Quantity::Int(i) => (0u8, *i).hash(state),
            Quantity::Float(f) => (1u8, f.to_bits()).hash(state),
        }
    }
}

/// Named resources beyond instances, cores and RAM, in insertion order
/// (the order upstream writes them into a node's `resources`). As a limit,
/// a name that is not listed is unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct OtherResources(Vec<(String, Quantity)>);

impl OtherResources {
    /// No other resources.
    pub fn new() -> Self {
        Self::default()
    }

    /// The amount of `name`, if listed.
    pub fn get(&self, name: &str) -> Option<Quantity> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, q)| *q)
    }

    /// Set `name` to `amount`: in its place when listed (as a Python dict
    /// update keeps the key's position), else at the end.
    pub fn set(&mut self, name: impl Into<String>, amount: Quantity) {
        let name = name.into();
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = amount,
            None => self.0.push((name, amount)),
        }
    }

    /// The resources in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Quantity)> {
        self.0.iter().map(|(n, q)| (n.as_str(), *q))
    }

    /// Whether none is listed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(String, Quantity)> for OtherResources {
    fn from_iter<I: IntoIterator<Item = (String, Quantity)>>(iter: I) -> Self {
        let mut out = Self::new();
        for (name, amount) in iter {
            out.set(name, amount);
        }
        out
    }
}

/// Resources a node uses, or a limit on them. `None` means unlimited (as a
/// limit) or unknown (as a use).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Resources {
    /// Instances (servers).
    pub instances: Option<u64>,
    /// CPU cores.
    pub cores: Option<u64>,
    /// RAM in MB.
    pub ram: Option<u64>,
    /// Every other named resource (`volumes`, `volume-gb`,
    /// `ephemeral-storage`, `nvidia.com/gpu`, ...). As a limit, a resource
    /// not listed is unlimited.
    #[serde(default, skip_serializing_if = "OtherResources::is_empty")]
    pub other: OtherResources,
}

impl Resources {
    /// Whether any resource is known (`instances`, `cores`, `ram` or another).
    pub fn is_known(&self) -> bool {
        self.instances.is_some()
            || self.cores.is_some()
            || self.ram.is_some()
            || !self.other.is_empty()
    }
}

impl Resources {
    /// What a node record's `resources` says a node uses: `instances`,
    /// `cores` and `ram`, and every other numeric key in its order (a GPU,
    /// volumes, ...).
    pub fn from_node_json(r: &JsonObject) -> Self {
        let count = |v: &JsonValue| v.as_i64().map(|v| u64::try_from(v).unwrap_or(0));
        let mut out = Resources::default();
        for (key, value) in r.iter() {
            match key.as_str() {
                "instances" => out.instances = count(value),
                "cores" => out.cores = count(value),
                "ram" => out.ram = count(value),
                other => {
                    let amount = match value {
                        JsonValue::Float(f) => Some(Quantity::Float(*f)),
                        v => v.as_i64().map(Quantity::Int),
                    };
                    if let Some(amount) = amount {
                        out.other.set(other, amount);
                    }
                }
            }
        }
        out
    }

    /// The `resources` of a node record, as upstream writes them:
    /// `{"cores": …, "instances": …, "ram": …}` (one instance when not
    /// told) and then the other resources in their order (`"volumes": 1,
    /// "volume-gb": 50`, `"nvidia.com/gpu": 1.0`).
    pub fn to_node_json(&self) -> JsonObject {
        let mut o = JsonObject::new();
        let put = |o: &mut JsonObject, k: &str, v: Option<u64>| {
            if let Some(v) = v {
                o.insert(k, JsonValue::Int(i128::from(v)));
            }
        };
        put(&mut o, "cores", self.cores);
        put(&mut o, "instances", Some(self.instances.unwrap_or(1)));
        put(&mut o, "ram", self.ram);
        for (name, amount) in self.other.iter() {
            let value = match amount {
                Quantity::Int(i) => JsonValue::Int(i128::from(i)),
                Quantity::Float(f) => JsonValue::Float(f),
            };
            o.insert(name, value);
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_a_listed_resource_keeps_its_place_as_a_python_dict_update_does() {
        let mut other: OtherResources = [
            ("ephemeral-storage".to_string(), Quantity::Int(100)),
            ("nvidia.com/gpu".to_string(), Quantity::Float(0.5)),
        ]
        .into_iter()
        .collect();
        other.set("nvidia.com/gpu", Quantity::Int(2));
        other.set("fpga", Quantity::Int(1));
        let order: Vec<_> = other.iter().collect();
        assert_eq!(
            order,
            [
                ("ephemeral-storage", Quantity::Int(100)),
                ("nvidia.com/gpu", Quantity::Int(2)),
                ("fpga", Quantity::Int(1)),
            ]
        );
        assert_eq!(other.get("missing"), None);
        assert_eq!(Quantity::Float(0.5).as_f64() + 0.5, 1.0);
        assert_ne!(Quantity::Int(1), Quantity::Float(1.0), "kept as read");
    }

    #[test]
    fn node_resources_keep_upstreams_bytes_with_other_resources() {
        let text = r#"{"cores": 2, "instances": 1, "ram": 1024, "volumes": 1, "volume-gb": 80, "nvidia.com/gpu": 0.5}"#;
        let JsonValue::Object(o) = crate::model::json::parse(text.as_bytes()).expect("json") else {
            panic!("an object");
        };
        let r = Resources::from_node_json(&o);
        assert_eq!(
            (r.instances, r.cores, r.ram),
            (Some(1), Some(2), Some(1024))
        );
        assert_eq!(r.other.get("volume-gb"), Some(Quantity::Int(80)));
        assert_eq!(r.other.get("nvidia.com/gpu"), Some(Quantity::Float(0.5)));
        assert_eq!(
            JsonValue::Object(r.to_node_json()).to_python_json(false),
            text
        );
    }
}
