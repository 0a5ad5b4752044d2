//! Reading `clouds.yaml`, the standard OpenStack client configuration, as
//! openstacksdk does: the first of `$OS_CLIENT_CONFIG_FILE`, then
//! `clouds.{yaml,yml,json}` in the current directory, `~/.config/openstack`,
//! `/etc/xdg/openstack` and `/etc/openstack`; the first `secure.*` of the
//! same places (or `$OS_CLIENT_SECURE_FILE`) is merged over it.
//!
//! The result is a [`CloudConfig`]: the cloud's auth URL, credentials
//! (kept in [`Secret`]s), region, interface and the few other settings
//! the driver uses, and (with the environment) where openstacksdk would
//! send its per-call metrics ([`ApiStatsd`]).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::api_metrics::ApiStatsd;
use super::auth::{Credentials, Secret};
use super::config::DEFAULT_IMAGE_FORMAT;
use super::error::OpenStackError;

/// The settings of one cloud of `clouds.yaml`.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudConfig {
    /// The cloud's name in `clouds.yaml`.
    pub name: String,
    /// The region (`region-name` of the provider, else `region_name`, else
    /// the first of `regions`).
    pub region_name: Option<String>,
    /// Keystone's URL (`auth.auth_url`), with or without `/v3`.
    pub auth_url: String,
    /// How to authenticate.
    pub credentials: Credentials,
    /// The catalog interface to use (`interface`, default `public`).
    pub interface: String,
    /// `image_format` (default `qcow2`).
    pub image_format: String,
    /// `private`: connect to servers on their private address.
    pub private: bool,
    /// `floating_ip_source` is not `none`: floating IPs can be created.
    pub floating_ips: bool,
    /// `verify` (default true): check TLS certificates.
    pub verify: bool,
    /// `cacert`: an extra CA bundle (PEM).
    pub cacert: Option<PathBuf>,
    /// `image_api_use_tasks`, read as "use Glance's interoperable import".
    pub use_image_import: bool,
    /// Where openstacksdk would send its per-REST-call metrics for this
    /// cloud (`metrics: statsd:` of `clouds.yaml`, at its top and in the
    /// cloud's entry, and `STATSD_HOST`, `STATSD_PORT`, `STATSD_PREFIX`);
    /// `None`: it would send none.
    pub api_statsd: Option<ApiStatsd>,
}

/// Where `clouds.yaml` was looked for, in order.
pub fn search_paths(env: &dyn Fn(&str) -> Option<String>, cwd: &Path, stem: &str) -> Vec<PathBuf> {
    let mut dirs = vec![cwd.to_path_buf()];
    if let Some(home) = env("HOME") {
        dirs.push(Path::new(&home).join(".config").join("openstack"));
    }
    dirs.push(PathBuf::from("/etc/xdg/openstack"));
    dirs.push(PathBuf::from("/etc/openstack"));
    let override_var = if stem == "clouds" {
        "OS_CLIENT_CONFIG_FILE"
    } else {
        "OS_CLIENT_SECURE_FILE"
    };
    let mut paths: Vec<PathBuf> = env(override_var)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .collect();
    for dir in dirs {
        for ext in ["yaml", "yml", "json"] {
            paths.push(dir.join(format!("{stem}.{ext}")));
        }
    }
    paths
}

/// Load the first existing file of `paths` as JSON (YAML is read with
/// nodepool's YAML loader; JSON is YAML).
fn load_first(paths: &[PathBuf]) -> Result<Option<(PathBuf, Value)>, OpenStackError> {
    for path in paths {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(OpenStackError::Config(format!(
                    "cannot read {}: {e}",
                    path.display()
                )))
            }
        };
        let file = path.display().to_string();
        let doc = nodepool_core::config::yaml::parse(&file, &text)
            .map_err(|e| OpenStackError::Config(e.to_string()))?;
        let value = doc.root.map_or(Value::Null, |n| n.to_json());
        return Ok(Some((path.clone(), value)));
    }
    Ok(None)
}

/// Merge `over` into `base`, mappings recursively (openstacksdk's
/// `merge_clouds`).
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// A cloud's entry as [`load_entry`] finds it: the file it was read from,
/// the `clouds:` entry (secure file merged) and the file's top-level
/// `metrics.statsd` mapping.
type Entry = (PathBuf, Map<String, Value>, Option<Value>);

