//! Credentials as kubectl reads them: the kubeconfig files of `KUBECONFIG`
//! (a colon-separated list; the first file to set a name or the current
//! context wins) or `~/.kube/config`, the provider's `context` (else the
//! current context); without a kubeconfig, in-cluster service-account
//! credentials (`KUBERNETES_SERVICE_HOST`/`_PORT` and
//! `/var/run/secrets/kubernetes.io/serviceaccount`).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use nodepool_core::config::yaml;
use nodepool_core::Secret;
use serde_json::Value;

use super::error::KubeError;

/// Where a pod's service-account credentials are mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How to reach and authenticate to one API server.
#[derive(Debug, Clone, PartialEq)]
pub struct Credentials {
    /// The API server URL (`https://host:6443`), without a trailing slash.
    pub server: String,
    /// The CA bundle (PEM) that signs the server's certificate.
    pub ca_pem: Option<String>,
    /// `insecure-skip-tls-verify`.
    pub insecure: bool,
    /// Bearer token (`token` or the contents of `tokenFile`).
    pub token: Option<Secret>,
    /// Client certificate and key (PEM, concatenated).
    pub client_pem: Option<Secret>,
    /// The context's default namespace.
    pub namespace: Option<String>,
}

impl Credentials {
    /// The CA bundle base64-encoded, as upstream's drivers put it in a
    /// node's `ca_crt`.
    pub fn ca_base64(&self) -> Option<String> {
        self.ca_pem
            .as_ref()
            .map(|pem| base64::engine::general_purpose::STANDARD.encode(pem))
    }
}

/// Load the credentials of `context` (`None`: the current context) from
/// the kubeconfig files, else from the in-cluster service account. `env`
/// reads environment variables; `sa_dir` is where the service account is
/// mounted ([`SERVICE_ACCOUNT_DIR`] outside tests).
pub fn load(
    context: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    sa_dir: &Path,
) -> Result<Credentials, KubeError> {
    let files = kubeconfig_files(env);
    let existing: Vec<&PathBuf> = files.iter().filter(|p| p.is_file()).collect();
    if existing.is_empty() {
        return in_cluster(env, sa_dir).map_err(|e| {
            KubeError::Config(format!(
                "no kubeconfig ({}) and {e}",
                files
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        });
    }
    let mut docs = Vec::new();
    for path in existing {
        docs.push((path.clone(), read_kubeconfig(path)?));
    }
    from_kubeconfigs(&docs, context)
}

/// The kubeconfig files kubectl would read.
fn kubeconfig_files(env: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    match env("KUBECONFIG").filter(|v| !v.is_empty()) {
        Some(list) => list
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect(),
        None => env("HOME")
            .map(|home| vec![PathBuf::from(home).join(".kube/config")])
            .unwrap_or_default(),
    }
}

fn read_kubeconfig(path: &Path) -> Result<Value, KubeError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| KubeError::Config(format!("cannot read {name}: {e}")))?;
    let doc = yaml::parse(&name, &text).map_err(|e| KubeError::Config(e.to_string()))?;
    Ok(doc.root.map(|root| root.to_json()).unwrap_or(Value::Null))
}

/// The entry named `name` in list `key` of the first file that has one,
/// with the directory of that file (relative paths are relative to it).
fn named<'a>(docs: &'a [(PathBuf, Value)], key: &str, name: &str) -> Option<(&'a Value, PathBuf)> {
    docs.iter().find_map(|(path, doc)| {
        let entry = doc
            .get(key)?
            .as_array()?
            .iter()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(name))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Some((entry, dir))
    })
}

