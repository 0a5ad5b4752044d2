//! Keystone v3 authentication: password and application-credential
//! tokens, the service catalog, and when to renew a token.
//!
//! Credentials and tokens live in core's [`Secret`], whose `Debug` prints
//! `Secret(***)`; no error message or log line carries them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::clouds_yaml::CloudConfig;
use super::error::OpenStackError;

pub use nodepool_core::Secret;

/// How to authenticate against Keystone v3.
#[derive(Debug, Clone, PartialEq)]
pub enum Credentials {
    /// `auth_type: password` (or `v3password`).
    Password {
        /// `username`.
        username: Option<String>,
        /// `user_id`.
        user_id: Option<String>,
        /// `password`.
        password: Secret,
        /// `user_domain_name` (or `domain_name`).
        user_domain_name: Option<String>,
        /// `user_domain_id` (or `domain_id`).
        user_domain_id: Option<String>,
        /// `project_name`.
        project_name: Option<String>,
        /// `project_id`.
        project_id: Option<String>,
        /// `project_domain_name` (or `domain_name`).
        project_domain_name: Option<String>,
        /// `project_domain_id` (or `domain_id`).
        project_domain_id: Option<String>,
    },
    /// `auth_type: v3applicationcredential`.
    ApplicationCredential {
        /// `application_credential_id`.
        id: Option<String>,
        /// `application_credential_name` (needs the user).
        name: Option<String>,
        /// `application_credential_secret`.
        secret: Secret,
        /// `username`, with a name.
        username: Option<String>,
        /// `user_id`, with a name.
        user_id: Option<String>,
        /// `user_domain_name`.
        user_domain_name: Option<String>,
        /// `user_domain_id`.
        user_domain_id: Option<String>,
    },
}

fn domain(name: &Option<String>, id: &Option<String>) -> Value {
    match (id, name) {
        (Some(id), _) => json!({ "id": id }),
        (None, Some(name)) => json!({ "name": name }),
        (None, None) => json!({ "id": "default" }),
    }
}

fn user(
    name: &Option<String>,
    id: &Option<String>,
    dname: &Option<String>,
    did: &Option<String>,
) -> Value {
    match (id, name) {
        (Some(id), _) => json!({ "id": id }),
        (None, name) => json!({ "name": name, "domain": domain(dname, did) }),
    }
}

impl Credentials {
    /// The `POST /v3/auth/tokens` body.
    fn request_body(&self) -> Value {
        match self {
            Credentials::Password {
                username,
                user_id,
                password,
                user_domain_name,
                user_domain_id,
                project_name,
                project_id,
                project_domain_name,
                project_domain_id,
            } => {
                let mut u = user(username, user_id, user_domain_name, user_domain_id);
                u["password"] = json!(password.expose());
                let mut auth =
                    json!({"identity": {"methods": ["password"], "password": {"user": u}}});
                match (project_id, project_name) {
                    (Some(id), _) => auth["scope"] = json!({"project": {"id": id}}),
                    (None, Some(name)) => {
                        auth["scope"] = json!({"project": {"name": name,
                            "domain": domain(project_domain_name, project_domain_id)}})
                    }
                    (None, None) => {}
                }
                json!({ "auth": auth })
            }
            Credentials::ApplicationCredential {
                id,
                name,
                secret,
                username,
                user_id,
                user_domain_name,
                user_domain_id,
            } => {
                let cred = match id {
                    Some(id) => json!({"id": id, "secret": secret.expose()}),
                    None => json!({"name": name, "secret": secret.expose(),
                        "user": user(username, user_id, user_domain_name, user_domain_id)}),
                };
                json!({"auth": {"identity": {"methods": ["application_credential"],
                    "application_credential": cred}}})
            }
        }
    }
}

/// One catalog endpoint.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Endpoint {
    pub(crate) service_type: String,
    pub(crate) interface: String,
    pub(crate) region: Option<String>,
    pub(crate) url: String,
}

/// A token with its catalog.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub(crate) value: Secret,
    pub(crate) issued_at: Option<SystemTime>,
    pub(crate) expires_at: Option<SystemTime>,
    pub(crate) catalog: Vec<Endpoint>,
    /// The id of the project the token is scoped to (keystoneauth's
    /// `get_project_id`, which openstacksdk leaves out of metric names).
    pub(crate) project_id: Option<String>,
}

impl Token {
    /// Whether to get a new token before using this one at `now`: within
    /// the last fifth of its life (at most 5 minutes before expiry).
    pub(crate) fn needs_renewal(&self, now: SystemTime) -> bool {
        let Some(expires) = self.expires_at else {
            return false;
        };
        let life = self
            .issued_at
            .and_then(|i| expires.duration_since(i).ok())
            .unwrap_or(Duration::from_secs(3600));
        let margin = (life / 5).min(Duration::from_secs(300));
        expires.checked_sub(margin).map_or(true, |t| t <= now)
    }

