//! A small Kubernetes REST client: create, get, list (with label selector,
//! limit and continue), delete and watch of JSON objects by API path.
//! `Status` answers become [`KubeError::Status`]; the bearer token is only
//! ever put in the `Authorization` header.

use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::error::KubeError;
use super::kubeconfig::Credentials;

/// How long one API call may take (a watch sets its own).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// One page of a list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObjectList {
    /// The objects.
    pub items: Vec<Value>,
    /// The list's `metadata.resourceVersion`: where a watch starts.
    pub resource_version: Option<String>,
    /// `metadata.continue`: the next page's token.
    pub next: Option<String>,
}

/// One event of a watch.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    /// `ADDED`, `MODIFIED` or `DELETED`, with the object.
    Object {
        /// The event type.
        kind: String,
        /// The object as it now is (or was, for `DELETED`).
        object: Value,
    },
    /// `BOOKMARK`: the resource version moved on.
    Bookmark(String),
    /// `ERROR` with its Status code (410: the version is too old; list
    /// again).
    Error(u16),
}

/// Reaches one API server with one set of credentials.
#[derive(Clone)]
pub struct KubeClient {
    http: reqwest::Client,
    credentials: Credentials,
}

impl std::fmt::Debug for KubeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeClient")
            .field("server", &self.credentials.server)
            .finish_non_exhaustive()
    }
}

impl KubeClient {
    /// A client for `credentials` (CA, client certificate and TLS
    /// verification as they say).
    pub fn new(credentials: Credentials) -> Result<Self, KubeError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("nodepool-rs/", env!("CARGO_PKG_VERSION")))
            .danger_accept_invalid_certs(credentials.insecure);
        if let Some(pem) = &credentials.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| KubeError::Config(format!("certificate authority: {e}")))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(pem) = &credentials.client_pem {
            let identity = reqwest::Identity::from_pem(pem.expose().as_bytes())
                .map_err(|e| KubeError::Config(format!("client certificate: {e}")))?;
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|e| KubeError::Config(format!("HTTP client: {e}")))?;
        Ok(Self { http, credentials })
    }

    /// The credentials in use.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.credentials.server);
        let mut req = self
            .http
            .request(method, url)
            .header("Accept", "application/json");
        if let Some(token) = &self.credentials.token {
            req = req.bearer_auth(token.expose());
        }
        req
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, KubeError> {
        let transport = |e: reqwest::Error| KubeError::Transport {
            method: method.to_string(),
            path: path.to_string(),
            message: without_url(&e),
        };
        let mut req = self
            .request(method.clone(), path)
            .query(query)
            .timeout(REQUEST_TIMEOUT);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        Err(status_error(&method, path, status, &value))
    }

    /// `POST` `body` to the collection at `path`; the created object.
    pub async fn create(&self, path: &str, body: &Value) -> Result<Value, KubeError> {
        self.call(Method::POST, path, &[], Some(body)).await
    }

    /// `GET` the object at `path`; `None` on 404.
    pub async fn get(&self, path: &str) -> Result<Option<Value>, KubeError> {
        match self.call(Method::GET, path, &[], None).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One page of the collection at `path` whose labels match `selector`.
    pub async fn list(
        &self,
        path: &str,
        selector: Option<&str>,
        limit: Option<usize>,
        next: Option<&str>,
    ) -> Result<ObjectList, KubeError> {
        let mut query = Vec::new();
        if let Some(s) = selector {
            query.push(("labelSelector", s.to_string()));
        }
        if let Some(l) = limit {
            query.push(("limit", l.to_string()));
        }
        if let Some(c) = next {
            query.push(("continue", c.to_string()));
        }
        let value = self.call(Method::GET, path, &query, None).await?;
        let meta = value.get("metadata");
        let text = |k: &str| {
            meta.and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Ok(ObjectList {
            items: value
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            resource_version: text("resourceVersion"),
            next: text("continue"),
        })
    }

    /// `DELETE` the object at `path` with background propagation (as
    /// upstream); a missing object is no error.
    pub async fn delete(&self, path: &str) -> Result<(), KubeError> {
        let body = json!({
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Background",
        });
        match self.call(Method::DELETE, path, &[], Some(&body)).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Watch the collection at `path` from `resource_version`, restricted
    /// by `field_selector` (`metadata.name=NAME`), for at most `timeout`.
    /// Events arrive on the returned stream until the server ends it.
    pub async fn watch(
        &self,
        path: &str,
        field_selector: Option<&str>,
        resource_version: Option<&str>,
        timeout: Duration,
    ) -> Result<impl futures::Stream<Item = Result<WatchEvent, KubeError>> + Send, KubeError> {
        let mut query = vec![
            ("watch", "1".to_string()),
            ("allowWatchBookmarks", "true".to_string()),
            ("timeoutSeconds", timeout.as_secs().max(1).to_string()),
        ];
        if let Some(s) = field_selector {
            query.push(("fieldSelector", s.to_string()));
        }
        if let Some(rv) = resource_version {
            query.push(("resourceVersion", rv.to_string()));
        }
        let transport_msg = |e: &reqwest::Error| without_url(e);
        let resp = self
            .request(Method::GET, path)
            .query(&query)
            .timeout(timeout + Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| KubeError::Transport {
                method: "WATCH".into(),
                path: path.to_string(),
                message: transport_msg(&e),
            })?;
        let status = resp.status();
        if !status.is_success() {
            let value = resp.json::<Value>().await.unwrap_or(Value::Null);
            return Err(status_error(&Method::GET, path, status, &value));
        }
        let path = path.to_string();
        let bytes = resp.bytes_stream();
        let lines = futures::stream::unfold(
            (bytes, Vec::<u8>::new(), false),
            move |(mut bytes, mut buf, done)| {
                let path = path.clone();
                async move {
                    if done {
                        return None;
                    }
                    loop {
                        if let Some(i) = buf.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = buf.drain(..=i).collect();
                            if line.iter().all(u8::is_ascii_whitespace) {
                                continue;
                            }
                            return Some((parse_event(&line), (bytes, buf, false)));
                        }
                        match bytes.next().await {
                            Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                            Some(Err(e)) => {
                                let err = KubeError::Transport {
                                    method: "WATCH".into(),
                                    path,
                                    message: without_url(&e),
                                };
                                return Some((Err(err), (bytes, buf, true)));
                            }
                            None if buf.iter().all(u8::is_ascii_whitespace) => return None,
                            None => {
                                let line = std::mem::take(&mut buf);
                                return Some((parse_event(&line), (bytes, buf, true)));
                            }
                        }
                    }
                }
            },
        );
        Ok(lines)
    }
}

pub(crate) fn parse_event(line: &[u8]) -> Result<WatchEvent, KubeError> {
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| KubeError::Invalid(format!("a watch event that is not JSON: {e}")))?;
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let object = value.get("object").cloned().unwrap_or(Value::Null);
    Ok(match kind.as_str() {
        "ERROR" => WatchEvent::Error(
            object
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(500),
        ),
        "BOOKMARK" => WatchEvent::Bookmark(resource_version(&object).unwrap_or_default()),
        _ => WatchEvent::Object { kind, object },
    })
}

