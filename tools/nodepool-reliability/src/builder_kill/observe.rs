//! What `builder-kill` looks at, from three sides: the store's build and
//! upload records, the simulator's Glance images (`GET /_sim/state`) and
//! the files in `images-dir`; plus the diskimage-builder processes that
//! build into `images-dir`. And the invariants over them.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use nodepool_core::builder::upload::{META_BUILD_ID, META_UPLOAD_ID};
use nodepool_core::model::{BuildState, ImageBuild, ImageUpload, UploadState};
use nodepool_core::provider::META_PROVIDER;
use nodepool_core::store::NodeStore;
use serde_json::Value;

use crate::ChaosError;

/// The diskimage of the run.
pub const IMAGE: &str = "chaos-image";
/// The providers the image is uploaded to (one simulated cloud).
pub const PROVIDERS: [&str; 2] = ["sim-a", "sim-b"];
/// The formats built: the diskimage's `raw` and the providers' `qcow2`.
pub const FORMATS: [&str; 2] = ["qcow2", "raw"];

/// The store's records of [`IMAGE`].
#[derive(Debug, Clone, Default)]
pub struct Records {
    /// Every build.
    pub builds: Vec<ImageBuild>,
    /// Every upload of every build.
    pub uploads: Vec<ImageUpload>,
    /// Whether a build is requested.
    pub requested: bool,
}

impl Records {
    /// Read them.
    pub async fn read(store: &dyn NodeStore) -> Result<Self, ChaosError> {
        let err = |e: nodepool_core::Error| ChaosError::Store(e.to_string());
        let builds = store.list_builds(IMAGE).await.map_err(err)?;
        let mut uploads = Vec::new();
        for b in &builds {
            uploads.extend(store.list_uploads(IMAGE, &b.id).await.map_err(err)?);
        }
        let requested = store.build_requested(IMAGE).await.map_err(err)?;
        Ok(Self {
            builds,
            uploads,
            requested,
        })
    }

    fn build(&self, id: &str) -> Option<&ImageBuild> {
        self.builds.iter().find(|b| b.id == id)
    }

    fn upload(&self, key: &UploadKey) -> Option<&ImageUpload> {
        self.uploads
            .iter()
            .find(|x| x.build_id == key.build && x.provider_name == key.provider && x.id == key.id)
    }
}

/// A Glance image carrying one of our providers' names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlanceImage {
    /// Its id.
    pub id: String,
    /// queued, saving, active...
    pub status: String,
    /// Bytes uploaded.
    pub size: Option<u64>,
    /// `nodepool_provider_name`.
    pub provider: String,
    /// `nodepool_build_id`.
    pub build_id: Option<String>,
    /// `nodepool_upload_id`.
    pub upload_id: Option<String>,
}

/// The images of our providers in the simulator.
pub async fn glance(http: &reqwest::Client, base: &str) -> Result<Vec<GlanceImage>, ChaosError> {
    let url = format!("{base}/_sim/state");
    let state: Value = http
        .get(&url)
        .send()
        .await
        .map_err(|e| ChaosError::Cloud(format!("GET {url}: {e}")))?
        .json()
        .await
        .map_err(|e| ChaosError::Cloud(format!("GET {url}: {e}")))?;
    let images = state
        .get("images")
        .and_then(Value::as_object)
        .ok_or_else(|| ChaosError::Cloud("/_sim/state has no images map".into()))?;
    let text = |i: &Value, k: &str| i["properties"][k].as_str().map(str::to_string);
    Ok(images
        .values()
        .filter_map(|i| {
            let provider = text(i, META_PROVIDER).filter(|p| PROVIDERS.contains(&p.as_str()))?;
            Some(GlanceImage {
                id: i["id"].as_str().unwrap_or_default().to_string(),
                status: i["status"].as_str().unwrap_or_default().to_string(),
                size: i["size"].as_u64(),
                provider,
                build_id: text(i, META_BUILD_ID),
                upload_id: text(i, META_UPLOAD_ID),
            })
        })
        .collect())
}

/// The files of each build in `images-dir` (`<image>-<build>.*`, the
/// manifest directory included), by build id.
pub fn local_files(images_dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let prefix = format!("{IMAGE}-");
    let Ok(entries) = std::fs::read_dir(images_dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let id = rest.split('.').next().unwrap_or_default().to_string();
        out.entry(id).or_default().push(name);
    }
    out
}

