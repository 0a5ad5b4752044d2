//! Nova JSON to the core model: servers to [`Instance`]s (addresses as
//! openstacksdk reads them), flavors and the flavor a label uses.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use nodepool_core::provider::{Instance, InstanceState, Quantity, Resources};
use serde_json::Value;

use super::error::OpenStackError;

/// A Nova flavor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flavor {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// RAM in MiB.
    pub ram: u64,
    /// vCPUs.
    pub vcpus: u64,
}

impl Flavor {
    /// From a `flavors/detail` entry.
    pub fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            id: v["id"].as_str()?.to_string(),
            name: v["name"].as_str()?.to_string(),
            ram: v["ram"].as_u64()?,
            vcpus: v["vcpus"].as_u64()?,
        })
    }

    /// What one server of this flavor uses.
    pub fn resources(&self) -> Resources {
        Resources {
            instances: Some(1),
            cores: Some(self.vcpus),
            ram: Some(self.ram),
            ..Resources::default()
        }
    }
}

/// Add the volumes attached to `server` (those of `sizes`, by id) to what
/// it uses: `volumes` and `volume-gb`, as upstream's quota_from_flavor
/// counts a listed server's volumes.
pub fn count_volumes(resources: &mut Resources, server: &Value, sizes: &BTreeMap<String, u64>) {
    let attached: Vec<u64> = server["os-extended-volumes:volumes_attached"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|v| sizes.get(v["id"].as_str()?).copied())
        .collect();
    if attached.is_empty() {
        return;
    }
    let count = i64::try_from(attached.len()).unwrap_or(i64::MAX);
    let gb = attached.iter().fold(0i64, |total, size| {
        total.saturating_add(i64::try_from(*size).unwrap_or(i64::MAX))
    });
    resources.other.set("volumes", Quantity::Int(count));
    resources.other.set("volume-gb", Quantity::Int(gb));
}

/// Pick a flavor as upstream does. `flavors` must be sorted by (ram,
/// name). With `min_ram` > 0: the first with at least that much RAM whose
/// name contains `flavor_name` (if set); else the one whose name or id is
/// `flavor_name`.
pub fn find_flavor<'a>(
    flavors: &'a [Flavor],
    flavor_name: Option<&str>,
    min_ram: i64,
) -> Result<&'a Flavor, OpenStackError> {
    if min_ram > 0 {
        let min = u64::try_from(min_ram).unwrap_or(0);
        flavors
            .iter()
            .find(|f| f.ram >= min && flavor_name.map_or(true, |n| f.name.contains(n)))
            .ok_or_else(|| {
                OpenStackError::NotFound(format!("Unable to find flavor with min ram: {min_ram}"))
            })
    } else {
        let name = flavor_name.unwrap_or_default();
        flavors
            .iter()
            .find(|f| f.name == name || f.id == name)
            .ok_or_else(|| OpenStackError::NotFound(format!("Unable to find flavor: {name}")))
    }
}

/// Sort flavors as upstream does: by RAM, then name.
pub fn sort_flavors(flavors: &mut [Flavor]) {
    flavors.sort_by(|a, b| a.ram.cmp(&b.ram).then_with(|| a.name.cmp(&b.name)));
}

fn is_private_v4(ip: &Ipv4Addr) -> bool {
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.octets()[0] == 100 && (ip.octets()[1] & 0xc0) == 64
}

/// The addresses of a server, as openstacksdk classifies them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addresses {
    /// A floating or globally routable fixed IPv4.
    pub public_v4: Option<String>,
    /// A private fixed IPv4.
    pub private_v4: Option<String>,
    /// A global IPv6.
    pub public_v6: Option<String>,
    /// Floating IPs.
    pub floating: Vec<String>,
}

/// Classify `server["addresses"]`.
pub fn addresses(server: &Value) -> Addresses {
    let mut out = Addresses::default();
    let Some(nets) = server["addresses"].as_object() else {
        return out;
    };
    for entries in nets.values() {
        for e in entries.as_array().into_iter().flatten() {
            let Some(addr) = e["addr"].as_str() else {
                continue;
            };
            let floating = e["OS-EXT-IPS:type"].as_str() == Some("floating");
            match addr.parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) => {
                    if floating {
                        out.floating.push(addr.to_string());
                        out.public_v4 = Some(addr.to_string());
                    } else if is_private_v4(&ip) {
                        out.private_v4.get_or_insert_with(|| addr.to_string());
                    } else {
                        out.public_v4.get_or_insert_with(|| addr.to_string());
                    }
                }
                Ok(IpAddr::V6(ip))
                    if !ip.is_loopback() && (ip.segments()[0] & 0xfe00) != 0xfc00 =>
                {
                    out.public_v6.get_or_insert_with(|| addr.to_string());
                }
                _ => {}
            }
        }
    }
    let access = server["accessIPv4"].as_str().filter(|a| !a.is_empty());
    if let Some(a) = access {
        out.public_v4 = Some(a.to_string());
    }
    out
}

/// Where an instance is.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    /// Cloud name.
    pub cloud: &'a str,
    /// Region.
    pub region: Option<&'a str>,
    /// `private` in clouds.yaml: connect to the private address.
    pub private: bool,
}

