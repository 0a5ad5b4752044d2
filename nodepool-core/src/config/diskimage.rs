//! `diskimages:` entries and their `parent:`/`abstract:` inheritance.

use std::collections::{BTreeMap, HashSet};

use super::reader::{Item, MapReader};
use super::{DiskImage, ImageValidation, VALIDATION_TIMEOUT};

/// Upstream's default `build-timeout`: 8 hours.
pub(crate) const BUILD_TIMEOUT: i64 = 8 * 60 * 60;
/// Upstream's default `rebuild-age`: 24 hours.
pub(crate) const REBUILD_AGE: i64 = 24 * 60 * 60;

/// One `diskimages` entry as written, before inheritance.
#[derive(Debug, Clone)]
pub(crate) struct RawDiskImage<'a> {
    pub(crate) name: String,
    pub(crate) name_item: Item<'a>,
    pub(crate) is_abstract: bool,
    pub(crate) parent: Option<(String, Item<'a>)>,
    dib_cmd: Option<String>,
    pause: Option<bool>,
    elements: Vec<String>,
    formats: Option<Vec<String>>,
    keep_formats: Option<Vec<String>>,
    delete_after_upload: Option<bool>,
    release: Option<String>,
    rebuild_age: Option<i64>,
    env_vars: BTreeMap<String, String>,
    username: Option<String>,
    python_path: Option<String>,
    shell_type: Option<String>,
    build_timeout: Option<i64>,
    metadata: BTreeMap<String, serde_json::Value>,
    validation: Option<ImageValidation>,
}

/// Read one `diskimages` entry (upstream's validator schema).
pub(crate) fn read<'a>(mut map: MapReader<'a>) -> Option<RawDiskImage<'a>> {
    let name_item = map.required("name");
    let name = name_item.as_ref().and_then(Item::as_str);
    let parent = map
        .take("parent")
        .and_then(|item| Some((item.as_str()?, item)));
    let metadata = map
        .opt_json_map("metadata")
        .and_then(|v| match v {
            serde_json::Value::Object(m) => Some(m.into_iter().collect()),
            _ => None,
        })
        .unwrap_or_default();
    let raw = RawDiskImage {
        name: name.clone().unwrap_or_default(),
        name_item: name_item.clone()?,
        is_abstract: map.bool_or("abstract", false),
        parent,
        dib_cmd: map.opt_str("dib-cmd"),
        pause: map.opt_bool("pause"),
        elements: map.str_list("elements"),
        formats: map.opt_str_list("formats"),
        keep_formats: map.opt_str_list("keep-formats"),
        delete_after_upload: map.opt_bool("delete-after-upload"),
        release: map.take("release").and_then(|i| i.as_text()),
        rebuild_age: map.opt_i64("rebuild-age"),
        env_vars: map.str_map("env-vars"),
        username: map.opt_str("username"),
        python_path: map.opt_str("python-path"),
        shell_type: map.opt_str("shell-type"),
        build_timeout: map.opt_i64("build-timeout"),
        metadata,
        validation: map.opt_map("validation").and_then(read_validation),
    };
    map.finish();
    name.map(|_| raw)
}

/// Read a `validation` mapping: `hook` (required), `timeout`, `label`.
fn read_validation(mut map: MapReader<'_>) -> Option<ImageValidation> {
    let hook = map.required_str("hook");
    let timeout_item = map.take("timeout");
    let timeout = match &timeout_item {
        None => VALIDATION_TIMEOUT,
        Some(item) => match item.as_f64() {
            Some(t) if t > 0.0 && t.is_finite() => t,
            _ => {
                item.error("validation timeout must be a positive number of seconds");
                VALIDATION_TIMEOUT
            }
        },
    };
    let label = map.opt_str("label");
    map.finish();
    let hook = hook?;
    if hook.trim().is_empty() {
        return None;
    }
    Some(ImageValidation {
        hook,
        timeout,
        label,
    })
}

fn dedup(values: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    values
        .iter()
        .filter(|v| seen.insert(v.as_str()))
        .cloned()
        .collect()
}