    /// The URL of `service_type` for `region` and `interface`.
    pub(crate) fn endpoint(
        &self,
        service_type: &str,
        region: Option<&str>,
        interface: &str,
    ) -> Result<String, OpenStackError> {
        let interface = interface.trim_end_matches("URL");
        self.catalog
            .iter()
            .find(|e| {
                e.service_type == service_type
                    && e.interface == interface
                    && region.map_or(true, |r| e.region.as_deref() == Some(r))
            })
            .map(|e| e.url.trim_end_matches('/').to_string())
            .ok_or_else(|| OpenStackError::NoEndpoint {
                service: service_type.to_string(),
                region: region.unwrap_or("any").to_string(),
                interface: interface.to_string(),
            })
    }
}

/// `POST .../v3/auth/tokens` URL for an `auth_url` with or without `/v3`.
pub(crate) fn token_url(auth_url: &str) -> String {
    let base = auth_url.trim_end_matches('/');
    if base.ends_with("/v3") {
        format!("{base}/auth/tokens")
    } else {
        format!("{base}/v3/auth/tokens")
    }
}

/// Parse an ISO 8601 UTC time (`2024-01-02T03:04:05.123456Z`, or with
/// `+00:00`) as Keystone writes `expires_at`.
pub(crate) fn parse_time(text: &str) -> Option<SystemTime> {
    let t = text.trim().trim_end_matches('Z').trim_end_matches("+00:00");
    let (date, time) = t.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut h = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (h.next()??, h.next()??, h.next()??);
    let frac: f64 = format!("0.{frac}").parse().ok()?;
    let in_range = (1..=12).contains(&m)
        && (1..=31).contains(&day)
        && (0..=23).contains(&hh)
        && (0..=59).contains(&mm)
        && (0..=60).contains(&ss);
    if !in_range {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm), checked: a year, day
    // or second beyond any clock is no time at all.
    let y = if m <= 2 { y.checked_sub(1)? } else { y };
    let era = y.div_euclid(400);
    let yoe = y.checked_sub(era.checked_mul(400)?)?;
    let mp = m.checked_add(9)? % 12;
    let doy = ((153 * mp + 2) / 5).checked_add(day)?.checked_sub(1)?;
    let doe = (yoe * 365 + yoe / 4 - yoe / 100).checked_add(doy)?;
    let days = era
        .checked_mul(146_097)?
        .checked_add(doe)?
        .checked_sub(719_468)?;
    let secs = days
        .checked_mul(86_400)?
        .checked_add(hh.checked_mul(3600)?)?
        .checked_add(mm.checked_mul(60)?)?
        .checked_add(ss)?;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))?
        .checked_add(Duration::try_from_secs_f64(frac).ok()?)
}

pub(crate) fn parse_catalog(body: &Value) -> Vec<Endpoint> {
    let mut out = Vec::new();
    let services = body["token"]["catalog"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for service in services {
        let kind = service["type"].as_str().unwrap_or_default().to_string();
        for e in service["endpoints"].as_array().cloned().unwrap_or_default() {
            let (Some(url), Some(interface)) = (e["url"].as_str(), e["interface"].as_str()) else {
                continue;
            };
            out.push(Endpoint {
                service_type: kind.clone(),
                interface: interface.to_string(),
                region: e["region_id"]
                    .as_str()
                    .or(e["region"].as_str())
                    .map(str::to_string),
                url: url.to_string(),
            });
        }
    }
    out
}

/// Get a new token for `cloud`.
pub(crate) async fn issue_token(
    http: &reqwest::Client,
    cloud: &CloudConfig,
) -> Result<Token, OpenStackError> {
    let url = token_url(&cloud.auth_url);
    let transport = |e: reqwest::Error| OpenStackError::Transport {
        method: "POST".to_string(),
        url: url.clone(),
        message: super::client::describe_reqwest_error(&e),
    };
    let resp = http
        .post(&url)
        .json(&cloud.credentials.request_body())
        .send()
        .await
        .map_err(transport)?;
    let status = resp.status().as_u16();
    let token = resp
        .headers()
        .get("X-Subject-Token")
        .and_then(|v| v.to_str().ok())
        .map(Secret::new);
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status == 401 || status == 403 {
        return Err(OpenStackError::AuthFailed {
            url,
            message: body["error"]["message"]
                .as_str()
                .unwrap_or("credentials refused")
                .to_string(),
        });
    }
    if !(200..300).contains(&status) {
        return Err(OpenStackError::Http {
            method: "POST".to_string(),
            message: body["error"]["message"].as_str().unwrap_or("").to_string(),
            url,
            status,
        });
    }
    let value = token.ok_or_else(|| OpenStackError::BadResponse {
        url: url.clone(),
        message: "no X-Subject-Token header".to_string(),
    })?;
    Ok(Token {
        value,
        issued_at: body["token"]["issued_at"].as_str().and_then(parse_time),
        expires_at: body["token"]["expires_at"].as_str().and_then(parse_time),
        catalog: parse_catalog(&body),
        project_id: body["token"]["project"]["id"].as_str().map(str::to_string),
    })
}
