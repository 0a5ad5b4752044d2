//! EC2 instances as [`Instance`]s: state, addresses and tags as upstream's
//! `AwsInstance` reports them.

use nodepool_core::provider::{Instance, InstanceState, Resources};

use super::client::Xml;

/// The cloud name upstream records on AWS nodes.
pub const CLOUD: &str = "AWS";

/// The lifecycle state of an EC2 instance (`instanceState.name`).
pub fn state_name(item: &Xml) -> String {
    item.text_at(&["instanceState", "name"])
        .unwrap_or_default()
        .to_lowercase()
}

/// Our state of an EC2 state name; `None` for `terminated` (gone).
pub fn state(name: &str) -> Option<InstanceState> {
    match name {
        "running" => Some(InstanceState::Active),
        "shutting-down" => Some(InstanceState::Deleting),
        "terminated" => None,
        // pending, and stopping/stopped: upstream keeps waiting for
        // running until the launch timeout.
        _ => Some(InstanceState::Building),
    }
}

/// An instance `item` of DescribeInstances or RunInstances in `region`.
/// `resources` is what its type uses, when known.
pub fn from_item(item: &Xml, region: &str, resources: Resources) -> Instance {
    let private_ipv4 = item.text_at(&["privateIpAddress"]);
    let public_ipv4 = item.text_at(&["ipAddress"]);
    let public_ipv6 = item
        .items("networkInterfaceSet")
        .next()
        .and_then(|iface| iface.items("ipv6AddressesSet").next())
        .and_then(|addr| addr.text_at(&["ipv6Address"]));
    let interface_ip = public_ipv4
        .clone()
        .or_else(|| public_ipv6.clone())
        .or_else(|| private_ipv4.clone());
    Instance {
        external_id: item.text_at(&["instanceId"]).unwrap_or_default(),
        state: state(&state_name(item)),
        metadata: item.tags(),
        interface_ip,
        public_ipv4,
        private_ipv4,
        public_ipv6,
        az: item.text_at(&["placement", "availabilityZone"]),
        cloud: Some(CLOUD.to_string()),
        region: Some(region.to_string()),
        host_id: item.text_at(&["placement", "hostId"]),
        image_id: item.text_at(&["imageId"]),
        resources,
        host_keys: Vec::new(),
        connection_port: None,
        connection_type: None,
        connection_details: None,
        node_properties: None,
    }
}

/// The instance items of a DescribeInstances answer.
pub fn items(answer: &Xml) -> impl Iterator<Item = &Xml> {
    answer
        .items("reservationSet")
        .flat_map(|r| r.items("instancesSet"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_prefer_public_ipv4_then_ipv6_then_private() {
        let xml = Xml::parse(
            "<item><instanceId>i-1</instanceId><instanceState><name>running</name></instanceState>\
             <privateIpAddress>10.0.0.5</privateIpAddress>\
             <networkInterfaceSet><item><ipv6AddressesSet><item><ipv6Address>2600::1</ipv6Address>\
             </item></ipv6AddressesSet></item></networkInterfaceSet>\
             <placement><availabilityZone>us-west-2a</availabilityZone></placement>\
             <tagSet><item><key>nodepool_node_id</key><value>0000000001</value></item></tagSet>\
             </item>",
        )
        .expect("xml");
        let i = from_item(&xml, "us-west-2", Resources::default());
        assert_eq!(i.state, Some(InstanceState::Active));
        assert_eq!(i.interface_ip.as_deref(), Some("2600::1"));
        assert_eq!(i.private_ipv4.as_deref(), Some("10.0.0.5"));
        assert_eq!(i.az.as_deref(), Some("us-west-2a"));
        assert_eq!(i.cloud.as_deref(), Some("AWS"));
        assert_eq!(i.metadata["nodepool_node_id"], "0000000001");
        assert_eq!(state("terminated"), None);
        assert_eq!(state("pending"), Some(InstanceState::Building));
    }
}