/// Merge one layer into `image` with upstream's `setFromConfig` rules:
/// elements append, env-vars update, a value set (and not empty/zero)
/// overrides, and metadata is replaced by the layer's (empty if absent).
fn apply(image: &mut DiskImage, raw: &RawDiskImage<'_>) {
    if let Some(v) = raw.build_timeout.filter(|v| *v != 0) {
        image.build_timeout = v;
    }
    if let Some(v) = raw.dib_cmd.as_ref().filter(|v| !v.is_empty()) {
        image.dib_cmd = Some(v.clone());
    }
    image.elements.extend(raw.elements.iter().cloned());
    image
        .env_vars
        .extend(raw.env_vars.iter().map(|(k, v)| (k.clone(), v.clone())));
    if let Some(v) = raw.formats.as_ref().filter(|v| !v.is_empty()) {
        image.formats = dedup(v);
    }
    if let Some(v) = raw.keep_formats.as_ref().filter(|v| !v.is_empty()) {
        image.keep_formats = dedup(v);
    }
    if let Some(v) = raw.delete_after_upload {
        image.delete_after_upload = v;
    }
    if raw.pause == Some(true) {
        image.pause = true;
    }
    if let Some(v) = raw.python_path.as_ref().filter(|v| !v.is_empty()) {
        image.python_path = v.clone();
    }
    if let Some(v) = raw.shell_type.as_ref().filter(|v| !v.is_empty()) {
        image.shell_type = Some(v.clone());
    }
    if let Some(v) = raw.rebuild_age.filter(|v| *v != 0) {
        image.rebuild_age = v;
    }
    if let Some(v) = raw.release.as_ref().filter(|v| !v.is_empty()) {
        image.release = Some(v.clone());
    }
    if let Some(v) = raw.username.as_ref().filter(|v| !v.is_empty()) {
        image.username = v.clone();
    }
    image.metadata = raw.metadata.clone();
    if let Some(v) = &raw.validation {
        image.validation = Some(v.clone());
    }
}

/// Resolve inheritance: one [`DiskImage`] per non-abstract entry, in file
/// order, parents applied root first. Reports repeated names, unknown
/// parents and parent cycles.
pub(crate) fn resolve(raws: &[RawDiskImage<'_>]) -> Vec<DiskImage> {
    let mut first_seen: BTreeMap<&str, &RawDiskImage<'_>> = BTreeMap::new();
    for raw in raws {
        if first_seen.contains_key(raw.name.as_str()) {
            raw.name_item
                .error(format!("diskimage {:?} already defined", raw.name));
        } else {
            first_seen.insert(&raw.name, raw);
        }
    }
    // As upstream, a repeated name refers to the last definition.
    let by_name: BTreeMap<&str, &RawDiskImage<'_>> =
        raws.iter().map(|r| (r.name.as_str(), r)).collect();

    let mut out = Vec::new();
    for raw in raws.iter().filter(|r| !r.is_abstract) {
        let mut chain = vec![raw];
        let mut ok = true;
        let mut current = raw;
        while let Some((parent, item)) = &current.parent {
            match by_name.get(parent.as_str()) {
                None => {
                    item.error(format!(
                        "diskimage {:?} has non-existent parent {parent:?}",
                        current.name
                    ));
                    ok = false;
                    break;
                }
                Some(p) if chain.iter().any(|c| c.name == p.name) => {
                    item.error(format!(
                        "diskimage {:?}: parent {parent:?} makes an inheritance cycle",
                        current.name
                    ));
                    ok = false;
                    break;
                }
                Some(p) => {
                    chain.push(p);
                    current = p;
                }
            }
        }
        if !ok {
            continue;
        }
        let mut image = DiskImage {
            name: raw.name.clone(),
            is_abstract: false,
            parent: raw.parent.as_ref().map(|(p, _)| p.clone()),
            dib_cmd: Some("disk-image-create".to_string()),
            rebuild_age: REBUILD_AGE,
            username: "zuul".to_string(),
            python_path: "auto".to_string(),
            build_timeout: BUILD_TIMEOUT,
            ..DiskImage::default()
        };
        for layer in chain.iter().rev() {
            apply(&mut image, layer);
        }
        out.push(image);
    }
    out
}

/// Apply the secure file's `diskimages` entries (`name` and `env-vars`).
pub(crate) fn apply_secure(images: &mut [DiskImage], entries: Vec<MapReader<'_>>) {
    for mut entry in entries {
        let name_item = entry.required("name");
        let name = name_item.as_ref().and_then(Item::as_str);
        let env = entry.str_map("env-vars");
        entry.finish();
        let (Some(name), Some(item)) = (name, name_item) else {
            continue;
        };
        match images.iter_mut().find(|d| d.name == name) {
            Some(image) => image.env_vars.extend(env),
            None => item.error(format!("unknown diskimage {name:?}")),
        }
    }
}

/// A `validation.label` must be a pool label that boots the diskimage.
pub(crate) fn check_validation_labels(raws: &[RawDiskImage<'_>], config: &super::Config) {
    for image in &config.diskimages {
        let Some(label) = image.validation.as_ref().and_then(|v| v.label.as_ref()) else {
            continue;
        };
        let used = config.providers.iter().any(|p| {
            p.pools.iter().any(|pool| {
                pool.labels.iter().any(|l| {
                    &l.name == label && l.diskimage.as_deref() == Some(image.name.as_str())
                })
            })
        });
        if !used {
            if let Some(raw) = raws.iter().rev().find(|r| r.name == image.name) {
                raw.name_item.error(format!(
                    "validation label {label:?} of diskimage {:?} is not a pool label that \
                     boots that diskimage",
                    image.name
                ));
            }
        }
    }
}
