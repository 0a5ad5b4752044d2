//! A signed HTTP client for the AWS APIs the driver calls: EC2's query
//! API (form-encoded POST, XML answers, [`Xml`]), Service Quotas' JSON
//! API, and raw REST calls (S3, EBS direct).

use std::time::{Duration, SystemTime};

use reqwest::{Method, Url};

use super::credentials::{endpoint, Service};
use super::error::AwsError;
use super::sigv4::{self, canonical_query, encode_path, sha256_hex, Credentials, SignableRequest};

/// The EC2 API version the driver speaks.
pub const EC2_VERSION: &str = "2016-11-15";

/// An element of an XML answer, owned: its local name, text and children.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Xml {
    /// The local name (no namespace).
    pub name: String,
    /// The text directly inside it, trimmed.
    pub text: String,
    /// Its child elements in order.
    pub children: Vec<Xml>,
}

impl Xml {
    /// Parse a document; its root element.
    pub fn parse(text: &str) -> Result<Xml, String> {
        let doc = roxmltree::Document::parse(text).map_err(|e| e.to_string())?;
        Ok(Self::from_node(doc.root_element()))
    }

    fn from_node(node: roxmltree::Node<'_, '_>) -> Xml {
        let mut text = String::new();
        let mut children = Vec::new();
        for child in node.children() {
            if child.is_element() {
                children.push(Self::from_node(child));
            } else if let Some(t) = child.text() {
                text.push_str(t);
            }
        }
        Xml {
            name: node.tag_name().name().to_string(),
            text: text.trim().to_string(),
            children,
        }
    }

    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Xml> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The element at a path of child names.
    pub fn at(&self, path: &[&str]) -> Option<&Xml> {
        path.iter().try_fold(self, |node, name| node.child(name))
    }

    /// The text at a path of child names, when present and not empty.
    pub fn text_at(&self, path: &[&str]) -> Option<String> {
        self.at(path)
            .map(|n| n.text.clone())
            .filter(|t| !t.is_empty())
    }

    /// The `<item>` children of the list element `name` (EC2's lists).
    pub fn items(&self, name: &str) -> impl Iterator<Item = &Xml> {
        self.child(name)
            .into_iter()
            .flat_map(|list| list.children.iter().filter(|c| c.name == "item"))
    }

    /// The `tagSet` of an EC2 resource as key → value.
    pub fn tags(&self) -> std::collections::BTreeMap<String, String> {
        self.items("tagSet")
            .filter_map(|t| {
                Some((
                    t.text_at(&["key"])?,
                    t.text_at(&["value"]).unwrap_or_default(),
                ))
            })
            .collect()
    }
}

/// Query parameters of an EC2 call, in EC2's flattened form
/// (`TagSpecification.1.Tag.2.Key`).
#[derive(Debug, Clone, Default)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// No parameters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add one.
    pub fn set(&mut self, key: impl Into<String>, value: impl ToString) -> &mut Self {
        self.0.push((key.into(), value.to_string()));
        self
    }

    /// Add `prefix.1`, `prefix.2`, ... for `values`.
    pub fn list<S: ToString>(&mut self, prefix: &str, values: &[S]) -> &mut Self {
        for (i, v) in values.iter().enumerate() {
            self.set(format!("{prefix}.{}", i + 1), v.to_string());
        }
        self
    }

    /// Add `prefix.N.Key` / `prefix.N.Value` for the tags.
    pub fn tags<'t>(
        &mut self,
        prefix: &str,
        tags: impl IntoIterator<Item = (&'t String, &'t String)>,
    ) -> &mut Self {
        for (i, (k, v)) in tags.into_iter().enumerate() {
            self.set(format!("{prefix}.{}.Key", i + 1), k);
            self.set(format!("{prefix}.{}.Value", i + 1), v);
        }
        self
    }

    /// Add `Filter.N.Name` / `Filter.N.Value.M`.
    pub fn filter(&mut self, name: &str, values: &[&str]) -> &mut Self {
        let n = self
            .0
            .iter()
            .filter(|(k, _)| k.ends_with(".Name") && k.starts_with("Filter."))
            .count()
            + 1;
        self.set(format!("Filter.{n}.Name"), name);
        self.list(&format!("Filter.{n}.Value"), values)
    }
}

