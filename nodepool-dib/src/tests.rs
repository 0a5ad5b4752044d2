//! Unit tests of the command line and environment.
#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nodepool_core::image_builder::BuildSpec;

use crate::command::{dib_command, output_path};
use crate::DibError;

fn spec() -> BuildSpec {
    BuildSpec {
        diskimage: "ubuntu".into(),
        build_id: "0123abcd".into(),
        elements: vec!["ubuntu-minimal".into(), "vm simple-init".into()],
        release: Some("noble".into()),
        env_vars: BTreeMap::from([
            ("DIB_CHECKSUM".to_string(), "1".to_string()),
            ("DIB_RELEASE".to_string(), "overridden".to_string()),
        ]),
        formats: vec!["qcow2".into(), "raw".into()],
        output_base: PathBuf::from("/opt/images/ubuntu-0123abcd"),
        log_path: None,
        command: None,
        elements_dir: Some(PathBuf::from("/etc/nodepool/elements")),
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn command_line_is_upstreams_with_qemu_options_for_qcow2() {
    let cmd = dib_command(&spec(), None).unwrap();
    assert_eq!(cmd.program, "disk-image-create");
    assert_eq!(
        cmd.args,
        strings(&[
            "-x",
            "-t",
            "qcow2,raw",
            "--checksum",
            "--no-tmpfs",
            "--qemu-img-options",
            "compat=0.10",
            "-o",
            "/opt/images/ubuntu-0123abcd",
            "ubuntu-minimal",
            "vm",
            "simple-init",
        ])
    );
}

#[test]
fn command_line_has_no_qemu_options_without_qcow2() {
    let mut s = spec();
    s.formats = vec!["raw".into(), "vhd".into()];
    let cmd = dib_command(&s, None).unwrap();
    assert!(!cmd.args.iter().any(|a| a == "--qemu-img-options"));
    assert_eq!(cmd.args[2], "raw,vhd");
}

#[test]
fn dib_cmd_words_come_first_and_percent_p_is_the_script_dir() {
    let mut s = spec();
    s.command = Some("%p/fake-image-create --extra 'a b'".into());
    let cmd = dib_command(&s, Some(Path::new("/usr/share/np"))).unwrap();
    assert_eq!(cmd.program, "/usr/share/np/fake-image-create");
    assert_eq!(&cmd.args[..3], &strings(&["--extra", "a b", "-x"])[..]);
}

#[test]
fn unbalanced_quotes_in_dib_cmd_are_rejected() {
    let mut s = spec();
    s.command = Some("disk-image-create 'oops".into());
    assert!(matches!(
        dib_command(&s, None),
        Err(DibError::BadCommand { .. })
    ));
}

#[test]
fn environment_has_dib_variables_and_env_vars_win() {
    let cmd = dib_command(&spec(), None).unwrap();
    assert_eq!(cmd.env["DIB_IMAGE_NAME"], "ubuntu");
    assert_eq!(cmd.env["DIB_IMAGE_FILENAME"], "/opt/images/ubuntu-0123abcd");
    assert_eq!(cmd.env["ELEMENTS_PATH"], "/etc/nodepool/elements");
    assert_eq!(cmd.env["DIB_CHECKSUM"], "1");
    // env-vars are applied last, as upstream's `env[k] = v` loop.
    assert_eq!(cmd.env["DIB_RELEASE"], "overridden");
}

#[test]
fn missing_release_is_an_empty_dib_release() {
    let mut s = spec();
    s.release = None;
    s.env_vars.clear();
    s.elements_dir = None;
    let cmd = dib_command(&s, None).unwrap();
    assert_eq!(cmd.env["DIB_RELEASE"], "");
    assert!(!cmd.env.contains_key("ELEMENTS_PATH"));
}

#[test]
fn output_path_appends_the_format() {
    assert_eq!(
        output_path(&spec(), "vhd"),
        PathBuf::from("/opt/images/ubuntu-0123abcd.vhd")
    );
}
