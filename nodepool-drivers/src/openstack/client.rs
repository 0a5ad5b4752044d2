//! The HTTP client of one cloud: authenticated JSON calls to the services
//! of the catalog, with token renewal (before expiry, and once on a 401),
//! and error mapping:
//! 403/413 quota answers become [`OpenStackError::Quota`], 5xx and
//! transport failures are retryable, other 4xx are not.
//!
//! Built on `reqwest` (rustls): the `openstack` crate does not cover
//! Nova's limits, Glance import or Neutron port filters, and hides the
//! status codes the quota mapping needs.
//!
//! The provider's `rate` is not applied here but by core's
//! [`RateLimit`](nodepool_core::provider::wrappers::RateLimit) wrapper,
//! around every provider call.
//!
//! With a sink ([`OpenStackClient::reporting_to`]) and statsd configured
//! for the cloud, each call is recorded as openstacksdk reports it
//! ([`super::api_metrics`]): the answer's status and time, or no answer.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nodepool_core::provider::DriverMetrics;
use reqwest::Method;
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::api_metrics::ApiReporter;
use super::auth::{issue_token, Token};
use super::clouds_yaml::CloudConfig;
use super::error::{is_quota_message, quota_resource, OpenStackError};

/// The compute microversion requested: embedded flavors (2.47) and
/// explicit `networks` (2.37) are relied on.
pub const COMPUTE_MICROVERSION: &str = "2.53";

/// A service of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceType {
    /// Nova.
    Compute,
    /// Glance.
    Image,
    /// Neutron.
    Network,
    /// Cinder (volume limits and volumes).
    BlockStorage,
}

impl ServiceType {
    /// The catalog types of the service, first found wins (Cinder is
    /// registered as `block-storage`, or by its older names, as
    /// openstacksdk looks it up).
    fn catalog_names(self) -> &'static [&'static str] {
        match self {
            ServiceType::Compute => &["compute"],
            ServiceType::Image => &["image"],
            ServiceType::Network => &["network"],
            ServiceType::BlockStorage => &["block-storage", "volumev3", "volumev2", "volume"],
        }
    }

    /// openstacksdk's `service_type` of the service's proxy, the second
    /// segment of its per-call metric names.
    pub fn sdk_service_type(self) -> &'static str {
        match self {
            ServiceType::Compute => "compute",
            ServiceType::Image => "image",
            ServiceType::Network => "network",
            ServiceType::BlockStorage => "block-storage",
        }
    }

    /// The version prefix appended to an unversioned catalog URL.
    fn version_suffix(self) -> Option<&'static str> {
        match self {
            ServiceType::Compute => None,
            ServiceType::Image => Some("/v2"),
            ServiceType::Network => Some("/v2.0"),
            ServiceType::BlockStorage => Some("/v3"),
        }
    }
}

/// What a request sends.
#[derive(Debug)]
pub enum Payload {
    /// Nothing.
    None,
    /// A JSON body.
    Json(Value),
    /// A JSON-patch body (Glance `PATCH`).
    JsonPatch(Value),
    /// A file, streamed as `application/octet-stream`.
    File(std::path::PathBuf),
}

/// A successful answer.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// The JSON body (`Null` when empty or not JSON).
    pub body: Value,
}

/// An authenticated client of one cloud.
#[derive(Debug)]
pub struct OpenStackClient {
    cloud: CloudConfig,
    http: reqwest::Client,
    token: Mutex<Option<Token>>,
    timeout: Duration,
    /// Records openstacksdk's per-call metrics, when the cloud configures
    /// statsd and a sink was given.
    reporter: Option<ApiReporter>,
}

/// A reqwest error in words, without headers (so without tokens).
pub(crate) fn describe_reqwest_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "connection dropped while reading the answer"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

