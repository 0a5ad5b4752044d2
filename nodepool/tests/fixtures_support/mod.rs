//! What the tests on upstream's own configs share: the sdist's fixtures,
//! their placeholders, the drivers a config uses, and a driver that accepts
//! providers of upstream-only drivers unchecked.

#![allow(dead_code)] // Each test file uses a different part.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nodepool_core::config::yaml::{self, Value};
use nodepool_core::config::{
    Driver, DriverConfig, DriverRegistry, MapReader, ProviderCommon, ProviderConfig,
};

/// Upstream's drivers we do not have. Their providers are accepted
/// unchecked (see [`Unchecked`]) so the rest of such a fixture is still
/// validated; fixtures where they are all there is are skipped.
pub const UPSTREAM_ONLY_DRIVERS: &[&str] =
    &["azure", "gce", "ibmvpc", "metastatic", "openshift", "test"];

/// Accepts any provider of an upstream-only driver without checking it.
#[derive(Debug)]
pub struct Unchecked(pub &'static str);

#[derive(Debug)]
pub struct UncheckedConfig;

impl DriverConfig for UncheckedConfig {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Driver for Unchecked {
    fn name(&self) -> &'static str {
        self.0
    }

    fn parse_provider(
        &self,
        provider: &mut MapReader<'_>,
        common: ProviderCommon,
    ) -> Option<ProviderConfig> {
        let _ = provider.rest();
        Some(common.into_config(Arc::new(UncheckedConfig)))
    }
}

/// Fixtures that are not a nodepool.yaml by themselves.
pub const NOT_A_CONFIG: &[(&str, &str)] = &[
    ("clouds.yaml", "an openstacksdk clouds.yaml"),
    (
        "secure_file_secure.yaml",
        "a secure file (loaded with secure_file_config.yaml)",
    ),
];

/// The extracted sdist of nodepool 11.0.0 (`NODEPOOL_UPSTREAM_SDIST`), or
/// `None` after printing a skip line.
pub fn sdist() -> Option<PathBuf> {
    match std::env::var_os("NODEPOOL_UPSTREAM_SDIST") {
        Some(dir) => Some(PathBuf::from(dir)),
        None => {
            println!(
                "SKIP: NODEPOOL_UPSTREAM_SDIST is not set; run scripts/upstream-fixtures.sh \
                 to download nodepool 11.0.0's sdist and run these tests"
            );
            None
        }
    }
}

pub fn registry() -> DriverRegistry {
    nodepool_drivers::registry::builtin()
}

/// Fill `{placeholders}` as upstream's `setup_config` does (Python
/// `str.format`: `{{`/`}}` are literal braces); unknown fields stay as
/// written.
pub fn fill_placeholders(text: &str) -> String {
    let values = [
        ("images_dir", "/tmp/nodepool-fixtures/images"),
        ("build_log_dir", "/tmp/nodepool-fixtures/build-logs"),
        ("zookeeper_host", "localhost"),
        ("zookeeper_port", "2281"),
        ("zookeeper_chroot", "/nodepool_test/fixture"),
        ("zookeeper_ca", "/tmp/nodepool-fixtures/ca.pem"),
        ("zookeeper_cert", "/tmp/nodepool-fixtures/client.pem"),
        ("zookeeper_key", "/tmp/nodepool-fixtures/client.key"),
        ("auth_path", "/tmp/nodepool-fixtures/auth.json"),
        // functional/openshift/pods.yaml: the kubeconfig context under test.
        ("context_name", "nodepool-fixtures"),
        // The aws fixtures: upstream fills these from moto.
        ("subnet_id", "subnet-0123456789abcdef0"),
        ("security_group_id", "sg-0123456789abcdef0"),
        (
            "instance_profile_arn",
            "arn:aws:iam::123456789012:instance-profile/not-a-real-profile",
        ),
    ];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        if tail.starts_with('{') {
            if let Some(end) = tail.find('}') {
                let field = &tail[1..end];
                if let Some((_, v)) = values.iter().find(|(k, _)| *k == field) {
                    out.push_str(v);
                    rest = &tail[end + 1..];
                    continue;
                }
            }
        }
        out.push_str(&tail[..1]);
        rest = &tail[1..];
    }
    out.push_str(rest);
    out
}

pub fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "yaml") {
            out.push(p);
        }
    }
}

/// The drivers a config's providers use, as upstream resolves them.
pub fn drivers_of(name: &str, text: &str) -> Result<BTreeSet<String>, String> {
    let text = yaml::substitute_env_vars(text, std::env::vars());
    let doc = yaml::parse(name, &text).map_err(|e| e.to_string())?;
    let Some(root) = doc.root else {
        return Ok(BTreeSet::new());
    };
    let mut drivers = BTreeSet::new();
    if let Some(Value::Seq(providers)) = root.get("providers").map(|n| &n.value) {
        for p in providers {
            let pname = p.get("name").and_then(|n| n.as_str()).unwrap_or("");
            let driver = if pname.starts_with("fake") {
                "fake".to_string()
            } else {
                p.get("driver")
                    .and_then(|n| n.as_str())
                    .unwrap_or("openstack")
                    .to_string()
            };
            drivers.insert(driver);
        }
    }
    Ok(drivers)
}
