//! openstacksdk's per-REST-call statsd metrics, which upstream's OpenStack
//! driver sends through the SDK (`openstack/proxy.py`,
//! `Proxy._report_stats_statsd`), under the same names and conditions.
//!
//! **When.** openstacksdk makes a statsd client when its configuration
//! names a host or a port ([`ApiStatsd::resolve`]): `STATSD_HOST`,
//! `STATSD_PORT` and `STATSD_PREFIX` from the environment, else
//! `metrics: statsd: {host, port, prefix}` at the top of `clouds.yaml`,
//! each overridden by the cloud's own `metrics: statsd:`. Upstream's
//! driver loads its config with `openstack.config.loader.OpenStackConfig()`,
//! which reads both, and passes nothing of its own. The prefix defaults to
//! `openstack.api`; the host to `localhost`, the port to 8125.
//!
//! **What.** Per REST call of a service proxy (not Keystone's token
//! requests, which go through keystoneauth), the key
//! `<prefix>.<service>.<METHOD>.<name>`, `<name>` derived from the URL by
//! `Proxy._extract_name` ([`ApiName`]), each part with `.` and `:` as `_`,
//! joined by `_`:
//! - an answer (any status): a timer and a counter `<key>.<status>` (the
//!   time until the answer's headers, `response.elapsed`), a counter
//!   `<key>.over_1000` when that took more than a second, and a counter
//!   `<key>.attempted`;
//! - no answer (connection failure, timeout, dropped body): counters
//!   `<key>.failed` and `<key>.attempted`, the name then derived from the
//!   path the call was made with rather than the full URL, as the SDK
//!   does.
//!
//! A 401 answered with a fresh token is one call (keystoneauth retries it
//! inside the request). Redirect hops, which the SDK reports each, are
//! not reported: reqwest follows them without showing them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use nodepool_core::provider::DriverMetrics;
use serde_json::Value;

/// Where openstacksdk would send a cloud's per-call metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiStatsd {
    /// `host:port` of the statsd server.
    pub target: String,
    /// The first segment(s) of every name (`openstack.api` by default).
    pub prefix: String,
}

/// openstacksdk's default prefix.
pub const DEFAULT_PREFIX: &str = "openstack.api";

/// A value of a `metrics: statsd:` mapping as openstacksdk reads it:
/// present (even as null), and truthy or not.
fn yaml_value(section: Option<&Value>, key: &str) -> Option<Value> {
    section.and_then(|s| s.get(key)).cloned()
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl ApiStatsd {
    /// openstacksdk's statsd settings for a cloud
    /// (`OpenStackConfig._parse_section__metrics_statsd`, `get_one`'s
    /// per-cloud override, `CloudRegion.get_statsd_client` and
    /// `get_statsd_prefix`): `env` is the environment, `global` the
    /// `metrics.statsd` mapping at the top of `clouds.yaml`, `cloud` the
    /// cloud's own. `None` when neither a host nor a port is set: the SDK
    /// then makes no client and sends nothing. A port that is no number is
    /// an error (the SDK fails to load its config then).
    pub fn resolve(
        env: &dyn Fn(&str) -> Option<String>,
        global: Option<&Value>,
        cloud: Option<&Value>,
    ) -> Result<Option<Self>, String> {
        // Environment first (a set but empty STATSD_HOST or STATSD_PREFIX
        // is falsy; STATSD_PORT counts when present at all).
        let mut host = env("STATSD_HOST")
            .filter(|h| !h.is_empty())
            .map(Value::String);
        let mut port = match env("STATSD_PORT") {
            Some(p) => Some(Value::Number(
                p.trim()
                    .parse::<u16>()
                    .map_err(|_| format!("STATSD_PORT {p:?} is not a port number"))?
                    .into(),
            )),
            None => None,
        };
        let mut prefix = env("STATSD_PREFIX")
            .filter(|p| !p.is_empty())
            .map(Value::String);
        // Then the top of clouds.yaml, for what is still unset or falsy.
        for (slot, key) in [
            (&mut host, "host"),
            (&mut port, "port"),
            (&mut prefix, "prefix"),
        ] {
            if !slot.as_ref().is_some_and(truthy) {
                if let Some(v) = yaml_value(global, key) {
                    *slot = Some(v);
                }
            }
        }
        // The cloud's own mapping, when not empty, overrides key by key.
        if cloud
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty())
        {
            for (slot, key) in [
                (&mut host, "host"),
                (&mut port, "port"),
                (&mut prefix, "prefix"),
            ] {
                if let Some(v) = yaml_value(cloud, key) {
                    *slot = Some(v);
                }
            }
        }
        let host = host.filter(truthy);
        let port = port.filter(truthy);
        if host.is_none() && port.is_none() {
            return Ok(None);
        }
        let host = host.map_or_else(|| "localhost".to_owned(), |h| text(&h));
        let port = match port {
            None => 8125,
            Some(p) => text(&p)
                .trim()
                .parse::<u16>()
                .map_err(|_| format!("metrics.statsd.port {} is not a port number", text(&p)))?,
        };
        let prefix = prefix
            .filter(truthy)
            .map_or_else(|| DEFAULT_PREFIX.to_owned(), |p| text(&p));
        // An IPv6 literal needs brackets to be joined with a port.
        let target = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Some(Self { target, prefix }))
    }
}

