//! `meta.k8s.io/v1` Tables, which kubectl asks for to print objects for
//! humans (`kubectl get pods` without `-o`).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::kinds::Kind;

fn column(name: &str, format: &str) -> Value {
    json!({"name": name, "type": "string", "format": format, "description": name, "priority": 0})
}

/// Seconds since an RFC 3339 time (`…Z`), or `None` when unparsable.
fn age_secs(ts: &str) -> Option<u64> {
    let b = ts.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| ts.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let then = days * 86_400 + hh * 3600 + mm * 60 + ss;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(now.saturating_sub(u64::try_from(then).ok()?))
}

/// kubectl's short ages: `42s`, `5m`, `3h`, `2d`.
fn age(object: &Value) -> String {
    let Some(secs) = object["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(age_secs)
    else {
        return "<unknown>".into();
    };
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn row(kind: &Kind, o: &Value) -> Value {
    let name = o["metadata"]["name"].clone();
    let deleting = o["metadata"].get("deletionTimestamp").is_some();
    let cells = match kind.plural {
        "pods" => {
            let statuses = o["status"]["containerStatuses"].as_array();
            let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
            let ready = statuses.map_or(0, |s| s.iter().filter(|c| c["ready"] == true).count());
            let phase = if deleting {
                "Terminating"
            } else {
                o["status"]["phase"].as_str().unwrap_or("Unknown")
            };
            json!([name, format!("{ready}/{total}"), phase, 0, age(o)])
        }
        "namespaces" => {
            let phase = o["status"]["phase"].as_str().unwrap_or("Active");
            json!([name, phase, age(o)])
        }
        "secrets" => {
            let n = o["data"].as_object().map_or(0, serde_json::Map::len);
            json!([name, o["type"], n, age(o)])
        }
        _ => json!([name, age(o)]),
    };
    json!({"cells": cells, "object": o})
}

fn columns(kind: &Kind) -> Vec<Value> {
    let names: &[(&str, &str)] = match kind.plural {
        "pods" => &[
            ("Name", "name"),
            ("Ready", ""),
            ("Status", ""),
            ("Restarts", ""),
            ("Age", ""),
        ],
        "namespaces" => &[("Name", "name"), ("Status", ""), ("Age", "")],
        "secrets" => &[("Name", "name"), ("Type", ""), ("Data", ""), ("Age", "")],
        _ => &[("Name", "name"), ("Age", "")],
    };
    names.iter().map(|(n, f)| column(n, f)).collect()
}

/// A Table of `objects`; `rv` is the list's resourceVersion.
pub fn table(kind: &Kind, objects: &[Value], rv: Option<u64>) -> Value {
    let rows: Vec<Value> = objects.iter().map(|o| row(kind, o)).collect();
    let mut metadata = json!({});
    if let (Some(rv), Some(m)) = (rv, metadata.as_object_mut()) {
        m.insert("resourceVersion".into(), rv.to_string().into());
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns(kind),
        "rows": rows,
    })
}
