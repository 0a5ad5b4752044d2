//! Glance work of the provider: upload a built image (direct `PUT` of the
//! file, or the interoperable `glance-direct` import when the cloud's
//! `image_api_use_tasks` is set) in a `disk_format` Glance's image schema
//! accepts, with upstream's properties; wait for it to become active, and
//! list images with their properties.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use nodepool_core::provider::{CloudImage, ImageUploadSpec, META_PROVIDER};
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::client::{Payload, ServiceType};
use super::error::OpenStackError;
use super::provider::{encode, json_text, OpenStackProvider};
use super::template::python_str;

/// Attributes of an image that are not properties.
const CORE: &[&str] = &[
    "id",
    "name",
    "status",
    "disk_format",
    "container_format",
    "visibility",
    "size",
    "virtual_size",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "created_at",
    "updated_at",
    "self",
    "file",
    "schema",
    "tags",
    "min_disk",
    "min_ram",
    "protected",
    "owner",
    "os_hidden",
    "direct_url",
    "locations",
    "stores",
];

/// Image attributes openstacksdk sends as integers.
const INT_PROPERTIES: &[&str] = &["min_disk", "min_ram", "size", "virtual_size"];
/// Image attributes openstacksdk sends as given (not as text).
const RAW_PROPERTIES: &[&str] = &["is_protected", "protected", "tags"];

/// openstacksdk's checksum properties of an uploaded image.
const MD5_KEY: &str = "owner_specified.openstack.md5";
const SHA256_KEY: &str = "owner_specified.openstack.sha256";
const OBJECT_KEY: &str = "owner_specified.openstack.object";

/// The checksums diskimage-builder wrote next to an image file
/// (`<file>.md5`, `<file>.sha256`), as upstream's builder reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Checksums {
    pub(crate) md5: Option<String>,
    pub(crate) sha256: Option<String>,
}

impl Checksums {
    /// Read the checksum files of `path`; absent ones are `None`.
    pub(crate) async fn read(path: &Path) -> Self {
        async fn first(path: &Path, ext: &str, len: usize) -> Option<String> {
            let file = format!("{}.{ext}", path.display());
            let text = tokio::fs::read_to_string(file).await.ok()?;
            let sum: String = text.chars().take(len).collect();
            (!sum.is_empty()).then_some(sum)
        }
        Self {
            md5: first(path, "md5", 32).await,
            sha256: first(path, "sha256", 64).await,
        }
    }
}

/// A metadata value as openstacksdk sends it: integers for `min_disk`,
/// `min_ram`, `size` and `virtual_size`, as given for `protected` and
/// `tags`, Python's `str()` of it for everything else.
pub(crate) fn property_value(key: &str, value: &Value) -> Value {
    if INT_PROPERTIES.contains(&key) {
        let int = match value {
            Value::String(s) => s.trim().parse::<i64>().ok(),
            Value::Bool(b) => Some(i64::from(*b)),
            other => other.as_i64().or_else(|| other.as_f64().map(|f| f as i64)),
        };
        return int.map_or_else(|| value.clone(), Value::from);
    }
    if RAW_PROPERTIES.contains(&key) || value.is_null() {
        return value.clone();
    }
    Value::String(python_str(value))
}

/// The `disk_format` values Glance's image schema lists (`null` left out);
/// `None` when the schema has no such enum.
pub(crate) fn schema_disk_formats(schema: &Value) -> Option<Vec<String>> {
    let list = schema["properties"]["disk_format"]["enum"].as_array()?;
    Some(
        list.iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
    )
}

impl OpenStackProvider {
    /// The `disk_format` of an upload: the format of the built file, else
    /// the cloud's `image_format` from `clouds.yaml` (as upstream, whose
    /// builder builds and uploads exactly that format).
    pub(crate) fn disk_format<'s>(&'s self, spec: &'s ImageUploadSpec) -> &'s str {
        let cloud = &self.client.cloud().image_format;
        if spec.format.is_empty() {
            return cloud;
        }
        if spec.format != *cloud {
            tracing::warn!(
                image = %spec.external_name,
                format = %spec.format,
                image_format = %cloud,
                "uploading a format other than the cloud's image_format"
            );
        }
        &spec.format
    }

    /// The body of `POST /images`, as openstacksdk's `create_image` makes
    /// it for upstream's upload: private, `bare`, the metadata of `spec`
    /// (the diskimage's `metadata`, the provider diskimage's `meta`,
    /// `nodepool_build_id`, `nodepool_upload_id`) plus
    /// `nodepool_provider_name` and the checksum properties. Keys of the
    /// metadata that are image attributes (`visibility`,
    /// `container_format`, `min_ram`, ...) set those attributes.
    pub(crate) fn image_body(
        &self,
        spec: &ImageUploadSpec,
        disk_format: &str,
        sums: &Checksums,
    ) -> Map<String, Value> {
        let mut body = Map::new();
        body.insert("visibility".to_string(), json!("private"));
        body.insert("container_format".to_string(), json!("bare"));
        // The provider's `meta` keeps its YAML types; core hands it over
        // as text.
        let typed = self.config.diskimage(&spec.diskimage).map(|d| &d.meta);
        for (key, text) in &spec.metadata {
            let raw = typed
                .and_then(|m| m.get(key))
                .filter(|raw| json_text(raw) == *text)
                .cloned()
                .unwrap_or_else(|| Value::String(text.clone()));
            body.insert(key.clone(), property_value(key, &raw));
        }
        body.insert(META_PROVIDER.to_string(), json!(self.config.name));
        body.insert(
            MD5_KEY.to_string(),
            json!(sums.md5.as_deref().unwrap_or("")),
        );
        body.insert(
            SHA256_KEY.to_string(),
            json!(sums.sha256.as_deref().unwrap_or("")),
        );
        body.insert(
            OBJECT_KEY.to_string(),
            json!(format!("images/{}", spec.external_name)),
        );
        body.insert("name".to_string(), json!(spec.external_name));
        body.insert("disk_format".to_string(), json!(disk_format));
        body
    }

