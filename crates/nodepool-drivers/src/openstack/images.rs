//! Glance work of the provider: upload a built image (direct `PUT` of the
//! file, or the interoperable `glance-direct` import when the cloud's
//! `image_api_use_tasks` is set), wait for it to become active, and list
//! images with their properties.

use std::collections::BTreeMap;
use std::time::Duration;

use nodepool_core::provider::{CloudImage, ImageUploadSpec};
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::client::{Payload, ServiceType};
use super::error::OpenStackError;
use super::provider::{encode, OpenStackProvider};

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

impl OpenStackProvider {
    /// Upload `spec.path` as a private image; returns its id once active.
    /// A failed upload deletes the half-made image.
    pub(crate) async fn upload(&self, spec: &ImageUploadSpec) -> Result<String, OpenStackError> {
        if let Err(e) = tokio::fs::metadata(&spec.path).await {
            return Err(OpenStackError::Io(format!(
                "cannot read image file {}: {e}",
                spec.path.display()
            )));
        }
        let mut body = Map::new();
        for (k, v) in &spec.metadata {
            body.insert(k.clone(), json!(v));
        }
        body.insert("name".to_string(), json!(spec.external_name));
        body.insert("disk_format".to_string(), json!(spec.format));
        body.insert("container_format".to_string(), json!("bare"));
        body.insert("visibility".to_string(), json!("private"));
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
        let deadline = tokio::time::Instant::now() + timeout;
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
            if tokio::time::Instant::now() + delay > deadline {
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