/// The path of `url` as Python's `urllib.parse.urlparse(url).path` reads
/// it: after a scheme and an authority, before the query, the fragment
/// and the `;params` of the last segment.
pub fn url_path(url: &str) -> &str {
    let mut rest = url;
    if let Some(i) = rest.find(':') {
        let scheme = &rest[..i];
        let valid = scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        if i > 0 && valid {
            rest = &rest[i + 1..];
        }
    }
    if let Some(after) = rest.strip_prefix("//") {
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        rest = &after[end..];
    }
    if let Some(i) = rest.find('#') {
        rest = &rest[..i];
    }
    if let Some(i) = rest.find('?') {
        rest = &rest[..i];
    }
    // `;params` of the last segment.
    let last = rest.rfind('/').map_or(0, |i| i);
    if let Some(i) = rest[last..].find(';') {
        rest = &rest[..last + i];
    }
    rest
}

/// The name openstacksdk's `Proxy._extract_name` gives a URL, as the part
/// of a metric key it is: `/servers/detail` → `servers_detail`,
/// `/v2.1/servers/{id}` → `server`, `/v2.0/ports.json` → `ports`,
/// `/images/{id}/file` → `image_file`, a bare endpoint → `discovery`. A
/// path segment equal to the token's project id (or `AUTH_` and it) is
/// left out. Built with [`ApiName::new`], which answers `None` where the
/// SDK's code raises (every segment left out; a first segment that is
/// just `v`): the SDK then reports nothing for the call.
///
/// The URL is read as ASCII, as the URLs reqwest sends are.
#[derive(Debug, Clone, Copy)]
pub struct ApiName<'a> {
    path: &'a str,
    project_id: Option<&'a str>,
}

impl<'a> ApiName<'a> {
    /// The name of `url` for a token of project `project_id`.
    pub fn new(url: &'a str, project_id: Option<&'a str>) -> Option<Self> {
        let mut path = url_path(url).trim();
        path = path.strip_prefix('/').unwrap_or(path);
        path = path.strip_suffix(".json").unwrap_or(path);
        let name = Self { path, project_id };
        name.walk(|_| {})?;
        Some(name)
    }

    /// Whether the SDK keeps segment `x`.
    fn keep(&self, x: &str) -> bool {
        match self.project_id {
            None => true,
            Some(pid) => x != pid && (pid.is_empty() || x.strip_prefix("AUTH_") != Some(pid)),
        }
    }

    /// Call `f` with each name part, before the SDK drops the empty ones;
    /// `None` where the SDK raises.
    fn walk(&self, mut f: impl FnMut(&str)) -> Option<()> {
        let parts = || self.path.split('/').filter(|x| self.keep(x));
        let n = parts().count();
        // `url_parts[-1]` of an empty list raises.
        let last = parts().next_back()?;
        // How many leading segments to skip, or `None` for a `detail`
        // listing (named by its last two segments).
        let skip = if last == "detail" {
            None
        } else {
            let mut chars = parts().next()?.chars();
            let version = if chars.next() == Some('v') {
                // `url_parts[0][1]` of a one-letter segment raises.
                chars.next()?.is_ascii_digit()
            } else {
                false
            };
            Some(usize::from(version))
        };
        if self.path.ends_with("tokens") {
            f("tokens");
            return Some(());
        }
        let mut emitted = 0usize;
        match skip {
            None => {
                for part in parts().skip(n.saturating_sub(2)) {
                    emitted += 1;
                    f(part);
                }
            }
            Some(skip) => {
                // Every other segment, a plural one before an id made
                // singular (`servers/{id}` → `server`).
                let m = n - skip;
                for (idx, part) in parts().skip(skip).enumerate() {
                    if idx % 2 != 0 || part.is_empty() {
                        continue;
                    }
                    emitted += 1;
                    if m > idx + 1 && part.ends_with('s') && !part.ends_with("is") {
                        f(&part[..part.len() - 1]);
                    } else {
                        f(part);
                    }
                }
            }
        }
        if emitted == 0 {
            f("discovery");
        }
        Some(())
    }
}

impl fmt::Display for ApiName<'_> {
    /// The non-empty parts, `.` and `:` as `_`, joined by `_`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut result = Ok(());
        let mut first = true;
        self.walk(|part| {
            if part.is_empty() || result.is_err() {
                return;
            }
            if !first {
                result = f.write_str("_");
            }
            first = false;
            for c in part.chars() {
                if result.is_ok() {
                    result = match c {
                        '.' | ':' => f.write_str("_"),
                        c => fmt::Write::write_char(f, c),
                    };
                }
            }
        });
        result
    }
}

