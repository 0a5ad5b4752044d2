//! Every key upstream documents is honoured or refused out loud.
//!
//! Walks upstream nodepool 11.0.0's docs (`doc/source/*.rst` of its sdist,
//! at `NODEPOOL_UPSTREAM_SDIST`; CI sets it) for the common configuration
//! and the drivers we have (openstack, static, aws, kubernetes,
//! openshiftpods): every `.. attr::` directive, with its nesting, is a key
//! path. Each key is put into a configuration that loads cleanly, at its
//! place, and the configuration is loaded again. The key must either be
//! read (no "unknown key" error for it: we honour it) or refused with an
//! error saying "not supported by nodepool-rs". A key our loader does not
//! know at all fails the test.
//!
//! What the test sees is whether a key is read; that a key read is also
//! acted on is each key's own test. Read and ignored on purpose:
//! `providers.[openstack].nodepool-id`, deprecated, which upstream's
//! schema takes and its code never reads either.

use serde_json::{json, Map, Value};

use nodepool_core::config::{load_str, ConfigErrors};

use crate::registry::builtin;

/// What refuses a key.
const REFUSAL: &str = "not supported by nodepool-rs";

/// Keys another engineer is implementing right now (their parsing exists;
/// the work makes them do what upstream's do). They count as honoured and
/// must never be refused.
const BEING_HONOURED: &[&str] = &[
    // openstack labels: the console log of a failed launch.
    "providers.[openstack].pools.labels.console-log",
    // openstack pools: counted from the cloud's volume limits.
    "providers.[openstack].pools.max-volumes",
    "providers.[openstack].pools.max-volume-gb",
    // tenant-resource-limits: every resource, not only servers/cores/ram.
    "tenant-resource-limits.max-volumes",
    "tenant-resource-limits.max-volume-gb",
];

/// One documented key: its path (`providers.[aws].pools.labels.iops`),
/// its `:type:` and whether other keys nest under it.
#[derive(Debug, Clone)]
struct DocKey {
    path: Vec<String>,
    kind: String,
    file: String,
    line: usize,
}

impl DocKey {
    fn dotted(&self) -> String {
        self.path.join(".")
    }
}

/// The `.. attr::` directives of one reStructuredText file, nested by
/// indentation.
fn doc_keys(file: &str, text: &str) -> Vec<DocKey> {
    let lines: Vec<&str> = text.lines().collect();
    let mut stack: Vec<(usize, Vec<String>)> = Vec::new();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let Some(name) = trimmed.strip_prefix(".. attr::") else {
            continue;
        };
        let indent = line.len() - trimmed.len();
        while stack.last().is_some_and(|(at, _)| *at >= indent) {
            stack.pop();
        }
        let mut path = stack.last().map(|(_, p)| p.clone()).unwrap_or_default();
        path.extend(name.trim().split('.').map(str::to_string));
        // The directive's options follow it, before the first blank line.
        let kind = lines[i + 1..]
            .iter()
            .take_while(|l| !l.trim().is_empty())
            .find_map(|l| l.trim().strip_prefix(":type:"))
            .map(|t| t.trim().to_lowercase())
            .unwrap_or_default();
        out.push(DocKey {
            path: path.clone(),
            kind,
            file: file.to_string(),
            line: i + 1,
        });
        stack.push((indent, path));
    }
    out
}

