//! Upstream nodepool 11 is the oracle for which configs are valid.
//!
//! Every upstream fixture of the drivers we have, our examples, and at
//! least 1,000 configs made from them by a seeded generator of the edits
//! operators make (drain a provider, remove or rename a label, duplicate a
//! pool, add or remove diskimages, anchors and merge keys, repeated keys,
//! unknown keys, wrong types, missing required keys, env substitution) go
//! to upstream's `config-validate` and loader (`scripts/compat/config_oracle.py`,
//! one Python process) and to ours. Every disagreement must be explained:
//! - we reject what upstream's validator passes but its own loader then
//!   rejects (upstream's launcher could not run it either): kept stricter,
//!   listed in doc/migrating.md;
//! - the config uses a key of ours that upstream does not know
//!   ([`OUR_KEYS`]), so upstream rejects what we accept.
//!
//! Needs `NODEPOOL_UPSTREAM_SDIST` and `NODEPOOL_TEST_UPSTREAM_PYTHON`
//! (scripts/test.sh sets both); without them it prints SKIP.
//! `NODEPOOL_DIFF_SEED` and `NODEPOOL_DIFF_CASES` change the generated set;
//! `NODEPOOL_DIFF_DUMP=DIR` writes each unexplained config there;
//! `NODEPOOL_DIFF_VERBOSE=1` prints each config we reject more strictly.
//! Run with `cargo test -p nodepool --test config_differential -- --nocapture`.

mod fixtures_support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use fixtures_support::{drivers_of, fill_placeholders, registry, sdist, yaml_files, NOT_A_CONFIG};
use nodepool_core::config::{load_str, yaml};
use serde_json::{json, Map, Value};

/// Keys of nodepool-rs that upstream's schema does not have: a config
/// that uses one is accepted by us and rejected by upstream on purpose.
const OUR_KEYS: &[&str] = &["fake-settings", "api-token"];

/// Fixtures that are not a whole nodepool.yaml for this test (besides
/// [`NOT_A_CONFIG`]): read together with a secure file.
const SKIPPED_FIXTURES: &[&str] = &["secure_file_config.yaml"];

/// An environment variable both sides substitute (`%(NODEPOOL_...)`).
const ENV_NAME: &str = "NODEPOOL_DIFF_VALUE";
const ENV_VALUE: &str = "substituted-value";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// SplitMix64: seeded, so a run can be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            items.get(self.below(items.len()))
        }
    }
}

/// A step from a value to one of its children.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn child_mut<'a>(v: &'a mut Value, step: &Step) -> Option<&'a mut Value> {
    match (v, step) {
        (Value::Object(m), Step::Key(k)) => m.get_mut(k),
        (Value::Array(a), Step::Index(i)) => a.get_mut(*i),
        _ => None,
    }
}

fn at_mut<'a>(v: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, s| child_mut(v, s))
}