/// The last segment of a key.
#[derive(Debug, Clone, Copy)]
enum Suffix {
    Status(u16),
    Word(&'static str),
}

/// `<prefix>.<service>.<METHOD>.<name>.<suffix>`.
struct ApiKey<'a> {
    prefix: &'a str,
    service: &'a str,
    method: &'a str,
    name: ApiName<'a>,
    suffix: Suffix,
}

impl fmt::Display for ApiKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.", self.prefix)?;
        for c in self.service.chars() {
            match c {
                '.' | ':' => f.write_str("_")?,
                c => fmt::Write::write_char(f, c)?,
            }
        }
        write!(f, ".{}.{}.", self.method, self.name)?;
        match self.suffix {
            Suffix::Status(s) => write!(f, "{s}"),
            Suffix::Word(w) => f.write_str(w),
        }
    }
}

/// The whole milliseconds openstacksdk reports for an answer that took
/// `took`: requests keeps `response.elapsed` as a `timedelta` (rounded to
/// the microsecond, half to even), and the SDK sends
/// `int(response.elapsed.total_seconds() * 1000)`, a float truncated, so
/// 1001 ms come out as 1000.
pub fn sdk_millis(took: Duration) -> u64 {
    let nanos = took.as_nanos();
    let (whole, rest) = (nanos / 1000, nanos % 1000);
    let micros = if rest > 500 || (rest == 500 && whole % 2 == 1) {
        whole + 1
    } else {
        whole
    };
    let seconds = micros as f64 / 1e6;
    // `as` saturates, as the SDK's int() would not need to.
    (seconds * 1000.0) as u64
}

/// One call's metrics as openstacksdk sends them, in its order: what
/// [`ApiReporter`] records and the differential test compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiEvent {
    /// `name:<millis>|ms`.
    Timing(String, u64),
    /// `name:1|c`.
    Incr(String),
}

/// The metrics of one call: `status` and `took` when it was answered,
/// `None` when it failed without an answer. Empty where the SDK's name
/// derivation raises.
pub fn call_events(
    prefix: &str,
    service: &str,
    method: &str,
    url: &str,
    project_id: Option<&str>,
    answer: Option<(u16, Duration)>,
) -> Vec<ApiEvent> {
    let Some(name) = ApiName::new(url, project_id) else {
        return Vec::new();
    };
    let key = |suffix| {
        ApiKey {
            prefix,
            service,
            method,
            name,
            suffix,
        }
        .to_string()
    };
    let mut out = Vec::new();
    match answer {
        Some((status, took)) => {
            let millis = sdk_millis(took);
            out.push(ApiEvent::Timing(key(Suffix::Status(status)), millis));
            out.push(ApiEvent::Incr(key(Suffix::Status(status))));
            if millis > 1000 {
                out.push(ApiEvent::Incr(key(Suffix::Word("over_1000"))));
            }
        }
        None => out.push(ApiEvent::Incr(key(Suffix::Word("failed")))),
    }
    out.push(ApiEvent::Incr(key(Suffix::Word("attempted"))));
    out
}

/// Records a client's calls into the driver metrics, for one cloud's
/// statsd settings.
#[derive(Debug, Clone)]
pub struct ApiReporter {
    sink: Arc<DriverMetrics>,
    settings: ApiStatsd,
}

impl ApiReporter {
    /// Record into `sink` what openstacksdk would send to `settings`.
    pub fn new(sink: Arc<DriverMetrics>, settings: ApiStatsd) -> Self {
        Self { sink, settings }
    }

    /// A call to `url` (the URL the answer came from) answered with
    /// `status` after `took` (until its headers).
    pub fn answered(
        &self,
        service: &str,
        method: &str,
        url: &str,
        project_id: Option<&str>,
        status: u16,
        took: Duration,
    ) {
        let Some(name) = ApiName::new(url, project_id) else {
            return;
        };
        let key = |suffix| ApiKey {
            prefix: &self.settings.prefix,
            service,
            method,
            name,
            suffix,
        };
        let target = &self.settings.target;
        let status_key = key(Suffix::Status(status));
        let millis = sdk_millis(took);
        self.sink.timing(target, &status_key, millis);
        self.sink.incr(target, &status_key, 1);
        if millis > 1000 {
            self.sink.incr(target, &key(Suffix::Word("over_1000")), 1);
        }
        self.sink.incr(target, &key(Suffix::Word("attempted")), 1);
    }

    /// A call made with `path` (as given to the client: relative to the
    /// endpoint, or absolute) that got no answer.
    pub fn failed(&self, service: &str, method: &str, path: &str, project_id: Option<&str>) {
        let Some(name) = ApiName::new(path, project_id) else {
            return;
        };
        let key = |suffix| ApiKey {
            prefix: &self.settings.prefix,
            service,
            method,
            name,
            suffix,
        };
        let target = &self.settings.target;
        self.sink.incr(target, &key(Suffix::Word("failed")), 1);
        self.sink.incr(target, &key(Suffix::Word("attempted")), 1);
    }
}

#[cfg(test)]
mod tests;
