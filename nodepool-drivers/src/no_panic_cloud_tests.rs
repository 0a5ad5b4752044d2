//! No panic on any cloud answer: the response parsers of the OpenStack
//! (JSON), AWS (XML) and Kubernetes (JSON) drivers are fed real-shaped
//! answers made hostile in one place, and garbage of every type under the
//! keys they read: huge and negative numbers, wrong types, missing fields,
//! NaN-ish strings, impossible timestamps. They may answer "unknown" or an
//! error; they must not panic.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, SystemTime};

use nodepool_core::provider::Resources;
use nodepool_core::testing::fuzz::Fuzz;
use serde_json::{json, Value};

use crate::aws::client::{api_error, Xml};
use crate::aws::{instance as aws_instance, quota as aws_quota};
use crate::k8s::{client as kube_client, objects as kube_objects};
use crate::openstack::server::{self, Flavor, Place};
use nodepool_core::provider::Quantity;

/// Hostile answers per parser.
const ROUNDS: usize = 1500;

/// Run `f`; the panic message if it panics.
fn no_panic(what: &str, input: &str, f: impl FnOnce(), failures: &mut Vec<String>) {
    if let Err(p) = catch_unwind(AssertUnwindSafe(f)) {
        let message = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".to_string());
        let input: String = input.chars().take(300).collect();
        failures.push(format!("{what} panicked: {message}\n  input: {input}"));
    }
}