    /// Fail early when Glance's image schema does not list `format`: the
    /// upload would be refused after the image record is made. A cloud
    /// without the schema is not checked.
    async fn check_disk_format(&self, format: &str) -> Result<(), OpenStackError> {
        let schema = match self.client.get(ServiceType::Image, "/schemas/image").await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "no image schema; disk_format not checked");
                return Ok(());
            }
        };
        match schema_disk_formats(&schema) {
            Some(accepted) if !accepted.iter().any(|f| f == format) => {
                Err(OpenStackError::Config(format!(
                    "cloud {} does not accept disk_format {format} (it accepts {}); set \
                     image_format in the cloud's clouds.yaml entry to one of them and rebuild",
                    self.client.cloud().name,
                    accepted.join(", ")
                )))
            }
            _ => Ok(()),
        }
    }

    /// Upload `spec.path` as a private image; returns its id once active.
    /// A failed upload deletes the half-made image.
    pub(crate) async fn upload(&self, spec: &ImageUploadSpec) -> Result<String, OpenStackError> {
        if let Err(e) = tokio::fs::metadata(&spec.path).await {
            return Err(OpenStackError::Io(format!(
                "cannot read image file {}: {e}",
                spec.path.display()
            )));
        }
        let disk_format = self.disk_format(spec);
        self.check_disk_format(disk_format).await?;
        let sums = Checksums::read(&spec.path).await;
        let body = self.image_body(spec, disk_format, &sums);
        let created = self
            .client
            .call(
                ServiceType::Image,
                Method::POST,
                "/images",
                Payload::Json(Value::Object(body)),
            )
            .await?;
        let id = created.body["id"]
            .as_str()
            .ok_or_else(|| OpenStackError::BadResponse {
                url: "POST /images".to_string(),
                message: "no image id in the answer".to_string(),
            })?
            .to_string();
        match self.send_data(&id, spec).await {
            Ok(()) => Ok(id),
            Err(e) => {
                if let Err(del) = self
                    .client
                    .delete(ServiceType::Image, &format!("/images/{id}"))
                    .await
                {
                    tracing::warn!(image = %id, error = %del, "cannot delete a failed upload");
                }
                Err(e)
            }
        }
    }

    async fn send_data(&self, id: &str, spec: &ImageUploadSpec) -> Result<(), OpenStackError> {
        let file = Payload::File(spec.path.clone());
        if self.client.cloud().use_image_import {
            self.client
                .call(
                    ServiceType::Image,
                    Method::PUT,
                    &format!("/images/{id}/stage"),
                    file,
                )
                .await?;
            let method = json!({"method": {"name": "glance-direct"}});
            self.client
                .call(
                    ServiceType::Image,
                    Method::POST,
                    &format!("/images/{id}/import"),
                    Payload::Json(method),
                )
                .await?;
        } else {
            self.client
                .call(
                    ServiceType::Image,
                    Method::PUT,
                    &format!("/images/{id}/file"),
                    file,
                )
                .await?;
        }
        self.wait_image_active(id).await
    }

    async fn wait_image_active(&self, id: &str) -> Result<(), OpenStackError> {
        let timeout = self.config.image_upload_timeout();
        let deadline = nodepool_core::time::deadline_after(timeout);
        let mut delay = Duration::from_millis(100);
        loop {
            let image = self
                .client
                .get(ServiceType::Image, &format!("/images/{}", encode(id)))
                .await?;
            match image["status"].as_str() {
                Some("active") => return Ok(()),
                Some(s @ ("killed" | "deleted" | "deactivated")) => {
                    return Err(OpenStackError::Failed(format!(
                        "image {id} is {s} after upload"
                    )))
                }
                _ => {}
            }
            if nodepool_core::time::deadline_after(delay) > deadline {
                return Err(OpenStackError::Failed(format!(
                    "image {id} not active after {}s",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Every image the project sees, with its string properties.
    pub(crate) async fn images(&self) -> Result<Vec<CloudImage>, OpenStackError> {
        let mut out = Vec::new();
        let root = self.client.endpoint(ServiceType::Image).await?;
        let root = root.trim_end_matches("/v2").to_string();
        let mut path = "/images?limit=100".to_string();
        for _ in 0..10_000 {
            let body = self.client.get(ServiceType::Image, &path).await?;
            for image in body["images"].as_array().into_iter().flatten() {
                let Some(id) = image["id"].as_str() else {
                    continue;
                };
                let metadata: BTreeMap<String, String> = image
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| !CORE.contains(&k.as_str()))
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect();
                out.push(CloudImage {
                    external_id: id.to_string(),
                    name: image["name"].as_str().unwrap_or_default().to_string(),
                    metadata,
                });
            }
            match body["next"].as_str() {
                // `next` is relative to the unversioned endpoint.
                Some(next) => path = format!("{root}{next}"),
                None => break,
            }
        }
        Ok(out)
    }
}