/// Paths of every value under `v` (itself included).
fn paths(v: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(here.clone());
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                here.push(Step::Key(k.clone()));
                paths(c, here, out);
                here.pop();
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                here.push(Step::Index(i));
                paths(c, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn all_paths(v: &Value) -> Vec<Vec<Step>> {
    let mut out = Vec::new();
    paths(v, &mut Vec::new(), &mut out);
    out
}

fn providers(v: &mut Value) -> Vec<&mut Map<String, Value>> {
    match v.get_mut("providers") {
        Some(Value::Array(list)) => list.iter_mut().filter_map(Value::as_object_mut).collect(),
        _ => Vec::new(),
    }
}

/// One operator edit; returns its name, or `None` when it does not apply.
fn mutate(rng: &mut Rng, config: &mut Value) -> Option<&'static str> {
    match rng.below(12) {
        0 => {
            // Drain a provider as upstream documents it.
            let mut list = providers(config);
            let n = list.len();
            let p = list.get_mut(rng.below(n))?;
            let max = if rng.below(2) == 0 { 0 } else { -1 };
            if let Some(Value::Array(pools)) = p.get_mut("pools") {
                for pool in pools.iter_mut().filter_map(Value::as_object_mut) {
                    pool.insert("max-servers".into(), json!(max));
                }
            }
            p.insert("diskimages".into(), json!([]));
            Some("drain a provider")
        }
        1 => {
            let Value::Array(labels) = config.get_mut("labels")? else {
                return None;
            };
            if labels.is_empty() {
                return None;
            }
            let i = rng.below(labels.len());
            labels.remove(i);
            Some("remove a top-level label")
        }
        2 => {
            let mut labels: Vec<&mut Map<String, Value>> = Vec::new();
            for p in providers(config) {
                if let Some(Value::Array(pools)) = p.get_mut("pools") {
                    for pool in pools.iter_mut() {
                        if let Some(Value::Array(ls)) = pool.get_mut("labels") {
                            labels.extend(ls.iter_mut().filter_map(Value::as_object_mut));
                        }
                    }
                }
            }
            let n = labels.len();
            let label = labels.get_mut(rng.below(n))?;
            label.insert("name".into(), json!("renamed-label"));
            Some("rename a pool label")
        }
        3 => {
            let mut list = providers(config);
            let n = list.len();
            let p = list.get_mut(rng.below(n))?;
            let Some(Value::Array(pools)) = p.get_mut("pools") else {
                return None;
            };
            let first = pools.first()?.clone();
            pools.push(first);
            Some("duplicate a pool")
        }
        4 => {
            let images = config
                .as_object_mut()?
                .entry("diskimages")
                .or_insert_with(|| json!([]));
            let Value::Array(images) = images else {
                return None;
            };
            images.push(json!({"name": "added-image", "elements": ["ubuntu-minimal"]}));
            Some("add a diskimage")
        }
        5 => {
            let Value::Array(images) = config.get_mut("diskimages")? else {
                return None;
            };
            if images.is_empty() {
                return None;
            }
            let i = rng.below(images.len());
            images.remove(i);
            Some("remove a diskimage")
        }
        6 => {
            // A second provider made from the first with a merge key.
            let list = config.get_mut("providers")?.as_array_mut()?;
            let first = list.first_mut()?.as_object_mut()?;
            first.insert("$anchor".into(), json!("base"));
            let name = format!(
                "{}-copy",
                first.get("name").and_then(Value::as_str).unwrap_or("p")
            );
            list.push(json!({"$merge": "base", "name": name}));
            Some("anchors and a merge key")
        }
        7 => {
            // The same key twice in one mapping (PyYAML keeps the last).
            let all = all_paths(config);
            let maps: Vec<&Vec<Step>> = all
                .iter()
                .filter(|p| matches!(at_mut(config, p), Some(Value::Object(m)) if !m.is_empty()))
                .collect();
            let path = (*rng.pick(&maps)?).clone();
            let map = at_mut(config, &path)?.as_object_mut()?;
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = rng.pick(&keys)?.clone();
            let first = map.get(&key)?.clone();
            let second = flip_type(rng, &first);
            let repeated = if rng.below(2) == 0 {
                vec![first, second]
            } else {
                vec![second, first]
            };
            map.insert(key, json!({ "$repeat": repeated }));
            Some("repeat a key")
        }
        8 => {
            let all = all_paths(config);
            let maps: Vec<&Vec<Step>> = all
                .iter()
                .filter(|p| matches!(at_mut(config, p), Some(Value::Object(_))))
                .collect();
            let path = (*rng.pick(&maps)?).clone();
            at_mut(config, &path)?
                .as_object_mut()?
                .insert("unknown-key".into(), json!("value"));
            Some("add an unknown key")
        }
        9 => {
            let all = all_paths(config);
            let leaves: Vec<&Vec<Step>> = all
                .iter()
                .filter(|p| !p.is_empty())
                .filter(|p| {
                    matches!(
                        at_mut(config, p),
                        Some(Value::String(_) | Value::Number(_) | Value::Bool(_))
                    )
                })
                .collect();
            let path = (*rng.pick(&leaves)?).clone();
            let leaf = at_mut(config, &path)?;
            *leaf = flip_type(rng, leaf);
            Some("give a value the wrong type")
        }
        10 => {
            let all = all_paths(config);
            let named: Vec<&Vec<Step>> = all
                .iter()
                .filter(|p| matches!(at_mut(config, p), Some(Value::Object(m)) if m.contains_key("name")))
                .collect();
            let path = (*rng.pick(&named)?).clone();
            at_mut(config, &path)?.as_object_mut()?.remove("name");
            Some("remove a required name")
        }
        _ => {
            let all = all_paths(config);
            let strings: Vec<&Vec<Step>> = all
                .iter()
                .filter(|p| {
                    matches!(p.last(), Some(Step::Key(_)))
                        && matches!(at_mut(config, p), Some(Value::String(_) | Value::Number(_)))
                })
                .collect();
            let path = (*rng.pick(&strings)?).clone();
            let leaf = at_mut(config, &path)?;
            *leaf = json!(format!("%({ENV_NAME})"));
            Some("substitute an environment variable")
        }
    }
}

/// `v` as another type: a number as a string, a string as a list, ...
fn flip_type(rng: &mut Rng, v: &Value) -> Value {
    match v {
        Value::String(s) => match rng.below(3) {
            0 => json!([s]),
            1 => json!(42),
            _ => json!({ "nested": s }),
        },
        Value::Number(n) => match rng.below(3) {
            0 => json!(n.to_string() + " units"),
            1 => json!(1.5),
            _ => json!([n]),
        },
        Value::Bool(_) => json!("maybe"),
        Value::Null => json!("null-was-here"),
        Value::Array(_) => json!("not-a-list"),
        Value::Object(_) => json!("not-a-mapping"),
    }
}

/// `v` as YAML flow text (JSON with anchors, merge keys and repeated keys
/// where the generator marked them).
fn emit(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(anchor)) = m.get("$anchor") {
                out.push('&');
                out.push_str(anchor);
                out.push(' ');
            }
            out.push('{');
            let mut first = true;
            let mut sep = |out: &mut String| {
                if !first {
                    out.push_str(", ");
                }
                first = false;
            };
            if let Some(Value::String(alias)) = m.get("$merge") {
                sep(out);
                out.push_str("<<: *");
                out.push_str(alias);
            }
            for (k, c) in m {
                if k == "$anchor" || k == "$merge" {
                    continue;
                }
                let values: Vec<&Value> = match c.get("$repeat") {
                    Some(Value::Array(vs)) => vs.iter().collect(),
                    _ => vec![c],
                };
                for c in values {
                    sep(out);
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push_str(": ");
                    emit(c, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, c) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                emit(c, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// One config to judge.
struct Case {
    name: String,
    edits: Vec<&'static str>,
    text: String,
}

/// The fixtures of drivers we have, with upstream's placeholders filled.
fn bases(fixtures: &Path) -> Vec<(String, String)> {
    let builtin = registry();
    let mut files = Vec::new();
    yaml_files(fixtures, &mut files);
    let mut out = Vec::new();
    for path in files {
        let rel = path
            .strip_prefix(fixtures)
            .unwrap_or(&path)
            .display()
            .to_string();
        if NOT_A_CONFIG.iter().any(|(f, _)| *f == rel) || SKIPPED_FIXTURES.contains(&rel.as_str()) {
            continue;
        }
        let Ok(raw) = std::fs::read_to_string(&path) else {
            continue;
        };
        let text = if rel.starts_with("config_validate/") {
            raw
        } else {
            fill_placeholders(&raw)
        };
        let Ok(drivers) = drivers_of(&rel, &text) else {
            // Not YAML: both must reject it as it is.
            out.push((rel, text));
            continue;
        };
        if drivers.iter().all(|d| builtin.get(d).is_some()) {
            out.push((rel, text));
        }
    }
    // Our examples, but the secure file (not a whole nodepool.yaml).
    let mut examples = Vec::new();
    yaml_files(&root().join("examples"), &mut examples);
    for path in examples {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name == "secure.yaml" {
            continue;
        }
        if let Ok(text) = std::fs::read_to_string(&path) {
            out.push((format!("examples/{name}"), text));
        }
    }
    out
}

fn cases(bases: &[(String, String)], seed: u64, count: usize) -> Vec<Case> {
    let mut out: Vec<Case> = bases
        .iter()
        .map(|(name, text)| Case {
            name: name.clone(),
            edits: Vec::new(),
            text: text.clone(),
        })
        .collect();
    let trees: Vec<(String, Value)> = bases
        .iter()
        .filter_map(|(name, text)| {
            let text = yaml::substitute_env_vars(text, std::env::vars());
            let root = yaml::parse(name, &text).ok()?.root?;
            let tree = root.to_json();
            tree.is_object().then(|| (name.clone(), tree))
        })
        .collect();
    let mut rng = Rng(seed);
    let mut attempts = 0;
    while out.len() < bases.len() + count && attempts < count * 20 {
        attempts += 1;
        let Some((name, tree)) = rng.pick(&trees) else {
            break;
        };
        let mut tree = tree.clone();
        let mut edits = Vec::new();
        for _ in 0..=rng.below(3) {
            if let Some(edit) = mutate(&mut rng, &mut tree) {
                edits.push(edit);
            }
        }
        if edits.is_empty() {
            continue;
        }
        let mut text = String::new();
        emit(&tree, &mut text);
        text.push('\n');
        out.push(Case {
            name: name.clone(),
            edits,
            text,
        });
    }
    out
}

/// Upstream's verdicts: (validator exit code, loader error).
fn oracle(python: &str, cases: &[Case], fixtures: &Path) -> Vec<(i64, Option<String>)> {
    let script = root().join("scripts/compat/config_oracle.py");
    let mut child = Command::new(python)
        .arg(&script)
        .env(ENV_NAME, ENV_VALUE)
        .env("OS_CLIENT_CONFIG_FILE", fixtures.join("clouds.yaml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the upstream oracle");
    let mut stdin = child.stdin.take().expect("stdin");
    let input: String = cases
        .iter()
        .enumerate()
        .map(|(i, c)| json!({"id": i, "text": c.text}).to_string() + "\n")
        .collect();
    let writer = std::thread::spawn(move || {
        stdin.write_all(input.as_bytes()).expect("write cases");
    });
    let stdout = child.stdout.take().expect("stdout");
    let mut verdicts = BTreeMap::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read verdict");
        let v: Value = serde_json::from_str(&line).expect("verdict JSON");
        let id = v["id"].as_u64().expect("id") as usize;
        let validate = v["validate"].as_i64().expect("validate");
        let load = v["load"].as_str().map(str::to_owned);
        verdicts.insert(id, (validate, load));
    }
    writer.join().expect("writer");
    assert!(
        child.wait().expect("oracle exit").success(),
        "the oracle failed"
    );
    assert_eq!(verdicts.len(), cases.len(), "a verdict for every case");
    verdicts.into_values().collect()
}

#[test]
fn ours_and_upstreams_validator_agree_on_generated_configs() {
    let Some(sdist) = sdist() else { return };
    let Some(python) = std::env::var_os("NODEPOOL_TEST_UPSTREAM_PYTHON") else {
        println!("SKIP: NODEPOOL_TEST_UPSTREAM_PYTHON is not set");
        return;
    };
    let python = python.to_string_lossy().into_owned();
    let fixtures = sdist.join("nodepool/tests/fixtures");
    std::env::set_var(ENV_NAME, ENV_VALUE);
    // good.yaml's webapp port comes from the environment.
    std::env::set_var("NODEPOOL_PORT", "8005");
    let seed = std::env::var("NODEPOOL_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6e6f_6465);
    let count = std::env::var("NODEPOOL_DIFF_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let bases = bases(&fixtures);
    let cases = cases(&bases, seed, count);
    assert!(
        cases.len() >= bases.len() + count,
        "generated {} configs from {} bases, wanted {count} more",
        cases.len(),
        bases.len()
    );
    let verdicts = oracle(&python, &cases, &fixtures);
    let registry = registry();

    let mut agree = 0;
    let mut stricter = 0;
    let mut ours_only = 0;
    let mut unexplained = Vec::new();
    for (case, (validate, load)) in cases.iter().zip(&verdicts) {
        let ours = load_str("nodepool.yaml", &case.text, &registry);
        let upstream_ok = *validate == 0;
        match (&ours, upstream_ok) {
            (Ok(_), true) | (Err(_), false) => agree += 1,
            (Err(e), true) if load.is_some() => {
                stricter += 1;
                if std::env::var_os("NODEPOOL_DIFF_VERBOSE").is_some() {
                    println!(
                        "STRICTER {} {:?}: upstream loader {} | ours {}",
                        case.name,
                        case.edits,
                        load.as_deref().unwrap_or("").lines().next().unwrap_or(""),
                        e.to_string().lines().next().unwrap_or("")
                    );
                }
            }
            (Ok(_), false) if OUR_KEYS.iter().any(|k| case.text.contains(k)) => ours_only += 1,
            _ => unexplained.push((case, upstream_ok, load.clone(), ours.err())),
        }
    }
    println!(
        "{} configs (seed {seed:#x}): {agree} agree, {stricter} rejected by us and by \
         upstream's loader though its validator passes them, {ours_only} use keys of ours, \
         {} unexplained",
        cases.len(),
        unexplained.len()
    );
    if let Some(dir) = std::env::var_os("NODEPOOL_DIFF_DUMP") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("dump dir");
        for (i, (case, ..)) in unexplained.iter().enumerate() {
            std::fs::write(dir.join(format!("{i:04}.yaml")), &case.text).expect("dump");
        }
    }
    for (case, upstream_ok, load, ours) in &unexplained {
        println!(
            "DISAGREE {} {:?}: upstream {} | loader {} | ours {}",
            case.name,
            case.edits,
            if *upstream_ok { "accepts" } else { "rejects" },
            load.as_deref()
                .unwrap_or("loads")
                .lines()
                .next()
                .unwrap_or(""),
            ours.as_ref()
                .map(|e| e.to_string().lines().next().unwrap_or("").to_string())
                .unwrap_or_else(|| "accepts".into())
        );
    }
    for (case, upstream_ok, load, ours) in unexplained.iter().take(5) {
        println!(
            "--- {} after {:?}: upstream {} (loader: {}), ours {}\n{}",
            case.name,
            case.edits,
            if *upstream_ok { "accepts" } else { "rejects" },
            load.as_deref().unwrap_or("loads"),
            match ours {
                Some(e) => format!("rejects:\n{e}"),
                None => "accepts".to_string(),
            },
            case.text
        );
    }
    assert!(
        unexplained.is_empty(),
        "{} configs where upstream's validator and ours disagree (first ones above)",
        unexplained.len()
    );
}