/// The state of a server: `None` for DELETED ones (gone).
pub fn state(server: &Value) -> Option<InstanceState> {
    let status = server["status"].as_str().unwrap_or("").to_uppercase();
    let task = server["OS-EXT-STS:task_state"].as_str().unwrap_or("");
    Some(match status.as_str() {
        "DELETED" => return None,
        "SOFT_DELETED" => InstanceState::Deleting,
        _ if task == "deleting" => InstanceState::Deleting,
        "ACTIVE" => InstanceState::Active,
        "ERROR" => InstanceState::Error(
            server["fault"]["message"]
                .as_str()
                .unwrap_or("Server in error state")
                .to_string(),
        ),
        _ => InstanceState::Building,
    })
}

/// A server as an [`Instance`]; `flavor` sizes it when known.
pub fn instance(server: &Value, place: Place<'_>, flavor: Option<&Flavor>) -> Option<Instance> {
    let external_id = server["id"].as_str()?.to_string();
    let metadata: BTreeMap<String, String> = server["metadata"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let addrs = addresses(server);
    let interface_ip = if place.private {
        addrs.private_v4.clone()
    } else {
        // openstacksdk gives the public address; without one we fall back
        // to the private one (reachable from inside the cloud).
        addrs
            .public_v4
            .clone()
            .or(addrs.public_v6.clone())
            .or(addrs.private_v4.clone())
    };
    let resources = match (
        flavor,
        server["flavor"]["vcpus"].as_u64(),
        server["flavor"]["ram"].as_u64(),
    ) {
        (_, Some(cores), Some(ram)) => Resources {
            instances: Some(1),
            cores: Some(cores),
            ram: Some(ram),
            ..Resources::default()
        },
        (Some(f), _, _) => f.resources(),
        _ => Resources {
            instances: Some(1),
            ..Resources::default()
        },
    };
    Some(Instance {
        external_id,
        state: state(server),
        metadata,
        interface_ip,
        // Upstream: private_ipv4 falls back to the public address.
        private_ipv4: addrs.private_v4.clone().or(addrs.public_v4.clone()),
        public_ipv4: addrs.public_v4,
        public_ipv6: addrs.public_v6,
        az: server["OS-EXT-AZ:availability_zone"]
            .as_str()
            .map(str::to_string),
        cloud: Some(place.cloud.to_string()),
        region: place.region.map(str::to_string),
        host_id: server["hostId"]
            .as_str()
            .filter(|h| !h.is_empty())
            .map(str::to_string),
        image_id: server["image"]["id"].as_str().map(str::to_string),
        resources,
        host_keys: Vec::new(),
        connection_port: None,
        connection_type: None,
        connection_details: None,
        node_properties: None,
    })
}

/// Base64 (standard alphabet, padded), for Nova's `user_data`.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flavors() -> Vec<Flavor> {
        let f = |id: &str, name: &str, ram, vcpus| Flavor {
            id: id.into(),
            name: name.into(),
            ram,
            vcpus,
        };
        let mut v = vec![
            f("3", "m1.large", 8192, 4),
            f("1", "m1.small", 2048, 1),
            f("2", "x.small", 2048, 2),
        ];
        sort_flavors(&mut v);
        v
    }

    #[test]
    fn min_ram_picks_smallest_fitting_flavor_with_name_substring() {
        let v = flavors();
        assert_eq!(
            find_flavor(&v, None, 2000).map(|f| f.id.as_str()).ok(),
            Some("1")
        );
        assert_eq!(
            find_flavor(&v, Some("x."), 1).map(|f| f.id.as_str()).ok(),
            Some("2")
        );
        assert_eq!(
            find_flavor(&v, Some("large"), 4096)
                .map(|f| f.id.as_str())
                .ok(),
            Some("3")
        );
        assert!(find_flavor(&v, None, 100_000).is_err());
    }

    #[test]
    fn flavor_name_without_min_ram_matches_name_or_id_exactly() {
        let v = flavors();
        assert_eq!(
            find_flavor(&v, Some("m1.large"), 0)
                .map(|f| f.id.as_str())
                .ok(),
            Some("3")
        );
        assert_eq!(
            find_flavor(&v, Some("2"), 0).map(|f| f.name.as_str()).ok(),
            Some("x.small")
        );
        assert!(find_flavor(&v, Some("m1"), 0).is_err());
    }

    #[test]
    fn addresses_split_floating_private_and_public() {
        let server = serde_json::json!({"addresses": {"private": [
            {"version": 4, "addr": "10.0.0.5", "OS-EXT-IPS:type": "fixed"},
            {"version": 4, "addr": "203.0.113.9", "OS-EXT-IPS:type": "floating"}],
            "v6": [{"version": 6, "addr": "2001:db8::5", "OS-EXT-IPS:type": "fixed"}]}});
        let a = addresses(&server);
        assert_eq!(a.private_v4.as_deref(), Some("10.0.0.5"));
        assert_eq!(a.public_v4.as_deref(), Some("203.0.113.9"));
        assert_eq!(a.public_v6.as_deref(), Some("2001:db8::5"));
        assert_eq!(a.floating, vec!["203.0.113.9".to_string()]);
    }

    #[test]
    fn base64_pads_like_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"#cloud-config\n"), "I2Nsb3VkLWNvbmZpZwo=");
    }
}
