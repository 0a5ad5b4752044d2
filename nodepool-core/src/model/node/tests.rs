use super::*;

#[test]
fn state_names_are_upstream_spelling() {
    assert_eq!(NodeState::InUse.to_string(), "in-use");
    assert_eq!("in-use".parse::<NodeState>(), Ok(NodeState::InUse));
    assert!("in_use".parse::<NodeState>().is_err());
    for state in NodeState::ALL {
        assert_eq!(state.as_str().parse::<NodeState>(), Ok(*state));
    }
}

#[test]
fn set_state_stamps_the_current_time() {
    let before = crate::model::now();
    let node = Node::new(NodeState::Building);
    assert_eq!(node.state, Some(NodeState::Building));
    let t = node.state_time.expect("stamped");
    assert!(t >= before && t <= crate::model::now());
}

#[test]
fn hold_expiration_is_read_as_python_int() {
    let cases: &[(&str, Option<i64>)] = &[
        ("\"3600\"", Some(3600)),
        ("\" -1_000 \\n\"", Some(-1000)),
        ("\"+7\"", Some(7)),
        ("\"1__0\"", Some(0)),
        ("\"_1\"", Some(0)),
        ("\"1.5\"", Some(0)),
        ("\"forever\"", Some(0)),
        ("12.7", Some(12)),
        ("-12.7", Some(-12)),
        ("true", Some(1)),
        ("NaN", Some(0)),
        ("null", None),
    ];
    for (raw, expected) in cases {
        let doc = format!("{{\"hold_expiration\": {raw}}}");
        let node = Node::from_json("1", doc.as_bytes()).expect(raw);
        assert_eq!(node.hold_expiration, *expected, "{raw}");
    }
    for raw in ["[1]", "{}", "Infinity", "\"99999999999999999999\"", "1e300"] {
        let doc = format!("{{\"hold_expiration\": {raw}}}");
        assert!(Node::from_json("1", doc.as_bytes()).is_err(), "{raw}");
    }
}

#[test]
fn wrong_types_are_errors_naming_the_key() {
    let err = Node::from_json("0000000001", br#"{"provider": 5}"#).expect_err("wrong type");
    let msg = err.to_string();
    assert!(
        msg.contains("provider") && msg.contains("0000000001"),
        "{msg}"
    );
    let err = Node::from_json("1", br#"{"state": "running"}"#).expect_err("bad state");
    assert!(err.to_string().contains("\"running\""), "{err}");
    assert!(Node::from_json("1", br#"{"type": 5}"#).is_err());
    assert!(Node::from_json("1", br#"{"type": ["a", 1]}"#).is_err());
}

#[test]
fn changed_integer_time_is_written_as_float() {
    let mut node =
        Node::from_json("1", br#"{"state": "ready", "state_time": 1700000000}"#).expect("valid");
    assert!(String::from_utf8_lossy(&node.to_json()).contains("\"state_time\": 1700000000,"));
    node.state_time = Some(1700000000.5);
    assert!(String::from_utf8_lossy(&node.to_json()).contains("\"state_time\": 1700000000.5,"));
}

#[test]
fn model_error_converts_to_corrupt() {
    let err = Node::from_json("0000000007", b"[]").expect_err("not an object");
    match crate::Error::from(err) {
        crate::Error::Corrupt { path, message } => {
            assert_eq!(path, "node 0000000007");
            assert!(message.contains("a list"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn zuul_user_data_object_is_read_and_written_back() {
    // Zuul's useNodeSet writes user_data as an object.
    let doc = br#"{"state": "in-use", "state_time": 1700000000.5, "type": ["small"], "user_data": {"zuul_system": "abc", "project_name": "org/repo"}}"#;
    let node = Node::from_json("0000000009", doc).expect("Zuul's in-use node decodes");
    match &node.user_data {
        Some(JsonValue::Object(obj)) => assert_eq!(obj.len(), 2),
        other => panic!("user_data should be an object, got {other:?}"),
    }
    let again = Node::from_json("0000000009", &node.to_json()).expect("round trip");
    assert_eq!(again.user_data, node.user_data);
    assert!(String::from_utf8_lossy(&node.to_json())
        .contains(r#""user_data": {"zuul_system": "abc", "project_name": "org/repo"}"#));
}

#[test]
fn a_connection_port_mapping_round_trips_as_upstream_writes_it() {
    let data = br#"{"state": "ready", "connection_port": {"name": "main-0000000001", "namespace": "main-0000000001", "host": "https://k8s:6443", "skiptls": false, "token": "t0k", "user": "zuul-worker", "ca_crt": "Q0E=", "pod": "pod-fedora"}, "ssh_port": {"name": "main-0000000001", "namespace": "main-0000000001", "host": "https://k8s:6443", "skiptls": false, "token": "t0k", "user": "zuul-worker", "ca_crt": "Q0E=", "pod": "pod-fedora"}, "connection_type": "kubectl"}"#;
    let node = Node::from_json("0000000001", data).expect("a mapping is a valid port");
    let details = node.connection_details.clone().expect("details kept");
    assert_eq!(
        details.get("pod").and_then(JsonValue::as_str),
        Some("pod-fedora")
    );
    assert_eq!(node.connection_port, 22);
    let written = Node::from_json("0000000001", &node.to_json()).expect("reads back");
    assert_eq!(written.connection_details, Some(details));
    let text = String::from_utf8(node.to_json()).expect("utf-8");
    assert!(
        text.contains(r#""ssh_port": {"name": "main-0000000001""#),
        "{text}"
    );
}

#[test]
fn an_upstream_aws_external_id_mapping_is_read_as_its_instance_and_written_back() {
    // Upstream's aws driver: external_id {"instance": ..., "host": ...}.
    let doc = br#"{"state": "ready", "type": ["aws"], "external_id": {"instance": "i-0123456789abcdef0", "host": "h-0abc"}, "provider": "ec2-us-west-2"}"#;
    let node = Node::from_json("0000000007", doc).expect("upstream's aws node decodes");
    assert_eq!(node.external_id.as_deref(), Some("i-0123456789abcdef0"));
    let text = String::from_utf8(node.to_json()).expect("utf-8");
    assert!(
        text.contains(r#""external_id": {"instance": "i-0123456789abcdef0", "host": "h-0abc"}"#),
        "{text}"
    );
    // A host-only mapping (a dedicated host being allocated) names the host.
    let host_only = br#"{"state": "building", "external_id": {"host": "h-0abc"}}"#;
    let node = Node::from_json("0000000008", host_only).expect("decodes");
    assert_eq!(node.external_id.as_deref(), Some("h-0abc"));
    // Once we set another id, the string is written.
    let mut changed = node.clone();
    changed.external_id = Some("i-new".to_string());
    let text = String::from_utf8(changed.to_json()).expect("utf-8");
    assert!(text.contains(r#""external_id": "i-new""#), "{text}");
}