fn assert_none(failures: &[String], tried: usize) {
    assert!(
        failures.is_empty(),
        "{} of {tried} answers made a parser panic:\n{}",
        failures.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

const NOVA_KEYS: &[&str] = &[
    "id",
    "name",
    "status",
    "addresses",
    "addr",
    "version",
    "OS-EXT-IPS:type",
    "metadata",
    "flavor",
    "vcpus",
    "ram",
    "hostId",
    "image",
    "fault",
    "message",
    "OS-EXT-AZ:availability_zone",
    "ports",
    "device_owner",
    "token",
    "catalog",
    "endpoints",
    "url",
    "interface",
    "region_id",
    "region",
    "type",
    "expires_at",
    "issued_at",
    "properties",
    "disk_format",
    "enum",
    "limits",
    "absolute",
    "maxTotalInstances",
    "maxTotalCores",
    "maxTotalRAMSize",
];

fn nova_server() -> Value {
    json!({
        "id": "3b1c", "name": "np0000000001", "status": "ACTIVE",
        "hostId": "h", "OS-EXT-AZ:availability_zone": "nova",
        "image": {"id": "img"}, "flavor": {"vcpus": 2, "ram": 4096},
        "metadata": {"nodepool_node_id": "0000000001", "nodepool_provider_name": "os"},
        "addresses": {
            "public": [{"addr": "203.0.113.5", "version": 4, "OS-EXT-IPS:type": "fixed"},
                       {"addr": "2001:db8::5", "version": 6, "OS-EXT-IPS:type": "fixed"}],
            "private": [{"addr": "10.0.0.5", "version": 4, "OS-EXT-IPS:type": "fixed"}]
        },
        "fault": {"message": "No valid host was found"}
    })
}

fn keystone_token() -> Value {
    json!({"token": {
        "expires_at": "2026-01-01T00:00:00.000000Z",
        "issued_at": "2025-12-31T23:00:00.000000Z",
        "catalog": [{"type": "compute", "endpoints": [
            {"url": "http://nova", "interface": "public", "region_id": "r1"}]}]
    }})
}

#[test]
fn openstack_parsers_never_panic_on_hostile_answers() {
    let mut fuzz = Fuzz::new(11);
    let mut failures = Vec::new();
    let bases = [
        nova_server(),
        keystone_token(),
        json!({"id": "f1", "name": "m1.small", "ram": 2048, "vcpus": 1}),
        json!({"ports": [{"id": "p1", "device_owner": "compute:nova"}]}),
        json!({"properties": {"disk_format": {"enum": ["qcow2", "raw", null]}}}),
    ];
    let mut tried = 0;
    for round in 0..ROUNDS {
        let base = &bases[round % bases.len()];
        let answer = if fuzz.one_in(3) {
            fuzz.garbage(NOVA_KEYS, 4)
        } else {
            fuzz.mutate(base, NOVA_KEYS)
        };
        let text = answer.to_string();
        tried += 1;
        no_panic(
            "openstack",
            &text,
            || {
                let flavor = Flavor::from_json(&answer);
                if let Some(f) = &flavor {
                    let _ = f.resources();
                }
                let _ = server::addresses(&answer);
                let _ = server::state(&answer);
                for private in [false, true] {
                    let place = Place {
                        cloud: "devstack",
                        region: Some("r1"),
                        private,
                    };
                    let _ = server::instance(&answer, place, flavor.as_ref());
                }
                let catalog = crate::openstack::auth::parse_catalog(&answer);
                let _ = catalog.len();
                let _ = crate::openstack::network::compute_ports(&answer);
                let _ = crate::openstack::images::schema_disk_formats(&answer);
                for key in [
                    "min_disk",
                    "min_ram",
                    "size",
                    "virtual_size",
                    "protected",
                    "x",
                ] {
                    let _ = crate::openstack::images::property_value(key, &answer);
                }
                for pointer in ["/token/expires_at", "/token/issued_at", "/expires_at"] {
                    if let Some(t) = answer.pointer(pointer).and_then(Value::as_str) {
                        let _ = crate::openstack::auth::parse_time(t);
                    }
                }
            },
            &mut failures,
        );
    }
    assert_none(&failures, tried);
}

#[test]
fn keystone_times_never_panic_however_odd() {
    let mut failures = Vec::new();
    let mut texts: Vec<String> = [
        "9223372036854775807-12-31T23:59:59Z",
        "-9223372036854775808-01-01T00:00:00Z",
        "2026-01-01T9223372036854775807:00:00Z",
        "2026-01-01T00:9223372036854775807:00Z",
        "2026-01-01T00:00:9223372036854775807Z",
        "2026-9223372036854775807-01T00:00:00Z",
        "2026-01-9223372036854775807T00:00:00Z",
        "584554049254-01-01T00:00:00Z",
        "584554-01-01T00:00:00.99999999999999999999999Z",
        "2026-01-01T00:00:00.",
        "2026-01-01T00:00:00.e5Z",
        "2026-01-01T00:00:00.1e400Z",
        "1969-12-31T23:59:59Z",
        "0000-00-00T00:00:00Z",
        "T",
        "",
        "--T::",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut fuzz = Fuzz::new(5);
    for _ in 0..500 {
        let n = |f: &mut Fuzz| match f.below(4) {
            0 => i64::MAX.to_string(),
            1 => i64::MIN.to_string(),
            2 => (f.next_u64() as i64).to_string(),
            _ => f.below(100).to_string(),
        };
        texts.push(format!(
            "{}-{}-{}T{}:{}:{}.{}Z",
            n(&mut fuzz),
            n(&mut fuzz),
            n(&mut fuzz),
            n(&mut fuzz),
            n(&mut fuzz),
            n(&mut fuzz),
            n(&mut fuzz).trim_start_matches('-')
        ));
    }
    for text in &texts {
        no_panic(
            "parse_time",
            text,
            || {
                if let Some(t) = crate::openstack::auth::parse_time(text) {
                    let _ = t.duration_since(SystemTime::UNIX_EPOCH);
                }
            },
            &mut failures,
        );
    }
    assert_none(&failures, texts.len());
}

const EC2_NAMES: &[&str] = &[
    "item",
    "instanceId",
    "instanceState",
    "name",
    "code",
    "privateIpAddress",
    "ipAddress",
    "networkInterfaceSet",
    "ipv6AddressesSet",
    "ipv6Address",
    "placement",
    "availabilityZone",
    "hostId",
    "imageId",
    "tagSet",
    "key",
    "value",
    "reservationSet",
    "instancesSet",
    "Errors",
    "Error",
    "Code",
    "Message",
    "Response",
];

/// Random XML over EC2's element names, with hostile text.
fn garbage_xml(fuzz: &mut Fuzz, depth: usize) -> String {
    let name = *fuzz.pick(EC2_NAMES);
    let mut out = format!("<{name}>");
    if depth == 0 || fuzz.one_in(3) {
        let text = match fuzz.scalar() {
            Value::String(s) => s,
            other => other.to_string(),
        };
        out.push_str(&text.replace('&', "&amp;").replace('<', "&lt;"));
    } else {
        for _ in 0..fuzz.below(4) {
            out.push_str(&garbage_xml(fuzz, depth - 1));
        }
    }
    out.push_str(&format!("</{name}>"));
    out
}

#[test]
fn aws_parsers_never_panic_on_hostile_answers() {
    let mut fuzz = Fuzz::new(13);
    let mut failures = Vec::new();
    let real = "<DescribeInstancesResponse><reservationSet><item><instancesSet><item>\
        <instanceId>i-1</instanceId><instanceState><code>16</code><name>running</name></instanceState>\
        <privateIpAddress>10.0.0.1</privateIpAddress><ipAddress>203.0.113.1</ipAddress>\
        <placement><availabilityZone>us-east-1a</availabilityZone></placement>\
        <tagSet><item><key>nodepool_node_id</key><value>0000000001</value></item></tagSet>\
        </item></instancesSet></item></reservationSet></DescribeInstancesResponse>";
    let mut tried = 0;
    for round in 0..ROUNDS {
        let text = match round % 4 {
            0 => garbage_xml(&mut fuzz, 6),
            1 => {
                let mut bytes = real.as_bytes().to_vec();
                let at = fuzz.below(bytes.len());
                bytes.truncate(at);
                String::from_utf8_lossy(&bytes).into_owned()
            }
            2 => real.replace(
                "running",
                match fuzz.nan_ish_string() {
                    Value::String(s) => s.replace(['<', '&'], ""),
                    _ => String::new(),
                }
                .as_str(),
            ),
            _ => format!(
                "<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors></Response>",
                fuzz.below(1000),
                garbage_xml(&mut fuzz, 2)
            ),
        };
        tried += 1;
        no_panic(
            "aws",
            &text,
            || {
                let parsed = Xml::parse(&text);
                if let Ok(xml) = &parsed {
                    for item in aws_instance::items(xml).chain(std::iter::once(xml)) {
                        let _ = aws_instance::state_name(item);
                        let _ = aws_instance::from_item(item, "us-east-1", Resources::default());
                    }
                    let _ = xml.tags();
                }
                for status in [0, 200, 400, 503, u16::MAX] {
                    let _ = api_error("RunInstances", status, parsed.as_ref().ok());
                }
            },
            &mut failures,
        );
    }
    // Service Quotas answers: any name, any value.
    for _ in 0..ROUNDS {
        let names: Vec<(String, String)> = (0..fuzz.below(6))
            .map(|_| {
                let name = match fuzz.nan_ish_string() {
                    Value::String(s) => s,
                    _ => String::new(),
                };
                (
                    format!("L-{}", fuzz.below(10)),
                    format!("Running On-Demand {name} instances"),
                )
            })
            .collect();
        let limits: BTreeMap<String, f64> = (0..fuzz.below(4))
            .map(|i| {
                let v = match fuzz.below(6) {
                    0 => f64::INFINITY,
                    1 => f64::NAN,
                    2 => f64::MAX,
                    3 => -1.0e300,
                    4 => fuzz.next_u64() as f64,
                    _ => 0.5,
                };
                (format!("L-{i}"), v)
            })
            .collect();
        let uses: BTreeMap<String, Vec<aws_quota::CodeUse>> = (0..fuzz.below(4))
            .map(|i| {
                let vcpus = *fuzz.pick(&[0, 1, u64::MAX]);
                let cores = *fuzz.pick(&[0, 1, u64::MAX]);
                (format!("L-{i}"), vec![aws_quota::CodeUse { vcpus, cores }])
            })
            .collect();
        tried += 1;
        no_panic(
            "aws quota",
            &format!("{names:?} {limits:?}"),
            || {
                let learned =
                    aws_quota::learn_codes(names.iter().map(|(c, n)| (c.as_str(), n.as_str())));
                let _ = aws_quota::quota_code_learned("t3.small", false, &learned);
                let _ = aws_quota::cores_limit(&limits, &uses);
            },
            &mut failures,
        );
    }
    assert_none(&failures, tried);
}

const KUBE_KEYS: &[&str] = &[
    "type",
    "object",
    "code",
    "metadata",
    "resourceVersion",
    "labels",
    "name",
    "namespace",
    "deletionTimestamp",
    "status",
    "phase",
    "spec",
    "nodeName",
    "data",
    "token",
    "ca.crt",
];

#[test]
fn kubernetes_parsers_never_panic_on_hostile_answers() {
    let mut fuzz = Fuzz::new(17);
    let mut failures = Vec::new();
    let pod = json!({
        "type": "MODIFIED",
        "object": {
            "metadata": {"name": "pod-1", "namespace": "ns", "resourceVersion": "42",
                         "labels": {"nodepool_node_id": "0000000001", "nodepool_pool_name": "main"}},
            "spec": {"nodeName": "worker-1"},
            "status": {"phase": "Running"}
        }
    });
    let error = json!({"type": "ERROR", "object": {"code": 410, "message": "too old"}});
    let mut tried = 0;
    for round in 0..ROUNDS {
        let answer = match round % 3 {
            0 => fuzz.garbage(KUBE_KEYS, 4),
            1 => fuzz.mutate(&pod, KUBE_KEYS),
            _ => fuzz.mutate(&error, KUBE_KEYS),
        };
        let line = answer.to_string();
        tried += 1;
        no_panic(
            "kubernetes",
            &line,
            || {
                let _ = kube_client::parse_event(line.as_bytes());
                let object = answer.get("object").unwrap_or(&answer);
                let _ = kube_client::resource_version(object);
                let _ = kube_objects::labels_of(object);
            },
            &mut failures,
        );
    }
    // Sums and differences of extreme extra resources (what the scheduler
    // does with a label's `extra-resources` and a pool's `max-resources`).
    for _ in 0..200 {
        let float = *fuzz.pick(&[f64::MAX, f64::NAN, -1.0, f64::INFINITY]);
        let int = *fuzz.pick(&[i64::MAX, i64::MIN, 0]);
        tried += 1;
        no_panic(
            "resource quantities",
            &format!("{float} {int}"),
            || {
                let (x, y) = (Quantity::Float(float), Quantity::Int(int));
                let _ = x.plus(y).minus(y).plus(x).as_f64();
                let _ = y.plus(y).minus(Quantity::Int(i64::MIN)).as_f64();
            },
            &mut failures,
        );
    }
    assert_none(&failures, tried);
}

#[test]
fn a_keystone_token_with_odd_times_never_panics_when_checked() {
    // Token life computed from whatever the cloud said.
    let mut failures = Vec::new();
    let times = [
        None,
        Some(SystemTime::UNIX_EPOCH),
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(u64::MAX / 4)),
        SystemTime::now().checked_add(Duration::from_secs(1 << 40)),
    ];
    for issued in times {
        for expires in times {
            no_panic(
                "token renewal",
                &format!("{issued:?} {expires:?}"),
                || {
                    let token = crate::openstack::auth::Token {
                        value: nodepool_core::secret::Secret::new("t".to_string()),
                        issued_at: issued,
                        expires_at: expires,
                        catalog: Vec::new(),
                        project_id: None,
                    };
                    let _ = token.needs_renewal(SystemTime::now());
                },
                &mut failures,
            );
        }
    }
    assert_none(&failures, times.len() * times.len());
}
