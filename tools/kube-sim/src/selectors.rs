//! Label selectors (`a=b,c!=d,e in (x,y),f notin (z),g,!h`) and field
//! selectors (`metadata.name=x,status.phase!=Running`).

use serde_json::{Map, Value};

/// One requirement on a label.
#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<(String, Op)>);

/// Split at commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn bad(req: &str) -> String {
    format!("unable to parse requirement: found '{req}', expected a valid label selector")
}

fn set_values(rest: &str, req: &str) -> Result<Vec<String>, String> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| bad(req))?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    if values.iter().all(|v| valid_value(v)) {
        Ok(values)
    } else {
        Err(bad(req))
    }
}

impl LabelSelector {
    /// Parse `s`; the error is the API server's message.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self(reqs));
        }
        for part in split_top(s) {
            let req = part.trim();
            let (key, op) = if let Some(key) = req.strip_prefix('!') {
                (key.trim(), Op::NotExists)
            } else if let Some((key, v)) = req.split_once("!=") {
                (key.trim(), Op::NotEq(v.trim().to_string()))
            } else if let Some((key, v)) = req.split_once("==") {
                (key.trim(), Op::Eq(v.trim().to_string()))
            } else if let Some((key, v)) = req.split_once('=') {
                (key.trim(), Op::Eq(v.trim().to_string()))
            } else if let Some((key, rest)) = req.split_once(char::is_whitespace) {
                let rest = rest.trim_start();
                if let Some(set) = rest.strip_prefix("notin") {
                    (key, Op::NotIn(set_values(set, req)?))
                } else if let Some(set) = rest.strip_prefix("in") {
                    (key, Op::In(set_values(set, req)?))
                } else {
                    return Err(bad(req));
                }
            } else {
                (req, Op::Exists)
            };
            let value_ok = match &op {
                Op::Eq(v) | Op::NotEq(v) => valid_value(v),
                _ => true,
            };
            if !valid_key(key) || !value_ok {
                return Err(bad(req));
            }
            reqs.push((key.to_string(), op));
        }
        Ok(Self(reqs))
    }

    /// Whether an object with `labels` matches.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        self.0.iter().all(|(key, op)| {
            let value = labels.and_then(|l| l.get(key)).and_then(Value::as_str);
            match (op, value) {
                (Op::Eq(want), Some(v)) => v == want,
                (Op::Eq(_), None) => false,
                (Op::NotEq(want), v) => v != Some(want.as_str()),
                (Op::In(set), Some(v)) => set.iter().any(|s| s == v),
                (Op::In(_), None) => false,
                (Op::NotIn(set), v) => !v.is_some_and(|v| set.iter().any(|s| s == v)),
                (Op::Exists, v) => v.is_some(),
                (Op::NotExists, v) => v.is_none(),
            }
        })
    }
}

/// A parsed field selector: `path=value` or `path!=value` terms, all of
/// which must hold; a path is read from the object as dotted keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parse `s`; the error is the API server's message.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self(terms));
        }
        for part in s.split(',') {
            let term = part.trim();
            let (path, eq, value) = if let Some((p, v)) = term.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = term.split_once("==") {
                (p, true, v)
            } else if let Some((p, v)) = term.split_once('=') {
                (p, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                ));
            };
            terms.push((path.trim().to_string(), eq, value.trim().to_string()));
        }
        Ok(Self(terms))
    }

    /// Whether `object` matches; a missing field reads as `""`.
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, eq, want)| {
            let found = path
                .split('.')
                .try_fold(object, |v, key| v.get(key))
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                })
                .unwrap_or_default();
            (found == *want) == *eq
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn label_selectors_match_as_kubernetes() {
        let l = labels(json!({"a": "b", "c": "x", "e": "y"}));
        let yes = [
            "",
            "a=b",
            "a==b",
            "c!=d",
            "e in (x,y)",
            "e in (x, y),a=b",
            "f notin (z)",
            "a,!f",
            "nodepool.org/x!=1",
        ];
        for s in yes {
            assert!(LabelSelector::parse(s).unwrap().matches(Some(&l)), "{s}");
        }
        let no = ["a=c", "c!=x", "e in (z)", "e notin (y)", "f", "!a", "f=1"];
        for s in no {
            assert!(!LabelSelector::parse(s).unwrap().matches(Some(&l)), "{s}");
        }
        assert!(LabelSelector::parse("a in x").is_err());
        assert!(LabelSelector::parse("a=b c").is_err());
        assert!(LabelSelector::parse("a=b,c!=d,e in (x,y)")
            .unwrap()
            .matches(Some(&l)));
    }

    #[test]
    fn field_selectors_read_dotted_paths() {
        let pod =
            json!({"metadata": {"name": "p", "namespace": "n"}, "status": {"phase": "Running"}});
        let s = FieldSelector::parse("metadata.name=p,status.phase!=Pending").unwrap();
        assert!(s.matches(&pod));
        assert!(!FieldSelector::parse("metadata.name=q")
            .unwrap()
            .matches(&pod));
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