/// The `clouds:` entry of cloud `cloud`; see [`Entry`].
fn load_entry(
    cloud: &str,
    env: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Result<Entry, OpenStackError> {
    let clouds = search_paths(env, cwd, "clouds");
    let Some((path, mut config)) = load_first(&clouds)? else {
        return Err(OpenStackError::Config(format!(
            "cloud {cloud}: no clouds.yaml found (looked at {})",
            clouds
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    if let Some((_, secure)) = load_first(&search_paths(env, cwd, "secure"))? {
        merge(&mut config, secure);
    }
    let statsd = config.get("metrics").and_then(|m| m.get("statsd")).cloned();
    let entry = config
        .get_mut("clouds")
        .and_then(|c| c.get_mut(cloud))
        .and_then(|e| match e.take() {
            Value::Object(m) => Some(m),
            _ => None,
        })
        .ok_or_else(|| {
            OpenStackError::Config(format!(
                "{}: no cloud named {cloud} under `clouds`",
                path.display()
            ))
        })?;
    Ok((path, entry, statsd))
}

/// Find cloud `cloud` in the configuration files the environment points
/// at. `region` is the provider's `region-name`.
pub fn load_cloud(
    cloud: &str,
    region: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Result<CloudConfig, OpenStackError> {
    let (path, entry, global_statsd) = load_entry(cloud, env, cwd)?;
    let in_file =
        |e: String| OpenStackError::Config(format!("{}: cloud {cloud}: {e}", path.display()));
    let mut config = cloud_from_entry(cloud, region, &entry).map_err(in_file)?;
    let cloud_statsd = entry.get("metrics").and_then(|m| m.get("statsd"));
    config.api_statsd =
        ApiStatsd::resolve(env, global_statsd.as_ref(), cloud_statsd).map_err(in_file)?;
    Ok(config)
}

/// The `image_format` of cloud `cloud` (default `qcow2`), as upstream reads
/// it when it loads the provider: the format its diskimages are built in
/// and uploaded as. A cloud that cannot be found reads as the default; the
/// error shows when the provider is created.
pub fn image_format(cloud: &str, env: &dyn Fn(&str) -> Option<String>, cwd: &Path) -> String {
    match load_entry(cloud, env, cwd) {
        Ok((_, entry, _)) => text(&entry, "image_format"),
        Err(e) => {
            tracing::debug!(%cloud, error = %e, "image_format unknown; using qcow2");
            None
        }
    }
    .unwrap_or_else(|| DEFAULT_IMAGE_FORMAT.to_string())
}

fn text(map: &Map<String, Value>, key: &str) -> Option<String> {
    let key_dash = key.replace('_', "-");
    match map.get(key).or_else(|| map.get(&key_dash))? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn flag(map: &Map<String, Value>, key: &str, default: bool) -> bool {
    match map.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(s.to_lowercase().as_str(), "true" | "yes" | "1"),
        _ => default,
    }
}

/// Build a [`CloudConfig`] from one `clouds:` entry.
pub fn cloud_from_entry(
    name: &str,
    region: Option<&str>,
    entry: &Map<String, Value>,
) -> Result<CloudConfig, String> {
    let empty = Map::new();
    let auth = entry
        .get("auth")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let auth_url = text(auth, "auth_url").ok_or("auth.auth_url is required")?;
    let auth_type = text(entry, "auth_type").unwrap_or_else(|| {
        if auth.contains_key("application_credential_secret") {
            "v3applicationcredential".to_string()
        } else {
            "password".to_string()
        }
    });
    // `domain_name`/`domain_id` stand for both user and project domains.
    let pick = |specific: &str, general: &str| text(auth, specific).or_else(|| text(auth, general));
    let credentials = match auth_type.as_str() {
        "password" | "v3password" => Credentials::Password {
            username: text(auth, "username").or_else(|| text(auth, "user_name")),
            user_id: text(auth, "user_id"),
            password: Secret::new(text(auth, "password").ok_or("auth.password is required")?),
            user_domain_name: pick("user_domain_name", "domain_name"),
            user_domain_id: pick("user_domain_id", "domain_id"),
            project_name: text(auth, "project_name").or_else(|| text(auth, "tenant_name")),
            project_id: text(auth, "project_id").or_else(|| text(auth, "tenant_id")),
            project_domain_name: pick("project_domain_name", "domain_name"),
            project_domain_id: pick("project_domain_id", "domain_id"),
        },
        "v3applicationcredential" | "applicationcredential" => Credentials::ApplicationCredential {
            id: text(auth, "application_credential_id"),
            name: text(auth, "application_credential_name"),
            secret: Secret::new(
                text(auth, "application_credential_secret")
                    .ok_or("auth.application_credential_secret is required")?,
            ),
            username: text(auth, "username"),
            user_id: text(auth, "user_id"),
            user_domain_name: pick("user_domain_name", "domain_name"),
            user_domain_id: pick("user_domain_id", "domain_id"),
        },
        other => {
            return Err(format!(
                "auth_type {other} is not supported (password or v3applicationcredential)"
            ))
        }
    };
    let region_name = region
        .map(str::to_string)
        .or_else(|| text(entry, "region_name"))
        .or_else(|| {
            let first = entry.get("regions")?.as_array()?.first()?;
            first
                .as_str()
                .map(str::to_string)
                .or_else(|| text(first.as_object()?, "name"))
        });
    Ok(CloudConfig {
        name: name.to_string(),
        region_name,
        auth_url,
        credentials,
        interface: text(entry, "interface")
            .or_else(|| text(entry, "endpoint_type"))
            .unwrap_or_else(|| "public".to_string()),
        image_format: text(entry, "image_format")
            .unwrap_or_else(|| DEFAULT_IMAGE_FORMAT.to_string()),
        private: flag(entry, "private", false),
        floating_ips: text(entry, "floating_ip_source")
            .map_or(true, |s| s.to_lowercase() != "none"),
        verify: flag(entry, "verify", true) && !flag(entry, "insecure", false),
        cacert: text(entry, "cacert").map(PathBuf::from),
        use_image_import: flag(entry, "image_api_use_tasks", false),
        // Read with the environment and the file's top by `load_cloud`.
        api_statsd: None,
    })
}