/// An object's `metadata.resourceVersion`.
pub fn resource_version(object: &Value) -> Option<String> {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn status_error(method: &Method, path: &str, status: StatusCode, body: &Value) -> KubeError {
    let text = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let reason = match text("reason") {
        r if r.is_empty() => status.canonical_reason().unwrap_or_default().to_string(),
        r => r,
    };
    KubeError::Status {
        method: method.to_string(),
        path: path.to_string(),
        code: status.as_u16(),
        reason,
        message: text("message"),
    }
}

/// A transport error's text without the URL (queries may be long; no
/// credentials are in URLs, but the path is already in the error).
fn without_url(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    if let Some(url) = e.url() {
        msg = msg.replace(&format!(" ({url})"), "");
    }
    if let Some(source) = std::error::Error::source(e) {
        msg = format!("{msg}: {source}");
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_lines_become_events() {
        let added = parse_event(
            br#"{"type":"ADDED","object":{"metadata":{"name":"p","resourceVersion":"7"}}}"#,
        )
        .expect("an event");
        match added {
            WatchEvent::Object { kind, object } => {
                assert_eq!(kind, "ADDED");
                assert_eq!(resource_version(&object).as_deref(), Some("7"));
            }
            other => panic!("not an object event: {other:?}"),
        }
        let gone = parse_event(
            br#"{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired"}}"#,
        )
        .expect("an event");
        assert_eq!(gone, WatchEvent::Error(410));
        let mark =
            parse_event(br#"{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"12"}}}"#)
                .expect("an event");
        assert_eq!(mark, WatchEvent::Bookmark("12".into()));
        assert!(parse_event(b"not json").is_err());
    }

    #[test]
    fn status_bodies_become_errors_with_reason_and_message() {
        let body = json!({"kind": "Status", "reason": "AlreadyExists", "message": "namespaces \"x\" already exists", "code": 409});
        let e = status_error(
            &Method::POST,
            "/api/v1/namespaces",
            StatusCode::CONFLICT,
            &body,
        );
        assert_eq!(e.code(), Some(409));
        assert_eq!(
            e.to_string(),
            "POST /api/v1/namespaces: HTTP 409 AlreadyExists: namespaces \"x\" already exists"
        );
        let bare = status_error(&Method::GET, "/x", StatusCode::BAD_GATEWAY, &Value::Null);
        assert!(bare.to_string().contains("HTTP 502 Bad Gateway"), "{bare}");
    }
}
