//! No panic on any record the store holds: the decoders of nodes, node
//! requests, image builds, uploads and components are fed upstream's own
//! documents (tests/golden/) made hostile in one place, garbage of every
//! JSON type under the keys they read, and broken bytes. Decoding may fail
//! with an error; it must not panic, and a decoded record must encode and
//! decode again.

use std::panic::{catch_unwind, AssertUnwindSafe};

use serde_json::Value;

use super::{Component, ImageBuild, ImageUpload, Node, NodeRequest};
use crate::testing::fuzz::Fuzz;

/// Mutated records per base document (and seed).
const ROUNDS: usize = 400;

fn golden(name: &str) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/golden/");
    let text = std::fs::read_to_string(format!("{path}{name}"))
        .unwrap_or_else(|e| panic!("read golden {name}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse golden {name}: {e}"))
}

fn keys_of(value: &Value) -> Vec<String> {
    let mut keys = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    out.push(k.clone());
                    walk(v, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    walk(value, &mut keys);
    keys.sort();
    keys.dedup();
    keys
}

/// Decode `data` as every record kind; a decoded record is encoded and
/// decoded again. Returns a description of the first panic.
fn decode_all(data: &[u8]) -> Option<String> {
    let run = || {
        if let Ok(node) = Node::from_json("0000000001", data) {
            let again = Node::from_json("0000000001", &node.to_json());
            assert!(again.is_ok(), "a decoded node encodes to a decodable one");
        }
        if let Ok(request) = NodeRequest::from_json("200-0000000001", data) {
            let _ = request.priority_key();
            let _ = request.safe_attributes();
            let again = NodeRequest::from_json("200-0000000001", &request.to_json());
            assert!(
                again.is_ok(),
                "a decoded request encodes to a decodable one"
            );
        }
        if let Ok(build) = ImageBuild::from_json("0000000001", data) {
            let again = ImageBuild::from_json("0000000001", &build.to_json());
            assert!(again.is_ok(), "a decoded build encodes to a decodable one");
        }
        if let Ok(upload) = ImageUpload::from_json("0000000001", data) {
            let _ = upload.validation();
            let _ = upload.failed_validation();
            let again = ImageUpload::from_json("0000000001", &upload.to_json());
            assert!(again.is_ok(), "a decoded upload encodes to a decodable one");
        }
        if let Ok(component) = Component::from_json("launcher-1", data) {
            let again = Component::from_json("launcher-1", &component.to_json());
            assert!(
                again.is_ok(),
                "a decoded component encodes to a decodable one"
            );
        }
    };
    catch_unwind(AssertUnwindSafe(run)).err().map(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".to_string())
    })
}

fn check(data: &[u8], failures: &mut Vec<String>) {
    if let Some(panic) = decode_all(data) {
        failures.push(format!(
            "{panic}\n  input: {}",
            String::from_utf8_lossy(&data[..data.len().min(400)])
        ));
    }
}

#[test]
fn record_decoders_never_panic_on_hostile_documents() {
    let bases = [
        "node-full.json",
        "node-large-ints.json",
        "request-full.json",
        "build-full.json",
        "upload-full.json",
        "component-pool.json",
        "component-launcher.json",
    ];
    let mut failures = Vec::new();
    let mut tried = 0;
    for (seed, name) in bases.iter().enumerate() {
        let base = golden(name);
        let owned = keys_of(&base);
        let keys: Vec<&str> = owned.iter().map(String::as_str).collect();
        let mut fuzz = Fuzz::new(seed as u64 + 1);
        for _ in 0..ROUNDS {
            let hostile = fuzz.mutate(&base, &keys);
            check(hostile.to_string().as_bytes(), &mut failures);
            let garbage = fuzz.garbage(&keys, 4);
            check(garbage.to_string().as_bytes(), &mut failures);
            tried += 2;
        }
    }
    assert!(tried > 5000, "tried {tried} documents");
    assert!(
        failures.is_empty(),
        "{} of {tried} documents made a decoder panic; first: {}",
        failures.len(),
        failures[0]
    );
}

#[test]
fn record_decoders_never_panic_on_broken_bytes() {
    let base = golden("node-full.json").to_string();
    let mut inputs: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"null".to_vec(),
        b"NaN".to_vec(),
        b"{\"state_time\": NaN, \"created_time\": Infinity}".to_vec(),
        b"{\"state_time\": -Infinity, \"hold_expiration\": 1e999}".to_vec(),
        b"{\"connection_port\": 1e999, \"resources\": {\"cores\": -1e999}}".to_vec(),
        b"{\"state_time\": 99999999999999999999999999999999999}".to_vec(),
        b"{\"hold_expiration\": -99999999999999999999999999999999999}".to_vec(),
        b"{\"nodes\": [1, 2.5, null, {}], \"node_types\": \"label\"}".to_vec(),
        b"{\"state\": \"\xff\xfe\"}".to_vec(),
        b"{\"a\": \"\\ud800\"}".to_vec(),
        "[".repeat(100_000).into_bytes(),
        "{\"a\":".repeat(50_000).into_bytes(),
    ];
    // Every prefix of a real record, and the record with one byte changed.
    let bytes = base.as_bytes();
    for cut in (0..bytes.len()).step_by(7) {
        inputs.push(bytes[..cut].to_vec());
    }
    let mut fuzz = Fuzz::new(99);
    for _ in 0..500 {
        let mut changed = bytes.to_vec();
        let at = fuzz.below(changed.len());
        changed[at] = (fuzz.next_u64() & 0xff) as u8;
        inputs.push(changed);
    }
    let mut failures = Vec::new();
    for input in &inputs {
        check(input, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "{} of {} inputs made a decoder panic; first: {}",
        failures.len(),
        inputs.len(),
        failures[0]
    );
}
