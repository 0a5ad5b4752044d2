//! Launch templates for `fleet` labels, named as upstream names them
//! (`nodepool-launch-template-<sha256 of the template arguments>`, the
//! SHA-256 of Python's `json.dumps(args, sort_keys=True)`), so upstream
//! and we share the same templates.

use serde_json::{json, Map, Value};

use super::client::Params;
use super::config::{AwsLabel, AwsPool};
use super::sigv4::sha256_hex;

/// The prefix of the launch templates nodepool creates.
pub const LAUNCH_TEMPLATE_PREFIX: &str = "nodepool-launch-template";

/// Python's `json.dumps(value, sort_keys=True)`: `", "` and `": "`
/// separators, keys sorted, non-ASCII escaped.
pub fn python_json(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    '\u{8}' => out.push_str("\\b"),
                    '\u{c}' => out.push_str("\\f"),
                    c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                        let mut buf = [0u16; 2];
                        for unit in c.encode_utf16(&mut buf) {
                            out.push_str(&format!("\\u{unit:04x}"));
                        }
                    }
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(python_json).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{}: {}",
                        python_json(&Value::String(k.clone())),
                        python_json(&map[k])
                    )
                })
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
    }
}

/// Upstream's `template_args` of a fleet label (before the name is added).
pub fn template_args(label: &AwsLabel, pool: &AwsPool, provider: &str) -> Value {
    let mut ebs = Map::new();
    ebs.insert("DeleteOnTermination".into(), json!(true));
    if let Some(size) = label.volume_size {
        ebs.insert("VolumeSize".into(), json!(size));
    }
    if let Some(t) = &label.volume_type {
        ebs.insert("VolumeType".into(), json!(t));
    }
    if let Some(iops) = label.iops {
        ebs.insert("Iops".into(), json!(iops));
    }
    if let Some(t) = label.throughput {
        ebs.insert("Throughput".into(), json!(t));
    }
    let mut data = Map::new();
    data.insert("KeyName".into(), json!(label.key_name));
    data.insert("SecurityGroupIds".into(), json!([pool.security_group_id]));
    data.insert(
        "BlockDeviceMappings".into(),
        json!([{ "DeviceName": "/dev/sda1", "Ebs": Value::Object(ebs) }]),
    );
    if let Some(mode) = label.imdsv2.as_deref() {
        data.insert(
            "MetadataOptions".into(),
            json!({ "HttpTokens": mode, "HttpEndpoint": "enabled" }),
        );
    }
    if let Some(userdata) = &label.userdata {
        use base64::Engine;
        data.insert(
            "UserData".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(userdata.as_bytes())),
        );
    }
    json!({
        "LaunchTemplateData": Value::Object(data),
        "TagSpecifications": [{
            "ResourceType": "launch-template",
            "Tags": [
                { "Key": "nodepool_managed", "Value": "True" },
                { "Key": "nodepool_provider_name", "Value": provider },
            ],
        }],
    })
}

/// The template name upstream gives `args`.
pub fn template_name(args: &Value) -> String {
    format!(
        "{LAUNCH_TEMPLATE_PREFIX}-{}",
        sha256_hex(python_json(args).as_bytes())
    )
}

/// The CreateLaunchTemplate parameters of `args` named `name`.
pub fn create_params(args: &Value, name: &str) -> Params {
    let mut p = Params::new();
    p.set("LaunchTemplateName", name);
    let data = &args["LaunchTemplateData"];
    if let Some(key) = data["KeyName"].as_str() {
        p.set("LaunchTemplateData.KeyName", key);
    }
    let groups: Vec<&str> = data["SecurityGroupIds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    p.list("LaunchTemplateData.SecurityGroupId", &groups);
    let bdm = "LaunchTemplateData.BlockDeviceMapping.1";
    p.set(format!("{bdm}.DeviceName"), "/dev/sda1");
    if let Some(ebs) = data["BlockDeviceMappings"][0]["Ebs"].as_object() {
        for (k, v) in ebs {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            p.set(format!("{bdm}.Ebs.{k}"), text);
        }
    }
    if let Some(meta) = data["MetadataOptions"].as_object() {
        for (k, v) in meta {
            p.set(
                format!("LaunchTemplateData.MetadataOptions.{k}"),
                v.as_str().unwrap_or_default(),
            );
        }
    }
    if let Some(userdata) = data["UserData"].as_str() {
        p.set("LaunchTemplateData.UserData", userdata);
    }
    p.set("TagSpecification.1.ResourceType", "launch-template");
    p.set("TagSpecification.1.Tag.1.Key", "nodepool_managed");
    p.set("TagSpecification.1.Tag.1.Value", "True");
    p.set("TagSpecification.1.Tag.2.Key", "nodepool_provider_name");
    p.set(
        "TagSpecification.1.Tag.2.Value",
        args["TagSpecifications"][0]["Tags"][1]["Value"]
            .as_str()
            .unwrap_or_default(),
    );
    p
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::config::{Fleet, InstanceSpec, LabelImage};
    use super::*;

    /// The name upstream's `_getLaunchTemplateName` gives the `io2` fleet
    /// label of its `aws-fleet.yaml` fixture (computed with upstream's
    /// code in Python), so both launchers use the same template.
    #[test]
    fn template_names_are_upstreams() {
        let label = AwsLabel {
            name: "ubuntu1404-io2".into(),
            image: LabelImage::CloudImage("ubuntu1404".into()),
            instance: InstanceSpec::Fleet(Fleet {
                instance_types: vec!["t3.medium".into()],
                allocation_strategy: "prioritized".into(),
            }),
            key_name: "zuul".into(),
            ebs_optimized: false,
            volume_type: Some("io2".into()),
            volume_size: Some(20),
            iops: Some(2000),
            throughput: None,
            userdata: Some("some-command".into()),
            iam_instance_profile: None,
            tags: BTreeMap::new(),
            dynamic_tags: BTreeMap::new(),
            use_spot: false,
            imdsv2: None,
            dedicated_host: false,
            host_key_checking: true,
        };
        let pool = AwsPool {
            name: "main".into(),
            max_servers: None,
            max_cores: None,
            max_ram: None,
            max_resources: BTreeMap::new(),
            priority: None,
            node_attributes: None,
            availability_zone: None,
            subnet_id: None,
            security_group_id: Some("sg-1".into()),
            public_ipv4: true,
            public_ipv6: false,
            host_key_checking: true,
            labels: vec![],
        };
        let args = template_args(&label, &pool, "ec2-us-west-2");
        assert_eq!(
            template_name(&args),
            "nodepool-launch-template-96b90f4abaeb2c1384e187e5c9f42267a499b7b226e6d4c0972c58906dd3d143"
        );
    }

    #[test]
    fn python_json_matches_json_dumps_sort_keys() {
        let v = json!({"b": [1, true, null], "a": {"y": "é\"", "x": 2}});
        assert_eq!(
            python_json(&v),
            r#"{"a": {"x": 2, "y": "\u00e9\""}, "b": [1, true, null]}"#
        );
    }
}
