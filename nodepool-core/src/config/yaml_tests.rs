use super::*;

fn root(text: &str) -> Node {
    parse("t.yaml", text)
        .expect("parses")
        .root
        .expect("has a root")
}

#[test]
fn plain_scalars_resolve_like_pyyaml() {
    let n =
        root("a: yes\nb: off\nc: 0x1f\nd: 017\ne: 1_000\nf: 1:30\ng: 1.5\nh: 1e3\ni: ~\nj: '12'\n");
    assert_eq!(n.get("a").map(|n| &n.value), Some(&Value::Bool(true)));
    assert_eq!(n.get("b").map(|n| &n.value), Some(&Value::Bool(false)));
    assert_eq!(n.get("c").map(|n| &n.value), Some(&Value::Int(31)));
    assert_eq!(n.get("d").map(|n| &n.value), Some(&Value::Int(15)));
    assert_eq!(n.get("e").map(|n| &n.value), Some(&Value::Int(1000)));
    assert_eq!(n.get("f").map(|n| &n.value), Some(&Value::Int(90)));
    assert_eq!(n.get("g").map(|n| &n.value), Some(&Value::Float(1.5)));
    assert_eq!(
        n.get("h").map(|n| &n.value),
        Some(&Value::Str("1e3".into()))
    );
    assert_eq!(n.get("i").map(|n| &n.value), Some(&Value::Null));
    assert_eq!(n.get("j").map(|n| &n.value), Some(&Value::Str("12".into())));
}

#[test]
fn repeated_key_keeps_last_value_and_warns() {
    let doc = parse("t.yaml", "a: 1\nb: 2\na: 3\n").expect("parses");
    let n = doc.root.expect("root");
    assert_eq!(n.get("a").map(|n| &n.value), Some(&Value::Int(3)));
    assert_eq!(doc.warnings.len(), 1);
    assert!(
        doc.warnings[0].starts_with("t.yaml:3:1: key \"a\" repeated"),
        "{}",
        doc.warnings[0]
    );
}

#[test]
fn anchors_aliases_and_merge_keys_resolve_with_pyyaml_precedence() {
    let text = "\
base: &base {x: 1, y: 2}
other: &other {y: 20, z: 30}
single:
  <<: *base
  y: 5
multi:
  <<: [*base, *other]
alias: *base
";
    let n = root(text);
    let single = n.get("single").expect("single");
    assert_eq!(single.get("x").map(|n| &n.value), Some(&Value::Int(1)));
    assert_eq!(single.get("y").map(|n| &n.value), Some(&Value::Int(5)));
    let multi = n.get("multi").expect("multi");
    assert_eq!(multi.get("y").map(|n| &n.value), Some(&Value::Int(2)));
    assert_eq!(multi.get("z").map(|n| &n.value), Some(&Value::Int(30)));
    assert_eq!(n.get("alias"), n.get("base"));
}

#[test]
fn positions_are_one_based_line_and_column() {
    let n = root("top:\n  key: value\n");
    let v = n.get("top").and_then(|t| t.get("key")).expect("value");
    assert_eq!((v.line, v.column), (2, 8));
}

#[test]
fn syntax_error_names_file_line_and_column() {
    let err = parse("bad.yaml", "a: [1, 2\nb: 3\n").expect_err("invalid");
    assert_eq!(err.file, "bad.yaml");
    assert!(err.line >= 2, "{err}");
    assert!(err.message.starts_with("YAML syntax error"), "{err}");
}

#[test]
fn undefined_alias_is_an_error_not_a_panic() {
    let err = parse("bad.yaml", "a: *nothing\n").expect_err("invalid");
    assert_eq!(err.line, 1);
}

#[test]
fn env_substitution_only_replaces_nodepool_variables() {
    let env = [("NODEPOOL_HOST", "zk1"), ("HOME", "/root")];
    let out = substitute_env_vars("host: %(NODEPOOL_HOST) home: %(HOME)", env);
    assert_eq!(out, "host: zk1 home: %(HOME)");
}

#[test]
fn quoted_and_tagged_scalars_stay_strings() {
    let n = root("a: \"yes\"\nb: !!str 10\nc: |\n  line one\n  line two\n");
    assert_eq!(n.get("a").and_then(Node::as_str), Some("yes"));
    assert_eq!(n.get("b").and_then(Node::as_str), Some("10"));
    assert_eq!(
        n.get("c").and_then(Node::as_str),
        Some("line one\nline two\n")
    );
}

#[test]
fn floats_need_a_dot_as_in_yaml_1_1() {
    let n = root("a: 1.\nb: .5\nc: 1.5e+3\nd: -.inf\ne: 1.5e3\n");
    assert_eq!(n.get("a").map(|n| &n.value), Some(&Value::Float(1.0)));
    assert_eq!(n.get("b").map(|n| &n.value), Some(&Value::Float(0.5)));
    assert_eq!(n.get("c").map(|n| &n.value), Some(&Value::Float(1500.0)));
    assert_eq!(
        n.get("d").map(|n| &n.value),
        Some(&Value::Float(f64::NEG_INFINITY))
    );
    assert_eq!(
        n.get("e").map(|n| &n.value),
        Some(&Value::Str("1.5e3".into()))
    );
}

#[test]
fn only_a_plain_merge_key_merges() {
    let n = root("base: &b {x: 1}\nplain: {<<: *b, y: 2}\nquoted: {\"<<\": *b, y: 2}\n");
    let plain = n.get("plain").expect("plain");
    assert_eq!(plain.get("x").map(|n| &n.value), Some(&Value::Int(1)));
    assert!(plain.get("<<").is_none());
    // PyYAML: a quoted "<<" is an ordinary key holding the aliased mapping.
    let quoted = n.get("quoted").expect("quoted");
    assert!(quoted.get("x").is_none());
    assert!(matches!(
        quoted.get("<<").map(|n| &n.value),
        Some(Value::Map(_))
    ));
}