/// The path of a build's image file in `format`.
pub fn image_file(images_dir: &Path, build_id: &str, format: &str) -> PathBuf {
    images_dir.join(format!("{IMAGE}-{build_id}.{format}"))
}

/// What `scripts/fake-dib-cmd` writes into a complete image file.
fn complete_content(format: &str) -> Vec<u8> {
    let mut content = format!("fake {format} image of {IMAGE}\n").into_bytes();
    content.resize(content.len() + 4096, 0);
    content
}

/// The size of a complete image file in `format`.
pub fn complete_size(format: &str) -> u64 {
    complete_content(format).len() as u64
}

/// Checks image files, reading each one whole only once.
#[derive(Debug, Default)]
pub struct FileChecker {
    verified: HashSet<PathBuf>,
}

impl FileChecker {
    /// Why the build's `format` is not complete on disk (`None`: it is):
    /// the image file must hold what fake-dib-cmd writes at the end of a
    /// build (not its early `partial` placeholder), and its `.md5` and
    /// `.sha256` files must exist and not be empty.
    pub fn incomplete(
        &mut self,
        images_dir: &Path,
        build_id: &str,
        format: &str,
    ) -> Option<String> {
        let path = image_file(images_dir, build_id, format);
        let shown = path.display();
        for ext in ["md5", "sha256"] {
            let sum = PathBuf::from(format!("{shown}.{ext}"));
            match std::fs::metadata(&sum) {
                Ok(m) if m.len() > 0 => {}
                Ok(_) => return Some(format!("{} is empty", sum.display())),
                Err(e) => return Some(format!("{}: {e}", sum.display())),
            }
        }
        if self.verified.contains(&path) {
            return match std::fs::metadata(&path) {
                Ok(m) if m.len() == complete_size(format) => None,
                Ok(m) => Some(format!("{shown} changed size to {}", m.len())),
                Err(e) => Some(format!("{shown}: {e}")),
            };
        }
        match std::fs::read(&path) {
            Ok(bytes) if bytes == complete_content(format) => {
                self.verified.insert(path);
                None
            }
            Ok(bytes) => Some(format!(
                "{shown} is incomplete ({} bytes, expected {})",
                bytes.len(),
                complete_size(format)
            )),
            Err(e) => Some(format!("{shown}: {e}")),
        }
    }
}

/// The "never" invariants, over one reading of each side: a `ready` build
/// whose files are not complete, a `ready` upload whose Glance image is
/// missing, not active or of the wrong size or owner. Returns suspects;
/// [`confirm`] keeps those whose record is still `ready` when read again
/// (cleanup marks a record `deleting` before it removes anything).
pub fn never_suspects(
    records: &Records,
    images: &[GlanceImage],
    images_dir: &Path,
    files: &mut FileChecker,
) -> Vec<Suspect> {
    let mut out = Vec::new();
    for b in records
        .builds
        .iter()
        .filter(|b| b.state == Some(BuildState::Ready))
    {
        let mut formats = b.formats.clone();
        formats.sort();
        if formats != FORMATS {
            out.push(Suspect::Build(
                b.id.clone(),
                format!("ready build {} lists formats {:?}", b.id, b.formats),
            ));
        }
        for f in &b.formats {
            if let Some(why) = files.incomplete(images_dir, &b.id, f) {
                out.push(Suspect::Build(
                    b.id.clone(),
                    format!("ready build {}: {why}", b.id),
                ));
            }
        }
    }
    for u in records
        .uploads
        .iter()
        .filter(|u| u.state == Some(UploadState::Ready))
    {
        let name = format!("ready upload {}/{}/{}", u.build_id, u.provider_name, u.id);
        let image = u
            .external_id
            .as_deref()
            .and_then(|id| images.iter().find(|i| i.id == id));
        let why = match image {
            None => Some(format!(
                "{name}: image {:?} is not in Glance",
                u.external_id
            )),
            Some(i) if i.status != "active" => {
                Some(format!("{name}: image {} is {}", i.id, i.status))
            }
            Some(i) if i.size != Some(complete_size(u.format.as_deref().unwrap_or("qcow2"))) => {
                Some(format!("{name}: image {} has {:?} bytes", i.id, i.size))
            }
            Some(i)
                if i.provider != u.provider_name
                    || i.build_id.as_deref() != Some(u.build_id.as_str())
                    || i.upload_id.as_deref() != Some(u.id.as_str()) =>
            {
                Some(format!(
                    "{name}: image {} carries another upload's metadata",
                    i.id
                ))
            }
            Some(_) => None,
        };
        if let Some(why) = why {
            out.push(Suspect::Upload(
                UploadKey {
                    build: u.build_id.clone(),
                    provider: u.provider_name.clone(),
                    id: u.id.clone(),
                },
                why,
            ));
        }
    }
    out
}

