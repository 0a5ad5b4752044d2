use super::*;

fn roundtrip(input: &str) -> String {
    match parse(input.as_bytes()) {
        Ok(v) => v.to_python_json(false),
        Err(e) => format!("error: {e}"),
    }
}

#[test]
fn float_repr_matches_python_for_common_shapes() {
    let cases = [
        (0.0, "0.0"),
        (-0.0, "-0.0"),
        (1.0, "1.0"),
        (0.1, "0.1"),
        (1700000000.123456, "1700000000.123456"),
        (1700000000.0, "1700000000.0"),
        (1e15, "1000000000000000.0"),
        (9999999999999998.0, "9999999999999998.0"),
        (1e16, "1e+16"),
        (1.5e16, "1.5e+16"),
        (1e22, "1e+22"),
        (0.0001, "0.0001"),
        (0.00012345, "0.00012345"),
        (1e-5, "1e-05"),
        (1.5e-7, "1.5e-07"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (f64::INFINITY, "Infinity"),
        (f64::NEG_INFINITY, "-Infinity"),
        (f64::NAN, "NaN"),
    ];
    for (value, expected) in cases {
        assert_eq!(python_float_repr(value), expected, "{value:e}");
    }
}

#[test]
fn strings_are_escaped_like_ensure_ascii() {
    let v = JsonValue::String("a\"b\\c\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}/é✓😀".into());
    assert_eq!(
        v.to_python_json(false),
        r#""a\"b\\c\n\r\t\b\f\u0000\u001f\u007f/\u00e9\u2713\ud83d\ude00""#
    );
}

#[test]
fn integers_of_any_size_stay_integers() {
    assert_eq!(
        roundtrip("256983031818030469173405653554530164085"),
        "256983031818030469173405653554530164085"
    );
    assert_eq!(
        roundtrip("-1234567890123456789012345678901234567890"),
        "-1234567890123456789012345678901234567890"
    );
    assert_eq!(roundtrip("-0"), "0");
    assert_eq!(roundtrip("1E2"), "100.0");
    assert_eq!(roundtrip("-0.0"), "-0.0");
    assert_eq!(roundtrip("1e400"), "Infinity");
}

#[test]
fn parse_accepts_what_python_accepts() {
    assert_eq!(
        roundtrip(" {\"a\" :[1,2.50,null,true,false,\"\\u00e9\\ud83d\\ude00\"],\"b\":{}} \n"),
        r#"{"a": [1, 2.5, null, true, false, "\u00e9\ud83d\ude00"], "b": {}}"#
    );
    assert_eq!(
        roundtrip("[NaN, Infinity, -Infinity]"),
        "[NaN, Infinity, -Infinity]"
    );
    // A repeated key keeps its first position and its last value.
    assert_eq!(
        roundtrip(r#"{"a": 1, "b": 2, "a": 3}"#),
        r#"{"a": 3, "b": 2}"#
    );
    assert_eq!(roundtrip("\u{feff}[]"), "[]");
}

#[test]
fn parse_rejects_what_python_rejects() {
    for bad in [
        "",
        "{",
        "[1,]",
        "{\"a\":1,}",
        "01",
        "1.",
        "1e",
        "-",
        "nul",
        "'a'",
        "{a:1}",
        "\"\\x\"",
        "\"a\nb\"",
        "[1] 2",
        "\"\\ud800\"",
        "\"\\ud800\\u0041\"",
        "\"\\u12\"",
        "{\"a\" 1}",
        "tru",
        "\"abc",
    ] {
        assert!(parse(bad.as_bytes()).is_err(), "{bad:?} should not parse");
    }
    assert!(parse(b"\xff\xfe").is_err());
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let deep = "[".repeat(100_000);
    assert!(parse(deep.as_bytes()).is_err());
    let ok = format!("{}{}", "[".repeat(200), "]".repeat(200));
    assert!(parse(ok.as_bytes()).is_ok());
}

#[test]
fn sort_keys_sorts_nested_objects_by_code_point() {
    let v = parse(r#"{"b": {"z": 1, "a": 2}, "B": 0, "é": 1, "a": [{"y": 1, "x": 2}]}"#.as_bytes())
        .expect("valid");
    assert_eq!(
        v.to_python_json(true),
        r#"{"B": 0, "a": [{"x": 2, "y": 1}], "b": {"a": 2, "z": 1}, "\u00e9": 1}"#
    );
}

#[test]
fn object_insert_keeps_position_of_existing_key() {
    let mut o = JsonObject::new();
    o.insert("a", 1);
    o.insert("b", 2);
    assert_eq!(o.insert("a", 3), Some(JsonValue::Int(1)));
    assert_eq!(o.keys().cloned().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(o.remove("a"), Some(JsonValue::Int(3)));
    assert_eq!(o.len(), 1);
}
