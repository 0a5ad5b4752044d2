//! The command line and environment of a diskimage-builder run, exactly as
//! upstream's `BuildWorker._buildImage` makes them:
//!
//! ```text
//! <dib-cmd> -x -t <formats> --checksum --no-tmpfs [--qemu-img-options compat=0.10] -o <images-dir>/<image>-<build> <elements>
//! ```
//!
//! with `--qemu-img-options 'compat=0.10'` only when qcow2 is built, `%p`
//! in `dib-cmd` replaced by a directory of helper scripts, and the
//! environment of the builder plus `DIB_RELEASE`, `DIB_IMAGE_NAME`,
//! `DIB_IMAGE_FILENAME`, `ELEMENTS_PATH` (when `elements-dir` is set) and
//! the diskimage's `env-vars` (the secure file's included), which win.

use std::collections::BTreeMap;
use std::path::PathBuf;

use nodepool_core::image_builder::BuildSpec;

use crate::DibError;

/// The command upstream runs when a diskimage has no `dib-cmd`.
pub const DEFAULT_DIB_CMD: &str = "disk-image-create";

/// The qemu-img options upstream passes whenever qcow2 is built.
pub const QEMU_IMG_OPTIONS: &str = "compat=0.10";

/// A command ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DibCommand {
    /// The program.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables set on top of the inherited environment.
    pub env: BTreeMap<String, String>,
}

impl DibCommand {
    /// The command line as one string, for logs.
    pub fn display(&self) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The command for `spec`. `script_dir` replaces `%p` in the command (upstream
/// uses its package directory there so that CI finds `fake-image-create`).
pub fn dib_command(
    spec: &BuildSpec,
    script_dir: Option<&std::path::Path>,
) -> Result<DibCommand, DibError> {
    let mut cmd = spec
        .command
        .clone()
        .filter(|c| !c.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_DIB_CMD.to_string());
    if let Some(dir) = script_dir {
        cmd = cmd.replace("%p", &dir.display().to_string());
    }
    let mut words = shlex::split(&cmd).ok_or_else(|| DibError::BadCommand {
        command: cmd.clone(),
        reason: "unbalanced quotes".to_string(),
    })?;
    if words.is_empty() {
        return Err(DibError::BadCommand {
            command: cmd,
            reason: "empty command".to_string(),
        });
    }
    let program = words.remove(0);
    let formats = spec.formats.join(",");
    let mut args = words;
    args.extend(
        ["-x", "-t", &formats, "--checksum", "--no-tmpfs"]
            .iter()
            .map(|s| s.to_string()),
    );
    if formats.contains("qcow2") {
        args.push("--qemu-img-options".to_string());
        args.push(QEMU_IMG_OPTIONS.to_string());
    }
    args.push("-o".to_string());
    args.push(spec.output_base.display().to_string());
    // Upstream joins the elements with spaces and splits the whole line.
    let elements = spec.elements.join(" ");
    let elements = shlex::split(&elements).ok_or_else(|| DibError::BadCommand {
        command: elements.clone(),
        reason: "unbalanced quotes in elements".to_string(),
    })?;
    args.extend(elements);

    let mut env = BTreeMap::new();
    env.insert(
        "DIB_RELEASE".to_string(),
        spec.release.clone().unwrap_or_default(),
    );
    env.insert("DIB_IMAGE_NAME".to_string(), spec.diskimage.clone());
    env.insert(
        "DIB_IMAGE_FILENAME".to_string(),
        spec.output_base.display().to_string(),
    );
    if let Some(dir) = &spec.elements_dir {
        env.insert("ELEMENTS_PATH".to_string(), dir.display().to_string());
    }
    env.extend(spec.env_vars.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(DibCommand { program, args, env })
}

/// The file a build writes for `format`: `<output base>.<format>`.
pub fn output_path(spec: &BuildSpec, format: &str) -> PathBuf {
    PathBuf::from(format!("{}.{format}", spec.output_base.display()))
}
