//! Upstream nodepool 11.0.0's own fixture configs must load.
//!
//! `scripts/upstream-fixtures.sh` downloads the sdist into a cache and runs
//! this test with `NODEPOOL_UPSTREAM_SDIST` set to the extracted directory.
//! Without it the sdist tests print a skip line and pass (CI sets it).
//! Upstream's files are never copied into this repository.
//!
//! Every `*.yaml` under `nodepool/tests/fixtures` is classified:
//! - not a nodepool.yaml (clouds.yaml, the secure file) → skipped, reason
//!   printed;
//! - a provider of a driver we do not register → skipped, "uses driver X";
//! - a fixture upstream's own tests expect to be invalid → must fail;
//! - everything else → must load.

mod fixtures_support;

use std::path::Path;
use std::process::Command;

use fixtures_support::{
    drivers_of, fill_placeholders, registry, sdist, yaml_files, Unchecked, NOT_A_CONFIG,
    UPSTREAM_ONLY_DRIVERS,
};
use nodepool_core::config::{load_str, load_str_with_secure, DriverRegistry};

/// Fixtures upstream's tests expect `config-validate` to reject, with a
/// fragment our error must contain; `None` when the reason lies in a driver
/// we do not have (then the fixture is skipped).
const EXPECTED_INVALID: &[(&str, Option<&str>)] = &[
    ("config_validate/yaml_error.yaml", Some("YAML syntax error")),
    (
        "config_validate/missing_top_label.yaml",
        Some("label \"trusty\" in provider \"static\" is not in the top-level labels"),
    ),
    (
        "config_validate/no_diskimage_name.yaml",
        Some("diskimages[0]: missing required key \"name\""),
    ),
    (
        "config_validate/duplicate_diskimage_name.yaml",
        Some("diskimage \"trusty\" already defined"),
    ),
    (
        "config_validate/missing_parent_diskimage.yaml",
        Some("has non-existent parent"),
    ),
    (
        "config_validate/missing_diskimage_provider.yaml",
        Some("diskimage \"wrong\" in provider \"cloud1\" is not defined"),
    ),
    (
        "config_validate/schema_error.yaml",
        Some("nothandled: unknown key"),
    ),
    (
        "config_validate/static_error.yaml",
        Some("providers[0].cloud: unknown key"),
    ),
    (
        "config_validate/k8s_spec_duplicate.yaml",
        Some("\"image\" is not allowed in a label with \"spec\""),
    ),
    (
        "config_validate/aws-fleet-exclusive-error.yaml",
        Some("fleet.instance-requirements: unknown key"),
    ),
    (
        "config_validate/aws-fleet-allocation-strategy-error.yaml",
        Some("\"not-exist\" is not an allocation strategy"),
    ),
    ("config_validate/metastatic_error.yaml", None),
    // test_aws: upstream's tests expect these to fail to load.
    (
        "aws/bad-config-images.yaml",
        Some("a cloud image sets only one of \"image-id\" and \"image-filters\""),
    ),
    (
        "aws/diskimage-imdsv2-image.yaml",
        Some("IMDSv2 requires 'snapshot' or 'ebs-direct' import method"),
    ),
    // test_sdk_integration: an openstack provider without `cloud:`.
    (
        "integration_noocc.yaml",
        Some("providers[0]: missing required key \"cloud\""),
    ),
];

enum Outcome {
    Loaded(String),
    FailedAsExpected(String),
    Skipped(String),
    Wrong(String),
}

fn check_fixture(fixtures: &Path, path: &Path, builtin: &DriverRegistry) -> Outcome {
    let rel = path
        .strip_prefix(fixtures)
        .unwrap_or(path)
        .display()
        .to_string();
    if let Some((_, why)) = NOT_A_CONFIG.iter().find(|(f, _)| *f == rel) {
        return Outcome::Skipped(format!("not a nodepool.yaml: {why}"));
    }
    let raw = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return Outcome::Wrong(format!("cannot read: {e}")),
    };
    // Upstream's config-validator tests read config_validate/ files as they
    // are; every other fixture goes through setup_config's format().
    let text = if rel.starts_with("config_validate/") {
        raw
    } else {
        fill_placeholders(&raw)
    };
    let expected_invalid = EXPECTED_INVALID
        .iter()
        .find(|(f, _)| *f == rel)
        .map(|(_, fragment)| *fragment);
    let drivers = drivers_of(&rel, &text).unwrap_or_default();
    let unsupported: Vec<&String> = drivers
        .iter()
        .filter(|d| builtin.get(d).is_none())
        .collect();
    let supported = drivers.len() - unsupported.len();
    let unknown: Vec<&String> = unsupported
        .iter()
        .copied()
        .filter(|d| !UPSTREAM_ONLY_DRIVERS.contains(&d.as_str()))
        .collect();
    let list = |v: &[&String]| {
        let s = if v.len() > 1 { "s" } else { "" };
        let names: Vec<&str> = v.iter().map(|d| d.as_str()).collect();
        format!("driver{s} {}", names.join(", "))
    };
    if !unknown.is_empty() {
        return Outcome::Skipped(format!("uses unknown {}", list(&unknown)));
    }
    if !unsupported.is_empty() && (supported == 0 || expected_invalid == Some(None)) {
        return Outcome::Skipped(format!("uses {}", list(&unsupported)));
    }
    let mut registry = builtin.clone();
    for name in UPSTREAM_ONLY_DRIVERS {
        registry.register(Unchecked(name));
    }
    let registry = &registry;
    let result = if rel == "secure_file_config.yaml" {
        let secure_path = fixtures.join("secure_file_secure.yaml");
        let secure = std::fs::read_to_string(&secure_path)
            .map(|t| fill_placeholders(&t))
            .unwrap_or_default();
        load_str_with_secure(
            &rel,
            &text,
            Some(("secure_file_secure.yaml", &secure)),
            registry,
        )
    } else {
        load_str(&rel, &text, registry)
    };
    let unchecked = if unsupported.is_empty() {
        String::new()
    } else {
        format!(" (providers of {} accepted unchecked)", list(&unsupported))
    };
    match (result, expected_invalid.flatten()) {
        (Ok(_), None) => Outcome::Loaded(unchecked),
        (Err(e), Some(fragment)) if e.to_string().contains(fragment) => {
            Outcome::FailedAsExpected(e.to_string())
        }
        (Err(e), Some(fragment)) => Outcome::Wrong(format!(
            "rejected, but not for the expected reason {fragment:?}:\n{e}"
        )),
        (Ok(_), Some(fragment)) => Outcome::Wrong(format!(
            "loaded, but upstream rejects it (expected an error containing {fragment:?})"
        )),
        (Err(e), None) => Outcome::Wrong(format!("failed to load:\n{e}")),
    }
}

