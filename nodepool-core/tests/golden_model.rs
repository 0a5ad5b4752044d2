//! Golden tests: our records encode to the bytes upstream nodepool 11.0.0
//! writes to ZooKeeper.
//!
//! The documents in tests/golden/ were written by upstream's own model code
//! (scripts/golden/generate.py, see tests/golden/README.md); manifest.json
//! lists the cases.
//!
//! - `build` cases: we build the same object as the generator and must
//!   encode it to the same bytes.
//! - `read` cases: we decode `<case>.input.json` and encode again. Upstream
//!   drops unknown keys, we keep them: our bytes must equal
//!   `<case>.ours.json`, which is upstream's output with the unknown keys
//!   appended in their input order; with `extra` cleared they must equal
//!   upstream's output `<case>.json` exactly. (Components: upstream keeps
//!   unknown keys too, so ours is upstream's output.)
//! - Every document decodes and re-encodes to itself.
use std::path::PathBuf;

use nodepool_core::model::json::{parse, python_float_repr, JsonObject, JsonValue};
use nodepool_core::model::{
    BuildState, Component, ComponentState, ImageBuild, ImageUpload, Node, NodeRequest, NodeState,
    RequestState, UploadState, POOL,
};

const T1: f64 = 1700000000.123456;
const T2: f64 = 1699999999.5;
const T3: f64 = 1700000001.0;
const UNICODE: &str =
    "h\u{e9}llo \u{2713} \u{1F600} \u{4e2d}\u{6587} \"q\" \\ \t\n\u{0}\u{1f}\u{7f}/";

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden")
}