/// A record that looked wrong on one reading.
#[derive(Debug, Clone)]
pub enum Suspect {
    /// A build id and why.
    Build(String, String),
    /// An upload and why.
    Upload(UploadKey, String),
}

/// Which upload.
#[derive(Debug, Clone)]
pub struct UploadKey {
    build: String,
    provider: String,
    id: String,
}

/// The suspects still `ready` in `again` (read after the files and
/// images were looked at): those are violations.
pub fn confirm(suspects: Vec<Suspect>, again: &Records) -> Vec<String> {
    suspects
        .into_iter()
        .filter_map(|s| match s {
            Suspect::Build(id, why) => again
                .build(&id)
                .is_some_and(|b| b.state == Some(BuildState::Ready))
                .then_some(why),
            Suspect::Upload(u, why) => again
                .upload(&u)
                .is_some_and(|x| x.state == Some(UploadState::Ready))
                .then_some(why),
        })
        .collect()
}

/// What keeps the end state from being the converged one; empty when it
/// is: one or two builds, all `ready`, no build requested; the newest
/// uploaded to every provider; every upload `ready`; Glance holding
/// exactly the images of the ready uploads; `images-dir` holding exactly
/// the files of the ready builds; no diskimage-builder process left.
pub fn unsettled(
    records: &Records,
    images: &[GlanceImage],
    local: &BTreeMap<String, Vec<String>>,
    dib_processes: &[u32],
) -> Vec<String> {
    let mut out = Vec::new();
    let ready: Vec<&ImageBuild> = records
        .builds
        .iter()
        .filter(|b| b.state == Some(BuildState::Ready))
        .collect();
    for b in records
        .builds
        .iter()
        .filter(|b| b.state != Some(BuildState::Ready))
    {
        out.push(format!(
            "build {} is {}",
            b.id,
            b.state.map_or("none", |s| s.as_str())
        ));
    }
    if ready.is_empty() || ready.len() > 2 {
        out.push(format!("{} ready builds (1 or 2 expected)", ready.len()));
    }
    if records.requested {
        out.push("a build is still requested".to_string());
    }
    let newest = ready
        .iter()
        .max_by(|a, b| {
            a.state_time
                .unwrap_or(0.0)
                .total_cmp(&b.state_time.unwrap_or(0.0))
        })
        .map(|b| b.id.clone());
    if let Some(newest) = &newest {
        for p in PROVIDERS {
            let uploaded = records.uploads.iter().any(|u| {
                u.build_id == *newest && u.provider_name == p && u.state == Some(UploadState::Ready)
            });
            if !uploaded {
                out.push(format!("newest build {newest} has no ready upload to {p}"));
            }
        }
    }
    for u in records
        .uploads
        .iter()
        .filter(|u| u.state != Some(UploadState::Ready))
    {
        out.push(format!(
            "upload {}/{}/{} is {}",
            u.build_id,
            u.provider_name,
            u.id,
            u.state.map_or("none", |s| s.as_str())
        ));
    }
    let known: BTreeSet<&str> = records
        .uploads
        .iter()
        .filter(|u| u.state == Some(UploadState::Ready))
        .filter_map(|u| u.external_id.as_deref())
        .collect();
    for i in images.iter().filter(|i| !known.contains(i.id.as_str())) {
        out.push(format!(
            "Glance image {} ({}, build {:?}, upload {:?}, {}) has no ready upload record",
            i.id, i.provider, i.build_id, i.upload_id, i.status
        ));
    }
    for (id, names) in local {
        if !ready.iter().any(|b| b.id == *id) {
            out.push(format!(
                "files of build {id} without a ready record: {names:?}"
            ));
        }
    }
    if !dib_processes.is_empty() {
        out.push(format!(
            "diskimage-builder processes still running: {dib_processes:?}"
        ));
    }
    out
}
