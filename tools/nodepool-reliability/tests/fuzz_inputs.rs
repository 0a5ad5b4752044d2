//! Fuzzing of what nodepool reads from outside: the configuration file and
//! every JSON document read from the store. No input may panic; a bad
//! configuration is an error that names the file and a line, a bad record
//! an error that names the record.

use std::path::{Path, PathBuf};

use nodepool_core::config::{load_str, DriverRegistry};
use nodepool_core::model::{Component, ImageBuild, ImageUpload, Node, NodeRequest};
use proptest::prelude::*;

const CONFIG: &str = r#"
webapp:
  port: 8005
labels:
  - name: small
    min-ready: 1
  - name: big
providers:
  - name: sim
    driver: openstack
    cloud: chaos
    rate: 0.5
    boot-timeout: 10
    cloud-images:
      - name: cirros
    pools:
      - name: main
        max-servers: 20
        labels:
          - name: small
            cloud-image: cirros
            flavor-name: m1.tiny
          - name: big
            cloud-image: cirros
            min-ram: 8192
  - name: fake
    driver: fake
    cloud: fake
    cloud-images:
      - name: Fake Precise
    pools:
      - name: p
        labels:
          - name: small
            cloud-image: Fake Precise
            min-ram: 8192
  - name: static
    driver: static
    pools:
      - name: s
        nodes:
          - name: host1.example.org
            labels: [small]
"#;

fn registry() -> DriverRegistry {
    let mut reg = DriverRegistry::new();
    nodepool_drivers::register_builtin(&mut reg);
    reg
}

/// Change `text` at a few random places: delete, duplicate or replace a
/// byte range with YAML punctuation.
fn mutate(text: &str, edits: &[(usize, usize, u8)]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    const PIECES: &[&str] = &[
        ":", "- ", "  ", "\n", "{", "}", "[", "]", "&a ", "*a", "!!str ", "'", "\"", "#", "-1",
        "1e400", "null", "~", "\t", "é", "\u{0}", "<<: *a", "? ", "|", ">",
    ];
    for &(at, len, piece) in edits {
        if bytes.is_empty() {
            break;
        }
        let at = at % bytes.len();
        let end = (at + len % 8).min(bytes.len());
        let what = PIECES[piece as usize % PIECES.len()].as_bytes();
        match piece % 3 {
            0 => {
                bytes.drain(at..end);
            }
            1 => {
                let dup = bytes[at..end].to_vec();
                bytes.splice(at..at, dup);
            }
            _ => {
                bytes.splice(at..end, what.iter().copied());
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn check_config(text: &str) {
    let reg = registry();
    if let Err(errors) = load_str("nodepool.yaml", text, &reg) {
        let message = errors.to_string();
        assert!(
            message.contains("nodepool.yaml"),
            "a config error must name the file: {message:?}\ninput:\n{text}"
        );
        assert!(
            message.lines().all(|l| !l.trim().is_empty()),
            "no empty error lines: {message:?}"
        );
    }
}

#[test]
fn the_unmutated_fuzz_config_loads() {
    let reg = registry();
    let config = load_str("nodepool.yaml", CONFIG, &reg);
    assert!(config.is_ok(), "{:?}", config.err().map(|e| e.to_string()));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn config_loader_never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
        check_config(&text);
    }

    #[test]
    fn config_loader_names_file_on_mutated_config(
        edits in prop::collection::vec((any::<usize>(), any::<usize>(), any::<u8>()), 1..6)
    ) {
        check_config(&mutate(CONFIG, &edits));
    }

    #[test]
    fn config_loader_never_panics_on_yaml_shaped_text(
        text in "([a-z-]{1,8}: ?(\\[|\\{|-|[0-9]{1,3}|[a-z]{0,5}|'|\"|&x|\\*x)?\n {0,6}){0,30}"
    ) {
        check_config(&text);
    }
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden")
}

/// Every golden document of `kind` (node, request, build, upload,
/// component).
fn golden(kind: &str) -> Vec<Vec<u8>> {
    let mut docs: Vec<Vec<u8>> = std::fs::read_dir(golden_dir())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!("{kind}-"))
                })
                .filter_map(|e| std::fs::read(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    docs.sort();
    docs
}

/// Decode `data` as every record type; none may panic, every error names
/// the record.
fn decode_all(data: &[u8]) {
    let id = "0000000042";
    let checks: [(&str, Option<String>); 5] = [
        (
            "node",
            Node::from_json(id, data).err().map(|e| e.to_string()),
        ),
        (
            "request",
            NodeRequest::from_json(id, data)
                .err()
                .map(|e| e.to_string()),
        ),
        (
            "build",
            ImageBuild::from_json(id, data).err().map(|e| e.to_string()),
        ),
        (
            "upload",
            ImageUpload::from_json(id, data)
                .err()
                .map(|e| e.to_string()),
        ),
        (
            "component",
            Component::from_json(id, data).err().map(|e| e.to_string()),
        ),
    ];
    for (kind, error) in checks {
        if let Some(message) = error {
            assert!(
                message.contains(id),
                "a {kind} decoding error must name the record: {message:?}"
            );
        }
    }
}

fn all_golden() -> &'static [Vec<u8>] {
    static ALL: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        ["node", "request", "build", "upload", "component"]
            .iter()
            .flat_map(|k| golden(k))
            .collect()
    })
}

#[test]
fn golden_documents_are_there_to_mutate() {
    for kind in ["node", "request", "build", "upload", "component"] {
        let docs = golden(kind);
        assert!(
            !docs.is_empty(),
            "no golden {kind} documents in {}",
            golden_dir().display()
        );
        // Golden documents of their own kind decode.
        for doc in &docs {
            let ok = match kind {
                "node" => Node::from_json("1", doc).is_ok(),
                "request" => NodeRequest::from_json("1", doc).is_ok(),
                "build" => ImageBuild::from_json("1", doc).is_ok(),
                "upload" => ImageUpload::from_json("1", doc).is_ok(),
                _ => Component::from_json("1", doc).is_ok(),
            };
            assert!(
                ok,
                "golden {kind} does not decode: {}",
                String::from_utf8_lossy(doc)
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn records_never_panic_on_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..300)) {
        decode_all(&data);
    }

    #[test]
    fn records_never_panic_on_json_shaped_text(
        text in "\\{(\"[a-z_]{1,12}\": ?(-?[0-9]{1,25}(\\.[0-9]{1,5})?(e[0-9]{1,4})?|\"[^\"]{0,8}\"|null|true|\\[\\]|\\{\\}|\\[1, \"x\"\\]), ?){0,8}\\}"
    ) {
        decode_all(text.as_bytes());
    }

    #[test]
    fn records_never_panic_on_mutated_golden_documents(
        pick in any::<usize>(),
        edits in prop::collection::vec((any::<usize>(), any::<usize>(), any::<u8>()), 1..5)
    ) {
        let all = all_golden();
        prop_assume!(!all.is_empty());
        let doc = String::from_utf8_lossy(&all[pick % all.len()]).into_owned();
        decode_all(mutate(&doc, &edits).as_bytes());
    }
}