fn read(name: &str) -> Vec<u8> {
    let path = golden_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn obj(text: &str) -> JsonObject {
    match parse(text.as_bytes()) {
        Ok(JsonValue::Object(o)) => o,
        other => panic!("not an object: {other:?}"),
    }
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

/// One manifest entry.
struct Case {
    kind: String,
    mode: String,
    name: String,
    meta: serde_json::Value,
}

impl Case {
    fn meta(&self, key: &str) -> &str {
        self.meta.get(key).and_then(|v| v.as_str()).unwrap_or("")
    }
}

fn cases() -> Vec<Case> {
    let manifest: serde_json::Value =
        serde_json::from_slice(&read("manifest.json")).expect("manifest is JSON");
    let cases = manifest["cases"].as_array().expect("cases list");
    assert!(cases.len() > 50, "manifest lists {} cases", cases.len());
    cases
        .iter()
        .map(|c| Case {
            kind: c["kind"].as_str().expect("kind").to_owned(),
            mode: c["mode"].as_str().expect("mode").to_owned(),
            name: c["name"].as_str().expect("name").to_owned(),
            meta: c.clone(),
        })
        .collect()
}

/// A decoded record of any kind.
enum Record {
    Node(Box<Node>),
    Request(NodeRequest),
    Build(ImageBuild),
    Upload(ImageUpload),
    Component(Component),
}

impl Record {
    fn decode(case: &Case, data: &[u8]) -> Record {
        let id = case.meta("id");
        let result = match case.kind.as_str() {
            "node" => Node::from_json(id, data).map(|n| Record::Node(Box::new(n))),
            "request" => NodeRequest::from_json(id, data).map(Record::Request),
            "build" => {
                ImageBuild::from_json_at(case.meta("image_name"), id, data).map(Record::Build)
            }
            "upload" => ImageUpload::from_json_at(
                case.meta("image_name"),
                case.meta("build_id"),
                case.meta("provider_name"),
                id,
                data,
            )
            .map(Record::Upload),
            "component" => Component::from_json_at(case.meta("component_kind"), id, data)
                .map(Record::Component),
            other => panic!("unknown kind {other}"),
        };
        result.unwrap_or_else(|e| panic!("{}: {e}", case.name))
    }

    fn to_json(&self) -> Vec<u8> {
        match self {
            Record::Node(r) => r.to_json(),
            Record::Request(r) => r.to_json(),
            Record::Build(r) => r.to_json(),
            Record::Upload(r) => r.to_json(),
            Record::Component(r) => r.to_json(),
        }
    }

    fn extra_mut(&mut self) -> &mut JsonObject {
        match self {
            Record::Node(r) => &mut r.extra,
            Record::Request(r) => &mut r.extra,
            Record::Build(r) => &mut r.extra,
            Record::Upload(r) => &mut r.extra,
            Record::Component(r) => &mut r.extra,
        }
    }

    fn state_time_mut(&mut self) -> Option<&mut Option<f64>> {
        match self {
            Record::Node(r) => Some(&mut r.state_time),
            Record::Request(r) => Some(&mut r.state_time),
            Record::Build(r) => Some(&mut r.state_time),
            Record::Upload(r) => Some(&mut r.state_time),
            Record::Component(_) => None,
        }
    }
}

fn state_of<T: std::str::FromStr>(case: &Case) -> T
where
    T::Err: std::fmt::Debug,
{
    case.meta("state").parse().expect("state in manifest")
}

/// Our equivalent of the object the generator built for `case`.
fn build(case: &Case) -> Vec<u8> {
    let name = case.name.as_str();
    match case.kind.as_str() {
        "node" => build_node(case, name).to_json(),
        "request" => build_request(case, name).to_json(),
        "build" => build_build(case, name).to_json(),
        "upload" => build_upload(case, name).to_json(),
        "component" => build_component(case, name).to_json(),
        other => panic!("unknown kind {other}"),
    }
}

fn build_node(case: &Case, name: &str) -> Node {
    let mut n = Node {
        id: case.meta("id").to_owned(),
        ..Node::default()
    };
    if name.starts_with("node-state-") {
        n.state = Some(state_of::<NodeState>(case));
        n.state_time = Some(T1);
        return n;
    }
    match name {
        "node-defaults" => {}
        "node-full" => {
            n.set_state(NodeState::Ready);
            n.state_time = Some(T2);
            n.cloud = s("cloud1");
            n.provider = s("rax");
            n.pool = s("main");
            n.labels = vec!["ubuntu-jammy".into(), "ubuntu-jammy-large".into()];
            n.allocated_to = s("100-0000000007");
            n.az = s("az1");
            n.region = s("RegionOne");
            n.public_ipv4 = s("203.0.113.5");
            n.private_ipv4 = s("10.0.0.5");
            n.public_ipv6 = s("2001:db8::5");
            n.host_id = s("host-abc");
            n.interface_ip = s("203.0.113.5");
            n.connection_type = s("ssh");
            n.connection_port = 2222;
            n.shell_type = s("bash");
            n.image_id = s("ubuntu-jammy-1700000000");
            n.launcher = s("launcher1-12345-rax-main");
            n.created_time = Some(T3);
            n.external_id = s("6f2c1e8a-0a4b-4a8e-9c3d-1b2a3c4d5e6f");
            n.hostname = s("np0000000042");
            n.comment = s("held for debugging");
            n.user_data = Some(JsonValue::from("#cloud-config\nruncmd: []\n"));
            n.hold_job = s("tenant/project/job");
            n.username = s("ubuntu");
            n.host_keys = vec!["ssh-ed25519 AAAAC3Nza".into(), "ssh-rsa AAAAB3Nza".into()];
            n.hold_expiration = Some(86400);
            n.resources = Some(obj(
                r#"{"cores": 8, "instances": 1, "ram": 16384, "disk": 80.5, "gpu": 0.0}"#,
            ));
            n.slot = Some(3);
            n.attributes = Some(obj(
                r#"{"executor-zone": "zone-a", "nested": {"x": [1, 2.5, null, true, false]}}"#,
            ));
            n.python_path = s("/usr/bin/python3");
            n.tenant_name = s("tenant-one");
            n.driver_data = Some(obj(r#"{"volume": "vol-1", "ids": [1, 2]}"#).into());
            n.requestor = s("zuul-scheduler");
            n.node_properties = Some(obj(r#"{"spot": false, "region": "r1"}"#));
        }
        "node-unicode" => {
            n.state = Some(NodeState::Hold);
            n.state_time = Some(T1);
            n.comment = s(UNICODE);
            n.labels = vec!["label-\u{e9}".into()];
            let mut attributes = JsonObject::new();
            attributes.insert("\u{fc}ber", "\u{1F600}");
            n.attributes = Some(attributes);
        }
        "node-none-vs-empty" => {
            n.node_properties = None;
            n.comment = s("");
            n.resources = Some(JsonObject::new());
            n.attributes = Some(JsonObject::new());
            n.driver_data = Some(JsonValue::Array(Vec::new()));
            n.username = s("");
        }
        "node-floats" => {
            n.state = Some(NodeState::Used);
            n.state_time = Some(1e16);
            n.created_time = Some(1.5e-07);
            let mut r = JsonObject::new();
            for (k, v) in [
                ("a", 0.1),
                ("b", 1e22),
                ("c", -0.0),
                ("d", 123456789.0),
                ("e", 0.0001),
                ("f", 1e-05),
                ("g", 9999999999999998.0),
                ("h", 2.5e-300),
            ] {
                r.insert(k, v);
            }
            n.resources = Some(r);
        }
        "node-large-ints" => {
            n.state = Some(NodeState::InUse);
            n.state_time = Some(T1);
            n.slot = Some(1 << 62);
            n.hold_expiration = Some(1 << 40);
            n.connection_port = 65535;
            let mut r = JsonObject::new();
            r.insert("ram", JsonValue::Int((1i128 << 53) + 1));
            r.insert("neg", JsonValue::Int(-(1i128 << 63)));
            r.insert("u", JsonValue::Int((1i128 << 64) - 1));
            n.resources = Some(r);
        }
        other => panic!("no Rust builder for golden case {other}"),
    }
    n
}

fn build_request(case: &Case, name: &str) -> NodeRequest {
    let mut r = NodeRequest {
        id: case.meta("id").to_owned(),
        ..NodeRequest::default()
    };
    if name.starts_with("request-state-") {
        r.state = Some(state_of::<RequestState>(case));
        r.state_time = Some(T1);
        return r;
    }
    match name {
        "request-defaults" => {}
        "request-full" => {
            r.set_state(RequestState::Fulfilled);
            r.state_time = Some(T2);
            r.declined_by = vec!["launcher-1-p1-main".into(), "launcher-2-p2-\u{e9}".into()];
            r.node_types = vec!["ubuntu-jammy".into(), "centos-9".into()];
            r.nodes = vec!["0000000001".into(), "0000000002".into()];
            r.reuse = false;
            r.requestor = s("zuul-scheduler-1");
            r.requestor_data =
                Some(obj(r#"{"build_set_uuid": "abc", "n": [1, 2.5, null]}"#).into());
            r.provider = s("rax");
            r.relative_priority = -3;
            r.event_id = s("e1f2");
            r.created_time = Some(T3);
            r.tenant_name = s("tenant-one");
        }
        "request-empty-requestor-data" => {
            r.requestor_data = Some(JsonValue::Array(Vec::new()));
            r.relative_priority = 1 << 40;
        }
        other => panic!("no Rust builder for golden case {other}"),
    }
    r
}

fn build_build(case: &Case, name: &str) -> ImageBuild {
    let mut b = ImageBuild {
        id: case.meta("id").to_owned(),
        image_name: case.meta("image_name").to_owned(),
        ..ImageBuild::default()
    };
    if name.starts_with("build-state-") {
        b.state = Some(state_of::<BuildState>(case));
        b.state_time = Some(T1);
        return b;
    }
    match name {
        "build-defaults" => {}
        "build-full" => {
            b.set_state(BuildState::Ready);
            b.state_time = Some(T2);
            b.builder = s("builder1.example.com");
            b.builder_id = s("b0c1d2e3-uuid");
            b.formats = vec!["vhd".into(), "qcow2".into(), "raw".into()];
            b.username = s("zuul");
            b.python_path = s("auto");
            b.shell_type = s("sh");
        }
        other => panic!("no Rust builder for golden case {other}"),
    }
    b
}

fn build_upload(case: &Case, name: &str) -> ImageUpload {
    let mut u = ImageUpload {
        id: case.meta("id").to_owned(),
        build_id: case.meta("build_id").to_owned(),
        provider_name: case.meta("provider_name").to_owned(),
        image_name: case.meta("image_name").to_owned(),
        ..ImageUpload::default()
    };
    if name.starts_with("upload-state-") {
        u.state = Some(state_of::<UploadState>(case));
        u.state_time = Some(T1);
        return u;
    }
    match name {
        "upload-defaults" => {}
        "upload-full" => {
            u.set_state(UploadState::Ready);
            u.state_time = Some(T2);
            u.username = s("ubuntu");
            u.python_path = s("/usr/bin/python3");
            u.shell_type = s("bash");
            u.external_id = s("9b0c-image-id");
            u.external_name = s("ubuntu-1700000000");
            u.format = s("qcow2");
        }
        other => panic!("no Rust builder for golden case {other}"),
    }
    u
}

fn build_component(case: &Case, name: &str) -> Component {
    let kind = case.meta("component_kind");
    let mut c = match name {
        "component-launcher" => {
            let mut c = Component::new(kind, "launcher1.example.com");
            c.version = s("11.0.0");
            c.state = ComponentState::Running;
            c
        }
        "component-builder-defaults" => Component::new(kind, "b\u{fc}ilder"),
        "component-pool" => {
            let mut c = Component::new(kind, "launcher1.example.com");
            c.version = s("11.0.0");
            c.id = s("launcher1-1234-rax-main");
            c.pool_name = s("main");
            c.provider_name = s("rax");
            c.supported_labels = Some(vec!["ubuntu-jammy".into(), "centos-9".into()]);
            c.state = ComponentState::Running;
            c.priority = Some(100);
            c.paused = Some(true);
            c
        }
        "component-pool-defaults" => {
            assert_eq!(kind, POOL);
            Component::new(kind, "h")
        }
        other => panic!("no Rust builder for golden case {other}"),
    };
    c.name = case.meta("id").to_owned();
    c
}

#[test]
fn built_records_encode_to_upstream_bytes() {
    let mut checked = 0;
    for case in cases().iter().filter(|c| c.mode == "build") {
        let expected = read(&format!("{}.json", case.name));
        let ours = build(case);
        assert_eq!(show(&ours), show(&expected), "case {}", case.name);
        assert_eq!(ours, expected, "case {} (bytes)", case.name);
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} build cases");
}

#[test]
fn read_records_write_back_upstream_bytes_plus_unknown_keys() {
    let mut checked = 0;
    for case in cases().iter().filter(|c| c.mode == "read") {
        let input = read(&format!("{}.input.json", case.name));
        let upstream = read(&format!("{}.json", case.name));
        let mut record = Record::decode(case, &input);
        if let Some(stamp) = case.meta.get("stamped_time").and_then(|v| v.as_f64()) {
            // Upstream stamps a state without state_time with time.time();
            // the generator froze that clock at `stamp`.
            let slot = record.state_time_mut().expect("record with a state");
            let t = slot.expect("stamped");
            let now = nodepool_core::model::now();
            assert!((now - 60.0..=now).contains(&t), "case {}: {t}", case.name);
            *slot = Some(stamp);
        }
        let ours = record.to_json();
        if case.kind == "component" {
            assert_eq!(show(&ours), show(&upstream), "case {}", case.name);
            checked += 1;
            continue;
        }
        let expected_ours = read(&format!("{}.ours.json", case.name));
        assert_eq!(show(&ours), show(&expected_ours), "case {}", case.name);
        let unknown: Vec<String> = case.meta["unknown_keys"]
            .as_array()
            .expect("unknown_keys")
            .iter()
            .map(|k| k.as_str().expect("key").to_owned())
            .collect();
        let extra = record.extra_mut();
        assert_eq!(
            extra.keys().cloned().collect::<Vec<_>>(),
            unknown,
            "case {}",
            case.name
        );
        *extra = JsonObject::new();
        assert_eq!(
            show(&record.to_json()),
            show(&upstream),
            "case {} without extra",
            case.name
        );
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} read cases");
}

#[test]
fn every_golden_document_round_trips_byte_for_byte() {
    for case in cases() {
        let mut names = vec![format!("{}.json", case.name)];
        if case.mode == "read" && case.kind != "component" {
            names.push(format!("{}.ours.json", case.name));
        }
        for name in names {
            let bytes = read(&name);
            let again = Record::decode(&case, &bytes).to_json();
            assert_eq!(show(&again), show(&bytes), "{name}");
        }
    }
}

#[test]
fn zuul_request_keeps_requestor_data() {
    let bytes = read("request-read-zuul.input.json");
    let r = NodeRequest::from_json("300-0000000009", &bytes).expect("zuul request");
    assert_eq!(r.state, Some(RequestState::Requested));
    assert_eq!(r.node_types, ["ubuntu-jammy", "ubuntu-jammy"]);
    assert!(r.reuse, "missing reuse defaults to true");
    let data = r
        .requestor_data
        .as_ref()
        .and_then(JsonValue::as_object)
        .expect("object");
    let span = data
        .get("span_info")
        .and_then(JsonValue::as_object)
        .expect("span_info");
    // A 128-bit trace id stays an exact integer.
    let trace_id = span.get("trace_id").expect("trace_id");
    assert!(
        matches!(trace_id, JsonValue::Int(_) | JsonValue::BigInt(_)),
        "{trace_id:?}"
    );
    let out = show(&r.to_json());
    let text = trace_id.to_python_json(false);
    assert!(out.contains(&format!("\"trace_id\": {text}")), "{out}");
    assert_eq!(r.to_json(), read("request-read-zuul.json"));
}

#[test]
fn floats_are_written_as_python_repr() {
    let rows: Vec<(u64, String)> =
        serde_json::from_slice(&read("floats.json")).expect("floats.json");
    assert!(rows.len() >= 1000);
    for (bits, expected) in rows {
        let value = f64::from_bits(bits);
        assert_eq!(python_float_repr(value), expected, "bits {bits:#x}");
    }
}

#[test]
fn every_golden_file_is_in_the_manifest() {
    let cases = cases();
    for entry in std::fs::read_dir(golden_dir()).expect("golden dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if !name.ends_with(".json") || name == "manifest.json" || name == "floats.json" {
            continue;
        }
        let stem = name
            .trim_end_matches(".json")
            .trim_end_matches(".input")
            .trim_end_matches(".ours");
        assert!(
            cases.iter().any(|c| c.name == stem),
            "{name} is not in the manifest"
        );
    }
}

/// Inputs crafted to hit every error path; none may panic.
fn garbage() -> Vec<Vec<u8>> {
    let mut inputs: Vec<Vec<u8>> = [
        &b""[..],
        b"null",
        b"[]",
        b"\"node\"",
        b"42",
        b"{",
        b"}",
        b"{\"state\": ",
        b"\xff\xfe{}",
        b"{\"state\": \"\\ud800\"}",
        b"{\"a\": 1e99999}",
        b"{\"type\": {\"a\": 1}}",
        b"{\"state_time\": \"yesterday\"}",
        b"{\"nodes\": [null]}",
        b"{\"formats\": [\"raw\"]}",
        b"{\"relative_priority\": 1.5}",
        b"{\"slot\": 99999999999999999999999}",
        b"{\"connection_port\": true}",
    ]
    .iter()
    .map(|b| b.to_vec())
    .collect();
    inputs.push("[".repeat(50_000).into_bytes());
    inputs.push(format!("{}{}", "{\"a\":".repeat(10_000), "}".repeat(10_000)).into_bytes());
    // Every known key with every kind of value.
    let keys = [
        "state",
        "state_time",
        "type",
        "connection_port",
        "ssh_port",
        "hold_expiration",
        "resources",
        "host_keys",
        "node_properties",
        "driver_data",
        "declined_by",
        "nodes",
        "node_types",
        "reuse",
        "relative_priority",
        "created_time",
        "requestor_data",
        "formats",
        "builder",
        "username",
        "python_path",
        "hostname",
        "model_api",
        "kind",
        "name",
        "supported_labels",
        "priority",
        "paused",
        "id",
        "version",
    ];
    let values = [
        "null",
        "true",
        "0",
        "-1",
        "1.5",
        "NaN",
        "-Infinity",
        "\"\"",
        "\"x\"",
        "[]",
        "[1]",
        "{}",
        "{\"k\": []}",
        "123456789012345678901234567890",
    ];
    for key in keys {
        for value in values {
            inputs.push(format!("{{\"{key}\": {value}}}").into_bytes());
        }
    }
    // Every prefix of a real document, and single-byte corruptions.
    let doc = read("node-full.json");
    for cut in 0..doc.len() {
        inputs.push(doc[..cut].to_vec());
    }
    for i in (0..doc.len()).step_by(7) {
        for b in [b'"', b'{', b'\\', b'0', 0x80] {
            let mut d = doc.clone();
            d[i] = b;
            inputs.push(d);
        }
    }
    inputs
}

#[test]
fn garbage_never_panics_and_non_objects_are_errors() {
    for input in garbage() {
        let _ = Node::from_json("1", &input).map(|r| r.to_json());
        let _ = NodeRequest::from_json("100-1", &input).map(|r| r.to_json());
        let _ = ImageBuild::from_json("b", &input).map(|r| r.to_json());
        let _ = ImageUpload::from_json("1", &input).map(|r| r.to_json());
        let _ = Component::from_json("c", &input).map(|r| r.to_json());
        for kind in ["launcher", "builder", "pool"] {
            let _ = Component::from_json_at(kind, "c", &input).map(|r| r.to_json());
        }
        if !input.trim_ascii_start().starts_with(b"{") {
            assert!(Node::from_json("1", &input).is_err(), "{}", show(&input));
            assert!(Component::from_json_at("pool", "c", &input).is_err());
        }
    }
}

#[test]
fn decoded_values_can_be_re_encoded_and_decoded_again_stably() {
    // Whatever decodes must re-encode to something that decodes to the
    // same record.
    for input in garbage() {
        if let Ok(node) = Node::from_json("1", &input) {
            let once = node.to_json();
            let again = Node::from_json("1", &once).expect("our own output decodes");
            assert_eq!(again.to_json(), once, "{}", show(&input));
        }
        if let Ok(request) = NodeRequest::from_json("1", &input) {
            let once = request.to_json();
            let again = NodeRequest::from_json("1", &once).expect("our own output decodes");
            assert_eq!(again.to_json(), once, "{}", show(&input));
        }
    }
}