/// A configuration that loads with no error, with one provider of each
/// driver we support holding each list the docs nest keys under.
fn base() -> Value {
    json!({
        "labels": [{"name": "small"}, {"name": "dib"}, {"name": "aws-small"}, {"name": "aws-fleet"},
                   {"name": "pod"}, {"name": "opod"}, {"name": "static"}],
        "webapp": {"port": 8005},
        "zookeeper-servers": [{"host": "zk1"}],
        "zookeeper-tls": {"ca": "/ca", "cert": "/cert", "key": "/key"},
        "tenant-resource-limits": [{"tenant-name": "t"}],
        "diskimages": [{"name": "dib-image"}],
        "providers": [
            {
                "name": "os", "driver": "openstack", "cloud": "devstack",
                "diskimages": [{"name": "dib-image"}],
                "cloud-images": [{"name": "cloud", "image-name": "cirros"}],
                "pools": [{"name": "main", "labels": [
                    {"name": "small", "cloud-image": "cloud", "min-ram": 1024},
                    {"name": "dib", "diskimage": "dib-image", "flavor-name": "m1.small"}
                ]}]
            },
            {
                "name": "ec2", "driver": "aws", "region-name": "us-east-1",
                "object-storage": {"bucket-name": "images"},
                "cloud-images": [
                    {"name": "ubuntu", "image-id": "ami-1", "username": "ubuntu"},
                    {"name": "filtered", "username": "ubuntu",
                     "image-filters": [{"name": "name", "values": ["ubuntu*"]}]}
                ],
                "diskimages": [{"name": "dib-image"}],
                "pools": [{"name": "main", "labels": [
                    {"name": "aws-small", "cloud-image": "ubuntu", "instance-type": "t3.small", "key-name": "zuul",
                     "iam-instance-profile": {"name": "profile"}},
                    {"name": "aws-fleet", "cloud-image": "ubuntu", "key-name": "zuul",
                     "fleet": {"instance-types": ["t3.small"], "allocation-strategy": "lowest-price"}}
                ]}]
            },
            {
                "name": "kube", "driver": "kubernetes", "context": "admin",
                "pools": [{"name": "main", "labels": [
                    {"name": "pod", "type": "pod", "image": "fedora",
                     "env": [{"name": "A", "value": "b"}]}
                ]}]
            },
            {
                "name": "oshift", "driver": "openshiftpods", "context": "/host:8443/dev",
                "pools": [{"name": "project", "labels": [
                    {"name": "opod", "image": "fedora", "env": [{"name": "A", "value": "b"}]}
                ]}]
            },
            {
                "name": "rack", "driver": "static",
                "pools": [{"name": "main", "nodes": [
                    {"name": "host.example.com", "labels": ["static"]}
                ]}]
            }
        ]
    })
}

/// A value of the documented type (a wrong one is fine: only "unknown
/// key" errors are looked at).
fn value_of(kind: &str) -> Value {
    if kind.starts_with("int") {
        json!(1)
    } else if kind.starts_with("float") {
        json!(1.5)
    } else if kind.starts_with("bool") {
        json!(false)
    } else if kind.starts_with("list") {
        json!([])
    } else if kind.starts_with("dict") {
        json!({})
    } else {
        json!("x")
    }
}

/// The mapping that holds the last key of `path` in `config`; `None` when
/// the docs nest it under something the base does not hold. In a list, a
/// `[driver]` segment picks the provider of that driver; else the first
/// entry holding the next key is taken, or the first entry.
fn parent_of<'a>(config: &'a mut Value, path: &[String]) -> Option<&'a mut Map<String, Value>> {
    let parents = &path[..path.len().saturating_sub(1)];
    let mut node = config;
    let mut i = 0;
    while i < parents.len() {
        node = node.as_object_mut()?.get_mut(parents[i].as_str())?;
        i += 1;
        if let Value::Array(items) = node {
            let driver = parents
                .get(i)
                .and_then(|s| s.strip_prefix('['))
                .and_then(|s| s.strip_suffix(']'));
            let index = match driver {
                Some(driver) => {
                    i += 1;
                    items.iter().position(|p| p["driver"] == driver)?
                }
                None => {
                    let following = path.get(i).map(String::as_str);
                    items
                        .iter()
                        .position(|e| following.is_some_and(|n| e.get(n).is_some()))
                        .unwrap_or(0)
                }
            };
            node = items.get_mut(index)?;
        }
    }
    node.as_object_mut()
}

/// How our loader takes a documented key.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// It is in the base config (which loads) or it was read.
    Honoured,
    /// Loading says it is not supported by nodepool-rs.
    Refused(String),
    /// "unknown key": neither.
    Unknown(String),
    /// The docs nest it under something the base config does not hold.
    NoPlace,
}

