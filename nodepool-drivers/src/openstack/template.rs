//! Python's `str.format` over a node request, for a label's
//! `dynamic-instance-properties` (upstream formats each value with
//! `value.format(request=request.getSafeAttributes())`), and Python's
//! `str()` of YAML values, which upstream's image properties go through.
//!
//! The request is a JSON object of its safe attributes: `id`, `labels`,
//! `requestor`, `requestor_data`, `relative_priority`, `event_id`,
//! `created_time`, `tenant_name`. Fields read as in Python:
//! `{request.id}`, `{request.requestor_data[project]}`,
//! `{request.labels[0]}`; `{{` and `}}` are literal braces. Conversions
//! (`!s`, `!r`) are honoured; format specs (`:>10`) are not supported and
//! fail the value, as any other error does (upstream then leaves that
//! property out).

use serde_json::Value;

/// Format `template` with `request` bound to the name `request`.
pub fn format_request(template: &str, request: &Value) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '}' => return Err("Single '}' encountered in format string".to_string()),
            '{' => {
                let mut field = String::new();
                let mut closed = false;
                for f in chars.by_ref() {
                    if f == '}' {
                        closed = true;
                        break;
                    }
                    field.push(f);
                }
                if !closed {
                    return Err("Single '{' encountered in format string".to_string());
                }
                out.push_str(&replacement(&field, request)?);
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// One `{field!conversion:spec}`.
fn replacement(field: &str, request: &Value) -> Result<String, String> {
    if field.contains(':') {
        return Err(format!("format spec in {{{field}}} is not supported"));
    }
    let (path, conversion) = match field.split_once('!') {
        Some((p, c)) => (p, Some(c)),
        None => (field, None),
    };
    let value = lookup(path, request)?;
    match conversion {
        None | Some("s") => Ok(python_str(value)),
        Some("r") | Some("a") => Ok(python_repr(value)),
        Some(other) => Err(format!("Unknown conversion specifier {other}")),
    }
}

/// Resolve `request.a[b].c` against `request`.
fn lookup<'v>(path: &str, request: &'v Value) -> Result<&'v Value, String> {
    let rest = path
        .strip_prefix("request")
        .filter(|r| r.is_empty() || r.starts_with('.') || r.starts_with('['))
        .ok_or_else(|| format!("KeyError: {path:?}"))?;
    let mut value = request;
    let mut rest = rest;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let name = &after[..end];
            value = value
                .get(name)
                .ok_or_else(|| format!("AttributeError: no attribute {name:?}"))?;
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after
                .find(']')
                .ok_or_else(|| "Missing ']' in format string".to_string())?;
            let key = &after[..end];
            // Python indexes with an int when the key is all digits.
            value = match (key.parse::<usize>(), value) {
                (Ok(i), Value::Array(items)) => items.get(i),
                (_, Value::Object(map)) => map.get(key),
                _ => None,
            }
            .ok_or_else(|| format!("KeyError: {key:?}"))?;
            rest = &after[end + 1..];
        } else {
            return Err(format!("invalid field {path:?}"));
        }
    }
    Ok(value)
}

/// Python's `str()` of a YAML or JSON value: strings as they are,
/// `True`/`False`/`None`, lists and mappings in Python's `repr`.
pub fn python_str(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => python_repr(other),
    }
}

/// Python's `repr()` of a YAML or JSON value.
pub fn python_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".to_string(),
        Value::Bool(true) => "True".to_string(),
        Value::Bool(false) => "False".to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let quote = if s.contains('\'') && !s.contains('"') {
                '"'
            } else {
                '\''
            };
            let mut out = String::from(quote);
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\t' => out.push_str("\\t"),
                    c if c == quote => {
                        out.push('\\');
                        out.push(c);
                    }
                    c => out.push(c),
                }
            }
            out.push(quote);
            out
        }
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(python_repr).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}: {}",
                        python_repr(&Value::String(k.clone())),
                        python_repr(v)
                    )
                })
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request() -> Value {
        json!({
            "id": "100-0000000042",
            "labels": ["ubuntu", "centos"],
            "requestor": "zuul-scheduler",
            "requestor_data": {"project": "openstack/nova", "job": "tox"},
            "relative_priority": 0,
            "event_id": null,
            "created_time": 1700000000.5,
            "tenant_name": "main",
        })
    }

    #[test]
    fn fields_attributes_and_indexes_format_as_python() {
        let r = request();
        let f = |t: &str| format_request(t, &r);
        assert_eq!(f("{request.id}").as_deref(), Ok("100-0000000042"));
        assert_eq!(
            f("{request.tenant_name}/{request.requestor_data[project]}").as_deref(),
            Ok("main/openstack/nova")
        );
        assert_eq!(f("{request.labels[1]}").as_deref(), Ok("centos"));
        assert_eq!(f("{request.labels}").as_deref(), Ok("['ubuntu', 'centos']"));
        assert_eq!(f("{request.event_id}").as_deref(), Ok("None"));
        assert_eq!(f("{request.created_time}").as_deref(), Ok("1700000000.5"));
        assert_eq!(f("{request.id!r}").as_deref(), Ok("'100-0000000042'"));
        assert_eq!(
            f("{{literal}} {request.requestor}").as_deref(),
            Ok("{literal} zuul-scheduler")
        );
    }

    #[test]
    fn bad_templates_are_errors() {
        let r = request();
        for t in [
            "{request.nope}",
            "{other}",
            "{request.labels[5]}",
            "{request.id:>20}",
            "{request.id",
            "oops}",
        ] {
            assert!(format_request(t, &r).is_err(), "{t}");
        }
    }

    #[test]
    fn python_str_of_yaml_values() {
        assert_eq!(python_str(&json!(true)), "True");
        assert_eq!(python_str(&json!("x")), "x");
        assert_eq!(python_str(&json!(3)), "3");
        assert_eq!(
            python_str(&json!({"a": [1, "it's"]})),
            "{'a': [1, \"it's\"]}"
        );
    }
}