#[test]
fn upstream_fixtures_of_supported_drivers_load() {
    let Some(sdist) = sdist() else { return };
    let fixtures = sdist.join("nodepool/tests/fixtures");
    assert!(
        fixtures.is_dir(),
        "{} is not a directory: is NODEPOOL_UPSTREAM_SDIST the extracted sdist?",
        fixtures.display()
    );
    // good.yaml's webapp port comes from the environment, as in upstream's test.
    std::env::set_var("NODEPOOL_PORT", "8005");
    let registry = registry();
    let mut files = Vec::new();
    yaml_files(&fixtures, &mut files);

    let (mut loaded, mut rejected, mut skipped, mut wrong) = (0, 0, 0, Vec::new());
    for path in &files {
        let rel = path
            .strip_prefix(&fixtures)
            .unwrap_or(path)
            .display()
            .to_string();
        match check_fixture(&fixtures, path, &registry) {
            Outcome::Loaded(note) => {
                loaded += 1;
                println!("ok       {rel}{note}");
            }
            Outcome::FailedAsExpected(errors) => {
                rejected += 1;
                println!("rejected {rel} (invalid, as upstream says):");
                for line in errors.lines() {
                    println!("           {line}");
                }
            }
            Outcome::Skipped(why) => {
                skipped += 1;
                println!("skipped  {rel}: {why}");
            }
            Outcome::Wrong(why) => {
                println!("WRONG    {rel}: {why}");
                wrong.push(format!("{rel}: {why}"));
            }
        }
    }
    println!(
        "{} fixtures: {loaded} loaded, {rejected} rejected as expected, {skipped} skipped, {} wrong",
        files.len(),
        wrong.len()
    );
    assert!(
        loaded > 50,
        "too few fixtures loaded ({loaded}); is this the 11.0.0 sdist?"
    );
    assert!(
        wrong.is_empty(),
        "fixtures with the wrong outcome:\n{}",
        wrong.join("\n")
    );
}

fn nodepool_cmd(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_nodepool"))
        .args(args)
        .env("NODEPOOL_PORT", "8005")
        .output();
    match out {
        Ok(o) => o,
        Err(e) => panic!("cannot run the nodepool binary: {e}"),
    }
}

#[test]
fn config_validate_rejects_upstream_bad_fixture_with_positions() {
    let Some(sdist) = sdist() else { return };
    let file = sdist.join("nodepool/tests/fixtures/config_validate/missing_top_label.yaml");
    let file = file.display().to_string();
    let out = nodepool_cmd(&["-c", &file, "config-validate"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "stdout:\n{stdout}");
    assert!(stdout.starts_with(&format!("{file}:")), "{stdout}");
    assert!(stdout.contains("label \"trusty\" in provider"), "{stdout}");
}

#[test]
fn config_validate_accepts_the_quickstart_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/quickstart.yaml");
    let out = nodepool_cmd(&["-c", example, "config-validate"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn config_validate_reports_every_error_and_exits_1() {
    let dir = std::env::temp_dir().join(format!("nodepool-cv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "labels:\n  - name: small\n    min-ready: lots\nproviders:\n  - name: p\n    driver: nimbus\n",
    )
    .expect("write");
    let f = file.display().to_string();
    let out = nodepool_cmd(&["-c", &f, "config-validate"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.contains(&format!(
            "{f}:3:16: labels[0].min-ready: expected an integer, found string \"lots\""
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{f}:6:13: providers[0].driver: unknown driver \"nimbus\"; registered drivers: aws, fake, kubernetes, openshiftpods, openstack, static"
        )),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