fn errors_of(config: &Value) -> Vec<String> {
    let text = serde_json::to_string_pretty(config).expect("JSON");
    match load_str("nodepool.yaml", &text, &builtin()) {
        Ok(_) => Vec::new(),
        Err(ConfigErrors { errors, .. }) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

fn verdict(base: &Value, key: &DocKey) -> Verdict {
    let Some(name) = key.path.last() else {
        return Verdict::NoPlace;
    };
    if name.starts_with('[') {
        // `providers.[aws]` itself: the driver, which is read.
        return Verdict::Honoured;
    }
    let mut config = base.clone();
    let Some(parent) = parent_of(&mut config, &key.path) else {
        return Verdict::NoPlace;
    };
    if parent.contains_key(name.as_str()) {
        return Verdict::Honoured;
    }
    parent.insert(name.clone(), value_of(&key.kind));
    let errors = errors_of(&config);
    // Errors about the key itself: `...labels[0].iops: ...` (or
    // `iops: ...` at the top level).
    let about_key: Vec<&String> = errors
        .iter()
        .filter(|e| e.contains(&format!(".{name}: ")) || e.contains(&format!(": {name}: ")))
        .collect();
    if let Some(refusal) = about_key.iter().find(|e| e.contains(REFUSAL)) {
        return Verdict::Refused((*refusal).clone());
    }
    if let Some(unknown) = about_key.iter().find(|e| e.ends_with(": unknown key")) {
        return Verdict::Unknown((*unknown).clone());
    }
    // Any other error about it (a wrong type, a value out of its set) says
    // the key is read.
    Verdict::Honoured
}

/// The documented keys of the files we support.
fn documented(sdist: &std::path::Path) -> Vec<DocKey> {
    let mut keys = Vec::new();
    for file in [
        "configuration.rst",
        "openstack.rst",
        "static.rst",
        "aws.rst",
        "kubernetes.rst",
        "openshift-pods.rst",
    ] {
        let path = sdist.join("doc/source").join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        keys.extend(doc_keys(file, &text));
    }
    keys
}

#[test]
fn the_base_config_loads_cleanly() {
    let errors = errors_of(&base());
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn doc_keys_nest_by_indentation() {
    let text = ".. attr:: providers.[openstack]\n   :type: list\n\n   .. attr:: pools\n\n      .. attr:: labels\n\n         .. attr:: console-log\n            :type: bool\n\n  .. attr:: rate\n";
    let keys: Vec<(String, String)> = doc_keys("x.rst", text)
        .into_iter()
        .map(|k| (k.dotted(), k.kind))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("providers.[openstack]".into(), "list".into()),
            ("providers.[openstack].pools".into(), String::new()),
            ("providers.[openstack].pools.labels".into(), String::new()),
            (
                "providers.[openstack].pools.labels.console-log".into(),
                "bool".into()
            ),
            ("providers.[openstack].rate".into(), String::new()),
        ]
    );
}

#[test]
fn every_documented_key_is_honoured_or_refused() {
    let Ok(sdist) = std::env::var("NODEPOOL_UPSTREAM_SDIST") else {
        eprintln!("NODEPOOL_UPSTREAM_SDIST is not set: upstream's docs are not walked");
        return;
    };
    let keys = documented(std::path::Path::new(&sdist));
    assert!(keys.len() > 250, "found {} documented keys", keys.len());
    let base = base();
    let mut problems = Vec::new();
    let mut refused = Vec::new();
    for key in &keys {
        let dotted = key.dotted();
        let being_honoured = BEING_HONOURED.contains(&dotted.as_str());
        match verdict(&base, key) {
            Verdict::Honoured => {}
            Verdict::Refused(why) if being_honoured => problems.push(format!(
                "{}:{}: {dotted} is being implemented and must not be refused: {why}",
                key.file, key.line
            )),
            Verdict::Refused(why) => refused.push(format!("{dotted}: {why}")),
            Verdict::Unknown(error) => problems.push(format!(
                "{}:{}: {dotted} is neither honoured nor refused ({error})",
                key.file, key.line
            )),
            Verdict::NoPlace => problems.push(format!(
                "{}:{}: {dotted}: the test's base config has no place for it",
                key.file, key.line
            )),
        }
    }
    eprintln!(
        "{} documented keys, {} refused:\n{}",
        keys.len(),
        refused.len(),
        refused.join("\n")
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