/// A signed client for one region.
#[derive(Debug, Clone)]
pub struct AwsClient {
    http: reqwest::Client,
    creds: Credentials,
    region: String,
    ec2: Url,
    s3: Url,
    ebs: Url,
    service_quotas: Url,
}

fn parse_url(text: &str) -> Result<Url, AwsError> {
    Url::parse(text).map_err(|e| AwsError::Config(format!("endpoint {text:?} is no URL: {e}")))
}

fn host_of(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

fn transport(action: &str, e: &reqwest::Error) -> AwsError {
    AwsError::Transport {
        action: action.to_string(),
        message: if e.is_timeout() {
            "timed out".to_string()
        } else {
            // Without the URL's query (no secrets are in it, but keep it short).
            e.without_url_ref().to_string()
        },
    }
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let mut text = self.to_string();
        if let Some(url) = self.url() {
            text = text.replace(url.as_str(), url.path());
        }
        text
    }
}

impl AwsClient {
    /// A client for `region` signing with `creds`; endpoints from the
    /// environment as the SDKs read them ([`endpoint`]).
    pub fn new(
        creds: Credentials,
        region: &str,
        env: &dyn Fn(&str) -> Option<String>,
        timeout: Duration,
    ) -> Result<Self, AwsError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| AwsError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            creds,
            region: region.to_string(),
            ec2: parse_url(&endpoint(Service::Ec2, region, env))?,
            s3: parse_url(&endpoint(Service::S3, region, env))?,
            ebs: parse_url(&endpoint(Service::Ebs, region, env))?,
            service_quotas: parse_url(&endpoint(Service::ServiceQuotas, region, env))?,
        })
    }

    /// The region.
    pub fn region(&self) -> &str {
        &self.region
    }

    fn base(&self, service: Service) -> &Url {
        match service {
            Service::Ec2 => &self.ec2,
            Service::S3 => &self.s3,
            Service::Ebs => &self.ebs,
            Service::ServiceQuotas => &self.service_quotas,
        }
    }

    /// Send a signed request; the status and body of the answer.
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        &self,
        service: Service,
        action: &str,
        method: Method,
        path: &str,
        query: &[(String, String)],
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), AwsError> {
        let (status, _, body) = self
            .send_full(service, action, method, path, query, headers, body)
            .await?;
        Ok((status, body))
    }

    /// [`AwsClient::send`], with the answer's headers.
    #[allow(clippy::too_many_arguments)]
    pub async fn send_full(
        &self,
        service: Service,
        action: &str,
        method: Method,
        path: &str,
        query: &[(String, String)],
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<(u16, reqwest::header::HeaderMap, Vec<u8>), AwsError> {
        let base = self.base(service);
        let base_path = base.path().trim_end_matches('/');
        let full_path = encode_path(&format!("{base_path}{path}"));
        let host = host_of(base);
        let payload = sha256_hex(&body);
        let mut signed_headers = headers.to_vec();
        if service == Service::S3 {
            signed_headers.push(("x-amz-content-sha256".to_string(), payload.clone()));
        }
        let req = SignableRequest {
            method: method.as_str(),
            host: &host,
            path: &full_path,
            query,
            headers: &signed_headers,
            payload_sha256: &payload,
        };
        let auth = sigv4::sign(
            &self.creds,
            &self.region,
            service.signing_name(),
            SystemTime::now(),
            &req,
        );
        let mut url = base.clone();
        url.set_path(&full_path);
        let q = canonical_query(query);
        url.set_query((!q.is_empty()).then_some(q.as_str()));
        let mut builder = self.http.request(method, url);
        for (k, v) in signed_headers.iter().chain(auth.iter()) {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let resp = builder
            .body(body)
            .send()
            .await
            .map_err(|e| transport(action, &e))?;
        let status = resp.status().as_u16();
        let answer_headers = resp.headers().clone();
        let bytes = resp.bytes().await.map_err(|e| transport(action, &e))?;
        Ok((status, answer_headers, bytes.to_vec()))
    }

    /// Call an EC2 query action; the answer's root element. Throttling
    /// (`RequestLimitExceeded`, ...) is retried with exponential backoff
    /// as the AWS SDKs do, and so are server errors and lost connections
    /// of calls that are safe to repeat ([`safe_to_repeat`]), up to
    /// [`MAX_ATTEMPTS`] attempts in all.
    pub async fn ec2(&self, action: &str, params: &Params) -> Result<Xml, AwsError> {
        let mut attempt = 1;
        loop {
            match self.ec2_once(action, params).await {
                Err(e) if attempt < MAX_ATTEMPTS && should_retry(action, &e) => {
                    let delay = backoff(attempt);
                    tracing::debug!(action, attempt, error = %e, ?delay, "retrying AWS call");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn ec2_once(&self, action: &str, params: &Params) -> Result<Xml, AwsError> {
        let mut form = vec![
            ("Action".to_string(), action.to_string()),
            ("Version".to_string(), EC2_VERSION.to_string()),
        ];
        form.extend(params.0.iter().cloned());
        let body = canonical_query(&form).into_bytes();
        let headers = [(
            "content-type".to_string(),
            "application/x-www-form-urlencoded; charset=utf-8".to_string(),
        )];
        let (status, bytes) = self
            .send(Service::Ec2, action, Method::POST, "/", &[], &headers, body)
            .await?;
        let text = String::from_utf8_lossy(&bytes);
        let xml = Xml::parse(&text).map_err(|e| AwsError::BadResponse {
            action: action.to_string(),
            message: format!("HTTP {status}: {e}"),
        });
        if status >= 300 {
            return Err(api_error(action, status, xml.ok().as_ref()));
        }
        xml
    }

    /// Call a Service Quotas JSON action.
    pub async fn service_quotas(
        &self,
        target: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, AwsError> {
        let headers = [
            (
                "content-type".to_string(),
                "application/x-amz-json-1.1".to_string(),
            ),
            (
                "x-amz-target".to_string(),
                format!("ServiceQuotasV20190624.{target}"),
            ),
        ];
        let (status, bytes) = self
            .send(
                Service::ServiceQuotas,
                target,
                Method::POST,
                "/",
                &[],
                &headers,
                body.to_string().into_bytes(),
            )
            .await?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        if status >= 300 {
            let code = value["__type"]
                .as_str()
                .or(value["code"].as_str())
                .unwrap_or("HTTP error")
                .rsplit('#')
                .next()
                .unwrap_or_default()
                .to_string();
            return Err(AwsError::Api {
                action: target.to_string(),
                status,
                code,
                message: value["message"]
                    .as_str()
                    .or(value["Message"].as_str())
                    .unwrap_or_default()
                    .to_string(),
            });
        }
        Ok(value)
    }
}

/// Attempts per call, the first included (botocore's default for EC2).
pub const MAX_ATTEMPTS: u32 = 5;

/// Error codes of throttling: the call was not made, so it is always safe
/// to repeat.
const THROTTLING_CODES: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "SlowDown",
];

/// Whether repeating `action` after an unknown outcome (a server error or
/// a lost connection) does no harm: reads, deletes, tagging, and the
/// creates that carry a `ClientToken`.
pub fn safe_to_repeat(action: &str) -> bool {
    [
        "Describe",
        "List",
        "Get",
        "Delete",
        "Terminate",
        "Release",
        "Deregister",
        "CreateTags",
    ]
    .iter()
    .any(|p| action.starts_with(p))
        || matches!(action, "RunInstances" | "CreateFleet")
}

fn should_retry(action: &str, e: &AwsError) -> bool {
    match e {
        AwsError::Api { code, status, .. } => {
            THROTTLING_CODES.contains(&code.as_str()) || (*status >= 500 && safe_to_repeat(action))
        }
        AwsError::Transport { .. } => safe_to_repeat(action),
        _ => false,
    }
}

/// The wait before attempt `attempt + 1`: 100 ms doubled per attempt,
/// at most 20 s, with up to half of it taken off at random.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(100)
        .saturating_mul(1 << attempt.min(8))
        .min(Duration::from_secs(20));
    let jitter = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        % 500;
    base.mul_f64(1.0 - f64::from(jitter) / 1000.0)
}

/// The error of an EC2 or S3 answer with an error status.
pub fn api_error(action: &str, status: u16, xml: Option<&Xml>) -> AwsError {
    // EC2: <Response><Errors><Error><Code>; S3: <Error><Code>.
    let error = xml.and_then(|x| {
        if x.name == "Error" {
            Some(x)
        } else {
            x.at(&["Errors", "Error"])
        }
    });
    AwsError::Api {
        action: action.to_string(),
        status,
        code: error
            .and_then(|e| e.text_at(&["Code"]))
            .unwrap_or_else(|| format!("HTTP{status}")),
        message: error
            .and_then(|e| e.text_at(&["Message"]))
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec2_answers_and_errors_are_read() {
        let xml = Xml::parse(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <reservationSet><item><instancesSet><item>
    <instanceId>i-1</instanceId>
    <tagSet><item><key>a</key><value>b &amp; c</value></item></tagSet>
  </item></instancesSet></item></reservationSet>
  <nextToken>tok</nextToken>
</DescribeInstancesResponse>"#,
        )
        .expect("parse");
        let instance = xml
            .items("reservationSet")
            .flat_map(|r| r.items("instancesSet"))
            .next()
            .expect("instance");
        assert_eq!(instance.text_at(&["instanceId"]).as_deref(), Some("i-1"));
        assert_eq!(instance.tags()["a"], "b & c");
        assert_eq!(xml.text_at(&["nextToken"]).as_deref(), Some("tok"));

        let err = Xml::parse(
            "<Response><Errors><Error><Code>InvalidInstanceID.NotFound</Code>\
             <Message>The instance ID 'i-x' does not exist</Message></Error></Errors>\
             <RequestID>r</RequestID></Response>",
        )
        .expect("parse");
        let e = api_error("DescribeInstances", 400, Some(&err));
        assert_eq!(e.code(), Some("InvalidInstanceID.NotFound"));
        assert_eq!(e.kind(), nodepool_core::ErrorKind::NotFound);
    }

    #[test]
    fn throttling_is_always_retried_unknown_outcomes_only_when_safe() {
        let api = |code: &str, status| AwsError::Api {
            action: "x".into(),
            status,
            code: code.into(),
            message: String::new(),
        };
        assert!(should_retry(
            "RegisterImage",
            &api("RequestLimitExceeded", 503)
        ));
        assert!(should_retry("RunInstances", &api("InternalError", 500)));
        assert!(!should_retry("RegisterImage", &api("InternalError", 500)));
        assert!(!should_retry(
            "RunInstances",
            &api("InvalidParameterValue", 400)
        ));
        let lost = AwsError::Transport {
            action: "x".into(),
            message: "reset".into(),
        };
        assert!(should_retry("DescribeInstances", &lost));
        assert!(!should_retry("CreateLaunchTemplate", &lost));
        assert!(backoff(1) <= Duration::from_millis(200));
        assert!(backoff(1) >= Duration::from_millis(100));
        assert!(backoff(30) <= Duration::from_secs(20));
    }

    #[test]
    fn params_flatten_as_ec2_expects() {
        let mut p = Params::new();
        let tags = std::collections::BTreeMap::from([
            ("k1".to_string(), "v1".to_string()),
            ("k2".to_string(), "v2".to_string()),
        ]);
        p.tags("TagSpecification.1.Tag", &tags);
        p.filter("tag:x", &["1", "2"])
            .filter("instance-state-name", &["running"]);
        let keys: Vec<&str> = p.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "TagSpecification.1.Tag.1.Key",
                "TagSpecification.1.Tag.1.Value",
                "TagSpecification.1.Tag.2.Key",
                "TagSpecification.1.Tag.2.Value",
                "Filter.1.Name",
                "Filter.1.Value.1",
                "Filter.1.Value.2",
                "Filter.2.Name",
                "Filter.2.Value.1",
            ]
        );
    }
}