/// Resolve a context of merged kubeconfig files.
pub(crate) fn from_kubeconfigs(
    docs: &[(PathBuf, Value)],
    context: Option<&str>,
) -> Result<Credentials, KubeError> {
    let context_name = match context {
        Some(c) => c.to_string(),
        None => docs
            .iter()
            .find_map(|(_, d)| {
                d.get("current-context")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
            })
            .map(str::to_string)
            .ok_or_else(|| {
                KubeError::Config(
                    "the kubeconfig has no current-context and no context is configured".into(),
                )
            })?,
    };
    let (ctx, _) = named(docs, "contexts", &context_name).ok_or_else(|| {
        KubeError::Config(format!("context {context_name:?} is not in the kubeconfig"))
    })?;
    let ctx = ctx.get("context").cloned().unwrap_or(Value::Null);
    let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let cluster_name = field(&ctx, "cluster")
        .ok_or_else(|| KubeError::Config(format!("context {context_name:?} names no cluster")))?;
    let (cluster, cluster_dir) = named(docs, "clusters", &cluster_name).ok_or_else(|| {
        KubeError::Config(format!("cluster {cluster_name:?} is not in the kubeconfig"))
    })?;
    let cluster = cluster.get("cluster").cloned().unwrap_or(Value::Null);
    let server = field(&cluster, "server")
        .ok_or_else(|| KubeError::Config(format!("cluster {cluster_name:?} has no server")))?;
    let ca_pem = data_or_file(
        &cluster,
        "certificate-authority-data",
        "certificate-authority",
        &cluster_dir,
    )?;
    let insecure = cluster
        .get("insecure-skip-tls-verify")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut creds = Credentials {
        server: server.trim_end_matches('/').to_string(),
        ca_pem,
        insecure,
        token: None,
        client_pem: None,
        namespace: field(&ctx, "namespace"),
    };
    if let Some(user_name) = field(&ctx, "user") {
        let (user, user_dir) = named(docs, "users", &user_name).ok_or_else(|| {
            KubeError::Config(format!("user {user_name:?} is not in the kubeconfig"))
        })?;
        let user = user.get("user").cloned().unwrap_or(Value::Null);
        for plugin in ["exec", "auth-provider", "username"] {
            if user.get(plugin).is_some() && user.get("token").is_none() {
                return Err(KubeError::Config(format!(
                    "user {user_name:?} authenticates with {plugin:?}, which this driver does not \
                     support: use a token, a token file or a client certificate"
                )));
            }
        }
        creds.token = match field(&user, "token") {
            Some(t) => Some(Secret::new(t)),
            None => match field(&user, "tokenFile") {
                Some(f) => Some(Secret::new(
                    read_text(&user_dir.join(f))?.trim().to_string(),
                )),
                None => None,
            },
        };
        let cert = data_or_file(
            &user,
            "client-certificate-data",
            "client-certificate",
            &user_dir,
        )?;
        let key = data_or_file(&user, "client-key-data", "client-key", &user_dir)?;
        creds.client_pem = match (cert, key) {
            (Some(cert), Some(key)) => Some(Secret::new(format!("{cert}\n{key}"))),
            (None, None) => None,
            _ => {
                return Err(KubeError::Config(format!(
                    "user {user_name:?} has a client certificate or key without the other"
                )))
            }
        };
    }
    Ok(creds)
}

/// `<data_key>` (base64) or the file `<file_key>` names, as text.
fn data_or_file(
    map: &Value,
    data_key: &str,
    file_key: &str,
    dir: &Path,
) -> Result<Option<String>, KubeError> {
    if let Some(data) = map.get(data_key).and_then(Value::as_str) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| KubeError::Config(format!("{data_key} is not base64: {e}")))?;
        return String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| KubeError::Config(format!("{data_key} is not PEM text")));
    }
    match map.get(file_key).and_then(Value::as_str) {
        Some(file) => read_text(&dir.join(file)).map(Some),
        None => Ok(None),
    }
}

fn read_text(path: &Path) -> Result<String, KubeError> {
    std::fs::read_to_string(path)
        .map_err(|e| KubeError::Config(format!("cannot read {}: {e}", path.display())))
}

/// The credentials of the pod's service account.
pub(crate) fn in_cluster(
    env: &dyn Fn(&str) -> Option<String>,
    sa_dir: &Path,
) -> Result<Credentials, KubeError> {
    let (Some(host), Some(port)) = (
        env("KUBERNETES_SERVICE_HOST"),
        env("KUBERNETES_SERVICE_PORT"),
    ) else {
        return Err(KubeError::Config(
            "not in a cluster (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are unset)"
                .into(),
        ));
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let token = read_text(&sa_dir.join("token"))?.trim().to_string();
    let ca_path = sa_dir.join("ca.crt");
    Ok(Credentials {
        server: format!("https://{host}:{port}"),
        ca_pem: ca_path.is_file().then(|| read_text(&ca_path)).transpose()?,
        insecure: false,
        token: Some(Secret::new(token)),
        client_pem: None,
        namespace: std::fs::read_to_string(sa_dir.join("namespace"))
            .ok()
            .map(|s| s.trim().to_string()),
    })
}
