//! Local build files in `images-dir` and build logs in `build-log-dir`, named
//! as upstream names them:
//!
//! - `<images-dir>/<image>-<build id>.<format>`, with optional
//!   `.<format>.md5` and `.<format>.sha256` checksum files (`--checksum`)
//!   and a `<image>-<build id>.d` manifest directory;
//! - `<build-log-dir>/<image>-<build id>.log`.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

/// Where upstream writes build logs when `build-log-dir` is not set.
pub const DEFAULT_BUILD_LOG_DIR: &str = "/var/log/nodepool/builds";

/// The output path of a build without extension: `<images-dir>/<image>-<build>`.
pub fn build_base(images_dir: &Path, image: &str, build_id: &str) -> PathBuf {
    images_dir.join(format!("{image}-{build_id}"))
}

/// The build log of a build: `<log-dir>/<image>-<build>.log`.
pub fn build_log_path(log_dir: &Path, image: &str, build_id: &str) -> PathBuf {
    log_dir.join(format!("{image}-{build_id}.log"))
}

/// One image file of a local build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalImageFile {
    /// The format (the file's extension).
    pub format: String,
    /// The file.
    pub path: PathBuf,
    /// The md5 checksum file, when present.
    pub md5_file: Option<PathBuf>,
    /// The sha256 checksum file, when present.
    pub sha256_file: Option<PathBuf>,
}

/// The image files of build `build_id` of `image` in `images_dir` (upstream's
/// `DibImageFile.from_image_id`): every regular file whose stem is
/// `<image>-<build>`. A missing directory has none.
pub fn local_image_files(
    images_dir: &Path,
    image: &str,
    build_id: &str,
) -> io::Result<Vec<LocalImageFile>> {
    let stem = format!("{image}-{build_id}");
    let entries = match std::fs::read_dir(images_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((file_stem, ext)) = name.rsplit_once('.') else {
            continue;
        };
        if file_stem != stem || ext.is_empty() {
            continue;
        }
        let path = entry.path();
        let md5 = PathBuf::from(format!("{}.md5", path.display()));
        let sha256 = PathBuf::from(format!("{}.sha256", path.display()));
        out.push(LocalImageFile {
            format: ext.to_string(),
            md5_file: md5.is_file().then_some(md5),
            sha256_file: sha256.is_file().then_some(sha256),
            path,
        });
    }
    out.sort_by(|a, b| a.format.cmp(&b.format));
    Ok(out)
}

fn remove_file(path: &Path) -> io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Remove one image file and its checksum files.
pub fn remove_image_file(file: &LocalImageFile) -> io::Result<()> {
    for path in [
        Some(&file.path),
        file.md5_file.as_ref(),
        file.sha256_file.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        if remove_file(path)? {
            tracing::info!(path = %path.display(), "removed DIB file");
        }
    }
    Ok(())
}

/// Remove every local file of a build: image files in every format, their
/// checksums, the `.d` manifest directory and any other entry named
/// `<image>-<build>.<anything>` (partial outputs of an interrupted build,
/// such as a checksum file whose image is gone, which [`local_builds`]
/// does not see). Safe to call when nothing exists.
pub fn delete_local_build(images_dir: &Path, image: &str, build_id: &str) -> io::Result<()> {
    let prefix = format!("{image}-{build_id}.");
    let entries = match std::fs::read_dir(images_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if !entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix))
        {
            continue;
        }
        let path = entry.path();
        let removed = if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path).map(|()| "removed DIB manifest")
        } else {
            std::fs::remove_file(&path).map(|()| "removed DIB file")
        };
        match removed {
            Ok(what) => tracing::info!(path = %path.display(), "{what}"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The `(image, build id)` pairs that have files in `images_dir`, as
/// upstream's `_getLocalBuilds` finds them: names matching
/// `^(.*)-([abcdef\d]+)\.(\w+)$`.
pub fn local_builds(images_dir: &Path) -> io::Result<BTreeSet<(String, String)>> {
    let entries = match std::fs::read_dir(images_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(e),
    };
    let mut out = BTreeSet::new();
    for entry in entries {
        let name = entry?.file_name();
        if let Some(pair) = name.to_str().and_then(parse_local_build_name) {
            out.insert(pair);
        }
    }
    Ok(out)
}

/// Split `<image>-<hex id>.<word>` into image and build id (greedy image
/// part, as the upstream regular expression).
pub fn parse_local_build_name(name: &str) -> Option<(String, String)> {
    let (stem, ext) = name.rsplit_once('.')?;
    // `\w+` for the extension: one word after the last dot.
    if ext.is_empty() || !ext.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return None;
    }
    let (image, id) = stem.rsplit_once('-')?;
    if image.is_empty()
        || id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        return None;
    }
    Some((image.to_string(), id.to_string()))
}

/// Delete old build logs of `image` in `log_dir`, keeping the newest
/// `max(retention, 1)` by modification time; a negative retention keeps
/// everything (upstream's `_pruneBuildLogs`, run before each build). Only
/// files named `<image>-<hex id>.log` count, so the logs of an image whose
/// name merely starts with `image` are left alone.
pub fn prune_build_logs(log_dir: &Path, image: &str, retention: i64) -> io::Result<Vec<PathBuf>> {
    if retention < 0 {
        return Ok(Vec::new());
    }
    let keep = usize::try_from(retention.max(1)).unwrap_or(usize::MAX);
    let entries = match std::fs::read_dir(log_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut logs = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".log") else {
            continue;
        };
        let is_ours = stem.rsplit_once('-').is_some_and(|(i, id)| {
            i == image && !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit())
        });
        if is_ours {
            logs.push((entry.metadata()?.modified()?, entry.path()));
        }
    }
    logs.sort();
    let excess = logs.len().saturating_sub(keep);
    let mut deleted = Vec::new();
    for (_, path) in logs.into_iter().take(excess) {
        tracing::info!(path = %path.display(), "deleting old build log");
        if remove_file(&path)? {
            deleted.push(path);
        }
    }
    Ok(deleted)
}