/// The message of an error body, in any service's shape.
fn error_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        if let Some(m) = v["NeutronError"]["message"].as_str() {
            return m.to_string();
        }
        if let Some(m) = v["error"]["message"].as_str() {
            return m.to_string();
        }
        if let Some(obj) = v.as_object() {
            for inner in obj.values() {
                if let Some(m) = inner["message"].as_str() {
                    return m.to_string();
                }
            }
        }
    }
    // Glance answers HTML/text: keep the text, without tags.
    let mut out = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    let text = out.split_whitespace().collect::<Vec<_>>().join(" ");
    text.chars().take(500).collect()
}

impl OpenStackClient {
    /// A client of `cloud` that gives a call `timeout` to finish.
    pub fn new(cloud: CloudConfig, timeout: Duration) -> Result<Self, OpenStackError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("nodepool-rs/", env!("CARGO_PKG_VERSION")))
            .danger_accept_invalid_certs(!cloud.verify);
        if let Some(path) = &cloud.cacert {
            let pem = std::fs::read(path)
                .map_err(|e| OpenStackError::Config(format!("cacert {}: {e}", path.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| OpenStackError::Config(format!("cacert {}: {e}", path.display())))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| OpenStackError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            cloud,
            http,
            token: Mutex::new(None),
            timeout,
            reporter: None,
        })
    }

    /// Record openstacksdk's per-REST-call metrics of this client into
    /// `metrics`, when the cloud configures statsd
    /// ([`CloudConfig::api_statsd`]); otherwise nothing is recorded, as
    /// the SDK then sends nothing.
    pub fn reporting_to(mut self, metrics: Arc<DriverMetrics>) -> Self {
        self.reporter = self
            .cloud
            .api_statsd
            .clone()
            .map(|settings| ApiReporter::new(metrics, settings));
        self
    }

    /// The cloud's settings.
    pub fn cloud(&self) -> &CloudConfig {
        &self.cloud
    }

    /// A valid token, renewed when near its expiry or when `stale` (the
    /// token just refused with 401) is still the current one.
    async fn token(&self, stale: Option<&str>) -> Result<Token, OpenStackError> {
        let mut guard = self.token.lock().await;
        let usable = guard
            .as_ref()
            .filter(|t| !t.needs_renewal(SystemTime::now()) && stale != Some(t.value.expose()));
        if let Some(t) = usable {
            return Ok(t.clone());
        }
        tracing::debug!(cloud = %self.cloud.name, "requesting a Keystone token");
        let fresh = issue_token(&self.http, &self.cloud).await?;
        *guard = Some(fresh.clone());
        Ok(fresh)
    }

    /// The base URL of `service` (versioned).
    pub async fn endpoint(&self, service: ServiceType) -> Result<String, OpenStackError> {
        let token = self.token(None).await?;
        self.endpoint_of(&token, service)
    }

    fn endpoint_of(&self, token: &Token, service: ServiceType) -> Result<String, OpenStackError> {
        let mut found = None;
        for name in service.catalog_names() {
            match token.endpoint(
                name,
                self.cloud.region_name.as_deref(),
                &self.cloud.interface,
            ) {
                Ok(url) => {
                    found = Some(Ok(url));
                    break;
                }
                Err(e) => {
                    found.get_or_insert(Err(e));
                }
            }
        }
        let url = found.unwrap_or_else(|| {
            Err(OpenStackError::Config(format!(
                "{service:?} has no catalog type"
            )))
        })?;
        Ok(match service.version_suffix() {
            // Cinder's catalog URLs carry the version and the project id
            // (`.../v3/<project>`); only a bare one gets the version.
            Some(v) if service == ServiceType::BlockStorage => {
                if url.contains("/v3") || url.contains("/v2") {
                    url
                } else {
                    format!("{url}{v}")
                }
            }
            Some(v) if !url.ends_with(v) => format!("{url}{v}"),
            _ => url,
        })
    }

    /// Call `method path` of `service` (path relative to the versioned
    /// endpoint, or an absolute URL). 404 is returned as an error with
    /// status 404; callers that accept it check [`OpenStackError::status`].
    pub async fn call(
        &self,
        service: ServiceType,
        method: Method,
        path: &str,
        payload: Payload,
    ) -> Result<Answer, OpenStackError> {
        let mut stale: Option<String> = None;
        for attempt in 0..2 {
            let token = self.token(stale.as_deref()).await?;
            let url = if path.starts_with("http://") || path.starts_with("https://") {
                path.to_string()
            } else {
                format!("{}{path}", self.endpoint_of(&token, service)?)
            };
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header("X-Auth-Token", token.value.expose())
                .header("Accept", "application/json")
                .timeout(self.timeout);
            if service == ServiceType::Compute {
                req = req.header(
                    "OpenStack-API-Version",
                    format!("compute {COMPUTE_MICROVERSION}"),
                );
            }
            req = match &payload {
                Payload::None => req,
                Payload::Json(v) => req.json(v),
                Payload::JsonPatch(v) => req
                    .header(
                        "Content-Type",
                        "application/openstack-images-v2.1-json-patch",
                    )
                    .body(v.to_string()),
                Payload::File(path) => {
                    let file = tokio::fs::File::open(path).await.map_err(|e| {
                        OpenStackError::Io(format!("cannot read {}: {e}", path.display()))
                    })?;
                    let stream = tokio_util::io::ReaderStream::new(file);
                    req.header("Content-Type", "application/octet-stream")
                        .body(reqwest::Body::wrap_stream(stream))
                }
            };
            let transport = |e: reqwest::Error| OpenStackError::Transport {
                method: method.to_string(),
                url: url.clone(),
                message: describe_reqwest_error(&e),
            };
            let project = token.project_id.as_deref();
            let no_answer = |e: reqwest::Error| {
                if let Some(r) = &self.reporter {
                    r.failed(service.sdk_service_type(), method.as_str(), path, project);
                }
                transport(e)
            };
            let started = Instant::now();
            let resp = req.send().await.map_err(no_answer)?;
            // `response.elapsed`: until the answer's headers.
            let took = started.elapsed();
            let status = resp.status().as_u16();
            let answered_url = resp.url().clone();
            let text = resp.text().await.map_err(no_answer)?;
            if status == 401 && attempt == 0 {
                tracing::debug!(cloud = %self.cloud.name, "token refused; renewing it");
                stale = Some(token.value.expose().to_string());
                continue;
            }
            if let Some(r) = &self.reporter {
                r.answered(
                    service.sdk_service_type(),
                    method.as_str(),
                    answered_url.as_str(),
                    project,
                    status,
                    took,
                );
            }
            if (200..300).contains(&status) {
                let body = serde_json::from_str(&text).unwrap_or(Value::Null);
                return Ok(Answer { status, body });
            }
            let message = error_message(&text);
            if status == 413 || (status == 403 && is_quota_message(&message)) {
                return Err(OpenStackError::Quota {
                    what: quota_resource(&message),
                    message,
                });
            }
            return Err(OpenStackError::Http {
                method: method.to_string(),
                url,
                status,
                message,
            });
        }
        Err(OpenStackError::AuthFailed {
            url: super::auth::token_url(&self.cloud.auth_url),
            message: "a fresh token was refused too".to_string(),
        })
    }

    /// `GET path`, JSON body.
    pub async fn get(&self, service: ServiceType, path: &str) -> Result<Value, OpenStackError> {
        Ok(self
            .call(service, Method::GET, path, Payload::None)
            .await?
            .body)
    }

    /// `GET path`, `None` on 404.
    pub async fn get_opt(
        &self,
        service: ServiceType,
        path: &str,
    ) -> Result<Option<Value>, OpenStackError> {
        match self.get(service, path).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `DELETE path`; a 404 counts as done.
    pub async fn delete(&self, service: ServiceType, path: &str) -> Result<(), OpenStackError> {
        match self
            .call(service, Method::DELETE, path, Payload::None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
